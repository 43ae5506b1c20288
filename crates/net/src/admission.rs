//! Who may connect: pending inbound handshakes, and bans.
//!
//! **Pending handshakes.** A TCP connection costs an attacker almost
//! nothing, so slots for handshakes in progress are shared out by source:
//! at most `max_pending_per_ip` from one address and
//! `max_pending_per_prefix` from one network (IPv4 /24, IPv6 /48), both
//! well below the total `max_pending_handshakes`. The first handshake
//! message must arrive within `first_message_timeout` (an honest dialler
//! sends it at once). When every slot is taken, the oldest connection
//! that has not sent its first message is evicted to make room; a
//! newcomer is refused only when every pending handshake is under way.
//!
//! **Bans.** A peer that breaks the protocol is kicked and banned by
//! peer id for `ban_duration`; an address whose peers were banned
//! `ip_ban_strikes` times is banned too (new identities are free, new
//! addresses are not; 0 turns this off, as testnets whose nodes all share
//! 127.0.0.1 do). A banned peer that completes a handshake anyway has
//! offended again: that is a strike against its address too, so a banned
//! identity that keeps reconnecting costs the node a few handshakes and
//! then only accepts. Bans are checked when a connection is accepted
//! (by address) and when a handshake completes, either way (by peer id):
//! a banned peer gets no connection, not even for a moment. The tables
//! are bounded; expired entries leave in expiry order, O(log n) each.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerlink_proto::PeerId;
use tokio::sync::oneshot;

use crate::config::Limits;
use crate::queue::lock;

pub use peerlink_proto::prefix::Prefix;

/// Why an inbound connection got no handshake slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    PerIp,
    PerPrefix,
    Full,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PerIp => "pending_per_ip",
            Refusal::PerPrefix => "pending_per_prefix",
            Refusal::Full => "pending_handshakes",
        }
    }
}

struct Entry {
    ip: IpAddr,
    heard: Arc<AtomicBool>,
    evict: oneshot::Sender<()>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    /// Oldest first.
    entries: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    per_prefix: HashMap<Prefix, usize>,
}

impl Slots {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        dec(&mut self.per_ip, e.ip);
        dec(&mut self.per_prefix, Prefix::of(e.ip));
        Some(e)
    }
}

fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
    if let Some(n) = m.get_mut(&k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(&k);
        }
    }
}

/// The pending-handshake table (see the module docs).
pub(crate) struct PendingHandshakes {
    limits: Limits,
    slots: Mutex<Slots>,
}

/// A held handshake slot, released on drop.
pub(crate) struct Admitted {
    table: Arc<PendingHandshakes>,
    id: u64,
    /// Set once the first handshake message arrived.
    pub heard: Arc<AtomicBool>,
    /// Fires when the slot was taken for a newcomer.
    pub evicted: oneshot::Receiver<()>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        lock(&self.table.slots).remove(self.id);
    }
}

impl PendingHandshakes {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(PendingHandshakes {
            limits,
            slots: Mutex::new(Slots::default()),
        })
    }

    /// A slot for a connection from `ip`, and whether a silent one was
    /// evicted for it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Admitted, bool), Refusal> {
        let prefix = Prefix::of(ip);
        let mut s = lock(&self.slots);
        if s.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_pending_per_ip {
            return Err(Refusal::PerIp);
        }
        if s.per_prefix.get(&prefix).copied().unwrap_or(0) >= self.limits.max_pending_per_prefix {
            return Err(Refusal::PerPrefix);
        }
        let mut evicted = false;
        if s.entries.len() >= self.limits.max_pending_handshakes {
            let silent = s
                .entries
                .iter()
                .find(|(_, e)| !e.heard.load(Ordering::Acquire))
                .map(|(id, _)| *id);
            let Some(old) = silent.and_then(|id| s.remove(id)) else {
                return Err(Refusal::Full);
            };
            let _ = old.evict.send(());
            evicted = true;
        }
        let id = s.next;
        s.next += 1;
        let heard = Arc::new(AtomicBool::new(false));
        let (evict, rx) = oneshot::channel();
        s.entries.insert(
            id,
            Entry {
                ip,
                heard: heard.clone(),
                evict,
            },
        );
        *s.per_ip.entry(ip).or_insert(0) += 1;
        *s.per_prefix.entry(prefix).or_insert(0) += 1;
        drop(s);
        Ok((
            Admitted {
                table: self.clone(),
                id,
                heard,
                evicted: rx,
            },
            evicted,
        ))
    }
}

