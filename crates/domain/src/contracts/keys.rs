//! Every Redis key Tally uses is built here; services never `format!` a key themselves.
//!
//! Keys that one atomic step (a Lua script or `BLMOVE`) touches together share a Redis
//! Cluster hash tag (the part in `{}`), so the same scripts run on a cluster:
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `P:{events}:queue` | list | analytics events waiting for the worker (LPUSH at head, oldest at tail) |
//! | `P:{events}:processing:W` | list | the batch worker `W` has claimed and not yet committed |
//! | `P:{events}:hb:W` | string with TTL | worker `W` is alive while this exists |
//! | `P:{events}:workers` | set | worker ids that may own a processing list |
//! | `P:{events}:dead` | list | dead letters: `{"reason", "item", "at_ms", "worker_id"}` (see `crate::queue::DeadLetter`) |
//! | `P:{site:S}:gen` | integer | bumped by the worker after every commit touching site `S` |
//! | `P:{site:S}:cache` | hash | stats-api cache of site `S`, each value prefixed by the generation it was computed at |
//! | `P:{site:S}:visitors:M` | HyperLogLog, TTL 10 min | visitors of site `S` seen in minute `M` (live activity) |
//! | `P:{site:S}:dv:T:D`, `P:{site:S}:hv:T:H` | HyperLogLog | visitors of site `S`, event type `T`, UTC day `D` / UTC hour `H` (see `crate::site::day_sketch`) |
//! | `P:{site:S}:dvc2:T:D` | string with TTL | day `D`'s sketches (day and hours) hold every visitor PostgreSQL has |
//!
//! | `P:{sites}:site:S` | hash | site `S` of the registry: `site_id`, `domains` (JSON), `timezone`, `public`, `version`, `created_at_ms`, `updated_at_ms` |
//! | `P:{sites}:ids` | set | every registered site id |
//! | `P:{sites}:version` | integer | bumped by every registry change (the version of the change) |
//! | `P:{sites}:restored` | string | set by the worker once the registry is in Redis (absent after Redis lost its data) |
//! | `P:{sites}:restoring` | string with TTL | the lock of whoever restores the registry |
//! | `P:{sites}:queue` (and `processing`, `hb`, `workers`, `dead`) | | registry changes waiting for PostgreSQL |
//! | `P:salt:D` | string, TTL 48 h | the secret salt of visitor ids on UTC day `D` |
//!
//! | `P:{votes:N}:poll:ID:def` | hash | poll `ID`: `question`, `options` (JSON), `closes_at_ms`, `closed`, `seq`, `total` |
//! | `P:{votes:N}:poll:ID:tally` | hash | option id → votes |
//! | `P:{votes:N}:poll:ID:voters` | hash | user id → option id (one vote per user, ever) |
//! | `P:{votes:N}:poll:ID:idem:K` | string with TTL | the response to the vote sent with `Idempotency-Key: K` |
//! | `P:{votes:N}:queue` (and `processing`, `hb`, `workers`, `dead`) | | the reliable queue of shard `N`: poll definitions, closes and votes |
//! | `P:{votes:N}:restored` | string | set by the worker once shard `N`'s polls are in Redis (absent after Redis lost its data) |
//! | `P:{votes:N}:restoring` | string with TTL | the lock of whoever is restoring shard `N` |
//!
//! A poll lives in vote shard `N = vote_shard(ID)`: all of its keys and the queue its votes
//! are pushed to share the hash tag `{votes:N}`, so the vote script (check, count, queue,
//! publish in one step) is a single-slot script on a cluster too.
//!
//!
//! Notifications (see [`crate::notify`]):
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `P:{notify:N}:queue` (and `processing`, `hb`, `workers`, `dead`) | | accepted notifications of shard `N` waiting to be fanned out |
//! | `P:{notify:N}:n:ID` | string, TTL 7 days | notification `ID`'s public record (content, channels, audience size) |
//! | `P:{notify:N}:idem:K` | string, TTL 24 h | the notification accepted with `Idempotency-Key: K` |
//! | `P:{feed:M}:f:U` | sorted set | user `U`'s newest feed items: notification id scored by the user's sequence number |
//! | `P:{feed:M}:s:U` | hash | user `U`'s feed state: `epoch`, `seq`, `read_upto`, `unread` |
//! | `P:{feed:M}:r:U` | set | sequence numbers above `read_upto` that were read one by one |
//! | `P:{feed:M}:queue` (...) | | read marks waiting for PostgreSQL |
//! | `P:{deliver:K}:queue` (and `hb`, `workers`, `dead`) | | deliveries of channel `K` (webhook, email, sms) waiting for an attempt |
//! | `P:{deliver:K}:inflight:W` | hash | the deliveries worker `W` is attempting (claim id -> delivery) |
//! | `P:{deliver:K}:scheduled` | sorted set | deliveries waiting for a retry (or a free slot of their endpoint), scored by when they are due |
//! | `P:{deliver:K}:fanned:ID` | string, TTL 7 days | notification `ID`'s deliveries of channel `K` were queued |
//! | `P:{deliver:K}:backlog` | hash | webhook endpoint id -> deliveries not yet finished |
//! | `P:{deliver:K}:log:queue` (...) | | attempt records waiting for PostgreSQL |
//! | `P:{webhooks}:ep:E` | hash | webhook endpoint `E` (url, event types, secret, ...) |
//! | `P:{webhooks}:ids`, `:version`, `:restored`, `:restoring`, `:queue` | | as for the site registry |
//! | `P:{webhooks}:rate:E` | string with TTL | the rate limiter of endpoint `E` (its theoretical arrival time) |
//! | `P:{topics}:subs:T` | hash | topic `T`'s subscribers: user id -> contact JSON |
//! | `P:{topics}:restored`, `:restoring`, `:queue` | | as for the site registry |
//!
//! Jobs (exports; see [`crate::jobs`]), all on one hash tag so each step is one script:
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `P:{jobs}:job:ID` | hash | job `ID`: `site_id`, `client`, `spec` (JSON), `fingerprint`, `state`, `attempt`, `completed`, `total`, times; expires 24 h after it ends |
//! | `P:{jobs}:idem:S:K` | string, TTL 24 h | the job created for site `S` with `Idempotency-Key: K` |
//! | `P:{jobs}:queue` | list | ids of jobs waiting for a worker (LPUSH at the head, claimed from the tail) |
//! | `P:{jobs}:leases` | sorted set | running job ids scored by when their worker's lease ends (renewed by its heartbeat) |
//! | `P:{jobs}:active` | hash | unfinished job id -> its client |
//! | `P:{jobs}:active_count` | hash | client -> how many unfinished jobs it has (at most [`crate::jobs::MAX_ACTIVE_PER_CLIENT`]) |
//!
//! Pub/sub channel names are built in [`crate::channel`].
//!
//! `P` is the configured prefix (`REDIS_KEY_PREFIX`, default `tally`).

