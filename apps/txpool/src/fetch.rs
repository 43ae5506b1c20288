//! Which announced transactions to fetch, from whom — sans-IO.
//!
//! Every node but the one where a transaction entered learns of it by an
//! announcement (id, size, fee rate) and fetches it from one announcer at
//! a time, so each node receives about one full copy. The driver tells the
//! fetcher what was announced, what arrived, and which requests failed;
//! the fetcher answers with the requests to send.
//!
//! * Each peer's announcements wait in its own queue, oldest first; an
//!   idle peer (no request in flight) is asked for up to
//!   [`FetchConfig::batch`] ids it announced that nobody is being asked
//!   for.
//! * A request that fails or times out (the driver's timeout), or an id
//!   the peer did not send, moves on to the next announcer of that id.
//!   With none left, the id is forgotten; a later announcement brings it
//!   back.
//! * Bounds, because identities are free: ids queued per peer, per IP
//!   prefix and in total, and announcers kept per id. Announcements over
//!   a bound are dropped and counted, never queued.

use std::collections::{HashMap, VecDeque};

use peerlink_net::PeerId;
use peerlink_proto::prefix::Prefix;

use crate::tx::TxId;
use crate::wire::Announced;

#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Ids waiting to be fetched from one peer, at most.
    pub per_peer: usize,
    /// ...from all the peers of one IP prefix.
    pub per_prefix: usize,
    /// Ids wanted in all.
    pub total: usize,
    /// Peers remembered as able to send one id.
    pub announcers: usize,
    /// Ids in one request.
    pub batch: usize,
    /// Announced bytes in one request.
    pub batch_bytes: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            per_peer: 4096,
            per_prefix: 16_384,
            total: 65_536,
            announcers: 4,
            batch: 256,
            batch_bytes: 256 << 10,
        }
    }
}

struct Wanted {
    size: u32,
    announcers: Vec<PeerId>,
    /// The peer being asked now.
    asked: Option<PeerId>,
}

struct Peer {
    prefix: Prefix,
    /// Ids it announced, not yet asked of it.
    queue: VecDeque<TxId>,
    /// The ids of its request in flight.
    inflight: Option<Vec<TxId>>,
}

/// What the fetcher did with an announcement.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Noted {
    /// New ids now wanted.
    pub new: usize,
    /// Ids already wanted, with this peer added as an announcer.
    pub known: usize,
    /// Dropped by a bound.
    pub dropped: usize,
}

#[derive(Default)]
pub struct Fetcher {
    config: FetchConfig,
    wanted: HashMap<TxId, Wanted>,
    peers: HashMap<PeerId, Peer>,
    prefixes: HashMap<Prefix, usize>,
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> Fetcher {
        Fetcher {
            config,
            ..Fetcher::default()
        }
    }

    /// Ids wanted now.
    pub fn wanted(&self) -> usize {
        self.wanted.len()
    }

    pub fn is_wanted(&self, id: &TxId) -> bool {
        self.wanted.contains_key(id)
    }

    /// `peer` announced `items` the caller does not have.
    pub fn announced(&mut self, peer: PeerId, prefix: Prefix, items: &[Announced]) -> Noted {
        let c = &self.config;
        let mut noted = Noted::default();
        let p = self.peers.entry(peer).or_insert_with(|| Peer {
            prefix,
            queue: VecDeque::new(),
            inflight: None,
        });
        let in_prefix = self.prefixes.entry(p.prefix).or_default();
        for a in items {
            if p.queue.len() >= c.per_peer || *in_prefix >= c.per_prefix {
                noted.dropped += 1;
                continue;
            }
            let full = self.wanted.len() >= c.total;
            match self.wanted.get_mut(&a.id) {
                Some(w) => {
                    if w.announcers.contains(&peer) || w.announcers.len() >= c.announcers {
                        noted.dropped += 1;
                        continue;
                    }
                    w.announcers.push(peer);
                    noted.known += 1;
                }
                None if full => {
                    noted.dropped += 1;
                    continue;
                }
                None => {
                    self.wanted.insert(
                        a.id,
                        Wanted {
                            size: a.size,
                            announcers: vec![peer],
                            asked: None,
                        },
                    );
                    noted.new += 1;
                }
            }
            p.queue.push_back(a.id);
            *in_prefix += 1;
        }
        noted
    }

    /// The requests to send now: (peer, ids), to idle peers only.
    pub fn requests(&mut self) -> Vec<(PeerId, Vec<TxId>)> {
        let mut out = Vec::new();
        for (peer, p) in &mut self.peers {
            if p.inflight.is_some() {
                continue;
            }
            let (mut ids, mut bytes) = (Vec::new(), 0usize);
            while ids.len() < self.config.batch && bytes < self.config.batch_bytes {
                let Some(id) = p.queue.pop_front() else { break };
                if let Some(n) = self.prefixes.get_mut(&p.prefix) {
                    *n = n.saturating_sub(1);
                }
                // Delivered, or being asked of another: the other's failure
                // brings it back here.
                let Some(w) = self.wanted.get_mut(&id) else {
                    continue;
                };
                if w.asked.is_some() {
                    continue;
                }
                w.asked = Some(*peer);
                bytes += w.size as usize;
                ids.push(id);
            }
            if !ids.is_empty() {
                p.inflight = Some(ids.clone());
                out.push((*peer, ids));
            }
        }
        out
    }

    /// `id` arrived (by any route): no longer wanted. Returns the peers
    /// that announced it (they have it: no need to announce it to them).
    pub fn got(&mut self, id: &TxId) -> Vec<PeerId> {
        self.wanted
            .remove(id)
            .map(|w| w.announcers)
            .unwrap_or_default()
    }

