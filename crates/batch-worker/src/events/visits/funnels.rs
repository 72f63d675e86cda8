//! How far a visit got in a funnel (migration 0015): a function of its steps list alone,
//! so of the visit, whichever order its events came in.
//!
//! A visit reaches step 1 with its first event converting step 1's goal, and step k with
//! its first event after (by time, then event id) the one that reached step k-1 converting
//! step k's goal; one event reaches one step at most (an event converting two goals is
//! one event). Taking the earliest event at every step is optimal: a later one leaves
//! fewer events for the steps after it. `tally_funnel_reach` in SQL is the same rule, for
//! the recounts and the sketch repair; stats-api's report from the raw events is an
//! independent statement of it, which the tests compare against.

use super::Step;

/// The steps of `funnel` (goal ids in order) that `steps` (sorted) reached.
pub fn reach(steps: &[Step], funnel: &[String]) -> usize {
    let mut reached = 0;
    let mut last: Option<(i64, uuid::Uuid)> = None;
    for (at, event_id, goal) in steps {
        let Some(wanted) = funnel.get(reached) else {
            break;
        };
        if goal == wanted && last.is_none_or(|l| (*at, *event_id) > l) {
            reached += 1;
            last = Some((*at, *event_id));
        }
    }
    reached
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn step(at: i64, id: u128, goal: &str) -> Step {
        (at, Uuid::from_u128(id), goal.to_string())
    }

    fn funnel(goals: &[&str]) -> Vec<String> {
        goals.iter().map(|g| (*g).to_string()).collect()
    }

    #[test]
    fn steps_count_in_order_each_event_once() {
        let f = funnel(&["a", "b", "c"]);
        // b before a does not count; the same event cannot be both b and c.
        let mut steps = vec![
            step(1, 1, "b"),
            step(2, 2, "a"),
            step(3, 3, "b"),
            step(3, 3, "c"),
            step(5, 4, "c"),
        ];
        steps.sort_unstable();
        assert_eq!(reach(&steps, &f), 3);
        assert_eq!(reach(&steps[..4], &f), 2);
        assert_eq!(
            reach(&[step(1, 1, "a"), step(1, 1, "b")], &funnel(&["a", "b"])),
            1
        );
        // At the same instant the event id decides the order.
        assert_eq!(
            reach(&[step(1, 1, "a"), step(1, 2, "b")], &funnel(&["a", "b"])),
            2
        );
        assert_eq!(
            reach(&[step(1, 1, "b"), step(1, 2, "a")], &funnel(&["a", "b"])),
            1
        );
        assert_eq!(reach(&[], &f), 0);
    }
}
