//! What each kind of topic makes of its channel's messages ([`crate::hub::Feed`]): a
//! poll's tallies ([`poll`]) and a site's live activity ([`site`]).

pub mod poll;
pub mod site;
