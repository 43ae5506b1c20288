//! Layer 4 — discovery: the address book behind peer exchange and
//! bootstrap, as a sans-IO state machine.
//!
//! It remembers addresses with when they were last confirmed, picks whom
//! to dial to reach a target connection count, backs off exponentially
//! (with jitter) on failed dials, forgets addresses that keep failing or
//! go stale, and bans. Self, unusable and (from a non-loopback reporter)
//! loopback addresses are refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dht::{addr_usable, Contact};
use crate::rng::Rng;
use crate::{PeerId, Transport, TransportAddr};

#[derive(Clone, Debug)]
pub struct PeerBookConfig {
    /// Connections the node tries to keep open.
    pub target_connections: usize,
    pub max_addresses: usize,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Failed dials in a row before an address is forgotten.
    pub max_failures: u32,
    /// Addresses not confirmed for this long are forgotten.
    pub forget_after: Duration,
}

impl Default for PeerBookConfig {
    fn default() -> Self {
        PeerBookConfig {
            target_connections: 8,
            max_addresses: 2048,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_failures: 6,
            forget_after: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    addr: SocketAddr,
    transport: Transport,
    /// Last time we were connected to it or a peer vouched for it.
    seen: Instant,
    failures: u32,
    next_attempt: Instant,
}

/// Why an address was not learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    SelfAddress,
    Unusable,
    LoopbackFromRemote,
    Banned,
    Full,
}

pub struct PeerBook {
    config: PeerBookConfig,
    local: PeerId,
    entries: BTreeMap<PeerId, Entry>,
    banned: BTreeMap<PeerId, Instant>,
    rng: Rng,
}

impl PeerBook {
    pub fn new(config: PeerBookConfig, local: PeerId, seed: u64) -> Self {
        PeerBook {
            config,
            local,
            entries: BTreeMap::new(),
            banned: BTreeMap::new(),
            rng: Rng::new(seed),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_banned(&self, now: Instant, peer: &PeerId) -> bool {
        self.banned.get(peer).is_some_and(|until| *until > now)
    }

    /// Remembers `contact`, reported by a peer at `reporter` (`None` for
    /// configuration, such as seeds).
    pub fn learn(
        &mut self,
        now: Instant,
        contact: Contact,
        reporter: Option<SocketAddr>,
    ) -> Result<(), Refused> {
        if contact.id == self.local {
            return Err(Refused::SelfAddress);
        }
        if !addr_usable(&contact.addr) {
            return Err(Refused::Unusable);
        }
        if contact.addr.ip().is_loopback() && reporter.is_some_and(|r| !r.ip().is_loopback()) {
            return Err(Refused::LoopbackFromRemote);
        }
        if self.is_banned(now, &contact.id) {
            return Err(Refused::Banned);
        }
        if let Some(e) = self.entries.get_mut(&contact.id) {
            // Hearsay refreshes freshness but does not move a known address.
            e.seen = e.seen.max(now);
            return Ok(());
        }
        if self.entries.len() >= self.config.max_addresses {
            self.forget_stale(now);
            if self.entries.len() >= self.config.max_addresses {
                return Err(Refused::Full);
            }
        }
        self.entries.insert(
            contact.id,
            Entry {
                addr: contact.addr,
                transport: contact.transport,
                seen: now,
                failures: 0,
                next_attempt: now,
            },
        );
        Ok(())
    }

    /// A connection to `peer` at `at` is up: the address is confirmed.
    pub fn on_connected(&mut self, now: Instant, peer: PeerId, at: TransportAddr) {
        let addr = at.socket;
        if peer == self.local || !addr_usable(&addr) {
            return;
        }
        let e = self.entries.entry(peer).or_insert(Entry {
            addr,
            transport: at.transport,
            seen: now,
            failures: 0,
            next_attempt: now,
        });
        e.addr = addr;
        e.transport = at.transport;
        e.seen = now;
        e.failures = 0;
        e.next_attempt = now;
    }

    /// A dial to `peer` failed: back off, or forget after too many.
    pub fn on_dial_failed(&mut self, now: Instant, peer: &PeerId) {
        let Some(e) = self.entries.get_mut(peer) else {
            return;
        };
        e.failures += 1;
        if e.failures >= self.config.max_failures {
            self.entries.remove(peer);
            return;
        }
        let exp = self.config.backoff.saturating_mul(1 << e.failures.min(16));
        let base = exp.min(self.config.max_backoff);
        e.next_attempt = now + base.mul_f64(0.75 + self.rng.unit() * 0.5);
    }

    /// Forgets `peer` and refuses it until `now + duration`.
    pub fn ban(&mut self, now: Instant, peer: PeerId, duration: Duration) {
        self.entries.remove(&peer);
        if self.banned.len() >= self.config.max_addresses {
            self.banned.retain(|_, until| *until > now);
        }
        self.banned.insert(peer, now + duration);
    }

    fn forget_stale(&mut self, now: Instant) {
        let after = self.config.forget_after;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.seen) < after);
        self.banned.retain(|_, until| *until > now);
    }

