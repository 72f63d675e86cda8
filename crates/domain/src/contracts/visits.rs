//! Visits: the rule that groups a visitor's events, and the visit dimensions the
//! batch-worker stores (`visits` columns) and stats-api's query API reads, named once.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};

/// Consecutive events of a visitor this far apart or more belong to different visits.
pub const VISIT_GAP: TimeDelta = TimeDelta::minutes(30);

/// `visit_rollups.span_hours` of an hour row: a UTC hour, kept for the totals only
/// ([`VisitDimension::has_hour_rollup`]).
pub const HOUR_SPAN: i16 = 1;

/// `visit_rollups.span_hours` of a day row: a day of the site's time zone, keyed by
/// [`day_bucket`].
pub const DAY_SPAN: i16 = 24;

/// `visit_rollups.span_hours` of a week row (migration 0019): the sums and visitor union
/// of the seven day rows from a Monday, keyed by the Monday's [`day_bucket`].
pub const WEEK_SPAN: i16 = 168;

/// The bucket of a day row: its date (in the site's time zone) at UTC midnight. A date
/// rather than the instant the day starts, so days of 23 or 25 hours and zones whose
/// midnight a DST change skips need no special case (migration 0012 writes the same).
pub fn day_bucket(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(NaiveTime::MIN).and_utc()
}

/// `visit_rollups.dimension` of a goal's cells is this plus the visit dimension's code
/// (migration 0013): per goal (`goal_id`), day and value, the visits that converted it,
/// their conversions (`events`) and their visitors.
pub const GOAL_CELL_OFFSET: i16 = 100;

/// `visit_rollups.dimension` of a funnel's cells (migration 0015): per funnel (`goal_id`),
/// day and step (the value, `1` to `8`), the visits that reached that step or further and
/// their visitors.
pub const FUNNEL_CELL_CODE: i16 = 200;

/// The parameters of every visitor sketch (`hll(log2m, regwidth, expthresh, sparseon)`):
/// sketches merge only with their own kind.
pub const SKETCH_PARAMS: &str = "14, 5, -1, 1";

/// Sets of distinct visitors up to this size are kept (and counted) exactly; larger ones
/// with a relative standard error of 1.04/sqrt(2^14) = 0.8%.
pub const EXACT_VISITORS_UP_TO: u64 = 1280;

/// A visit attribute the query API breaks down and filters by; `All` stands for the
/// totals (no attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i16)]
pub enum VisitDimension {
    /// Every visit (value none): the totals.
    All,
    EntryPage,
    ExitPage,
    Source,
    Referrer,
    UtmSource,
    UtmMedium,
    UtmCampaign,
    UtmTerm,
    UtmContent,
    Device,
    Browser,
    Os,
    Country,
}

impl VisitDimension {
    /// Every dimension a visit is counted under, `All` first.
    pub const EVERY: [Self; 14] = [
        Self::All,
        Self::EntryPage,
        Self::ExitPage,
        Self::Source,
        Self::Referrer,
        Self::UtmSource,
        Self::UtmMedium,
        Self::UtmCampaign,
        Self::UtmTerm,
        Self::UtmContent,
        Self::Device,
        Self::Browser,
        Self::Os,
        Self::Country,
    ];

