//! Times as the protocol carries them (milliseconds since the Unix epoch) and as people
//! read them (RFC 3339, UTC), shared by the daemon, the client, the bench and their tests.

/// Milliseconds since the Unix epoch, the unit of every time the protocol carries and the
/// relay stores.
///
/// The one clock reading in this crate, for its callers: the codec never calls it, so
/// decoding stays a function of its input.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC, to the second.
pub fn format_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (1_795_647_599_999, "2026-11-25T22:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (999, "1970-01-01T00:00:00Z"),
            (1_709_251_199_000, "2024-02-29T23:59:59Z"),
            (1_735_689_600_000, "2025-01-01T00:00:00Z"),
            (1_789_012_345_678, "2026-09-10T03:52:25Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00Z"),
            (253_402_300_799_000, "9999-12-31T23:59:59Z"),
        ];
        for (ms, expected) in cases {
            assert_eq!(super::format_time_ms(ms), expected, "{ms}");
        }
    }
}
