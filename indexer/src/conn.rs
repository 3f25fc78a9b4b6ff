//! The one Redis connection type every part of the node holds: a single
//! server (multiplexed, reconnecting) or a Redis Cluster (redis-rs
//! cluster-async, following slot moves), chosen from `redis.url`. Code takes a
//! [`RedisConn`] (never a concrete redis-rs type) and runs commands, pipelines
//! and scripts on it the same way in both cases.
//!
//! What works on a cluster and why: every key of one chain carries the hash
//! tag `{c<chain_id>}` ([`crate::keys`]), so a chain's commit script, its
//! pipelines and its multi-key commands all go to one slot; node-wide keys
//! carry their own tag (`{ip:..}`, `{sig:..}`) and every script and pipeline
//! on them stays within one tag. [`scan`] visits every primary. So a cluster
//! scales by spreading chains and API replicas, never one chain's writes.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tracing::warn;

use crate::{Error, Result};

/// A cloneable Redis connection: one server or a cluster.
#[derive(Clone)]
pub struct RedisConn(Inner);

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Inner::Single(_) => "RedisConn(single)",
            Inner::Cluster(_) => "RedisConn(cluster)",
        })
    }
}

/// Timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    /// How long one command (or pipeline, or script) may take before the
    /// client gives up on the answer. The command may still have run: callers
    /// that write treat a timeout as "unknown" (the indexer's checkpoint CAS
    /// makes a replay safe).
    pub response_timeout: Duration,
    /// How long connecting to one server may take.
    pub connection_timeout: Duration,
}

impl Default for ConnOptions {
    /// Short answers for the API: a Redis that does not answer in 2 s is
    /// reported as down rather than waited on.
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(5),
        }
    }
}

/// Connects to `url` with [`ConnOptions::default`].
pub async fn connect(url: &str) -> Result<RedisConn> {
    connect_with(url, ConnOptions::default()).await
}

/// Connects to `url`: one `redis://` URL, or a comma-separated list of
/// cluster nodes (`redis://a:7000,redis://b:7001`). A single URL whose server
/// runs in cluster mode is used as the cluster's seed, so a cluster's
/// configuration endpoint works as well.
pub async fn connect_with(url: &str, opts: ConnOptions) -> Result<RedisConn> {
    let nodes: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if nodes.len() > 1 {
        return connect_cluster(&nodes, opts).await;
    }
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(opts.response_timeout))
        .set_connection_timeout(Some(opts.connection_timeout));
    let mut single = ConnectionManager::new_with_config(client, config).await?;
    // A proxy that does not answer INFO is no cluster node.
    let info: Option<String> = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut single)
        .await
        .ok();
    if info.is_some_and(|i| info_field(&i, "cluster_enabled").as_deref() == Some("1")) {
        return connect_cluster(&nodes, opts).await;
    }
    Ok(RedisConn(Inner::Single(single)))
}

async fn connect_cluster(nodes: &[&str], opts: ConnOptions) -> Result<RedisConn> {
    for n in nodes {
        let info = redis::IntoConnectionInfo::into_connection_info(*n)?;
        if info.redis_settings().db() != 0 {
            return Err(Error::Redis(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis Cluster has only database 0; drop the /<db> from redis.url",
            ))));
        }
    }
    let client = ClusterClientBuilder::new(nodes.to_vec())
        .response_timeout(opts.response_timeout)
        .connection_timeout(opts.connection_timeout)
        .build()?;
    Ok(RedisConn(Inner::Cluster(
        client.get_async_connection().await?,
    )))
}

impl RedisConn {
    /// Whether this is a Redis Cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Inner::Cluster(_))
    }

    /// `cmd` on every primary (one server: that server), each answer with
    /// the node's address (empty for a single server).
    pub async fn on_each_primary<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
    ) -> Result<Vec<(String, T)>> {
        let nodes = match &mut self.0 {
            Inner::Single(_) => vec![None],
            Inner::Cluster(c) => primaries(c).await?.into_iter().map(Some).collect(),
        };
        let mut out = Vec::new();
        for node in nodes {
            let v = self.send(cmd.clone(), node.as_ref()).await?;
            let name = node.map(|(h, p)| format!("{h}:{p}")).unwrap_or_default();
            out.push((
                name,
                redis::from_redis_value(v).map_err(redis::RedisError::from)?,
            ));
        }
        Ok(out)
    }
}

