//! The tokio driver of the DHT and of discovery: it runs the sans-IO
//! [`peerlink_proto::dht::Dht`] and [`PeerBook`] over the node's
//! request/response protocol `dht/1`, dialling peers on demand.
//!
//! One task owns both state machines. It feeds them inbound requests,
//! responses (or failures) of the requests they asked for, and timer ticks;
//! it carries out their actions. Queries from [`DhtHandle`] arrive as
//! commands and are answered when their `Done` action comes out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use peerlink_proto::dht::{
    Action, Contact, Dht, Key, MemoryStore, QueryId, QueryOutput, QueryResult, Record, RecordStore,
    Request, RequestId, Response,
};
use peerlink_proto::peers::PeerBook;
use peerlink_proto::rng::Rng;
use peerlink_proto::{PeerAddr, PeerId, TransportAddr};
use tokio::sync::{mpsc, oneshot};

use crate::dbwriter::{DbWriter, Ticket};
use crate::node::{Node, WeakNode};
use crate::NetError;

/// The request/response protocol the DHT speaks.
pub const PROTOCOL: &str = "dht/1";

/// What a write answered "slow down" costs its peer's share of our
/// request handling ([`crate::NodeConfig::peer_serve_rate`]), on top of
/// its bytes: a writer that honours the answer pays it for the few writes
/// it had in flight; one that ignores it is soon not read.
const SLOWED_WRITE_COST: u64 = 64 << 10;

/// The result of a DHT query: the value and how the network answered.
#[derive(Clone, Debug)]
pub struct Outcome<T> {
    pub value: T,
    /// Peers that answered, and that failed or timed out.
    pub answered: usize,
    pub failed: usize,
    pub hops: u32,
    pub elapsed: Duration,
}

/// Starts a query, or refuses it (a value too large to store).
type StartQuery = Box<dyn FnOnce(&mut Dht, Instant) -> Result<QueryId, NetError> + Send>;

enum Command {
    Start(StartQuery, oneshot::Sender<Result<QueryResult, NetError>>),
    Stats(oneshot::Sender<DhtInfo>),
}

/// A snapshot of the local DHT state.
#[derive(Clone, Debug)]
pub struct DhtInfo {
    pub routing_table: usize,
    pub records: usize,
    /// Bytes of others' records held, against `DhtConfig::max_store_bytes`.
    pub held_bytes: usize,
    pub queries: usize,
    pub known_addresses: usize,
    /// What the state machine counted: refused writes among them.
    pub stats: peerlink_proto::dht::DhtStats,
}

/// The node's DHT ([`Node::dht`]). Cheap to clone. Keys are arbitrary
/// bytes (hashed to 256 bits with BLAKE3).
#[derive(Clone)]
pub struct DhtHandle {
    /// `None` when the node runs without a DHT.
    tx: Option<mpsc::Sender<Command>>,
    timeout: Duration,
}

