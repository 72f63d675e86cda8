//! What the connection that sent an event tells: browser, OS and device class from the
//! User-Agent (woothee), whether it is a bot (the isbot list, headless markers, configured
//! data-center networks), and the country of its address (a MaxMind-format database at
//! `GEOIP_DB`). Only the derived values are queued; the address and the User-Agent string
//! never leave this process.
//!
//! Parsing a User-Agent costs about a microsecond, and a site's visitors share a few
//! hundred of them, so each HTTP worker thread keeps the parsed ones (a bounded map,
//! emptied when full: a client sending random User-Agents costs parsing, not memory).

use ipnet::IpNet;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::LazyLock;

/// Parsed User-Agents kept per thread.
const UA_CACHE_ENTRIES: usize = 4096;
/// Longest User-Agent parsed (longer ones are parsed truncated; real ones are < 500).
const MAX_UA_BYTES: usize = 1024;

/// Why an event was not counted as a person's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BotReason {
    /// A known crawler, monitor or HTTP library.
    BotUserAgent,
    /// A headless browser says so in its User-Agent.
    Headless,
    /// The browser said it is automated (`navigator.webdriver`).
    Automation,
    /// No User-Agent at all.
    NoUserAgent,
    /// The address is in a configured data-center network.
    DataCenter,
}

impl BotReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BotUserAgent => "bot_user_agent",
            Self::Headless => "headless",
            Self::Automation => "automation",
            Self::NoUserAgent => "no_user_agent",
            Self::DataCenter => "data_center",
        }
    }
}

/// What a User-Agent says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserAgentInfo {
    pub browser: Option<String>,
    pub os: Option<&'static str>,
    pub device: Option<&'static str>,
    pub bot: Option<BotReason>,
}

static BOTS: LazyLock<isbot::Bots> = LazyLock::new(isbot::Bots::default);

thread_local! {
    static PARSED: RefCell<HashMap<Box<str>, Rc<UserAgentInfo>>> = RefCell::new(HashMap::new());
}

/// What `user_agent` says, from this thread's cache when seen before.
pub fn user_agent_info(user_agent: &str) -> Rc<UserAgentInfo> {
    let ua = truncate(user_agent, MAX_UA_BYTES);
    PARSED.with(|cache| {
        if let Some(info) = cache.borrow().get(ua) {
            return info.clone();
        }
        let info = Rc::new(parse_user_agent(ua));
        let mut cache = cache.borrow_mut();
        if cache.len() >= UA_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(ua.into(), info.clone());
        info
    })
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Parses without the cache.
pub fn parse_user_agent(ua: &str) -> UserAgentInfo {
    if ua.trim().is_empty() {
        return UserAgentInfo {
            bot: Some(BotReason::NoUserAgent),
            ..UserAgentInfo::default()
        };
    }
    let bot = if ua.contains("Headless") {
        Some(BotReason::Headless)
    } else if BOTS.is_bot(ua) {
        Some(BotReason::BotUserAgent)
    } else {
        None
    };
    let Some(parsed) = woothee::parser::Parser::new().parse(ua) else {
        return UserAgentInfo {
            bot,
            ..UserAgentInfo::default()
        };
    };
    let bot = bot.or((parsed.category == "crawler").then_some(BotReason::BotUserAgent));
    let known = |s: &str| (s != "UNKNOWN" && !s.is_empty()).then(|| s.to_string());
    let os = os_family(parsed.os);
    let device = match parsed.category {
        "pc" => Some("desktop"),
        "smartphone" | "mobilephone" => Some(
            if parsed.os == "iPad" || (parsed.os == "Android" && !ua.contains("Mobile")) {
                "tablet"
            } else {
                "mobile"
            },
        ),
        _ => None,
    };
    UserAgentInfo {
        browser: known(parsed.name),
        os,
        device,
        bot,
    }
}

/// One name per OS family (woothee names versions: "Windows 10", "Mac OSX", "iPhone").
fn os_family(os: &str) -> Option<&'static str> {
    Some(match os {
        o if o.starts_with("Windows") => "Windows",
        "Mac OSX" | "Mac OS Classic" => "macOS",
        "iPhone" | "iPad" | "iPod" | "iOS" => "iOS",
        "Android" => "Android",
        "Linux" => "Linux",
        "ChromeOS" => "ChromeOS",
        "FreeBSD" | "NetBSD" | "OpenBSD" => "BSD",
        "BlackBerry" | "BlackBerry 10" => "BlackBerry",
        "Firefox OS" => "Firefox OS",
        _ => return None,
    })
}

