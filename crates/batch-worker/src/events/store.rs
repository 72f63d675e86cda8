//! Writing a batch of events to PostgreSQL: one statement for the raw rows, one for every
//! rollup, in one transaction.
//!
//! One transaction, one statement per step: the events are inserted with
//! `ON CONFLICT (event_id, site_id, ts) DO NOTHING RETURNING event_id, site_id, ts`, and the
//! rollups of exactly the returned (newly inserted) events are upserted in a second
//! statement. A replayed batch (a
//! reaped worker's, or one whose acknowledgement was lost) therefore changes nothing: no
//! event is stored twice and no rollup counts one twice. Rollup rows arrive sorted by key
//! so concurrent workers lock them in the same order.

use super::enrich::{Derived, derive};
use super::rollups::{self, PathDayRollup, Rollups};
use super::visits::settings::SiteSettings;
use super::visits::{self, Visit, VisitAttrs, VisitEvent};
use super::waiting;
use super::written::{EventsWritten, SiteBatch, VisitorDay, VisitorHour, keep_top_paths};
use crate::lane::{Outcome, StoreError};
use chrono::{DateTime, NaiveDate, Utc};
use domain::deadpool_postgres::Pool;
use domain::event::QueuedEvent;
use domain::tokio_postgres::types::ToSql;
use domain::visits::DAY_SPAN;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::HashMap;
use std::sync::LazyLock;
use uuid::Uuid;

const INSERT_EVENTS: &str = r"
INSERT INTO events (event_id, site_id, event_type, ts, path, user_id, props, received_at,
                    hostname, referrer, referrer_source, utm_source, utm_medium, utm_campaign,
                    utm_term, utm_content, browser, os, device, country)
SELECT event_id, site_id, event_type, ts, path, user_id, props::jsonb, received_at,
       hostname, referrer, referrer_source, utm_source, utm_medium, utm_campaign,
       utm_term, utm_content, browser, os, device, country
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],
            $5::text[], $6::text[], $7::text[], $8::timestamptz[],
            $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
            $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[])
    AS t(event_id, site_id, event_type, ts, path, user_id, props, received_at,
         hostname, referrer, referrer_source, utm_source, utm_medium, utm_campaign,
         utm_term, utm_content, browser, os, device, country)
ON CONFLICT (event_id, site_id, ts) DO NOTHING
RETURNING event_id, site_id, ts
";

/// Every rollup of the batch in one statement; inputs are pre-aggregated and sorted
/// (see [`crate::rollup`]), so each unnest row is one distinct key.
const UPSERT_ROLLUPS: &str = r"
WITH minutely AS (
    INSERT INTO rollup_minutely AS r (site_id, event_type, bucket, events)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[])
    ON CONFLICT (site_id, event_type, bucket) DO UPDATE SET events = r.events + EXCLUDED.events
), hourly AS (
    INSERT INTO rollup_hourly AS r (site_id, event_type, bucket, events)
    SELECT * FROM unnest($5::text[], $6::text[], $7::timestamptz[], $8::bigint[])
    ON CONFLICT (site_id, event_type, bucket) DO UPDATE SET events = r.events + EXCLUDED.events
), paths AS (
    INSERT INTO rollup_hourly_paths AS r (site_id, event_type, bucket, path_key, path, views)
    SELECT * FROM unnest($9::text[], $10::text[], $11::timestamptz[], $12::uuid[], $13::text[], $14::bigint[])
    ON CONFLICT (site_id, event_type, bucket, path_key) DO UPDATE SET views = r.views + EXCLUDED.views
), visitors AS (
    INSERT INTO daily_visitors AS v (site_id, event_type, day, user_id, hours)
    SELECT * FROM unnest($15::text[], $16::text[], $17::date[], $18::text[], $19::int[])
    ON CONFLICT (site_id, event_type, day, user_id) DO UPDATE SET hours = v.hours | EXCLUDED.hours
    WHERE (v.hours | EXCLUDED.hours) <> v.hours
), path_days AS (
    INSERT INTO page_day_rollups AS r (site_id, event_type, day, path_key, path, views)
    SELECT * FROM unnest($20::text[], $21::text[], $22::date[], $23::uuid[], $24::text[], $25::bigint[])
    ON CONFLICT (site_id, event_type, day, path_key) DO UPDATE SET views = r.views + EXCLUDED.views
)
SELECT 1
";

