-- Visit rollups (see crates/batch-worker/src/events/visits/rollup.rs): per site, visit
-- dimension the dashboard breaks down by (none, entry and exit page, source, device,
-- browser, OS, country: VisitDimension::has_rollup), value and bucket (each UTC hour, and each UTC day), the sums of the visits
-- that started in the bucket, and their visitors as a mergeable sketch. The worker keeps
-- them in the transaction that writes the visits, as the difference between the visits
-- it replaced and those it wrote, so they always equal an aggregation of `visits`
-- (which stays the exact source they are checked against). A 90-day breakdown then
-- merges about 90 day rows per value, plus the hours of the range's two partial UTC days.
--
-- Visitors: `hll` (Debian's postgresql-15-hll; the extension Citus documents for these
-- rollups), log2m 14: a set of distinct visitors is kept exactly up to 1,280 of them
-- (the "explicit" representation), then as registers with a relative standard error of
-- 1.04/sqrt(16384) = 0.8%. Sketches only grow, so a cell a visitor's visit left (a late
-- event moved the visit's start into another hour or changed its first event) is
-- recorded in visit_rollup_stale and its sketch recomputed. Entry and exit pages keep no
-- sketch (VisitDimension::has_visitor_sketch): visitors by page read `visits`.
CREATE EXTENSION IF NOT EXISTS hll;

CREATE TABLE visit_rollups (
    site_id     text        NOT NULL,
    -- domain::visits::VisitDimension::code (0: every visit, the totals).
    dimension   smallint    NOT NULL,
    -- 1: a UTC hour; 24: a UTC day.
    span_hours  smallint    NOT NULL,
    bucket      timestamptz NOT NULL,
    -- md5 of the value as a uuid (values can be longer than a btree entry may be); the
    -- nil uuid for visits without a value.
    value_key   uuid        NOT NULL,
    value       text,
    visits      bigint      NOT NULL,
    pageviews   bigint      NOT NULL,
    events      bigint      NOT NULL,
    bounces     bigint      NOT NULL,
    duration_us bigint      NOT NULL,
    -- NULL: no visitor yet (and always for exit pages); kept NULL rather than an empty
    -- sketch because every hll operation unpacks its operands into 128 KB of memory.
    visitors    hll(14, 5, -1, 1),
    PRIMARY KEY (site_id, dimension, span_hours, bucket, value_key)
) WITH (fillfactor = 80);

-- Cells whose sketch may hold a visitor no longer in them (a late event moved a visit's
-- start or changed its first event): the worker that moved the visit records the cell in
-- its transaction, and every worker's repair task recomputes recorded cells a moment
-- later (hours from `visits`, one scan per site and hour; days from their hours), many
-- moves of one cell in one recomputation. Until then the cell counts the moved visitor
-- in both places.
CREATE TABLE visit_rollup_stale (
    site_id     text        NOT NULL,
    dimension   smallint    NOT NULL,
    span_hours  smallint    NOT NULL,
    bucket      timestamptz NOT NULL,
    value_key   uuid        NOT NULL,
    value       text,
    PRIMARY KEY (site_id, dimension, span_hours, bucket, value_key)
);

-- Recomputes the rollups of one site (every site: NULL) from `visits`: for the backfill
-- below, and for an operator or a test that wrote `visits` by hand. Run it while no worker
-- writes the site's events (a worker's changes in between would be counted twice or lost).
CREATE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_stale WHERE p_site IS NULL OR site_id = p_site;
INSERT INTO visit_rollups
SELECT v.site_id, d.code, s.span,
       CASE s.span WHEN 1 THEN date_trunc('hour', v.started_at AT TIME ZONE 'UTC')
                   ELSE date_trunc('day', v.started_at AT TIME ZONE 'UTC') END AT TIME ZONE 'UTC',
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
CROSS JOIN (VALUES (1), (24)) AS s(span)
CROSS JOIN LATERAL (VALUES
    (0, NULL), (1, v.entry_page), (2, v.exit_page), (3, v.source),
    (10, v.device), (11, v.browser), (12, v.os), (13, v.country)
) AS d(code, value)
WHERE p_site IS NULL OR v.site_id = p_site
GROUP BY 1, 2, 3, 4, 5, 6;
$$;

-- The rollups of the visits stored before this migration (the worker keeps them from here
-- on; as with migration 0008, stop the previous version's workers first).
SELECT tally_rebuild_visit_rollups();
