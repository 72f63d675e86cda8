//! A vote as a client sends it: which options, by whom, with what proof, and how retries
//! are recognised.

use super::definition::{MAX_LABEL_CHARS, check_text};

pub const MAX_USER_ID_CHARS: usize = 255;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// How long the answer to a vote sent with an `Idempotency-Key` is kept for retries.
pub const IDEMPOTENCY_TTL_SECONDS: u64 = 24 * 3600;

/// A validated vote: distinct options (in the order given) and the voter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ballot {
    pub option_ids: Vec<String>,
    pub user_id: String,
}

impl Ballot {
    /// The options as the vote script takes them: sorted, comma-separated (option ids
    /// never hold a comma: [`check_ballot`] refuses one).
    pub fn choice_list(&self) -> String {
        let mut ids = self.option_ids.clone();
        ids.sort();
        ids.join(",")
    }
}

/// Why a ballot is refused before any poll is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BallotError {
    /// A malformed body (400): every problem.
    Invalid(Vec<String>),
    /// Well-formed, but not a possible choice (422): an option named twice, or an id that
    /// no poll has.
    Choice(String),
}

/// Validates a vote's options (`option_id`, or `option_ids` for several) and `user_id`,
/// wherever they came from; `names` are the fields' names for messages
/// (`option_id`, `option_ids`, `user_id`).
///
/// # Errors
/// [`BallotError::Invalid`] listing every problem, or [`BallotError::Choice`].
pub fn check_ballot(
    option_id: Option<&serde_json::Value>,
    option_ids: Option<&serde_json::Value>,
    user_id: Option<&serde_json::Value>,
    names: [&str; 3],
) -> Result<Ballot, BallotError> {
    let [option_name, options_name, user_name] = names;
    let mut errors = Vec::new();
    let text = |v: &serde_json::Value, name: &str, max: usize, errors: &mut Vec<String>| match v {
        serde_json::Value::String(s) if !s.is_empty() => {
            check_text(s, name, max, errors);
            Some(s.clone())
        }
        _ => {
            errors.push(format!("{name} is required and must be a non-empty string"));
            None
        }
    };
    let chosen: Vec<String> = match (option_id, option_ids) {
        (Some(one), None) => text(one, option_name, MAX_LABEL_CHARS, &mut errors)
            .into_iter()
            .collect(),
        (None, Some(serde_json::Value::Array(many))) if !many.is_empty() => many
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                text(
                    v,
                    &format!("{options_name}[{i}]"),
                    MAX_LABEL_CHARS,
                    &mut errors,
                )
            })
            .collect(),
        (None, Some(_)) => {
            errors.push(format!(
                "{options_name} must be a non-empty array of option ids"
            ));
            Vec::new()
        }
        (Some(_), Some(_)) => {
            errors.push(format!("send {option_name} or {options_name}, not both"));
            Vec::new()
        }
        (None, None) => {
            errors.push(format!(
                "{option_name} is required and must be a non-empty string"
            ));
            Vec::new()
        }
    };
    let user = match user_id {
        Some(v) => text(v, user_name, MAX_USER_ID_CHARS, &mut errors),
        None => {
            errors.push(format!(
                "{user_name} is required and must be a non-empty string"
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(BallotError::Invalid(errors));
    }
    if let Some(bad) = chosen.iter().find(|o| o.contains(',')) {
        return Err(BallotError::Choice(format!(
            "{bad:?} is not an option of this poll"
        )));
    }
    for (i, o) in chosen.iter().enumerate() {
        if chosen[..i].contains(o) {
            return Err(BallotError::Choice(format!("{o} is chosen twice")));
        }
    }
    Ok(Ballot {
        option_ids: chosen,
        user_id: user.unwrap_or_default(),
    })
}

/// Checks an `Idempotency-Key` header value.
///
/// # Errors
/// A client-facing message when it is empty, too long or not visible ASCII.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_CHARS
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
        ));
    }
    Ok(())
}

