//! Pub/sub channels: who publishes what, built and parsed in one place.
//!
//! | channel | published by | payload |
//! | --- | --- | --- |
//! | `P:chan:{votes:N}:poll:ID` | the poll scripts (`votes.lua`, `close_poll.lua`, `restore_poll.lua`) | [`crate::poll::PollState`] without question and options |
//! | `P:chan:{site:S}` | batch-worker, after each committed batch touching site `S` | [`crate::site::SiteBatchSummary`] |
//! | `P:chan:{feed:M}` | `feed_append.lua`, `feed_read.lua`: new feed items and read marks of the users of feed shard `M` | [`crate::notify::feed::FeedLive`] |
//!
//! Each channel carries the hash tag of the keys its publishers write (`N` is the poll's
//! vote shard), so on a Redis Cluster a script may publish on it: there updates go out on
//! sharded channels (`SPUBLISH`), which the cluster delivers only within the channel's
//! shard, where a classic `PUBLISH` is copied to every node. Which command the services use
//! is part of [`Keys`] ([`Keys::sharded_channels`], set for a cluster URL); the scripts
//! call `PUBLISH` by name and are built for both ([`PublishingScript`]).
//!
//! On one server the gateway holds one pattern subscription ([`pattern`]); on a cluster,
//! where sharded channels take no patterns, one `SSUBSCRIBE` per channel it has readers
//! of. Either way it routes each message with [`Channel::parse`], so a channel name is
//! never taken apart by hand.

use crate::keys::Keys;
use redis::Script;

/// A topic of live updates, as named on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A poll's state after every vote, close or restore.
    Poll(String),
    /// A site's per-batch activity summaries.
    Site(String),
    /// A user's notification feed (a topic; its messages arrive on its shard's channel).
    Feed(String),
    /// The channel of a feed shard: the feeds of many users (never a topic).
    FeedShard(u16),
}

const POLL: &str = "poll:";
const SITE: &str = "site:";
const FEED: &str = "feed:";
const FEED_SHARD: &str = "feeds:";

fn base(keys: &Keys) -> String {
    format!("{}:chan:", keys.prefix())
}

impl Channel {
    /// The channel's name under `keys`' prefix.
    pub fn name(&self, keys: &Keys) -> String {
        match self {
            Self::Poll(id) => format!(
                "{}{{{}}}:{POLL}{id}",
                base(keys),
                crate::keys::vote_queue_name(crate::keys::vote_shard(id))
            ),
            Self::Site(id) => format!("{}{{{SITE}{id}}}", base(keys)),
            Self::Feed(user) => Self::FeedShard(crate::keys::feed_shard(user)).name(keys),
            Self::FeedShard(shard) => format!("{}{{{FEED}{shard}}}", base(keys)),
        }
    }

    /// The channel a name denotes, if it is one of ours.
    pub fn parse(keys: &Keys, name: &str) -> Option<Self> {
        let rest = name.strip_prefix(&base(keys))?.strip_prefix('{')?;
        // A site id may hold anything, braces too: its name is the whole tag.
        if let Some(id) = rest.strip_prefix(SITE) {
            return id.strip_suffix('}').map(|id| Self::Site(id.to_string()));
        }
        if let Some(shard) = rest.strip_prefix(FEED) {
            return shard.strip_suffix('}')?.parse().ok().map(Self::FeedShard);
        }
        let (_, id) = rest
            .strip_prefix("votes:")?
            .split_once(&format!("}}:{POLL}"))?;
        Some(Self::Poll(id.to_string()))
    }
}

impl Channel {
    /// The topic's name as clients give it (`poll:ID`, `site:S`, `feed:U`).
    pub fn topic(&self) -> String {
        match self {
            Self::Poll(id) => format!("{POLL}{id}"),
            Self::Site(id) => format!("{SITE}{id}"),
            Self::Feed(user) => format!("{FEED}{user}"),
            Self::FeedShard(shard) => format!("{FEED_SHARD}{shard}"),
        }
    }

    /// The channel of a topic name as clients give it.
    pub fn from_topic(topic: &str) -> Option<Self> {
        if let Some(id) = topic.strip_prefix(POLL) {
            (!id.is_empty()).then(|| Self::Poll(id.to_string()))
        } else if let Some(user) = topic.strip_prefix(FEED) {
            (!user.is_empty()).then(|| Self::Feed(user.to_string()))
        } else {
            topic
                .strip_prefix(SITE)
                .filter(|id| !id.is_empty())
                .map(|id| Self::Site(id.to_string()))
        }
    }
}

/// The pattern matching every channel of `keys`' prefix (the gateway's one subscription
/// on a single server).
pub fn pattern(keys: &Keys) -> String {
    format!("{}*", base(keys))
}

