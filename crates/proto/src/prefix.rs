//! The network an address belongs to, for limits that new identities
//! cannot escape: pending handshakes, bans and what peers may store with
//! us are counted per prefix as well as per peer.

use std::net::IpAddr;

/// IPv4 /24 or IPv6 /48 (an IPv4-mapped IPv6 address counts as IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix([u8; 7]);

impl Prefix {
    pub fn of(ip: IpAddr) -> Prefix {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut p = [0u8; 7];
        match ip {
            IpAddr::V4(v4) => {
                p[0] = 4;
                p[1..4].copy_from_slice(&v4.octets()[..3]);
            }
            IpAddr::V6(v6) => {
                p[0] = 6;
                p[1..7].copy_from_slice(&v6.octets()[..6]);
            }
        }
        Prefix(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_prefix_is_a_slash_24_or_a_slash_48() {
        assert_eq!(Prefix::of(ip("10.1.2.3")), Prefix::of(ip("10.1.2.200")));
        assert_ne!(Prefix::of(ip("10.1.2.3")), Prefix::of(ip("10.1.3.3")));
        assert_eq!(
            Prefix::of(ip("::ffff:10.1.2.3")),
            Prefix::of(ip("10.1.2.9"))
        );
        assert_eq!(
            Prefix::of(ip("2001:db8:1::1")),
            Prefix::of(ip("2001:db8:1:ff::2"))
        );
        assert_ne!(
            Prefix::of(ip("2001:db8:1::1")),
            Prefix::of(ip("2001:db8:2::1"))
        );
    }
}
