-- Poll settings, and votes that can name several options and be moved.
--
-- A `votes` row is now a voter's current vote: the options of the newest message of that
-- user on that poll (`seq` orders them). A moved vote replaces the row, and option counts
-- move with it in the same statement (see batch-worker's votes/store.rs).
ALTER TABLE polls
    ADD COLUMN min_choices  smallint NOT NULL DEFAULT 1,
    ADD COLUMN max_choices  smallint NOT NULL DEFAULT 1,
    ADD COLUMN results      text     NOT NULL DEFAULT 'always',
    ADD COLUMN allow_change boolean  NOT NULL DEFAULT false,
    ADD COLUMN voters       text     NOT NULL DEFAULT 'open';

ALTER TABLE votes ADD COLUMN option_ids text[];
UPDATE votes SET option_ids = ARRAY[option_id];
ALTER TABLE votes ALTER COLUMN option_ids SET NOT NULL;
