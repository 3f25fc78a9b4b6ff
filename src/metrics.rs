//! Prometheus metrics at `GET /metrics` (text format, via `prometheus-client`).
//! The indexer keeps plain atomics per chain ([`IndexerMetrics`]); a scrape
//! reads them into a fresh registry, so the hot paths never touch a lock.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chainfront_indexer::metrics::IndexerMetrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::{ApiError, AppState};

/// Every chain's indexer figures in this process.
pub struct NodeMetrics {
    chains: Mutex<BTreeMap<String, (u64, Arc<IndexerMetrics>)>>,
    started: Instant,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            chains: Mutex::default(),
            started: Instant::now(),
        }
    }
}

impl NodeMetrics {
    /// The figures of chain `name` (created on first use).
    pub fn chain(&self, name: &str, chain_id: u64) -> Arc<IndexerMetrics> {
        let mut chains = self
            .chains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        chains
            .entry(name.to_owned())
            .or_insert_with(|| (chain_id, Arc::default()))
            .1
            .clone()
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        self.render_with(None)
    }

    /// The exposition, plus the Compute API's figures (the same counters as
    /// `GET /v1/metrics`, node-wide from Redis) when given.
    pub fn render_with(
        &self,
        compute: Option<&crate::compute::Metrics>,
    ) -> Result<String, std::fmt::Error> {
        type Labels = Vec<(String, String)>;
        let mut registry = Registry::with_prefix("chainfront");
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Gauge>::default();
            registry.register(name, help, f.clone());
            f
        };
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Counter>::default();
            registry.register(name, help, f.clone());
            f
        };
        let head = gauge(
            &mut registry,
            "head_block",
            "Latest head block seen from the RPC",
        );
        let indexed = gauge(
            &mut registry,
            "indexed_block",
            "Last block committed to Redis",
        );
        let lag = gauge(
            &mut registry,
            "lag_blocks",
            "Blocks between head and indexed",
        );
        let depth = gauge(&mut registry, "max_reorg_depth", "Deepest reorg handled");
        let events = counter(&mut registry, "events_applied", "Logs applied");
        let reorgs = counter(&mut registry, "reorgs", "Reorgs handled");
        let rpc_errors = counter(&mut registry, "rpc_errors", "Failed RPC calls");
        let failovers = counter(
            &mut registry,
            "rpc_failovers",
            "Switches to another RPC endpoint",
        );
        let limited = counter(&mut registry, "rpc_rate_limited", "RPC 429 answers");
        let uptime = Gauge::<i64>::default();
        registry.register("uptime_seconds", "Seconds since start", uptime.clone());
        uptime.set(i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX));
        let chains = self
            .chains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (name, (chain_id, m)) in chains.iter() {
            let l: Labels = vec![
                ("chain".into(), name.clone()),
                ("chain_id".into(), chain_id.to_string()),
            ];
            head.get_or_create(&l)
                .set(as_i64(m.head_block.load(Ordering::Relaxed)));
            indexed
                .get_or_create(&l)
                .set(as_i64(m.indexed_block.load(Ordering::Relaxed)));
            lag.get_or_create(&l).set(as_i64(m.lag()));
            depth
                .get_or_create(&l)
                .set(as_i64(m.max_reorg_depth.load(Ordering::Relaxed)));
            events
                .get_or_create(&l)
                .inc_by(m.events_applied.load(Ordering::Relaxed));
            reorgs
                .get_or_create(&l)
                .inc_by(m.reorgs.load(Ordering::Relaxed));
            rpc_errors
                .get_or_create(&l)
                .inc_by(m.rpc.errors.load(Ordering::Relaxed));
            failovers
                .get_or_create(&l)
                .inc_by(m.rpc.failovers.load(Ordering::Relaxed));
            limited
                .get_or_create(&l)
                .inc_by(m.rpc.rate_limited.load(Ordering::Relaxed));
        }
        drop(chains);
        if let Some(c) = compute {
            let requests = counter(
                &mut registry,
                "compute_requests",
                "Compute API job requests, per service (all replicas)",
            );
            for (svc, n) in &c.requests_by_service {
                requests
                    .get_or_create(&vec![("service".into(), svc.clone())])
                    .inc_by(*n);
            }
            let jobs = gauge(
                &mut registry,
                "compute_jobs",
                "Compute jobs per status (all replicas)",
            );
            for (status, n) in &c.jobs_by_status {
                jobs.get_or_create(&vec![("status".into(), status.clone())])
                    .set(as_i64(*n));
            }
            let active = Gauge::<i64>::default();
            registry.register(
                "compute_active_jobs",
                "Compute jobs pending or processing",
                active.clone(),
            );
            active.set(as_i64(c.active_jobs));
            let revenue = Counter::<u64>::default();
            registry.register(
                "compute_revenue_usdc_base_units",
                "Charged by finished compute jobs, in USDC base units (1e-6 USD)",
                revenue.clone(),
            );
            revenue.inc_by(c.total_revenue.0);
            let total = Counter::<u64>::default();
            registry.register(
                "compute_requests_all",
                "Compute API job requests, all services",
                total.clone(),
            );
            total.inc_by(c.total_requests);
        }
        let mut out = String::new();
        encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// `GET /metrics`.
pub(crate) fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(metrics))
}

/// Prometheus metrics of the node and each chain's indexer.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    responses((status = 200, description = "OpenMetrics text: head, indexed block, lag, events applied, reorgs, RPC errors per chain", content_type = "application/openmetrics-text"))
)]
async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let compute = match &state.compute {
        Some(c) => c.metrics().await.ok(),
        None => None,
    };
    let body = state
        .metrics
        .render_with(compute.as_ref())
        .map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_chain_with_labels() {
        let m = NodeMetrics::default();
        let base = m.chain("base", 8453);
        base.head_block.store(120, Ordering::Relaxed);
        base.indexed_block.store(100, Ordering::Relaxed);
        base.events_applied.store(7, Ordering::Relaxed);
        base.rpc.failovers.store(2, Ordering::Relaxed);
        let text = m.render().expect("render");
        assert!(
            text.contains(r#"chainfront_lag_blocks{chain="base",chain_id="8453"} 20"#),
            "{text}"
        );
        assert!(
            text.contains(r#"chainfront_events_applied_total{chain="base",chain_id="8453"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"chainfront_rpc_failovers_total{chain="base",chain_id="8453"} 2"#),
            "{text}"
        );
        assert!(
            Arc::ptr_eq(&base, &m.chain("base", 8453)),
            "one set per chain"
        );
    }
}
