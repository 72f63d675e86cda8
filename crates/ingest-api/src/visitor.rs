//! Visitor ids for events without a `user_id`: `HMAC-SHA256(salt of the day, site id,
//! client address, User-Agent)`, the first 16 bytes in hex. The salt lives only in Redis
//! and rotates daily (see `domain::visitor_salt`), so the same browser is one visitor
//! within a UTC day and a stranger the next, and the id cannot be traced back to the
//! address. Salts are held in memory (refreshed every `SALT_REFRESH_MS`) so an event costs
//! no extra Redis round trip; the next day's salt is fetched ahead, in the last minutes of
//! the day.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use domain::keys::Keys;
use domain::redis::RedisConn;
use domain::redis_client::RedisResult;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// How long before midnight (UTC) the next day's salt is fetched.
const AHEAD: TimeDelta = TimeDelta::minutes(15);

/// The salts of today (and, near midnight, tomorrow).
#[derive(Default)]
pub struct Salts {
    held: RwLock<Vec<(NaiveDate, Arc<[u8]>)>>,
}

impl Salts {
    /// The salt of `day`, if held.
    pub fn for_day(&self, day: NaiveDate) -> Option<Arc<[u8]>> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        held.iter().find(|(d, _)| *d == day).map(|(_, s)| s.clone())
    }

    /// The days whose salts should be held at `now`.
    pub fn days_needed(now: DateTime<Utc>) -> Vec<NaiveDate> {
        let today = now.date_naive();
        let mut days = vec![today];
        if (now + AHEAD).date_naive() != today {
            days.push((now + AHEAD).date_naive());
        }
        days
    }

    /// Reads (creating when missing) the salts needed at `now`. A salt changed in Redis is
    /// picked up here too.
    ///
    /// # Errors
    /// When Redis is unreachable; the salts held so far stay in use.
    pub async fn refresh(
        &self,
        redis: &mut RedisConn,
        keys: &Keys,
        now: DateTime<Utc>,
    ) -> RedisResult<()> {
        let mut fresh = Vec::new();
        for day in Self::days_needed(now) {
            let salt = domain::visitor_salt::get_or_create(redis, keys, day).await?;
            fresh.push((day, Arc::<[u8]>::from(salt)));
        }
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

/// The visitor id of a connection on a site under a day's salt.
pub fn visitor_id(salt: &[u8], site_id: &str, ip: IpAddr, user_agent: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt).expect("HMAC takes keys of any length");
    // NUL separators: none of the parts can contain one, so no two inputs concatenate alike.
    mac.update(site_id.as_bytes());
    mac.update(b"\0");
    match ip {
        IpAddr::V4(v4) => mac.update(&v4.octets()),
        IpAddr::V6(v6) => mac.update(&v6.octets()),
    }
    mac.update(b"\0");
    mac.update(user_agent.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut id = String::with_capacity(32);
    for byte in &digest[..16] {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_next_days_salt_is_fetched_just_before_midnight() {
        assert_eq!(Salts::days_needed(at("2025-11-14T12:00:00Z")).len(), 1);
        let late = Salts::days_needed(at("2025-11-14T23:50:00Z"));
        assert_eq!(
            late.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["2025-11-14", "2025-11-15"]
        );
    }

    #[test]
    fn ids_depend_on_every_input_and_the_salt() {
        let ip: IpAddr = "203.0.113.7".parse().expect("ip");
        let base = visitor_id(b"salt-1", "s", ip, "UA");
        assert_eq!(base.len(), 32);
        assert_eq!(base, visitor_id(b"salt-1", "s", ip, "UA"));
        assert_ne!(base, visitor_id(b"salt-2", "s", ip, "UA"));
        assert_ne!(base, visitor_id(b"salt-1", "t", ip, "UA"));
        assert_ne!(
            base,
            visitor_id(b"salt-1", "s", "203.0.113.8".parse().expect("ip"), "UA")
        );
        assert_ne!(base, visitor_id(b"salt-1", "s", ip, "UA2"));
    }

    #[test]
    fn a_day_without_a_held_salt_has_none() {
        let salts = Salts::default();
        assert!(
            salts
                .for_day(at("2025-11-14T00:00:00Z").date_naive())
                .is_none()
        );
    }
}
