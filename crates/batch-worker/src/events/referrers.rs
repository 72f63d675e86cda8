//! Referrer host → traffic source name ("Google", "Hacker News", ...).
//!
//! Naming follows Snowplow's referer-parser database (`referers.yml`), which
//! Plausible uses through the RefInspector library and extends with its own
//! custom sources (e.g. Android app ids). This table is a small hand-picked
//! subset written from scratch, not a copy of either; the AI-assistant and
//! Mastodon-instance entries are our own additions. Anything unknown returns
//! `None` so the caller can fall back to showing the host.
//!
//! Lookup order, most specific first:
//! 1. the host itself, then each parent domain, in `SOURCES`
//!    (so `mail.google.com` is "Gmail" before `google.com` is considered,
//!    and `l.facebook.com` / `old.reddit.com` fall back to their parent);
//! 2. search engines that live under many country TLDs (`google.co.uk`,
//!    `yandex.com.tr`, `yahoo.co.jp`), matched structurally in `COUNTRY_TLD_BRANDS`.
//!
//! No regex and no allocation: every step compares slices of the input.

/// Sorted by byte order (binary search); the tests check that. Keys are
/// lowercase, without `www.`, and a key also matches all of its subdomains,
/// so only add domains whose subdomains all belong to the same source
/// (never shared hosting like `github.io` or `blogspot.com`).
static SOURCES: &[(&str, &str)] = &[
    ("ask.com", "Ask"),
    ("baidu.com", "Baidu"),
    ("bsky.app", "Bluesky"),
    ("chat.openai.com", "ChatGPT"),
    ("chatgpt.com", "ChatGPT"),
    ("claude.ai", "Claude"),
    ("coccoc.com", "Coc Coc"),
    ("com.google.android.gm", "Gmail"),
    ("com.google.android.googlequicksearchbox", "Google"),
    ("com.linkedin.android", "LinkedIn"),
    ("com.reddit.frontpage", "Reddit"),
    ("com.slack", "Slack"),
    ("copilot.microsoft.com", "Copilot"),
    ("daum.net", "Daum"),
    ("dev.to", "DEV"),
    ("discord.com", "Discord"),
    ("discord.gg", "Discord"),
    ("discordapp.com", "Discord"),
    ("duckduckgo.com", "DuckDuckGo"),
    ("ecosia.org", "Ecosia"),
    ("facebook.com", "Facebook"),
    ("fb.com", "Facebook"),
    ("fb.me", "Facebook"),
    ("feedly.com", "Feedly"),
    ("flipboard.com", "Flipboard"),
    ("fosstodon.org", "Mastodon"),
    ("gemini.google.com", "Gemini"),
    ("github.com", "GitHub"),
    ("gitlab.com", "GitLab"),
    ("gmx.de", "GMX"),
    ("gmx.net", "GMX"),
    ("hachyderm.io", "Mastodon"),
    ("infosec.exchange", "Mastodon"),
    ("instagram.com", "Instagram"),
    ("kagi.com", "Kagi"),
    ("linkedin.com", "LinkedIn"),
    ("lnkd.in", "LinkedIn"),
    ("lobste.rs", "Lobsters"),
    ("mail.aol.com", "AOL Mail"),
    ("mail.google.com", "Gmail"),
    ("mail.proton.me", "Proton Mail"),
    ("mail.ru", "Mail.ru"),
    ("mail.yahoo.com", "Yahoo! Mail"),
    ("mail.yandex.ru", "Yandex Mail"),
    ("mastodon.online", "Mastodon"),
    ("mastodon.social", "Mastodon"),
    ("medium.com", "Medium"),
    ("messenger.com", "Facebook Messenger"),
    ("mojeek.com", "Mojeek"),
    ("mstdn.social", "Mastodon"),
    ("naver.com", "Naver"),
    ("news.ycombinator.com", "Hacker News"),
    ("ok.ru", "Odnoklassniki"),
    ("org.telegram.messenger", "Telegram"),
    ("outlook.live.com", "Outlook"),
    ("outlook.office.com", "Outlook"),
    ("outlook.office365.com", "Outlook"),
    ("perplexity.ai", "Perplexity"),
    ("pin.it", "Pinterest"),
    ("pinterest.com", "Pinterest"),
    ("producthunt.com", "Product Hunt"),
    ("quora.com", "Quora"),
    ("qwant.com", "Qwant"),
    ("redd.it", "Reddit"),
    ("reddit.com", "Reddit"),
    ("search.aol.com", "AOL"),
    ("search.brave.com", "Brave Search"),
    ("search.yahoo.com", "Yahoo!"),
    ("seznam.cz", "Seznam"),
    ("slack.com", "Slack"),
    ("snapchat.com", "Snapchat"),
    ("so.com", "360 Search"),
    ("sogou.com", "Sogou"),
    ("stackoverflow.com", "Stack Overflow"),
    ("startpage.com", "Startpage"),
    ("statics.teams.cdn.office.net", "Microsoft Teams"),
    ("substack.com", "Substack"),
    ("t.co", "Twitter"),
    ("t.me", "Telegram"),
    ("teams.microsoft.com", "Microsoft Teams"),
    ("telegram.org", "Telegram"),
    ("threads.net", "Threads"),
    ("tiktok.com", "TikTok"),
    ("tumblr.com", "Tumblr"),
    ("twitch.tv", "Twitch"),
    ("twitter.com", "Twitter"),
    ("vk.com", "VKontakte"),
    ("wa.me", "WhatsApp"),
    ("web.de", "WEB.DE"),
    ("weibo.com", "Weibo"),
    ("whatsapp.com", "WhatsApp"),
    ("wikipedia.org", "Wikipedia"),
    ("x.com", "Twitter"),
    ("ya.ru", "Yandex"),
    ("youtu.be", "YouTube"),
    ("youtube.com", "YouTube"),
];

