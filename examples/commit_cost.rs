//! Micro-benchmark of the indexer's commit path alone (no chain): 10 commits
//! of 10,000 deposits (8 wallets, 100 per block) into a fresh redis-server
//! with `appendfsync always`, as the indexer benchmark's backfill makes.
//! Prints the time per commit, Redis's own time per script call and CPU.
use std::time::Instant;

use alloy::primitives::{Address, B256, U256};
use chainfront::devnet::RedisServer;
use chainfront_indexer::apply::Op;
use chainfront_indexer::keys::ChainKeys;
use chainfront_indexer::store::{Commit, Store};

fn ops(keys: &ChainKeys, block0: u64, n: usize, salt: u64) -> Vec<Op> {
    let mut out = Vec::with_capacity(n * 4);
    for i in 0..n {
        let block = block0 + (i / 100) as u64;
        let tx = B256::from(U256::from(salt * 1_000_000 + i as u64));
        let from = Address::with_last_byte((i % 8) as u8 + 1);
        let id = ChainKeys::deposit_id(tx, (i % 100) as u64);
        let amount = U256::from(1_000_000u64 + i as u64);
        out.push(Op::HSet {
            key: keys.deposits(),
            fields: vec![(id.clone(), format!("{from:?}:{amount}:{block}"))],
        });
        out.push(Op::ZAdd {
            key: keys.wallet_deposits(from),
            score: block,
            member: id.clone(),
        });
        if std::env::var("NODB").is_err() {
            out.push(Op::ZAdd {
                key: keys.deposits_by_block(),
                score: block,
                member: id,
            });
        }
        out.push(Op::AddU256 {
            key: keys.wallet_deposit_total(from),
            field: None,
            amount,
        });
    }
    out
}

fn redis_cpu(info: &str) -> f64 {
    info.lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let redis = RedisServer::start()?;
    let keys = ChainKeys::new(31337);
    for round in 0..rounds {
        let mut conn = chainfront_indexer::conn::connect(&redis.url()).await?;
        let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await?;
        let commits: Vec<Commit> = (0..10u64)
            .map(|c| Commit {
                to: c * 100 + 99,
                to_hash: B256::from(U256::from(c + 1)),
                ops: ops(&keys, c * 100, 10_000, round as u64 * 100 + c),
                undo: false,
            })
            .collect();
        let mut store = Store::new(conn.clone(), keys.clone(), 128);
        let cpu0 = redis_cpu(&redis::cmd("INFO").arg("cpu").query_async::<String>(&mut conn).await?);
        let this0 = cpu_self();
        let t = Instant::now();
        let variant = std::env::var("VARIANT").unwrap_or_default();
        let mut pending = None;
        for c in commits {
            if variant == "pipe" || variant == "lua1" {
                raw_commit(&mut conn, &c, &variant).await?;
            } else if variant == "ahead" {
                let sent = store.start_commit(c).await?;
                if let Some(before) = pending.replace(sent) {
                    store.settle(before).await?;
                }
            } else {
                store.commit(c).await?;
            }
        }
        if let Some(before) = pending.take() {
            store.settle(before).await?;
        }
        let took = t.elapsed();
        let cpu1 = redis_cpu(&redis::cmd("INFO").arg("cpu").query_async::<String>(&mut conn).await?);
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
        let eval = stats
            .lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .unwrap_or("")
            .to_owned();
        println!(
            "round {round}: 10 commits of 10,000 deposits in {:.0} ms; redis CPU {:.0} ms; this process {:.0} ms; {eval}",
            took.as_secs_f64() * 1e3,
            (cpu1 - cpu0) * 1e3,
            (cpu_self() - this0) * 1e3,
        );
    }
    Ok(())
}

/// The same writes merged per key, sent as MULTI/EXEC (`pipe`) or as one
/// script whose only argument is a msgpack blob of commands (`lua1`).
async fn raw_commit(
    conn: &mut chainfront_indexer::conn::RedisConn,
    c: &Commit,
    variant: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::collections::BTreeMap;
    let mut per_key: BTreeMap<&str, (Vec<Vec<u8>>, &'static str)> = BTreeMap::new();
    let mut totals: BTreeMap<&str, U256> = BTreeMap::new();
    for op in &c.ops {
        match op {
            Op::HSet { key, fields } => {
                let e = per_key.entry(key).or_insert((Vec::new(), "HSET"));
                for (f, v) in fields {
                    e.0.push(f.as_bytes().to_vec());
                    e.0.push(v.as_bytes().to_vec());
                }
            }
            Op::ZAdd { key, score, member } => {
                let e = per_key.entry(key).or_insert((Vec::new(), "ZADD"));
                e.0.push(score.to_string().into_bytes());
                e.0.push(member.as_bytes().to_vec());
            }
            Op::AddU256 { key, amount, .. } => {
                *totals.entry(key).or_default() += *amount;
            }
            _ => {}
        }
    }
    let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
    for (key, (args, name)) in per_key {
        for chunk in args.chunks(2000) {
            let mut c = vec![name.as_bytes().to_vec(), key.as_bytes().to_vec()];
            c.extend(chunk.iter().cloned());
            cmds.push(c);
        }
    }
    for (key, v) in totals {
        cmds.push(vec![b"SET".to_vec(), key.as_bytes().to_vec(), v.to_string().into_bytes()]);
    }
    if variant == "pipe" {
        let mut p = redis::pipe();
        p.atomic();
        for c in &cmds {
            let mut cmd = redis::cmd(std::str::from_utf8(&c[0])?);
            for a in &c[1..] {
                cmd.arg(a.as_slice());
            }
            p.add_command(cmd).ignore();
        }
        let _: () = p.query_async(conn).await?;
    } else {
        // msgpack: an array of commands, each an array of byte strings.
        let mut blob = Vec::new();
        mp_array(&mut blob, cmds.len());
        for c in &cmds {
            mp_array(&mut blob, c.len());
            for a in c {
                mp_str(&mut blob, a);
            }
        }
        let script = redis::Script::new(
            "local cmds = cmsgpack.unpack(ARGV[1]) for _, c in ipairs(cmds) do redis.call(unpack(c)) end return #cmds",
        );
        let _: i64 = script.arg(blob).invoke_async(conn).await?;
    }
    Ok(())
}

fn mp_array(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n < 65_536 {
        out.push(0xdc);
        out.extend((n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend((n as u32).to_be_bytes());
    }
}

fn mp_str(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n < 256 {
        out.push(0xd9);
        out.push(n as u8);
    } else if n < 65_536 {
        out.push(0xda);
        out.extend((n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend((n as u32).to_be_bytes());
    }
    out.extend_from_slice(s);
}

fn cpu_self() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}