/// Bumps the generations of the marked weeks (site `$1`, Monday `$2`) whose page days
/// the batch changes, so their week rows (migration 0021) are not read until built again.
/// After the visits' cells and week rows, before the page days: the order every writer
/// takes them in.
static MARK_PAGE_WEEKS: LazyLock<String> = LazyLock::new(|| {
    visits::rollup_store::mark_weeks(&format!(
        "(SELECT site_id, {DAY_SPAN}::int2 AS span_hours, tally_page_week(day) AS bucket \
         FROM unnest($1::text[], $2::date[]) AS d(site_id, day)) p"
    ))
});

/// The rollups as the column arrays `UPSERT_ROLLUPS` takes.
struct RollupArgs<'a> {
    m_site: Vec<&'a str>,
    m_type: Vec<&'a str>,
    m_bucket: Vec<DateTime<Utc>>,
    m_events: Vec<i64>,
    h_site: Vec<&'a str>,
    h_type: Vec<&'a str>,
    h_bucket: Vec<DateTime<Utc>>,
    h_events: Vec<i64>,
    p_site: Vec<&'a str>,
    p_type: Vec<&'a str>,
    p_hour: Vec<DateTime<Utc>>,
    p_key: Vec<Uuid>,
    p_path: Vec<&'a str>,
    p_views: Vec<i64>,
    v_site: Vec<&'a str>,
    v_type: Vec<&'a str>,
    v_day: Vec<NaiveDate>,
    v_user: Vec<&'a str>,
    v_hours: Vec<i32>,
    d_site: Vec<&'a str>,
    d_type: Vec<&'a str>,
    d_day: Vec<NaiveDate>,
    d_key: Vec<Uuid>,
    d_path: Vec<&'a str>,
    d_views: Vec<i64>,
}

impl<'a> From<&Rollups<'a>> for RollupArgs<'a> {
    fn from(r: &Rollups<'a>) -> Self {
        let (mut m_site, mut m_type, mut m_bucket, mut m_events) = (vec![], vec![], vec![], vec![]);
        for (((site, kind), bucket), n) in &r.minutely {
            m_site.push(*site);
            m_type.push(*kind);
            m_bucket.push(*bucket);
            m_events.push(*n);
        }
        let (mut h_site, mut h_type, mut h_bucket, mut h_events) = (vec![], vec![], vec![], vec![]);
        for (((site, kind), bucket), n) in &r.hourly {
            h_site.push(*site);
            h_type.push(*kind);
            h_bucket.push(*bucket);
            h_events.push(*n);
        }
        let (mut p_site, mut p_type, mut p_hour, mut p_key, mut p_path, mut p_views) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (((site, kind), hour, key), (path, n)) in &r.paths {
            p_site.push(*site);
            p_type.push(*kind);
            p_hour.push(*hour);
            p_key.push(*key);
            p_path.push(*path);
            p_views.push(*n);
        }
        let (mut v_site, mut v_type, mut v_day, mut v_user, mut v_hours) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (((site, kind), day, user), hours) in &r.visitors {
            v_site.push(*site);
            v_type.push(*kind);
            v_day.push(*day);
            v_user.push(*user);
            v_hours.push(*hours);
        }
        Self {
            m_site,
            m_type,
            m_bucket,
            m_events,
            h_site,
            h_type,
            h_bucket,
            h_events,
            p_site,
            p_type,
            p_hour,
            p_key,
            p_path,
            p_views,
            v_site,
            v_type,
            v_day,
            v_user,
            v_hours,
            d_site: vec![],
            d_type: vec![],
            d_day: vec![],
            d_key: vec![],
            d_path: vec![],
            d_views: vec![],
        }
    }
}

