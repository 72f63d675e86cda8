//! The visits of a batch's new events, written in the events' transaction: lock the
//! batch's visitors, read the stored visits within the gap of the new events, merge, and
//! write the merged visits (deleting those merged away) in one statement.
//!
//! Writers of the same visitor serialise on a row lock taken before the events are
//! inserted (in one sorted order, so two workers cannot deadlock); the read that follows
//! sees what the previous holder committed. Row locks live in the rows, so a batch may
//! lock as many visitors as it holds (advisory locks would fill the shared lock table).

use super::rollup::RollupChanges;
use super::rollup_store::write_rollups;
use super::settings::SiteSettings;
use super::{Visit, VisitKey, merge};
use crate::lane::StoreError;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Transaction;
use domain::tokio_postgres::Row;
use domain::tokio_postgres::types::ToSql;
use domain::visits::VISIT_GAP;
use rustc_hash::FxHashSet as HashSet;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Takes each visitor's row of `visit_locks`, in one order (so two writers cannot
/// deadlock): a writer of the same visitor waits here, on the key, until this transaction
/// ends. [`UNLOCK_VISITORS`] deletes the rows again before the commit; a deleted row stays
/// locked until then.
const LOCK_VISITORS: &str = r"
INSERT INTO visit_locks AS l (site_id, visitor)
SELECT s, v FROM unnest($1::text[], $2::text[]) AS t(s, v) ORDER BY s, v
ON CONFLICT (site_id, visitor) DO UPDATE SET site_id = EXCLUDED.site_id
";

const UNLOCK_VISITORS: &str = r"
DELETE FROM visit_locks l USING unnest($1::text[], $2::text[]) AS t(s, v)
WHERE l.site_id = t.s AND l.visitor = t.v
";

/// Stored visits within the gap of `[lo, hi]` (lo and hi already widened by the gap):
/// the last one starting at or before `lo` if it ends after it, and those starting
/// inside. Both are bounded index ranges, however many visits the visitor has.
const FETCH_VISITS: &str = r"
SELECT v.site_id, v.visitor, v.started_at, v.ended_at, v.first_event_id, v.events, v.pageviews,
       v.entry_at, v.entry_event_id, v.entry_page, v.exit_at, v.exit_event_id, v.exit_page,
       v.hostname, v.referrer, v.source, v.utm_source, v.utm_medium, v.utm_campaign,
       v.utm_term, v.utm_content, v.device, v.browser, v.os, v.country, v.goals, v.steps
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS q(site_id, visitor, lo, hi)
CROSS JOIN LATERAL (
    (SELECT * FROM visits b
     WHERE b.site_id = q.site_id AND b.visitor = q.visitor AND b.started_at <= q.lo
     ORDER BY b.started_at DESC LIMIT 1)
    UNION ALL
    (SELECT * FROM visits i
     WHERE i.site_id = q.site_id AND i.visitor = q.visitor AND i.started_at > q.lo AND i.started_at < q.hi)
) AS v
WHERE v.ended_at > q.lo
";

const WRITE_VISITS: &str = r"
WITH gone AS (
    DELETE FROM visits v
    USING unnest($1::text[], $2::text[], $3::timestamptz[]) AS d(site_id, visitor, started_at)
    WHERE v.site_id = d.site_id AND v.visitor = d.visitor AND v.started_at = d.started_at
), written AS (
    INSERT INTO visits AS v
    SELECT * FROM unnest($4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::uuid[],
                         $9::int[], $10::int[], $11::timestamptz[], $12::uuid[], $13::text[],
                         $14::timestamptz[], $15::uuid[], $16::text[], $17::text[], $18::text[],
                         $19::text[], $20::text[], $21::text[], $22::text[], $23::text[],
                         $24::text[], $25::text[], $26::text[], $27::text[], $28::text[],
                         $29::jsonb[], $30::jsonb[])
    ON CONFLICT (site_id, visitor, started_at) DO UPDATE SET
        ended_at = EXCLUDED.ended_at, first_event_id = EXCLUDED.first_event_id,
        events = EXCLUDED.events, pageviews = EXCLUDED.pageviews,
        entry_at = EXCLUDED.entry_at, entry_event_id = EXCLUDED.entry_event_id,
        entry_page = EXCLUDED.entry_page, exit_at = EXCLUDED.exit_at,
        exit_event_id = EXCLUDED.exit_event_id, exit_page = EXCLUDED.exit_page,
        hostname = EXCLUDED.hostname, referrer = EXCLUDED.referrer, source = EXCLUDED.source,
        utm_source = EXCLUDED.utm_source, utm_medium = EXCLUDED.utm_medium,
        utm_campaign = EXCLUDED.utm_campaign, utm_term = EXCLUDED.utm_term,
        utm_content = EXCLUDED.utm_content, device = EXCLUDED.device,
        browser = EXCLUDED.browser, os = EXCLUDED.os, country = EXCLUDED.country,
        goals = EXCLUDED.goals, steps = EXCLUDED.steps
)
SELECT 1
";

