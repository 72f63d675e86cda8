//! A site's goals and funnels: what counts as a conversion, and the ordered steps whose
//! drop-off is reported.
//!
//! They are part of the site's registry record (fields `goals` and `funnels`, JSON lists),
//! so they travel the registry's path: ingest-api edits them with one Lua step
//! (`edit_site_list.lua`) that also queues the site for PostgreSQL; the worker stores them
//! with the site; a restored registry brings them back; a change bumps the site's cached
//! stats. stats-api reads them from PostgreSQL and applies them to all stored events, past
//! ones included (a goal made today converts last month's visitors too).
//!
//! A goal is a custom event name (`{"event_name": "Signup"}`) or a page path pattern
//! (`{"page_path": "/blog/*"}`; `*` matches within one path segment, `**` across them).
//! A funnel is 2..8 goals in order; a visit reaches step k when it has an event of step k
//! after the event that reached step k-1.

use crate::keys::Keys;
use crate::site_registry::Site;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::LazyLock;

/// Most goals one site may have.
pub const MAX_GOALS: usize = 100;
/// Most funnels one site may have.
pub const MAX_FUNNELS: usize = 20;
/// Fewest and most steps of a funnel.
pub const FUNNEL_STEPS: std::ops::RangeInclusive<usize> = 2..=8;
/// Longest goal name, event name, or funnel name.
pub const MAX_NAME_CHARS: usize = 120;
/// Longest page path pattern.
pub const MAX_PATH_CHARS: usize = 2000;

static EDIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/edit_site_list.lua")));

/// A goal of a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goal {
    pub goal_id: String,
    /// How answers name it (`event:goal` values): the event name, or `Visit <pattern>`,
    /// unless given.
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_path: Option<String>,
}

impl Goal {
    /// `event` or `page`.
    pub fn goal_type(&self) -> &'static str {
        if self.page_path.is_some() {
            "page"
        } else {
            "event"
        }
    }

    /// The anchored PostgreSQL regular expression of a page goal's pattern.
    pub fn path_regex(&self) -> Option<String> {
        self.page_path.as_deref().map(path_pattern_regex)
    }

    /// Whether an event of `event_type` at `path` converts this goal (what the regex of
    /// [`Self::path_regex`] decides in SQL, decided here for one event).
    pub fn matches(&self, event_type: &str, path: Option<&str>) -> bool {
        match (&self.event_name, &self.page_path, path) {
            (Some(name), _, _) => name == event_type,
            (None, Some(pattern), Some(path)) => {
                event_type == crate::event::PAGE_VIEW
                    && path_matches(pattern.as_bytes(), path.as_bytes())
            }
            _ => false,
        }
    }
}

/// A page path pattern against a path: `**` any characters, `*` any but `/`. Walks the
/// pattern once, keeping the set of path positions reachable so far (no backtracking, so
/// no pattern can make it exponential).
fn path_matches(pattern: &[u8], path: &[u8]) -> bool {
    let mut reachable = vec![false; path.len() + 1];
    reachable[0] = true;
    let mut i = 0;
    while i < pattern.len() {
        let mut next = vec![false; path.len() + 1];
        if pattern[i] == b'*' {
            let across = pattern.get(i + 1) == Some(&b'*');
            i += if across { 2 } else { 1 };
            let mut open = false;
            for j in 0..=path.len() {
                open = (open && (across || path[j - 1] != b'/')) || reachable[j];
                next[j] = open;
            }
        } else {
            for j in 0..path.len() {
                next[j + 1] = reachable[j] && path[j] == pattern[i];
            }
            i += 1;
        }
        reachable = next;
        if !reachable.contains(&true) {
            return false;
        }
    }
    reachable[path.len()]
}

/// A funnel of a site: goal ids in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funnel {
    pub funnel_id: String,
    pub name: String,
    pub steps: Vec<String>,
}

impl Funnel {
    /// The funnel as the APIs show it: each step's goal id with its display name (null
    /// for a goal gone from `goals`).
    pub fn to_json(&self, goals: &[Goal]) -> serde_json::Value {
        let steps: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|id| {
                let name = goals
                    .iter()
                    .find(|g| g.goal_id == *id)
                    .map(|g| &g.display_name);
                serde_json::json!({"goal_id": id, "display_name": name})
            })
            .collect();
        serde_json::json!({"funnel_id": self.funnel_id, "name": self.name, "steps": steps})
    }
}