impl<'a> RollupArgs<'a> {
    /// With the page day rows `days`.
    fn with_path_days(mut self, days: &[PathDayRollup<'a>]) -> Self {
        for (((site, kind), day, key), (path, n)) in days {
            self.d_site.push(*site);
            self.d_type.push(*kind);
            self.d_day.push(*day);
            self.d_key.push(*key);
            self.d_path.push(*path);
            self.d_views.push(*n);
        }
        self
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 25] {
        [
            &self.m_site,
            &self.m_type,
            &self.m_bucket,
            &self.m_events,
            &self.h_site,
            &self.h_type,
            &self.h_bucket,
            &self.h_events,
            &self.p_site,
            &self.p_type,
            &self.p_hour,
            &self.p_key,
            &self.p_path,
            &self.p_views,
            &self.v_site,
            &self.v_type,
            &self.v_day,
            &self.v_user,
            &self.v_hours,
            &self.d_site,
            &self.d_type,
            &self.d_day,
            &self.d_key,
            &self.d_path,
            &self.d_views,
        ]
    }
}

/// Below this many events a batch is written in one transaction: a part of its own costs
/// a connection and a round of shared rollup cells more than it saves.
const MIN_EVENTS_PER_PART: usize = 1_000;

/// How one process writes its batches: each in up to `parts` transactions, every visitor's
/// events in the part its key hashes to, and (with two parts or more) each part's
/// transactions one at a time, whichever lane's batch they are of. So two transactions of
/// one process never share a visitor, and never wait for each other's visitor locks (held
/// from the visits to the commit): two lanes writing whole batches did, since live traffic
/// spreads each visitor's events over consecutive batches; a lane waited out most of the
/// other's transaction. The lanes still overlap: one parses, derives and writes one part
/// while the other writes another.
pub struct WriteParts {
    /// One gate per part (none with one part: the lanes then write side by side).
    gates: Vec<tokio::sync::Mutex<()>>,
}

impl WriteParts {
    /// `parts` parts (at least 1).
    pub fn new(parts: usize) -> Self {
        let parts = parts.max(1);
        let gates = if parts == 1 { 0 } else { parts };
        Self {
            gates: (0..gates).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    fn parts(&self) -> usize {
        self.gates.len().max(1)
    }
}

/// Writes `events` in up to `parts` transactions ([`store_events`] each, see
/// [`WriteParts`]). Each part is idempotent on its own, so a part that committed before
/// another failed is replayed harmlessly when the batch is retried.
///
/// # Errors
/// As [`store_events`]; a transient failure of any part before a refusal of another.
pub async fn store_events_in_parts(
    pool: &Pool,
    events: &[QueuedEvent<'_>],
    parts: &WriteParts,
) -> Result<EventsWritten, StoreError> {
    let split_in = parts.parts().min(events.len() / MIN_EVENTS_PER_PART).max(1);
    if split_in == 1 {
        // Every part's visitors: every gate, in order (a lane holding some waits for no
        // one holding others, since a part holds one).
        let mut held = Vec::with_capacity(parts.gates.len());
        for gate in &parts.gates {
            held.push(gate.lock().await);
        }
        return store_events(pool, events).await;
    }
    let split = split_by_visitor(events, parts.parts());
    let written =
        futures_util::future::join_all(split.iter().enumerate().map(|(i, part)| async move {
            let _gate = parts.gates[i].lock().await;
            store_events(pool, part).await
        }))
        .await;
    let mut all = EventsWritten::default();
    let mut refused = None;
    for part in written {
        match part {
            Ok(w) => all.merge(w),
            Err(e @ StoreError::Transient(_)) => return Err(e),
            Err(e @ StoreError::Data(_)) => refused = refused.or(Some(e)),
        }
    }
    refused.map_or(Ok(all), Err)
}

/// `events` in `parts` lists, each visitor's events (by site and visitor id; an event
/// without a visitor by its id) in one list, and every copy of one event key in the list
/// of its first copy: two parts inserting the same key could wait on each other.
fn split_by_visitor<'a>(events: &[QueuedEvent<'a>], parts: usize) -> Vec<Vec<QueuedEvent<'a>>> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut split: Vec<Vec<QueuedEvent<'a>>> = (0..parts)
        .map(|_| Vec::with_capacity(events.len() / parts + 1))
        .collect();
    let mut placed: FxHashMap<(Uuid, &str, DateTime<Utc>), usize> =
        FxHashMap::with_capacity_and_hasher(events.len(), Default::default());
    for e in events {
        let part = *placed
            .entry((e.event_id, e.site_id.as_ref(), e.ts))
            .or_insert_with(|| {
                let mut h = DefaultHasher::new();
                e.site_id.hash(&mut h);
                match &e.user_id {
                    Some(user) => user.hash(&mut h),
                    None => e.event_id.hash(&mut h),
                }
                (h.finish() % parts as u64) as usize
            });
        split[part].push(e.clone());
    }
    split
}

/// Writes `events` and their rollups in one transaction.
///
/// # Errors
/// [`StoreError::Data`] when a value is refused; [`StoreError::Transient`] otherwise.
pub async fn store_events(
    pool: &Pool,
    batch: &[QueuedEvent<'_>],
) -> Result<EventsWritten, StoreError> {
    if batch.is_empty() {
        return Ok(EventsWritten::default());
    }
    let mut batch_sites: Vec<&str> = batch
        .iter()
        .map(|e| e.site_id.as_ref())
        .collect::<FxHashSet<_>>()
        .into_iter()
        .collect();
    batch_sites.sort_unstable();
    let mut client = pool.get().await.map_err(StoreError::no_connection)?;
    visits::settings::add_missing(&client, &batch_sites).await?;
    let insert = client
        .prepare_cached(INSERT_EVENTS)
        .await
        .map_err(StoreError::from_pg)?;
    let upsert = client
        .prepare_cached(UPSERT_ROLLUPS)
        .await
        .map_err(StoreError::from_pg)?;
    let tx = client.transaction().await.map_err(StoreError::from_pg)?;
    // The events of sites whose settings a change holds wait for it to finish, the rest
    // go on (see super::waiting); the locks taken here are held to the commit.
    let busy: FxHashSet<String> = waiting::lock_settings_or_wait(&tx, &batch_sites)
        .await?
        .into_iter()
        .collect();
    let going_on: Vec<QueuedEvent<'_>>;
    let (events, waiting) = if busy.is_empty() {
        (batch, 0)
    } else {
        let (set_aside, rest): (Vec<_>, Vec<_>) = batch
            .iter()
            .cloned()
            .partition(|e| busy.contains(e.site_id.as_ref()));
        waiting::set_aside(&tx, &set_aside).await?;
        going_on = rest;
        (going_on.as_slice(), set_aside.len() as u64)
    };
    if events.is_empty() {
        tx.commit().await.map_err(StoreError::from_pg)?;
        return Ok(EventsWritten {
            waiting,
            ..EventsWritten::default()
        });
    }
    let n = events.len();
    let derived: Vec<Derived<'_>> = events.iter().map(derive).collect();
    let mut ids: Vec<Uuid> = Vec::with_capacity(n);
    let mut sites: Vec<&str> = Vec::with_capacity(n);
    let mut types: Vec<&str> = Vec::with_capacity(n);
    let mut timestamps: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut paths: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut users: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut props: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut received: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut fields = DerivedColumns::with_capacity(n);
    for (e, d) in events.iter().zip(&derived) {
        ids.push(e.event_id);
        sites.push(&e.site_id);
        types.push(&e.event_type);
        timestamps.push(e.ts);
        paths.push(d.path.as_deref());
        users.push(e.user_id.as_deref());
        props.push(e.props.map(|p| p.get()));
        received.push(DateTime::from_timestamp_millis(e.received_at_ms).unwrap_or(e.ts));
        fields.push(e, d);
    }
    let inserted_rows = tx
        .query(
            &insert,
            &[
                &ids,
                &sites,
                &types,
                &timestamps,
                &paths,
                &users,
                &props,
                &received,
                &fields.hostname,
                &fields.referrer,
                &fields.referrer_source,
                &fields.utm_source,
                &fields.utm_medium,
                &fields.utm_campaign,
                &fields.utm_term,
                &fields.utm_content,
                &fields.browser,
                &fields.os,
                &fields.device,
                &fields.country,
            ],
        )
        .await
        .map_err(StoreError::from_pg)?;
    let mut inserted: FxHashSet<(Uuid, &str, DateTime<Utc>)> = inserted_rows
        .iter()
        .map(|r| (r.get::<_, Uuid>(0), r.get::<_, &str>(1), r.get(2)))
        .collect();
    // Only rows really inserted count, each once (a batch may carry an id twice): a
    // replayed batch adds nothing to the rollups or visits. The day sketches take every
    // visitor of the batch: a replay must re-add what a crash may have kept from them.
    let all_inserted = inserted.len() == events.len();
    let fresh: Vec<usize> = if all_inserted {
        (0..n).collect()
    } else {
        (0..n)
            .filter(|&i| {
                let e = &events[i];
                inserted.remove(&(e.event_id, e.site_id.as_ref(), e.ts))
            })
            .collect()
    };
    let rollups = Rollups::of(fresh.iter().map(|&i| (&events[i], paths[i])));
    let visitors = if all_inserted {
        VisitorGroups::of(&rollups)
    } else {
        VisitorGroups::of(&Rollups::of(events.iter().zip(paths.iter().copied())))
    };
    // The sites' zones and goals, read after their locks were taken shared (above): a
    // change of a site's goals recounts its visits, and of its zone its day rows; this
    // batch's must be of the settings that rebuild used, or of the next ones (see
    // visits::settings).
    let mut fresh_sites: Vec<&str> = fresh
        .iter()
        .map(|&i| events[i].site_id.as_ref())
        .collect::<FxHashSet<_>>()
        .into_iter()
        .collect();
    fresh_sites.sort_unstable();
    let settings = visits::settings::read_settings(&tx, &fresh_sites).await?;
    let fresh_visits: Vec<Visit> = fresh
        .iter()
        .filter_map(|&i| visit_of_event(&events[i], &derived[i], &settings))
        .collect();
    // Locked after the insert, so other lanes wait on a visitor only for our visits and
    // rollups, not our insert. No deadlock with a worker replaying this batch: one that
    // waits on our new rows in its insert holds no visitor locks yet.
    let visitor_pairs: FxHashSet<(&str, &str)> = fresh_visits
        .iter()
        .map(|v| (v.site_id.as_str(), v.visitor.as_str()))
        .collect();
    let (locked_sites, locked_visitors): (Vec<&str>, Vec<&str>) = visitor_pairs.into_iter().unzip();
    visits::store::lock_visitors(&tx, &locked_sites, &locked_visitors).await?;
    visits::store::store_visits(&tx, &fresh_visits, &settings).await?;
    visits::store::unlock_visitors(&tx, &locked_sites, &locked_visitors).await?;
    let path_days = rollups::path_days(&rollups.paths, |site| settings.zone(site));
    let (late_sites, late_weeks) = rollups::weeks_maybe_marked(&path_days, Utc::now());
    if !late_sites.is_empty() {
        tx.execute(MARK_PAGE_WEEKS.as_str(), &[&late_sites, &late_weeks])
            .await
            .map_err(StoreError::from_pg)?;
    }
    let args = RollupArgs::from(&rollups).with_path_days(&path_days);
    tx.execute(&upsert, &args.params())
        .await
        .map_err(StoreError::from_pg)?;
    tx.commit().await.map_err(StoreError::from_pg)?;
    Ok(EventsWritten {
        waiting,
        visitor_days: visitors.days,
        visitor_hours: visitors.hours,
        inserted: rollups.per_site.values().map(|a| a.events).sum(),
        sites: sites_written(&rollups, events, all_inserted),
    })
}

/// The sites whose stats a batch changed, with their live activity. A batch that was
/// partly stored before (a replay, or a chunk an earlier attempt committed) counts only
/// what is new, but every site in it is listed: the commit that stored the rest may not
/// have reached Redis, and their cached answers must not outlive it.
fn sites_written(
    rollups: &Rollups<'_>,
    events: &[QueuedEvent<'_>],
    all_inserted: bool,
) -> HashMap<String, SiteBatch> {
    let mut sites: HashMap<String, SiteBatch> = rollups
        .per_site
        .iter()
        .map(|(site, a)| {
            let mut paths: Vec<(String, u64)> = a
                .paths
                .iter()
                .map(|(p, n)| ((*p).to_string(), *n))
                .collect();
            keep_top_paths(&mut paths);
            let batch = SiteBatch {
                events: a.events,
                page_views: a.page_views,
                paths,
            };
            ((*site).to_string(), batch)
        })
        .collect();
    if !all_inserted {
        for e in events {
            sites.entry(e.site_id.to_string()).or_default();
        }
    }
    sites
}

/// A newly stored event as a visit of its own, converting its site's goals of
/// `settings`; `None` without a visitor.
fn visit_of_event<'a>(
    e: &'a QueuedEvent<'_>,
    d: &'a Derived<'_>,
    settings: &SiteSettings,
) -> Option<Visit> {
    let owned = |s: &Option<String>| s.clone();
    let event = VisitEvent {
        site_id: &e.site_id,
        visitor: e.user_id.as_deref()?,
        event_id: e.event_id,
        ts: e.ts,
        event_type: &e.event_type,
        path: d.path.as_deref(),
        attrs: VisitAttrs {
            hostname: owned(&d.hostname),
            referrer: owned(&d.referrer),
            source: owned(&d.referrer_source),
            utm_source: owned(&d.utm_source),
            utm_medium: owned(&d.utm_medium),
            utm_campaign: owned(&d.utm_campaign),
            utm_term: owned(&d.utm_term),
            utm_content: owned(&d.utm_content),
            device: d.device.map(str::to_string),
            browser: e.browser.as_deref().map(str::to_string),
            os: e.os.as_deref().map(str::to_string),
            country: e.country.as_deref().map(str::to_string),
        },
    };
    Some(Visit::of_event(event, settings.of(&e.site_id)))
}

/// The derived fields of a batch as the column arrays `INSERT_EVENTS` takes.
struct DerivedColumns<'a> {
    hostname: Vec<Option<String>>,
    referrer: Vec<Option<String>>,
    referrer_source: Vec<Option<String>>,
    utm_source: Vec<Option<String>>,
    utm_medium: Vec<Option<String>>,
    utm_campaign: Vec<Option<String>>,
    utm_term: Vec<Option<String>>,
    utm_content: Vec<Option<String>>,
    browser: Vec<Option<&'a str>>,
    os: Vec<Option<&'a str>>,
    device: Vec<Option<&'a str>>,
    country: Vec<Option<&'a str>>,
}

impl<'a> DerivedColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            hostname: Vec::with_capacity(n),
            referrer: Vec::with_capacity(n),
            referrer_source: Vec::with_capacity(n),
            utm_source: Vec::with_capacity(n),
            utm_medium: Vec::with_capacity(n),
            utm_campaign: Vec::with_capacity(n),
            utm_term: Vec::with_capacity(n),
            utm_content: Vec::with_capacity(n),
            browser: Vec::with_capacity(n),
            os: Vec::with_capacity(n),
            device: Vec::with_capacity(n),
            country: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, e: &'a QueuedEvent<'_>, d: &Derived<'a>) {
        self.hostname.push(d.hostname.clone());
        self.referrer.push(d.referrer.clone());
        self.referrer_source.push(d.referrer_source.clone());
        self.utm_source.push(d.utm_source.clone());
        self.utm_medium.push(d.utm_medium.clone());
        self.utm_campaign.push(d.utm_campaign.clone());
        self.utm_term.push(d.utm_term.clone());
        self.utm_content.push(d.utm_content.clone());
        self.browser.push(e.browser.as_deref());
        self.os.push(e.os.as_deref());
        self.device.push(d.device);
        self.country.push(e.country.as_deref());
    }
}

