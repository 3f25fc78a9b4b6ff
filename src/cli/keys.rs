//! `chainfront keys rotate`: re-encrypts every sealed value — agent wallet
//! keys and VM SSH keys — from the current master key (`CHAINFRONT_MASTER_KEY`)
//! to a new one (`CHAINFRONT_NEW_MASTER_KEY` or `--new-key-file`).
//!
//! Safe to re-run after a crash: a value that already opens with the new key
//! is left alone, so a half-done rotation is finished by running it again.
//! Legacy plaintext values are sealed under the new key on the way.

use std::path::{Path, PathBuf};

use chainfront_indexer::conn::RedisConn;
use chainfront_indexer::keys::{ChainKeys, NodeKeys};
use chainfront_indexer::store::scan;
use redis::AsyncCommands;

use crate::config::Config;
use crate::crypto::ecies::{MasterKey, reencrypt};
use crate::{Error, Result, node};

/// Arguments of `keys rotate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// File holding the new master key (32 bytes of hex); default:
    /// `CHAINFRONT_NEW_MASTER_KEY`.
    #[arg(long)]
    pub new_key_file: Option<PathBuf>,
}

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// Values re-encrypted.
    pub moved: usize,
    /// Values already under the new key.
    pub skipped: usize,
}

fn new_key(args: &Args) -> Result<MasterKey> {
    let raw = match &args.new_key_file {
        Some(path) => std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("reading {}", path.display()),
            source,
        })?,
        None => std::env::var("CHAINFRONT_NEW_MASTER_KEY").map_err(|_| Error::Config {
            key: "new_master_key".into(),
            message: "set CHAINFRONT_NEW_MASTER_KEY or pass --new-key-file".into(),
        })?,
    };
    MasterKey::from_hex(&raw)
}

/// Runs the rotation for the configured node.
pub async fn run(file: Option<&Path>, args: Args) -> Result<()> {
    let config = Config::load(file)?;
    let old = MasterKey::from_secrets(&config.secrets)?.ok_or_else(|| Error::Config {
        key: "master_key".into(),
        message: "the current master key is needed to rotate (CHAINFRONT_MASTER_KEY)".into(),
    })?;
    let new = new_key(&args)?;
    let mut conn = node::connect_redis(&config.redis.url).await?;
    let chains: Vec<u64> = config.chains.values().map(|c| c.chain_id).collect();
    let r = rotate(&mut conn, &chains, &old, &new).await?;
    println!(
        "re-encrypted {} values, {} were already under the new key; now set CHAINFRONT_MASTER_KEY to the new key and restart",
        r.moved, r.skipped
    );
    Ok(())
}

/// Moves `stored` to `new` unless it already opens with it.
fn rotate_value(
    old: &MasterKey,
    new: &MasterKey,
    stored: &str,
    r: &mut Rotated,
) -> Result<Option<String>> {
    if crate::crypto::ecies::is_sealed(stored) && new.open(stored).is_ok() {
        r.skipped += 1;
        return Ok(None);
    }
    r.moved += 1;
    reencrypt(old, new, stored).map(Some)
}

/// Re-encrypts agent wallets and the provisioning records of `chains`.
pub async fn rotate(
    conn: &mut RedisConn,
    chains: &[u64],
    old: &MasterKey,
    new: &MasterKey,
) -> Result<Rotated> {
    let mut r = Rotated::default();
    let wallets: Vec<(String, String)> = conn.hgetall(NodeKeys.agent_wallets()).await?;
    for (address, raw) in wallets {
        let mut entry: serde_json::Value = serde_json::from_str(&raw)
            .map_err(|e| Error::Crypto(format!("agent wallet {address}: {e}")))?;
        let Some(stored) = entry["private_key"].as_str().map(str::to_owned) else {
            continue;
        };
        if let Some(moved) = rotate_value(old, new, &stored, &mut r)? {
            entry["private_key"] = serde_json::Value::String(moved);
            let _: () = conn
                .hset(NodeKeys.agent_wallets(), &address, entry.to_string())
                .await?;
        }
    }
    for chain_id in chains {
        let keys = ChainKeys::new(*chain_id);
        for key in scan(conn, &keys.provision_pattern()).await? {
            let stored: Option<String> = conn.hget(&key, "private_key").await?;
            let Some(stored) = stored.filter(|s| !s.is_empty()) else {
                continue;
            };
            if let Some(moved) = rotate_value(old, new, &stored, &mut r)? {
                let _: () = conn.hset(&key, "private_key", moved).await?;
            }
        }
    }
    Ok(r)
}