    /// Its name in the query API (Plausible's), `None` for `All`.
    pub const fn api_name(self) -> Option<&'static str> {
        Some(match self {
            Self::All => return None,
            Self::EntryPage => "visit:entry_page",
            Self::ExitPage => "visit:exit_page",
            Self::Source => "visit:source",
            Self::Referrer => "visit:referrer",
            Self::UtmSource => "visit:utm_source",
            Self::UtmMedium => "visit:utm_medium",
            Self::UtmCampaign => "visit:utm_campaign",
            Self::UtmTerm => "visit:utm_term",
            Self::UtmContent => "visit:utm_content",
            Self::Device => "visit:device",
            Self::Browser => "visit:browser",
            Self::Os => "visit:os",
            Self::Country => "visit:country",
        })
    }

    /// The `visits` column holding it, `None` for `All`.
    pub const fn column(self) -> Option<&'static str> {
        match self.api_name() {
            Some(name) => Some(name.split_at(6).1),
            None => None,
        }
    }

    /// Its number in `visit_rollups.dimension` (fixed: stored rows carry it).
    pub const fn code(self) -> i16 {
        self as i16
    }

    /// Its number in `visit_rollups.dimension` in a goal's cells.
    pub const fn goal_code(self) -> i16 {
        GOAL_CELL_OFFSET + self.code()
    }

    /// Whether `visit_rollups` keeps it: the dashboard's breakdowns. A visit updates each
    /// kept dimension's cells with every event, so each one more costs the drain; the
    /// referrer URL and UTM fields (many distinct values, rarely charted) are read from
    /// `visits` instead.
    pub const fn has_rollup(self) -> bool {
        matches!(
            self,
            Self::All
                | Self::EntryPage
                | Self::ExitPage
                | Self::Source
                | Self::Device
                | Self::Browser
                | Self::Os
                | Self::Country
        )
    }

    /// Whether `visit_rollups` keeps its UTC hours besides its days: only the totals' (the
    /// chart by hour). Every other dimension's hour cells would double what the drain
    /// writes, for breakdowns by hour nobody charts (they read `visits`).
    pub const fn has_hour_rollup(self) -> bool {
        matches!(self, Self::All)
    }

    /// Whether its rollups count visits only (and visitors), not page views, events,
    /// bounces or duration: a visit going on changes those with every event, and an entry
    /// or exit page cell is one of thousands (a site's pages), so keeping them would make
    /// most events update a page cell. Entry and exit page panels show visitors and visits.
    pub const fn rollup_counts_visits_only(self) -> bool {
        matches!(self, Self::EntryPage | Self::ExitPage)
    }

    /// Whether its rollups keep visitor sketches. A sketch cannot forget a visitor, and an
    /// exit page changes with nearly every page view; and entry pages are a site's pages
    /// by the thousand, where a sketch per cell costs the drain more than all the rest
    /// (every hll operation unpacks into 128 KB). Entry and exit page panels show visits
    /// (Plausible's unique entrances and exits); visitors by page are counted from
    /// `visits`.
    pub const fn has_visitor_sketch(self) -> bool {
        !matches!(self, Self::EntryPage | Self::ExitPage)
    }

    /// The dimensions kept in pair week and day cells (migrations 0022 and 0024), as filter and as
    /// breakdown: the dashboard's dimensions of few values, each with full counts and a
    /// visitor sketch. Page dimensions have thousands of values, so their pairs would
    /// outnumber the visits; a breakdown filtered by a page reads `visits`.
    pub const PAIRED: [Self; 5] = [
        Self::Source,
        Self::Device,
        Self::Browser,
        Self::Os,
        Self::Country,
    ];

    /// Whether pair week and day cells keep it (see [`Self::PAIRED`]).
    pub fn has_pair_rollup(self) -> bool {
        Self::PAIRED.contains(&self)
    }

    /// The dimension the query API names `name`.
    pub fn from_api_name(name: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|d| d.api_name() == Some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in &VisitDimension::EVERY[1..] {
            assert_eq!(
                VisitDimension::from_api_name(d.api_name().expect("named")),
                Some(*d)
            );
        }
        assert_eq!(VisitDimension::Source.column(), Some("source"));
        assert_eq!(VisitDimension::EntryPage.column(), Some("entry_page"));
        assert_eq!(VisitDimension::All.column(), None);
        // Stored in visit_rollups (and migration 0011): never renumbered.
        let codes: Vec<i16> = VisitDimension::EVERY.iter().map(|d| d.code()).collect();
        assert_eq!(codes, (0..14).collect::<Vec<i16>>());
        assert_eq!(VisitDimension::ExitPage.code(), 2);
    }

    #[test]
    fn the_paired_dimensions_are_those_migrations_0022_and_0025_build() {
        let pairs: Vec<String> = VisitDimension::PAIRED
            .iter()
            .map(|d| format!("({}, v.{})", d.code(), d.column().expect("a column")))
            .collect();
        // 0022 deletes a week's pair cells by these codes; 0025's aggregation (of weeks,
        // days and hours since) pairs these columns.
        let migration = include_str!("../../../../migrations/0022_visit_pair_week_rollups.sql");
        let aggregation = include_str!("../../../../migrations/0025_visit_pair_hour_rollups.sql");
        assert!(
            aggregation.contains(&pairs.join(", ")),
            "migration 0025 pairs {}",
            pairs.join(", ")
        );
        let codes: Vec<String> = VisitDimension::PAIRED
            .iter()
            .map(|d| d.code().to_string())
            .collect();
        assert!(migration.contains(&format!("IN ({})", codes.join(", "))));
        assert!(
            VisitDimension::PAIRED.iter().all(|d| d.has_rollup()
                && d.has_visitor_sketch()
                && !d.rollup_counts_visits_only())
        );
    }
}
