//! Goals in `/v2/query`: which of the site's goals a query is about (its `event:goal`
//! filters, decided here against the goal names rather than in SQL), and how an event
//! converts (SQL shared by the `event:goal` breakdown, goal-filtered visit queries and
//! funnels).
//!
//! A conversion is an event matching a goal inside a visit that started in the range
//! (the visits the range's `visitors` count), so conversions never exceed visitors.

use super::request::{Dimension, Filter, Operator};
use domain::goals::Goal;

/// Goals a query reads, as three parallel lists bound as SQL arrays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoalSet {
    pub ids: Vec<String>,
    pub names: Vec<String>,
    /// A custom event goal's event name (None for a page goal).
    pub event_names: Vec<Option<String>>,
    /// A page goal's anchored path regex (None for an event goal).
    pub path_regexes: Vec<Option<String>>,
}

impl GoalSet {
    pub fn of<'a>(goals: impl IntoIterator<Item = &'a Goal>) -> Self {
        let mut set = Self::default();
        for g in goals {
            set.ids.push(g.goal_id.clone());
            set.names.push(g.display_name.clone());
            set.event_names.push(g.event_name.clone());
            set.path_regexes.push(g.path_regex());
        }
        set
    }
}

/// The SQL of the goals bound at `names`, `events`, `regexes`, as a row source `g(name,
/// event_name, path_regex, step)` (`step`: the goal's place in the lists, from 1).
pub fn goal_rows(names: &str, events: &str, regexes: &str) -> String {
    format!(
        "unnest({names}::text[], {events}::text[], {regexes}::text[]) WITH ORDINALITY \
         AS g(name, event_name, path_regex, step)"
    )
}

/// The CTEs `span` (when the last visit started in the range ended) and `matched` (the
/// events from the range's start to that end matching a goal of `goals`, a [`goal_rows`]
/// source: `site_id, user_id, ts, event_id`, the goal's `name` and `step`). `matched` is
/// materialised so each visit is looked up for converting events only, never for every
/// event of the range (the planner, misled by a range it cannot see, did that).
pub fn matched_ctes(goals: &str) -> String {
    format!(
        "span AS (SELECT coalesce(max(ended_at), $2) AS last FROM visits \
             WHERE site_id = $1 AND started_at >= $2 AND started_at < $3), \
         matched AS MATERIALIZED (SELECT e.site_id, e.user_id, e.ts, e.event_id, g.name, g.step \
             FROM events e JOIN {goals} \
                 ON (e.event_type = g.event_name OR (e.event_type = 'page_view' AND e.path ~ g.path_regex)) \
             WHERE e.site_id = $1 AND e.ts >= $2 AND e.ts <= (SELECT last FROM span))"
    )
}

/// Converting events `m` (of [`matched_ctes`]) with the visit `v` each belongs to, looked
/// up through the visits' key (the visitor's latest visit starting at or before the
/// event), which stays cheap without table statistics where a join of the range's events
/// to its visits did not (450 ms for 1,000 events on a new site).
pub const CONVERSIONS: &str = "matched m JOIN LATERAL (SELECT * FROM visits v \
     WHERE v.site_id = m.site_id AND v.visitor = m.user_id AND v.started_at <= m.ts \
     ORDER BY v.started_at DESC LIMIT 1) v ON m.ts <= v.ended_at";

/// A conversion counts when its visit started in the range.
pub const VISIT_IN_RANGE: &str = "v.started_at >= $2 AND v.started_at < $3";

/// Splits the top-level `event:goal` filters off `filters`.
///
/// # Errors
/// A 400's message when an `event:goal` filter is nested in and/or/not, or uses `matches`.
pub fn split_goal_filters(filters: Vec<Filter>) -> Result<(Vec<Filter>, Vec<Filter>), String> {
    let (goal, rest): (Vec<Filter>, Vec<Filter>) = filters.into_iter().partition(|f| {
        matches!(
            f,
            Filter::Leaf {
                dimension: Dimension::Goal,
                ..
            }
        )
    });
    let mut read = Vec::new();
    rest.iter().for_each(|f| f.dimensions(&mut read));
    if read.contains(&Dimension::Goal) {
        return Err(
            "event:goal filters must be at the top level of filters, not inside and/or/not".into(),
        );
    }
    if goal.iter().any(|f| {
        matches!(
            f,
            Filter::Leaf {
                operator: Operator::Matches | Operator::MatchesNot,
                ..
            }
        )
    }) {
        return Err("event:goal filters take is, is_not, contains or contains_not".into());
    }
    Ok((goal, rest))
}