impl DhtHandle {
    /// The same handle with another per-call timeout (default: the DHT's
    /// query timeout plus a second).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn run(
        &self,
        f: impl FnOnce(&mut Dht, Instant) -> Result<QueryId, NetError> + Send + 'static,
    ) -> Result<QueryResult, NetError> {
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Command::Start(Box::new(f), tx))
            .await
            .map_err(|_| NetError::Shutdown)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(NetError::Shutdown),
            Err(_) => Err(NetError::QueryTimeout(self.timeout)),
        }
    }

    /// Runs a query and takes its value out with `value` (which only
    /// fails if the state machine answered a different kind of query).
    async fn query<T>(
        &self,
        f: impl FnOnce(&mut Dht, Instant) -> Result<QueryId, NetError> + Send + 'static,
        value: impl FnOnce(QueryOutput) -> Option<T>,
    ) -> Result<Outcome<T>, NetError> {
        let r = self.run(f).await?;
        Ok(Outcome {
            value: value(r.output).ok_or(NetError::Shutdown)?,
            answered: r.answered,
            failed: r.failed,
            hops: r.hops,
            elapsed: r.elapsed,
        })
    }

    /// Signs `value` with the node's key and stores it on the k peers
    /// closest to `key` (and locally). Returns how many stored it.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<Outcome<usize>, NetError> {
        let (key, value) = (Key::hash(key.as_ref()), value.into());
        self.query(
            move |d, now| Ok(d.put(now, key, value)?),
            |o| match o {
                QueryOutput::Put { stored } => Some(stored),
                _ => None,
            },
        )
        .await
    }

    /// The record under `key` as the closest peers hold it: the publisher
    /// most of them hold, at its newest sequence ([`crate::DhtConfig::get_quorum`]
    /// answers, default 3; [`DhtHandle::get_first`] takes the first).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Outcome<Option<Record>>, NetError> {
        self.get_with(key, Dht::get).await
    }

    /// The first valid record any peer returns: about one round trip
    /// sooner than [`DhtHandle::get`], but one peer near the key decides
    /// what it is (use it for data whose value is checked elsewhere).
    pub async fn get_first(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Outcome<Option<Record>>, NetError> {
        self.get_with(key, Dht::get_first).await
    }

    async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        start: fn(&mut Dht, Instant, Key) -> QueryId,
    ) -> Result<Outcome<Option<Record>>, NetError> {
        let key = Key::hash(key.as_ref());
        self.query(
            move |d, now| Ok(start(d, now, key)),
            |o| match o {
                QueryOutput::Get(rec) => Some(rec),
                _ => None,
            },
        )
        .await
    }

    /// The k peers closest to a 256-bit key, nearest first.
    pub async fn closest_peers(&self, key: Key) -> Result<Outcome<Vec<Contact>>, NetError> {
        self.query(
            move |d, now| Ok(d.closest_peers(now, key)),
            |o| match o {
                QueryOutput::ClosestPeers(p) => Some(p),
                _ => None,
            },
        )
        .await
    }

    /// Announces this node as a provider of `key`; re-announced until the
    /// node stops.
    pub async fn provide(&self, key: impl AsRef<[u8]>) -> Result<Outcome<usize>, NetError> {
        let key = Key::hash(key.as_ref());
        self.query(
            move |d, now| Ok(d.provide(now, key)),
            |o| match o {
                QueryOutput::Provide { stored } => Some(stored),
                _ => None,
            },
        )
        .await
    }

    /// Peers that announced they provide `key`.
    pub async fn providers(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Outcome<Vec<Contact>>, NetError> {
        let key = Key::hash(key.as_ref());
        self.query(
            move |d, now| Ok(d.providers(now, key)),
            |o| match o {
                QueryOutput::Providers(p) => Some(p),
                _ => None,
            },
        )
        .await
    }

    /// Joins the network through `seeds` (the node's bootstrap seeds are
    /// used automatically at start): a lookup of the node's own key, then
    /// a refresh of every bucket. Returns the routing-table size.
    pub async fn bootstrap(&self, seeds: Vec<PeerAddr>) -> Result<Outcome<usize>, NetError> {
        let seeds: Vec<Contact> = seeds
            .into_iter()
            .map(|s| Contact::at(s.id, s.at()))
            .collect();
        self.query(
            move |d, now| Ok(d.bootstrap(now, seeds)),
            |o| match o {
                QueryOutput::Bootstrap { table } => Some(table),
                _ => None,
            },
        )
        .await
    }

    fn sender(&self) -> Result<&mpsc::Sender<Command>, NetError> {
        self.tx.as_ref().ok_or(NetError::DhtDisabled)
    }

    pub(crate) fn disabled() -> Self {
        DhtHandle {
            tx: None,
            timeout: Duration::ZERO,
        }
    }

    pub async fn info(&self) -> Result<DhtInfo, NetError> {
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Command::Stats(tx))
            .await
            .map_err(|_| NetError::Shutdown)?;
        rx.await.map_err(|_| NetError::Shutdown)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// The node's DHT (Kademlia): put/get signed records, providers,
    /// closest peers. Calls fail with [`NetError::DhtDisabled`] when the
    /// node was built without one.
    pub fn dht(&self) -> DhtHandle {
        self.service().unwrap_or_else(DhtHandle::disabled)
    }
}

