//! What a batch's visits change in `visit_rollups` (migrations 0011 to 0013): the
//! difference between the visits it replaced and the visits it wrote, per cell (site,
//! dimension, bucket: a day of the site's zone, or for the totals also a UTC hour, value;
//! and for a goal's cells the goal). Sums are subtracted and added, so a cell always holds
//! exactly the sums of the visits that start in it. Visitor sketches cannot subtract: a
//! visitor is added to the cells its written visits enter, and a cell one of its replaced
//! visits left is marked stale, to be recomputed from `visits` (rare: only a late event
//! moving a visit's start or first event does it, or a page view after a visit's first
//! non-page event).
//!
//! A goal's cells (days only) count the visits that converted it and their conversions,
//! nothing else: a converting visit going on changes them only when it converts again (or
//! for its exit page's). A funnel's cells (days only) count, per step, the visits that
//! reached it or a later one: a visit getting further only joins cells.

use super::Visit;
use super::funnels::reach;
use super::settings::SiteSettings;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use domain::visits::{DAY_SPAN, FUNNEL_CELL_CODE, HOUR_SPAN, VisitDimension, day_bucket};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

/// Which visits a cell counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject<'a> {
    /// Every visit.
    Visits,
    /// The visits that converted a goal (its id).
    Goal(&'a str),
    /// The visits that reached a funnel's step (the cell's value) or a later one.
    Funnel(&'a str),
}

/// A row of `visit_rollups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell<'a> {
    pub site_id: &'a str,
    pub dimension: VisitDimension,
    pub subject: Subject<'a>,
    pub span_hours: i16,
    pub bucket: DateTime<Utc>,
    pub value: Option<&'a str>,
}

impl<'a> Cell<'a> {
    /// Its `visit_rollups.dimension`.
    pub fn code(&self) -> i16 {
        match self.subject {
            Subject::Visits => self.dimension.code(),
            Subject::Goal(_) => self.dimension.goal_code(),
            Subject::Funnel(_) => FUNNEL_CELL_CODE,
        }
    }

    /// Its `visit_rollups.goal_id`: the goal's or the funnel's id.
    pub fn goal_id(&self) -> Option<&'a str> {
        match self.subject {
            Subject::Visits => None,
            Subject::Goal(id) | Subject::Funnel(id) => Some(id),
        }
    }
}

/// The values of a funnel's cells: its steps.
const STEP_VALUES: [&str; 8] = ["1", "2", "3", "4", "5", "6", "7", "8"];

/// The sums a cell keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub visits: i64,
    pub pageviews: i64,
    pub events: i64,
    pub bounces: i64,
    pub duration_us: i64,
}

impl Sums {
    fn of(v: &Visit) -> Self {
        Self {
            visits: 1,
            pageviews: i64::from(v.pageviews),
            events: i64::from(v.events),
            bounces: i64::from(v.is_bounce()),
            duration_us: (v.ended_at - v.started_at)
                .num_microseconds()
                .unwrap_or(i64::MAX),
        }
    }