/// The command that publishes on `keys`' channels: `SPUBLISH` for sharded ones.
pub fn publish_command(keys: &Keys) -> &'static str {
    if keys.sharded_channels() {
        "SPUBLISH"
    } else {
        "PUBLISH"
    }
}

/// A Lua script that publishes live updates: its source calls `redis.call(PUBLISH, ...)`,
/// and it is built once for each command [`publish_command`] may name.
pub struct PublishingScript {
    classic: Script,
    sharded: Script,
}

impl PublishingScript {
    pub fn new(source: &str) -> Self {
        // On the source's first line (a comment), so error line numbers stay the file's.
        let with = |command: &str| Script::new(&format!("local PUBLISH = '{command}' {source}"));
        Self {
            classic: with("PUBLISH"),
            sharded: with("SPUBLISH"),
        }
    }

    /// The script that publishes on `keys`' channels.
    pub fn for_keys(&self, keys: &Keys) -> &Script {
        if keys.sharded_channels() {
            &self.sharded
        } else {
            &self.classic
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_round_trip() {
        for c in [
            Channel::Poll("p1".into()),
            Channel::Site("a:b".into()),
            Channel::Feed("u:1".into()),
        ] {
            assert_eq!(Channel::from_topic(&c.topic()), Some(c));
        }
        assert_eq!(Channel::from_topic("feeds:1"), None);
        assert_eq!(Channel::from_topic("user:u"), None);
        assert_eq!(Channel::from_topic("poll:"), None);
    }

    #[test]
    fn names_parse_back_to_their_channel() {
        let keys = Keys::new("t");
        for c in [
            Channel::Poll("p1".into()),
            Channel::Site("example.com".into()),
            Channel::Site("a:b:poll:c".into()),
            Channel::Site("x}:poll:{y}".into()),
            Channel::Poll("a}:poll:b".into()),
            Channel::Poll(String::new()),
            Channel::FeedShard(3),
        ] {
            assert_eq!(Channel::parse(&keys, &c.name(&keys)), Some(c));
        }
        let feed = Channel::Feed("someone".into());
        assert_eq!(
            Channel::parse(&keys, &feed.name(&keys)),
            Some(Channel::FeedShard(crate::keys::feed_shard("someone"))),
            "a feed's messages arrive on its shard's channel"
        );
    }

    /// A script may publish only on a channel of its keys' slot (a cluster refuses it
    /// otherwise), and a sharded subscriber listens at that slot's node.
    #[test]
    fn each_channel_hashes_to_the_slot_of_its_publishers_keys() {
        use redis::cluster_routing::Slot;
        let keys = Keys::new("t");
        for poll in ["p1", "another poll", "{x}"] {
            assert_eq!(
                Slot::for_key(Channel::Poll(poll.into()).name(&keys)),
                Slot::for_key(keys.poll(poll).tally),
                "poll {poll}"
            );
        }
        for user in ["u1", "someone else"] {
            assert_eq!(
                Slot::for_key(Channel::Feed(user.into()).name(&keys)),
                Slot::for_key(keys.feed(user).items),
                "user {user}"
            );
        }
        assert_eq!(
            Slot::for_key(Channel::Site("example.com".into()).name(&keys)),
            Slot::for_key(keys.site_generation("example.com"))
        );
    }

    #[test]
    fn scripts_publish_with_the_command_of_their_keys() {
        let script = PublishingScript::new("-- a script\nreturn PUBLISH");
        let classic = Keys::new("t");
        let sharded = Keys::new("t").with_sharded_channels(true);
        assert_ne!(
            script.for_keys(&classic).get_hash(),
            script.for_keys(&sharded).get_hash()
        );
        assert_eq!(publish_command(&classic), "PUBLISH");
        assert_eq!(publish_command(&sharded), "SPUBLISH");
    }

    #[test]
    fn foreign_names_are_not_ours() {
        let keys = Keys::new("t");
        assert_eq!(Channel::parse(&keys, "other:chan:poll:p"), None);
        assert_eq!(Channel::parse(&keys, "t:chan:user:u"), None);
        assert_eq!(Channel::parse(&keys, "t:chan:{site:unclosed"), None);
        assert_eq!(Channel::parse(&keys, "t:chan:{feed:x}"), None);
        assert_eq!(Channel::parse(&keys, "t:chan:{votes:1}p"), None);
        assert!(pattern(&keys).ends_with('*'));
        let name = Channel::Poll("p".into()).name(&keys);
        assert!(name.starts_with(pattern(&keys).trim_end_matches('*')));
    }
}
