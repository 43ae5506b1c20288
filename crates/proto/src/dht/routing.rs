//! The routing table: k-buckets by XOR distance, least-recently-seen
//! first, with a replacement candidate per full bucket and a per-subnet cap
//! per bucket (so one operator with many identities cannot fill a bucket).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::key::Key;
use super::wire::Contact;
use crate::PeerId;

#[derive(Clone, Debug)]
pub struct Entry {
    pub contact: Contact,
    pub key: Key,
    pub last_seen: Instant,
    failures: u8,
}

#[derive(Default)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    /// A peer that answered while the bucket was full; it replaces the
    /// least-recently-seen entry if that one fails its ping.
    pending: Option<Entry>,
    refreshed: Option<Instant>,
}

/// What [`RoutingTable::on_answered`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Insert {
    Updated,
    Inserted,
    /// The bucket is full: ping this least-recently-seen peer; if it does
    /// not answer, the newcomer takes its place.
    PingOldest(Contact),
    /// Full, and a liveness check of the oldest is already under way.
    Full,
    SubnetLimit,
    SelfEntry,
}

pub struct RoutingTable {
    local: Key,
    k: usize,
    max_per_subnet: usize,
    /// Indexed by the leading zeros of the distance (0 = farthest half).
    buckets: Vec<Bucket>,
    len: usize,
}

/// Addresses that can never be dialled: unspecified, port 0, multicast,
/// broadcast, and 0.0.0.0/8.
pub fn addr_usable(addr: &SocketAddr) -> bool {
    if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return false;
    }
    match addr.ip() {
        IpAddr::V4(v4) => !v4.is_broadcast() && v4.octets()[0] != 0,
        IpAddr::V6(_) => true,
    }
}

/// The subnet used for per-bucket limits: /24 for IPv4, /48 for IPv6;
/// `None` for loopback (a local testnet shares one address).
fn subnet(ip: &IpAddr) -> Option<[u8; 6]> {
    if ip.is_loopback() {
        return None;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some([4, o[0], o[1], o[2], 0, 0])
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            Some([o[0], o[1], o[2], o[3], o[4], o[5]])
        }
    }
}

impl RoutingTable {
    pub fn new(local: Key, k: usize, max_per_subnet: usize) -> Self {
        RoutingTable {
            local,
            k: k.max(1),
            max_per_subnet: max_per_subnet.max(1),
            buckets: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn index(&self, key: &Key) -> Option<usize> {
        let lz = self.local.distance(key).leading_zeros();
        (lz < 256).then_some(lz)
    }

    fn bucket_mut(&mut self, i: usize) -> &mut Bucket {
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Bucket::default);
        }
        &mut self.buckets[i]
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.get(&Key::of_peer(peer)).is_some()
    }

    fn get(&self, key: &Key) -> Option<&Entry> {
        let i = self.index(key)?;
        self.buckets.get(i)?.entries.iter().find(|e| e.key == *key)
    }

    /// Would a new `peer` be taken (its bucket has room, or is full with
    /// no liveness check under way)? False for known peers and oneself.
    pub fn would_accept(&self, peer: &PeerId) -> bool {
        let key = Key::of_peer(peer);
        let Some(i) = self.index(&key) else {
            return false;
        };
        match self.buckets.get(i) {
            None => true,
            Some(b) => {
                !b.entries.iter().any(|e| e.key == key)
                    && (b.entries.len() < self.k || b.pending.is_none())
            }
        }
    }

    /// `contact` answered a request: refresh it or try to add it.
    pub fn on_answered(&mut self, contact: Contact, now: Instant) -> Insert {
        let key = Key::of_peer(&contact.id);
        let Some(i) = self.index(&key) else {
            return Insert::SelfEntry;
        };
        let (k, max_subnet) = (self.k, self.max_per_subnet);
        let b = self.bucket_mut(i);
        if let Some(pos) = b.entries.iter().position(|e| e.key == key) {
            let mut e = b.entries.remove(pos);
            e.contact = contact;
            e.last_seen = now;
            e.failures = 0;
            b.entries.push(e);
            return Insert::Updated;
        }
        if let Some(net) = subnet(&contact.addr.ip()) {
            let same = b
                .entries
                .iter()
                .filter(|e| subnet(&e.contact.addr.ip()) == Some(net))
                .count();
            if same >= max_subnet {
                return Insert::SubnetLimit;
            }
        }
        let entry = Entry {
            contact,
            key,
            last_seen: now,
            failures: 0,
        };
        if b.entries.len() < k {
            b.entries.push(entry);
            self.len += 1;
            return Insert::Inserted;
        }
        let checking = b.pending.is_some();
        b.pending = Some(entry);
        match (checking, b.entries.first()) {
            (false, Some(oldest)) => Insert::PingOldest(oldest.contact),
            _ => Insert::Full,
        }
    }