/// Builds key names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    /// Live updates go out on sharded channels (`SPUBLISH`; a Redis Cluster), not on
    /// classic ones (see [`crate::channel`]).
    sharded_channels: bool,
}

/// The keys of one reliable queue (see [`crate::queue`]).
#[derive(Clone, Debug)]
pub struct QueueKeys {
    base: String,
    /// The queue's name (its hash tag), for logs and metric labels.
    pub name: String,
    pub queue: String,
    pub workers: String,
    pub dead: String,
}

impl QueueKeys {
    /// The processing list of worker `worker_id`.
    pub fn processing(&self, worker_id: &str) -> String {
        format!("{}:processing:{worker_id}", self.base)
    }

    /// The heartbeat key of worker `worker_id`.
    pub fn heartbeat(&self, worker_id: &str) -> String {
        format!("{}:hb:{worker_id}", self.base)
    }
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            sharded_channels: false,
        }
    }

    /// These keys with live updates on sharded channels (`SPUBLISH`/`SSUBSCRIBE`) when
    /// `sharded`: what every service of a Redis Cluster deployment uses.
    #[must_use]
    pub fn with_sharded_channels(mut self, sharded: bool) -> Self {
        self.sharded_channels = sharded;
        self
    }

    /// Whether live updates go out on sharded channels.
    pub fn sharded_channels(&self) -> bool {
        self.sharded_channels
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys of the queue called `name` (hash tag `{name}`).
    pub fn queue(&self, name: &str) -> QueueKeys {
        let base = format!("{}:{{{name}}}", self.prefix);
        QueueKeys {
            name: name.to_string(),
            queue: format!("{base}:queue"),
            workers: format!("{base}:workers"),
            dead: format!("{base}:dead"),
            base,
        }
    }

    /// The analytics events queue (its first shard).
    pub fn events_queue(&self) -> QueueKeys {
        self.queue(crate::queue::EVENTS_QUEUE)
    }

    /// Every shard of the analytics events queue (`EVENT_QUEUE_SHARDS` of them): shard 0
    /// is `{events}` (the queue of an unsharded deployment), shard `N` is `{events:N}`, on
    /// a hash slot of its own.
    pub fn events_queues(&self, shards: u16) -> Vec<QueueKeys> {
        (0..shards.max(1))
            .map(|n| match n {
                0 => self.events_queue(),
                n => self.queue(&format!("{}:{n}", crate::queue::EVENTS_QUEUE)),
            })
            .collect()
    }

    /// Generation counter of a site's cached stats.
    pub fn site_generation(&self, site_id: &str) -> String {
        format!("{}:{{site:{site_id}}}:gen", self.prefix)
    }

    /// Hash of a site's cached stats answers.
    pub fn site_cache(&self, site_id: &str) -> String {
        format!("{}:{{site:{site_id}}}:cache", self.prefix)
    }

    /// HyperLogLog of a site's visitors in minute `minute` (epoch minutes).
    pub fn site_visitors(&self, site_id: &str, minute: i64) -> String {
        format!("{}:{{site:{site_id}}}:visitors:{minute}", self.prefix)
    }

    /// HyperLogLog of the visitors of a site, event type and UTC day (see
    /// [`crate::site::day_sketch`]).
    pub fn site_day_visitors(&self, site_id: &str, event_type: &str, day: &str) -> String {
        format!("{}:{{site:{site_id}}}:dv:{event_type}:{day}", self.prefix)
    }

    /// HyperLogLog of the visitors of a site, event type and UTC hour `hour` (epoch hours).
    pub fn site_hour_visitors(&self, site_id: &str, event_type: &str, hour: i64) -> String {
        format!("{}:{{site:{site_id}}}:hv:{event_type}:{hour}", self.prefix)
    }

    /// Set once [`Keys::site_day_visitors`] holds every visitor PostgreSQL has for that day.
    pub fn site_day_visitors_complete(&self, site_id: &str, event_type: &str, day: &str) -> String {
        // `dvc2`: the marker vouches for the day's hour sketches too, which `dvc` did not.
        format!("{}:{{site:{site_id}}}:dvc2:{event_type}:{day}", self.prefix)
    }
}

