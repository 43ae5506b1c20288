//! The pool: each sender's transactions by nonce, checked against the
//! ledger, bounded per sender and in total.
//!
//! A sender's transactions form a run of consecutive nonces from its
//! ledger nonce, then gaps. The first `max_pending_per_sender` of the run
//! are *pending* (executable, offered by [`Pool::best`]); the rest of the
//! run and everything after a gap are *queued*, at most
//! `max_queued_per_sender`, and expire after `queued_lifetime`. A sender
//! must be able to pay for everything it has in the pool, so a key with no
//! balance cannot fill it.
//!
//! When the pool is full (count or bytes) a newcomer evicts the cheapest
//! transaction that ends some other sender's nonces (so no gap opens
//! before anything of that sender's), while that is cheaper than the
//! newcomer; a newcomer cheaper than all of those is refused. Replacing a
//! (sender, nonce) needs a fee-rate bump of `price_bump_percent`.
//!
//! Sans-IO: every call takes the time it happens at; the network side
//! lives elsewhere.

use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use peerlink_net::PeerId;

use crate::tx::{Transaction, TxId};

/// A sender's state in the ledger: the nonce of its next transaction and
/// what it can spend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub next_nonce: u64,
    pub balance: u128,
}

/// Where the pool reads accounts.
pub trait Ledger {
    /// A sender's account; an unknown sender has nonce 0 and nothing.
    fn account(&self, sender: &PeerId) -> Account;
}

impl Ledger for HashMap<PeerId, Account> {
    fn account(&self, sender: &PeerId) -> Account {
        self.get(sender).copied().unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub max_pending_per_sender: usize,
    pub max_queued_per_sender: usize,
    /// Transactions in the pool, at most...
    pub max_count: usize,
    /// ...and their bytes.
    pub max_bytes: usize,
    /// A replacement's fee rate must be this much higher, in percent.
    pub price_bump_percent: u64,
    /// Queued transactions are dropped this long after they arrived.
    pub queued_lifetime: Duration,
    /// The lowest fee rate accepted.
    pub min_fee_rate: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_pending_per_sender: 16,
            max_queued_per_sender: 64,
            max_count: 10_000,
            max_bytes: 32 << 20,
            price_bump_percent: 10,
            queued_lifetime: Duration::from_secs(3 * 3600),
            min_fee_rate: 1,
        }
    }
}

/// Why a transaction was not taken; the pool is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("already in the pool")]
    AlreadyKnown,
    #[error("fee rate {fee_rate} is under the pool's floor of {floor}")]
    FeeTooLow { fee_rate: u64, floor: u64 },
    #[error("nonce {nonce} is below the sender's next nonce {next}")]
    NonceTooLow { nonce: u64, next: u64 },
    #[error("nonce {nonce} is too far ahead (the sender's window ends before {limit})")]
    NonceTooHigh { nonce: u64, limit: u64 },
    #[error("replacement fee rate {fee_rate} is under the {needed} needed to replace {old}")]
    ReplacementUnderpriced {
        fee_rate: u64,
        old: u64,
        needed: u64,
    },
    #[error("the sender's balance {balance} does not cover {needed}")]
    InsufficientFunds { needed: u128, balance: u128 },
    #[error("the sender has as many queued transactions as it may")]
    SenderFull,
    #[error("the pool is full of transactions at least as good")]
    Underpriced,
}

/// Where a new transaction went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    Pending,
    Queued,
}

/// What an insert did.
#[derive(Debug)]
pub struct Inserted {
    pub placed: Placed,
    /// The transaction it replaced (same sender and nonce).
    pub replaced: Option<Transaction>,
    /// Transactions evicted to make room.
    pub evicted: Vec<Transaction>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub pending: usize,
    pub queued: usize,
    pub bytes: usize,
    pub senders: usize,
}

struct Entry {
    tx: Transaction,
    added: Instant,
}

/// One of a sender's transactions: what ordering needs without reading
/// the transaction, and where it lives in the slab.
#[derive(Clone, Copy, Debug)]
struct Held {
    nonce: u64,
    fee_rate: u64,
    slot: u32,
}