/// Locks the visitors `sites[i]`/`visitors[i]` (distinct pairs) until the transaction
/// ends.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn lock_visitors(
    tx: &Transaction<'_>,
    sites: &[&str],
    visitors: &[&str],
) -> Result<(), StoreError> {
    run_on_visitors(tx, LOCK_VISITORS, sites, visitors).await
}

/// Deletes the lock rows of [`lock_visitors`] (they stay locked until the commit).
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn unlock_visitors(
    tx: &Transaction<'_>,
    sites: &[&str],
    visitors: &[&str],
) -> Result<(), StoreError> {
    run_on_visitors(tx, UNLOCK_VISITORS, sites, visitors).await
}

async fn run_on_visitors(
    tx: &Transaction<'_>,
    statement: &str,
    sites: &[&str],
    visitors: &[&str],
) -> Result<(), StoreError> {
    if sites.is_empty() {
        return Ok(());
    }
    let prepared = tx
        .prepare_cached(statement)
        .await
        .map_err(StoreError::from_pg)?;
    tx.execute(&prepared, &[&sites, &visitors])
        .await
        .map_err(StoreError::from_pg)?;
    Ok(())
}

/// Merges `fresh` (one-event visits of newly inserted events) into the stored visits and
/// writes the result, and its rollups by `settings`. The visitors and the settings must
/// be locked.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn store_visits(
    tx: &Transaction<'_>,
    fresh: &[Visit],
    settings: &SiteSettings,
) -> Result<(), StoreError> {
    if fresh.is_empty() {
        return Ok(());
    }
    let mut per_visitor: BTreeMap<(String, String), Vec<Visit>> = BTreeMap::new();
    for v in fresh.iter().cloned() {
        per_visitor
            .entry((v.site_id.clone(), v.visitor.clone()))
            .or_default()
            .push(v);
    }
    let batch_visits: Vec<Visit> = per_visitor.into_values().flat_map(merge).collect();
    let stored = fetch_within_gap(tx, &batch_visits).await?;
    let mut per_visitor: BTreeMap<(String, String), Vec<Visit>> = BTreeMap::new();
    for v in batch_visits.into_iter().chain(stored.iter().cloned()) {
        per_visitor
            .entry((v.site_id.clone(), v.visitor.clone()))
            .or_default()
            .push(v);
    }
    let merged: Vec<Visit> = per_visitor.into_values().flat_map(merge).collect();
    let kept: HashSet<VisitKey> = merged.iter().map(Visit::key).collect();
    let gone: Vec<&Visit> = stored.iter().filter(|v| !kept.contains(&v.key())).collect();

    let mut args: Vec<Box<dyn ToSql + Sync + Send + '_>> = Vec::with_capacity(28);
    args.push(Box::new(
        gone.iter().map(|v| v.site_id.as_str()).collect::<Vec<_>>(),
    ));
    args.push(Box::new(
        gone.iter().map(|v| v.visitor.as_str()).collect::<Vec<_>>(),
    ));
    args.push(Box::new(
        gone.iter().map(|v| v.started_at).collect::<Vec<_>>(),
    ));
    visit_columns(&merged, &mut args);
    let write = tx
        .prepare_cached(WRITE_VISITS)
        .await
        .map_err(StoreError::from_pg)?;
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    tx.execute(&write, &params)
        .await
        .map_err(StoreError::from_pg)?;
    write_rollups(tx, &RollupChanges::of(&stored, &merged, settings)).await
}

/// The stored visits within the gap of any of `visits`, each once.
async fn fetch_within_gap(
    tx: &Transaction<'_>,
    visits: &[Visit],
) -> Result<Vec<Visit>, StoreError> {
    let sites: Vec<&str> = visits.iter().map(|v| v.site_id.as_str()).collect();
    let visitors: Vec<&str> = visits.iter().map(|v| v.visitor.as_str()).collect();
    let lo: Vec<DateTime<Utc>> = visits.iter().map(|v| v.started_at - VISIT_GAP).collect();
    let hi: Vec<DateTime<Utc>> = visits.iter().map(|v| v.ended_at + VISIT_GAP).collect();
    let fetch = tx
        .prepare_cached(FETCH_VISITS)
        .await
        .map_err(StoreError::from_pg)?;
    let rows = tx
        .query(&fetch, &[&sites, &visitors, &lo, &hi])
        .await
        .map_err(StoreError::from_pg)?;
    let mut seen: HashSet<VisitKey> =
        HashSet::with_capacity_and_hasher(rows.len(), Default::default());
    Ok(rows
        .iter()
        .map(visit_of_row)
        .filter(|v| seen.insert(v.key()))
        .collect())
}