impl Keys {
    fn sites_base(&self) -> String {
        format!("{}:{{{}}}", self.prefix, crate::site_registry::SITES_QUEUE)
    }

    /// The registry record of site `site_id`.
    pub fn site_record(&self, site_id: &str) -> String {
        format!("{}:site:{site_id}", self.sites_base())
    }

    /// The set of registered site ids.
    pub fn site_ids(&self) -> String {
        format!("{}:ids", self.sites_base())
    }

    /// The registry's change counter.
    pub fn sites_version(&self) -> String {
        format!("{}:version", self.sites_base())
    }

    /// Set once the registry has been restored into Redis.
    pub fn sites_restored(&self) -> String {
        format!("{}:restored", self.sites_base())
    }

    /// The lock of whoever restores the registry.
    pub fn sites_restoring(&self) -> String {
        format!("{}:restoring", self.sites_base())
    }

    /// The queue of registry changes.
    pub fn sites_queue(&self) -> QueueKeys {
        self.queue(crate::site_registry::SITES_QUEUE)
    }

    /// The visitor-id salt of UTC day `day` (`YYYY-MM-DD`).
    pub fn visitor_salt(&self, day: &str) -> String {
        format!("{}:salt:{day}", self.prefix)
    }
}

/// Number of vote shards. Part of the key format: changing it moves polls to other keys.
pub const VOTE_SHARDS: u16 = 8;

/// The vote shard of a poll (FNV-1a of its id).
pub fn vote_shard(poll_id: &str) -> u16 {
    u16::try_from(fnv1a(poll_id) % u32::from(VOTE_SHARDS)).unwrap_or(0)
}

/// The keys of one poll (see the module table).
#[derive(Clone, Debug)]
pub struct PollKeys {
    base: String,
    pub shard: u16,
    pub def: String,
    pub tally: String,
    pub voters: String,
    pub queue: String,
    pub restored: String,
}

impl PollKeys {
    /// The key holding the response to the vote sent with idempotency key `key`.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.base)
    }

    /// The vote counts whose `poll.votes_reached` notification was sent (a set).
    pub fn thresholds_reached(&self) -> String {
        format!("{}:reached", self.base)
    }
}

