//! What the worker derives from a browser event's `url` and `referrer` (nothing here needs
//! the client's address, so ingest-api leaves it to the worker): path and hostname of the
//! page, UTM fields, the referrer and its source, and the device class, which the viewport
//! width decides better than the User-Agent.
//!
//! Source, as Plausible reads it: `utm_source` (or `ref`/`source`) when the URL has one,
//! else the referrer's well-known name ("Google"), else its host; none for direct visits
//! and for referrers on the page's own host (navigation within the site).

use super::referrers::source_name;
use domain::event::{MAX_PATH_CHARS, QueuedEvent};
use std::borrow::Cow;

/// Longest text kept in a derived field.
const MAX_FIELD_CHARS: usize = 255;
/// Longest stored referrer (host and path).
const MAX_REFERRER_CHARS: usize = 1000;

/// The stored fields of one event beyond what it was sent with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Derived<'a> {
    /// The event's `path`, or the path of its `url`.
    pub path: Option<Cow<'a, str>>,
    pub hostname: Option<String>,
    pub referrer: Option<String>,
    pub referrer_source: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
    pub device: Option<&'a str>,
}

/// The path `e` is stored with: its own, or its `url`'s (what [`derive`] gives, for code
/// that needs only the path).
pub fn path_of<'a>(e: &'a QueuedEvent<'_>) -> Option<Cow<'a, str>> {
    e.path.as_deref().map(Cow::Borrowed).or_else(|| {
        let page = url::Url::parse(e.url.as_deref()?).ok()?;
        Some(Cow::Owned(truncate(page.path(), MAX_PATH_CHARS)))
    })
}

/// Derives the stored fields of `e`.
pub fn derive<'a>(e: &'a QueuedEvent<'_>) -> Derived<'a> {
    let mut d = Derived {
        path: e.path.as_deref().map(Cow::Borrowed),
        device: device_class(e.screen_width).or(e.device.as_deref()),
        ..Derived::default()
    };
    let page = e.url.as_deref().and_then(|u| url::Url::parse(u).ok());
    let mut tagged_source = None;
    if let Some(page) = &page {
        d.hostname = page.host_str().map(str::to_ascii_lowercase);
        if d.path.is_none() {
            d.path = Some(Cow::Owned(truncate(page.path(), MAX_PATH_CHARS)));
        }
        for (key, value) in page.query_pairs() {
            let value = Some(truncate(&value, MAX_FIELD_CHARS)).filter(|v| !v.is_empty());
            let slot = match key.as_ref() {
                "utm_source" => &mut d.utm_source,
                "utm_medium" => &mut d.utm_medium,
                "utm_campaign" => &mut d.utm_campaign,
                "utm_term" => &mut d.utm_term,
                "utm_content" => &mut d.utm_content,
                "ref" | "source" => &mut tagged_source,
                _ => continue,
            };
            if slot.is_none() {
                *slot = value;
            }
        }
    }
    if let Some(referrer) = e.referrer.as_deref().and_then(|r| url::Url::parse(r).ok())
        && matches!(referrer.scheme(), "http" | "https" | "android-app")
        && let Some(host) = referrer.host_str()
    {
        let host = host.to_ascii_lowercase();
        let bare = host.strip_prefix("www.").unwrap_or(&host);
        let own = d
            .hostname
            .as_deref()
            .is_some_and(|h| h.strip_prefix("www.").unwrap_or(h) == bare);
        if !own {
            d.referrer = Some(truncate(
                &format!("{bare}{}", referrer.path().trim_end_matches('/')),
                MAX_REFERRER_CHARS,
            ));
            d.referrer_source = Some(
                source_name(bare).map_or_else(|| truncate(bare, MAX_FIELD_CHARS), str::to_string),
            );
        }
    }
    if let Some(tagged) = d.utm_source.clone().or(tagged_source) {
        d.referrer_source =
            Some(source_name(&tagged.to_ascii_lowercase()).map_or(tagged, str::to_string));
    }
    d
}

/// Device class from the viewport width, as Plausible's tracker buckets it.
fn device_class(screen_width: Option<u32>) -> Option<&'static str> {
    Some(match screen_width? {
        0 => return None,
        w if w < 576 => "mobile",
        w if w < 992 => "tablet",
        _ => "desktop",
    })
}

/// At most `max_chars` characters of `s`, without control characters: decoded query
/// values may hold anything (`%00` included, which PostgreSQL refuses in text).
fn truncate(s: &str, max_chars: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use domain::event::parse_event_body;

    fn derived_of(fields: &str) -> Derived<'static> {
        let body = format!(
            r#"{{"site_id":"s","event_type":"page_view","timestamp":"2025-01-01T00:00:00Z",{fields}}}"#
        );
        let body: &'static [u8] = Box::leak(body.into_bytes().into_boxed_slice());
        let events: &'static [QueuedEvent<'static>] = Box::leak(
            parse_event_body(body, Utc::now(), None)
                .expect("valid")
                .into_boxed_slice(),
        );
        derive(&events[0])
    }

    #[test]
    fn the_page_url_gives_path_hostname_and_utm_fields() {
        let d = derived_of(
            r#""url":"https://WWW.Example.com/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=launch&x=1#top","screen_width":390"#,
        );
        assert_eq!(d.path.as_deref(), Some("/pricing"));
        assert_eq!(d.hostname.as_deref(), Some("www.example.com"));
        assert_eq!(
            (
                d.utm_source.as_deref(),
                d.utm_medium.as_deref(),
                d.utm_campaign.as_deref()
            ),
            (Some("newsletter"), Some("email"), Some("launch"))
        );
        assert_eq!(d.referrer_source.as_deref(), Some("newsletter"));
        assert_eq!(d.device, Some("mobile"));
    }

    #[test]
    fn referrers_are_named_and_internal_ones_ignored() {
        let d = derived_of(
            r#""url":"https://example.com/","referrer":"https://www.google.co.uk/search?q=tally""#,
        );
        assert_eq!(d.referrer.as_deref(), Some("google.co.uk/search"));
        assert_eq!(d.referrer_source.as_deref(), Some("Google"));
        let d = derived_of(
            r#""url":"https://example.com/a","referrer":"https://blog.other.org/post/""#,
        );
        assert_eq!(d.referrer_source.as_deref(), Some("blog.other.org"));
        assert_eq!(d.referrer.as_deref(), Some("blog.other.org/post"));
        let own =
            derived_of(r#""url":"https://www.example.com/b","referrer":"https://example.com/a""#);
        assert_eq!((own.referrer, own.referrer_source), (None, None));
    }

    #[test]
    fn a_given_path_wins_and_the_ua_device_is_the_fallback() {
        let d = derived_of(r#""path":"/given","url":"https://example.com/other""#);
        assert_eq!(d.path.as_deref(), Some("/given"));
        assert_eq!(d.device, None);
        assert_eq!(device_class(Some(800)), Some("tablet"));
        assert_eq!(device_class(Some(1440)), Some("desktop"));
    }

    #[test]
    fn decoded_values_lose_their_control_characters() {
        let d = derived_of(r#""url":"https://example.com/?utm_source=a%00b%0Ac&ref=%00""#);
        assert_eq!(d.utm_source.as_deref(), Some("abc"));
        assert_eq!(d.referrer_source.as_deref(), Some("abc"));
    }

    #[test]
    fn server_events_derive_nothing() {
        let d = derived_of(r#""path":"/p","user_id":"u""#);
        assert_eq!(
            d,
            Derived {
                path: Some(Cow::Borrowed("/p")),
                ..Derived::default()
            }
        );
    }
}
