//! The pool running on a [`Node`]: transactions announced and fetched on
//! demand, blocks on their own gossip topic, a producer when the node
//! holds a producer key.
//!
//! * **Entering.** [`TxPool::submit`] checks and inserts a transaction,
//!   then pushes it in full to √peers and announces it (id, size, fee
//!   rate) to the rest, as eth/65–68 do.
//! * **Relaying.** Every other node only announces what it accepted, to
//!   every peer but the one it came from, and fetches what it lacks over
//!   [`GET_PROTOCOL`] from one announcer at a time ([`crate::fetch`]),
//!   with a timeout and fallback, so each node receives about one full
//!   copy. Nothing is announced before it passed the pool's checks
//!   (signature, size, nonce not below the ledger's, fee floor, funds).
//! * **Scoring.** A peer that sends something undecodable or badly signed
//!   is banned at once; one that sends transactions the ledger refuses
//!   (stale nonce, under the floor, unfunded, past the sender's nonce
//!   window) or that it was not asked for gains a point each and is
//!   banned at [`KICK_POINTS`] in one [`SCORE_WINDOW`]: honest races
//!   after a block cost a few points, a flood costs the connection.
//! * **Blocks.** The gossip validator checks a block's producer signature
//!   and turn (one signature, quick); the receiving task checks every
//!   transaction signature it has not seen (off the async workers),
//!   applies the block to the chain and the pool, and asks the sender for
//!   the heights it skipped ([`BLOCK_PROTOCOL`]). A block at a height
//!   ahead of the next is held (at most [`FUTURE_BLOCKS`]) until its
//!   parent arrives.
//! * **Producing.** With [`TxPoolConfig::produce_every`], at each tick
//!   where the next height is this node's turn, `best()` is packed up to
//!   the block limits, signed, applied and published.
//! * **Restarts.** [`TxPool::open`] keeps the chain (accounts, height,
//!   tip, recent blocks, equivocations) and the transactions submitted
//!   here in a redb store ([`crate::store`]); reopened, the node starts
//!   at its last height and announces its own transactions again.
//! * **New peers.** A peer that connects is announced the pool's
//!   pending transactions (at most [`ANNOUNCE_ON_CONNECT`]), as eth
//!   nodes do, so a node that joins or restarts catches up.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use peerlink_net::{GossipMessage, NetError, Node, PeerEvent, PeerId, Validation};
use peerlink_proto::prefix::Prefix;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::block::{Applied, Block, BlockError, Chain, Genesis, MAX_BLOCK_TXS};
use crate::fetch::{FetchConfig, Fetcher};
use crate::pool::{Ledger, Placed, Pool, PoolConfig, Rejected, Status};
use crate::store::{Loaded, Store, StoreError, KEPT_BLOCKS};
use crate::tx::{Transaction, TxError, TxId};
use crate::wire::{
    self, Announced, TxMessage, BLOCK_PROTOCOL, BLOCK_TOPIC, GET_PROTOCOL, TX_CHANNEL,
};

/// Points at which a peer is banned, within one [`SCORE_WINDOW`].
pub const KICK_POINTS: u32 = 200;
pub const SCORE_WINDOW: Duration = Duration::from_secs(10);
/// Blocks ahead of the next height held for their parents, at most.
pub const FUTURE_BLOCKS: usize = 64;
/// How often relays re-read the block topic's mesh.
const MESH_REFRESH: Duration = Duration::from_millis(500);
/// Production ticks without the chain moving before a producer asks a
/// peer for the block it may have missed.
const STALL_TICKS: u32 = 3;
/// Relays announce to every peer while fewer of their mesh peers than
/// this are connected...
const MIN_MESH: usize = 4;
/// ...and otherwise to the mesh and this many other peers at random.
const LAZY_PEERS: usize = 2;
/// Announcements waiting in the outbox, at most (past this they are
/// dropped and counted: peers hear of them from others).
const OUTBOX_MAX: usize = 65_536;

/// Pending transactions announced to a peer when it connects, at most.
pub const ANNOUNCE_ON_CONNECT: usize = wire::MAX_IDS;
/// Ids of included transactions remembered, so a late announcement of
/// one is not fetched.
const RECENT_INCLUDED: usize = 65_536;
/// Points for undecodable or forged input: a ban at once.
const FORGED: u32 = KICK_POINTS;

#[derive(Clone, Debug)]
pub struct TxPoolConfig {
    pub pool: PoolConfig,
    pub fetch: FetchConfig,
    pub genesis: Genesis,
    /// Produce a block this often when the next height is our turn.
    pub produce_every: Option<Duration>,
    /// Transactions in a produced block, at most.
    pub max_block_txs: usize,
    /// Bytes of a produced block, at most (under the node's message limit).
    pub max_block_bytes: usize,
    /// A fetch not answered in this time moves to the next announcer.
    pub fetch_timeout: Duration,
    /// How long a misbehaving peer stays out.
    pub ban: Duration,
}

