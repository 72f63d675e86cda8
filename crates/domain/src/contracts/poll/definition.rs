//! What a poll is: its question, options and settings, as `POST /v1/polls` gives them and
//! as Redis and PostgreSQL keep them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub const MAX_QUESTION_CHARS: usize = 500;
pub const MAX_LABEL_CHARS: usize = 200;
pub const MIN_OPTIONS: usize = 2;
pub const MAX_OPTIONS: usize = 20;

/// One answer of a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollOption {
    pub id: String,
    pub label: String,
}

/// When per-option counts may be shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Results {
    /// To everyone, all the time.
    #[default]
    Always,
    /// To a voter once they have voted (their vote's answer, and streams opened with the
    /// results token it carries); to everyone once the poll is closed.
    AfterVote,
    /// To everyone once the poll is closed; until then only the total.
    AfterClose,
}

impl Results {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::AfterVote => "after_vote",
            Self::AfterClose => "after_close",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(Self::Always),
            "after_vote" => Some(Self::AfterVote),
            "after_close" => Some(Self::AfterClose),
            _ => None,
        }
    }
}

/// Who may vote as whom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Voters {
    /// The `user_id` is trusted.
    #[default]
    Open,
    /// A vote carries a voter token the host application signed (see
    /// [`super::voter_token`]).
    Signed,
}

impl Voters {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Signed => "signed",
        }
    }
}

/// How a poll takes votes and shows results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollSettings {
    pub min_choices: u8,
    pub max_choices: u8,
    pub results: Results,
    /// A voter may move their vote until the poll closes (still one vote per user).
    pub allow_change: bool,
    pub voters: Voters,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            min_choices: 1,
            max_choices: 1,
            results: Results::Always,
            allow_change: false,
            voters: Voters::Open,
        }
    }
}

impl PollSettings {
    /// The settings as the poll's Redis hash holds them: field, value.
    pub fn fields(&self) -> [(&'static str, String); 5] {
        [
            ("min_choices", self.min_choices.to_string()),
            ("max_choices", self.max_choices.to_string()),
            ("results", self.results.as_str().to_string()),
            (
                "allow_change",
                if self.allow_change { "1" } else { "0" }.to_string(),
            ),
            ("voters", self.voters.as_str().to_string()),
        ]
    }

    /// Reads [`PollSettings::fields`] back; a field that is missing (a poll made before
    /// settings existed) or unreadable keeps its default.
    pub fn from_fields(get: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        Self {
            min_choices: get("min_choices")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.min_choices),
            max_choices: get("max_choices")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.max_choices),
            results: get("results")
                .and_then(|v| Results::parse(&v))
                .unwrap_or(d.results),
            allow_change: get("allow_change").is_some_and(|v| v == "1"),
            voters: if get("voters").as_deref() == Some("signed") {
                Voters::Signed
            } else {
                Voters::Open
            },
        }
    }

    /// Whether per-option counts may be shown to someone who has not voted (or is not
    /// known to have), given whether the poll is closed.
    pub fn results_public(&self, closed: bool) -> bool {
        closed || self.results == Results::Always
    }

    /// Whether counts may be shown to a voter right after their vote.
    pub fn results_for_voter(&self, closed: bool) -> bool {
        closed || self.results != Results::AfterClose
    }
}

/// A validated `POST /v1/polls` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPoll {
    pub question: String,
    pub options: Vec<PollOption>,
    pub closes_at: Option<DateTime<Utc>>,
    pub settings: PollSettings,
}

#[derive(Deserialize)]
struct RawNewPoll {
    question: Option<serde_json::Value>,
    options: Option<serde_json::Value>,
    closes_at: Option<serde_json::Value>,
    min_choices: Option<serde_json::Value>,
    max_choices: Option<serde_json::Value>,
    results: Option<serde_json::Value>,
    allow_change: Option<serde_json::Value>,
    voters: Option<serde_json::Value>,
    #[serde(flatten)]
    unknown: HashMap<String, serde_json::Value>,
}