struct Sender {
    account: Account,
    /// What its transactions cost in all.
    cost: u128,
    /// By nonce, strictly increasing, each at least the account's next
    /// nonce; at most the nonce window long.
    txs: Vec<Held>,
}

impl Sender {
    /// Consecutive nonces from the ledger's next one. Nonces are distinct,
    /// increasing and not below it, so `txs[i].nonce == next + i` holds
    /// for a prefix exactly: a binary search.
    fn run(&self) -> usize {
        let next = self.account.next_nonce;
        let (mut lo, mut hi) = (0, self.txs.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = self.txs.get(mid).map(|h| h.nonce);
            if at == Some(next.saturating_add(mid as u64)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn find(&self, nonce: u64) -> Result<usize, usize> {
        self.txs.binary_search_by_key(&nonce, |h| h.nonce)
    }

    /// Its last transaction's key in [`Pool::tails`].
    fn tail(&self) -> Option<(u64, u32)> {
        self.txs.last().map(|h| (h.fee_rate, h.slot))
    }
}

/// The pool's transactions, each in a numbered slot (so the per-sender
/// lists and the eviction order hold 4-byte references, not 32-byte keys
/// and 200-byte transactions; freed slots are reused first), with the
/// index by id and the byte count.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    by_id: Map<TxId, u32>,
    bytes: usize,
}

impl Slab {
    fn get(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize)?.as_ref()
    }

    /// Stores `e`; `None` past `u32::MAX` slots (the pool's count bound
    /// keeps it far below).
    fn put(&mut self, e: Entry) -> Option<u32> {
        let (id, size) = (e.tx.id(), e.tx.size());
        let slot = match self.free.pop() {
            Some(slot) => {
                *self.slots.get_mut(slot as usize)? = Some(e);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(Some(e));
                slot
            }
        };
        self.by_id.insert(id, slot);
        self.bytes += size;
        Some(slot)
    }

    fn take(&mut self, slot: u32) -> Option<Entry> {
        let e = self.slots.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        self.by_id.remove(&e.tx.id());
        self.bytes -= e.tx.size();
        Some(e)
    }

    /// Frees a transaction already taken off its sender's list.
    fn forget(&mut self, s: &mut Sender, h: Held) -> Option<Transaction> {
        let e = self.take(h.slot)?;
        s.cost -= e.tx.cost();
        Some(e.tx)
    }
}

/// A hash map keyed by ids or keys that peers choose: foldhash, seeded at
/// random per process (cheaper than SipHash on 32-byte keys; the seed
/// keeps collisions out of a peer's reach).
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub struct Pool {
    config: PoolConfig,
    senders: Map<PeerId, Sender>,
    slab: Slab,
    /// Each sender's last transaction (fee rate, slot), cheapest first.
    tails: BTreeSet<(u64, u32)>,
}

impl Pool {
    pub fn new(mut config: PoolConfig) -> Pool {
        // Slots are numbered in 32 bits.
        config.max_count = config.max_count.min(u32::MAX as usize);
        Pool {
            config,
            senders: Map::default(),
            slab: Slab::default(),
            tails: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.slab.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.by_id.is_empty()
    }

    pub fn contains(&self, id: &TxId) -> bool {
        self.slab.by_id.contains_key(id)
    }

    pub fn get(&self, id: &TxId) -> Option<&Transaction> {
        Some(&self.slab.get(*self.slab.by_id.get(id)?)?.tx)
    }

    /// Whether `id` is pending or queued, if it is here.
    pub fn placement(&self, id: &TxId) -> Option<Placed> {
        let tx = self.get(id)?;
        let s = self.senders.get(&tx.sender)?;
        let pending = s.run().min(self.config.max_pending_per_sender) as u64;
        Some(if tx.nonce < s.account.next_nonce.saturating_add(pending) {
            Placed::Pending
        } else {
            Placed::Queued
        })
    }

    /// The nonce a sender's next transaction should carry: the ledger's
    /// next, past the sender's consecutive run in the pool.
    pub fn next_nonce(&self, sender: &PeerId, ledger: &impl Ledger) -> u64 {
        match self.senders.get(sender) {
            Some(s) => s.account.next_nonce.saturating_add(s.run() as u64),
            None => ledger.account(sender).next_nonce,
        }
    }

    /// Adds a transaction whose signature was checked.
    pub fn insert(
        &mut self,
        tx: Transaction,
        ledger: &impl Ledger,
        now: Instant,
    ) -> Result<Inserted, Rejected> {
        let c = &self.config;
        let id = tx.id();
        if self.contains(&id) {
            return Err(Rejected::AlreadyKnown);
        }
        if tx.fee_rate < c.min_fee_rate {
            return Err(Rejected::FeeTooLow {
                fee_rate: tx.fee_rate,
                floor: c.min_fee_rate,
            });
        }
        let peer = tx.sender;
        let fresh;
        // The replaced transaction's (fee rate, cost, size).
        let (account, old, cost, run, len) = match self.senders.get(&peer) {
            Some(s) => {
                fresh = None;
                let old = s
                    .find(tx.nonce)
                    .ok()
                    .and_then(|i| s.txs.get(i))
                    .and_then(|h| self.slab.get(h.slot))
                    .map(|e| (e.tx.fee_rate, e.tx.cost(), e.tx.size()));
                (s.account, old, s.cost, s.run(), s.txs.len())
            }
            None => {
                let a = ledger.account(&peer);
                fresh = Some(a);
                (a, None, 0, 0, 0)
            }
        };
        if tx.nonce < account.next_nonce {
            return Err(Rejected::NonceTooLow {
                nonce: tx.nonce,
                next: account.next_nonce,
            });
        }
        let window = (c.max_pending_per_sender + c.max_queued_per_sender) as u64;
        let limit = account.next_nonce.saturating_add(window);
        if tx.nonce >= limit {
            return Err(Rejected::NonceTooHigh {
                nonce: tx.nonce,
                limit,
            });
        }
        if let Some((old_rate, _, _)) = old {
            let bump = (u128::from(old_rate) * u128::from(c.price_bump_percent)).div_ceil(100);
            let needed = u64::try_from(u128::from(old_rate) + bump.max(1)).unwrap_or(u64::MAX);
            if tx.fee_rate < needed {
                return Err(Rejected::ReplacementUnderpriced {
                    fee_rate: tx.fee_rate,
                    old: old_rate,
                    needed,
                });
            }
        }
        let needed = cost - old.map_or(0, |o| o.1) + tx.cost();
        if needed > account.balance {
            return Err(Rejected::InsufficientFunds {
                needed,
                balance: account.balance,
            });
        }
        // The run after this nonce is filled in, and what would be queued.
        let (run_after, len_after) = if old.is_some() {
            (run, len)
        } else if tx.nonce == account.next_nonce + run as u64 {
            // The sender's transactions after its run: those that now
            // continue it.
            let after = self
                .senders
                .get(&peer)
                .map_or(&[][..], |s| s.txs.get(run..).unwrap_or_default());
            let joined = after
                .iter()
                .zip(tx.nonce + 1..)
                .take_while(|(h, n)| h.nonce == *n)
                .count();
            (run + 1 + joined, len + 1)
        } else {
            (run, len + 1)
        };
        let pending_after = run_after.min(c.max_pending_per_sender);
        if len_after - pending_after > c.max_queued_per_sender {
            return Err(Rejected::SenderFull);
        }
        let placed = if tx.nonce < account.next_nonce + pending_after as u64 {
            Placed::Pending
        } else {
            Placed::Queued
        };
        // Room: evict the cheapest other senders' last transactions while
        // they are cheaper than this one.
        // A replacement frees its predecessor's slot and bytes.
        let (freed, old_size) = old.map_or((0, 0), |o| (1, o.2));
        let (max_count, max_bytes, size) =
            (self.config.max_count, self.config.max_bytes, tx.size());
        let fits = |count: usize, bytes: usize| count < max_count && bytes + size <= max_bytes;
        let (mut count, mut bytes) = (self.len() - freed, self.slab.bytes - old_size);
        // First make sure the room can be had, so a refusal changes nothing:
        // each other sender's last transaction cheaper than this one,
        // cheapest first.
        let slab = &self.slab;
        let mut room = self
            .tails
            .iter()
            .take_while(|(rate, _)| *rate < tx.fee_rate)
            .filter_map(|(_, slot)| slab.get(*slot))
            .filter(|e| e.tx.sender != peer);
        while !fits(count, bytes) {
            let Some(e) = room.next() else {
                return Err(Rejected::Underpriced);
            };
            count = count.saturating_sub(1);
            bytes = bytes.saturating_sub(e.tx.size());
        }
        // Then evict the cheapest such one at a time (a sender's next-to-last
        // may be cheaper than another's last) until it fits.
        let mut evicted = Vec::new();
        while !fits(self.len() - freed, self.slab.bytes - old_size) {
            let slab = &self.slab;
            let victim = self
                .tails
                .iter()
                .take_while(|(rate, _)| *rate < tx.fee_rate)
                .filter_map(|(_, slot)| slab.get(*slot))
                .find(|e| e.tx.sender != peer)
                .map(|e| (e.tx.sender, e.tx.nonce));
            let Some((p, n)) = victim else {
                break;
            };
            evicted.extend(self.remove(&p, n));
        }
        let (nonce, fee_rate, tx_cost) = (tx.nonce, tx.fee_rate, tx.cost());
        let Some(slot) = self.slab.put(Entry { tx, added: now }) else {
            return Err(Rejected::Underpriced);
        };
        let s = self.senders.entry(peer).or_insert_with(|| Sender {
            account: fresh.unwrap_or(account),
            txs: Vec::with_capacity(4),
            cost: 0,
        });
        let old_tail = s.tail();
        let held = Held {
            nonce,
            fee_rate,
            slot,
        };
        let mut replaced = None;
        match s.find(nonce) {
            Ok(i) => {
                if let Some(h) = s.txs.get_mut(i) {
                    let gone = std::mem::replace(h, held);
                    replaced = self.slab.forget(s, gone);
                }
            }
            Err(i) => s.txs.insert(i, held),
        }
        s.cost += tx_cost;
        retail(&mut self.tails, old_tail, s.tail());
        Ok(Inserted {
            placed,
            replaced,
            evicted,
        })
    }

    /// Takes out `peer`'s transaction `nonce` (the sender goes when it has
    /// none left). One lookup of the sender; the tail set changes only
    /// when the sender's last transaction does.
    fn remove(&mut self, peer: &PeerId, nonce: u64) -> Option<Transaction> {
        let s = self.senders.get_mut(peer)?;
        let i = s.find(nonce).ok()?;
        let old_tail = s.tail();
        let h = s.txs.remove(i);
        let tx = self.slab.forget(s, h);
        retail(&mut self.tails, old_tail, s.tail());
        if s.txs.is_empty() {
            self.senders.remove(peer);
        }
        tx
    }

    /// After a block: `senders` have new accounts in `ledger`. Drops what
    /// their new nonces made stale and, from the end, what their new
    /// balances no longer cover; queued transactions that became
    /// consecutive are pending from now on. Returns what was dropped.
    pub fn update_accounts<'a>(
        &mut self,
        senders: impl IntoIterator<Item = &'a PeerId>,
        ledger: &impl Ledger,
    ) -> Vec<Transaction> {
        let mut dropped = Vec::new();
        for peer in senders {
            let account = ledger.account(peer);
            let Some(s) = self.senders.get_mut(peer) else {
                continue;
            };
            s.account = account;
            let old_tail = s.tail();
            // Stale from the front, then unaffordable from the end.
            let stale = s.txs.partition_point(|h| h.nonce < account.next_nonce);
            for i in 0..stale {
                if let Some(h) = s.txs.get(i).copied() {
                    dropped.extend(self.slab.forget(s, h));
                }
            }
            s.txs.drain(..stale);
            while s.cost > s.account.balance {
                let Some(h) = s.txs.pop() else {
                    break;
                };
                dropped.extend(self.slab.forget(s, h));
            }
            retail(&mut self.tails, old_tail, s.tail());
            if s.txs.is_empty() {
                self.senders.remove(peer);
            }
        }
        dropped
    }

