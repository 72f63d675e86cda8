//! The site registry: which sites exist, their domains, time zone and visibility.
//!
//! ingest-api writes the registry (the admin API) with one Lua step each
//! (`put_record.lua`, shared with the webhook endpoints registry): the change lands in the Redis mirror, which ingest-api reads, and is
//! queued for the batch-worker, which stores it in PostgreSQL, the durable record. Each
//! change takes the next value of a counter (`version`); PostgreSQL keeps a change only
//! over an older one, so workers storing changes in any order end on the newest.
//!
//! If Redis loses its data, the "restored" marker is gone with it: the registry answers
//! "restoring" to writes (and ingest-api, in `SITES_MODE=registered`, answers 503 for
//! sites it does not know) until a worker has put every site back from PostgreSQL and
//! raised the counter above every version PostgreSQL holds.
//!
//! In Redis a site is a hash of strings (`put_record.lua` writes it without parsing JSON);
//! a queued change is the same record as a JSON object of strings plus `deleted`.

use crate::goals::{Funnel, Goal};
use crate::keys::Keys;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

/// Name (and hash tag) of the registry's keys and its queue.
pub const SITES_QUEUE: &str = "sites";
/// Most domains one site may list.
pub const MAX_DOMAINS: usize = 100;
/// Longest domain name (RFC 1035).
pub const MAX_DOMAIN_CHARS: usize = 253;

static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/put_record.lua")));
static RESTORE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/restore_record.lua")));
static RAISE_VERSION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/raise_site_version.lua")));

/// A registered site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub site_id: String,
    /// Hosts browser events may come from (a listed domain covers its subdomains); empty:
    /// any host.
    pub domains: Vec<String>,
    /// IANA time zone of the site's days.
    pub timezone: String,
    /// Stats and the live stream readable without a token.
    pub public: bool,
    /// What counts as a conversion (see [`crate::goals`]).
    pub goals: Vec<Goal>,
    pub funnels: Vec<Funnel>,
    /// The registry version of the last change.
    #[serde(skip)]
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Site {
    /// Whether a browser event from `host` may count for this site: any host when no
    /// domains are listed, else a listed domain or one of its subdomains (ports ignored,
    /// case-insensitive).
    pub fn allows_host(&self, host: &str) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.domains.iter().any(|d| {
            host == *d
                || (host.len() > d.len()
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.')
        })
    }

    /// The site's time zone (UTC when the stored name is unknown to this build).
    pub fn tz(&self) -> chrono_tz::Tz {
        chrono_tz::Tz::from_str(&self.timezone).unwrap_or(chrono_tz::UTC)
    }

    /// Reads a record (the Redis hash, or a queued change).
    ///
    /// # Errors
    /// When a field is missing or malformed.
    pub fn from_record(record: &HashMap<String, String>) -> Result<Self, String> {
        let field = |name: &str| {
            record
                .get(name)
                .ok_or_else(|| format!("site record without {name}"))
        };
        let ms = |name: &str| -> Result<DateTime<Utc>, String> {
            field(name)?
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .ok_or_else(|| format!("site record with a bad {name}"))
        };
        let domains: Vec<String> = serde_json::from_str(field("domains")?)
            .map_err(|e| format!("site record with bad domains: {e}"))?;
        Ok(Self {
            site_id: field("site_id")?.clone(),
            domains,
            timezone: field("timezone")?.clone(),
            public: field("public")? == "1",
            goals: crate::goals::list_field(record, "goals")?,
            funnels: crate::goals::list_field(record, "funnels")?,
            version: field("version")?
                .parse()
                .map_err(|_| "site record with a bad version".to_string())?,
            created_at: ms("created_at_ms")?,
            updated_at: ms("updated_at_ms")?,
        })
    }

    /// The record as Redis holds it: field, value, ...
    pub fn to_record(&self) -> Vec<(&'static str, String)> {
        vec![
            ("site_id", self.site_id.clone()),
            (
                "domains",
                serde_json::to_string(&self.domains).unwrap_or_else(|_| "[]".into()),
            ),
            ("timezone", self.timezone.clone()),
            ("public", if self.public { "1" } else { "0" }.to_string()),
            (
                "goals",
                serde_json::to_string(&self.goals).unwrap_or_else(|_| "[]".into()),
            ),
            (
                "funnels",
                serde_json::to_string(&self.funnels).unwrap_or_else(|_| "[]".into()),
            ),
            ("version", self.version.to_string()),
            (
                "created_at_ms",
                self.created_at.timestamp_millis().to_string(),
            ),
            (
                "updated_at_ms",
                self.updated_at.timestamp_millis().to_string(),
            ),
        ]
    }
}