/// (host, port) of every primary, from `CLUSTER SLOTS`.
async fn primaries(c: &mut ClusterConnection) -> Result<Vec<(String, u16)>> {
    let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
    let mut out = Vec::new();
    let Value::Array(ranges) = slots else {
        return Err(Error::Corrupt("CLUSTER SLOTS: not an array".into()));
    };
    for range in ranges {
        // [start, end, [host, port, id, ...], replicas...]
        let Value::Array(parts) = range else { continue };
        let Some(Value::Array(primary)) = parts.get(2) else {
            continue;
        };
        let (Some(host), Some(port)) = (primary.first(), primary.get(1)) else {
            continue;
        };
        let host: String = redis::from_redis_value_ref(host).map_err(redis::RedisError::from)?;
        let port: u16 = redis::from_redis_value_ref(port).map_err(redis::RedisError::from)?;
        if !out.contains(&(host.clone(), port)) {
            out.push((host, port));
        }
    }
    out.sort();
    Ok(out)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Single(c) => c.req_packed_command(cmd),
            Inner::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

/// Every key matching `pattern`, via SCAN (never KEYS) on every primary,
/// sorted and without duplicates.
pub async fn scan(conn: &mut RedisConn, pattern: &str) -> Result<Vec<String>> {
    let nodes = match &mut conn.0 {
        Inner::Single(_) => vec![None],
        Inner::Cluster(c) => primaries(c).await?.into_iter().map(Some).collect(),
    };
    let mut out = Vec::new();
    for node in nodes {
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let reply = conn.send(cmd, node.as_ref()).await?;
            let (next, batch): (u64, Vec<String>) =
                redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl RedisConn {
    /// Sends `cmd` to `node` (a cluster primary), or wherever its key routes.
    async fn send(&mut self, cmd: Cmd, node: Option<&(String, u16)>) -> Result<Value> {
        Ok(match (&mut self.0, node) {
            (Inner::Cluster(c), Some((host, port))) => {
                c.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    }),
                )
                .await?
            }
            _ => cmd.query_async(self).await?,
        })
    }
}

/// A field of an `INFO` answer (`name:value` lines).
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

/// What Redis may evict when it reaches `maxmemory` (`allkeys-*`, which may
/// evict anything, is an error instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// `noeviction`: writes fail instead; nothing is lost silently.
    None,
    /// `volatile-*`: keys with a TTL can go (the leader lock, rate-limit
    /// counters, used-signature markers); derived state has none.
    Volatile(String),
    /// The server does not say (INFO refused, e.g. by a proxy).
    Unknown,
}

/// Reads `maxmemory-policy` on every primary (from `INFO memory`, which
/// managed services that rename `CONFIG` still answer) and refuses a policy
/// that may evict chain state: with `allkeys-*`, Redis could drop the
/// checkpoint, an undo record or a total and the indexer would rebuild a
/// wrong state silently. `volatile-*` is accepted with a warning (it can
/// evict the leader lock and node keys that carry a TTL, never state).
pub async fn check_eviction_policy(conn: &mut RedisConn) -> Result<Eviction> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("memory");
    let mut worst = Eviction::None;
    let infos = match conn.on_each_primary::<String>(&cmd).await {
        Ok(infos) => infos,
        // Some proxies and managed services do not answer INFO: say what
        // cannot be checked instead of refusing to start.
        Err(e) => {
            warn!(target: "chainfront::redis", error = %e, "cannot read Redis's maxmemory-policy; it must be `noeviction` (an allkeys-* policy can evict indexer state)");
            return Ok(Eviction::Unknown);
        }
    };
    for (node, info) in infos {
        let policy = info_field(&info, "maxmemory_policy").unwrap_or_else(|| "noeviction".into());
        if policy.starts_with("allkeys-") {
            return Err(Error::UnsafeRedis(format!(
                "maxmemory-policy is `{policy}`{}: Redis may evict indexer state (checkpoint, undo records, totals) \
                 and chainfront would serve a wrong state; set `maxmemory-policy noeviction`",
                if node.is_empty() {
                    String::new()
                } else {
                    format!(" on {node}")
                }
            )));
        }
        if policy.starts_with("volatile-") && worst == Eviction::None {
            warn!(target: "chainfront::redis", policy = %policy, "maxmemory-policy may evict keys with a TTL (leader lock, rate-limit counters, used-signature markers); `noeviction` is recommended");
            worst = Eviction::Volatile(policy);
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let info = "# Memory\r\nmaxmemory:0\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(
            info_field(info, "maxmemory_policy").as_deref(),
            Some("allkeys-lru")
        );
        assert_eq!(info_field(info, "maxmemory").as_deref(), Some("0"));
        assert_eq!(
            info_field("cluster_enabled:1\r\n", "cluster_enabled").as_deref(),
            Some("1")
        );
        assert_eq!(info_field(info, "cluster_enabled"), None);
    }
}