    /// Drops queued transactions older than the lifetime.
    pub fn prune(&mut self, now: Instant) -> Vec<Transaction> {
        let lifetime = self.config.queued_lifetime;
        let max_pending = self.config.max_pending_per_sender;
        let mut old = Vec::new();
        for (peer, s) in &self.senders {
            let pending = s.run().min(max_pending);
            for h in s.txs.iter().skip(pending) {
                let added = self.slab.get(h.slot).map(|e| e.added);
                if added.is_some_and(|a| now.saturating_duration_since(a) >= lifetime) {
                    old.push((*peer, h.nonce));
                }
            }
        }
        old.into_iter()
            .filter_map(|(p, n)| self.remove(&p, n))
            .collect()
    }

    /// Executable transactions, the best fee rate first, each sender's in
    /// nonce order.
    pub fn best(&self) -> Best<'_> {
        let max = self.config.max_pending_per_sender;
        let mut heads = BinaryHeap::with_capacity(self.senders.len());
        for (peer, s) in &self.senders {
            if let Some(h) = s.txs.first() {
                if max > 0 && h.nonce == s.account.next_nonce {
                    heads.push(Head {
                        fee_rate: h.fee_rate,
                        peer,
                        txs: &s.txs,
                        at: 0,
                    });
                }
            }
        }
        Best {
            slab: &self.slab,
            heads,
            max,
        }
    }

