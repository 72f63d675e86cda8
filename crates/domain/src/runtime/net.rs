//! The client's address: the socket peer, or `X-Forwarded-For` when the peer is a trusted
//! proxy. Used for per-IP rate and connection limits.

use ipnet::IpNet;
use std::net::IpAddr;

/// Addresses whose `X-Forwarded-For` header is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR ranges (`TRUSTED_PROXIES`).
    ///
    /// # Errors
    /// Naming the entry that is neither an address nor a range.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in crate::config::split_list(list) {
            let net = match entry.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    format!("TRUSTED_PROXIES: {entry:?} is not an IP address or CIDR range")
                })?,
            };
            nets.push(net);
        }
        Ok(Self { nets })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer` carrying `forwarded_for`.
    ///
    /// Walks `X-Forwarded-For` from the right (the hop nearest to us), skipping trusted
    /// proxies: the first untrusted address is the client. Entries a client could forge
    /// (to the left of it) are never used.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in header.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip.to_canonical();
                    if !self.trusts(client) {
                        return client;
                    }
                }
                Err(_) => return client,
            }
        }
        client
    }
}

/// The key a client's limits are kept under: an IPv4 address as is, an IPv6 address by its
/// /64 network. One IPv6 subscriber is usually given a whole /64 (RFC 6177 even suggests a
/// /48 or /56) and can pick any of its 2^64 addresses, so a limit per address would be no
/// limit at all. An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) counts as the IPv4 one.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn untrusted_peers_cannot_forge_their_address() {
        let t = TrustedProxies::parse("10.0.0.0/8").expect("valid");
        assert_eq!(t.client_ip(ip("1.2.3.4"), Some("9.9.9.9")), ip("1.2.3.4"));
    }

    #[test]
    fn trusted_proxies_pass_on_the_nearest_untrusted_hop() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").expect("valid");
        assert_eq!(
            t.client_ip(ip("10.0.0.5"), Some("6.6.6.6, 5.5.5.5, 192.168.1.1")),
            ip("5.5.5.5")
        );
        assert_eq!(t.client_ip(ip("10.0.0.5"), None), ip("10.0.0.5"));
        assert_eq!(t.client_ip(ip("10.0.0.5"), Some("garbage")), ip("10.0.0.5"));
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_match_ipv4_ranges() {
        let t = TrustedProxies::parse("127.0.0.1").expect("valid");
        assert_eq!(
            t.client_ip(ip("::ffff:127.0.0.1"), Some("8.8.8.8")),
            ip("8.8.8.8")
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let err = TrustedProxies::parse("10.0.0.0/8,nope")
            .err()
            .unwrap_or_default();
        assert!(err.contains("\"nope\""), "{err}");
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64_network() {
        let key = |s: &str| limit_key(s.parse().expect("address")).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
    }
}
