//! Time helpers: the clock, and ISO-8601 parsing/formatting as the Segment spec uses it.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Parses an ISO-8601 / RFC 3339 timestamp (as SDKs send it) into ms since the epoch.
/// Accepts a few forms SDKs really send: with or without fractional seconds, `Z` or an offset,
/// and a date-time without offset (taken as UTC).
pub fn parse_iso8601_ms(text: &str) -> Option<i64> {
    if let Ok(parsed) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some((parsed.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    // No offset: treat as UTC.
    if text.len() >= 19 && !text.ends_with('Z') {
        let with_zone = format!("{text}Z");
        if let Ok(parsed) = OffsetDateTime::parse(&with_zone, &Rfc3339) {
            return Some((parsed.unix_timestamp_nanos() / 1_000_000) as i64);
        }
    }
    None
}

/// Formats ms since the epoch as `2024-01-02T03:04:05.678Z`.
pub fn format_iso8601_ms(ms: i64) -> String {
    let datetime = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (year, month, day) = (datetime.year(), datetime.month() as u8, datetime.day());
    let (hour, minute, second) = (datetime.hour(), datetime.minute(), datetime.second());
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
        datetime.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_iso8601_ms("2024-01-02T03:04:05.678Z").unwrap();
        assert_eq!(format_iso8601_ms(ms), "2024-01-02T03:04:05.678Z");
    }

    #[test]
    fn accepts_offsets_and_no_fraction() {
        assert_eq!(
            parse_iso8601_ms("2024-01-02T03:04:05+01:00"),
            parse_iso8601_ms("2024-01-02T02:04:05Z")
        );
        assert_eq!(
            parse_iso8601_ms("2024-01-02T03:04:05"),
            parse_iso8601_ms("2024-01-02T03:04:05Z")
        );
        assert!(parse_iso8601_ms("yesterday").is_none());
    }
}