    pub fn status(&self) -> Status {
        let max = self.config.max_pending_per_sender;
        let pending: usize = self.senders.values().map(|s| s.run().min(max)).sum();
        Status {
            pending,
            queued: self.len() - pending,
            bytes: self.slab.bytes,
            senders: self.senders.len(),
        }
    }
}

/// Moves a sender's entry in the tail set from `old` to `new`, if it moved.
fn retail(tails: &mut BTreeSet<(u64, u32)>, old: Option<(u64, u32)>, new: Option<(u64, u32)>) {
    if old != new {
        if let Some(t) = old {
            tails.remove(&t);
        }
        if let Some(t) = new {
            tails.insert(t);
        }
    }
}

/// A sender's next executable transaction in [`Best`]'s heap: ordered by
/// fee rate, then by sender key (lower first) so the order is total.
struct Head<'a> {
    fee_rate: u64,
    peer: &'a PeerId,
    /// The sender's list (not the sender: one memory read less per pop).
    txs: &'a [Held],
    /// Its index in the list.
    at: usize,
}

impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.fee_rate
            .cmp(&other.fee_rate)
            .then_with(|| other.peer.cmp(self.peer))
    }
}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Head<'_> {}

/// [`Pool::best`]: a heap of each sender's next executable transaction.
pub struct Best<'a> {
    slab: &'a Slab,
    heads: BinaryHeap<Head<'a>>,
    max: usize,
}