/// A queued registry change: the site as it is after the change (as it was, for a delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteChange {
    pub site: Site,
    pub deleted: bool,
}

/// Reads a queued change back (the worker).
///
/// # Errors
/// When the message is not a change `put_record.lua` wrote (the worker dead-letters it).
pub fn parse_change(message: &[u8]) -> Result<SiteChange, String> {
    let record: HashMap<String, String> =
        serde_json::from_slice(message).map_err(|e| format!("not a site change: {e}"))?;
    Ok(SiteChange {
        deleted: record.get("deleted").is_some_and(|d| d == "1"),
        site: Site::from_record(&record)?,
    })
}

/// `POST /v1/sites`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSite {
    pub site_id: String,
    pub domains: Vec<String>,
    pub timezone: String,
    pub public: bool,
}

/// `PATCH /v1/sites/{site_id}`, validated: what changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SitePatch {
    pub domains: Option<Vec<String>>,
    pub timezone: Option<String>,
    pub public: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    site_id: Option<serde_json::Value>,
    domains: Option<serde_json::Value>,
    timezone: Option<serde_json::Value>,
    public: Option<serde_json::Value>,
}

/// Parses and validates a new site; every problem is listed.
///
/// # Errors
/// The problems, in the words of the API.
pub fn parse_new_site(body: &[u8]) -> Result<NewSite, Vec<String>> {
    let raw = parse_raw(body)?;
    let mut errors = Vec::new();
    let site_id = match raw.site_id {
        Some(serde_json::Value::String(s)) => match check_site_id(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        _ => {
            errors.push("site_id is required and must be a string".into());
            None
        }
    };
    let patch = validate_patch(raw.domains, raw.timezone, raw.public, &mut errors);
    match site_id {
        Some(site_id) if errors.is_empty() => Ok(NewSite {
            site_id,
            domains: patch.domains.unwrap_or_default(),
            timezone: patch.timezone.unwrap_or_else(|| "UTC".into()),
            public: patch.public.unwrap_or(false),
        }),
        _ => Err(errors),
    }
}

/// Parses and validates a change to a site; `site_id` cannot change.
///
/// # Errors
/// The problems, in the words of the API.
pub fn parse_site_patch(body: &[u8]) -> Result<SitePatch, Vec<String>> {
    let raw = parse_raw(body)?;
    let mut errors = Vec::new();
    if raw.site_id.is_some() {
        errors.push("site_id cannot be changed".into());
    }
    let patch = validate_patch(raw.domains, raw.timezone, raw.public, &mut errors);
    if errors.is_empty() {
        Ok(patch)
    } else {
        Err(errors)
    }
}

fn parse_raw(body: &[u8]) -> Result<RawSite, Vec<String>> {
    serde_json::from_slice(body).map_err(|e| vec![format!("invalid JSON body: {e}")])
}

/// The rule of site ids (the same as for events).
///
/// # Errors
/// A client-facing message.
pub fn check_site_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("site_id is required and must be a string".into());
    }
    if s.chars().count() > crate::event::MAX_SITE_ID_CHARS {
        return Err(format!(
            "site_id must be at most {} characters",
            crate::event::MAX_SITE_ID_CHARS
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("site_id must not contain control characters".into());
    }
    Ok(())
}

fn validate_patch(
    domains: Option<serde_json::Value>,
    timezone: Option<serde_json::Value>,
    public: Option<serde_json::Value>,
    errors: &mut Vec<String>,
) -> SitePatch {
    let domains = domains.and_then(|v| match v {
        serde_json::Value::Array(items) if items.len() <= MAX_DOMAINS => {
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str().map(normalize_domain) {
                    Some(Ok(d)) => {
                        if !out.contains(&d) {
                            out.push(d);
                        }
                    }
                    Some(Err(e)) => errors.push(e),
                    None => errors.push("domains must be an array of strings".into()),
                }
            }
            Some(out)
        }
        serde_json::Value::Array(_) => {
            errors.push(format!("domains must list at most {MAX_DOMAINS} domains"));
            None
        }
        _ => {
            errors.push("domains must be an array of strings".into());
            None
        }
    });
    let timezone = timezone.and_then(|v| match v.as_str().map(parse_timezone) {
        Some(Ok(tz)) => Some(tz.name().to_string()),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => {
            errors.push("timezone must be a string (an IANA name such as Europe/Berlin)".into());
            None
        }
    });
    let public = public.and_then(|v| match v {
        serde_json::Value::Bool(b) => Some(b),
        _ => {
            errors.push("public must be true or false".into());
            None
        }
    });
    SitePatch {
        domains,
        timezone,
        public,
    }
}