    fn add(&mut self, other: Self, sign: i64) {
        self.visits += sign * other.visits;
        self.pageviews += sign * other.pageviews;
        self.events += sign * other.events;
        self.bounces += sign * other.bounces;
        self.duration_us += sign * other.duration_us;
    }

    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// A batch's changes to the rollups.
#[derive(Debug, Default)]
pub struct RollupChanges<'a> {
    /// Each cell to update once, with what to add to its sums (negative to take away).
    pub cells: Vec<(Cell<'a>, Sums)>,
    /// Visitors to add to a cell's sketch: `(index in cells, visitor)`.
    pub members: Vec<(i64, &'a str)>,
    /// Cells whose sketches may hold a visitor no longer in them.
    pub stale: Vec<Cell<'a>>,
}

/// The cells a visit counts in, with what it adds to each: every kept dimension's day in
/// the site's zone, the totals' UTC hour, the days of each goal it converted, and of each
/// step of the site's funnels it reached.
fn cells_of<'v>(
    v: &'v Visit,
    settings: &'v SiteSettings,
) -> impl Iterator<Item = (Cell<'v>, Sums)> {
    let hour = v
        .started_at
        .duration_trunc(TimeDelta::hours(1))
        .unwrap_or(v.started_at);
    let day = day_bucket(
        v.started_at
            .with_timezone(&settings.zone(&v.site_id))
            .date_naive(),
    );
    let sums = Sums::of(v);
    let kept = || VisitDimension::EVERY.into_iter().filter(|d| d.has_rollup());
    let plain = kept().flat_map(move |dimension| {
        let cell = move |span_hours, bucket| Cell {
            site_id: &v.site_id,
            dimension,
            subject: Subject::Visits,
            span_hours,
            bucket,
            value: v.value(dimension),
        };
        let sums = if dimension.rollup_counts_visits_only() {
            Sums {
                visits: 1,
                ..Sums::default()
            }
        } else {
            sums
        };
        let hour_cell = dimension.has_hour_rollup().then(|| cell(HOUR_SPAN, hour));
        std::iter::once(cell(DAY_SPAN, day))
            .chain(hour_cell)
            .map(move |c| (c, sums))
    });
    // Counts of goals the site no longer has are left out (the change of its goals
    // recounts every visit of the site).
    let goals = settings.goals(&v.site_id);
    let converted = v
        .goals
        .iter()
        .filter(move |(id, n)| **n > 0 && goals.iter().any(|g| g.goal_id == **id));
    let goal_cells = converted.flat_map(move |(goal, n)| {
        kept().map(move |dimension| {
            let cell = Cell {
                site_id: &v.site_id,
                dimension,
                subject: Subject::Goal(goal.as_str()),
                span_hours: DAY_SPAN,
                bucket: day,
                value: v.value(dimension),
            };
            let sums = Sums {
                visits: 1,
                events: i64::from(*n),
                ..Sums::default()
            };
            (cell, sums)
        })
    });
    let funnel_cells = settings.funnels(&v.site_id).iter().flat_map(move |f| {
        let reached = reach(&v.steps, &f.steps).min(STEP_VALUES.len());
        STEP_VALUES[..reached].iter().map(move |step| {
            let cell = Cell {
                site_id: &v.site_id,
                dimension: VisitDimension::All,
                subject: Subject::Funnel(&f.funnel_id),
                span_hours: DAY_SPAN,
                bucket: day,
                value: Some(*step),
            };
            let sums = Sums {
                visits: 1,
                ..Sums::default()
            };
            (cell, sums)
        })
    });
    plain.chain(goal_cells).chain(funnel_cells)
}

impl<'a> RollupChanges<'a> {
    /// The changes of replacing `replaced` (stored visits, some perhaps rewritten
    /// unchanged) with `written`, each site's cells by its `settings`.
    pub fn of(replaced: &'a [Visit], written: &'a [Visit], settings: &'a SiteSettings) -> Self {
        let mut sums: HashMap<Cell<'a>, Sums> = HashMap::default();
        let mut before: HashSet<(Cell<'a>, &'a str)> = HashSet::default();
        let mut after: HashSet<(Cell<'a>, &'a str)> = HashSet::default();
        for (visits, sign, members) in [(replaced, -1, &mut before), (written, 1, &mut after)] {
            for v in visits {
                for (cell, s) in cells_of(v, settings) {
                    sums.entry(cell).or_default().add(s, sign);
                    if cell.dimension.has_visitor_sketch() {
                        members.insert((cell, v.visitor.as_str()));
                    }
                }
            }
        }
        let joined: Vec<(Cell<'a>, &'a str)> = after.difference(&before).copied().collect();
        let mut stale: Vec<Cell<'a>> = before
            .difference(&after)
            .map(|(cell, _)| *cell)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        stale.sort_unstable();
        let joined_cells: HashSet<Cell<'a>> = joined.iter().map(|(c, _)| *c).collect();
        let mut cells: Vec<(Cell<'a>, Sums)> = sums
            .into_iter()
            .filter(|(cell, s)| !s.is_zero() || joined_cells.contains(cell))
            .collect();
        cells.sort_unstable_by_key(|(cell, _)| *cell);
        let index: HashMap<Cell<'a>, i64> = cells
            .iter()
            .enumerate()
            .map(|(i, (cell, _))| (*cell, i as i64 + 1))
            .collect();
        let members = joined
            .into_iter()
            .filter_map(|(cell, visitor)| Some((*index.get(&cell)?, visitor)))
            .collect();
        Self {
            cells,
            members,
            stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PageMark, VisitAttrs, merge};
    use super::*;
    use uuid::Uuid;

    static NO_SETTINGS: std::sync::LazyLock<SiteSettings> =
        std::sync::LazyLock::new(SiteSettings::default);

    fn at(minute: i64) -> DateTime<Utc> {
        // 2025-11-14 06:00 UTC (a whole hour): minute 60 starts the next hour.
        DateTime::from_timestamp(1_763_100_000 + minute * 60, 0).expect("valid")
    }

    fn visit(minute: i64, id: u128, page: Option<&str>, source: &str) -> Visit {
        let mark = page.map(|p| PageMark {
            at: at(minute),
            event_id: Uuid::from_u128(id),
            page: p.into(),
        });
        Visit {
            site_id: "s".into(),
            visitor: "v".into(),
            started_at: at(minute),
            first_event_id: Uuid::from_u128(id),
            ended_at: at(minute),
            events: 1,
            pageviews: i32::from(page.is_some()),
            entry: mark.clone(),
            exit: mark,
            attrs: VisitAttrs {
                source: Some(source.into()),
                ..VisitAttrs::default()
            },
            goals: super::super::Conversions::new(),
            steps: Vec::new(),
        }
    }

    fn goal(id: &str) -> domain::goals::Goal {
        domain::goals::Goal {
            goal_id: id.into(),
            display_name: id.into(),
            event_name: Some(id.into()),
            page_path: None,
        }
    }

    fn goal_sums<'a>(c: &'a RollupChanges<'a>) -> Vec<(&'a str, VisitDimension, Sums)> {
        c.cells
            .iter()
            .filter_map(|(cell, s)| match cell.subject {
                Subject::Goal(goal) => Some((goal, cell.dimension, *s)),
                _ => None,
            })
            .collect()
    }

    fn sums_of<'a>(
        c: &'a RollupChanges<'a>,
        d: VisitDimension,
        span: i16,
    ) -> Vec<(Option<&'a str>, Sums)> {
        c.cells
            .iter()
            .filter(|(cell, _)| cell.dimension == d && cell.span_hours == span)
            .map(|(cell, s)| (cell.value, *s))
            .collect()
    }

