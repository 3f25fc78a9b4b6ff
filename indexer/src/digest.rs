//! A deterministic hash of one chain's derived state, so two runs (backfill
//! vs live, crashed vs uninterrupted, reorged vs fresh) can be compared.

use crate::conn::RedisConn;
use sha2::{Digest, Sha256};

use crate::Result;
use crate::keys::ChainKeys;
use crate::store::scan;

/// SHA-256 (hex) over every state key of the chain, sorted, with its type and
/// canonically ordered content. Bookkeeping (checkpoint, undo, leader) is left out.
pub async fn state_digest(conn: &mut RedisConn, keys: &ChainKeys) -> Result<(String, usize)> {
    let names = scan(conn, &keys.state_pattern()).await?;
    let mut h = Sha256::new();
    for key in &names {
        let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await?;
        let mut items: Vec<String> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<String>(conn)
                    .await?,
            ],
            "hash" => {
                let pairs: Vec<(String, String)> =
                    redis::cmd("HGETALL").arg(key).query_async(conn).await?;
                pairs.into_iter().map(|(f, v)| format!("{f}={v}")).collect()
            }
            "set" => redis::cmd("SMEMBERS").arg(key).query_async(conn).await?,
            "zset" => {
                let pairs: Vec<(String, String)> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(conn)
                    .await?;
                pairs.into_iter().map(|(m, s)| format!("{m}@{s}")).collect()
            }
            // Keys that vanished between SCAN and TYPE, or types we never write.
            other => vec![format!("<{other}>")],
        };
        items.sort();
        h.update(key.as_bytes());
        h.update([0]);
        h.update(kind.as_bytes());
        for item in items {
            h.update([0]);
            h.update(item.as_bytes());
        }
        h.update([0xff]);
    }
    Ok((alloy::hex::encode(h.finalize()), names.len()))
}
