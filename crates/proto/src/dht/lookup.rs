//! One iterative lookup: candidates sorted by distance to the target,
//! `alpha` requests in flight at all times (a new one goes out as soon as
//! one answers, fails or turns slow — no lock-step rounds), done when the
//! `k` closest candidates that have not failed have all answered.

use std::time::{Duration, Instant};

use super::key::{Distance, IdSet, Key};
use super::wire::Contact;
use crate::PeerId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    New,
    Waiting { since: Instant, slow: bool },
    Answered,
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    contact: Contact,
    distance: Distance,
    /// Responses on the path that led to this peer (0 = from our table).
    hop: u8,
    state: State,
}

pub struct Lookup {
    target: Key,
    /// How many of the closest live candidates must answer (>= k): asking
    /// a few beyond k finds the true k closest far more often, because no
    /// single table holds every near peer.
    width: usize,
    alpha: usize,
    candidates: Vec<Candidate>,
    seen: IdSet<PeerId>,
    /// Requests holding a slot (waiting, not yet slow), oldest first.
    active: Vec<(PeerId, Instant)>,
}

impl Lookup {
    pub fn new(target: Key, k: usize, alpha: usize, start: Vec<Contact>) -> Self {
        Self::with_width(target, k, k, alpha, start)
    }

    pub fn with_width(
        target: Key,
        k: usize,
        width: usize,
        alpha: usize,
        start: Vec<Contact>,
    ) -> Self {
        let mut l = Lookup {
            target,
            width: width.max(k).max(1),
            alpha: alpha.max(1),
            candidates: Vec::new(),
            seen: IdSet::default(),
            active: Vec::new(),
        };
        l.add(start, 0);
        l
    }

    /// Adds candidates (those seen before are skipped); how many are new.
    pub fn extend(&mut self, contacts: Vec<Contact>) -> usize {
        let before = self.seen.len();
        self.add(contacts, 0);
        self.seen.len() - before
    }

    pub fn target(&self) -> &Key {
        &self.target
    }

    fn add(&mut self, contacts: Vec<Contact>, hop: u8) {
        for c in contacts {
            if !self.seen.insert(c.id) {
                continue;
            }
            let distance = Key::of_peer(&c.id).distance(&self.target);
            let pos = self.candidates.partition_point(|x| x.distance < distance);
            self.candidates.insert(
                pos,
                Candidate {
                    contact: c,
                    distance,
                    hop,
                    state: State::New,
                },
            );
        }
        // Far candidates that were never asked will never be: bound memory.
        let cap = self.width * 4;
        if self.candidates.len() > cap {
            let mut i = self.candidates.len();
            while self.candidates.len() > cap && i > 0 {
                i -= 1;
                if self.candidates[i].state == State::New {
                    self.candidates.remove(i);
                }
            }
        }
    }

    fn find(&mut self, peer: &PeerId) -> Option<&mut Candidate> {
        self.candidates.iter_mut().find(|c| c.contact.id == *peer)
    }

    /// `peer` answered with `closer` contacts (already filtered).
    pub fn on_answer(&mut self, peer: &PeerId, closer: Vec<Contact>) {
        self.active.retain(|a| a.0 != *peer);
        let hop = match self.find(peer) {
            Some(c) => {
                c.state = State::Answered;
                c.hop.saturating_add(1)
            }
            None => return,
        };
        self.add(closer, hop);
    }

    pub fn on_failure(&mut self, peer: &PeerId) {
        self.active.retain(|a| a.0 != *peer);
        if let Some(c) = self.find(peer) {
            c.state = State::Failed;
        }
    }

    /// Requests that have waited past `slow_after` no longer hold a slot.
    pub fn mark_slow(&mut self, now: Instant, slow_after: Duration) {
        while let Some(&(peer, since)) = self.active.first() {
            if now.saturating_duration_since(since) < slow_after {
                break;
            }
            self.active.remove(0);
            if let Some(c) = self.find(&peer) {
                c.state = State::Waiting { since, slow: true };
            }
        }
    }

    /// When the next waiting request turns slow.
    pub fn next_slow_at(&self, slow_after: Duration) -> Option<Instant> {
        self.active.first().map(|a| a.1 + slow_after)
    }