/// Starts the DHT task for a freshly built node.
pub(crate) fn start(node: &Node, seeds: &[PeerAddr]) -> Result<DhtHandle, NetError> {
    let Some(config) = node.config().dht.clone() else {
        return Ok(DhtHandle::disabled());
    };
    let (store, writer): (Box<dyn RecordStore>, _) = match &node.config().data_dir {
        Some(dir) => {
            let store =
                crate::store::RedbStore::open(dir).map_err(|e| NetError::Store(e.to_string()))?;
            let writer = store.writer();
            (Box::new(store), Some(writer))
        }
        None => (Box::new(MemoryStore::default()), None),
    };
    // The address advertised: the first listener (TCP first, when a node
    // listens on both).
    let listen = node.addrs().first().map(PeerAddr::at);
    let mut rng = Rng::from_os();
    let now = Instant::now();
    let timeout = config.query_timeout + Duration::from_secs(1);
    let mut dht = Dht::new(
        config,
        node.keypair().clone(),
        listen,
        store,
        now,
        unix_ms(),
        rng.next_u64(),
    );
    let book = PeerBook::new(
        node.config().discovery.clone(),
        node.peer_id(),
        rng.next_u64(),
    );
    let requests = node.serve(PROTOCOL)?;
    let (tx, rx) = mpsc::channel(1024);
    if !seeds.is_empty() {
        // Nobody waits for this one: its Done is dropped.
        let contacts = seeds.iter().map(|s| Contact::at(s.id, s.at())).collect();
        dht.bootstrap(now, contacts);
    }
    let driver = Driver {
        node: node.downgrade(),
        dht,
        book,
        rng,
        waiting: HashMap::new(),
        writer,
        used: HashMap::new(),
        in_flight: HashMap::new(),
    };
    let task = tokio::spawn(driver.run(rx, requests));
    node.add_task(task);
    Ok(DhtHandle {
        tx: Some(tx),
        timeout,
    })
}

struct Driver {
    node: WeakNode,
    dht: Dht,
    book: PeerBook,
    rng: Rng,
    /// Callers waiting for a query, and the store write the query made
    /// on their behalf (their own record, a key they provide): they hear
    /// back once it is on disk as well.
    waiting: HashMap<QueryId, (Answer, Option<Ticket>)>,
    /// The persistent store's writer thread, if the node has a data dir.
    writer: Option<DbWriter>,
    /// Connections the DHT used, dialled or accepted, by last use; the
    /// least recently used beyond the cap are closed once nothing is in
    /// flight on them.
    used: HashMap<PeerId, Instant>,
    /// The DHT's own requests waiting for an answer, per peer (counted from
    /// the moment they are sent, before the connection has them).
    in_flight: HashMap<PeerId, usize>,
}

