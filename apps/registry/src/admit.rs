//! How fast peers may make us store new releases.
//!
//! Announcements are signed, so a release's publisher is known; but keys
//! are free, so the rate of new releases (a new name, or a new version of
//! one) is limited twice: per publisher key, and per IPv4 /24 or IPv6 /48
//! of the connection the announcement arrived on. A release over either
//! allowance is ignored — not delivered, not forwarded, and not held
//! against the peer that relayed it (an honest relay forwards what others
//! published). Its name is still found through the DHT by whoever looks
//! it up. A relay's network that has nothing left is checked first, before
//! the signature: what it sends meanwhile costs a lookup, not a
//! verification. Both tables keep the most recently active entries only
//! ([`Recent`]), so fresh keys cannot grow them.

use std::time::Instant;

use peerlink_net::PeerId;
use peerlink_proto::prefix::Prefix;
use peerlink_proto::recent::Recent;

/// A token bucket's size and refill rate.
#[derive(Clone, Copy, Debug)]
pub struct Allowance {
    pub burst: f64,
    pub per_sec: f64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refilled(mut self, a: Allowance, now: Instant) -> Bucket {
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + secs * a.per_sec).min(a.burst);
        self.last = now;
        self
    }
}

/// Which allowance a release was over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttled {
    Publisher,
    Prefix,
}

/// Entries per table.
const TABLE: usize = 16_384;

pub struct NewReleases {
    per_publisher: Allowance,
    per_prefix: Allowance,
    publishers: Recent<PeerId, Bucket>,
    prefixes: Recent<Prefix, Bucket>,
}

impl NewReleases {
    pub fn new(per_publisher: Allowance, per_prefix: Allowance) -> Self {
        NewReleases {
            per_publisher,
            per_prefix,
            publishers: Recent::new(TABLE),
            prefixes: Recent::new(TABLE),
        }
    }

    /// Whether `prefix` has nothing left for a new release: checked before
    /// an announcement's signature, so a relay over its allowance costs us
    /// a table lookup per announcement, not a verification. Takes nothing.
    pub fn prefix_spent(&self, now: Instant, prefix: Prefix) -> bool {
        let a = self.per_prefix;
        self.prefixes
            .get(&prefix)
            .is_some_and(|b| b.refilled(a, now).tokens < 1.0)
    }

    /// Takes one release from `publisher`'s allowance and from `prefix`'s
    /// (when the relay's address is known), or neither.
    pub fn admit(
        &mut self,
        now: Instant,
        publisher: PeerId,
        prefix: Option<Prefix>,
    ) -> Result<(), Throttled> {
        let full = |a: Allowance| Bucket {
            tokens: a.burst,
            last: now,
        };
        let (pa, xa) = (self.per_publisher, self.per_prefix);
        let p = self.publishers.entry(publisher, || full(pa));
        *p = p.refilled(pa, now);
        if p.tokens < 1.0 {
            return Err(Throttled::Publisher);
        }
        if let Some(prefix) = prefix {
            let x = self.prefixes.entry(prefix, || full(xa));
            *x = x.refilled(xa, now);
            if x.tokens < 1.0 {
                return Err(Throttled::Prefix);
            }
            x.tokens -= 1.0;
        }
        let p = self.publishers.entry(publisher, || full(pa));
        p.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(i: u8) -> PeerId {
        peerlink_net::Keypair::from_secret([i; 32]).peer_id()
    }

    #[test]
    fn a_publisher_and_a_prefix_each_get_their_allowance_then_refill() {
        let now = Instant::now();
        let a = |burst| Allowance {
            burst,
            per_sec: 1.0,
        };
        let mut t = NewReleases::new(a(3.0), a(5.0));
        let net = Some(Prefix::of([10, 0, 0, 1].into()));
        let other = Some(Prefix::of([10, 0, 1, 1].into()));
        for _ in 0..3 {
            t.admit(now, id(1), net).unwrap();
        }
        assert_eq!(t.admit(now, id(1), other), Err(Throttled::Publisher));
        // Fresh keys from one network: two more, then the prefix is spent.
        t.admit(now, id(2), net).unwrap();
        t.admit(now, id(3), net).unwrap();
        assert_eq!(t.admit(now, id(4), net), Err(Throttled::Prefix));
        let spent = |at, p: Option<Prefix>| p.is_some_and(|p| t.prefix_spent(at, p));
        assert!(spent(now, net));
        assert!(!spent(now, other));
        let unseen = Some(Prefix::of([192, 0, 2, 1].into()));
        assert!(!spent(now, unseen), "never seen");
        assert!(!spent(now + Duration::from_secs(1), net), "refilled");
        // A refused release took nothing from the publisher.
        t.admit(now, id(4), other).unwrap();
        // A second later, one more each.
        let later = now + Duration::from_secs(1);
        t.admit(later, id(1), net).unwrap();
        assert_eq!(t.admit(later, id(1), net), Err(Throttled::Publisher));
    }
}
