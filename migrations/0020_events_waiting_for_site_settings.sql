-- Events of a site whose settings are being changed wait here instead of holding up
-- every other site's.
--
-- A change of a site's goals, funnels or zone takes the site's settings lock (migration
-- 0016) exclusive and recounts its stored visits and events under it: minutes for a site
-- of ten million events. Writers took the lock shared and waited; and since every batch
-- of a busy queue holds events of its busiest sites (and the lock covers a 64th of all
-- sites), the whole drain waited with them. Now a writer tries the locks first, without
-- waiting: the events of a site whose lock is taken (or asked for) exclusive go to
-- `events_waiting`, in the transaction that stores the rest of the batch, and a worker
-- stores them once the change is done (batch-worker `events::waiting`). Events are stored
-- once by their key wherever they come from, so storing one twice (a replayed batch, a
-- retried replay) changes nothing.

CREATE TABLE events_waiting (
    site_id text NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    -- The event as it was queued (domain::event::QueuedEvent's JSON).
    message text NOT NULL,
    waiting_since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, id)
);

-- The settings lock bucket of a site (migration 0016's), written once for every function
-- that takes or looks at the locks.
CREATE FUNCTION tally_site_settings_bucket(p_site text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT hashtext(p_site) & 63 $$;

-- As migration 0016's, with the bucket from tally_site_settings_bucket.
CREATE OR REPLACE FUNCTION tally_lock_site_settings(p_sites text[], p_exclusive boolean)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    settings_lock_class CONSTANT integer := 1936027252;
    bucket integer;
BEGIN
    FOR bucket IN
        SELECT DISTINCT tally_site_settings_bucket(s) FROM unnest(p_sites) AS t(s) ORDER BY 1
    LOOP
        IF p_exclusive THEN
            PERFORM pg_advisory_xact_lock(settings_lock_class, bucket);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(settings_lock_class, bucket);
        END IF;
    END LOOP;
END;
$$;

-- Takes the settings locks of `p_sites` shared where that needs no wait, in ascending
-- order, and returns the sites whose lock is held or asked for exclusive (a try fails
-- behind a waiting exclusive request too, so a change waiting for the lock is not starved).
CREATE FUNCTION tally_try_lock_site_settings(p_sites text[]) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    settings_lock_class CONSTANT integer := 1936027252;
    bucket integer;
    busy integer[] := '{}';
BEGIN
    FOR bucket IN
        SELECT DISTINCT tally_site_settings_bucket(s) FROM unnest(p_sites) AS t(s) ORDER BY 1
    LOOP
        IF NOT pg_try_advisory_xact_lock_shared(settings_lock_class, bucket) THEN
            busy := busy || bucket;
        END IF;
    END LOOP;
    IF cardinality(busy) = 0 THEN
        RETURN '{}';
    END IF;
    RETURN ARRAY(SELECT s FROM unnest(p_sites) AS t(s)
                 WHERE tally_site_settings_bucket(s) = ANY(busy));
END;
$$;

-- Whether a change holds (or waits for) the settings lock of `p_site`: its waiting
-- events would wait again. pg_locks lists every database's locks; advisory locks are
-- per database.
CREATE FUNCTION tally_site_settings_changing(p_site text) RETURNS boolean
LANGUAGE sql STABLE AS $$
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory'
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = 1936027252::oid
      AND objid = tally_site_settings_bucket(p_site)::oid AND objsubid = 2
      AND mode = 'ExclusiveLock')
$$;
