-- Polls, their options with persisted counts, and every vote.
--
-- Messages of one poll may be stored out of order by concurrent workers (a vote or a close
-- can overtake the poll's definition), so rows are upserted from whichever arrives first:
-- hence the columns that are NULL until the definition lands.

CREATE TABLE polls (
    poll_id    text PRIMARY KEY,
    question   text,
    closes_at  timestamptz,
    created_at timestamptz,
    closed_at  timestamptz,
    -- The vote shard (domain::keys::vote_shard), so a shard can be restored into Redis.
    shard      smallint NOT NULL
);
CREATE INDEX polls_shard ON polls (shard);

CREATE TABLE poll_options (
    poll_id   text   NOT NULL,
    option_id text   NOT NULL,
    label     text,
    position  integer,
    votes     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (poll_id, option_id)
) WITH (fillfactor = 70);

-- One vote per user per poll, ever; the vote id makes redelivery idempotent.
CREATE TABLE votes (
    vote_id   uuid PRIMARY KEY,
    poll_id   text        NOT NULL,
    option_id text        NOT NULL,
    user_id   text        NOT NULL,
    seq       bigint      NOT NULL,
    voted_at  timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (poll_id, user_id)
);
