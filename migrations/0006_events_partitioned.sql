-- Raw events partitioned by month of the event's own time (`ts`), so retention drops whole
-- partitions instead of deleting rows.
--
-- The key becomes (event_id, site_id, ts): a partitioned table's unique keys must include
-- the partition column. A client's retry carries the same event id and timestamp, so it
-- lands in the same partition and stays once-only.
--
-- The batch-worker creates each month's partition (tally_event_partition) before the
-- first batch that needs it, in a statement of its own. Months outside its horizon (a
-- decade back, a month ahead: timestamps a client made up) go to events_default, so no
-- client can make the worker create thousands of tables.
ALTER TABLE events RENAME TO events_before_partitioning;
ALTER TABLE events_before_partitioning RENAME CONSTRAINT events_pkey TO events_before_partitioning_pkey;
ALTER INDEX events_site_ts RENAME TO events_before_partitioning_site_ts;

CREATE TABLE events (LIKE events_before_partitioning INCLUDING DEFAULTS) PARTITION BY RANGE (ts);
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (event_id, site_id, ts);
CREATE INDEX events_site_ts ON events (site_id, ts);
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- Creates the partition of the month holding `day` unless it exists. Where events_default
-- already holds events of that month (a partition that could not be made in time), the
-- month stays in events_default, with a warning, rather than failing the batch.
CREATE FUNCTION tally_event_partition(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', day)::date;
    name text := 'events_' || to_char(first, 'YYYYMM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
        name,
        first::timestamp AT TIME ZONE 'UTC',
        (first + interval '1 month')::timestamp AT TIME ZONE 'UTC'
    );
EXCEPTION
    WHEN duplicate_table THEN NULL;
    WHEN check_violation THEN
        RAISE WARNING 'events of % stay in events_default, which already holds some', to_char(first, 'YYYY-MM');
END
$$;

SELECT tally_event_partition(m::date)
FROM (SELECT DISTINCT date_trunc('month', ts) AS m FROM events_before_partitioning
      UNION SELECT date_trunc('month', now())) AS months
WHERE m >= now() - interval '120 months' AND m <= now() + interval '1 month';
INSERT INTO events SELECT * FROM events_before_partitioning;
DROP TABLE events_before_partitioning;