impl TxPoolConfig {
    pub fn new(genesis: Genesis) -> TxPoolConfig {
        TxPoolConfig {
            pool: PoolConfig::default(),
            fetch: FetchConfig::default(),
            genesis,
            produce_every: None,
            max_block_txs: MAX_BLOCK_TXS,
            max_block_bytes: 768 << 10,
            fetch_timeout: Duration::from_secs(2),
            ban: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] TxError),
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error("the transaction is in the pool but could not be written to disk: {0}")]
    Store(#[from] peerlink_net::dbwriter::WriteError),
}

/// Counters, all since start.
#[derive(Default)]
pub struct Counters {
    pub submitted: AtomicU64,
    /// Full transactions received (pushed or fetched)...
    pub received: AtomicU64,
    /// ...of which this node had already.
    pub duplicates: AtomicU64,
    pub fetched: AtomicU64,
    pub fetch_failures: AtomicU64,
    pub announcements: AtomicU64,
    pub announcements_dropped: AtomicU64,
    /// Announcements and pushes that could not be queued to a peer (its
    /// connection gone or its queue full).
    pub unsent: AtomicU64,
    /// Received transactions the pool refused (any reason).
    pub refused: AtomicU64,
    pub forged: AtomicU64,
    pub kicked: AtomicU64,
    pub blocks_applied: AtomicU64,
    pub blocks_refused: AtomicU64,
    pub included: AtomicU64,
}

/// A snapshot for [`TxPool::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPoolStatus {
    pub pool: Status,
    pub height: u64,
    pub wanted: usize,
    pub held_blocks: usize,
    pub equivocations: usize,
}

struct State {
    pool: Pool,
    chain: Chain,
    fetcher: Fetcher,
    /// Recently included transactions, with their block's height.
    included: HashMap<TxId, u64>,
    included_order: VecDeque<TxId>,
    store: Option<Store>,
    /// Transactions submitted here that no block included yet (what the
    /// store's journal holds).
    own: HashSet<TxId>,
    blocks: VecDeque<Block>,
    future: BTreeMap<u64, Block>,
    scores: HashMap<PeerId, (Instant, u32)>,
}

impl State {
    /// Takes up what a store held: the chain, the recent blocks, and the
    /// own transactions still valid against it (the rest are forgotten).
    fn restore(&mut self, genesis: &Genesis, store: Store, loaded: Loaded) {
        self.chain = Chain::restore(genesis, &loaded);
        for b in &loaded.blocks {
            for t in &b.txs {
                self.remember_included(t.id(), b.height);
            }
        }
        let now = Instant::now();
        let mut stale = Vec::new();
        for tx in loaded.own {
            let id = tx.id();
            match self.pool.insert(tx, &self.chain, now) {
                Ok(_) => {
                    self.own.insert(id);
                }
                Err(_) => stale.push(id),
            }
        }
        if !stale.is_empty() {
            if let Err(e) = store.forget_own(stale) {
                tracing::warn!("txpool: could not forget stale own transactions: {e}");
            }
        }
        self.blocks = loaded.blocks.into();
        self.store = Some(store);
    }

    /// Remembers that `id` was included at `height` (the most recent
    /// [`RECENT_INCLUDED`] only).
    fn remember_included(&mut self, id: TxId, height: u64) {
        if self.included.insert(id, height).is_none() {
            self.included_order.push_back(id);
        }
        while self.included_order.len() > RECENT_INCLUDED {
            if let Some(old) = self.included_order.pop_front() {
                self.included.remove(&old);
            }
        }
    }

    fn knows(&self, id: &TxId) -> bool {
        self.pool.contains(id) || self.included.contains_key(id)
    }

    /// Applies `block`; the pool and the store follow.
    fn apply(&mut self, block: Block) -> Result<Applied, BlockError> {
        let recorded = self.chain.equivocations.len();
        let applied = match self.chain.apply(&block) {
            Ok(a) => a,
            Err(e) => {
                if let (Some(store), Some((h, p))) =
                    (&self.store, self.chain.equivocations.get(recorded).copied())
                {
                    if let Err(e) = store.equivocation(h, p) {
                        tracing::warn!("txpool: equivocation not recorded on disk: {e}");
                    }
                }
                return Err(e);
            }
        };
        self.pool
            .update_accounts(applied.senders.iter(), &self.chain);
        let mut own_included = Vec::new();
        for tx in &block.txs {
            let id = tx.id();
            self.fetcher.got(&id);
            self.remember_included(id, block.height);
            if self.own.remove(&id) {
                own_included.push(id);
            }
        }
        if let Some(store) = &self.store {
            let accounts = applied
                .senders
                .iter()
                .map(|p| (*p, self.chain.account(p)))
                .collect();
            if let Err(e) = store.block(&block, accounts, own_included) {
                tracing::warn!("txpool: block {} not written to disk: {e}", block.height);
            }
        }
        self.blocks.push_back(block);
        if self.blocks.len() > KEPT_BLOCKS as usize {
            self.blocks.pop_front();
        }
        Ok(applied)
    }
}

