-- Visits, kept by the batch-worker in the transaction that inserts the
-- events (see crates/batch-worker/src/events/visits).
--
-- A visit is one visitor's events (`events.user_id`, the visitor id) on one site with no
-- gap of 30 minutes or more between consecutive events. Events arriving late or out of
-- order are merged into the visits they touch, so the stored visits are always exactly
-- the ones a gaps-and-islands pass over the raw events would give. Writers of the same
-- visitor serialise on a row of visit_locks. Retention leaves visits in place when it expires
-- raw events (they are the rollup visit metrics are read from).
--
-- Upgrading: the backfill below covers the events stored when it runs; stop the workers
-- of the previous version first (`make up` restarts them all), or events they commit
-- after it stay out of visits.
CREATE TABLE visits (
    site_id         text        NOT NULL,
    visitor         text        NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz NOT NULL,
    -- The first event (by time, then event id): the visit's source, device and so on.
    first_event_id  uuid        NOT NULL,
    events          integer     NOT NULL,
    pageviews       integer     NOT NULL,
    -- First and last page view with a path (by time, then event id).
    entry_at        timestamptz,
    entry_event_id  uuid,
    entry_page      text,
    exit_at         timestamptz,
    exit_event_id   uuid,
    exit_page       text,
    hostname        text,
    referrer        text,
    source          text,
    utm_source      text,
    utm_medium      text,
    utm_campaign    text,
    utm_term        text,
    utm_content     text,
    device          text,
    browser         text,
    os              text,
    country         text,
    PRIMARY KEY (site_id, visitor, started_at)
) WITH (fillfactor = 80);  -- room for a visit's next event to update it in place (HOT)

-- Writers of the same visitor serialise on a row here (see the worker's visits store): a
-- transaction inserts one row per visitor it will touch, in one order, and deletes them
-- before it commits, so a second writer of the same visitor waits on the unique key
-- until the first has committed. Row locks, not advisory locks: those fill PostgreSQL's
-- shared lock table (6,400 entries by default) when a batch holds thousands of visitors.
-- Unlogged: nothing here outlives a transaction.
CREATE UNLOGGED TABLE visit_locks (
    site_id text NOT NULL,
    visitor text NOT NULL,
    PRIMARY KEY (site_id, visitor)
);

-- The query API reads a site's visits by time. A block-range index: visits arrive in
-- time order, so it is tiny, and it never tempts the planner away from the primary key
-- for the worker's per-visitor lookups (a btree on (site_id, started_at) did, on fresh
-- statistics, and made each lookup scan the whole site's hour: 1,000 times slower).
CREATE INDEX visits_started ON visits USING brin (started_at) WITH (autosummarize = on);

-- Visits of the events stored before this migration, by the same rule (the worker keeps
-- them from here on).
INSERT INTO visits
SELECT site_id, user_id, min(ts), max(ts),
       (array_agg(event_id ORDER BY ts, event_id))[1],
       count(*), count(*) FILTER (WHERE event_type = 'page_view'),
       (array_agg(ts ORDER BY ts, event_id) FILTER (WHERE event_type = 'page_view' AND path IS NOT NULL))[1],
       (array_agg(event_id ORDER BY ts, event_id) FILTER (WHERE event_type = 'page_view' AND path IS NOT NULL))[1],
       (array_agg(path ORDER BY ts, event_id) FILTER (WHERE event_type = 'page_view' AND path IS NOT NULL))[1],
       (array_agg(ts ORDER BY ts DESC, event_id DESC) FILTER (WHERE event_type = 'page_view' AND path IS NOT NULL))[1],
       (array_agg(event_id ORDER BY ts DESC, event_id DESC) FILTER (WHERE event_type = 'page_view' AND path IS NOT NULL))[1],
       (array_agg(path ORDER BY ts DESC, event_id DESC) FILTER (WHERE event_type = 'page_view' AND path IS NOT NULL))[1],
       (array_agg(hostname ORDER BY ts, event_id))[1],
       (array_agg(referrer ORDER BY ts, event_id))[1],
       (array_agg(referrer_source ORDER BY ts, event_id))[1],
       (array_agg(utm_source ORDER BY ts, event_id))[1],
       (array_agg(utm_medium ORDER BY ts, event_id))[1],
       (array_agg(utm_campaign ORDER BY ts, event_id))[1],
       (array_agg(utm_term ORDER BY ts, event_id))[1],
       (array_agg(utm_content ORDER BY ts, event_id))[1],
       (array_agg(device ORDER BY ts, event_id))[1],
       (array_agg(browser ORDER BY ts, event_id))[1],
       (array_agg(os ORDER BY ts, event_id))[1],
       (array_agg(country ORDER BY ts, event_id))[1]
FROM (
    SELECT *, sum(starts) OVER (PARTITION BY site_id, user_id ORDER BY ts, event_id) AS visit_no
    FROM (
        SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY site_id, user_id ORDER BY ts, event_id)
                            < interval '30 minutes' THEN 0 ELSE 1 END AS starts
        FROM events WHERE user_id IS NOT NULL
    ) marked
) numbered
GROUP BY site_id, user_id, visit_no;

