-- Sites, the fields derived from browser events, and path rollups by hour.
--
-- Sites are written through ingest-api into a Redis mirror and queued; the batch-worker
-- stores them here (the durable record) and restores the mirror from here when Redis lost
-- it. `version` orders concurrent changes: a change is applied only over an older one, so
-- workers storing changes out of order end on the newest. A deleted site keeps its row
-- (deleted_at) so that an older change arriving late cannot bring it back.
CREATE TABLE sites (
    site_id    text        PRIMARY KEY,
    domains    text[]      NOT NULL DEFAULT '{}',
    timezone   text        NOT NULL DEFAULT 'UTC',
    public     boolean     NOT NULL DEFAULT false,
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz
);

-- What the server derives from a browser event (never the client address or the
-- User-Agent string themselves).
ALTER TABLE events
    ADD COLUMN hostname        text,
    ADD COLUMN referrer        text,
    ADD COLUMN referrer_source text,
    ADD COLUMN utm_source      text,
    ADD COLUMN utm_medium      text,
    ADD COLUMN utm_campaign    text,
    ADD COLUMN utm_term        text,
    ADD COLUMN utm_content     text,
    ADD COLUMN browser         text,
    ADD COLUMN os              text,
    ADD COLUMN device          text,
    ADD COLUMN country         text;

-- Filtered stats of a bounded range read a site's raw events by time.
CREATE INDEX events_site_ts ON events (site_id, ts);

-- Views per site, type, UTC hour and path. Hours (not UTC days) so that a site's local
-- days, in whatever time zone it has now, are sums of whole rows: changing a site's zone
-- applies to its past without rewriting anything. Live traffic fills one hour per path at
-- a time, so a batch upserts as many rows as it did per day.
CREATE TABLE rollup_hourly_paths (
    site_id    text        NOT NULL,
    event_type text        NOT NULL,
    bucket     timestamptz NOT NULL,
    path_key   uuid        NOT NULL,
    path       text        NOT NULL,
    views      bigint      NOT NULL,
    PRIMARY KEY (site_id, event_type, bucket, path_key)
) WITH (fillfactor = 70);

-- Hours from the raw events still stored; what retention already expired stays at the
-- first hour of its UTC day (the best the daily rows can say).
INSERT INTO rollup_hourly_paths (site_id, event_type, bucket, path_key, path, views)
SELECT e.site_id, e.event_type, date_trunc('hour', e.ts), d.path_key, d.path, count(*)
FROM events e
JOIN rollup_daily_paths d
  ON d.site_id = e.site_id AND d.event_type = e.event_type
 AND d.day = (e.ts AT TIME ZONE 'UTC')::date AND d.path = e.path
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO rollup_hourly_paths AS r (site_id, event_type, bucket, path_key, path, views)
SELECT d.site_id, d.event_type, d.day::timestamp AT TIME ZONE 'UTC', d.path_key, d.path,
       d.views - coalesce(h.views, 0)
FROM rollup_daily_paths d
LEFT JOIN (
    SELECT site_id, event_type, (bucket AT TIME ZONE 'UTC')::date AS day, path_key,
           sum(views) AS views
    FROM rollup_hourly_paths GROUP BY 1, 2, 3, 4
) h ON h.site_id = d.site_id AND h.event_type = d.event_type AND h.day = d.day
   AND h.path_key = d.path_key
WHERE d.views > coalesce(h.views, 0)
ON CONFLICT (site_id, event_type, bucket, path_key) DO UPDATE SET views = r.views + EXCLUDED.views;

DROP TABLE rollup_daily_paths;