/// Announcements waiting to go, per peer: whatever accumulates while the
/// announcing task is busy goes in one message per peer.
#[derive(Default)]
struct Outbox {
    per_peer: HashMap<PeerId, Vec<Announced>>,
    queued: usize,
}

pub(crate) struct Inner {
    pub(crate) node: Node,
    pub(crate) config: TxPoolConfig,
    state: Mutex<State>,
    outbox: Mutex<Outbox>,
    announce: Arc<tokio::sync::Notify>,
    /// The block topic's gossip mesh: where relays announce (empty until
    /// it forms: then every peer).
    relays: Mutex<Vec<PeerId>>,
    pending: broadcast::Sender<Transaction>,
    counters: Counters,
}

/// The transaction pool service. Dropping it stops its tasks.
pub struct TxPool {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TxPool {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why [`TxPool::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Net(#[from] NetError),
}

impl TxPool {
    /// Starts the pool on `node` (inside a tokio runtime), in memory: it
    /// starts from the genesis. Claims [`TX_CHANNEL`], serves
    /// [`GET_PROTOCOL`] and [`BLOCK_PROTOCOL`] and subscribes to
    /// [`BLOCK_TOPIC`].
    pub fn new(node: &Node, config: TxPoolConfig) -> Result<TxPool, NetError> {
        Self::start(node, config, None)
    }

    /// [`TxPool::new`], keeping the chain and the transactions submitted
    /// here in `dir` ([`crate::store`]): a node reopened on the same
    /// directory resumes at its last height and announces its own
    /// transactions that are still valid. The store is read off the
    /// async workers.
    pub async fn open(node: &Node, config: TxPoolConfig, dir: &Path) -> Result<TxPool, OpenError> {
        let (dir, genesis) = (dir.to_path_buf(), config.genesis.clone());
        let (store, loaded) = tokio::task::spawn_blocking(move || Store::open(&dir, &genesis))
            .await
            .map_err(|e| StoreError::Io {
                path: "txpool store".into(),
                error: e.to_string(),
            })??;
        Ok(Self::start(node, config, Some((store, loaded)))?)
    }

    fn start(
        node: &Node,
        config: TxPoolConfig,
        stored: Option<(Store, Loaded)>,
    ) -> Result<TxPool, NetError> {
        let channel = node.channel(TX_CHANNEL)?;
        let gets = node.serve(GET_PROTOCOL)?;
        let block_gets = node.serve(BLOCK_PROTOCOL)?;
        let events = node.events();
        let mut state = State {
            pool: Pool::new(config.pool.clone()),
            chain: Chain::new(&config.genesis),
            fetcher: Fetcher::new(config.fetch.clone()),
            included: HashMap::new(),
            included_order: VecDeque::new(),
            store: None,
            own: HashSet::new(),
            blocks: VecDeque::new(),
            future: BTreeMap::new(),
            scores: HashMap::new(),
        };
        if let Some((store, loaded)) = stored {
            state.restore(&config.genesis, store, loaded);
        }
        let inner = Arc::new(Inner {
            node: node.clone(),
            config,
            state: Mutex::new(state),
            outbox: Mutex::default(),
            relays: Mutex::default(),
            announce: Arc::default(),
            pending: broadcast::channel(4096).0,
            counters: Counters::default(),
        });
        let gossip = node.gossip();
        let weak = Arc::downgrade(&inner);
        gossip.set_validator(BLOCK_TOPIC, move |m| match weak.upgrade() {
            Some(inner) => inner.validate_block(m),
            None => Validation::Ignore,
        })?;
        let blocks = gossip.subscribe(BLOCK_TOPIC)?;
        let w = || Arc::downgrade(&inner);
        let mut tasks = vec![
            tokio::spawn(receive_txs(w(), channel)),
            tokio::spawn(serve_gets(w(), gets)),
            tokio::spawn(serve_blocks(w(), block_gets)),
            tokio::spawn(receive_blocks(w(), blocks)),
            tokio::spawn(watch_peers(w(), events)),
            tokio::spawn(prune(w())),
            tokio::spawn(announce(w(), inner.announce.clone())),
            tokio::spawn(follow_mesh(w())),
        ];
        if let Some(every) = inner.config.produce_every {
            tasks.push(tokio::spawn(produce(w(), every)));
        }
        Ok(TxPool { inner, tasks })
    }

    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Checks and inserts a transaction entering here, then pushes it to
    /// √peers and announces it to the rest. With a store, it is queued to
    /// disk too; [`TxPool::flush`] waits until it is there.
    pub fn submit(&self, tx: Transaction) -> Result<Placed, SubmitError> {
        self.inner.submit(tx)
    }

    /// Waits until everything queued to the store is on disk (at once
    /// without a store).
    pub async fn flush(&self) -> Result<(), peerlink_net::dbwriter::WriteError> {
        self.inner.flush().await
    }

    /// Up to `n` executable transactions, best fee rate first, each
    /// sender's in nonce order.
    pub fn best(&self, n: usize) -> Vec<Transaction> {
        self.inner.best(n)
    }

    pub fn get(&self, id: &TxId) -> Option<Transaction> {
        self.inner.get(id)
    }

    /// Where `id` is: pending or queued here, or included at a height.
    pub fn locate(&self, id: &TxId) -> Option<Located> {
        self.inner.locate(id)
    }

    /// The nonce `sender`'s next transaction should carry (the ledger's,
    /// past what the pool holds in a row).
    pub fn next_nonce(&self, sender: &PeerId) -> u64 {
        self.inner.next_nonce(sender)
    }

    /// Every transaction newly in the pool (submitted or received).
    pub fn subscribe(&self) -> broadcast::Receiver<Transaction> {
        self.inner.pending.subscribe()
    }

    /// Applies a block (already decoded and verified) to the chain and
    /// the pool. Refused blocks change nothing.
    pub fn apply_block(&self, block: Block) -> Result<Applied, BlockError> {
        let applied = self.inner.state().apply(block);
        self.inner.count_block(&applied);
        applied
    }

    /// Packs, signs, applies and publishes a block now, if the next
    /// height is this node's turn. Returns it.
    pub async fn produce(&self) -> Option<Block> {
        self.inner.produce().await
    }

    pub fn status(&self) -> TxPoolStatus {
        self.inner.status()
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The pool's commands on the node's control socket (`peerlink tx
    /// ...`), for [`peerlink_net::control::serve_with`].
    pub fn control(&self) -> Arc<dyn peerlink_net::control::ControlExtension> {
        Arc::new(crate::control::TxControl::new(Arc::downgrade(&self.inner)))
    }
}

/// Where a transaction is ([`TxPool::locate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Located {
    Pending,
    Queued,
    /// In the block at this height.
    Included(u64),
}

impl Inner {
    pub(crate) fn submit(&self, tx: Transaction) -> Result<Placed, SubmitError> {
        tx.verify()?;
        let (placed, ticket) = {
            let mut s = self.state();
            let s = &mut *s;
            let inserted = s.pool.insert(tx.clone(), &s.chain, Instant::now())?;
            s.fetcher.got(&tx.id());
            let mut ticket = Ok(());
            if let Some(store) = &s.store {
                if let Some(r) = &inserted.replaced {
                    s.own.remove(&r.id());
                    let _ = store.forget_own(vec![r.id()]);
                }
                s.own.insert(tx.id());
                ticket = store.own(&tx).map(|_| ());
            }
            (inserted.placed, ticket)
        };
        self.counters.submitted.fetch_add(1, Relaxed);
        let _ = self.pending.send(tx.clone());
        self.spread(&[tx], &[], None, true);
        ticket?;
        Ok(placed)
    }

