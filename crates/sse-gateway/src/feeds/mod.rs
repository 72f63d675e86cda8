//! What each kind of topic makes of its channel's messages ([`crate::hub::Feed`]): a
//! poll's tallies ([`poll`]), a site's live activity ([`site`]) and a user's notification
//! feed ([`feed`]).

pub mod feed;
pub mod poll;
pub mod site;
