-- Notifications: the durable record of what was sent, to whom, on which channel, and
-- every attempt. Redis holds the hot state (queues, feeds, registries); these tables are
-- what the status API reads and what Redis is restored from.

CREATE TABLE notifications (
    notification_id uuid PRIMARY KEY,
    event_type      text        NOT NULL,
    title           text        NOT NULL,
    body            text        NOT NULL,
    html            text,
    data            jsonb,
    channels        text[]      NOT NULL,
    priority        text        NOT NULL,
    topic           text,
    -- Users the in-app channel reached (for a topic: its subscribers at fan-out).
    recipients      integer     NOT NULL,
    -- Recipients a channel could not reach (no address), by channel: {"email": 3}.
    skipped         jsonb       NOT NULL DEFAULT '{}',
    idempotency_key text,
    created_at      timestamptz NOT NULL,
    fanned_out_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_created ON notifications (created_at DESC);

-- One row per user and notification; (epoch, seq) is the item's place in the user's feed
-- as streams number it.
CREATE TABLE feed_items (
    user_id         text        NOT NULL,
    notification_id uuid        NOT NULL,
    epoch           bigint      NOT NULL,
    seq             bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    read_at         timestamptz,
    PRIMARY KEY (user_id, notification_id)
);
-- The feed's pages, newest first. (No index by notification: a notification's row is
-- written in the transaction of all its feed items, so the status needs no count; every
-- index here is paid once per recipient of a fan-out.)
CREATE INDEX feed_items_by_user ON feed_items (user_id, epoch DESC, seq DESC);

-- "Everything up to here is read" per user: an item is read when its read_at is set or
-- this mark covers it (an older epoch, or a sequence number at most up_to), so a mark
-- stored before the items it covers (a fan-out still in flight) still covers them.
CREATE TABLE feed_read_marks (
    user_id text        PRIMARY KEY,
    epoch   bigint      NOT NULL,
    up_to   bigint      NOT NULL,
    at      timestamptz NOT NULL
);

-- One row per delivery (a notification to one endpoint, address or number), updated
-- after every attempt: only by a newer attempt (or a later state of the same one), so
-- records stored out of order end on the newest.
CREATE TABLE deliveries (
    delivery_id     text        PRIMARY KEY,
    notification_id uuid        NOT NULL,
    channel         text        NOT NULL,
    target          text        NOT NULL,
    user_id         text,
    state           text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX deliveries_by_notification ON deliveries (notification_id, channel, state);

CREATE TABLE delivery_attempts (
    delivery_id text        NOT NULL,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_ms integer     NOT NULL,
    status_code integer,
    outcome     text        NOT NULL,
    error       text,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE webhook_endpoints (
    endpoint_id      text        PRIMARY KEY,
    url              text        NOT NULL,
    event_types      text[]      NOT NULL,
    rate_limit_per_s integer,
    secret           text        NOT NULL,
    -- The secret before the last rotation, signing beside the new one until it expires.
    previous_secret  text,
    previous_secret_expires_at timestamptz,
    description      text        NOT NULL DEFAULT '',
    disabled         boolean     NOT NULL DEFAULT false,
    disabled_reason  text,
    version          bigint      NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    deleted_at       timestamptz
);

CREATE TABLE topic_subscriptions (
    topic   text    NOT NULL,
    user_id text    NOT NULL,
    email   text,
    phone   text,
    deleted boolean NOT NULL DEFAULT false,
    version bigint  NOT NULL,
    PRIMARY KEY (topic, user_id)
);
