//! Per-IP, per-route rate limits and bans, counted in Redis.