/// One ban, as listed by [`crate::Node::bans`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub peer: PeerId,
    /// Left of the ban.
    pub remaining: Duration,
    pub reason: String,
}

/// The ban table (see the module docs).
pub(crate) struct Bans {
    state: Mutex<BanState>,
    max_entries: usize,
    strikes_for_ip: u32,
}

#[derive(Default)]
struct BanState {
    peers: HashMap<PeerId, (Instant, String)>,
    ips: HashMap<IpAddr, Instant>,
    /// Offences per address, and until when they count.
    strikes: HashMap<IpAddr, (u32, Instant)>,
    /// Expiries, soonest first; stale ones (renewed or lifted) are skipped.
    due: BinaryHeap<Reverse<(Instant, Banned)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Banned {
    Peer(PeerId),
    Ip(IpAddr),
    Strikes(IpAddr),
}

impl BanState {
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((t, what))) = self.due.peek().copied() {
            if t > now {
                break;
            }
            self.due.pop();
            match what {
                Banned::Peer(p) => {
                    if self.peers.get(&p).is_some_and(|(u, _)| *u <= now) {
                        self.peers.remove(&p);
                    }
                }
                Banned::Ip(ip) => {
                    if self.ips.get(&ip).is_some_and(|u| *u <= now) {
                        self.ips.remove(&ip);
                    }
                }
                Banned::Strikes(ip) => {
                    if self.strikes.get(&ip).is_some_and(|(_, u)| *u <= now) {
                        self.strikes.remove(&ip);
                    }
                }
            }
        }
    }

    /// Drops stale expiries (renewals leave their old ones behind).
    fn rebuild_due(&mut self) {
        let peers = self.peers.iter().map(|(p, (u, _))| (*u, Banned::Peer(*p)));
        let ips = self.ips.iter().map(|(ip, u)| (*u, Banned::Ip(*ip)));
        let strikes = self
            .strikes
            .iter()
            .map(|(ip, (_, u))| (*u, Banned::Strikes(*ip)));
        self.due = peers.chain(ips).chain(strikes).map(Reverse).collect();
    }

    fn len(&self) -> usize {
        self.peers.len() + self.ips.len() + self.strikes.len()
    }

    /// Schedules an expiry; renewals leave stale ones behind, so past a
    /// few times the table's size the heap is rebuilt from the tables.
    fn push_due(&mut self, at: Instant, what: Banned) {
        self.due.push(Reverse((at, what)));
        if self.due.len() > 4 * self.len().max(64) {
            self.rebuild_due();
        }
    }

    /// One more strike against `ip`, counting until `until`; bans the
    /// address at `needed` strikes (0: never). Returns whether it is banned.
    fn strike(&mut self, ip: IpAddr, until: Instant, needed: u32) -> bool {
        if needed == 0 {
            return false;
        }
        let strikes = {
            let e = self.strikes.entry(ip).or_insert((0, until));
            e.0 += 1;
            e.1 = e.1.max(until);
            e.0
        };
        self.push_due(until, Banned::Strikes(ip));
        if strikes < needed {
            return false;
        }
        let longer = self.ips.get(&ip).map_or(until, |u| (*u).max(until));
        self.ips.insert(ip, longer);
        self.push_due(longer, Banned::Ip(ip));
        true
    }

    /// Full: the entry nearest its end goes first.
    fn make_room(&mut self, max: usize) {
        while self.len() >= max {
            let Some(Reverse((t, _))) = self.due.peek().copied() else {
                break;
            };
            self.expire(t);
        }
    }
}

