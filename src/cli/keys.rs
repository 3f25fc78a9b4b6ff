//! `chainfront keys rotate`: re-seals every stored secret — VM SSH keys
//! (current and pending), escrowed agent wallets and the older agent-wallet
//! hash — with the newest master key, then marks the store migrated so
//! plaintext values are refused from then on.
//!
//! The keyring is `CHAINFRONT_MASTER_KEY` (comma-separated, newest first),
//! with `CHAINFRONT_NEW_MASTER_KEY` or `--new-key-file` put in front when
//! given. Procedure: (1) run every node with `CHAINFRONT_MASTER_KEY=new,old`
//! (rolling restart: nodes seal with the new key and open with both);
//! (2) `keys rotate`; (3) drop the old key from the list and restart again.
//!
//! Each value is rewritten with a compare-and-set (the Lua script writes only
//! if the value is still the one read), so a rotation racing one-time
//! delivery, the sweeper or a re-key never resurrects an erased key. Safe to
//! re-run: a value already sealed with the newest key is left alone.

use std::path::{Path, PathBuf};

use alloy::primitives::U256;
use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::{ChainKeys, NodeKeys};
use chainfront_indexer::store::scan;
use redis::{AsyncCommands, Script};

use crate::config::Config;
use crate::crypto::ecies::Keyring;
use crate::provision::worker::key_aad;
use crate::{Error, Result, node};

/// Arguments of `keys rotate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// File holding a new master key (32 bytes of hex) to put in front of
    /// the configured ones; default: `CHAINFRONT_NEW_MASTER_KEY`, if set.
    #[arg(long)]
    pub new_key_file: Option<PathBuf>,
}

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// Values re-sealed.
    pub moved: usize,
    /// Values already sealed with the newest key.
    pub skipped: usize,
    /// Values that changed while being re-sealed (left as they were).
    pub raced: usize,
}

/// KEYS: hash. ARGV: field, expected, new. Writes only if unchanged.
const HASH_CAS: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
";

/// KEYS: key. ARGV: expected, new. Writes only if unchanged, keeping the TTL.
const STRING_CAS: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
";

fn keyring(config: &Config, args: &Args) -> Result<Keyring> {
    let configured = config
        .secrets
        .master_key
        .as_ref()
        .ok_or_else(|| Error::Config {
            key: "master_key".into(),
            message: "the current master key(s) are needed to rotate (CHAINFRONT_MASTER_KEY)"
                .into(),
        })?
        .expose()
        .to_owned();
    let new = match &args.new_key_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("reading {}", path.display()),
            source,
        })?),
        None => std::env::var("CHAINFRONT_NEW_MASTER_KEY").ok(),
    };
    let list = match new {
        Some(n) => format!("{},{configured}", n.trim()),
        None => configured,
    };
    Keyring::from_hex_list(&list)
}

/// Runs the rotation for the configured node.
pub async fn run(file: Option<&Path>, args: Args) -> Result<()> {
    let config = Config::load(file)?;
    let ring = keyring(&config, &args)?;
    let mut conn = node::connect_redis(&config.redis.url).await?;
    let chains: Vec<u64> = config.chains.values().map(|c| c.chain_id).collect();
    let r = rotate(&mut conn, &chains, &ring).await?;
    println!(
        "re-sealed {} values with master key {}, {} already were, {} changed meanwhile (re-run to cover them); set CHAINFRONT_MASTER_KEY to the new key alone once every node runs with it",
        r.moved,
        ring.newest().id(),
        r.skipped,
        r.raced
    );
    Ok(())
}

/// Re-seals one value; `None` when it already is current.
fn reseal(ring: &Keyring, stored: &str, aad: &str, r: &mut Rotated) -> Result<Option<String>> {
    if ring.is_current(stored) {
        r.skipped += 1;
        return Ok(None);
    }
    ring.reseal(stored, aad).map(Some)
}

async fn cas_hash(
    conn: &mut RedisConn,
    key: &str,
    field: &str,
    old: &str,
    new: &str,
    r: &mut Rotated,
) -> Result<()> {
    let done: i64 = Script::new(HASH_CAS)
        .key(key)
        .arg(field)
        .arg(old)
        .arg(new)
        .invoke_async(conn)
        .await?;
    if done == 1 {
        r.moved += 1;
    } else {
        r.raced += 1;
    }
    Ok(())
}

/// Re-seals every stored secret of the node and of `chains` with the newest
/// key of `ring`, then marks the store migrated (when nothing raced).
pub async fn rotate(conn: &mut RedisConn, chains: &[u64], ring: &Keyring) -> Result<Rotated> {
    let mut r = Rotated::default();
    // Agent wallets from before escrow became opt-in: one hash, JSON values.
    let legacy_key = NodeKeys.agent_wallets();
    let wallets: Vec<(String, String)> = conn.hgetall(&legacy_key).await?;
    for (address, raw) in wallets {
        let mut entry: serde_json::Value = serde_json::from_str(&raw)
            .map_err(|e| Error::Crypto(format!("agent wallet {address}: {e}")))?;
        let Some(stored) = entry["private_key"].as_str().map(str::to_owned) else {
            continue;
        };
        let aad = format!("{legacy_key}#{address}");
        if let Some(moved) = reseal(ring, &stored, &aad, &mut r)? {
            entry["private_key"] = serde_json::Value::String(moved);
            cas_hash(
                conn,
                &legacy_key,
                &address,
                &raw,
                &entry.to_string(),
                &mut r,
            )
            .await?;
        }
    }
    // Escrowed agent wallets: one key each, with a TTL.
    for key in scan(conn, &NodeKeys.agent_wallet_escrow_pattern()).await? {
        let raw: Option<String> = conn.get(&key).await?;
        let Some(raw) = raw else { continue };
        let mut entry: serde_json::Value = serde_json::from_str(&raw)
            .map_err(|e| Error::Crypto(format!("agent wallet escrow: {e}")))?;
        let Some(stored) = entry["private_key"].as_str().map(str::to_owned) else {
            continue;
        };
        if let Some(moved) = reseal(ring, &stored, &key, &mut r)? {
            entry["private_key"] = serde_json::Value::String(moved);
            let done: i64 = Script::new(STRING_CAS)
                .key(&key)
                .arg(&raw)
                .arg(entry.to_string())
                .invoke_async(conn)
                .await?;
            if done == 1 {
                r.moved += 1;
            } else {
                r.raced += 1;
            }
        }
    }
    // VM SSH keys, current and pending (a re-key in progress).
    for chain_id in chains {
        let keys = ChainKeys::new(*chain_id);
        for key in scan(conn, &keys.provision_pattern()).await? {
            let Some(id) = key.rsplit(':').next().and_then(|t| t.parse::<U256>().ok()) else {
                continue;
            };
            let aad = key_aad(&keys, id);
            for field in ["private_key", "pending_private_key"] {
                let stored: Option<String> = conn.hget(&key, field).await?;
                let Some(stored) = stored.filter(|s| !s.is_empty()) else {
                    continue;
                };
                if let Some(moved) = reseal(ring, &stored, &aad, &mut r)? {
                    cas_hash(conn, &key, field, &stored, &moved, &mut r).await?;
                }
            }
        }
    }
    if r.raced == 0 {
        let _: () = conn.set(NodeKeys.crypto_migrated(), 1).await?;
    }
    Ok(r)
}
