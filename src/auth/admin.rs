//! The admin API key: only its SHA-256 is configured; compared in constant time.
