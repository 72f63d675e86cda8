//! A query's `date_range`, as the site's local days and the UTC hours that hold them.

use super::local_days::SiteClock;
use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use serde_json::Value;

/// The longest range a query may cover.
pub const MAX_RANGE_DAYS: i64 = 3 * 366;

/// First and last local day (inclusive), and the UTC instants `[start, end)` they span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Resolves `date_range` for a site on `clock` at `now`. `all` starts at `first_visit`
/// (today when the site has none).
///
/// # Errors
/// A message naming what is wrong with it.
pub fn resolve(
    v: &Value,
    clock: SiteClock,
    now: DateTime<Utc>,
    first_visit: Option<DateTime<Utc>>,
) -> Result<DayRange, String> {
    let today = now.with_timezone(&clock.tz).date_naive();
    let back = |days: u64| today.checked_sub_days(Days::new(days)).unwrap_or(today);
    let (first, last) = match v {
        Value::String(s) => match s.as_str() {
            "day" => (today, today),
            "7d" => (back(6), today),
            "28d" => (back(27), today),
            "30d" => (back(29), today),
            "91d" => (back(90), today),
            "month" => (today.with_day(1).unwrap_or(today), today),
            "year" => (today.with_ordinal(1).unwrap_or(today), today),
            "6mo" | "12mo" => {
                let months = if s == "6mo" { 5 } else { 11 };
                let first = today
                    .with_day(1)
                    .and_then(|d| d.checked_sub_months(Months::new(months)))
                    .unwrap_or(today);
                (first, today)
            }
            "all" => {
                // At most the longest range: one stray event dated in year 1 must not make
                // "all" unanswerable.
                let earliest = back(MAX_RANGE_DAYS.unsigned_abs() - 1);
                let first = first_visit.map_or(today, |t| clock.day_of(t));
                (first.clamp(earliest, today), today)
            }
            other => return Err(format!("unknown date_range {other:?}")),
        },
        Value::Array(a) if a.len() == 2 => {
            let day = |i: usize| {
                a[i].as_str()
                    .and_then(strict_day)
                    .ok_or_else(|| format!("date_range[{i}] is not a date (YYYY-MM-DD): {}", a[i]))
            };
            (day(0)?, day(1)?)
        }
        _ => {
            return Err(format!(
                "date_range is a name such as \"7d\" or [first day, last day], not {v}"
            ));
        }
    };
    if last < first {
        return Err(format!("date_range is reversed: {last} is before {first}"));
    }
    let days = (last - first).num_days() + 1;
    if days > MAX_RANGE_DAYS {
        return Err(format!(
            "date_range covers {days} days; at most {MAX_RANGE_DAYS} are allowed"
        ));
    }
    let span = clock.days(Some(first), Some(last));
    Ok(DayRange {
        first,
        last,
        start: span.start.unwrap_or(now),
        end: span.end.unwrap_or(now),
    })
}

/// `YYYY-MM-DD` exactly (a longer timestamp's date part), year 1 to 9999.
fn strict_day(s: &str) -> Option<NaiveDate> {
    let d = s.get(..10)?.as_bytes();
    let shape = d.iter().enumerate().all(|(i, b)| match i {
        4 | 7 => *b == b'-',
        _ => b.is_ascii_digit(),
    });
    let day = NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()?;
    (shape && day.year() >= 1).then_some(day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-15T23:30:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn names_and_pairs_give_local_days() {
        let berlin = SiteClock {
            tz: chrono_tz::Tz::from_str("Europe/Berlin").expect("zone"),
        };
        // 23:30 UTC is already the 16th in Berlin.
        let r = resolve(&json!("7d"), berlin, now(), None).expect("valid");
        assert_eq!(
            (r.first.to_string(), r.last.to_string()),
            ("2026-03-10".into(), "2026-03-16".into())
        );
        assert_eq!(r.start.to_rfc3339(), "2026-03-09T23:00:00+00:00");
        let r = resolve(
            &json!(["2026-01-01", "2026-01-31"]),
            SiteClock::utc(),
            now(),
            None,
        )
        .expect("valid");
        assert_eq!(r.end.to_rfc3339(), "2026-02-01T00:00:00+00:00");
        let r = resolve(&json!("6mo"), SiteClock::utc(), now(), None).expect("valid");
        assert_eq!(r.first.to_string(), "2025-10-01");
    }

    #[test]
    fn reversed_long_and_unknown_ranges_are_named() {
        let utc = SiteClock::utc();
        let err =
            resolve(&json!(["2026-02-01", "2026-01-01"]), utc, now(), None).expect_err("refused");
        assert!(err.contains("reversed"), "{err}");
        let err =
            resolve(&json!(["2000-01-01", "2026-01-01"]), utc, now(), None).expect_err("refused");
        assert!(err.contains("at most"), "{err}");
        let err = resolve(&json!("fortnight"), utc, now(), None).expect_err("refused");
        assert!(err.contains("fortnight"), "{err}");
        let err =
            resolve(&json!(["2026-13-01", "2026-01-01"]), utc, now(), None).expect_err("refused");
        assert!(err.contains("date_range[0]"), "{err}");
        for odd in ["-5000-1-1", "2026-1-01", "0000-01-01"] {
            let err = resolve(&json!([odd, "2026-01-01"]), utc, now(), None).expect_err("refused");
            assert!(err.contains("date_range[0]"), "{odd}: {err}");
        }
        // One event from year 1 leaves "all" at the longest range allowed.
        let ancient = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        let all = resolve(&json!("all"), utc, now(), Some(ancient)).expect("answerable");
        assert_eq!((all.last - all.first).num_days() + 1, MAX_RANGE_DAYS);
    }
}