    /// `peer` answered its request in flight with `received` (ids of the
    /// transactions it sent). Ids it did not send move to their next
    /// announcer. Returns how many it sent that were not asked for.
    pub fn answered(&mut self, peer: &PeerId, received: &[TxId]) -> usize {
        let Some(asked) = self.peers.get_mut(peer).and_then(|p| p.inflight.take()) else {
            return received.len();
        };
        let unasked = received.iter().filter(|id| !asked.contains(id)).count();
        for id in &asked {
            if received.contains(id) {
                self.wanted.remove(id);
            } else {
                self.next_announcer(id, peer);
            }
        }
        unasked
    }

    /// `peer`'s request failed or timed out.
    pub fn failed(&mut self, peer: &PeerId) {
        self.answered(peer, &[]);
    }

    /// `peer` disconnected: what it was asked moves on; its queue goes.
    pub fn peer_gone(&mut self, peer: &PeerId) {
        let asked = self
            .peers
            .get_mut(peer)
            .and_then(|p| p.inflight.take())
            .unwrap_or_default();
        if let Some(p) = self.peers.remove(peer) {
            if let Some(n) = self.prefixes.get_mut(&p.prefix) {
                *n = n.saturating_sub(p.queue.len());
                if *n == 0 {
                    self.prefixes.remove(&p.prefix);
                }
            }
        }
        for id in &asked {
            self.next_announcer(id, peer);
        }
    }

    /// `id`, asked of `failed`, goes to the front of its next announcer's
    /// queue, or is forgotten.
    fn next_announcer(&mut self, id: &TxId, failed: &PeerId) {
        let Some(w) = self.wanted.get_mut(id) else {
            return;
        };
        w.asked = None;
        w.announcers.retain(|p| p != failed);
        while let Some(next) = w.announcers.first() {
            if let Some(p) = self.peers.get_mut(next) {
                if p.inflight.as_ref().is_some_and(|f| f.contains(id)) {
                    return;
                }
                p.queue.push_front(*id);
                *self.prefixes.entry(p.prefix).or_default() += 1;
                return;
            }
            w.announcers.remove(0);
        }
        self.wanted.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_net::Keypair;

    fn peer() -> PeerId {
        Keypair::generate().unwrap().peer_id()
    }

    fn prefix(i: u8) -> Prefix {
        Prefix::of(std::net::IpAddr::from([10, i, 0, 1]))
    }

    fn ann(i: u32) -> Announced {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        Announced {
            id: TxId(id),
            size: 100,
            fee_rate: 1,
        }
    }

    #[test]
    fn one_announcer_at_a_time_then_the_next() {
        let mut f = Fetcher::new(FetchConfig::default());
        let (a, b) = (peer(), peer());
        assert_eq!(f.announced(a, prefix(1), &[ann(1), ann(2)]).new, 2);
        assert_eq!(f.requests(), vec![(a, vec![ann(1).id, ann(2).id])]);
        // b is not asked for id 1 while a is.
        assert_eq!(f.announced(b, prefix(2), &[ann(1)]).known, 1);
        assert!(f.requests().is_empty());
        // a sends only id 2: id 1 moves on to b.
        assert_eq!(f.answered(&a, &[ann(2).id]), 0);
        assert!(!f.is_wanted(&ann(2).id));
        assert_eq!(f.requests(), vec![(b, vec![ann(1).id])]);
        // b times out: nobody is left, the id is forgotten.
        f.failed(&b);
        assert_eq!(f.wanted(), 0);
        assert!(f.requests().is_empty());
    }

    #[test]
    fn a_peer_that_leaves_hands_its_requests_on() {
        let mut f = Fetcher::new(FetchConfig::default());
        let (a, b) = (peer(), peer());
        f.announced(a, prefix(1), &[ann(1)]);
        assert_eq!(f.requests(), vec![(a, vec![ann(1).id])]);
        f.announced(b, prefix(1), &[ann(1)]);
        f.peer_gone(&a);
        assert_eq!(f.requests(), vec![(b, vec![ann(1).id])]);
        // Something that arrived by push is no longer fetched.
        f.announced(b, prefix(1), &[ann(7)]);
        f.got(&ann(7).id);
        f.answered(&b, &[ann(1).id]);
        assert!(f.requests().is_empty());
        assert_eq!(f.wanted(), 0);
    }

    #[test]
    fn bounds_per_peer_prefix_and_total_hold() {
        let config = FetchConfig {
            per_peer: 10,
            per_prefix: 15,
            total: 25,
            batch: 4,
            ..FetchConfig::default()
        };
        let mut f = Fetcher::new(config);
        let items: Vec<Announced> = (0..100).map(ann).collect();
        let n = f.announced(peer(), prefix(1), &items);
        assert_eq!((n.new, n.dropped), (10, 90));
        // A second identity on the same prefix gets only the prefix's rest.
        let n = f.announced(peer(), prefix(1), &items[10..]);
        assert_eq!(n.new, 5);
        // Other prefixes fill the total, then nothing new is taken.
        let n = f.announced(peer(), prefix(2), &items[20..]);
        assert_eq!(n.new, 10);
        let n = f.announced(peer(), prefix(3), &items[40..]);
        assert_eq!((n.new, n.dropped), (0, 60));
        assert_eq!(f.wanted(), 25);
        // Requests are batched.
        assert!(f.requests().iter().all(|(_, ids)| ids.len() <= 4));
        // Unasked ids in an answer are counted for scoring.
        let stranger = peer();
        assert_eq!(f.answered(&stranger, &[ann(1).id]), 1);
    }
}