impl Bans {
    pub fn new(max_entries: usize, strikes_for_ip: u32) -> Self {
        Bans {
            state: Mutex::new(BanState::default()),
            max_entries: max_entries.max(1),
            strikes_for_ip,
        }
    }

    /// Bans `peer` until `now + duration`. With `ip` (where it connected
    /// from), counts a strike against that address; enough strikes ban
    /// the address as well. Returns whether the address is now banned.
    pub fn ban(
        &self,
        now: Instant,
        peer: PeerId,
        ip: Option<IpAddr>,
        duration: Duration,
        reason: &str,
    ) -> bool {
        let until = now + duration;
        let mut s = lock(&self.state);
        s.expire(now);
        s.make_room(self.max_entries);
        let longer = s.peers.get(&peer).map_or(until, |(u, _)| (*u).max(until));
        s.peers.insert(peer, (longer, reason.to_string()));
        s.push_due(longer, Banned::Peer(peer));
        match ip {
            Some(ip) => s.strike(ip, until, self.strikes_for_ip),
            None => false,
        }
    }

    /// `peer`, banned, completed a handshake from `ip` anyway: coming back
    /// while banned is an offence of its own, a strike against the address
    /// that lasts as long as the peer's ban (so a banned peer that keeps
    /// reconnecting soon costs the node no more handshakes, only accepts).
    /// Returns whether the address is now banned; false when `peer` is not
    /// banned.
    pub fn returned(&self, now: Instant, peer: &PeerId, ip: IpAddr) -> bool {
        let mut s = lock(&self.state);
        let Some(until) = s.peers.get(peer).map(|(u, _)| *u).filter(|u| *u > now) else {
            return false;
        };
        s.make_room(self.max_entries);
        s.strike(ip, until, self.strikes_for_ip)
    }

    pub fn unban(&self, peer: &PeerId) -> bool {
        lock(&self.state).peers.remove(peer).is_some()
    }

    pub fn unban_ip(&self, ip: &IpAddr) -> bool {
        let mut s = lock(&self.state);
        s.strikes.remove(ip);
        s.ips.remove(ip).is_some()
    }

    pub fn peer_banned(&self, now: Instant, peer: &PeerId) -> bool {
        lock(&self.state)
            .peers
            .get(peer)
            .is_some_and(|(until, _)| *until > now)
    }

    pub fn ip_banned(&self, now: Instant, ip: &IpAddr) -> bool {
        lock(&self.state)
            .ips
            .get(ip)
            .is_some_and(|until| *until > now)
    }

    /// Peer bans in force, longest left first.
    pub fn list(&self, now: Instant) -> Vec<Ban> {
        let mut s = lock(&self.state);
        s.expire(now);
        let mut out: Vec<Ban> = s
            .peers
            .iter()
            .map(|(p, (until, reason))| Ban {
                peer: *p,
                remaining: until.saturating_duration_since(now),
                reason: reason.clone(),
            })
            .collect();
        out.sort_by(|a, b| b.remaining.cmp(&a.remaining).then(a.peer.cmp(&b.peer)));
        out
    }