    /// Whom to dial now to move towards the target connection count, given
    /// how many connections (and dials in progress) there are. Freshest
    /// addresses first.
    pub fn to_dial(
        &mut self,
        now: Instant,
        open: usize,
        is_connected: impl Fn(&PeerId) -> bool,
    ) -> Vec<Contact> {
        self.forget_stale(now);
        let want = self.config.target_connections.saturating_sub(open);
        if want == 0 {
            return Vec::new();
        }
        let mut ready: Vec<(&PeerId, &Entry)> = self
            .entries
            .iter()
            .filter(|(id, e)| e.next_attempt <= now && !is_connected(id))
            .collect();
        ready.sort_by(|a, b| b.1.seen.cmp(&a.1.seen).then(a.0.cmp(b.0)));
        let picked: Vec<Contact> = ready
            .into_iter()
            .take(want)
            .map(|(id, e)| Contact {
                id: *id,
                addr: e.addr,
                transport: e.transport,
            })
            .collect();
        // Not again until this dial has had time to finish or fail.
        for c in &picked {
            if let Some(e) = self.entries.get_mut(&c.id) {
                e.next_attempt = now + self.config.backoff;
            }
        }
        picked
    }

    pub fn addr_of(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.entries.get(peer).map(|e| e.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn id(i: u8) -> PeerId {
        Keypair::from_secret([i; 32]).peer_id()
    }

    #[test]
    fn refuses_self_unusable_loopback_from_remote_and_banned() {
        let now = Instant::now();
        let mut b = PeerBook::new(PeerBookConfig::default(), id(0), 1);
        let remote = Some("8.8.8.8:1".parse().unwrap());
        assert_eq!(
            b.learn(now, Contact::new(id(0), "1.2.3.4:5".parse().unwrap()), None),
            Err(Refused::SelfAddress)
        );
        assert_eq!(
            b.learn(now, Contact::new(id(1), "0.0.0.0:5".parse().unwrap()), None),
            Err(Refused::Unusable)
        );
        assert_eq!(
            b.learn(
                now,
                Contact::new(id(1), "127.0.0.1:5".parse().unwrap()),
                remote
            ),
            Err(Refused::LoopbackFromRemote)
        );
        assert_eq!(
            b.learn(
                now,
                Contact::new(id(1), "127.0.0.1:5".parse().unwrap()),
                None
            ),
            Ok(())
        );
        b.ban(now, id(2), Duration::from_secs(60));
        assert_eq!(
            b.learn(now, Contact::new(id(2), "1.2.3.4:5".parse().unwrap()), None),
            Err(Refused::Banned)
        );
        assert!(b
            .learn(
                now + Duration::from_secs(61),
                Contact::new(id(2), "1.2.3.4:5".parse().unwrap()),
                None
            )
            .is_ok());
    }

    #[test]
    fn dials_towards_target_with_backoff_and_forgets_failures() {
        let now = Instant::now();
        let cfg = PeerBookConfig {
            target_connections: 2,
            max_failures: 3,
            ..Default::default()
        };
        let mut b = PeerBook::new(cfg, id(0), 1);
        for i in 1..=4 {
            b.learn(
                now,
                Contact::new(id(i), SocketAddr::from(([10, 0, 0, i], 1))),
                None,
            )
            .unwrap();
        }
        let first = b.to_dial(now, 0, |_| false);
        assert_eq!(first.len(), 2);
        assert_eq!(b.to_dial(now, 2, |_| false), vec![]);
        // Those two are not picked again at once; the other two are.
        let second = b.to_dial(now, 0, |_| false);
        assert!(second.iter().all(|c| !first.contains(c)));
        // A failing address backs off further each time, then is forgotten.
        let p = first[0].id;
        b.on_dial_failed(now, &p);
        let later = b.to_dial(now + Duration::from_millis(1100), 0, |x| *x != p);
        assert!(!later.iter().any(|c| c.id == p));
        b.on_dial_failed(now, &p);
        b.on_dial_failed(now, &p);
        assert_eq!(b.addr_of(&p), None);
        assert_eq!(b.len(), 3);
    }
}
