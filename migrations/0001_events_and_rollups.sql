-- Raw analytics events and the rollups stats are served from.
--
-- events is the durable, append-only record (the primary key makes replays idempotent);
-- stats never scan it. The batch-worker updates the rollups in the same statement that
-- inserts the events, counting only rows that were really inserted.

CREATE TABLE events (
    event_id    uuid PRIMARY KEY,
    site_id     varchar(255)  NOT NULL,
    event_type  varchar(100)  NOT NULL,
    ts          timestamptz   NOT NULL,
    path        varchar(1000),
    user_id     varchar(255),
    props       jsonb,
    received_at timestamptz   NOT NULL,
    stored_at   timestamptz   NOT NULL DEFAULT now()
);

-- Counters are updated in place batch after batch: free space on each page lets those
-- updates be HOT (no index write), hence the fillfactors.

-- Events per site, type and minute / hour (time series, totals).
CREATE TABLE rollup_minutely (
    site_id    text        NOT NULL,
    event_type text        NOT NULL,
    bucket     timestamptz NOT NULL,
    events     bigint      NOT NULL,
    PRIMARY KEY (site_id, event_type, bucket)
) WITH (fillfactor = 70);

CREATE TABLE rollup_hourly (
    site_id    text        NOT NULL,
    event_type text        NOT NULL,
    bucket     timestamptz NOT NULL,
    events     bigint      NOT NULL,
    PRIMARY KEY (site_id, event_type, bucket)
) WITH (fillfactor = 70);

-- Events per site, type, UTC day and path (top paths). Paths may be up to 1000 characters,
-- more than a btree entry holds, so the key is path_key, a UUIDv5 of the path computed by
-- the worker (a plain column: an expression index costs a hash per lookup).
CREATE TABLE rollup_daily_paths (
    site_id    text   NOT NULL,
    event_type text   NOT NULL,
    day        date   NOT NULL,
    path_key   uuid   NOT NULL,
    path       text   NOT NULL,
    views      bigint NOT NULL,
    PRIMARY KEY (site_id, event_type, day, path_key)
) WITH (fillfactor = 70);

-- Distinct visitors per site, type and UTC day; `hours` has bit h set when the visitor was
-- seen in hour h (UTC) of that day, so hourly visitor counts need no second table.
CREATE TABLE daily_visitors (
    site_id    text    NOT NULL,
    event_type text    NOT NULL,
    day        date    NOT NULL,
    user_id    text    NOT NULL,
    hours      integer NOT NULL,
    PRIMARY KEY (site_id, event_type, day, user_id)
);