impl Keys {
    /// The keys of poll `poll_id`.
    pub fn poll(&self, poll_id: &str) -> PollKeys {
        let shard = vote_shard(poll_id);
        let tag = self.vote_shard_base(shard);
        let base = format!("{tag}:poll:{poll_id}");
        PollKeys {
            def: format!("{base}:def"),
            tally: format!("{base}:tally"),
            voters: format!("{base}:voters"),
            queue: format!("{tag}:queue"),
            restored: format!("{tag}:restored"),
            base,
            shard,
        }
    }

    fn vote_shard_base(&self, shard: u16) -> String {
        format!("{}:{{{}}}", self.prefix, vote_queue_name(shard))
    }

    /// The queue of vote shard `shard`.
    pub fn vote_queue(&self, shard: u16) -> QueueKeys {
        self.queue(&vote_queue_name(shard))
    }

    /// Set once shard `shard`'s polls have been restored into Redis.
    pub fn vote_shard_restored(&self, shard: u16) -> String {
        format!("{}:restored", self.vote_shard_base(shard))
    }

    /// The lock of whoever restores shard `shard`.
    pub fn vote_shard_restoring(&self, shard: u16) -> String {
        format!("{}:restoring", self.vote_shard_base(shard))
    }
}

/// Name (and hash tag) of vote shard `shard`'s queue.
pub fn vote_queue_name(shard: u16) -> String {
    format!("votes:{shard}")
}

/// Number of notification shards. Part of the key format.
pub const NOTIFY_SHARDS: u16 = 8;
/// Number of feed shards (users' feeds are spread over this many hash tags). Part of the
/// key format.
pub const FEED_SHARDS: u16 = 8;