fn visit_of_row(r: &Row) -> Visit {
    let mark = |at: usize| {
        Some(super::PageMark {
            at: r.get::<_, Option<DateTime<Utc>>>(at)?,
            event_id: r.get::<_, Option<Uuid>>(at + 1)?,
            page: r.get::<_, Option<String>>(at + 2)?,
        })
    };
    Visit {
        site_id: r.get(0),
        visitor: r.get(1),
        started_at: r.get(2),
        ended_at: r.get(3),
        first_event_id: r.get(4),
        events: r.get(5),
        pageviews: r.get(6),
        entry: mark(7),
        exit: mark(10),
        attrs: super::VisitAttrs {
            hostname: r.get(13),
            referrer: r.get(14),
            source: r.get(15),
            utm_source: r.get(16),
            utm_medium: r.get(17),
            utm_campaign: r.get(18),
            utm_term: r.get(19),
            utm_content: r.get(20),
            device: r.get(21),
            browser: r.get(22),
            os: r.get(23),
            country: r.get(24),
        },
        goals: r
            .get::<_, Option<serde_json::Value>>(25)
            .and_then(|g| serde_json::from_value(g).ok())
            .unwrap_or_default(),
        steps: r
            .get::<_, Option<serde_json::Value>>(26)
            .and_then(|s| serde_json::from_value::<Vec<super::Step>>(s).ok())
            .map(|mut steps| {
                // A recount (SQL) lists them in any order.
                steps.sort_unstable();
                steps
            })
            .unwrap_or_default(),
    }
}

/// The 27 columns of `visits`, in table order, as arrays.
fn visit_columns<'a>(visits: &[Visit], args: &mut Vec<Box<dyn ToSql + Sync + Send + 'a>>) {
    fn column<T: ToSql + Sync + Send + 'static>(
        visits: &[Visit],
        f: impl Fn(&Visit) -> T,
    ) -> Box<dyn ToSql + Sync + Send> {
        Box::new(visits.iter().map(f).collect::<Vec<T>>())
    }
    fn text(
        visits: &[Visit],
        f: impl Fn(&Visit) -> Option<&String>,
    ) -> Box<dyn ToSql + Sync + Send> {
        column(visits, |v| f(v).cloned())
    }
    args.push(column(visits, |v| v.site_id.clone()));
    args.push(column(visits, |v| v.visitor.clone()));
    args.push(column(visits, |v| v.started_at));
    args.push(column(visits, |v| v.ended_at));
    args.push(column(visits, |v| v.first_event_id));
    args.push(column(visits, |v| v.events));
    args.push(column(visits, |v| v.pageviews));
    fn entry(v: &Visit) -> Option<&super::PageMark> {
        v.entry.as_ref()
    }
    fn exit(v: &Visit) -> Option<&super::PageMark> {
        v.exit.as_ref()
    }
    for mark in [entry, exit] {
        args.push(column(visits, |v| mark(v).map(|m| m.at)));
        args.push(column(visits, |v| mark(v).map(|m| m.event_id)));
        args.push(column(visits, |v| mark(v).map(|m| m.page.clone())));
    }
    args.push(text(visits, |v| v.attrs.hostname.as_ref()));
    args.push(text(visits, |v| v.attrs.referrer.as_ref()));
    args.push(text(visits, |v| v.attrs.source.as_ref()));
    args.push(text(visits, |v| v.attrs.utm_source.as_ref()));
    args.push(text(visits, |v| v.attrs.utm_medium.as_ref()));
    args.push(text(visits, |v| v.attrs.utm_campaign.as_ref()));
    args.push(text(visits, |v| v.attrs.utm_term.as_ref()));
    args.push(text(visits, |v| v.attrs.utm_content.as_ref()));
    args.push(text(visits, |v| v.attrs.device.as_ref()));
    args.push(text(visits, |v| v.attrs.browser.as_ref()));
    args.push(text(visits, |v| v.attrs.os.as_ref()));
    args.push(text(visits, |v| v.attrs.country.as_ref()));
    args.push(column(visits, |v| {
        (!v.goals.is_empty()).then(|| serde_json::to_value(&v.goals).unwrap_or_default())
    }));
    args.push(column(visits, |v| {
        (!v.steps.is_empty()).then(|| serde_json::to_value(&v.steps).unwrap_or_default())
    }));
}