/// A page path pattern as an anchored regular expression (PostgreSQL's, also valid for
/// most engines): `**` any characters, `*` any but `/`, everything else literal.
pub fn path_pattern_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push('^');
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(".*");
            }
            '*' => out.push_str("[^/]*"),
            c if "\\.^$|?+()[]{}".contains(c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('$');
    out
}

/// Reads a record's list field (absent in records written before goals existed: empty).
///
/// # Errors
/// When the field is not a JSON list of the type.
pub fn list_field<T: for<'de> Deserialize<'de>>(
    record: &HashMap<String, String>,
    name: &str,
) -> Result<Vec<T>, String> {
    match record.get(name).map(String::as_str) {
        None | Some("" | "{}") => Ok(Vec::new()),
        Some(text) => {
            serde_json::from_str(text).map_err(|e| format!("site record with bad {name}: {e}"))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGoal {
    event_name: Option<serde_json::Value>,
    page_path: Option<serde_json::Value>,
    display_name: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunnel {
    name: Option<serde_json::Value>,
    steps: Option<serde_json::Value>,
}

/// A new funnel before its steps are resolved to goal ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFunnel {
    pub name: String,
    /// Goal ids or display names, in order.
    pub steps: Vec<String>,
}

fn name_rule(
    field: &str,
    v: Option<&serde_json::Value>,
    errors: &mut Vec<String>,
) -> Option<String> {
    match v {
        None => None,
        Some(serde_json::Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > MAX_NAME_CHARS {
                errors.push(format!("{field} must be 1..{MAX_NAME_CHARS} characters"));
                None
            } else if s.chars().any(char::is_control) {
                errors.push(format!("{field} must not contain control characters"));
                None
            } else {
                Some(s.to_string())
            }
        }
        Some(_) => {
            errors.push(format!("{field} must be a string"));
            None
        }
    }
}

/// Parses `POST /v1/sites/{id}/goals`; the id is minted here. Every problem is listed.
///
/// # Errors
/// The problems, in the words of the API.
pub fn parse_new_goal(body: &[u8]) -> Result<Goal, Vec<String>> {
    let raw: RawGoal =
        serde_json::from_slice(body).map_err(|e| vec![format!("invalid JSON body: {e}")])?;
    let mut errors = Vec::new();
    let event_name = name_rule("event_name", raw.event_name.as_ref(), &mut errors);
    let page_path = match raw.page_path {
        None => None,
        Some(serde_json::Value::String(p)) => {
            if !p.starts_with('/') || p.chars().count() > MAX_PATH_CHARS {
                errors.push(format!(
                    "page_path must start with / and be at most {MAX_PATH_CHARS} characters"
                ));
                None
            } else if p.chars().any(char::is_control) {
                errors.push("page_path must not contain control characters".into());
                None
            } else {
                Some(p)
            }
        }
        Some(_) => {
            errors.push("page_path must be a string".into());
            None
        }
    };
    let display_name = name_rule("display_name", raw.display_name.as_ref(), &mut errors);
    if event_name.as_deref() == Some(crate::event::PAGE_VIEW) {
        errors.push(format!(
            "event_name {:?} is every page view; give a page_path instead",
            crate::event::PAGE_VIEW
        ));
    }
    let given = usize::from(event_name.is_some()) + usize::from(page_path.is_some());
    if given != 1 && errors.is_empty() {
        errors.push("a goal has exactly one of event_name and page_path".into());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let display_name = display_name.unwrap_or_else(|| match (&event_name, &page_path) {
        (Some(e), _) => e.clone(),
        (_, Some(p)) => format!("Visit {p}"),
        _ => String::new(),
    });
    Ok(Goal {
        goal_id: mint_id("g"),
        display_name,
        event_name,
        page_path,
    })
}

/// Parses `POST /v1/sites/{id}/funnels`.
///
/// # Errors
/// The problems, in the words of the API.
pub fn parse_new_funnel(body: &[u8]) -> Result<NewFunnel, Vec<String>> {
    let raw: RawFunnel =
        serde_json::from_slice(body).map_err(|e| vec![format!("invalid JSON body: {e}")])?;
    let mut errors = Vec::new();
    let name = name_rule("name", raw.name.as_ref(), &mut errors);
    if raw.name.is_none() {
        errors.push("name is required".into());
    }
    let steps: Vec<String> = match raw.steps {
        Some(serde_json::Value::Array(items)) if FUNNEL_STEPS.contains(&items.len()) => items
            .iter()
            .filter_map(|s| {
                let step = s.as_str().filter(|s| !s.is_empty() && s.len() <= 1000);
                if step.is_none() {
                    errors.push("steps must be goal ids or goal names (strings)".into());
                }
                step.map(str::to_string)
            })
            .collect(),
        _ => {
            errors.push(format!(
                "steps must list {} to {} goals (ids or names) in order",
                FUNNEL_STEPS.start(),
                FUNNEL_STEPS.end()
            ));
            Vec::new()
        }
    };
    errors.dedup();
    match name {
        Some(name) if errors.is_empty() => Ok(NewFunnel { name, steps }),
        _ => Err(errors),
    }
}

impl NewFunnel {
    /// The funnel with its steps as goal ids of `goals` (a step may name a goal by id or
    /// by display name); the id is minted here.
    ///
    /// # Errors
    /// The steps that name no goal, or a goal named twice.
    pub fn resolve(&self, goals: &[Goal]) -> Result<Funnel, Vec<String>> {
        let mut errors = Vec::new();
        let mut steps = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            match goals
                .iter()
                .find(|g| g.goal_id == *step)
                .or_else(|| goals.iter().find(|g| g.display_name == *step))
            {
                Some(g) if steps.contains(&g.goal_id) => {
                    errors.push(format!("steps name goal {:?} twice", g.display_name));
                }
                Some(g) => steps.push(g.goal_id.clone()),
                None => errors.push(format!("step {step:?} is not a goal of this site")),
            }
        }
        if errors.is_empty() {
            Ok(Funnel {
                funnel_id: mint_id("f"),
                name: self.name.clone(),
                steps,
            })
        } else {
            Err(errors)
        }
    }
}

fn mint_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &hex[..12])
}

/// What an edit of a site's goals or funnels did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditOutcome {
    /// Done: the site after the change.
    Done(Site),
    /// No such site, or (a removal) no such goal or funnel.
    SiteMissing,
    ItemMissing,
    /// The site has as many as it may.
    Full,
    /// An item with the same id or name exists.
    Exists,
    /// A funnel step names a goal that is gone.
    UnknownGoal,
    /// The goal is a step of this funnel.
    InUse(String),
    /// The registry is being restored: try again shortly.
    Restoring,
}