    /// The next peer to ask, if a slot is free and one is worth asking.
    pub fn next_request(&mut self, now: Instant) -> Option<Contact> {
        if self.is_done() {
            return None;
        }
        if self.active.len() >= self.alpha {
            return None;
        }
        // Only the k closest live candidates are worth asking.
        let mut live = 0;
        for c in &mut self.candidates {
            if c.state == State::Failed {
                continue;
            }
            live += 1;
            if live > self.width {
                break;
            }
            if c.state == State::New {
                c.state = State::Waiting {
                    since: now,
                    slow: false,
                };
                self.active.push((c.contact.id, now));
                return Some(c.contact);
            }
        }
        None
    }

    /// The k closest non-failed candidates have all answered, or nothing
    /// is left to ask or wait for.
    pub fn is_done(&self) -> bool {
        let mut live = 0;
        for c in &self.candidates {
            match c.state {
                State::Failed => continue,
                State::Answered => {}
                State::New | State::Waiting { .. } => return false,
            }
            live += 1;
            if live >= self.width {
                return true;
            }
        }
        true
    }

    /// The closest peers that answered, nearest first, with their hop.
    pub fn closest_answered(&self, n: usize) -> Vec<(Contact, u8)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Answered)
            .take(n)
            .map(|c| (c.contact, c.hop.saturating_add(1)))
            .collect()
    }

    pub fn hop_of(&self, peer: &PeerId) -> u8 {
        self.candidates
            .iter()
            .find(|c| c.contact.id == *peer)
            .map_or(0, |c| c.hop.saturating_add(1))
    }

    pub fn counts(&self) -> (usize, usize) {
        let answered = self
            .candidates
            .iter()
            .filter(|c| c.state == State::Answered)
            .count();
        let failed = self
            .candidates
            .iter()
            .filter(|c| c.state == State::Failed)
            .count();
        (answered, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use std::net::SocketAddr;

    fn contacts(n: u32) -> Vec<Contact> {
        (0..n)
            .map(|i| {
                let mut s = [0u8; 32];
                s[..4].copy_from_slice(&i.to_le_bytes());
                Contact::new(
                    Keypair::from_secret(s).peer_id(),
                    SocketAddr::from(([10, 0, 0, 1], 1)),
                )
            })
            .collect()
    }

    #[test]
    fn keeps_alpha_in_flight_and_replaces_slow_peers() {
        let now = Instant::now();
        let cs = contacts(10);
        let mut l = Lookup::new(Key::hash(b"t"), 3, 2, cs);
        let a = l.next_request(now).unwrap();
        let b = l.next_request(now).unwrap();
        assert_eq!(l.next_request(now), None, "alpha = 2");
        // One answers: a new request goes out at once.
        l.on_answer(&a.id, vec![]);
        let c = l.next_request(now).unwrap();
        assert_ne!(c, b);
        // Both turn slow: two more may go, but only among the k=3 closest
        // live candidates, which are a, b, c: nothing new to ask.
        l.mark_slow(now + Duration::from_secs(1), Duration::from_millis(500));
        assert_eq!(l.next_request(now), None);
        // b fails: the 4th closest becomes one of the k closest.
        l.on_failure(&b.id);
        assert!(l.next_request(now).is_some());
        assert!(!l.is_done());
    }

    #[test]
    fn done_when_k_closest_answered_even_if_farther_failed() {
        let now = Instant::now();
        let mut l = Lookup::new(Key::hash(b"t"), 2, 3, contacts(5));
        let mut asked = vec![];
        while let Some(c) = l.next_request(now) {
            asked.push(c);
        }
        assert_eq!(asked.len(), 2);
        l.on_answer(&asked[0].id, vec![]);
        l.on_failure(&asked[1].id);
        assert!(!l.is_done());
        let c = l.next_request(now).unwrap();
        l.on_answer(&c.id, vec![]);
        assert!(l.is_done());
        assert_eq!(l.closest_answered(5).len(), 2);
        assert_eq!(l.counts(), (2, 1));
    }
}