    pub(crate) async fn flush(&self) -> Result<(), peerlink_net::dbwriter::WriteError> {
        let store = self.state().store.clone();
        match store {
            Some(s) => s.flush().await,
            None => Ok(()),
        }
    }

    pub(crate) fn get(&self, id: &TxId) -> Option<Transaction> {
        self.state().pool.get(id).cloned()
    }

    pub(crate) fn next_nonce(&self, sender: &PeerId) -> u64 {
        let s = self.state();
        s.pool.next_nonce(sender, &s.chain)
    }

    pub(crate) fn best(&self, n: usize) -> Vec<Transaction> {
        self.state().pool.best().take(n).cloned().collect()
    }

    pub(crate) fn locate(&self, id: &TxId) -> Option<Located> {
        let s = self.state();
        match s.pool.placement(id) {
            Some(Placed::Pending) => Some(Located::Pending),
            Some(Placed::Queued) => Some(Located::Queued),
            None => s.included.get(id).map(|h| Located::Included(*h)),
        }
    }

    pub(crate) fn status(&self) -> TxPoolStatus {
        let s = self.state();
        TxPoolStatus {
            pool: s.pool.status(),
            height: s.chain.height(),
            wanted: s.fetcher.wanted(),
            held_blocks: s.future.len(),
            equivocations: s.chain.equivocations.len(),
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_block<T>(&self, r: &Result<T, BlockError>) {
        let c = match r {
            Ok(_) => &self.counters.blocks_applied,
            Err(_) => &self.counters.blocks_refused,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Adds `points` to `peer`'s score; bans it at [`KICK_POINTS`].
    fn penalise(&self, peer: &PeerId, points: u32) {
        if points == 0 {
            return;
        }
        let now = Instant::now();
        let kick = {
            let mut s = self.state();
            let (since, score) = s.scores.entry(*peer).or_insert((now, 0));
            if now.duration_since(*since) > SCORE_WINDOW {
                (*since, *score) = (now, 0);
            }
            *score = score.saturating_add(points);
            let kick = *score >= KICK_POINTS;
            if kick {
                s.scores.remove(peer);
                s.fetcher.peer_gone(peer);
            }
            kick
        };
        if kick {
            self.counters.kicked.fetch_add(1, Relaxed);
            tracing::info!(%peer, "txpool: banned a peer for invalid transactions or blocks");
            self.node.ban(peer, self.config.ban);
        }
    }

    /// Sends accepted transactions on. Where they entered: in full to
    /// √peers, announced to every other peer. Relayed: announced to the
    /// block topic's mesh peers that are connected (every peer while
    /// fewer than [`MIN_MESH`] are) and [`LAZY_PEERS`] others at random —
    /// the mesh is symmetric, degree-bounded and kept connected by
    /// gossip, the random ones reach a node whose mesh links closed — so
    /// every pool hears of every transaction while each relay sends a
    /// bounded number of announcements, not one per connection. Never to `from` or to those
    /// that announced them to us (`have[i]` for `txs[i]`). Announcements
    /// go through the outbox, so those made in one burst share a message.
    fn spread(
        &self,
        txs: &[Transaction],
        have: &[Vec<PeerId>],
        from: Option<PeerId>,
        entered_here: bool,
    ) {
        if txs.is_empty() {
            return;
        }
        let connected: Vec<PeerId> = self.node.peers().into_iter().map(|p| p.id).collect();
        let peers = if entered_here {
            connected
        } else {
            let relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
            // The mesh as it is connected now (the DHT closes idle
            // connections under it between two mesh refreshes).
            let mesh: Vec<PeerId> = relays
                .iter()
                .filter(|p| connected.contains(p))
                .copied()
                .collect();
            drop(relays);
            if mesh.len() < MIN_MESH {
                connected
            } else {
                // And a few others at random, as gossipsub's lazy push
                // does: a node whose mesh links all went still hears
                // of every transaction.
                let mut others: Vec<PeerId> = connected
                    .into_iter()
                    .filter(|p| !mesh.contains(p))
                    .collect();
                let mut rng = peerlink_proto::rng::Rng::from_os();
                let mut peers = mesh;
                for _ in 0..LAZY_PEERS {
                    if others.is_empty() {
                        break;
                    }
                    let i = rng.below(others.len() as u64) as usize;
                    peers.push(others.swap_remove(i));
                }
                peers
            }
        };
        let peers: Vec<PeerId> = peers.into_iter().filter(|p| Some(*p) != from).collect();
        let full = if entered_here {
            (peers.len() as f64).sqrt().ceil() as usize
        } else {
            0
        };
        let pushes: Vec<Bytes> = if full > 0 {
            txs.chunks(wire::MAX_TXS)
                .map(|c| Bytes::from(wire::push(c.iter().map(|t| t.encoded().as_ref()))))
                .collect()
        } else {
            Vec::new()
        };
        // A different √peers for each push, so no peer carries them all.
        let n = peers.len().max(1);
        let offset = txs[0].id().0[0] as usize % n;
        let mut dropped = 0usize;
        {
            let mut out = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
            for (i, peer) in peers.iter().enumerate() {
                if (i + n - offset) % n < full {
                    for m in &pushes {
                        // A full queue drops: the peer will hear of it from others.
                        let _ = self.node.try_send(peer, TX_CHANNEL, m.clone());
                    }
                    continue;
                }
                for (j, t) in txs.iter().enumerate() {
                    if have.get(j).is_some_and(|h| h.contains(peer)) {
                        continue;
                    }
                    if out.queued >= OUTBOX_MAX {
                        dropped += 1;
                        continue;
                    }
                    out.queued += 1;
                    out.per_peer.entry(*peer).or_default().push(Announced {
                        id: t.id(),
                        size: t.size() as u32,
                        fee_rate: t.fee_rate,
                    });
                }
            }
        }
        if dropped > 0 {
            self.counters
                .announcements_dropped
                .fetch_add(dropped as u64, Relaxed);
        }
        self.announce.notify_one();
    }

    /// Sends what waits in the outbox: one message per peer per
    /// [`wire::MAX_IDS`] ids.
    fn flush_outbox(&self) {
        let out = std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|e| e.into_inner()));
        for (peer, items) in out.per_peer {
            for c in items.chunks(wire::MAX_IDS) {
                let sent = self
                    .node
                    .try_send(&peer, TX_CHANNEL, Bytes::from(wire::announce(c)));
                if let Err(e) = sent {
                    tracing::debug!(%peer, ids = c.len(), "txpool: announcement not sent: {e}");
                    self.counters.unsent.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Announces up to [`ANNOUNCE_ON_CONNECT`] pending transactions, best
    /// first, to a peer that just connected.
    fn announce_pool(&self, peer: &PeerId) {
        let items: Vec<Announced> = {
            let s = self.state();
            s.pool
                .best()
                .take(ANNOUNCE_ON_CONNECT)
                .map(|t| Announced {
                    id: t.id(),
                    size: t.size() as u32,
                    fee_rate: t.fee_rate,
                })
                .collect()
        };
        for c in items.chunks(wire::MAX_IDS) {
            let _ = self
                .node
                .try_send(peer, TX_CHANNEL, Bytes::from(wire::announce(c)));
        }
    }

    /// Inserts checked transactions from `from`, scores what the ledger
    /// refuses, and sends on what was accepted.
    fn admit(&self, from: PeerId, txs: Vec<Transaction>) {
        let now = Instant::now();
        let (mut accepted, mut have, mut points) = (Vec::new(), Vec::new(), 0u32);
        {
            let mut s = self.state();
            let s = &mut *s;
            for tx in txs {
                let announcers = s.fetcher.got(&tx.id());
                if s.knows(&tx.id()) {
                    self.counters.duplicates.fetch_add(1, Relaxed);
                    continue;
                }
                match s.pool.insert(tx.clone(), &s.chain, now) {
                    Ok(_) => {
                        accepted.push(tx);
                        have.push(announcers);
                    }
                    Err(e) => {
                        self.counters.refused.fetch_add(1, Relaxed);
                        // What a relay's own pool would have refused too:
                        // a stale nonce, a price under the floor, a sender
                        // who cannot pay (balances only fall, so funds a
                        // relay saw are funds we see, bar a block in
                        // between), a nonce past the sender's window. A
                        // full pool or an underpriced replacement can be
                        // an honest race and costs nothing.
                        if matches!(
                            e,
                            Rejected::NonceTooLow { .. }
                                | Rejected::FeeTooLow { .. }
                                | Rejected::InsufficientFunds { .. }
                                | Rejected::NonceTooHigh { .. }
                        ) {
                            points += 1;
                        }
                    }
                }
            }
        }
        self.penalise(&from, points);
        for tx in &accepted {
            let _ = self.pending.send(tx.clone());
        }
        self.spread(&accepted, &have, Some(from), false);
    }

    /// Sends the fetches the fetcher wants now.
    fn dispatch(self: &Arc<Self>) {
        let requests = self.state().fetcher.requests();
        for (peer, ids) in requests {
            let this = Arc::downgrade(self);
            tokio::spawn(async move {
                let Some(inner) = this.upgrade() else { return };
                inner.fetch(peer, ids).await;
                inner.dispatch();
            });
        }
    }

    async fn fetch(self: &Arc<Self>, peer: PeerId, ids: Vec<TxId>) {
        let max = self.node.config().limits.max_message_size;
        let body = wire::encode_get(&ids);
        let asked = Instant::now();
        let answer = self
            .node
            .request_with(&peer, GET_PROTOCOL, body, self.config.fetch_timeout, max)
            .await;
        tracing::trace!(%peer, ids = ids.len(), ok = answer.is_ok(), us = asked.elapsed().as_micros() as u64, "txpool: fetch answered");
        let Ok(answer) = answer else {
            self.counters.fetch_failures.fetch_add(1, Relaxed);
            self.state().fetcher.failed(&peer);
            return;
        };
        match verify_all(answer).await {
            Ok(txs) => {
                let got: Vec<TxId> = txs.iter().map(|t| t.id()).collect();
                let unasked = self.state().fetcher.answered(&peer, &got);
                self.counters.fetched.fetch_add(got.len() as u64, Relaxed);
                self.counters.received.fetch_add(got.len() as u64, Relaxed);
                self.penalise(&peer, unasked as u32);
                self.admit(peer, txs);
            }
            Err(_) => {
                self.state().fetcher.failed(&peer);
                self.forged(&peer);
            }
        }
    }

    fn forged(&self, peer: &PeerId) {
        self.counters.forged.fetch_add(1, Relaxed);
        self.penalise(peer, FORGED);
    }

    fn on_message(self: &Arc<Self>, peer: PeerId, payload: Bytes) -> Option<Bytes> {
        match TxMessage::decode(&payload) {
            Err(_) => {
                self.forged(&peer);
                None
            }
            Ok(TxMessage::Txs(_)) => Some(payload),
            Ok(TxMessage::Announce(items)) => {
                tracing::trace!(%peer, ids = items.len(), "txpool: announcement");
                self.counters
                    .announcements
                    .fetch_add(items.len() as u64, Relaxed);
                let prefix = self
                    .node
                    .remote_addr(&peer)
                    .map(|a| Prefix::of(a.ip()))
                    .unwrap_or_else(|| Prefix::of(std::net::Ipv4Addr::UNSPECIFIED.into()));
                let dropped = {
                    let mut s = self.state();
                    let unknown: Vec<Announced> =
                        items.into_iter().filter(|a| !s.knows(&a.id)).collect();
                    s.fetcher.announced(peer, prefix, &unknown).dropped
                };
                self.counters
                    .announcements_dropped
                    .fetch_add(dropped as u64, Relaxed);
                self.dispatch();
                None
            }
        }
    }

    /// The gossip validator: producer signature and turn, quickly.
    fn validate_block(&self, m: &GossipMessage) -> Validation {
        let Ok(block) = Block::decode_producer_checked(&m.data) else {
            return Validation::Reject;
        };
        let s = self.state();
        if s.chain.producer_of(block.height) != Some(block.producer) {
            return Validation::Reject;
        }
        if block.height <= s.chain.height() {
            return Validation::Ignore;
        }
        Validation::Accept
    }

    /// A block from `from`: its transactions checked off the async
    /// workers, then applied, with held successors; gaps are asked for.
    async fn on_block(self: &Arc<Self>, from: PeerId, block: Block) {
        let known: HashSet<TxId> = {
            let s = self.state();
            block
                .txs
                .iter()
                .map(|t| t.id())
                .filter(|id| s.pool.contains(id))
                .collect()
        };
        let checked = tokio::task::spawn_blocking(move || {
            block.verify_txs(|id| known.contains(id)).map(|()| block)
        })
        .await;
        let block = match checked {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                self.counters.blocks_refused.fetch_add(1, Relaxed);
                self.forged(&from);
                return;
            }
            Err(_) => return,
        };
        let missing = {
            let mut s = self.state();
            let next = s.chain.height() + 1;
            if block.height > next {
                if s.future.len() < FUTURE_BLOCKS || s.future.contains_key(&block.height) {
                    s.future.insert(block.height, block);
                }
                true
            } else {
                let r = s.apply(block);
                self.count_block(&r);
                self.count_included(&r);
                // Successors that were waiting for this one.
                while let Some(h) = s.future.first_key_value().map(|(h, _)| *h) {
                    let height = s.chain.height();
                    if h > height + 1 {
                        break;
                    }
                    if let Some(b) = s.future.remove(&h).filter(|_| h == height + 1) {
                        let r = s.apply(b);
                        self.count_block(&r);
                        self.count_included(&r);
                    }
                }
                false
            }
        };
        if missing {
            self.fill_gap(from).await;
        }
    }

    fn count_included(&self, r: &Result<Applied, BlockError>) {
        if let Ok(a) = r {
            self.counters.included.fetch_add(a.txs as u64, Relaxed);
        }
    }

    /// Asks `peer` for the next blocks while held ones wait for them.
    async fn fill_gap(self: &Arc<Self>, peer: PeerId) {
        for _ in 0..KEPT_BLOCKS {
            if self.state().future.is_empty() {
                return;
            }
            let Some(block) = self.next_block(&peer).await else {
                return;
            };
            Box::pin(self.on_block(peer, block)).await;
        }
    }

    /// The block after our height from `peer`, checked (producer, turn);
    /// `None` if it has none or the answer is forged (scored).
    async fn next_block(self: &Arc<Self>, peer: &PeerId) -> Option<Block> {
        let max = self.node.config().limits.max_message_size;
        let height = self.state().chain.height() + 1;
        let bytes = self
            .node
            .request_with(
                peer,
                BLOCK_PROTOCOL,
                height.to_le_bytes().to_vec(),
                self.config.fetch_timeout,
                max,
            )
            .await
            .ok()?;
        let block = match Block::decode_producer_checked(&bytes) {
            Ok(b) if b.height == height => b,
            _ => {
                self.forged(peer);
                return None;
            }
        };
        if self.state().chain.producer_of(height) != Some(block.producer) {
            self.forged(peer);
            return None;
        }
        Some(block)
    }

    /// A producer whose chain has not moved for [`STALL_TICKS`] of its
    /// turns asks a random peer for the block after its height: a block
    /// whose gossip it missed would otherwise stop the turn order for
    /// good (its turn never comes, the others wait for it).
    async fn catch_up(self: &Arc<Self>) {
        let peers = self.node.peers();
        if peers.is_empty() {
            return;
        }
        let i = peerlink_proto::rng::Rng::from_os().below(peers.len() as u64) as usize;
        let Some(peer) = peers.get(i).map(|p| p.id) else {
            return;
        };
        if let Some(block) = self.next_block(&peer).await {
            tracing::debug!(%peer, height = block.height, "txpool: caught up a missed block");
            self.on_block(peer, block).await;
        }
    }

    async fn produce(&self) -> Option<Block> {
        let me = self.node.peer_id();
        let block = {
            let mut s = self.state();
            let height = s.chain.height() + 1;
            if s.chain.producer_of(height) != Some(me) {
                return None;
            }
            let mut bytes = 0;
            let txs: Vec<Transaction> = s
                .pool
                .best()
                .take(self.config.max_block_txs)
                .take_while(|t| {
                    bytes += 4 + t.size();
                    bytes + 1024 <= self.config.max_block_bytes
                })
                .cloned()
                .collect();
            let block =
                Block::sign(self.node.keypair(), height, s.chain.tip(), unix_ms(), txs).ok()?;
            let r = s.apply(block.clone());
            self.count_block(&r);
            self.count_included(&r);
            r.ok()?;
            block
        };
        let _ = self
            .node
            .gossip()
            .publish(BLOCK_TOPIC, block.encoded().to_vec())
            .await;
        Some(block)
    }
}

/// Decodes a `Txs` body and checks every signature, off the async
/// workers. Any bad one fails the lot: its sender forged it.
async fn verify_all(body: Bytes) -> Result<Vec<Transaction>, TxError> {
    tokio::task::spawn_blocking(move || {
        let raw = wire::decode_txs(&body).map_err(|_| TxError::Truncated)?;
        let txs = raw
            .into_iter()
            .map(Transaction::decode_unverified)
            .collect::<Result<Vec<_>, _>>()?;
        Transaction::verify_many(&txs).map_err(|_| TxError::BadSignature)?;
        Ok(txs)
    })
    .await
    .map_err(|_| TxError::Truncated)?
}

async fn receive_txs(inner: Weak<Inner>, mut channel: peerlink_net::Receiver) {
    let mut batch = Vec::new();
    loop {
        batch.clear();
        if channel.recv_many(&mut batch, 64).await == 0 {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        for m in batch.drain(..) {
            let Some(push) = inner.on_message(m.peer, m.payload) else {
                continue;
            };
            // Checked in order per message, off this task.
            match verify_all(push.slice(1..)).await {
                Ok(txs) => {
                    inner.counters.received.fetch_add(txs.len() as u64, Relaxed);
                    inner.admit(m.peer, txs);
                }
                Err(_) => inner.forged(&m.peer),
            }
        }
    }
}

async fn serve_gets(inner: Weak<Inner>, mut requests: peerlink_net::Requests) {
    while let Some(req) = requests.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let Ok(ids) = wire::decode_get(&req.body) else {
            inner.forged(&req.peer);
            req.reject("malformed request");
            continue;
        };
        let max = inner
            .node
            .config()
            .limits
            .max_message_size
            .saturating_sub(1024);
        let txs: Vec<Bytes> = {
            let s = inner.state();
            let mut bytes = 2;
            ids.iter()
                .filter_map(|id| s.pool.get(id))
                .take(wire::MAX_TXS)
                .take_while(|t| {
                    bytes += 4 + t.size();
                    bytes <= max
                })
                .map(|t| t.encoded().clone())
                .collect()
        };
        req.respond(wire::encode_txs(txs.iter().map(|b| b.as_ref())));
    }
}

async fn serve_blocks(inner: Weak<Inner>, mut requests: peerlink_net::Requests) {
    while let Some(req) = requests.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let Ok(height) = <[u8; 8]>::try_from(req.body.as_ref()).map(u64::from_le_bytes) else {
            inner.forged(&req.peer);
            req.reject("malformed request");
            continue;
        };
        let block = {
            let s = inner.state();
            s.blocks
                .iter()
                .find(|b| b.height == height)
                .map(|b| b.encoded().to_vec())
        };
        match block {
            Some(b) => req.respond(b),
            None => req.reject("no block at that height here"),
        }
    }
}

async fn receive_blocks(inner: Weak<Inner>, mut sub: peerlink_net::Subscription) {
    while let Some(m) = sub.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        // The validator checked the producer's signature.
        if let Ok(block) = Block::decode_producer_checked(&m.data) {
            inner.on_block(m.from, block).await;
        }
    }
}

async fn watch_peers(inner: Weak<Inner>, mut events: broadcast::Receiver<PeerEvent>) {
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        match event {
            PeerEvent::Disconnected { peer, .. } => {
                inner.state().fetcher.peer_gone(&peer);
                inner.dispatch();
            }
            PeerEvent::Connected { peer, .. } => inner.announce_pool(&peer),
        }
    }
}

async fn prune(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let mut s = inner.state();
        s.pool.prune(now);
        s.scores
            .retain(|_, (since, _)| now.duration_since(*since) <= SCORE_WINDOW);
    }
}

async fn produce(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last, mut still) = (0, 0);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.produce().await.is_some() {
            still = 0;
            continue;
        }
        let height = inner.state().chain.height();
        if height == last {
            still += 1;
        } else {
            (last, still) = (height, 0);
        }
        if still >= STALL_TICKS {
            still = 0;
            inner.catch_up().await;
        }
    }
}

/// Sends the outbox whenever something was added to it; what is added
/// while a send is under way waits for the next (a permit is kept, so no
/// wake-up is lost).
async fn announce(inner: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        wake.notified().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.flush_outbox();
    }
}

/// Keeps [`Inner::relays`] to the block topic's mesh.
async fn follow_mesh(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(MESH_REFRESH);
    loop {
        tick.tick().await;
        // The pool is not held across the wait (its drop must release
        // the store at once).
        let Some(gossip) = inner.upgrade().map(|i| i.node.gossip()) else {
            return;
        };
        let Ok(mesh) = gossip.mesh(BLOCK_TOPIC).await else {
            continue;
        };
        let Some(i) = inner.upgrade() else { return };
        *i.relays.lock().unwrap_or_else(|e| e.into_inner()) = mesh;
    }
}