/// Voter tokens of `voters: signed` polls: the host application vouches for a user by
/// signing the poll and user id with the secret it shares with ingest-api
/// (`VOTER_TOKEN_SECRET`), so the vote is checked without a database:
///
/// ```text
/// voter_token = "v1." + base64url_nopad(HMAC-SHA256(secret, "v1.voter." + poll_id + "." + user_id))
/// ```
///
/// (Poll ids hold no `.`, so the message is unambiguous.)
pub mod voter_token {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    /// What a vote's token proves.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Proof {
        /// Signed for this poll and user.
        Valid,
        /// No token was sent.
        Missing,
        /// A token that does not verify (forged, for another poll or user, or no secret is
        /// configured).
        Invalid,
    }

    impl Proof {
        /// As the vote script takes it.
        pub fn as_str(self) -> &'static str {
            match self {
                Self::Valid => "valid",
                Self::Missing => "missing",
                Self::Invalid => "invalid",
            }
        }
    }

    fn mac(secret: &[u8], poll_id: &str, user_id: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(format!("v1.voter.{poll_id}.{user_id}").as_bytes());
        mac
    }

    /// The token of `user_id` on `poll_id`.
    pub fn mint(secret: &[u8], poll_id: &str, user_id: &str) -> String {
        format!(
            "v1.{}",
            URL_SAFE_NO_PAD.encode(mac(secret, poll_id, user_id).finalize().into_bytes())
        )
    }

    /// Checks `token` (constant time over the signature); an empty secret proves nothing.
    pub fn verify(secret: &[u8], poll_id: &str, user_id: &str, token: Option<&str>) -> Proof {
        let Some(token) = token else {
            return Proof::Missing;
        };
        let sig = token
            .strip_prefix("v1.")
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
        match sig {
            Some(sig) if !secret.is_empty() => {
                if mac(secret, poll_id, user_id).verify_slice(&sig).is_ok() {
                    Proof::Valid
                } else {
                    Proof::Invalid
                }
            }
            _ => Proof::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::voter_token::{Proof, mint, verify};
    use super::*;
    use serde_json::json;

    fn names() -> [&'static str; 3] {
        ["option_id", "option_ids", "user_id"]
    }

    #[test]
    fn ballots_need_options_and_a_user() {
        let e = check_ballot(None, None, Some(&json!(5)), names()).expect_err("bad");
        assert_eq!(
            e,
            BallotError::Invalid(vec![
                "option_id is required and must be a non-empty string".into(),
                "user_id is required and must be a non-empty string".into()
            ])
        );
        let both = check_ballot(
            Some(&json!("o1")),
            Some(&json!(["o2"])),
            Some(&json!("u")),
            names(),
        );
        assert!(matches!(both, Err(BallotError::Invalid(_))));
    }

    #[test]
    fn several_options_must_be_distinct() {
        let ok = check_ballot(None, Some(&json!(["o2", "o1"])), Some(&json!("u")), names())
            .expect("valid");
        assert_eq!(ok.choice_list(), "o1,o2");
        let twice = check_ballot(None, Some(&json!(["o1", "o1"])), Some(&json!("u")), names());
        assert_eq!(twice, Err(BallotError::Choice("o1 is chosen twice".into())));
        let comma = check_ballot(Some(&json!("o1,o2")), None, Some(&json!("u")), names());
        assert!(matches!(comma, Err(BallotError::Choice(_))));
        let empty = check_ballot(None, Some(&json!([])), Some(&json!("u")), names());
        assert!(matches!(empty, Err(BallotError::Invalid(_))));
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(check_idempotency_key("retry-123").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
    }

    #[test]
    fn a_voter_token_vouches_for_one_user_on_one_poll() {
        let t = mint(b"secret", "p1", "alice");
        assert_eq!(verify(b"secret", "p1", "alice", Some(&t)), Proof::Valid);
        assert_eq!(verify(b"secret", "p1", "bob", Some(&t)), Proof::Invalid);
        assert_eq!(verify(b"secret", "p2", "alice", Some(&t)), Proof::Invalid);
        assert_eq!(verify(b"other", "p1", "alice", Some(&t)), Proof::Invalid);
        assert_eq!(
            verify(b"", "p1", "alice", Some(&mint(b"", "p1", "alice"))),
            Proof::Invalid
        );
        assert_eq!(verify(b"secret", "p1", "alice", None), Proof::Missing);
        assert_eq!(
            verify(b"secret", "p1", "alice", Some("garbage")),
            Proof::Invalid
        );
    }

    #[test]
    fn the_documented_voter_token_scheme_is_what_is_computed() {
        // printf 'v1.voter.p1.alice' | openssl dgst -sha256 -hmac secret -binary | basenc --base64url
        assert_eq!(mint(b"secret", "p1", "alice"), format!("v1.{EXPECTED}"));
    }

    const EXPECTED: &str = "8Lh1aCUMJtR2tbxYPphMBEjonYYmu7ISYyALj-30mYs";
}