/// The lists a site record holds.
#[derive(Debug, Clone, Copy)]
enum List {
    Goals,
    Funnels,
}

impl List {
    fn field(self) -> &'static str {
        match self {
            Self::Goals => "goals",
            Self::Funnels => "funnels",
        }
    }

    fn max(self) -> usize {
        match self {
            Self::Goals => MAX_GOALS,
            Self::Funnels => MAX_FUNNELS,
        }
    }
}

async fn edit<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    (list, op): (List, &str),
    item: &str,
    now: DateTime<Utc>,
) -> RedisResult<EditOutcome> {
    let reply: Vec<String> = EDIT
        .key(keys.site_record(site_id))
        .key(keys.sites_version())
        .key(keys.sites_restored())
        .key(&keys.sites_queue().queue)
        .arg(list.field())
        .arg(op)
        .arg(now.timestamp_millis())
        .arg(item)
        .arg(list.max())
        .invoke_async(conn)
        .await?;
    Ok(match reply.first().map(String::as_str) {
        Some("ok") => {
            let record: HashMap<String, String> = reply[1..]
                .chunks_exact(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect();
            EditOutcome::Done(Site::from_record(&record).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Parse, "edit_site_list.lua", e))
            })?)
        }
        Some("missing") => EditOutcome::SiteMissing,
        Some("not_found") => EditOutcome::ItemMissing,
        Some("full") => EditOutcome::Full,
        Some("exists") => EditOutcome::Exists,
        Some("unknown_goal") => EditOutcome::UnknownGoal,
        Some("in_use") => EditOutcome::InUse(reply.get(1).cloned().unwrap_or_default()),
        _ => EditOutcome::Restoring,
    })
}

/// Adds `goal` to the site.
///
/// # Errors
/// When Redis is unreachable; nothing was changed then.
pub async fn add_goal<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    goal: &Goal,
    now: DateTime<Utc>,
) -> RedisResult<EditOutcome> {
    let item = serde_json::to_string(goal).unwrap_or_default();
    edit(conn, keys, site_id, (List::Goals, "add"), &item, now).await
}