/// The goals passing every filter of `goal_filters` (all of them when there is none).
///
/// # Errors
/// A 400's message when an `is` filter names a goal the site does not have.
pub fn select<'a>(goals: &'a [Goal], goal_filters: &[Filter]) -> Result<Vec<&'a Goal>, String> {
    for f in goal_filters {
        if let Filter::Leaf {
            operator: Operator::Is,
            values,
            case_sensitive,
            ..
        } = f
            && let Some(v) = values.iter().find(|v| {
                !goals
                    .iter()
                    .any(|g| same(&g.display_name, v, *case_sensitive))
            })
        {
            return Err(format!(
                "event:goal filter names {v:?}, which is not a goal of this site"
            ));
        }
    }
    Ok(goals
        .iter()
        .filter(|g| goal_filters.iter().all(|f| passes(&g.display_name, f)))
        .collect())
}

fn same(a: &str, b: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        a == b
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

fn passes(name: &str, f: &Filter) -> bool {
    let Filter::Leaf {
        operator,
        values,
        case_sensitive,
        ..
    } = f
    else {
        return true;
    };
    let contains = |v: &String| {
        if *case_sensitive {
            name.contains(v.as_str())
        } else {
            name.to_lowercase().contains(&v.to_lowercase())
        }
    };
    match operator {
        Operator::Is => values.iter().any(|v| same(name, v, *case_sensitive)),
        Operator::IsNot => !values.iter().any(|v| same(name, v, *case_sensitive)),
        Operator::Contains => values.iter().any(contains),
        Operator::ContainsNot => !values.iter().any(contains),
        Operator::Matches | Operator::MatchesNot => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(name: &str) -> Goal {
        Goal {
            goal_id: name.into(),
            display_name: name.into(),
            event_name: Some(name.into()),
            page_path: None,
        }
    }

    fn leaf(operator: Operator, values: &[&str], case_sensitive: bool) -> Filter {
        Filter::Leaf {
            operator,
            dimension: Dimension::Goal,
            values: values.iter().map(|v| (*v).to_string()).collect(),
            case_sensitive,
        }
    }

    #[test]
    fn goal_filters_pick_goals_by_name_and_unknown_names_are_refused() {
        let goals = vec![goal("Signup"), goal("Purchase"), goal("Sign in")];
        let names = |fs: &[Filter]| -> Vec<String> {
            select(&goals, fs)
                .expect("selects")
                .iter()
                .map(|g| g.display_name.clone())
                .collect()
        };
        assert_eq!(names(&[]).len(), 3);
        assert_eq!(
            names(&[leaf(Operator::Is, &["Signup"], true)]),
            vec!["Signup"]
        );
        assert_eq!(
            names(&[leaf(Operator::Contains, &["sign"], false)]),
            vec!["Signup", "Sign in"]
        );
        assert_eq!(
            names(&[
                leaf(Operator::Contains, &["Sign"], true),
                leaf(Operator::IsNot, &["Sign in"], true)
            ]),
            vec!["Signup"]
        );
        assert!(select(&goals, &[leaf(Operator::Is, &["Nope"], true)]).is_err());
        assert!(select(&goals, &[leaf(Operator::Is, &["signup"], false)]).is_ok());
    }

    #[test]
    fn nested_or_pattern_goal_filters_are_refused() {
        let nested = Filter::Not(Box::new(leaf(Operator::Is, &["a"], true)));
        assert!(split_goal_filters(vec![nested]).is_err());
        assert!(split_goal_filters(vec![leaf(Operator::Matches, &["a"], true)]).is_err());
        let (goal, rest) = split_goal_filters(vec![leaf(Operator::Is, &["a"], true)]).expect("ok");
        assert_eq!((goal.len(), rest.len()), (1, 0));
    }
}
