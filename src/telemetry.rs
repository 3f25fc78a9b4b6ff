//! Logging set-up: `tracing` to stderr, pretty for terminals, JSON in
//! production. stdout stays for command results.
//!
//! Security events (target `chainfront::security`: auth failures, rate-limit
//! violations, bans, admin actions) are part of that stream and, when
//! `log.security_file` is set, also go to their own file as JSON lines with
//! ISO 8601 timestamps, rotated at 5 MB with 5 files kept (ClawCloud's
//! `security.log`). No event carries a signature, key or credential.

use std::path::Path;
use std::sync::Mutex;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// The target of every security event.
pub const SECURITY_TARGET: &str = "chainfront::security";
/// Size at which the security file rotates.
pub const SECURITY_FILE_BYTES: usize = 5 * 1024 * 1024;
/// Rotated security files kept.
pub const SECURITY_FILES: usize = 5;

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// A JSON-lines layer for security events only, written to `path` with
/// size-based rotation (`max_bytes` per file, `keep` old files).
pub fn security_file_layer(path: &Path, max_bytes: usize, keep: usize) -> BoxedLayer {
    // Owner-only: the stream names client IPs, wallets and token ids.
    let mut options = std::fs::OpenOptions::new();
    options.read(true).create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let writer = FileRotate::new(
        path,
        AppendCount::new(keep),
        ContentLimit::BytesSurpassed(max_bytes),
        Compression::None,
        Some(options),
    );
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(Mutex::new(writer))
        .with_filter(Targets::new().with_target(SECURITY_TARGET, Level::INFO))
        .boxed()
}

/// Targets whose spans carry an RPC URL (alloy's HTTP transport opens a
/// debug span `ReqwestTransport{url=...}`, and every event inside it repeats
/// the URL, API key included): never logged below info, whatever the filter
/// says.
const URL_BEARING_TARGETS: &[&str] = &["alloy_transport_http"];

/// `directives` (a `tracing` filter such as `info,chainfront=debug`) with the
/// URL-bearing targets capped at info.
pub fn redacting_filter(directives: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    for target in URL_BEARING_TARGETS {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Installs the global subscriber. `RUST_LOG` wins over the configured filter.
/// Calling it twice is harmless (the second call is ignored).
pub fn init(log: &LogConfig) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| log.filter.clone());
    let filter = redacting_filter(&directives);
    let main: BoxedLayer = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![main];
    if let Some(p) = log.security_file.as_deref() {
        layers.push(security_file_layer(p, SECURITY_FILE_BYTES, SECURITY_FILES));
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_events_go_to_their_rotating_file_and_nothing_else_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("security.log");
        let subscriber = tracing_subscriber::registry().with(security_file_layer(&path, 2_000, 2));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "chainfront::api", "not a security event");
            for i in 0..60 {
                tracing::warn!(target: "chainfront::security", event = "rate_limited", ip = "203.0.113.9", n = i, "rate limit exceeded");
            }
        });
        let current = std::fs::read_to_string(&path).expect("security.log");
        let line = current.lines().last().expect("a line");
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert_eq!(v["event"], "rate_limited");
        assert_eq!(v["ip"], "203.0.113.9");
        let ts = v["timestamp"].as_str().expect("timestamp");
        assert!(ts.contains('T') && ts.ends_with('Z'), "ISO 8601: {ts}");
        assert!(!current.contains("not a security event"));
        // Rotated: the first file exists, and no more than `keep` are kept.
        assert!(dir.path().join("security.log.1").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "owner-only");
        }
        assert!(!dir.path().join("security.log.3").exists());
    }
}