    /// A request to `peer` failed or timed out. A peer with a waiting
    /// replacement is replaced at once; others go after three failures.
    pub fn on_failed(&mut self, peer: &PeerId) {
        let key = Key::of_peer(peer);
        let Some(i) = self.index(&key) else { return };
        let Some(b) = self.buckets.get_mut(i) else {
            return;
        };
        let Some(pos) = b.entries.iter().position(|e| e.key == key) else {
            return;
        };
        b.entries[pos].failures = b.entries[pos].failures.saturating_add(1);
        if b.pending.is_some() || b.entries[pos].failures >= 3 {
            b.entries.remove(pos);
            self.len -= 1;
            if let Some(p) = b.pending.take() {
                b.entries.push(p);
                self.len += 1;
            }
        }
    }

    /// The liveness check of a full bucket's oldest entry came back alive:
    /// keep it, drop the candidate.
    pub fn clear_pending_for(&mut self, peer: &PeerId) {
        let key = Key::of_peer(peer);
        if let Some(i) = self.index(&key) {
            if let Some(b) = self.buckets.get_mut(i) {
                b.pending = None;
            }
        }
    }

    pub fn remove(&mut self, peer: &PeerId) {
        let key = Key::of_peer(peer);
        let Some(i) = self.index(&key) else { return };
        if let Some(b) = self.buckets.get_mut(i) {
            let before = b.entries.len();
            b.entries.retain(|e| e.key != key);
            self.len -= before - b.entries.len();
        }
    }

