//! The one Redis connection type every part of the node holds. Today it is a
//! single-node, multiplexed, reconnecting connection; code takes a
//! [`RedisConn`] (never a concrete redis-rs type) so the connection behind it
//! can change without touching its users.

use crate::Result;

/// A cloneable Redis connection (multiplexed, reconnecting).
pub type RedisConn = redis::aio::ConnectionManager;

/// Connects to `url` (a `redis://` URL), with redis-rs's default timeouts.
pub async fn connect(url: &str) -> Result<RedisConn> {
    let client = redis::Client::open(url)?;
    Ok(redis::aio::ConnectionManager::new(client).await?)
}