/// Validates a poll definition, listing every problem. Option ids are `o1`, `o2`, ... in
/// the order given. Unknown fields are refused (a misspelt setting must not silently fall
/// back to its default).
///
/// # Errors
/// The list of problems (client-facing messages).
pub fn parse_new_poll(body: &[u8], now: DateTime<Utc>) -> Result<NewPoll, Vec<String>> {
    let raw: RawNewPoll =
        serde_json::from_slice(body).map_err(|e| vec![format!("invalid JSON: {e}")])?;
    let mut errors = Vec::new();
    let question = match raw.question {
        Some(serde_json::Value::String(q)) if !q.trim().is_empty() => {
            check_text(&q, "question", MAX_QUESTION_CHARS, &mut errors);
            q
        }
        _ => {
            errors.push("question is required and must be a non-empty string".into());
            String::new()
        }
    };
    let mut labels: Vec<String> = Vec::new();
    match raw.options {
        Some(serde_json::Value::Array(items)) => {
            if !(MIN_OPTIONS..=MAX_OPTIONS).contains(&items.len()) {
                errors.push(format!(
                    "options must have between {MIN_OPTIONS} and {MAX_OPTIONS} entries"
                ));
            }
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    serde_json::Value::String(label) if !label.trim().is_empty() => {
                        check_text(
                            &label,
                            &format!("options[{i}]"),
                            MAX_LABEL_CHARS,
                            &mut errors,
                        );
                        if labels.contains(&label) {
                            errors.push(format!("options[{i}] repeats another option"));
                        }
                        labels.push(label);
                    }
                    _ => errors.push(format!("options[{i}] must be a non-empty string")),
                }
            }
        }
        _ => errors.push("options is required and must be an array of strings".into()),
    }
    let closes_at = match raw.closes_at {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => match DateTime::parse_from_rfc3339(&s) {
            Ok(t) if t.with_timezone(&Utc) > now => Some(t.with_timezone(&Utc)),
            Ok(_) => {
                errors.push("closes_at must be in the future".into());
                None
            }
            Err(_) => {
                errors.push("closes_at must be an RFC 3339 timestamp with a zone".into());
                None
            }
        },
        Some(_) => {
            errors.push("closes_at must be an RFC 3339 timestamp with a zone".into());
            None
        }
    };
    let defaults = PollSettings::default();
    let mut choices = |v: Option<serde_json::Value>, name: &str, default: u8| match v {
        None | Some(serde_json::Value::Null) => default,
        Some(v) => match v.as_u64().and_then(|n| u8::try_from(n).ok()) {
            Some(n) if n >= 1 && usize::from(n) <= MAX_OPTIONS => n,
            _ => {
                errors.push(format!(
                    "{name} must be an integer from 1 to the number of options"
                ));
                default
            }
        },
    };
    let min_choices = choices(raw.min_choices, "min_choices", defaults.min_choices);
    let max_choices = choices(
        raw.max_choices,
        "max_choices",
        defaults.max_choices.max(min_choices),
    );
    if min_choices > max_choices {
        errors.push("min_choices must not be more than max_choices".into());
    }
    if usize::from(max_choices) > labels.len() && !labels.is_empty() {
        errors.push(format!(
            "max_choices must not be more than the {} options",
            labels.len()
        ));
    }
    let results = match raw.results {
        None | Some(serde_json::Value::Null) => Results::Always,
        Some(serde_json::Value::String(s)) if Results::parse(&s).is_some() => {
            Results::parse(&s).unwrap_or_default()
        }
        Some(_) => {
            errors.push("results must be always, after_vote or after_close".into());
            Results::Always
        }
    };
    let allow_change = match raw.allow_change {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(_) => {
            errors.push("allow_change must be true or false".into());
            false
        }
    };
    let voters = match raw.voters.as_ref().and_then(serde_json::Value::as_str) {
        None if raw.voters.is_none() || raw.voters == Some(serde_json::Value::Null) => Voters::Open,
        Some("open") => Voters::Open,
        Some("signed") => Voters::Signed,
        _ => {
            errors.push("voters must be open or signed".into());
            Voters::Open
        }
    };
    let mut unknown: Vec<&String> = raw.unknown.keys().collect();
    unknown.sort();
    for field in unknown {
        errors.push(format!("{field} is not a poll field"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let options = labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| PollOption {
            id: format!("o{}", i + 1),
            label,
        })
        .collect();
    Ok(NewPoll {
        question,
        options,
        closes_at,
        settings: PollSettings {
            min_choices,
            max_choices,
            results,
            allow_change,
            voters,
        },
    })
}

pub(super) fn check_text(s: &str, name: &str, max: usize, errors: &mut Vec<String>) {
    if s.chars().count() > max {
        errors.push(format!("{name} must be at most {max} characters"));
    }
    if s.contains('\0') {
        errors.push(format!("{name} must not contain NUL characters"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-11-14T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn a_valid_poll_gets_option_ids_in_order_and_default_settings() {
        let p = parse_new_poll(
            br#"{"question":"Tabs?","options":["yes","no"],"closes_at":"2030-01-01T00:00:00Z"}"#,
            now(),
        )
        .expect("valid");
        assert_eq!(
            p.options.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["o1", "o2"]
        );
        assert!(p.closes_at.is_some());
        assert_eq!(p.settings, PollSettings::default());
    }

    #[test]
    fn every_problem_of_a_poll_is_listed() {
        let errors = parse_new_poll(
            br#"{"question":"","options":["a","a",""],"closes_at":"2020-01-01T00:00:00Z"}"#,
            now(),
        )
        .expect_err("invalid");
        assert_eq!(
            errors,
            vec![
                "question is required and must be a non-empty string",
                "options[1] repeats another option",
                "options[2] must be a non-empty string",
                "closes_at must be in the future",
            ]
        );
        let one =
            parse_new_poll(br#"{"question":"q","options":["a"]}"#, now()).expect_err("one option");
        assert_eq!(one, vec!["options must have between 2 and 20 entries"]);
        let many: Vec<String> = (0..21).map(|i| format!("\"{i}\"")).collect();
        let body = format!(r#"{{"question":"q","options":[{}]}}"#, many.join(","));
        assert!(parse_new_poll(body.as_bytes(), now()).is_err());
    }

    #[test]
    fn settings_are_validated_against_the_options() {
        let p = parse_new_poll(
            br#"{"question":"q","options":["a","b","c"],"min_choices":1,"max_choices":2,"results":"after_close","allow_change":true,"voters":"signed"}"#,
            now(),
        )
        .expect("valid");
        assert_eq!(
            p.settings,
            PollSettings {
                min_choices: 1,
                max_choices: 2,
                results: Results::AfterClose,
                allow_change: true,
                voters: Voters::Signed,
            }
        );
        let bad = parse_new_poll(
            br#"{"question":"q","options":["a","b"],"min_choices":2,"max_choices":3,"results":"never","allow_change":"yes","voters":"everyone","colour":1}"#,
            now(),
        )
        .expect_err("invalid");
        assert_eq!(
            bad,
            vec![
                "max_choices must not be more than the 2 options",
                "results must be always, after_vote or after_close",
                "allow_change must be true or false",
                "voters must be open or signed",
                "colour is not a poll field",
            ]
        );
        let reversed = parse_new_poll(
            br#"{"question":"q","options":["a","b","c"],"min_choices":3,"max_choices":2}"#,
            now(),
        )
        .expect_err("min over max");
        assert_eq!(
            reversed,
            vec!["min_choices must not be more than max_choices"]
        );
        // max_choices defaults to min_choices when only that is given.
        let min_only = parse_new_poll(
            br#"{"question":"q","options":["a","b","c"],"min_choices":2}"#,
            now(),
        )
        .expect("valid");
        assert_eq!(
            (min_only.settings.min_choices, min_only.settings.max_choices),
            (2, 2)
        );
    }

    #[test]
    fn settings_round_trip_through_the_redis_fields() {
        let s = PollSettings {
            min_choices: 2,
            max_choices: 3,
            results: Results::AfterVote,
            allow_change: true,
            voters: Voters::Signed,
        };
        let fields: HashMap<&str, String> = s.fields().into_iter().collect();
        assert_eq!(PollSettings::from_fields(|f| fields.get(f).cloned()), s);
        assert_eq!(PollSettings::from_fields(|_| None), PollSettings::default());
    }

    #[test]
    fn who_sees_results_when() {
        let after_vote = PollSettings {
            results: Results::AfterVote,
            ..PollSettings::default()
        };
        let after_close = PollSettings {
            results: Results::AfterClose,
            ..PollSettings::default()
        };
        assert!(!after_vote.results_public(false) && after_vote.results_for_voter(false));
        assert!(!after_close.results_public(false) && !after_close.results_for_voter(false));
        assert!(after_close.results_public(true) && after_vote.results_public(true));
        assert!(PollSettings::default().results_public(false));
    }
}
