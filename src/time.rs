//! Timestamps as the APIs show them: ISO 8601 / RFC 3339 in UTC.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix seconds as `2026-02-03T12:00:00Z`; `None` when out of range.
pub fn iso8601(unix_secs: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// The current time as ISO 8601.
pub fn now_iso8601() -> String {
    // Formatting a current timestamp with RFC 3339 cannot fail for years 0..9999.
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_unix_seconds() {
        assert_eq!(super::iso8601(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            super::iso8601(1_770_120_000).as_deref(),
            Some("2026-02-03T12:00:00Z")
        );
        assert_eq!(super::iso8601(i64::MAX), None);
    }
}
