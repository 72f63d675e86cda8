//! Pub/sub channels: who publishes what, built and parsed in one place.
//!
//! | channel | published by | payload |
//! | --- | --- | --- |
//! | `P:chan:poll:ID` | the poll scripts (`votes.lua`, `close_poll.lua`, `restore_poll.lua`) | [`crate::poll::PollState`] without question and options |
//! | `P:chan:site:S` | batch-worker, after each committed batch touching site `S` | [`crate::site::SiteBatchSummary`] |
//! | `P:chan:feeds:M` | `feed_append.lua`, `feed_read.lua`: new feed items and read marks of the users of feed shard `M` | [`crate::notify::feed::FeedLive`] |
//!
//! The gateway holds one pattern subscription ([`pattern`]) and routes each message with
//! [`Channel::parse`], so a channel name is never taken apart by hand.

use crate::keys::Keys;

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
            Self::Poll(id) => format!("{}{POLL}{id}", base(keys)),
            Self::Site(id) => format!("{}{SITE}{id}", base(keys)),
            Self::Feed(user) => Self::FeedShard(crate::keys::feed_shard(user)).name(keys),
            Self::FeedShard(shard) => format!("{}{FEED_SHARD}{shard}", base(keys)),
        }
    }

    /// The channel a name denotes, if it is one of ours.
    pub fn parse(keys: &Keys, name: &str) -> Option<Self> {
        let rest = name.strip_prefix(&base(keys))?;
        if let Some(id) = rest.strip_prefix(POLL) {
            Some(Self::Poll(id.to_string()))
        } else if let Some(shard) = rest.strip_prefix(FEED_SHARD) {
            shard.parse().ok().map(Self::FeedShard)
        } else {
            rest.strip_prefix(SITE).map(|id| Self::Site(id.to_string()))
        }
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

/// The pattern matching every channel of `keys`' prefix (one subscription per gateway).
pub fn pattern(keys: &Keys) -> String {
    format!("{}*", base(keys))
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

    #[test]
    fn foreign_names_are_not_ours() {
        let keys = Keys::new("t");
        assert_eq!(Channel::parse(&keys, "other:chan:poll:p"), None);
        assert_eq!(Channel::parse(&keys, "t:chan:user:u"), None);
        assert!(pattern(&keys).ends_with('*'));
        let name = Channel::Poll("p".into()).name(&keys);
        assert!(name.starts_with(pattern(&keys).trim_end_matches('*')));
    }
}
