//! Protections of the write path: per-client token buckets and queue-depth load shedding.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A token bucket per key (client address, poll id, ...). `None` inside means unlimited.
///
/// The table of buckets is bounded: past `max_keys` keys (after forgetting idle ones),
/// every key shares one overflow bucket of the same quota until there is room again, so a
/// client inventing keys (addresses of an IPv6 /48, made-up poll ids) can neither grow
/// memory nor slip past the limit; it costs the keys it shares the overflow with their
/// own bucket meanwhile (counted in `ingest_api_limiter_overflow_total{limiter}`).
#[derive(Clone)]
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    inner: Option<Arc<Buckets<K>>>,
}

struct Buckets<K: Hash + Eq + Clone> {
    keyed: DefaultKeyedRateLimiter<K>,
    overflow: governor::DefaultDirectRateLimiter,
    max_keys: usize,
    name: &'static str,
    checks: AtomicU64,
    full: AtomicBool,
}

/// How many checks pass between two counts of the table (a count takes every shard's
/// lock). The table can pass `max_keys` by at most this many keys.
const COUNT_EVERY: u64 = 256;

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `per_second` sustained, `burst` at once, at most `max_keys` buckets;
    /// `per_second == 0` disables the limit.
    pub fn new(name: &'static str, per_second: u32, burst: u32, max_keys: usize) -> Self {
        let inner = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            let quota = Quota::per_second(rate).allow_burst(burst);
            Arc::new(Buckets {
                keyed: RateLimiter::keyed(quota),
                overflow: RateLimiter::direct(quota),
                max_keys,
                name,
                checks: AtomicU64::new(0),
                full: AtomicBool::new(false),
            })
        });
        Self { inner }
    }

    /// Takes one token for `key`, or says how long until one is available.
    ///
    /// # Errors
    /// The wait until the next request from `key` would be allowed.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(b) = &self.inner else {
            return Ok(());
        };
        if b.checks.fetch_add(1, Ordering::Relaxed) % COUNT_EVERY == 0 {
            b.count();
        }
        let checked = if b.full.load(Ordering::Relaxed) {
            metrics::counter!("ingest_api_limiter_overflow_total", "limiter" => b.name)
                .increment(1);
            b.overflow.check()
        } else {
            b.keyed.check_key(key)
        };
        checked.map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets keys whose buckets are full again, so memory follows active clients only.
    pub fn forget_idle(&self) {
        if let Some(b) = &self.inner {
            b.keyed.retain_recent();
            b.keyed.shrink_to_fit();
            b.count();
        }
    }

    /// How many keys have a bucket.
    pub fn keys(&self) -> usize {
        self.inner.as_ref().map_or(0, |b| b.keyed.len())
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn count(&self) {
        let mut len = self.keyed.len();
        if len >= self.max_keys {
            self.keyed.retain_recent();
            len = self.keyed.len();
        }
        self.full.store(len >= self.max_keys, Ordering::Relaxed);
        metrics::gauge!("ingest_api_limiter_keys", "limiter" => self.name).set(len as f64);
    }
}

/// The last known length of the events queue, refreshed by every push (LPUSH returns it)
/// and by a background poll, so shedding costs no extra Redis round trip per request.
///
/// The two sources race: an LLEN sent before a push can be answered after the push's
/// reply was recorded, and must not overwrite it with an older length (that let a request
/// through above the high-water mark). So a poll result is only kept when no push was
/// recorded while it was in flight.
#[derive(Clone, Default)]
pub struct QueueDepth {
    last_known: Arc<AtomicU64>,
    pushes: Arc<AtomicU64>,
}

/// What a background poll saw before asking Redis; see [`QueueDepth::poll_result`].
#[derive(Clone, Copy, Debug)]
pub struct PollTicket {
    pushes: u64,
    depth: u64,
}

impl QueueDepth {
    pub fn get(&self) -> u64 {
        self.last_known.load(Ordering::SeqCst)
    }

    /// Records the length a push returned: always the newest observation.
    pub fn pushed(&self, len: u64) {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        self.last_known.store(len, Ordering::SeqCst);
        Self::export(len);
    }

    /// Taken just before a background LLEN is sent.
    pub fn poll_ticket(&self) -> PollTicket {
        PollTicket {
            pushes: self.pushes.load(Ordering::SeqCst),
            depth: self.last_known.load(Ordering::SeqCst),
        }
    }

    /// Records a background LLEN unless a push was recorded since `ticket` was taken;
    /// returns whether it was kept.
    pub fn poll_result(&self, ticket: PollTicket, len: u64) -> bool {
        let kept = self.pushes.load(Ordering::SeqCst) == ticket.pushes
            && self
                .last_known
                .compare_exchange(ticket.depth, len, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
        if kept {
            Self::export(len);
        }
        kept
    }

    fn export(len: u64) {
        metrics::gauge!("ingest_api_event_queue_length").set(len as f64);
    }
}

/// `Retry-After` seconds for a wait, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_limited_with_a_wait() {
        let limiter = KeyedLimiter::new("t", 1, 3, 100);
        let key = "1.2.3.4".to_string();
        for _ in 0..3 {
            assert_eq!(limiter.check(&key), Ok(()));
        }
        let wait = limiter
            .check(&key)
            .expect_err("fourth request is over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(
            limiter.check(&"5.6.7.8".to_string()),
            Ok(()),
            "other keys unaffected"
        );
    }

    #[test]
    fn invented_keys_past_the_bound_share_one_bucket_and_grow_nothing() {
        let limiter = KeyedLimiter::new("t", 1, 1, 50);
        let started = std::time::Instant::now();
        let allowed = (0..20_000u32).filter(|k| limiter.check(k).is_ok()).count();
        // The shared token refills once a second: on a loaded machine the loop takes
        // seconds (failed once in make test: 3.1 s).
        let refills = usize::try_from(started.elapsed().as_secs() + 1).unwrap_or(usize::MAX);
        assert!(
            limiter.keys() <= 50 + COUNT_EVERY as usize,
            "{} buckets for a bound of 50",
            limiter.keys()
        );
        // Each key is allowed its one request until the table is found full, then they
        // all share the overflow's single token.
        assert!(
            allowed <= 50 + COUNT_EVERY as usize + 1 + refills,
            "{allowed} of 20,000 invented keys got through"
        );
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let limiter = KeyedLimiter::new("t", 0, 0, 100);
        for _ in 0..10_000 {
            assert_eq!(limiter.check(&1u8), Ok(()));
        }
    }

    #[test]
    fn a_poll_answered_after_a_push_does_not_overwrite_it() {
        let depth = QueueDepth::default();
        let ticket = depth.poll_ticket();
        depth.pushed(5);
        assert!(!depth.poll_result(ticket, 0), "stale LLEN is dropped");
        assert_eq!(depth.get(), 5);

        let ticket = depth.poll_ticket();
        assert!(depth.poll_result(ticket, 0), "a quiet queue's LLEN is kept");
        assert_eq!(depth.get(), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