/// FNV-1a, the hash of every shard choice (stable across processes and versions).
pub fn fnv1a(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The feed shard of a user.
pub fn feed_shard(user_id: &str) -> u16 {
    u16::try_from(fnv1a(user_id) % u32::from(FEED_SHARDS)).unwrap_or(0)
}

/// The keys of one user's feed (see the module table).
#[derive(Clone, Debug)]
pub struct FeedKeys {
    pub shard: u16,
    pub items: String,
    pub state: String,
    pub read: String,
}

/// The keys of one delivery channel's queue (see the module table and
/// [`crate::notify::delivery_queue`]).
#[derive(Clone, Debug)]
pub struct DeliveryKeys {
    base: String,
    /// `queue`, `workers`, `dead` and heartbeats, as for any reliable queue.
    pub queue: QueueKeys,
    pub scheduled: String,
    pub backlog: String,
    /// Attempt records on their way to PostgreSQL (a reliable queue of its own, on the same
    /// hash tag so recording an attempt is part of the atomic step that finishes it).
    pub log: QueueKeys,
}

impl DeliveryKeys {
    /// The deliveries worker `worker_id` is attempting.
    pub fn inflight(&self, worker_id: &str) -> String {
        format!("{}:inflight:{worker_id}", self.base)
    }

    /// Set once notification `id`'s deliveries of this channel are queued.
    pub fn fanned(&self, notification_id: &str) -> String {
        format!("{}:fanned:{notification_id}", self.base)
    }
}

impl Keys {
    /// The queue of notification shard `shard`.
    pub fn notify_queue(&self, shard: u16) -> QueueKeys {
        self.queue(&format!("notify:{shard}"))
    }

    /// Every notification shard's queue.
    pub fn notify_queues(&self) -> Vec<QueueKeys> {
        (0..NOTIFY_SHARDS).map(|s| self.notify_queue(s)).collect()
    }

    /// The public record of a notification of shard `shard`.
    pub fn notification(&self, shard: u16, notification_id: &str) -> String {
        format!("{}:{{notify:{shard}}}:n:{notification_id}", self.prefix)
    }

    /// The notification accepted with an idempotency key (in shard `shard`).
    pub fn notify_idempotency(&self, shard: u16, key: &str) -> String {
        format!("{}:{{notify:{shard}}}:idem:{key}", self.prefix)
    }

    /// The keys of user `user_id`'s feed.
    pub fn feed(&self, user_id: &str) -> FeedKeys {
        let shard = feed_shard(user_id);
        let base = format!("{}:{{feed:{shard}}}", self.prefix);
        FeedKeys {
            shard,
            items: format!("{base}:f:{user_id}"),
            state: format!("{base}:s:{user_id}"),
            read: format!("{base}:r:{user_id}"),
        }
    }

    /// The queue of feed shard `shard` (read marks for PostgreSQL).
    pub fn feed_queue(&self, shard: u16) -> QueueKeys {
        self.queue(&format!("feed:{shard}"))
    }

    /// Every feed shard's queue.
    pub fn feed_queues(&self) -> Vec<QueueKeys> {
        (0..FEED_SHARDS).map(|s| self.feed_queue(s)).collect()
    }

    /// The keys of the delivery queue of channel `channel` (`webhook`, `email`, `sms`).
    pub fn delivery(&self, channel: &str) -> DeliveryKeys {
        let tag = format!("deliver:{channel}");
        let base = format!("{}:{{{tag}}}", self.prefix);
        let log_base = format!("{base}:log");
        DeliveryKeys {
            queue: self.queue(&tag),
            scheduled: format!("{base}:scheduled"),
            backlog: format!("{base}:backlog"),
            log: QueueKeys {
                name: format!("{tag}:log"),
                queue: format!("{log_base}:queue"),
                workers: format!("{log_base}:workers"),
                dead: format!("{log_base}:dead"),
                base: log_base,
            },
            base,
        }
    }

    fn webhooks_base(&self) -> String {
        format!("{}:{{webhooks}}", self.prefix)
    }

    /// Webhook endpoint `endpoint_id`'s record.
    pub fn endpoint(&self, endpoint_id: &str) -> String {
        format!("{}:ep:{endpoint_id}", self.webhooks_base())
    }

    /// The set of webhook endpoint ids.
    pub fn endpoint_ids(&self) -> String {
        format!("{}:ids", self.webhooks_base())
    }

    /// The endpoints registry's change counter.
    pub fn endpoints_version(&self) -> String {
        format!("{}:version", self.webhooks_base())
    }

    /// Set once the endpoints registry has been restored into Redis.
    pub fn endpoints_restored(&self) -> String {
        format!("{}:restored", self.webhooks_base())
    }

    /// The lock of whoever restores the endpoints registry.
    pub fn endpoints_restoring(&self) -> String {
        format!("{}:restoring", self.webhooks_base())
    }

    /// The queue of endpoint changes.
    pub fn webhooks_queue(&self) -> QueueKeys {
        self.queue("webhooks")
    }

    /// The rate limiter of endpoint `endpoint_id`.
    pub fn endpoint_rate(&self, endpoint_id: &str) -> String {
        format!("{}:rate:{endpoint_id}", self.webhooks_base())
    }

    fn topics_base(&self) -> String {
        format!("{}:{{topics}}", self.prefix)
    }

    /// Topic `topic`'s subscribers.
    pub fn topic_subscribers(&self, topic: &str) -> String {
        format!("{}:subs:{topic}", self.topics_base())
    }

    /// Set once the topic subscriptions have been restored into Redis.
    pub fn topics_restored(&self) -> String {
        format!("{}:restored", self.topics_base())
    }

    /// The lock of whoever restores the topic subscriptions.
    pub fn topics_restoring(&self) -> String {
        format!("{}:restoring", self.topics_base())
    }

    /// The queue of subscription changes.
    pub fn topics_queue(&self) -> QueueKeys {
        self.queue("topics")
    }

    /// Held by the worker checking sites for traffic spikes this interval.
    pub fn traffic_check_lock(&self) -> String {
        format!("{}:{{triggers}}:traffic_check", self.prefix)
    }
}

/// The hash tag Redis Cluster would hash for `key`: the text between the first `{` and the
/// next `}`, when that is non-empty; otherwise the whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The keys of the job queue (see the module table).
#[derive(Clone, Debug)]
pub struct JobKeys {
    base: String,
    pub queue: String,
    pub leases: String,
    pub active: String,
    pub active_count: String,
}

impl JobKeys {
    /// Job `job_id`'s record.
    pub fn job(&self, job_id: &str) -> String {
        format!("{}:job:{job_id}", self.base)
    }

    /// The job created for `site_id` with idempotency key `key`.
    pub fn idempotency(&self, site_id: &str, key: &str) -> String {
        format!("{}:idem:{site_id}:{key}", self.base)
    }
}

impl Keys {
    /// The keys of the job queue.
    pub fn jobs(&self) -> JobKeys {
        let base = format!("{}:{{jobs}}", self.prefix);
        JobKeys {
            queue: format!("{base}:queue"),
            leases: format!("{base}:leases"),
            active: format!("{base}:active"),
            active_count: format!("{base}:active_count"),
            base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_one_hash_tag() {
        let k = Keys::new("tally").events_queue();
        let (processing, heartbeat) = (k.processing("w1"), k.heartbeat("w1"));
        let tags = [
            hash_tag(&k.queue),
            hash_tag(&k.workers),
            hash_tag(&k.dead),
            hash_tag(&processing),
            hash_tag(&heartbeat),
        ];
        assert!(tags.iter().all(|t| *t == "events"), "{tags:?}");
        assert_eq!(k.queue, "tally:{events}:queue");
    }

    #[test]
    fn site_keys_share_a_tag_even_when_the_site_id_has_braces() {
        let keys = Keys::new("p");
        for site in ["example.com", "we}ird{", ""] {
            assert_eq!(
                hash_tag(&keys.site_generation(site)),
                hash_tag(&keys.site_cache(site)),
                "site {site:?}"
            );
        }
    }

    #[test]
    fn a_polls_keys_and_its_queue_share_one_hash_tag() {
        let keys = Keys::new("tally");
        for id in ["p1", "0192e4a0-0000-7000-8000-000000000001", "x{y}z"] {
            let p = keys.poll(id);
            let shard_queue = keys.vote_queue(p.shard);
            let idem = p.idempotency("k");
            let tags = [
                &p.def,
                &p.tally,
                &p.voters,
                &p.queue,
                &p.restored,
                &idem,
                &shard_queue.queue,
                &shard_queue.processing("w"),
            ]
            .map(|k| hash_tag(k).to_string());
            assert!(tags.iter().all(|t| *t == tags[0]), "{id}: {tags:?}");
            assert_eq!(p.queue, shard_queue.queue);
            assert_eq!(p.restored, keys.vote_shard_restored(p.shard));
        }
    }

    #[test]
    fn polls_spread_over_every_shard() {
        let used: std::collections::HashSet<u16> =
            (0..200).map(|i| vote_shard(&format!("poll-{i}"))).collect();
        assert_eq!(used.len(), usize::from(VOTE_SHARDS));
    }

    #[test]
    fn the_registry_and_its_queue_share_one_hash_tag() {
        let keys = Keys::new("tally");
        let q = keys.sites_queue();
        let tags = [
            keys.site_record("example.com"),
            keys.site_ids(),
            keys.sites_version(),
            keys.sites_restored(),
            keys.sites_restoring(),
            q.queue.clone(),
            q.processing("w"),
        ]
        .map(|k| hash_tag(&k).to_string());
        assert!(tags.iter().all(|t| t == "sites"), "{tags:?}");
    }

    #[test]
    fn events_queue_shards_are_on_different_slots() {
        let shards = Keys::new("tally").events_queues(4);
        assert_eq!(shards[0].queue, "tally:{events}:queue");
        assert_eq!(shards[3].queue, "tally:{events:3}:queue");
        let slots: std::collections::HashSet<_> = shards
            .iter()
            .map(|q| redis::cluster_routing::Slot::for_key(&q.queue))
            .collect();
        assert_eq!(slots.len(), 4);
        assert_eq!(hash_tag(&shards[2].processing("w")), "events:2");
    }

    #[test]
    fn prefixes_keep_tests_apart() {
        assert_ne!(
            Keys::new("a").events_queue().queue,
            Keys::new("b").events_queue().queue
        );
    }

    #[test]
    fn a_users_feed_keys_share_a_tag_with_its_shard_queue() {
        let keys = Keys::new("t");
        for user in ["u1", "user-42", "x{y}"] {
            let f = keys.feed(user);
            let q = keys.feed_queue(f.shard);
            let tags = [&f.items, &f.state, &f.read, &q.queue].map(|k| hash_tag(k).to_string());
            assert!(tags.iter().all(|t| *t == tags[0]), "{user}: {tags:?}");
        }
    }

    #[test]
    fn a_delivery_channels_keys_share_one_tag() {
        let d = Keys::new("t").delivery("webhook");
        let tags = [
            d.queue.queue.clone(),
            d.queue.heartbeat("w"),
            d.queue.workers.clone(),
            d.queue.dead.clone(),
            d.inflight("w"),
            d.scheduled.clone(),
            d.backlog.clone(),
            d.fanned("n"),
            d.log.queue.clone(),
            d.log.processing("w"),
        ]
        .map(|k| hash_tag(&k).to_string());
        assert!(tags.iter().all(|t| t == "deliver:webhook"), "{tags:?}");
        assert_ne!(d.log.queue, d.queue.queue);
    }
}
