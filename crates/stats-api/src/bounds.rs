//! Time bounds in query strings: `YYYY-MM-DD`, RFC 3339, or epoch milliseconds (what
//! Grafana's Infinity data source sends).

use crate::local_time::SiteClock;
use chrono::{DateTime, Datelike, Days, NaiveDate, TimeDelta, Utc};

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
    let bound = parse_any(s).ok_or_else(bad)?;
    // Within the years events can have (0001 to 9999): arithmetic on days and hours then
    // stays far inside chrono's range.
    let in_range = match bound {
        Bound::Day(d) => (1..=9999).contains(&d.year()),
        Bound::Instant(t) => (1..=9999).contains(&t.year()),
    };
    if !in_range {
        return Err(format!("{name} must be between the years 0001 and 9999"));
    }
    Ok(bound)
}

fn parse_any(s: &str) -> Option<Bound> {
    if !s.is_empty()
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    {
        let ms: i64 = s.parse().ok()?;
        return DateTime::from_timestamp_millis(ms).map(Bound::Instant);
    }
    if s.len() == 10 {
        return parse_day(s).map(Bound::Day);
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| Bound::Instant(t.with_timezone(&Utc)))
}

/// A strict `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 || s.as_bytes()[4] != b'-' || s.as_bytes()[7] != b'-' {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

impl Bound {
    /// The local day of `clock` this bound selects as a range start.
    pub fn first_day(self, clock: SiteClock) -> NaiveDate {
        match self {
            Self::Day(d) => d,
            Self::Instant(t) => clock.day_of(t),
        }
    }

    /// The last local day this bound selects as a range end: a day is inclusive, an
    /// instant exclusive (midnight ends the day before).
    pub fn last_day(self, clock: SiteClock) -> NaiveDate {
        match self {
            Self::Day(d) => d,
            Self::Instant(t) => clock.day_of(t - TimeDelta::microseconds(1)),
        }
    }

    /// As a range start instant, a day starting at its first hour in `clock`'s zone.
    pub fn start_instant(self, clock: SiteClock) -> DateTime<Utc> {
        match self {
            Self::Day(d) => clock.day_start(d),
            Self::Instant(t) => t,
        }
    }

    /// As an exclusive range end instant, a day ending where the next begins in `clock`'s
    /// zone.
    pub fn end_instant(self, clock: SiteClock) -> DateTime<Utc> {
        match self {
            Self::Day(d) => d
                .checked_add_days(Days::new(1))
                .map_or_else(|| clock.day_start(d), |next| clock.day_start(next)),
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
        assert_eq!(
            t.start_instant(SiteClock::utc()).to_rfc3339(),
            "2025-11-14T09:00:00+00:00"
        );
        let ms = parse_bound("1763114400000", "to").expect("ms");
        assert_eq!(
            ms.start_instant(SiteClock::utc()).to_rfc3339(),
            "2025-11-14T10:00:00+00:00"
        );
    }

    #[test]
    fn bounds_past_the_years_events_have_are_refused() {
        for s in [
            "-8334601228800000",
            "8210266876799999",
            "10000-01-01T00:00:00Z",
        ] {
            let e = parse_bound(s, "to").expect_err(s);
            assert!(e.starts_with("to must be"), "{s}: {e}");
        }
        assert!(parse_bound("9999-12-31", "to").is_ok());
        assert!(parse_bound("0001-01-01", "from").is_ok());
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
        let utc = SiteClock::utc();
        assert_eq!(
            Bound::Day(day("2025-11-14")).last_day(utc),
            day("2025-11-14")
        );
        let midnight = parse_bound("2025-11-15T00:00:00Z", "to").expect("t");
        assert_eq!(midnight.last_day(utc), day("2025-11-14"));
        assert_eq!(
            Bound::Day(day("2025-11-14"))
                .end_instant(SiteClock::utc())
                .to_rfc3339(),
            "2025-11-15T00:00:00+00:00"
        );
    }
}