type Reply = (RequestId, PeerId, Result<Response, NetError>);
/// Where a query's result goes.
type Answer = oneshot::Sender<Result<QueryResult, NetError>>;

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut requests: crate::routing::Requests,
    ) {
        let (reply_tx, mut replies) = mpsc::unbounded_channel::<Reply>();
        let mut maintain = tokio::time::interval(Duration::from_secs(5));
        maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(node) = self.node.upgrade() else {
                return;
            };
            self.carry_out(&node, &reply_tx);
            let deadline = tokio::time::Instant::from_std(self.dht.next_deadline());
            tokio::select! {
                cmd = commands.recv() => {
                    let now = Instant::now();
                    match cmd {
                        Some(Command::Start(f, tx)) => {
                            let before = self.writer.as_ref().map(DbWriter::last_ticket);
                            match f(&mut self.dht, now) {
                            Ok(q) => {
                                let after = self.writer.as_ref().map(DbWriter::last_ticket);
                                self.waiting.insert(q, (tx, after.filter(|_| after != before)));
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e));
                            }
                            }
                        }
                        Some(Command::Stats(tx)) => {
                            let _ = tx.send(DhtInfo {
                                routing_table: self.dht.table().len(),
                                records: self.dht.store().len(),
                                held_bytes: self.dht.held_bytes(),
                                queries: self.dht.queries_in_flight(),
                                known_addresses: self.book.len(),
                                stats: self.dht.stats.clone(),
                            });
                        }
                        None => return,
                    }
                }
                req = requests.recv() => {
                    let Some(req) = req else { return };
                    self.on_request(&node, req);
                }
                Some((id, peer, result)) = replies.recv() => {
                    let now = Instant::now();
                    if let Some(n) = self.in_flight.get_mut(&peer) {
                        *n -= 1;
                        if *n == 0 {
                            self.in_flight.remove(&peer);
                        }
                    }
                    match result {
                        Ok(resp) => self.dht.on_response(now, id, resp),
                        Err(_) => self.dht.on_failure(now, id),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => self.dht.tick(Instant::now()),
                _ = maintain.tick() => self.maintain(&node),
            }
        }
    }

    fn on_request(&mut self, node: &Node, req: crate::routing::Request) {
        let from = req.peer;
        match Request::decode(&req.body) {
            Ok(r) => {
                // The listen address as seen from here: the connection's IP
                // and the advertised port.
                let addr = r
                    .listen
                    .zip(node.remote_addr(&from))
                    .map(|(l, c)| TransportAddr {
                        transport: l.transport,
                        socket: SocketAddr::new(c.ip(), l.socket.port()),
                    });
                let now = Instant::now();
                let resp = self.dht.handle_request(now, from, addr, r.body);
                if matches!(resp, Response::SlowDown { .. }) {
                    // A write past the peer's rate is worth nothing to us:
                    // one that keeps writing soon waits in its own socket.
                    req.charge(SLOWED_WRITE_COST);
                }
                req.respond(resp.encode());
                self.used.insert(from, now);
                self.close_idle(node, &from);
            }
            Err(e) => {
                req.reject(&format!("malformed dht request: {e}"));
                self.punish(node, from, "dht_malformed");
            }
        }
    }

    fn punish(&mut self, node: &Node, peer: PeerId, reason: &'static str) {
        self.dht.remove_peer(&peer);
        let ban = node.config().ban_duration;
        self.book.ban(Instant::now(), peer, ban);
        node.punish(&peer, reason);
    }

    /// Carries out what the state machine asked for.
    fn carry_out(&mut self, node: &Node, replies: &mpsc::UnboundedSender<Reply>) {
        while let Some(action) = self.dht.poll_action() {
            match action {
                Action::Send { id, to, request } => self.send(node, id, to, request, replies),
                Action::Done(r) => {
                    if let Some((tx, ticket)) = self.waiting.remove(&r.id) {
                        self.answer(tx, r, ticket);
                    }
                }
                Action::Misbehaved { peer, reason } => self.punish(node, peer, reason),
            }
        }
    }

    /// Answers a caller once its query is done and its write on disk
    /// (waiting, if it must, off this task).
    fn answer(&self, tx: Answer, r: QueryResult, ticket: Option<Ticket>) {
        let (Some(writer), Some(t)) = (&self.writer, ticket) else {
            let _ = tx.send(Ok(r));
            return;
        };
        let on_disk = |res: Result<(), crate::dbwriter::WriteError>| {
            res.map(|()| r).map_err(|e| NetError::Store(e.to_string()))
        };
        match writer.outcome(t) {
            Some(res) => {
                let _ = tx.send(on_disk(res));
            }
            None => {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let _ = tx.send(on_disk(writer.durable(t).await));
                });
            }
        }
    }

    fn send(
        &mut self,
        node: &Node,
        id: RequestId,
        to: Contact,
        request: Request,
        replies: &mpsc::UnboundedSender<Reply>,
    ) {
        let now = Instant::now();
        *self.in_flight.entry(to.id).or_insert(0) += 1;
        if self.book.is_banned(now, &to.id) {
            let _ = replies.send((id, to.id, Err(NetError::LimitReached("banned"))));
            return;
        }
        if !node.is_connected(&to.id) || self.used.contains_key(&to.id) {
            self.used.insert(to.id, now);
            self.close_idle(node, &to.id);
        }
        let node = node.clone();
        let replies = replies.clone();
        let timeout = self.dht.config().request_timeout;
        let max = node.config().limits.max_message_size;
        tokio::spawn(async move {
            let result = async {
                let body = request.encode();
                let mut reply = Err(NetError::ConnectionClosed);
                // A connection that closed under the request never answered
                // it: the peer let the connection go (its cap, or idle), or
                // both sides dialled at once and the other connection was
                // kept. DHT requests are idempotent, so ask once more, on a
                // connection that is open.
                for _ in 0..2 {
                    node.connect(PeerAddr::with(to.id, to.transport_addr()))
                        .await?;
                    reply = node
                        .request_with(&to.id, PROTOCOL, body.clone(), timeout, max)
                        .await;
                    if !matches!(
                        reply,
                        Err(NetError::ConnectionClosed | NetError::NotConnected(_))
                    ) {
                        break;
                    }
                }
                Response::decode(&reply?)
                    .map_err(|e| NetError::Store(format!("malformed dht response: {e}")))
            }
            .await;
            let _ = replies.send((id, to.id, result));
        });
    }

    /// Keeps the DHT's own connections under the cap, closing the least
    /// recently used that have nothing in flight: no DHT request of ours
    /// (sent or about to be) and no request of anyone's either way on the
    /// connection. `keep` is the peer being used right now. Only
    /// connections with requests in flight can take the count over the
    /// cap, and those are bounded by the lookups running.
    fn close_idle(&mut self, node: &Node, keep: &PeerId) {
        let cap = node.config().max_dht_connections;
        if self.used.len() <= cap {
            return;
        }
        let mut by_age: Vec<(Instant, PeerId)> = self.used.iter().map(|(p, t)| (*t, *p)).collect();
        by_age.sort_unstable();
        let mut over = self.used.len() - cap;
        for (_, peer) in by_age {
            if over == 0 {
                break;
            }
            if peer == *keep || self.in_flight.contains_key(&peer) || node.is_busy(&peer) {
                continue;
            }
            self.used.remove(&peer);
            node.disconnect(&peer);
            over -= 1;
        }
    }

    /// Discovery: learn addresses from the routing table, keep the target
    /// number of connections, ask a peer for more peers when short.
    fn maintain(&mut self, node: &Node) {
        let now = Instant::now();
        for e in self.dht.table().entries() {
            let _ = self.book.learn(now, e.contact, None);
        }
        let peers = node.peers();
        self.used.retain(|p, _| peers.iter().any(|x| x.id == *p));
        for c in self
            .book
            .to_dial(now, peers.len(), |p| node.is_connected(p))
        {
            let node = node.clone();
            tokio::spawn(async move {
                let _ = node.connect(PeerAddr::with(c.id, c.transport_addr())).await;
            });
        }
        if self.dht.table().len() < self.dht.config().k {
            let from_table: Vec<Contact> = self.dht.table().entries().map(|e| e.contact).collect();
            if !from_table.is_empty() {
                let c = from_table[self.rng.below(from_table.len() as u64) as usize];
                self.dht.ask_peers(now, c, 20);
            }
        }
    }
}
