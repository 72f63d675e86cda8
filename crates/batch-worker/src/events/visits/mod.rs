//! Visits, kept with the events in one transaction ([`store`]).
//!
//! A visit is a summary of one visitor's events on one site with gaps under
//! [`VISIT_GAP`]. Summaries merge (first and last event, sums, the entry and exit page
//! views), and merging is associative and commutative: so a batch's new events, as
//! one-event visits, merged with the stored visits they come within the gap of, give
//! exactly the visits a gaps-and-islands pass over every event would, in whatever order
//! the events arrived. A late event joins the visit it falls in, bridges two into one, or
//! starts one of its own between them. Stored visits are disjoint and maximal, and sorted
//! by start they are sorted by end too, which is what bounds the lookup in [`store`].
//!
//! Ties (two events at the same instant) are broken by event id, as the ground truth in
//! the tests and migration 0008 do.
//!
//! A visit also counts its conversions of each of the site's goals (migration 0013), and
//! lists those of the goals that are steps of the site's funnels (migration 0015, see
//! [`funnels`]): an event converts when it is written, against the goals the site has
//! then, and merging adds the counts and joins the lists. A change of the site's goals or
//! funnels recounts them from the stored events.

pub mod funnels;
pub mod rollup;
pub mod rollup_store;
pub mod settings;
pub mod sketch_fold;
pub mod sketch_repair;
pub mod store;
pub mod week_cells;

use chrono::{DateTime, Utc};
use domain::goals::Goal;
use domain::visits::{VISIT_GAP, VisitDimension};
use settings::Settings;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A visit's conversions per goal id (`visits.goals`).
pub type Conversions = BTreeMap<String, i32>;

/// A conversion of a goal that is a funnel step (an entry of `visits.steps`): microseconds
/// since the epoch (what PostgreSQL keeps of the event's time), event id, goal id. Ordered
/// by time, then event id, as the funnel rule orders events.
pub type Step = (i64, Uuid, String);

/// A page view marking a visit's entry or exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMark {
    pub at: DateTime<Utc>,
    pub event_id: Uuid,
    pub page: String,
}

/// What a visit takes from its first event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VisitAttrs {
    pub hostname: Option<String>,
    pub referrer: Option<String>,
    pub source: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
    pub device: Option<String>,
    pub browser: Option<String>,
    pub os: Option<String>,
    pub country: Option<String>,
}

/// One visit: a row of `visits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    pub site_id: String,
    pub visitor: String,
    pub started_at: DateTime<Utc>,
    pub first_event_id: Uuid,
    pub ended_at: DateTime<Utc>,
    pub events: i32,
    pub pageviews: i32,
    pub entry: Option<PageMark>,
    pub exit: Option<PageMark>,
    pub attrs: VisitAttrs,
    pub goals: Conversions,
    /// Sorted.
    pub steps: Vec<Step>,
}

/// One new event, as a visit of its own.
pub struct VisitEvent<'a> {
    pub site_id: &'a str,
    pub visitor: &'a str,
    pub event_id: Uuid,
    pub ts: DateTime<Utc>,
    pub event_type: &'a str,
    pub path: Option<&'a str>,
    pub attrs: VisitAttrs,
}

impl Visit {
    /// The visit of event `e` alone, converting the goals of its site's `settings` it
    /// matches.
    pub fn of_event(e: VisitEvent<'_>, settings: &Settings) -> Self {
        let is_pageview = e.event_type == domain::event::PAGE_VIEW;
        let matched: Vec<&Goal> = settings
            .goals
            .iter()
            .filter(|g| g.matches(e.event_type, e.path))
            .collect();
        let converted = matched.iter().map(|g| (g.goal_id.clone(), 1)).collect();
        let mut steps: Vec<Step> = matched
            .iter()
            .filter(|g| settings.is_step(&g.goal_id))
            .map(|g| (e.ts.timestamp_micros(), e.event_id, g.goal_id.clone()))
            .collect();
        steps.sort_unstable();
        let page = e.path.filter(|_| is_pageview).map(|p| PageMark {
            at: e.ts,
            event_id: e.event_id,
            page: p.to_string(),
        });
        Self {
            site_id: e.site_id.to_string(),
            visitor: e.visitor.to_string(),
            started_at: e.ts,
            first_event_id: e.event_id,
            ended_at: e.ts,
            events: 1,
            pageviews: i32::from(is_pageview),
            entry: page.clone(),
            exit: page,
            attrs: e.attrs,
            goals: converted,
            steps,
        }
    }