    /// Addresses banned now.
    pub fn banned_ips(&self, now: Instant) -> Vec<IpAddr> {
        let mut s = lock(&self.state);
        s.expire(now);
        let mut v: Vec<IpAddr> = s.ips.keys().copied().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, ip: usize, prefix: usize) -> Limits {
        Limits {
            max_pending_handshakes: total,
            max_pending_per_ip: ip,
            max_pending_per_prefix: prefix,
            ..Limits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn slots_are_shared_out_by_address_and_network_and_silent_ones_make_room() {
        let t = PendingHandshakes::new(limits(4, 2, 3));
        let (a1, _) = t.admit(ip("10.0.0.1")).unwrap();
        let (a2, _) = t.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(t.admit(ip("10.0.0.1")).err(), Some(Refusal::PerIp));
        let (b1, _) = t.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(t.admit(ip("10.0.0.3")).err(), Some(Refusal::PerPrefix));
        // Full: the oldest silent one (a1) is evicted for a newcomer.
        let (_c1, evicted) = t.admit(ip("10.0.9.1")).unwrap();
        assert!(!evicted);
        a2.heard.store(true, Ordering::Release);
        let (mut a1, mut a2) = (a1, a2);
        let (_d1, evicted) = t.admit(ip("10.0.8.1")).unwrap();
        assert!(evicted);
        assert!(a1.evicted.try_recv().is_ok(), "the oldest silent one goes");
        assert!(a2.evicted.try_recv().is_err(), "one that spoke stays");
        // Every remaining one has spoken: a newcomer is refused.
        b1.heard.store(true, Ordering::Release);
        _c1.heard.store(true, Ordering::Release);
        _d1.heard.store(true, Ordering::Release);
        assert_eq!(t.admit(ip("10.0.7.1")).err(), Some(Refusal::Full));
        // Released slots are free again, counters included.
        drop((a1, a2, b1));
        let (_e, _) = t.admit(ip("10.0.0.1")).unwrap();
        let (_f, _) = t.admit(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn bans_expire_and_repeat_offenders_lose_their_address() {
        let bans = Bans::new(100, 3);
        let now = Instant::now();
        let peer = |i: u8| PeerId::unverified([i; 32]);
        let addr = ip("192.0.2.7");
        for i in 0..2 {
            assert!(!bans.ban(now, peer(i), Some(addr), Duration::from_secs(60), "flood"));
        }
        assert!(bans.peer_banned(now, &peer(0)));
        assert!(
            !bans.ip_banned(now, &addr),
            "two strikes: the address is fine"
        );
        assert!(bans.ban(now, peer(2), Some(addr), Duration::from_secs(60), "flood"));
        assert!(bans.ip_banned(now, &addr));
        assert_eq!(bans.list(now).len(), 3);
        let later = now + Duration::from_secs(61);
        assert!(!bans.peer_banned(later, &peer(0)));
        assert!(!bans.ip_banned(later, &addr));
        assert!(bans.list(later).is_empty());
        assert!(bans.banned_ips(later).is_empty());
        // Lifted by hand.
        bans.ban(later, peer(9), None, Duration::from_secs(60), "manual");
        assert!(bans.unban(&peer(9)));
        assert!(!bans.peer_banned(later, &peer(9)));
    }

    #[test]
    fn a_banned_peer_that_keeps_coming_back_loses_its_address() {
        let bans = Bans::new(100, 3);
        let now = Instant::now();
        let (flooder, honest) = (PeerId::unverified([1; 32]), PeerId::unverified([2; 32]));
        let addr = ip("192.0.2.9");
        assert!(!bans.returned(now, &honest, addr), "not banned: no strike");
        assert!(!bans.ban(now, flooder, Some(addr), Duration::from_secs(60), "flood"));
        assert!(!bans.returned(now, &flooder, addr));
        assert!(bans.returned(now, &flooder, addr), "third offence");
        assert!(bans.ip_banned(now, &addr));
        // The strikes last as long as the peer's ban.
        let later = now + Duration::from_secs(61);
        assert!(!bans.ip_banned(later, &addr));
        assert!(!bans.returned(later, &flooder, addr));
        // Addresses are never banned with strikes off.
        let off = Bans::new(100, 0);
        off.ban(now, flooder, Some(addr), Duration::from_secs(60), "flood");
        for _ in 0..10 {
            assert!(!off.returned(now, &flooder, addr));
        }
        assert!(!off.ip_banned(now, &addr));
    }

    #[test]
    fn the_ban_table_stays_bounded_under_a_sybil_stream() {
        let bans = Bans::new(1000, 3);
        let now = Instant::now();
        for i in 0..20_000u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            let at = now + Duration::from_millis(u64::from(i));
            bans.ban(
                at,
                PeerId::unverified(b),
                None,
                Duration::from_secs(600),
                "x",
            );
        }
        let s = lock(&bans.state);
        assert!(s.len() <= 1000, "{}", s.len());
    }
}
