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

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
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

struct Sender {
    account: Account,
    txs: BTreeMap<u64, Entry>,
    /// What its transactions cost in all.
    cost: u128,
}

impl Sender {
    /// Consecutive nonces from the ledger's next one.
    fn run(&self) -> usize {
        let mut n = 0;
        for (i, nonce) in self.txs.keys().enumerate() {
            if *nonce != self.account.next_nonce.saturating_add(i as u64) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Its last transaction's key in [`Pool::tails`].
    fn tail(&self, peer: PeerId) -> Option<(u64, PeerId, u64)> {
        self.txs
            .last_key_value()
            .map(|(n, e)| (e.tx.fee_rate, peer, *n))
    }
}

/// A hash map keyed by ids or keys that peers choose: foldhash, seeded at
/// random per process (cheaper than SipHash on 32-byte keys; the seed
/// keeps collisions out of a peer's reach).
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub struct Pool {
    config: PoolConfig,
    senders: Map<PeerId, Sender>,
    by_id: Map<TxId, (PeerId, u64)>,
    /// Each sender's last transaction, cheapest first.
    tails: BTreeSet<(u64, PeerId, u64)>,
    bytes: usize,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Pool {
        Pool {
            config,
            senders: Map::default(),
            by_id: Map::default(),
            tails: BTreeSet::new(),
            bytes: 0,
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn contains(&self, id: &TxId) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get(&self, id: &TxId) -> Option<&Transaction> {
        let (peer, nonce) = self.by_id.get(id)?;
        Some(&self.senders.get(peer)?.txs.get(nonce)?.tx)
    }

    /// Whether `id` is pending or queued, if it is here.
    pub fn placement(&self, id: &TxId) -> Option<Placed> {
        let (peer, nonce) = self.by_id.get(id)?;
        let s = self.senders.get(peer)?;
        let pending = s.run().min(self.config.max_pending_per_sender) as u64;
        Some(if *nonce < s.account.next_nonce.saturating_add(pending) {
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
        if self.by_id.contains_key(&tx.id()) {
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
        let (account, old, cost, run, len) = match self.senders.get(&peer) {
            Some(s) => {
                fresh = None;
                let old = s
                    .txs
                    .get(&tx.nonce)
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
            let s = self.senders.get(&peer);
            let mut r = run + 1;
            while s.is_some_and(|s| s.txs.contains_key(&(account.next_nonce + r as u64))) {
                r += 1;
            }
            (r, len + 1)
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
        let (mut count, mut bytes) = (self.len() - freed, self.bytes - old_size);
        // First make sure the room can be had, so a refusal changes nothing:
        // each other sender's last transaction cheaper than this one,
        // cheapest first.
        let mut room = self
            .tails
            .iter()
            .filter(|(rate, p, _)| *p != peer && *rate < tx.fee_rate);
        while !fits(count, bytes) {
            let Some((_, p, n)) = room.next() else {
                return Err(Rejected::Underpriced);
            };
            let size = self
                .senders
                .get(p)
                .and_then(|s| s.txs.get(n))
                .map_or(0, |e| e.tx.size());
            count = count.saturating_sub(1);
            bytes = bytes.saturating_sub(size);
        }
        // Then evict the cheapest such one at a time (a sender's next-to-last
        // may be cheaper than another's last) until it fits.
        let mut evicted = Vec::new();
        while !fits(self.len() - freed, self.bytes - old_size) {
            let victim = self
                .tails
                .iter()
                .find(|(rate, p, _)| *p != peer && *rate < tx.fee_rate)
                .copied();
            let Some((_, p, n)) = victim else {
                break;
            };
            evicted.extend(self.remove(&p, n));
        }
        let s = self.senders.entry(peer).or_insert_with(|| Sender {
            account: fresh.unwrap_or(account),
            txs: BTreeMap::new(),
            cost: 0,
        });
        let old_tail = s.tail(peer);
        let replaced = s.txs.remove(&tx.nonce).map(|e| e.tx);
        if let Some(r) = &replaced {
            s.cost -= r.cost();
            self.bytes -= r.size();
            self.by_id.remove(&r.id());
        }
        s.cost += tx.cost();
        self.bytes += tx.size();
        self.by_id.insert(tx.id(), (peer, tx.nonce));
        s.txs.insert(tx.nonce, Entry { tx, added: now });
        retail(&mut self.tails, old_tail, s.tail(peer));
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
        let old_tail = s.tail(*peer);
        let e = s.txs.remove(&nonce)?;
        s.cost -= e.tx.cost();
        retail(&mut self.tails, old_tail, s.tail(*peer));
        if s.txs.is_empty() {
            self.senders.remove(peer);
        }
        self.bytes -= e.tx.size();
        self.by_id.remove(&e.tx.id());
        Some(e.tx)
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
            // Stale from the front: the tail set is not touched unless the
            // sender's last goes too.
            while let Some(n) = self
                .senders
                .get(peer)
                .and_then(|s| s.txs.first_key_value())
                .map(|(n, _)| *n)
                .filter(|n| *n < account.next_nonce)
            {
                dropped.extend(self.remove(peer, n));
            }
            while let Some(s) = self.senders.get(peer) {
                if s.cost <= s.account.balance {
                    break;
                }
                let Some(last) = s.txs.keys().next_back().copied() else {
                    break;
                };
                dropped.extend(self.remove(peer, last));
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
            for (n, e) in s.txs.iter().skip(pending) {
                if now.saturating_duration_since(e.added) >= lifetime {
                    old.push((*peer, *n));
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
        let mut heads = BinaryHeap::new();
        for (peer, s) in &self.senders {
            if let Some(e) = s.txs.get(&s.account.next_nonce) {
                if max > 0 {
                    heads.push((
                        e.tx.fee_rate,
                        std::cmp::Reverse(*peer),
                        s.account.next_nonce,
                    ));
                }
            }
        }
        Best {
            pool: self,
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
            bytes: self.bytes,
            senders: self.senders.len(),
        }
    }
}

/// Moves a sender's entry in the tail set from `old` to `new`, if it moved.
fn retail(
    tails: &mut BTreeSet<(u64, PeerId, u64)>,
    old: Option<(u64, PeerId, u64)>,
    new: Option<(u64, PeerId, u64)>,
) {
    if old != new {
        if let Some(t) = old {
            tails.remove(&t);
        }
        if let Some(t) = new {
            tails.insert(t);
        }
    }
}

/// [`Pool::best`]: a heap of each sender's next executable transaction.
pub struct Best<'a> {
    pool: &'a Pool,
    heads: BinaryHeap<(u64, std::cmp::Reverse<PeerId>, u64)>,
    max: usize,
}

impl<'a> Iterator for Best<'a> {
    type Item = &'a Transaction;

    fn next(&mut self) -> Option<&'a Transaction> {
        let (_, std::cmp::Reverse(peer), nonce) = self.heads.pop()?;
        let s = self.pool.senders.get(&peer)?;
        let e = s.txs.get(&nonce)?;
        let next = nonce + 1;
        if next < s.account.next_nonce + self.max as u64 {
            if let Some(n) = s.txs.get(&next) {
                self.heads
                    .push((n.tx.fee_rate, std::cmp::Reverse(peer), next));
            }
        }
        Some(&e.tx)
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
                let mut cost = 0;
                for (n, e) in &s.txs {
                    assert!(*n >= s.account.next_nonce);
                    assert_eq!((e.tx.sender, e.tx.nonce), (*peer, *n));
                    assert_eq!(p.by_id.get(&e.tx.id()), Some(&(*peer, *n)));
                    cost += e.tx.cost();
                    bytes += e.tx.size();
                    count += 1;
                }
                assert_eq!(cost, s.cost);
                assert!(s.cost <= s.account.balance);
                let pending = s.run().min(c.max_pending_per_sender);
                assert!(s.txs.len() - pending <= c.max_queued_per_sender);
                assert!(p.tails.contains(&s.tail(*peer).unwrap()));
            }
            assert_eq!(p.tails.len(), p.senders.len());
            assert_eq!((count, bytes), (p.by_id.len(), p.bytes));
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