    #[test]
    fn a_new_visit_adds_to_every_dimensions_day_and_the_totals_hour_and_joins_the_sketches() {
        let written = vec![visit(5, 1, Some("/a"), "Google")];
        let c = RollupChanges::of(&[], &written, &NO_SETTINGS);
        assert_eq!(c.cells.len(), 9);
        assert_eq!(
            sums_of(&c, VisitDimension::Source, 24),
            vec![(
                Some("Google"),
                Sums {
                    visits: 1,
                    pageviews: 1,
                    events: 1,
                    bounces: 1,
                    duration_us: 0
                }
            )]
        );
        // Every cell but the entry and exit page ones takes the visitor.
        assert_eq!(c.members.len(), 7);
        assert!(c.stale.is_empty());
    }

    #[test]
    fn a_visit_going_on_changes_sums_only_and_moves_its_exit_page() {
        let replaced = vec![visit(5, 1, Some("/a"), "Google")];
        let written = merge(vec![replaced[0].clone(), visit(20, 2, Some("/b"), "Bing")]);
        let c = RollupChanges::of(&replaced, &written, &NO_SETTINGS);
        assert_eq!(
            sums_of(&c, VisitDimension::All, 1),
            vec![(
                None,
                Sums {
                    visits: 0,
                    pageviews: 1,
                    events: 1,
                    bounces: -1,
                    duration_us: 15 * 60_000_000
                }
            )]
        );
        assert!(sums_of(&c, VisitDimension::ExitPage, 1).is_empty());
        let exits = sums_of(&c, VisitDimension::ExitPage, 24);
        assert_eq!(exits.len(), 2);
        assert!(exits.contains(&(
            Some("/a"),
            Sums {
                visits: -1,
                ..Sums::default()
            }
        )));
        // Page cells count visits only: the entry page's are untouched.
        assert!(sums_of(&c, VisitDimension::EntryPage, 24).is_empty());
        // Membership is unchanged: nothing to add, nothing stale.
        assert!(c.members.is_empty());
        assert!(c.stale.is_empty());
    }