/// Brands whose search lives on `<brand>.<country TLD>` (and subdomains of
/// it), too many variants to list: google.de, google.com.br, yandex.kz, ...
static COUNTRY_TLD_BRANDS: &[(&str, &str)] = &[
    ("bing", "Bing"),
    ("google", "Google"),
    ("yahoo", "Yahoo!"),
    ("yandex", "Yandex"),
];

/// Second-level labels used under country codes: google.co.uk, google.com.br,
/// yahoo.co.jp, ... A short allow-list keeps `google.evil.com` from matching.
static SECOND_LEVELS: &[&str] = &["co", "com", "ne", "net", "or", "org"];

/// Maps a referrer host (e.g. `url.host_str()`) to a well-known source name.
///
/// Case-insensitive; a leading `www.` and a trailing `.` (FQDN form) are ignored.
/// The host must not include a port.
pub fn source_name(host: &str) -> Option<&'static str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let host = match host.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("www.") => &host[4..],
        _ => host,
    };
    if host.is_empty() {
        return None;
    }
    known_domain(host).or_else(|| country_tld_brand(host))
}

/// Looks up `host`, then each parent domain with at least two labels.
fn known_domain(host: &str) -> Option<&'static str> {
    let mut candidate = host;
    loop {
        if let Some(name) = lookup(SOURCES, candidate) {
            return Some(name);
        }
        // Stop before bare TLDs: "com" alone must never match anything.
        let (_, parent) = candidate.split_once('.')?;
        if !parent.contains('.') {
            return None;
        }
        candidate = parent;
    }
}

/// Matches `[sub.]<brand>.<tld>` where `<tld>` looks like a (country) TLD:
/// one label (`de`, `com`, `cat`) or `co.uk`-style two labels.
fn country_tld_brand(host: &str) -> Option<&'static str> {
    let mut labels = host.rsplit('.');
    let last = labels.next()?;
    let second = labels.next()?;
    let third = labels.next();
    // Try `brand.tld` first, then `brand.sld.cc`; e.g. for google.co.uk the
    // first attempt sees brand "co" and fails harmlessly.
    if is_top_level(last)
        && let Some(name) = lookup(COUNTRY_TLD_BRANDS, second)
    {
        return Some(name);
    }
    if is_country_code(last) && SECOND_LEVELS.iter().any(|s| s.eq_ignore_ascii_case(second)) {
        return lookup(COUNTRY_TLD_BRANDS, third?);
    }
    None
}

