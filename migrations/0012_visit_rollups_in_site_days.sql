-- Visit rollups by the site's own days (see crates/batch-worker/src/events/visits/rollup.rs).
--
-- Migration 0011 kept each dimension's cells per UTC hour and per UTC day. A dashboard
-- range is whole days of the site's calendar, which for a site outside UTC are not UTC
-- days: its breakdowns merged a day row per UTC day plus the hour rows of both edges, and
-- its chart by day merged 24 hour rows per day. Writing the hour cells of every
-- dimension also doubled what the drain upserts (nine in ten of its cells were page
-- cells, hour and day).
--
-- From here on: day rows (span_hours 24) are days of the site's time zone, each keyed by
-- its date at UTC midnight (a calendar date, not an instant: DST days of 23 or 25 hours
-- are one row each); hour rows (span_hours 1, UTC hours) are kept for the totals only
-- (charts by hour). Breakdowns by hour read `visits`.
--
-- visit_rollup_zones holds the zone each site's day rows are in. A worker takes a share
-- lock on its sites' rows (inserting a missing one as UTC) before it writes their cells;
-- the batch-worker storing a site whose time zone changed updates the row, which waits
-- for those writers and holds back new ones, and rebuilds the site's day rows in the new
-- zone in the same transaction.
CREATE TABLE visit_rollup_zones (
    site_id  text PRIMARY KEY,
    timezone text NOT NULL
);

-- The days of a site's rollups, from `visits`: every kept dimension's day rows of one site
-- (every site: NULL) in the zone of visit_rollup_zones (UTC without a row).
CREATE FUNCTION tally_visit_day_rollups(p_site text)
RETURNS SETOF visit_rollups
LANGUAGE sql STABLE AS $$
SELECT v.site_id, d.code::smallint, 24::smallint,
       ((v.started_at AT TIME ZONE coalesce(z.timezone, 'UTC'))::date)::timestamp AT TIME ZONE 'UTC',
       coalesce(md5(d.value)::uuid, '00000000-0000-0000-0000-000000000000'), d.value,
       count(*),
       -- Entry and exit pages count visits only (VisitDimension::rollup_counts_visits_only).
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE sum(v.pageviews) END,
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE sum(v.events) END,
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE count(*) FILTER (WHERE v.pageviews = 1) END,
       CASE WHEN d.code IN (1, 2) THEN 0
            ELSE sum((extract(epoch FROM v.ended_at - v.started_at) * 1000000)::bigint) END,
       CASE WHEN d.code NOT IN (1, 2) THEN hll_add_agg(hll_hash_text(v.visitor), 14, 5, -1, 1) END
FROM visits v
LEFT JOIN visit_rollup_zones z ON z.site_id = v.site_id
CROSS JOIN LATERAL (VALUES
    (0, NULL), (1, v.entry_page), (2, v.exit_page), (3, v.source),
    (10, v.device), (11, v.browser), (12, v.os), (13, v.country)
) AS d(code, value)
WHERE p_site IS NULL OR v.site_id = p_site
GROUP BY v.site_id, d.code, 4, d.value;
$$;

-- Recomputes the rollups of one site (every site: NULL) from `visits`, in the zone of its
-- row of `sites` (UTC without one): for this migration, and for an operator or a test that
-- wrote `visits` or `sites` by hand. Run it while no worker writes the site's events (a
-- worker's changes in between would be counted twice or lost).
CREATE OR REPLACE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
INSERT INTO visit_rollup_zones AS z (site_id, timezone)
SELECT site_id, timezone FROM sites WHERE p_site IS NULL OR site_id = p_site
ON CONFLICT (site_id) DO UPDATE SET timezone = EXCLUDED.timezone;
DELETE FROM visit_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_stale WHERE p_site IS NULL OR site_id = p_site;
INSERT INTO visit_rollups
SELECT v.site_id, 0, 1, date_trunc('hour', v.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       '00000000-0000-0000-0000-000000000000', NULL,
       count(*), sum(v.pageviews), sum(v.events), count(*) FILTER (WHERE v.pageviews = 1),
       sum((extract(epoch FROM v.ended_at - v.started_at) * 1000000)::bigint),
       hll_add_agg(hll_hash_text(v.visitor), 14, 5, -1, 1)
FROM visits v
WHERE p_site IS NULL OR v.site_id = p_site
GROUP BY 1, 4;
INSERT INTO visit_rollups SELECT * FROM tally_visit_day_rollups(p_site);
$$;

-- Rebuilds the day rows of a site whose zone changed (the caller holds its row of
-- visit_rollup_zones, so no worker writes them meanwhile).
CREATE FUNCTION tally_rebuild_visit_day_rollups(p_site text) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollups WHERE site_id = p_site AND span_hours = 24;
DELETE FROM visit_rollup_stale WHERE site_id = p_site AND span_hours = 24;
INSERT INTO visit_rollups SELECT * FROM tally_visit_day_rollups(p_site);
$$;

-- The rows of migration 0011, again in the new shape and in every site's zone (as with
-- migration 0008, stop the previous version's workers first).
SELECT tally_rebuild_visit_rollups();