    /// The primary key of its row.
    pub fn key(&self) -> VisitKey {
        (self.site_id.clone(), self.visitor.clone(), self.started_at)
    }

    /// Adds `other`'s events to this visit.
    fn absorb(&mut self, other: Self) {
        if (other.started_at, other.first_event_id) < (self.started_at, self.first_event_id) {
            self.started_at = other.started_at;
            self.first_event_id = other.first_event_id;
            self.attrs = other.attrs;
        }
        self.ended_at = self.ended_at.max(other.ended_at);
        self.events += other.events;
        self.pageviews += other.pageviews;
        self.entry = earliest(self.entry.take(), other.entry, |a, b| {
            (a.at, a.event_id) <= (b.at, b.event_id)
        });
        self.exit = earliest(self.exit.take(), other.exit, |a, b| {
            (a.at, a.event_id) >= (b.at, b.event_id)
        });
        for (goal, n) in other.goals {
            *self.goals.entry(goal).or_default() += n;
        }
        if !other.steps.is_empty() {
            self.steps.extend(other.steps);
            self.steps.sort_unstable();
        }
    }

    pub fn is_bounce(&self) -> bool {
        self.pageviews == 1
    }

    pub fn duration_ms(&self) -> i64 {
        (self.ended_at - self.started_at).num_milliseconds()
    }

    /// Its value for dimension `d`.
    pub fn value(&self, d: VisitDimension) -> Option<&str> {
        let a = &self.attrs;
        match d {
            VisitDimension::All => None,
            VisitDimension::EntryPage => self.entry.as_ref().map(|m| m.page.as_str()),
            VisitDimension::ExitPage => self.exit.as_ref().map(|m| m.page.as_str()),
            VisitDimension::Source => a.source.as_deref(),
            VisitDimension::Referrer => a.referrer.as_deref(),
            VisitDimension::UtmSource => a.utm_source.as_deref(),
            VisitDimension::UtmMedium => a.utm_medium.as_deref(),
            VisitDimension::UtmCampaign => a.utm_campaign.as_deref(),
            VisitDimension::UtmTerm => a.utm_term.as_deref(),
            VisitDimension::UtmContent => a.utm_content.as_deref(),
            VisitDimension::Device => a.device.as_deref(),
            VisitDimension::Browser => a.browser.as_deref(),
            VisitDimension::Os => a.os.as_deref(),
            VisitDimension::Country => a.country.as_deref(),
        }
    }
}

/// `(site_id, visitor, started_at)`.
pub type VisitKey = (String, String, DateTime<Utc>);

