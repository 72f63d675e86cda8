//! Exponential backoff with jitter: the one retry schedule of every loop that waits for a
//! dependency (the worker's writes and claims, migrations at start, the gateway's
//! subscription).

use std::time::Duration;

/// Pauses that double from `initial` up to `max`, each with up to +25% random jitter so
/// many processes that lost the same dependency do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// `initial` is raised to at least 1 ms and `max` to at least `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The pause before the next attempt; each call doubles the base up to the maximum.
    pub fn next_pause(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = base.mul_f64(f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 1020.0);
        (base + jitter).min(self.max)
    }

    /// Back to the first pause (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_with_bounded_jitter_up_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1_000));
        let first = b.next_pause();
        assert!((100..=125).contains(&first.as_millis()), "{first:?}");
        let second = b.next_pause();
        assert!((200..=250).contains(&second.as_millis()), "{second:?}");
        for _ in 0..10 {
            assert!(b.next_pause() <= Duration::from_millis(1_000));
        }
        b.reset();
        assert!(b.next_pause() <= Duration::from_millis(125));
    }

    #[test]
    fn degenerate_bounds_are_raised() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(b.next_pause() >= Duration::from_millis(1));
    }
}
