-- Page views per path and day of the site's time zone (see
-- crates/batch-worker/src/events/rollups.rs): the dashboard's top pages over 90 days
-- merged some 2,200 hour rows per path from rollup_hourly_paths (100-150 ms for a site of
-- 500 pages); a day row per path makes it 91.
--
-- A day is the site's local date of each UTC hour's midpoint, the rule the query API's
-- time labels already use for hour rows: so a site's day rows are exactly sums of its hour
-- rows, and a change of its zone rebuilds them from those (with the visit rollups' days,
-- holding the site's visit_rollup_zones row, see migration 0012). Hour rows stay: charts by
-- hour, /v1/stats and the time series read them.
CREATE TABLE page_day_rollups (
    site_id    text   NOT NULL,
    event_type text   NOT NULL,
    day        date   NOT NULL,
    path_key   uuid   NOT NULL,
    path       text   NOT NULL,
    views      bigint NOT NULL,
    PRIMARY KEY (site_id, event_type, day, path_key)
) WITH (fillfactor = 70);

-- A site's (every site's: NULL) day rows from its hour rows, in the zone of its
-- visit_rollup_zones row (UTC without one).
CREATE FUNCTION tally_rebuild_page_day_rollups(p_site text) RETURNS void
LANGUAGE sql AS $$
DELETE FROM page_day_rollups WHERE p_site IS NULL OR site_id = p_site;
INSERT INTO page_day_rollups (site_id, event_type, day, path_key, path, views)
SELECT h.site_id, h.event_type,
       ((h.bucket + interval '30 minutes') AT TIME ZONE coalesce(z.timezone, 'UTC'))::date,
       h.path_key, min(h.path), sum(h.views)
FROM rollup_hourly_paths h
LEFT JOIN visit_rollup_zones z ON z.site_id = h.site_id
WHERE p_site IS NULL OR h.site_id = p_site
GROUP BY 1, 2, 3, 4;
$$;

-- A zone change rebuilds the page days with the visit days (the caller holds the site's
-- visit_rollup_zones row, which every writer of the site's rollups share-locks).
CREATE OR REPLACE FUNCTION tally_rebuild_visit_day_rollups(p_site text) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollups WHERE site_id = p_site AND span_hours = 24;
DELETE FROM visit_rollup_stale WHERE site_id = p_site AND span_hours = 24;
INSERT INTO visit_rollups SELECT * FROM tally_visit_day_rollups(p_site);
SELECT tally_rebuild_page_day_rollups(p_site);
$$;

-- Sites whose events came before their zone rows (none since migration 0012 for a worker
-- of this version; a site seen first now gets UTC, as a worker would give it).
INSERT INTO visit_rollup_zones (site_id, timezone, goals)
SELECT DISTINCT h.site_id, coalesce(s.timezone, 'UTC'), tally_goal_matchers(s.goals)
FROM rollup_hourly_paths h LEFT JOIN sites s ON s.site_id = h.site_id
ON CONFLICT (site_id) DO NOTHING;

SELECT tally_rebuild_page_day_rollups(NULL);
