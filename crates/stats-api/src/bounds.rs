//! Time bounds in query strings: `YYYY-MM-DD`, RFC 3339, or epoch milliseconds (what
//! Grafana's Infinity data source sends).

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};

/// One `from`/`to` value as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Day(NaiveDate),
    Instant(DateTime<Utc>),
}

/// Parses a bound named `name` (for the error message).
///
/// # Errors
/// A client-facing message when `s` is none of the accepted forms.
pub fn parse_bound(s: &str, name: &str) -> Result<Bound, String> {
    let bad = || {
        format!("{name} must be a date (YYYY-MM-DD), an RFC 3339 timestamp or epoch milliseconds")
    };
    let s = s.trim();
    if !s.is_empty()
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    {
        let ms: i64 = s.parse().map_err(|_| bad())?;
        return DateTime::from_timestamp_millis(ms)
            .map(Bound::Instant)
            .ok_or_else(bad);
    }
    if s.len() == 10 {
        return parse_day(s).map(Bound::Day).ok_or_else(bad);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| Bound::Instant(t.with_timezone(&Utc)))
        .map_err(|_| bad())
}

/// A strict `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 || s.as_bytes()[4] != b'-' || s.as_bytes()[7] != b'-' {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

impl Bound {
    /// The UTC day this bound selects as a range start.
    pub fn first_day(self) -> NaiveDate {
        match self {
            Self::Day(d) => d,
            Self::Instant(t) => t.date_naive(),
        }
    }

    /// The last UTC day this bound selects as a range end: a day is inclusive, an instant
    /// exclusive (midnight ends the day before).
    pub fn last_day(self) -> NaiveDate {
        match self {
            Self::Day(d) => d,
            Self::Instant(t) => (t - TimeDelta::microseconds(1)).date_naive(),
        }
    }

    /// As a range start instant.
    pub fn start_instant(self) -> DateTime<Utc> {
        match self {
            Self::Day(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
            Self::Instant(t) => t,
        }
    }

    /// As an exclusive range end instant (a day includes itself).
    pub fn end_instant(self) -> DateTime<Utc> {
        match self {
            Self::Day(d) => d
                .checked_add_days(Days::new(1))
                .unwrap_or(d)
                .and_time(chrono::NaiveTime::MIN)
                .and_utc(),
            Self::Instant(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        parse_day(s).expect("test date")
    }

    #[test]
    fn the_three_forms_parse() {
        assert_eq!(
            parse_bound("2025-11-14", "from"),
            Ok(Bound::Day(day("2025-11-14")))
        );
        let t = parse_bound("2025-11-14T10:00:00+01:00", "from").expect("rfc3339");
        assert_eq!(t.start_instant().to_rfc3339(), "2025-11-14T09:00:00+00:00");
        let ms = parse_bound("1763114400000", "to").expect("ms");
        assert_eq!(ms.start_instant().to_rfc3339(), "2025-11-14T10:00:00+00:00");
    }

    #[test]
    fn garbage_is_refused_naming_the_parameter() {
        let e = parse_bound("yesterday", "from").expect_err("bad");
        assert!(e.starts_with("from must be"), "{e}");
        assert!(parse_bound("2025-13-01", "to").is_err());
        assert!(parse_day("2025-1-1").is_none());
    }

    #[test]
    fn days_are_inclusive_and_instants_exclusive_at_the_end() {
        assert_eq!(Bound::Day(day("2025-11-14")).last_day(), day("2025-11-14"));
        let midnight = parse_bound("2025-11-15T00:00:00Z", "to").expect("t");
        assert_eq!(midnight.last_day(), day("2025-11-14"));
        assert_eq!(
            Bound::Day(day("2025-11-14")).end_instant().to_rfc3339(),
            "2025-11-15T00:00:00+00:00"
        );
    }
}
