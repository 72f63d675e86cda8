-- Visit rollups (see crates/batch-worker/src/events/visits/rollup.rs): per site, visit
-- dimension, value and bucket (each UTC hour, and each UTC day), the sums of the visits
-- that started in the bucket, and their visitors as a mergeable sketch. The worker keeps
-- them in the transaction that writes the visits, as the difference between the visits
-- it replaced and those it wrote, so they always equal an aggregation of `visits`
-- (which stays the exact source they are checked against). A 90-day breakdown then
-- merges about 90 day rows per value, plus the hours of the range's two partial UTC days.
--
-- Visitors: `hll` (Debian's postgresql-15-hll; the extension Citus documents for these
-- rollups), log2m 14: a set of distinct visitors is kept exactly up to 1,280 of them
-- (the "explicit" representation), then as registers with a relative standard error of
-- 1.04/sqrt(16384) = 0.8%. Sketches only grow, so a visitor whose visit left a cell (a late
-- event moved the visit's start into another hour or changed its first event) has the cell's
-- sketch recomputed from `visits` in the same transaction. Exit pages change with nearly
-- every page view, so their sketch stays empty: visitors by exit page read `visits`.
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
    visitors    hll(14, 5, -1, 1) NOT NULL,
    PRIMARY KEY (site_id, dimension, span_hours, bucket, value_key)
) WITH (fillfactor = 80);

-- Recomputes the rollups of one site (every site: NULL) from `visits`: for the backfill
-- below, and for an operator or a test that wrote `visits` by hand. Run it while no worker
-- writes the site's events (a worker's changes in between would be counted twice or lost).
CREATE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollups WHERE p_site IS NULL OR site_id = p_site;
INSERT INTO visit_rollups
SELECT v.site_id, d.code, s.span,
       CASE s.span WHEN 1 THEN date_trunc('hour', v.started_at AT TIME ZONE 'UTC')
                   ELSE date_trunc('day', v.started_at AT TIME ZONE 'UTC') END AT TIME ZONE 'UTC',
       coalesce(md5(d.value)::uuid, '00000000-0000-0000-0000-000000000000'), d.value,
       count(*), sum(v.pageviews), sum(v.events), count(*) FILTER (WHERE v.pageviews = 1),
       sum((extract(epoch FROM v.ended_at - v.started_at) * 1000000)::bigint),
       CASE WHEN d.code = 2 THEN hll_empty(14, 5, -1, 1)
            ELSE hll_add_agg(hll_hash_text(v.visitor), 14, 5, -1, 1) END
FROM visits v
CROSS JOIN (VALUES (1), (24)) AS s(span)
CROSS JOIN LATERAL (VALUES
    (0, NULL), (1, v.entry_page), (2, v.exit_page), (3, v.source), (4, v.referrer),
    (5, v.utm_source), (6, v.utm_medium), (7, v.utm_campaign), (8, v.utm_term),
    (9, v.utm_content), (10, v.device), (11, v.browser), (12, v.os), (13, v.country)
) AS d(code, value)
WHERE p_site IS NULL OR v.site_id = p_site
GROUP BY 1, 2, 3, 4, 5, 6;
$$;

-- The rollups of the visits stored before this migration (the worker keeps them from here
-- on; as with migration 0008, stop the previous version's workers first).
SELECT tally_rebuild_visit_rollups();
