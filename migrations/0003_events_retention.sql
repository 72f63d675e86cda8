-- Retention of raw events (EVENTS_RETENTION_DAYS in the batch-worker).
--
-- Stats are served from the rollups, so raw events may be dropped after a while without
-- changing any answer. The worker deletes them by received_at (set by Tally, not by the
-- client, so a client's odd timestamp cannot keep an event forever or expire it early).
-- A BRIN index fits: received_at grows with the physical order of this append-only table,
-- the index is a few pages, and inserts barely notice it (a btree here would cost the
-- drain an index write per row).
CREATE INDEX events_received_at_brin ON events USING brin (received_at);
