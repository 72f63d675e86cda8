-- Locks on a site's rollup settings (visit_rollup_zones) that queue fairly.
--
-- Until here a writer of a site's events share-locked the site's visit_rollup_zones row
-- (FOR SHARE) and the batch-worker storing a change of the site's zone, goals or funnels
-- updated it (FOR UPDATE). PostgreSQL lets a FOR SHARE request through at once while the
-- row holds only share locks, even with a FOR UPDATE waiting: two lanes whose
-- transactions overlap (the steady state of a busy drain) kept the row share-locked
-- without a gap, and the change waited until the drain ran dry (the e2e test of zone
-- changes timed out after 30 s on a loaded machine). Advisory locks live in the lock
-- manager, whose queue is fair: a shared request behind a waiting exclusive one waits.
--
-- A site maps to one of 64 buckets (so a writer of a batch of thousands of sites holds at
-- most 64 locks of the shared lock table); both sides lock their buckets in ascending
-- order, so two of them never wait for each other in a cycle. A writer reads the settings
-- in a statement after this one: one that began before the lock was granted would read
-- them from its older snapshot.
CREATE FUNCTION tally_lock_site_settings(p_sites text[], p_exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- The first key of the two-key advisory locks (distinct from single bigint keys).
    settings_lock_class CONSTANT integer := 1936027252;
    bucket integer;
BEGIN
    FOR bucket IN
        SELECT DISTINCT hashtext(s) & 63 FROM unnest(p_sites) AS t(s) ORDER BY 1
    LOOP
        IF p_exclusive THEN
            PERFORM pg_advisory_xact_lock(settings_lock_class, bucket);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(settings_lock_class, bucket);
        END IF;
    END LOOP;
END;
$$;