/// The visitors of a batch grouped by site, event type and UTC day, and by site, event
/// type and UTC hour (for the Redis sketches).
struct VisitorGroups {
    days: Vec<VisitorDay>,
    hours: Vec<VisitorHour>,
}

impl VisitorGroups {
    /// Rollup visitor rows arrive sorted by `(site, type, day, user)`, so each day group is
    /// a run; hour groups come from each row's hour bits.
    fn of(rollups: &Rollups<'_>) -> Self {
        let mut days: Vec<VisitorDay> = Vec::new();
        let mut hours: HashMap<(&str, &str, i64), Vec<String>> = HashMap::new();
        for (((site, kind), day, user), bits) in &rollups.visitors {
            match days.last_mut() {
                Some(d) if d.day == *day && d.site_id == *site && d.event_type == *kind => {
                    d.users.push((*user).to_string());
                }
                _ => days.push(VisitorDay {
                    site_id: (*site).to_string(),
                    event_type: (*kind).to_string(),
                    day: *day,
                    users: vec![(*user).to_string()],
                }),
            }
            let first_hour = day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp() / 3600;
            for h in (0..24).filter(|h| bits & (1 << h) != 0) {
                hours
                    .entry((site, kind, first_hour + i64::from(h)))
                    .or_default()
                    .push((*user).to_string());
            }
        }
        let mut hours: Vec<VisitorHour> = hours
            .into_iter()
            .map(|((site, kind, hour), users)| VisitorHour {
                site_id: site.to_string(),
                event_type: kind.to_string(),
                hour,
                users,
            })
            .collect();
        hours.sort_by(|a, b| {
            (&a.site_id, &a.event_type, a.hour).cmp(&(&b.site_id, &b.event_type, b.hour))
        });
        Self { days, hours }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::event::parse_event_body;

    /// The gates of [`WriteParts`] keep a process's transactions visitor-disjoint only if
    /// a visitor lands in the same part in every batch.
    #[test]
    fn a_visitor_is_in_the_same_part_in_every_batch() {
        let batch = |users: &[u32]| -> Vec<u8> {
            let events: Vec<String> = users
                .iter()
                .map(|u| {
                    format!(
                        r#"{{"site_id":"s{}","event_type":"page_view","timestamp":"2025-11-14T10:00:00Z","user_id":"u{u}"}}"#,
                        u % 3
                    )
                })
                .collect();
            format!(r#"{{"events":[{}]}}"#, events.join(",")).into_bytes()
        };
        let first = batch(&(0..400).collect::<Vec<_>>());
        let second = batch(&(200..600).rev().collect::<Vec<_>>());
        let part_of = |body: &[u8]| -> HashMap<String, usize> {
            let events = parse_event_body(body, Utc::now(), None).expect("valid");
            let mut parts = HashMap::new();
            for (i, part) in split_by_visitor(&events, 3).iter().enumerate() {
                for e in part {
                    let visitor = format!("{}/{}", e.site_id, e.user_id.as_deref().unwrap_or(""));
                    assert_eq!(
                        *parts.entry(visitor).or_insert(i),
                        i,
                        "one visitor, one part"
                    );
                }
            }
            parts
        };
        let (a, b) = (part_of(&first), part_of(&second));
        let shared: Vec<_> = a.keys().filter(|v| b.contains_key(*v)).collect();
        assert_eq!(shared.len(), 200);
        assert!(
            shared.iter().all(|v| a[*v] == b[*v]),
            "a shared visitor changed parts"
        );
        let sizes = (0..3).map(|i| a.values().filter(|p| **p == i).count());
        assert!(
            sizes.clone().all(|n| n > 50),
            "parts: {:?}",
            sizes.collect::<Vec<_>>()
        );
    }

    #[test]
    fn visitors_are_grouped_by_site_type_and_day_each_once() {
        let body = br#"{"events":[
            {"site_id":"s","event_type":"page_view","timestamp":"2025-11-14T10:00:05Z","user_id":"u"},
            {"site_id":"s","event_type":"page_view","timestamp":"2025-11-14T11:00:00Z","user_id":"u"},
            {"site_id":"s","event_type":"page_view","timestamp":"2025-11-14T12:00:00Z","user_id":"v"},
            {"site_id":"s","event_type":"page_view","timestamp":"2025-11-15T10:00:00Z","user_id":"u"},
            {"site_id":"t","event_type":"click","timestamp":"2025-11-14T10:00:00Z","user_id":"u"},
            {"site_id":"t","event_type":"click","timestamp":"2025-11-14T10:00:00Z"}
        ]}"#;
        let events = parse_event_body(body, Utc::now(), None).expect("valid");
        let visitors = VisitorGroups::of(&Rollups::of(events.iter().map(|e| (e, None))));
        let hours: Vec<_> = visitors
            .hours
            .iter()
            .map(|h| (h.site_id.as_str(), h.hour % 24, h.users.clone()))
            .collect();
        assert_eq!(
            hours,
            vec![
                ("s", 10, vec!["u".to_string()]),
                ("s", 11, vec!["u".to_string()]),
                ("s", 12, vec!["v".to_string()]),
                ("s", 10, vec!["u".to_string()]),
                ("t", 10, vec!["u".to_string()]),
            ]
        );
        let groups: Vec<_> = visitors
            .days
            .into_iter()
            .map(|v| (v.site_id, v.event_type, v.day.to_string(), v.users))
            .collect();
        let group = |site: &str, kind: &str, day: &str, users: &[&str]| {
            (
                site.to_string(),
                kind.to_string(),
                day.to_string(),
                users.iter().map(|u| (*u).to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            groups,
            vec![
                group("s", "page_view", "2025-11-14", &["u", "v"]),
                group("s", "page_view", "2025-11-15", &["u"]),
                group("t", "click", "2025-11-14", &["u"]),
            ]
        );
    }
}