/// Data-center networks whose traffic is not counted (`DATACENTER_NETWORKS_FILE`: one CIDR
/// per line, `#` comments).
#[derive(Debug, Clone, Default)]
pub struct DataCenters(Vec<IpNet>);

impl DataCenters {
    /// Reads the list.
    ///
    /// # Errors
    /// When the file cannot be read or a line is not a network, naming the line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("DATACENTER_NETWORKS_FILE {}: {e}", path.display()))?;
        let mut nets = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let net = line
                .parse::<IpNet>()
                .or_else(|_| line.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "DATACENTER_NETWORKS_FILE {} line {}: {line:?} is not a network",
                        path.display(),
                        n + 1
                    )
                })?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Countries of addresses, when a database is configured.
#[derive(Default)]
pub struct Countries {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

impl Countries {
    /// Opens the database at `path`.
    ///
    /// # Errors
    /// When it cannot be read or is not a MaxMind DB, naming `GEOIP_DB`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| anyhow::anyhow!("GEOIP_DB {}: {e}", path.display()))?;
        Ok(Self {
            reader: Some(reader),
        })
    }

    /// The ISO 3166-1 country code of `ip`, if the database knows it.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let reader = self.reader.as_ref()?;
        let found = reader.lookup(ip.to_canonical()).ok()?;
        let code: Option<String> = found
            .decode_path(&maxminddb::path!["country", "iso_code"])
            .ok()
            .flatten();
        code.filter(|c| c.len() == 2)
    }

    pub fn enabled(&self) -> bool {
        self.reader.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_systems_and_devices_are_named() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                ("Chrome", "Linux", "desktop"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                ("Safari", "iOS", "mobile"),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                ("Safari", "iOS", "tablet"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                ("Chrome", "Android", "tablet"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
                ("Firefox", "Windows", "desktop"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
                ("Safari", "macOS", "desktop"),
            ),
        ];
        for (ua, (browser, os, device)) in cases {
            let info = parse_user_agent(ua);
            assert_eq!(
                (info.browser.as_deref(), info.os, info.device, info.bot),
                (Some(browser), Some(os), Some(device), None),
                "{ua}"
            );
        }
    }

    #[test]
    fn bots_headless_browsers_and_libraries_are_told_apart() {
        let reason = |ua: &str| parse_user_agent(ua).bot;
        assert_eq!(
            reason("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            Some(BotReason::BotUserAgent)
        );
        assert_eq!(
            reason(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36"
            ),
            Some(BotReason::Headless)
        );
        assert_eq!(reason("curl/8.5.0"), Some(BotReason::BotUserAgent));
        assert_eq!(
            reason("python-requests/2.31"),
            Some(BotReason::BotUserAgent)
        );
        assert_eq!(reason(""), Some(BotReason::NoUserAgent));
    }

    #[test]
    fn the_cache_answers_like_the_parser() {
        let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
        assert_eq!(*user_agent_info(ua), parse_user_agent(ua));
        assert_eq!(*user_agent_info(ua), parse_user_agent(ua));
        let long = "x".repeat(5000);
        assert_eq!(truncate(&long, MAX_UA_BYTES).len(), MAX_UA_BYTES);
    }

    #[test]
    fn data_center_lists_match_networks_and_name_bad_lines() {
        let dir = std::env::temp_dir().join(format!("dc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("nets.txt");
        std::fs::write(
            &file,
            "# cloud\n198.51.100.0/24\n2001:db8::/32 # v6\n192.0.2.1\n",
        )
        .expect("write");
        let dcs = DataCenters::load(&file).expect("load");
        assert_eq!(dcs.len(), 3);
        assert!(dcs.contains("198.51.100.9".parse().expect("ip")));
        assert!(dcs.contains("::ffff:198.51.100.9".parse().expect("ip")));
        assert!(dcs.contains("2001:db8::1".parse().expect("ip")));
        assert!(!dcs.contains("203.0.113.1".parse().expect("ip")));
        std::fs::write(&file, "10.0.0.0/8\nnonsense\n").expect("write");
        let err = DataCenters::load(&file).expect_err("bad line").to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
