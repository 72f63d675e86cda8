//! A site's days in its own time zone, assembled from UTC-hour rollups.
//!
//! Every rollup is kept per UTC hour (or finer), so a local day, in whatever zone the site
//! has now, is a run of whole UTC hours: changing a site's zone moves its past days with no
//! stored row rewritten. A UTC hour belongs to the local day (and hour) that contains its
//! midpoint. In the zones whose offset is a whole number of hours (nearly all) that is
//! exact; in those offset by 30 or 45 minutes (India, Iran, Nepal, Newfoundland, parts of
//! Australia) a day's first hour begins up to 45 minutes before local midnight.

use chrono::{DateTime, Days, LocalResult, NaiveDate, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Every bit of a `daily_visitors.hours` mask (bit `h`: seen in UTC hour `h`).
pub const ALL_HOURS: i32 = (1 << 24) - 1;

/// A site's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteClock {
    pub tz: Tz,
}

impl SiteClock {
    pub fn utc() -> Self {
        Self { tz: chrono_tz::UTC }
    }

    pub fn is_utc(&self) -> bool {
        self.tz == chrono_tz::UTC
    }

    /// The local day UTC hour `hour` belongs to (the day of its midpoint).
    pub fn day_of_hour(&self, hour: DateTime<Utc>) -> NaiveDate {
        (hour + TimeDelta::minutes(30))
            .with_timezone(&self.tz)
            .date_naive()
    }

    /// The local day of an instant, by the hour it falls in.
    pub fn day_of(&self, t: DateTime<Utc>) -> NaiveDate {
        self.day_of_hour(floor_hour(t))
    }

    /// The first UTC hour of local day `day`.
    pub fn day_start(&self, day: NaiveDate) -> DateTime<Utc> {
        let naive = day.and_time(chrono::NaiveTime::MIN);
        // Midnight can fall in a DST gap (a few zones change at 00:00): the day then
        // begins at the first instant that exists.
        let midnight = match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
            LocalResult::None => self
                .tz
                .from_local_datetime(&(naive + TimeDelta::hours(1)))
                .earliest()
                .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc)),
        };
        let hour = floor_hour(midnight);
        if self.day_of_hour(hour) < day {
            hour + TimeDelta::hours(1)
        } else {
            hour
        }
    }

    /// The hours of local days `first..=last` (either end open).
    pub fn days(&self, first: Option<NaiveDate>, last: Option<NaiveDate>) -> Span {
        Span {
            start: first.map(|d| self.day_start(d)),
            end: last
                .and_then(|d| d.checked_add_days(Days::new(1)))
                .map(|d| self.day_start(d)),
        }
    }
}

/// `t` rounded down to its UTC hour.
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(3600), 0).unwrap_or(t)
}

/// A half-open range of whole UTC hours, `[start, end)`; `None` is open-ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// The UTC days a [`Span`] touches and, for the first and last, which hours of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcDays {
    pub first: Option<NaiveDate>,
    pub last: Option<NaiveDate>,
    /// Hours of the first day inside the span (all for an open start).
    pub first_mask: i32,
    /// Hours of the last day inside the span (all for an open end).
    pub last_mask: i32,
}

impl UtcDays {
    /// Whether the span covers exactly one whole UTC day.
    pub fn one_whole_day(&self) -> bool {
        self.first.is_some()
            && self.first == self.last
            && self.first_mask & self.last_mask == ALL_HOURS
    }
}

impl Span {
    /// Whether the span holds no hour.
    pub fn is_empty(&self) -> bool {
        matches!((self.start, self.end), (Some(a), Some(b)) if a >= b)
    }

    /// At most one local day long (25 hours, for the day clocks go back).
    pub fn within_a_day(&self) -> bool {
        matches!((self.start, self.end), (Some(a), Some(b)) if b - a <= TimeDelta::hours(25))
    }

