//! Caps on open streams, in total and per client address. A [`Slot`] is held by each open
//! stream (or long poll) and given back when it is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyFromClient,
    Full,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts open streams.
#[derive(Clone)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

/// An open stream's place; dropping it frees the place.
pub struct Slot {
    limits: ConnectionLimits,
    ip: Option<IpAddr>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            counts: Arc::default(),
        }
    }

    /// Takes a place for a stream from `ip`.
    ///
    /// # Errors
    /// When the gateway or the client's share is full.
    pub fn acquire(&self, ip: Option<IpAddr>) -> Result<Slot, Refusal> {
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.total >= self.max_total {
            return Err(Refusal::Full);
        }
        if let Some(ip) = ip {
            let n = c.per_ip.entry(ip).or_default();
            if *n >= self.max_per_ip {
                return Err(Refusal::TooManyFromClient);
            }
            *n += 1;
        }
        c.total += 1;
        metrics::gauge!("sse_gateway_open_streams").set(c.total as f64);
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .limits
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = c.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
        metrics::gauge!("sse_gateway_open_streams").set(c.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_client_and_in_total_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let s1 = limits.acquire(Some(a)).expect("first");
        let _s2 = limits.acquire(Some(a)).expect("second");
        assert_eq!(
            limits.acquire(Some(a)).err(),
            Some(Refusal::TooManyFromClient)
        );
        let _s3 = limits.acquire(Some(b)).expect("other client");
        assert_eq!(limits.acquire(Some(b)).err(), Some(Refusal::Full));
        drop(s1);
        assert_eq!(limits.open(), 2);
        assert!(limits.acquire(Some(a)).is_ok());
    }
}