    /// Up to `n` contacts closest to `target`, nearest first.
    ///
    /// Walks buckets in distance order instead of sorting the table: with
    /// `i` = the target's bucket, bucket `i` holds the nearest entries,
    /// then every deeper bucket (all at the same XOR prefix), then buckets
    /// `i-1`, `i-2`, … each farther than the last.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<Contact> {
        let mut out: Vec<Contact> = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let i = self
            .local
            .distance(target)
            .leading_zeros()
            .min(self.buckets.len());
        let take = |group: &mut Vec<(super::key::Distance, Contact)>, out: &mut Vec<Contact>| {
            group.sort_unstable_by_key(|a| a.0);
            for (_, c) in group.drain(..) {
                if out.len() == n {
                    break;
                }
                out.push(c);
            }
        };
        let mut group = Vec::with_capacity(2 * self.k);
        let dist = |e: &Entry| (e.key.distance(target), e.contact);
        if let Some(b) = self.buckets.get(i) {
            group.extend(b.entries.iter().map(dist));
        }
        take(&mut group, &mut out);
        if out.len() < n {
            group.extend(
                self.buckets
                    .iter()
                    .skip(i + 1)
                    .flat_map(|b| b.entries.iter())
                    .map(dist),
            );
            take(&mut group, &mut out);
        }
        for j in (0..i).rev() {
            if out.len() >= n {
                break;
            }
            group.extend(self.buckets[j].entries.iter().map(dist));
            take(&mut group, &mut out);
        }
        out
    }

    /// How many known contacts are closer to `target` than we are,
    /// counting up to `limit`. Entries of buckets nearer us than the
    /// target's bucket are all farther from it, so only the target's
    /// bucket and deeper ones are compared.
    pub fn closer_than_local(&self, target: &Key, limit: usize) -> usize {
        let ours = self.local.distance(target);
        let first = ours
            .leading_zeros()
            .min(self.buckets.len().saturating_sub(1));
        self.buckets
            .iter()
            .skip(first)
            .flat_map(|b| b.entries.iter())
            .filter(|e| e.key.distance(target) < ours)
            .take(limit)
            .count()
    }

    /// Every entry (for peer exchange and diagnostics).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// Bucket indices (leading zeros) that hold entries and were not
    /// refreshed since `before`.
    pub fn stale_buckets(&self, before: Instant) -> Vec<usize> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.refreshed.is_none_or(|t| t < before))
            .map(|(i, _)| i)
            .collect()
    }

    pub fn mark_refreshed(&mut self, leading_zeros: usize, now: Instant) {
        if leading_zeros < 256 {
            self.bucket_mut(leading_zeros).refreshed = Some(now);
        }
    }

    pub fn local(&self) -> &Key {
        &self.local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn contact(seed: u32, ip: [u8; 4]) -> Contact {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&seed.to_le_bytes());
        Contact::new(
            Keypair::from_secret(s).peer_id(),
            SocketAddr::from((ip, 4000)),
        )
    }

    #[test]
    fn full_bucket_pings_oldest_and_replaces_it_on_failure() {
        let now = Instant::now();
        let local = Key::hash(b"local");
        let mut t = RoutingTable::new(local, 2, 100);
        // Find three contacts in the farthest bucket (lz 0).
        let far: Vec<Contact> = (0..200)
            .map(|i| contact(i, [10, (i % 200) as u8, 1, 1]))
            .filter(|c| local.distance(&Key::of_peer(&c.id)).leading_zeros() == 0)
            .take(3)
            .collect();
        assert_eq!(t.on_answered(far[0], now), Insert::Inserted);
        assert_eq!(t.on_answered(far[1], now), Insert::Inserted);
        assert_eq!(t.on_answered(far[2], now), Insert::PingOldest(far[0]));
        assert_eq!(t.on_answered(far[2], now), Insert::Full);
        // The oldest fails its ping: the newcomer takes its place.
        t.on_failed(&far[0].id);
        assert!(!t.contains(&far[0].id));
        assert!(t.contains(&far[2].id));
        assert_eq!(t.len(), 2);
        // Seen again: moves to the back (most recent).
        assert_eq!(t.on_answered(far[1], now), Insert::Updated);
    }

    #[test]
    fn one_subnet_cannot_fill_a_bucket_but_loopback_is_exempt() {
        let now = Instant::now();
        let local = Key::hash(b"x");
        let mut t = RoutingTable::new(local, 20, 2);
        let (mut ok, mut limited) = (0, 0);
        for i in 0..400 {
            let c = contact(i, [66, 1, 2, (i % 250) as u8]);
            match t.on_answered(c, now) {
                Insert::Inserted => ok += 1,
                Insert::SubnetLimit => limited += 1,
                _ => {}
            }
        }
        // At most two per bucket from 66.1.2.0/24.
        assert!(ok <= 2 * 20, "{ok}");
        assert!(limited > 300, "{limited}");
        let mut t = RoutingTable::new(local, 20, 2);
        let n = (0..100)
            .filter(|i| t.on_answered(contact(*i, [127, 0, 0, 1]), now) == Insert::Inserted)
            .count();
        assert!(n > 20);
    }

    #[test]
    fn closest_is_sorted_and_excludes_self() {
        let now = Instant::now();
        let local = Key::hash(b"y");
        let mut t = RoutingTable::new(local, 20, 20);
        for i in 0..300 {
            t.on_answered(contact(i, [127, 0, 0, 1]), now);
        }
        // Against brute force, for targets near and far from us.
        for i in 0..200u32 {
            let target = if i < 100 {
                Key::hash(&i.to_le_bytes())
            } else {
                local.random_at(i as usize - 100, [i as u8; 32])
            };
            for n in [1, 5, 20, 50] {
                let c = t.closest(&target, n);
                let mut all: Vec<_> = t
                    .entries()
                    .map(|e| (e.key.distance(&target), e.contact))
                    .collect();
                all.sort_by_key(|a| a.0);
                let want: Vec<_> = all.into_iter().take(n).map(|x| x.1).collect();
                assert_eq!(c, want, "target {i} n {n}");
            }
            let ours = local.distance(&target);
            let closer = t
                .entries()
                .filter(|e| e.key.distance(&target) < ours)
                .count();
            assert_eq!(
                t.closer_than_local(&target, usize::MAX),
                closer,
                "target {i}"
            );
            assert_eq!(t.closer_than_local(&target, 3), closer.min(3));
        }
        assert!(addr_usable(&"1.2.3.4:5".parse().unwrap()));
        for bad in [
            "0.0.0.0:5",
            "1.2.3.4:0",
            "224.0.0.1:5",
            "255.255.255.255:5",
            "[::]:5",
            "0.1.2.3:4",
        ] {
            assert!(!addr_usable(&bad.parse().unwrap()), "{bad}");
        }
    }
}