    #[test]
    fn a_late_event_moving_the_start_to_an_earlier_hour_leaves_the_old_cells_stale() {
        let replaced = vec![visit(62, 1, Some("/a"), "Google")];
        let written = merge(vec![replaced[0].clone(), visit(50, 2, Some("/b"), "Bing")]);
        let c = RollupChanges::of(&replaced, &written, &NO_SETTINGS);
        let hourly_all = sums_of(&c, VisitDimension::All, 1);
        assert_eq!(hourly_all.len(), 2, "{hourly_all:?}");
        // The day cells keep the visit (same day) but its source and entry page changed.
        let stale: Vec<_> = c
            .stale
            .iter()
            .map(|s| (s.dimension, s.span_hours, s.value))
            .collect();
        assert!(stale.contains(&(VisitDimension::All, 1, None)));
        assert!(stale.contains(&(VisitDimension::Source, 24, Some("Google"))));
        assert!(!stale.iter().any(|s| s.0 == VisitDimension::EntryPage));
        assert!(
            !stale
                .iter()
                .any(|s| s.0 == VisitDimension::All && s.1 == 24)
        );
        assert!(!stale.iter().any(|s| s.0 == VisitDimension::ExitPage));
    }

    #[test]
    fn day_cells_are_the_sites_own_dates() {
        // 06:05 UTC on 2025-11-14 is still the 13th in Los Angeles, the 14th in Tokyo.
        let written = vec![visit(5, 1, Some("/a"), "Google")];
        let day_of = |zone: &str| {
            let zones = SiteSettings::from_names([("s", zone)]);
            let c = RollupChanges::of(&[], &written, &zones);
            let days: HashSet<DateTime<Utc>> = c
                .cells
                .iter()
                .filter(|(cell, _)| cell.span_hours == DAY_SPAN)
                .map(|(cell, _)| cell.bucket)
                .collect();
            assert_eq!(days.len(), 1);
            days.into_iter().next().expect("one day")
        };
        let date = |d: &str| day_bucket(d.parse().expect("date"));
        assert_eq!(day_of("America/Los_Angeles"), date("2025-11-13"));
        assert_eq!(day_of("Asia/Tokyo"), date("2025-11-14"));
        assert_eq!(day_of("UTC"), date("2025-11-14"));
    }