/// A domain as the registry keeps it: lowercase, without a trailing dot.
///
/// # Errors
/// A client-facing message when `d` is not a host name or address (no scheme, path or
/// port).
pub fn normalize_domain(d: &str) -> Result<String, String> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !d.is_empty()
        && d.len() <= MAX_DOMAIN_CHARS
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !d.starts_with('.')
        && !d.contains("..");
    if valid {
        Ok(d)
    } else {
        Err(format!(
            "domains: {d:?} is not a host name (give example.com, without scheme, path or port)"
        ))
    }
}

/// An IANA time zone name.
///
/// # Errors
/// A client-facing message naming the zone.
pub fn parse_timezone(s: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(s).map_err(|_| {
        format!("timezone: {s:?} is not an IANA time zone name (such as Europe/Berlin or UTC)")
    })
}

/// What a registry write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Done; the site as it is now (as it was, for a delete).
    Done(Site),
    /// The mirror is being rebuilt from PostgreSQL: try again shortly.
    Restoring,
    /// Create: the site exists already.
    Exists,
    /// Update or delete: no such site.
    Missing,
}

async fn put<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    op: &str,
    site_id: &str,
    patch: &SitePatch,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    let mut invocation = PUT.prepare_invoke();
    invocation
        .key(keys.site_record(site_id))
        .key(keys.site_ids())
        .key(keys.sites_version())
        .key(keys.sites_restored())
        .key(&keys.sites_queue().queue)
        .arg(op)
        .arg(site_id)
        .arg(now.timestamp_millis())
        .arg("site_id");
    if let Some(domains) = &patch.domains {
        invocation
            .arg("domains")
            .arg(serde_json::to_string(domains).unwrap_or_else(|_| "[]".into()));
    }
    if let Some(timezone) = &patch.timezone {
        invocation.arg("timezone").arg(timezone);
    }
    if let Some(public) = patch.public {
        invocation.arg("public").arg(if public { "1" } else { "0" });
    }
    let reply: Vec<String> = invocation.invoke_async(conn).await?;
    Ok(match reply.first().map(String::as_str) {
        Some("ok") => {
            let record: HashMap<String, String> = reply[1..]
                .chunks_exact(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect();
            let site = Site::from_record(&record).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Parse, "put_record.lua", e))
            })?;
            PutOutcome::Done(site)
        }
        Some("exists") => PutOutcome::Exists,
        Some("missing") => PutOutcome::Missing,
        _ => PutOutcome::Restoring,
    })
}

/// Registers `site`.
///
/// # Errors
/// When Redis is unreachable; nothing was changed then.
pub async fn create<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site: &NewSite,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    let full = SitePatch {
        domains: Some(site.domains.clone()),
        timezone: Some(site.timezone.clone()),
        public: Some(site.public),
    };
    put(conn, keys, "create", &site.site_id, &full, now).await
}

/// Changes what `patch` names of site `site_id`.
///
/// # Errors
/// When Redis is unreachable.
pub async fn update<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    patch: &SitePatch,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    put(conn, keys, "update", site_id, patch, now).await
}

/// Removes site `site_id` from the registry (its data stays).
///
/// # Errors
/// When Redis is unreachable.
pub async fn delete<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    put(conn, keys, "delete", site_id, &SitePatch::default(), now).await
}

/// One site from the mirror.
///
/// # Errors
/// When Redis is unreachable or the record is malformed.
pub async fn get<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
) -> RedisResult<Option<Site>> {
    let Some(record) = crate::registry::record(conn, &keys.site_record(site_id)).await? else {
        return Ok(None);
    };
    Site::from_record(&record)
        .map(Some)
        .map_err(|e| redis::RedisError::from((redis::ErrorKind::Parse, "site record", e)))
}

/// The registry's version and whether the mirror is complete, in one round trip: a
/// reader reloads the sites when the version moved.
///
/// # Errors
/// When Redis is unreachable.
pub async fn version<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<(i64, bool)> {
    crate::registry::version(conn, &keys.sites_version(), &keys.sites_restored()).await
}

/// Every site of the mirror, with the version read before them (so a change made while
/// reading is seen by the next reload). Malformed records are left out and logged.
///
/// # Errors
/// When Redis is unreachable.
pub async fn all<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<(i64, bool, Vec<Site>)> {
    let (version, restored) = version(conn, keys).await?;
    let records =
        crate::registry::records(conn, &keys.site_ids(), |id| keys.site_record(id)).await?;
    let mut sites = Vec::with_capacity(records.len());
    for record in &records {
        match Site::from_record(record) {
            Ok(site) => sites.push(site),
            Err(e) => tracing::warn!(error = e, "skipping a malformed site record"),
        }
    }
    Ok((version, restored, sites))
}

