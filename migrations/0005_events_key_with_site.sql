-- Every unique key of site data includes site_id, so the schema can be distributed by
-- site_id (Citus requires the distribution column in every unique key). events was keyed
-- by event_id alone; the rollups and daily_visitors already lead with site_id.
--
-- event_id stays first: server-minted ids are UUIDv7 (time-ordered), so new keys land at
-- the right edge of the index as before. An event id is now unique per site: the same id
-- sent for two sites is two events (client ids are minted per page, never shared).
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (event_id, site_id);