fn is_top_level(label: &str) -> bool {
    is_country_code(label)
        || ["com", "net", "org", "cat"]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(label))
}

fn is_country_code(label: &str) -> bool {
    label.len() == 2 && label.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Binary search in a table with lowercase keys, comparing case-insensitively.
fn lookup(table: &[(&str, &'static str)], key: &str) -> Option<&'static str> {
    let key = || key.bytes().map(|b| b.to_ascii_lowercase());
    table
        .binary_search_by(|(k, _)| k.bytes().cmp(key()))
        .ok()
        .map(|i| table[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cases: &[(&str, Option<&str>)]) {
        for &(host, want) in cases {
            assert_eq!(source_name(host), want, "host {host:?}");
        }
    }

    #[test]
    fn tables_are_sorted_unique_and_normalised() {
        for table in [SOURCES, COUNTRY_TLD_BRANDS] {
            for pair in table.windows(2) {
                assert!(
                    pair[0].0 < pair[1].0,
                    "{:?} must sort before {:?}",
                    pair[0].0,
                    pair[1].0
                );
            }
            for (key, name) in table {
                assert_eq!(*key, key.to_ascii_lowercase(), "keys are lowercase");
                assert!(!key.starts_with("www.") && !key.ends_with('.'), "{key}");
                assert!(!name.is_empty());
            }
        }
        // every SOURCES key must be reachable, not shadowed by normalisation
        for (key, name) in SOURCES {
            assert_eq!(source_name(key), Some(*name), "{key}");
        }
    }

    #[test]
    fn exact_hosts() {
        check(&[
            ("bing.com", Some("Bing")),
            ("duckduckgo.com", Some("DuckDuckGo")),
            ("t.co", Some("Twitter")),
            ("twitter.com", Some("Twitter")),
            ("x.com", Some("Twitter")),
            ("facebook.com", Some("Facebook")),
            ("news.ycombinator.com", Some("Hacker News")),
            ("reddit.com", Some("Reddit")),
            ("linkedin.com", Some("LinkedIn")),
            ("lnkd.in", Some("LinkedIn")),
            ("github.com", Some("GitHub")),
            ("youtube.com", Some("YouTube")),
            ("youtu.be", Some("YouTube")),
            ("baidu.com", Some("Baidu")),
            ("ecosia.org", Some("Ecosia")),
            ("qwant.com", Some("Qwant")),
            ("instagram.com", Some("Instagram")),
            ("pinterest.com", Some("Pinterest")),
            ("tiktok.com", Some("TikTok")),
            ("mastodon.social", Some("Mastodon")),
            ("ya.ru", Some("Yandex")),
        ]);
    }

    #[test]
    fn www_prefix_trailing_dot_and_case_are_ignored() {
        check(&[
            ("www.github.com", Some("GitHub")),
            ("WWW.GitHub.COM", Some("GitHub")),
            ("github.com.", Some("GitHub")),
            ("www.google.co.uk", Some("Google")),
            ("www.google.co.uk.", Some("Google")),
            // only one leading "www." is a prefix; "www" elsewhere is a label
            ("www.www.github.com", Some("GitHub")),
            ("wwwgithub.com", None),
        ]);
    }

    #[test]
    fn subdomains_fall_back_to_their_parent() {
        check(&[
            ("m.facebook.com", Some("Facebook")),
            ("l.facebook.com", Some("Facebook")),
            ("lm.facebook.com", Some("Facebook")),
            ("l.instagram.com", Some("Instagram")),
            ("mobile.twitter.com", Some("Twitter")),
            ("old.reddit.com", Some("Reddit")),
            ("out.reddit.com", Some("Reddit")),
            ("m.youtube.com", Some("YouTube")),
            ("en.m.wikipedia.org", Some("Wikipedia")),
            ("gist.github.com", Some("GitHub")),
            ("html.duckduckgo.com", Some("DuckDuckGo")),
            ("cn.bing.com", Some("Bing")),
            ("m.baidu.com", Some("Baidu")),
            ("e.mail.ru", Some("Mail.ru")),
            ("de.search.yahoo.com", Some("Yahoo!")),
            ("uk.search.yahoo.com", Some("Yahoo!")),
        ]);
    }

    #[test]
    fn more_specific_entries_win_over_parents() {
        check(&[
            ("mail.google.com", Some("Gmail")),
            ("gemini.google.com", Some("Gemini")),
            ("mail.yahoo.com", Some("Yahoo! Mail")),
            ("search.yahoo.com", Some("Yahoo!")),
            ("mail.yandex.ru", Some("Yandex Mail")),
            ("teams.microsoft.com", Some("Microsoft Teams")),
            ("outlook.live.com", Some("Outlook")),
            ("outlook.office.com", Some("Outlook")),
            // parent of a specific entry is not itself a source
            ("live.com", None),
            ("microsoft.com", None),
        ]);
    }

    #[test]
    fn search_engines_under_country_tlds() {
        check(&[
            ("google.com", Some("Google")),
            ("google.de", Some("Google")),
            ("google.cat", Some("Google")),
            ("google.co.uk", Some("Google")),
            ("google.com.br", Some("Google")),
            ("google.co.jp", Some("Google")),
            ("news.google.com", Some("Google")),
            ("images.google.com.au", Some("Google")),
            ("yandex.ru", Some("Yandex")),
            ("yandex.com", Some("Yandex")),
            ("yandex.com.tr", Some("Yandex")),
            ("yahoo.com", Some("Yahoo!")),
            ("yahoo.co.jp", Some("Yahoo!")),
            ("search.yahoo.co.jp", Some("Yahoo!")),
            ("bing.de", Some("Bing")),
        ]);
    }

    #[test]
    fn country_tld_rule_rejects_lookalikes() {
        check(&[
            ("google", None),
            ("google.evil.com", None),
            ("google.com.evil.net", None),
            ("google.co.uk.evil.net", None),
            ("notgoogle.com", None),
            ("google-analytics.com", None),
            ("googleusercontent.com", None),
            ("google.example", None),
            ("google.co.abc", None),
            ("google.xx.de", None),
            ("yandex.c0", None),
        ]);
    }

    #[test]
    fn webmail() {
        check(&[
            ("mail.google.com", Some("Gmail")),
            ("outlook.live.com", Some("Outlook")),
            ("outlook.office365.com", Some("Outlook")),
            ("mail.proton.me", Some("Proton Mail")),
            ("mail.aol.com", Some("AOL Mail")),
            ("gmx.net", Some("GMX")),
            ("web.de", Some("WEB.DE")),
        ]);
    }

    #[test]
    fn android_app_ids() {
        // android-app://com.google.android.gm/ has host "com.google.android.gm"
        check(&[
            ("com.google.android.gm", Some("Gmail")),
            ("com.google.android.googlequicksearchbox", Some("Google")),
            ("com.slack", Some("Slack")),
            ("org.telegram.messenger", Some("Telegram")),
            // an unknown Google app is not "Google Search"
            ("com.google.android.youtube.tv", None),
        ]);
    }

    #[test]
    fn unknown_and_degenerate_hosts() {
        check(&[
            ("example.com", None),
            ("foo.github.io", None),
            ("someone.blogspot.com", None),
            ("com", None),
            ("co.uk", None),
            ("", None),
            (".", None),
            ("www.", None),
            ("..", None),
            ("127.0.0.1", None),
            ("[::1]", None),
        ]);
    }
}