/// The worker's restore: puts `site` (from PostgreSQL) back unless the mirror has the same
/// or a newer version. Returns whether it was written.
///
/// # Errors
/// When Redis is unreachable.
pub async fn restore<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site: &Site,
) -> RedisResult<bool> {
    let mut invocation = RESTORE.prepare_invoke();
    invocation
        .key(keys.site_record(&site.site_id))
        .key(keys.site_ids())
        .key(keys.sites_version())
        .arg(&site.site_id);
    for (field, value) in site.to_record() {
        invocation.arg(field).arg(value);
    }
    let written: i64 = invocation.invoke_async(conn).await?;
    Ok(written == 1)
}

/// Raises the registry's counter to at least `floor` (the newest version PostgreSQL holds,
/// deleted sites included).
///
/// # Errors
/// When Redis is unreachable.
pub async fn raise_version<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    floor: i64,
) -> RedisResult<i64> {
    RAISE_VERSION
        .key(keys.sites_version())
        .arg(floor)
        .invoke_async(conn)
        .await
}

/// The "restored" marker of the mirror and the lock of restoring it (the registries'
/// common markers, [`crate::registry::marker`], on the site registry's keys).
pub mod marker {
    use super::{ConnectionLike, Keys, RedisResult};
    use crate::registry::marker as common;

    /// Says the mirror holds every site PostgreSQL has.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn set_restored<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
    ) -> RedisResult<()> {
        common::set(conn, &keys.sites_restored()).await
    }

    /// Takes the restore lock for `owner`; false when someone else holds it.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn lock<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        owner: &str,
        ttl_ms: u64,
    ) -> RedisResult<bool> {
        common::lock(conn, &keys.sites_restoring(), owner, ttl_ms).await
    }

    /// Releases the restore lock if `owner` still holds it (a restorer whose lock expired
    /// and was taken over must not release its successor's).
    ///
    /// # Errors
    /// When Redis is unreachable (the lock then expires by itself).
    pub async fn unlock<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        owner: &str,
    ) -> RedisResult<()> {
        common::unlock(conn, &keys.sites_restoring(), owner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(domains: &[&str]) -> Site {
        Site {
            site_id: "s".into(),
            domains: domains.iter().map(|d| (*d).to_string()).collect(),
            timezone: "UTC".into(),
            public: false,
            goals: Vec::new(),
            funnels: Vec::new(),
            version: 1,
            created_at: DateTime::from_timestamp_millis(0).expect("epoch"),
            updated_at: DateTime::from_timestamp_millis(0).expect("epoch"),
        }
    }

    #[test]
    fn a_domain_covers_itself_and_its_subdomains_only() {
        let s = site(&["example.com"]);
        assert!(s.allows_host("example.com"));
        assert!(s.allows_host("WWW.Example.com"));
        assert!(s.allows_host("blog.example.com."));
        assert!(!s.allows_host("badexample.com"));
        assert!(!s.allows_host("example.com.evil.net"));
        assert!(site(&[]).allows_host("anything.org"));
    }

    #[test]
    fn new_sites_are_validated_listing_every_problem() {
        let ok = parse_new_site(
            br#"{"site_id":"example.com","domains":["Example.com.","www.example.com","example.com"],"timezone":"America/New_York","public":true}"#,
        )
        .expect("valid");
        assert_eq!(ok.domains, vec!["example.com", "www.example.com"]);
        assert_eq!(ok.timezone, "America/New_York");
        let defaults = parse_new_site(br#"{"site_id":"s"}"#).expect("valid");
        assert_eq!(
            (defaults.timezone.as_str(), defaults.public),
            ("UTC", false)
        );
        let errors = parse_new_site(
            br#"{"domains":["https://x.com/path"],"timezone":"Mars/Olympus","public":"yes"}"#,
        )
        .expect_err("invalid");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("site_id"));
        let unknown = parse_new_site(br#"{"site_id":"s","colour":"red"}"#).expect_err("unknown");
        assert!(unknown[0].contains("colour"), "{unknown:?}");
    }

    #[test]
    fn a_patch_names_only_what_changes() {
        let p = parse_site_patch(br#"{"timezone":"UTC"}"#).expect("valid");
        assert_eq!(
            p,
            SitePatch {
                timezone: Some("UTC".into()),
                ..SitePatch::default()
            }
        );
        assert!(parse_site_patch(br#"{"site_id":"other"}"#).is_err());
    }

    #[test]
    fn records_round_trip() {
        let mut s = site(&["a.com"]);
        s.public = true;
        let record: HashMap<String, String> = s
            .to_record()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(Site::from_record(&record), Ok(s));
    }
}
