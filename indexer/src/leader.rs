//! The leader lock: one indexer process writes a chain, others wait as hot
//! standbys. The lock value is a fencing token, `<n>:<128 random bits>` (`n`
//! from a counter, for logs); every commit checks it by equality inside the
//! commit script, so a paused ex-leader can never write after its lock
//! expired. The random part makes tokens unique even when Redis rolls the
//! counter back (a failover or a restored dump) and every container runs as
//! pid 1.
//!
//! Redis faults while taking or renewing the lock are waited out with
//! backoff: a Sentinel failover or a restart is exactly when a standby must
//! stay up.

use std::time::Duration;

use crate::conn::RedisConn;
use redis::Script;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Result;
use crate::keys::ChainKeys;
use crate::retry::RetryPolicy;

const RENEW_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A held leader lock.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// The fencing token to pass to the store.
    pub token: String,
    /// Cancelled when the lock is lost.
    pub lost: CancellationToken,
}

impl Leadership {
    /// Gives the lock up (only if it is still ours), so a standby takes over
    /// at once instead of after the lock's TTL. Stops the renewal.
    pub async fn release(&self, conn: &mut RedisConn, keys: &ChainKeys) {
        self.lost.cancel();
        let released: redis::RedisResult<i64> = Script::new(RELEASE_LUA)
            .key(keys.leader())
            .arg(&self.token)
            .invoke_async(conn)
            .await;
        if let Err(e) = released {
            warn!(target: "chainfront::indexer", chain_id = keys.chain_id(), error = %e, "could not release the leader lock; it expires by itself");
        }
    }
}

/// Waits until this process holds the lock for `keys`' chain (or `shutdown`),
/// then keeps renewing it in the background. `ttl` bounds how long a dead
/// leader blocks its standby. Redis errors are retried with backoff, never
/// returned: `Ok(None)` means shut down before the lock was taken.
pub async fn acquire(
    mut conn: RedisConn,
    keys: ChainKeys,
    ttl: Duration,
    shutdown: CancellationToken,
) -> Result<Option<Leadership>> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(100);
    let retry = RetryPolicy {
        max_retries: usize::MAX,
        ..RetryPolicy::default()
    };
    let mut delays = retry.delays();
    let mut announced = false;
    loop {
        let wait = match try_acquire(&mut conn, &keys, ttl_ms).await {
            Ok(Some((fence, token))) => {
                info!(target: "chainfront::indexer", chain_id = keys.chain_id(), fence, "leader lock acquired");
                let lost = CancellationToken::new();
                tokio::spawn(renew(
                    conn,
                    keys,
                    token.clone(),
                    ttl_ms,
                    lost.clone(),
                    shutdown,
                ));
                return Ok(Some(Leadership { token, lost }));
            }
            Ok(None) => {
                if !announced {
                    info!(target: "chainfront::indexer", chain_id = keys.chain_id(), "another indexer leads this chain; standing by");
                    announced = true;
                }
                delays = retry.delays();
                Duration::from_millis(ttl_ms / 3)
            }
            Err(e) => {
                let wait = delays.next().unwrap_or(retry.max_delay);
                warn!(target: "chainfront::indexer", chain_id = keys.chain_id(), error = %e, retry_in_ms = wait.as_millis() as u64, "cannot reach Redis to take the leader lock; retrying");
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One attempt: `(fence, token)` if the lock was free and is now ours.
async fn try_acquire(
    conn: &mut RedisConn,
    keys: &ChainKeys,
    ttl_ms: u64,
) -> redis::RedisResult<Option<(u64, String)>> {
    let fence: u64 = redis::cmd("INCR")
        .arg(keys.fence())
        .query_async(conn)
        .await?;
    let token = format!("{fence}:{:032x}", rand::random::<u128>());
    let got: Option<String> = redis::cmd("SET")
        .arg(keys.leader())
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms)
        .query_async(conn)
        .await?;
    Ok(got.map(|_| (fence, token)))
}

async fn renew(
    mut conn: RedisConn,
    keys: ChainKeys,
    token: String,
    ttl_ms: u64,
    lost: CancellationToken,
    shutdown: CancellationToken,
) {
    let renew = Script::new(RENEW_LUA);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _: redis::RedisResult<i64> =
                    Script::new(RELEASE_LUA).key(keys.leader()).arg(&token).invoke_async(&mut conn).await;
                return;
            }
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(ttl_ms / 3)) => {}
        }
        let res: redis::RedisResult<i64> = renew
            .key(keys.leader())
            .arg(&token)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await;
        match res {
            Ok(1) => {}
            Ok(_) => {
                warn!(target: "chainfront::indexer", chain_id = keys.chain_id(), "leader lock lost");
                lost.cancel();
                return;
            }
            // Redis unreachable: keep trying; commits are fenced anyway.
            Err(e) => {
                warn!(target: "chainfront::indexer", error = %e, "leader lock renewal failed")
            }
        }
    }
}