/// Removes goal `goal_id` unless a funnel names it.
///
/// # Errors
/// When Redis is unreachable.
pub async fn remove_goal<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    goal_id: &str,
    now: DateTime<Utc>,
) -> RedisResult<EditOutcome> {
    edit(conn, keys, site_id, (List::Goals, "remove"), goal_id, now).await
}

/// Adds `funnel` (its steps goal ids of the site).
///
/// # Errors
/// When Redis is unreachable; nothing was changed then.
pub async fn add_funnel<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    funnel: &Funnel,
    now: DateTime<Utc>,
) -> RedisResult<EditOutcome> {
    let item = serde_json::to_string(funnel).unwrap_or_default();
    edit(conn, keys, site_id, (List::Funnels, "add"), &item, now).await
}

/// Removes funnel `funnel_id`.
///
/// # Errors
/// When Redis is unreachable.
pub async fn remove_funnel<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    funnel_id: &str,
    now: DateTime<Utc>,
) -> RedisResult<EditOutcome> {
    edit(
        conn,
        keys,
        site_id,
        (List::Funnels, "remove"),
        funnel_id,
        now,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        let goal = Goal {
            goal_id: "g".into(),
            display_name: "g".into(),
            event_name: None,
            page_path: Some(pattern.into()),
        };
        goal.matches(crate::event::PAGE_VIEW, Some(path))
    }

    #[test]
    fn one_star_stays_in_a_segment_two_cross_them() {
        assert!(matches("/blog/*", "/blog/post"));
        assert!(!matches("/blog/*", "/blog/a/b"));
        assert!(matches("/blog/**", "/blog/a/b"));
        assert!(matches("/thanks", "/thanks"));
        assert!(!matches("/thanks", "/thanks/more"));
        assert!(matches("/p.html", "/p.html"));
        assert!(!matches("/p.html", "/pxhtml"));
        assert!(matches("/p1*", "/p10") && matches("/p1*", "/p1") && !matches("/p1*", "/p1/x"));
        assert!(matches("/**/done", "/a/b/done") && !matches("/*/done", "/a/b/done"));
        // The SQL side: the same pattern as a regular expression, metacharacters literal.
        assert_eq!(path_pattern_regex("/a.(b)*"), r"^/a\.\(b\)[^/]*$");
        assert_eq!(path_pattern_regex("/**/x"), "^/.*/x$");
    }

    #[test]
    fn a_goal_is_an_event_or_a_page_never_both_nor_page_views() {
        let g = parse_new_goal(br#"{"event_name": "Signup"}"#).expect("event goal");
        assert_eq!(
            (g.display_name.as_str(), g.goal_type()),
            ("Signup", "event")
        );
        let g = parse_new_goal(br#"{"page_path": "/thanks/*"}"#).expect("page goal");
        assert_eq!(g.display_name, "Visit /thanks/*");
        assert!(parse_new_goal(br#"{"event_name": "a", "page_path": "/b"}"#).is_err());
        assert!(parse_new_goal(br"{}").is_err());
        assert!(parse_new_goal(br#"{"event_name": "page_view"}"#).is_err());
        assert!(parse_new_goal(br#"{"page_path": "no-slash"}"#).is_err());
        assert!(parse_new_goal(br#"{"event_name": "a", "goal": 1}"#).is_err());
    }

    #[test]
    fn funnel_steps_resolve_by_id_or_name_once_each() {
        let goals = vec![
            parse_new_goal(br#"{"page_path": "/pricing"}"#).expect("goal"),
            parse_new_goal(br#"{"event_name": "Signup"}"#).expect("goal"),
        ];
        let f = parse_new_funnel(br#"{"name": "f", "steps": ["Visit /pricing", "Signup"]}"#)
            .expect("funnel");
        let resolved = f.resolve(&goals).expect("resolves");
        assert_eq!(
            resolved.steps,
            vec![goals[0].goal_id.clone(), goals[1].goal_id.clone()]
        );
        let twice =
            parse_new_funnel(br#"{"name": "f", "steps": ["Signup", "Signup"]}"#).expect("parses");
        assert!(twice.resolve(&goals).is_err());
        assert!(parse_new_funnel(br#"{"name": "f", "steps": ["Signup"]}"#).is_err());
        assert!(parse_new_funnel(br#"{"steps": ["a", "b"]}"#).is_err());
    }
}