fn earliest(
    a: Option<PageMark>,
    b: Option<PageMark>,
    first: impl Fn(&PageMark, &PageMark) -> bool,
) -> Option<PageMark> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if first(&a, &b) { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Merges visits of one site and visitor into disjoint, maximal visits, sorted by start.
pub fn merge(mut visits: Vec<Visit>) -> Vec<Visit> {
    visits.sort_by_key(|a| (a.started_at, a.first_event_id));
    let mut merged: Vec<Visit> = Vec::with_capacity(visits.len());
    for v in visits {
        match merged.last_mut() {
            Some(last) if v.started_at - last.ended_at < VISIT_GAP => last.absorb(v),
            _ => merged.push(v),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_763_100_000 + minute * 60, 0).expect("valid")
    }

    fn event(minute: i64, id: u128, page: Option<&str>) -> Visit {
        let goals = [
            Goal {
                goal_id: "g_a".into(),
                display_name: "a".into(),
                event_name: None,
                page_path: Some("/a".into()),
            },
            Goal {
                goal_id: "g_signup".into(),
                display_name: "signup".into(),
                event_name: Some("signup".into()),
                page_path: None,
            },
        ];
        let settings = Settings {
            goals: goals.to_vec(),
            funnels: vec![settings::FunnelSteps {
                funnel_id: "f".into(),
                steps: vec!["g_a".into(), "g_signup".into()],
            }],
            ..Settings::default()
        };
        Visit::of_event(
            VisitEvent {
                site_id: "s",
                visitor: "v",
                event_id: Uuid::from_u128(id),
                ts: at(minute),
                event_type: if page.is_some() {
                    "page_view"
                } else {
                    "signup"
                },
                path: page,
                attrs: VisitAttrs {
                    source: Some(format!("source-{id}")),
                    ..VisitAttrs::default()
                },
            },
            &settings,
        )
    }

    fn conversions(v: &Visit) -> Vec<(&str, i32)> {
        v.goals.iter().map(|(g, n)| (g.as_str(), *n)).collect()
    }

    fn summary(v: &Visit) -> (i64, i64, i32, i32, Option<&str>, Option<&str>, Option<&str>) {
        (
            (v.started_at - at(0)).num_minutes(),
            (v.ended_at - at(0)).num_minutes(),
            v.events,
            v.pageviews,
            v.value(VisitDimension::EntryPage),
            v.value(VisitDimension::ExitPage),
            v.value(VisitDimension::Source),
        )
    }

    #[test]
    fn gaps_under_thirty_minutes_make_one_visit_and_thirty_split() {
        let visits = merge(vec![
            event(0, 1, Some("/a")),
            event(29, 2, None),
            event(58, 3, Some("/b")),
            event(88, 4, Some("/c")),
        ]);
        let got: Vec<_> = visits.iter().map(summary).collect();
        assert_eq!(
            got,
            vec![
                (0, 58, 3, 2, Some("/a"), Some("/b"), Some("source-1")),
                (88, 88, 1, 1, Some("/c"), Some("/c"), Some("source-4")),
            ]
        );
        assert!(!visits[0].is_bounce());
        assert!(visits[1].is_bounce());
        assert_eq!(visits[0].duration_ms(), 58 * 60_000);
        // The page view of /a and the signup (a non-page event) converted.
        assert_eq!(conversions(&visits[0]), vec![("g_a", 1), ("g_signup", 1)]);
        assert!(visits[1].goals.is_empty());
    }

    #[test]
    fn any_arrival_order_gives_the_same_visits() {
        let events = [
            event(0, 1, Some("/a")),
            event(10, 2, Some("/b")),
            event(50, 3, Some("/c")),
            event(25, 4, None),
            event(100, 5, Some("/d")),
            event(10, 0, Some("/tie")),
        ];
        let all_at_once = merge(events.to_vec());
        // One at a time, each merged into what was stored before (as the worker does), in
        // reverse order and in an interleaved order.
        for order in [[5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2]] {
            let mut stored: Vec<Visit> = vec![];
            for i in order {
                stored.push(events[i].clone());
                stored = merge(stored);
            }
            assert_eq!(stored, all_at_once, "order {order:?}");
        }
        let got: Vec<_> = all_at_once.iter().map(summary).collect();
        assert_eq!(
            got,
            vec![
                (0, 50, 5, 4, Some("/a"), Some("/c"), Some("source-1")),
                (100, 100, 1, 1, Some("/d"), Some("/d"), Some("source-5")),
            ]
        );
    }

    #[test]
    fn a_late_event_bridges_two_visits() {
        let before = merge(vec![event(0, 1, Some("/a")), event(40, 2, Some("/b"))]);
        assert_eq!(before.len(), 2);
        let after = merge(
            before
                .iter()
                .cloned()
                .chain([event(20, 3, Some("/c"))])
                .collect(),
        );
        let got: Vec<_> = after.iter().map(summary).collect();
        assert_eq!(
            got,
            vec![(0, 40, 3, 3, Some("/a"), Some("/b"), Some("source-1"))]
        );
        let again = merge(vec![after[0].clone(), event(50, 4, Some("/a"))]);
        assert_eq!(conversions(&again[0]), vec![("g_a", 2)]);
        // The steps list holds both, in time order, whichever came first.
        let steps: Vec<(i64, &str)> = again[0]
            .steps
            .iter()
            .map(|(t, _, g)| ((*t - at(0).timestamp_micros()) / 60_000_000, g.as_str()))
            .collect();
        assert_eq!(steps, vec![(0, "g_a"), (50, "g_a")]);
        assert!(!after[0].is_bounce());
    }
}
