//! Who a limit applies to: the authenticated subject, else the client's IP address.
//!
//! Why careful: `X-Forwarded-For` is written by the client unless a proxy we trust overwrote
//! it; believing it blindly (as the legacy limiter did) lets anyone pick a fresh identity per request. Here the
//! header is read only when the peer is a configured trusted proxy, from the right (the hop
//! nearest to us) leftwards, skipping trusted proxies: the first untrusted address is the client.

use ipnet::IpNet;
use std::net::IpAddr;

/// Trusted proxies: single addresses or CIDR ranges.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parse `10.0.0.0/8`, `127.0.0.1`, `::1`; the error names the bad entry.
    pub fn parse(list: &[String]) -> Result<TrustedProxies, String> {
        list.iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("`{s}` is not an IP address or CIDR range (e.g. 10.0.0.0/8)")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer` carrying `forwarded_for` (the raw
    /// `X-Forwarded-For` values, in order).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.contains(client) {
                        return client;
                    }
                }
                // A garbled hop: stop at the last address we could verify.
                Err(_) => return client,
            }
        }
        client
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("127.0.0.1"), &["1.2.3.4"]),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.7".into()]).unwrap();
        // Client spoofs 6.6.6.6; the real chain is 198.51.100.1 -> 192.0.2.7 -> 10.0.0.2 -> us.
        let got = t.client_ip(ip("10.0.0.2"), &["6.6.6.6, 198.51.100.1", "192.0.2.7"]);
        assert_eq!(got, ip("198.51.100.1"));
        // Only trusted hops: the leftmost one is the best we know.
        assert_eq!(t.client_ip(ip("10.0.0.2"), &["10.1.1.1"]), ip("10.1.1.1"));
        // Garbage stops the walk.
        assert_eq!(t.client_ip(ip("10.0.0.2"), &["junk"]), ip("10.0.0.2"));
        assert_eq!(
            t.client_ip(ip("::ffff:10.0.0.2"), &["5.5.5.5"]),
            ip("5.5.5.5")
        );
        assert!(TrustedProxies::parse(&["nope".into()])
            .unwrap_err()
            .contains("nope"));
    }
}