    /// The UTC days and hour masks `daily_visitors` rows are read with.
    pub fn utc_days(&self) -> UtcDays {
        let first_mask = self
            .start
            .map_or(ALL_HOURS, |s| ALL_HOURS & !((1 << s.hour()) - 1));
        let last = self.end.map(|e| e - TimeDelta::hours(1));
        let last_mask = last.map_or(ALL_HOURS, |l| (1 << (l.hour() + 1)) - 1);
        UtcDays {
            first: self.start.map(|s| s.date_naive()),
            last: last.map(|l| l.date_naive()),
            first_mask,
            last_mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn clock(zone: &str) -> SiteClock {
        SiteClock {
            tz: Tz::from_str(zone).expect("zone"),
        }
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::from_str(s).expect("day")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn local_days_begin_at_local_midnight_in_utc() {
        assert_eq!(
            clock("UTC").day_start(day("2025-11-14")),
            at("2025-11-14T00:00:00Z")
        );
        assert_eq!(
            clock("America/New_York").day_start(day("2025-11-14")),
            at("2025-11-14T05:00:00Z")
        );
        assert_eq!(
            clock("America/New_York").day_start(day("2025-07-04")),
            at("2025-07-04T04:00:00Z")
        );
        assert_eq!(
            clock("Europe/Berlin").day_start(day("2025-11-14")),
            at("2025-11-13T23:00:00Z")
        );
    }

    #[test]
    fn dst_days_are_23_and_25_hours_long() {
        let ny = clock("America/New_York");
        let spring = ny.days(Some(day("2025-03-09")), Some(day("2025-03-09")));
        assert_eq!(
            spring
                .end
                .zip(spring.start)
                .map(|(e, s)| (e - s).num_hours()),
            Some(23)
        );
        let autumn = ny.days(Some(day("2025-11-02")), Some(day("2025-11-02")));
        assert_eq!(
            autumn
                .end
                .zip(autumn.start)
                .map(|(e, s)| (e - s).num_hours()),
            Some(25)
        );
        assert!(autumn.within_a_day());
    }

    #[test]
    fn fractional_zones_begin_at_the_hour_holding_midnight() {
        // Kolkata is UTC+5:30: midnight is 18:30 UTC, inside the hour 18:00-19:00.
        let kolkata = clock("Asia/Kolkata");
        assert_eq!(
            kolkata.day_start(day("2025-11-14")),
            at("2025-11-13T18:00:00Z")
        );
        assert_eq!(
            kolkata.day_of_hour(at("2025-11-13T18:00:00Z")),
            day("2025-11-14")
        );
        assert_eq!(
            kolkata.day_of_hour(at("2025-11-13T17:00:00Z")),
            day("2025-11-13")
        );
        // Kathmandu, UTC+5:45.
        assert_eq!(
            clock("Asia/Kathmandu").day_start(day("2025-11-14")),
            at("2025-11-13T18:00:00Z")
        );
        // St. John's, UTC-3:30.
        assert_eq!(
            clock("America/St_Johns").day_start(day("2025-11-14")),
            at("2025-11-14T03:00:00Z")
        );
    }

    #[test]
    fn a_span_names_its_utc_days_and_hours() {
        let ny = clock("America/New_York").days(Some(day("2025-11-14")), Some(day("2025-11-14")));
        let d = ny.utc_days();
        assert_eq!(
            (d.first, d.last),
            (Some(day("2025-11-14")), Some(day("2025-11-15")))
        );
        assert_eq!(d.first_mask, ALL_HOURS & !0b11111);
        assert_eq!(d.last_mask, 0b11111);
        assert!(!d.one_whole_day());
        let utc = clock("UTC").days(Some(day("2025-11-14")), Some(day("2025-11-14")));
        assert!(utc.utc_days().one_whole_day());
        let open = clock("UTC").days(None, None).utc_days();
        assert_eq!(
            (open.first, open.last, open.first_mask),
            (None, None, ALL_HOURS)
        );
    }
}
