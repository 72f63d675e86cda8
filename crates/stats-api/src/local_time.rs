//! A site's local days (shared with the services that resolve date ranges, in
//! `domain::local_days`) and the PostgreSQL bounds of a span of them.

use chrono::{DateTime, Utc};
pub use domain::local_days::{ALL_HOURS, SiteClock, Span, floor_hour};
use domain::tokio_postgres::types::Timestamp;

/// A span's ends as PostgreSQL timestamps, an open end as an infinity.
pub trait PgBounds {
    fn pg_bounds(&self) -> (Timestamp<DateTime<Utc>>, Timestamp<DateTime<Utc>>);
}

impl PgBounds for Span {
    fn pg_bounds(&self) -> (Timestamp<DateTime<Utc>>, Timestamp<DateTime<Utc>>) {
        (
            self.start.map_or(Timestamp::NegInfinity, Timestamp::Value),
            self.end.map_or(Timestamp::PosInfinity, Timestamp::Value),
        )
    }
}