impl<'a> Iterator for Best<'a> {
    type Item = &'a Transaction;

    fn next(&mut self) -> Option<&'a Transaction> {
        let head = self.heads.pop()?;
        let h = head.txs.get(head.at)?;
        let at = head.at + 1;
        if at < self.max {
            if let Some(n) = head.txs.get(at).filter(|n| n.nonce == h.nonce + 1) {
                self.heads.push(Head {
                    fee_rate: n.fee_rate,
                    at,
                    ..head
                });
            }
        }
        Some(&self.slab.get(h.slot)?.tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_net::Keypair;

    struct World {
        keys: Vec<Keypair>,
        ledger: HashMap<PeerId, Account>,
        t: Instant,
    }

    impl World {
        fn new(n: usize, balance: u128) -> World {
            let keys: Vec<Keypair> = (0..n).map(|_| Keypair::generate().unwrap()).collect();
            let ledger = keys
                .iter()
                .map(|k| {
                    (
                        k.peer_id(),
                        Account {
                            next_nonce: 0,
                            balance,
                        },
                    )
                })
                .collect();
            World {
                keys,
                ledger,
                t: Instant::now(),
            }
        }

        fn tx(&self, who: usize, nonce: u64, fee_rate: u64) -> Transaction {
            self.tx_with(who, nonce, fee_rate, b"x")
        }

        fn tx_with(&self, who: usize, nonce: u64, fee_rate: u64, payload: &[u8]) -> Transaction {
            Transaction::sign(&self.keys[who], nonce, fee_rate, payload.to_vec()).unwrap()
        }

        fn id(&self, who: usize) -> PeerId {
            self.keys[who].peer_id()
        }
    }

    fn pool(config: PoolConfig) -> Pool {
        Pool::new(config)
    }

    #[test]
    fn consecutive_nonces_are_pending_and_a_gap_is_queued_until_filled() {
        let w = World::new(1, u128::MAX);
        let mut p = pool(PoolConfig::default());
        let put = |p: &mut Pool, n| p.insert(w.tx(0, n, 5), &w.ledger, w.t).unwrap().placed;
        assert_eq!(put(&mut p, 0), Placed::Pending);
        assert_eq!(put(&mut p, 2), Placed::Queued);
        assert_eq!(p.status().pending, 1);
        assert_eq!(put(&mut p, 1), Placed::Pending);
        assert_eq!((p.status().pending, p.status().queued), (3, 0));
        let nonces: Vec<u64> = p.best().map(|t| t.nonce).collect();
        assert_eq!(nonces, vec![0, 1, 2]);
    }

    #[test]
    fn each_rule_has_its_named_refusal_and_leaves_the_pool_unchanged() {
        let mut w = World::new(3, 1_000_000);
        let mut p = pool(PoolConfig {
            max_pending_per_sender: 2,
            max_queued_per_sender: 2,
            ..PoolConfig::default()
        });
        let a = w.tx(0, 0, 10);
        p.insert(a.clone(), &w.ledger, w.t).unwrap();
        assert_eq!(
            p.insert(a.clone(), &w.ledger, w.t).unwrap_err(),
            Rejected::AlreadyKnown
        );
        assert!(matches!(
            p.insert(w.tx(0, 1, 0), &w.ledger, w.t),
            Err(Rejected::FeeTooLow { .. })
        ));
        // A bump under 10 % does not replace.
        assert!(matches!(
            p.insert(w.tx_with(0, 0, 10, b"y"), &w.ledger, w.t),
            Err(Rejected::ReplacementUnderpriced { needed: 11, .. })
        ));
        let b = w.tx(0, 0, 11);
        let r = p.insert(b.clone(), &w.ledger, w.t).unwrap();
        assert_eq!(r.replaced.map(|t| t.id()), Some(a.id()));
        assert!(!p.contains(&a.id()) && p.contains(&b.id()));
        // The window is pending + queued nonces from the ledger's.
        assert!(matches!(
            p.insert(w.tx(0, 4, 10), &w.ledger, w.t),
            Err(Rejected::NonceTooHigh { limit: 4, .. })
        ));
        // A sender that cannot pay for everything it has in the pool.
        let rich = w.tx(0, 1, 1_000_000);
        assert!(matches!(
            p.insert(rich, &w.ledger, w.t),
            Err(Rejected::InsufficientFunds { .. })
        ));
        // A key with no balance cannot add anything.
        let broke = Keypair::generate().unwrap();
        let t = Transaction::sign(&broke, 0, 1, &b"x"[..]).unwrap();
        assert!(matches!(
            p.insert(t, &w.ledger, w.t),
            Err(Rejected::InsufficientFunds { balance: 0, .. })
        ));
        // Queued over the sender's share: without nonce 0, nonces 1 and 2
        // are queued, and a third would be one too many.
        p.insert(w.tx(1, 1, 10), &w.ledger, w.t).unwrap();
        p.insert(w.tx(1, 2, 10), &w.ledger, w.t).unwrap();
        assert_eq!(
            p.insert(w.tx(1, 3, 10), &w.ledger, w.t).unwrap_err(),
            Rejected::SenderFull
        );
        // Below the ledger's nonce.
        w.ledger.get_mut(&w.id(2)).unwrap().next_nonce = 5;
        assert!(matches!(
            p.insert(w.tx(2, 4, 10), &w.ledger, w.t),
            Err(Rejected::NonceTooLow { next: 5, .. })
        ));
        assert_eq!(p.len(), 3);
        assert_eq!((p.status().pending, p.status().queued), (1, 2));
        assert_eq!(p.status().senders, 2);
    }

    #[test]
    fn a_full_pool_evicts_the_cheapest_tail_and_refuses_what_is_cheaper_still() {
        let w = World::new(3, u128::MAX);
        let mut p = pool(PoolConfig {
            max_count: 3,
            ..PoolConfig::default()
        });
        p.insert(w.tx(0, 0, 50), &w.ledger, w.t).unwrap();
        p.insert(w.tx(0, 1, 5), &w.ledger, w.t).unwrap();
        p.insert(w.tx(1, 0, 20), &w.ledger, w.t).unwrap();
        // Cheaper than every other sender's tail: refused, nothing lost.
        assert_eq!(
            p.insert(w.tx(2, 0, 4), &w.ledger, w.t).unwrap_err(),
            Rejected::Underpriced
        );
        assert_eq!(p.len(), 3);
        // Sender 0's nonce 1 (fee 5) goes, not its nonce 0: no gap opens.
        let r = p.insert(w.tx(2, 0, 6), &w.ledger, w.t).unwrap();
        assert_eq!(
            r.evicted
                .iter()
                .map(|t| (t.sender, t.nonce))
                .collect::<Vec<_>>(),
            vec![(w.id(0), 1)]
        );
        assert_eq!(p.len(), 3);
        // A sender never evicts its own to make room.
        assert_eq!(
            p.insert(w.tx(2, 1, 7), &w.ledger, w.t).unwrap_err(),
            Rejected::Underpriced
        );
    }

    #[test]
    fn best_takes_fees_in_order_but_never_a_nonce_before_the_one_below_it() {
        let w = World::new(2, u128::MAX);
        let mut p = pool(PoolConfig::default());
        // Sender 0: a cheap nonce 0 in front of a rich nonce 1.
        p.insert(w.tx(0, 0, 1), &w.ledger, w.t).unwrap();
        p.insert(w.tx(0, 1, 100), &w.ledger, w.t).unwrap();
        p.insert(w.tx(1, 0, 50), &w.ledger, w.t).unwrap();
        p.insert(w.tx(1, 1, 40), &w.ledger, w.t).unwrap();
        let order: Vec<(PeerId, u64)> = p.best().map(|t| (t.sender, t.nonce)).collect();
        assert_eq!(
            order,
            vec![(w.id(1), 0), (w.id(1), 1), (w.id(0), 0), (w.id(0), 1)]
        );
    }

    #[test]
    fn a_block_drops_what_it_made_stale_or_unaffordable_and_promotes_the_rest() {
        let mut w = World::new(1, u128::MAX);
        let mut p = pool(PoolConfig::default());
        for n in [0, 1, 3, 4] {
            p.insert(w.tx(0, n, 10), &w.ledger, w.t).unwrap();
        }
        assert_eq!((p.status().pending, p.status().queued), (2, 2));
        // A block took nonces 0..=2 (2 came from elsewhere).
        let me = w.id(0);
        let one = w.tx(0, 3, 10).cost();
        *w.ledger.get_mut(&me).unwrap() = Account {
            next_nonce: 3,
            balance: one,
        };
        let dropped = p.update_accounts([&me], &w.ledger);
        let mut gone: Vec<u64> = dropped.iter().map(|t| t.nonce).collect();
        gone.sort();
        // 0 and 1 are stale; 4 is more than the balance now covers.
        assert_eq!(gone, vec![0, 1, 4]);
        assert_eq!((p.status().pending, p.status().queued), (1, 0));
        assert_eq!(p.best().next().map(|t| t.nonce), Some(3));
    }

    #[test]
    fn queued_transactions_expire_and_pending_ones_do_not() {
        let w = World::new(1, u128::MAX);
        let mut p = pool(PoolConfig::default());
        p.insert(w.tx(0, 0, 10), &w.ledger, w.t).unwrap();
        p.insert(w.tx(0, 5, 10), &w.ledger, w.t).unwrap();
        let life = p.config().queued_lifetime;
        assert!(p.prune(w.t + life - Duration::from_secs(1)).is_empty());
        let gone = p.prune(w.t + life);
        assert_eq!(gone.iter().map(|t| t.nonce).collect::<Vec<_>>(), vec![5]);
        assert_eq!(p.len(), 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Insert {
                who: usize,
                nonce: u64,
                fee: u64,
            },
            Block {
                who: usize,
                advance: u64,
                balance: u32,
            },
            Prune {
                secs: u64,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0..4usize, 0..12u64, 1..40u64)
                    .prop_map(|(who, nonce, fee)| Op::Insert { who, nonce, fee }),
                1 => (0..4usize, 0..4u64, 0..200_000u32)
                    .prop_map(|(who, advance, balance)| Op::Block { who, advance, balance }),
                1 => (0..20_000u64).prop_map(|secs| Op::Prune { secs }),
            ]
        }

        fn check(p: &Pool) {
            let c = p.config();
            let mut count = 0;
            let mut bytes = 0;
            for (peer, s) in &p.senders {
                assert!(!s.txs.is_empty());
                assert!(s.txs.windows(2).all(|w| w[0].nonce < w[1].nonce));
                let mut cost = 0;
                for h in &s.txs {
                    let e = p.slab.get(h.slot).unwrap();
                    assert!(h.nonce >= s.account.next_nonce);
                    assert_eq!(
                        (e.tx.sender, e.tx.nonce, e.tx.fee_rate),
                        (*peer, h.nonce, h.fee_rate)
                    );
                    assert_eq!(p.slab.by_id.get(&e.tx.id()), Some(&h.slot));
                    cost += e.tx.cost();
                    bytes += e.tx.size();
                    count += 1;
                }
                assert_eq!(cost, s.cost);
                assert!(s.cost <= s.account.balance);
                let pending = s.run().min(c.max_pending_per_sender);
                assert!(s.txs.len() - pending <= c.max_queued_per_sender);
                assert!(p.tails.contains(&s.tail().unwrap()));
            }
            let live = p.slab.slots.iter().filter(|e| e.is_some()).count();
            assert_eq!(live + p.slab.free.len(), p.slab.slots.len());
            assert_eq!(live, p.slab.by_id.len());
            assert_eq!(p.tails.len(), p.senders.len());
            assert_eq!((count, bytes), (p.slab.by_id.len(), p.slab.bytes));
            assert!(count <= c.max_count && bytes <= c.max_bytes);
            // best(): every pending transaction once, each sender's in
            // nonce order from its ledger nonce, and each pick the best of
            // the senders' next ones at that moment.
            let mut next: HashMap<PeerId, u64> = p
                .senders
                .iter()
                .map(|(k, s)| (*k, s.account.next_nonce))
                .collect();
            let mut n = 0;
            for t in p.best() {
                let want = next.get_mut(&t.sender).unwrap();
                assert_eq!(t.nonce, *want);
                *want += 1;
                n += 1;
            }
            assert_eq!(n, p.status().pending);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn every_bound_holds_under_random_operations(ops in proptest::collection::vec(op(), 1..120)) {
                let mut w = World::new(4, 150_000);
                let mut p = Pool::new(PoolConfig {
                    max_pending_per_sender: 3,
                    max_queued_per_sender: 4,
                    max_count: 9,
                    max_bytes: 9 * 120,
                    ..PoolConfig::default()
                });
                for op in ops {
                    match op {
                        Op::Insert { who, nonce, fee } => {
                            let before = p.len();
                            let tx = w.tx(who, nonce, fee);
                            match p.insert(tx, &w.ledger, w.t) {
                                Ok(r) => prop_assert_eq!(
                                    p.len() + r.evicted.len() + usize::from(r.replaced.is_some()),
                                    before + 1
                                ),
                                Err(_) => prop_assert_eq!(p.len(), before),
                            }
                        }
                        Op::Block { who, advance, balance } => {
                            let id = w.id(who);
                            let a = w.ledger.get_mut(&id).unwrap();
                            a.next_nonce += advance;
                            a.balance = u128::from(balance);
                            p.update_accounts([&id], &w.ledger);
                        }
                        Op::Prune { secs } => {
                            p.prune(w.t + Duration::from_secs(secs));
                        }
                    }
                    check(&p);
                }
            }
        }
    }
}