    #[test]
    fn a_converting_visit_counts_in_its_goals_day_cells_and_only_conversions_change_them() {
        let settings = SiteSettings::default().with_goals("s", vec![goal("g_1"), goal("g_2")]);
        let mut first = visit(5, 1, Some("/a"), "Google");
        first.goals.insert("g_1".into(), 1);
        // A goal the site no longer has counts nowhere.
        first.goals.insert("g_gone".into(), 3);
        let written = vec![first.clone()];
        let c = RollupChanges::of(&[], &written, &settings);
        let goals = goal_sums(&c);
        assert_eq!(goals.len(), 8, "a day cell per kept dimension: {goals:?}");
        assert!(goals.iter().all(|(g, _, s)| *g == "g_1"
            && *s
                == Sums {
                    visits: 1,
                    events: 1,
                    ..Sums::default()
                }));
        assert!(
            c.cells
                .iter()
                .all(|(cell, _)| cell.subject == Subject::Visits || cell.span_hours == DAY_SPAN)
        );
        // Plain cells as before (9), goal cells with a sketch take the visitor (6 of 8).
        assert_eq!(c.cells.len(), 17);
        assert_eq!(c.members.len(), 7 + 6);
        assert_eq!(
            c.cells
                .iter()
                .find(|(cell, _)| cell.goal_id().is_some() && cell.dimension == VisitDimension::All)
                .map(|(cell, _)| cell.code()),
            Some(100)
        );

        // The visit goes on with a page view: of the goal's cells only its exit page's
        // change (the visit moves from /a to /b).
        let replaced = written;
        let on = merge(vec![replaced[0].clone(), visit(20, 2, Some("/b"), "Bing")]);
        let c = RollupChanges::of(&replaced, &on, &settings);
        let moved: Vec<_> = goal_sums(&c)
            .into_iter()
            .map(|(g, d, s)| (g, d, s.visits, s.events))
            .collect();
        assert_eq!(
            moved,
            vec![
                ("g_1", VisitDimension::ExitPage, -1, -1),
                ("g_1", VisitDimension::ExitPage, 1, 1)
            ]
        );
        // Then converts g_1 again and g_2: conversions of g_1, a new visit of g_2.
        let mut again = visit(25, 3, None, "Bing");
        again.goals.insert("g_1".into(), 1);
        again.goals.insert("g_2".into(), 1);
        let converted = merge(vec![on[0].clone(), again]);
        let c = RollupChanges::of(&on, &converted, &settings);
        let all: Vec<_> = goal_sums(&c)
            .into_iter()
            .filter(|(_, d, _)| *d == VisitDimension::All)
            .map(|(g, _, s)| (g, s.visits, s.events))
            .collect();
        assert_eq!(all, vec![("g_1", 0, 1), ("g_2", 1, 1)]);
        assert!(c.stale.is_empty());
    }

    #[test]
    fn a_visit_counts_in_each_funnel_step_it_reached_and_going_further_only_joins() {
        let funnel = super::super::settings::FunnelSteps {
            funnel_id: "f_1".into(),
            steps: vec!["g_a".into(), "g_b".into(), "g_c".into()],
        };
        let settings = SiteSettings::default().with_funnels("s", vec![funnel]);
        let mut first = visit(5, 1, Some("/a"), "Google");
        first.steps = vec![(at(5).timestamp_micros(), Uuid::from_u128(1), "g_a".into())];
        let written = vec![first];
        fn steps(c: &RollupChanges<'_>) -> Vec<(Option<String>, i64)> {
            c.cells
                .iter()
                .filter(|(cell, _)| matches!(cell.subject, Subject::Funnel("f_1")))
                .map(|(cell, s)| (cell.value.map(str::to_string), s.visits))
                .collect()
        }
        let c = RollupChanges::of(&[], &written, &settings);
        assert_eq!(steps(&c), vec![(Some("1".to_string()), 1)]);
        assert!(
            c.cells
                .iter()
                .filter(|(cell, _)| cell.code() == FUNNEL_CELL_CODE)
                .all(|(cell, _)| cell.span_hours == DAY_SPAN)
        );
        // The visit goes on to step 2: only step 2's cell changes, and it takes the visitor.
        let mut next = visit(20, 2, Some("/b"), "Bing");
        next.steps = vec![(at(20).timestamp_micros(), Uuid::from_u128(2), "g_b".into())];
        let on = merge(vec![written[0].clone(), next]);
        let c = RollupChanges::of(&written, &on, &settings);
        assert_eq!(steps(&c), vec![(Some("2".to_string()), 1)]);
        assert!(c.stale.is_empty());
        assert!(c.members.iter().any(|(i, _)| {
            c.cells[usize::try_from(*i - 1).expect("index")].0.subject == Subject::Funnel("f_1")
        }));
    }

    #[test]
    fn rewriting_a_visit_unchanged_changes_nothing() {
        let v = vec![visit(5, 1, Some("/a"), "Google")];
        let c = RollupChanges::of(&v, &v, &NO_SETTINGS);
        assert!(c.cells.is_empty() && c.members.is_empty() && c.stale.is_empty());
    }
}
