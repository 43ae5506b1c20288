//! # peerlink-sim — the same protocol code, in virtual time
//!
//! The simulator drives `peerlink-proto`'s state machines (here the
//! [`Dht`]) exactly as the tokio driver does — requests, responses and
//! timer ticks — but delivers messages through an event queue in virtual
//! time. Everything random comes from one seed, so the same seed gives the
//! same run, event for event.
//!
//! - Latency: per-link one-way delays from a geographic model
//!   ([`Latency::Geo`]: six regions with measured-looking inter-region
//!   delays, a log-normal access delay per node and per-link jitter), or a
//!   fixed delay.
//! - Loss: each message is lost with probability `loss`.
//! - Churn: [`Sim::kill`] and [`Sim::revive`]; partitions with
//!   [`Sim::partition`] / [`Sim::heal`].
//!
//! ```
//! use peerlink_sim::{Sim, SimConfig};
//! let mut sim = Sim::new(SimConfig { nodes: 200, seed: 7, ..SimConfig::default() });
//! sim.join_all();
//! let key = peerlink_proto::dht::Key::hash(b"k");
//! let r = sim.put(3, key, b"v".to_vec());
//! assert!(matches!(r.output, peerlink_proto::dht::QueryOutput::Put { stored } if stored >= 10));
//! let r = sim.get(150, key);
//! assert!(matches!(r.output, peerlink_proto::dht::QueryOutput::Get(Some(_))));
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerlink_proto::dht::{
    Action, Contact, Dht, DhtConfig, Key, MemoryStore, QueryId, QueryResult, Request, RequestId,
    Response,
};
use peerlink_proto::rng::Rng;
use peerlink_proto::{Keypair, PeerId};

mod gossip;
mod links;

pub use gossip::{GossipReport, GossipSim, GossipSimConfig};
pub use links::Latency;
use links::{tick_time, EventQueue, Links};

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    pub dht: DhtConfig,
    pub latency: Latency,
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Virtual time between two nodes joining.
    pub join_interval: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1000,
            seed: 1,
            dht: DhtConfig {
                request_timeout: Duration::from_secs(2),
                ..DhtConfig::default()
            },
            latency: Latency::Geo,
            loss: 0.0,
            join_interval: Duration::from_millis(2),
        }
    }
}

struct SimNode {
    dht: Dht,
    id: PeerId,
    alive: bool,
    /// When a tick is scheduled (u64::MAX: none).
    tick_at: u64,
}

enum Event {
    Request {
        from: u32,
        to: u32,
        id: RequestId,
        request: Request,
    },
    Response {
        to: u32,
        id: RequestId,
        response: Response,
    },
    Tick {
        node: u32,
    },
}

/// Counters of one run.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub events: u64,
    pub messages: u64,
    pub lost: u64,
    pub misbehaved: u64,
}

pub struct Sim {
    config: SimConfig,
    nodes: Vec<SimNode>,
    index: HashMap<PeerId, u32>,
    links: Links,
    queue: EventQueue<Event>,
    /// Virtual time in microseconds.
    now_us: u64,
    base: Instant,
    rng: Rng,
    results: HashMap<(u32, QueryId), QueryResult>,
    pub stats: SimStats,
}

/// The synthetic address of node `i` (10.0.0.0/8, one /24 per 256 nodes
/// spread so consecutive nodes fall in different /24s).
pub fn node_addr(i: u32) -> SocketAddr {
    SocketAddr::from((
        [
            10,
            (i & 0xFF) as u8,
            ((i >> 8) & 0xFF) as u8,
            ((i >> 16) & 0xFF) as u8,
        ],
        4000,
    ))
}

fn addr_index(addr: &SocketAddr) -> Option<u32> {
    match addr {
        SocketAddr::V4(a) if a.port() == 4000 && a.ip().octets()[0] == 10 => {
            let o = a.ip().octets();
            Some(o[1] as u32 | (o[2] as u32) << 8 | (o[3] as u32) << 16)
        }
        _ => None,
    }
}

const UNIX_EPOCH_MS: u64 = 1_767_225_600_000; // 2026-01-01, fixed for determinism

impl Sim {
    /// Creates the nodes (not yet joined).
    pub fn new(config: SimConfig) -> Sim {
        let base = Instant::now();
        let mut rng = Rng::new(config.seed);
        let mut nodes = Vec::with_capacity(config.nodes);
        let mut index = HashMap::with_capacity(config.nodes);
        let mut links = Links::new(config.latency.clone(), config.seed, config.nodes);
        for i in 0..config.nodes as u32 {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret);
            let kp = Keypair::from_secret(secret);
            let id = kp.peer_id();
            let store = Box::new(MemoryStore::default());
            let dht = Dht::new(
                config.dht.clone(),
                kp,
                Some(peerlink_proto::TransportAddr::tcp(node_addr(i))),
                store,
                base,
                UNIX_EPOCH_MS,
                rng.next_u64(),
            );
            links.add_node(&mut rng);
            index.insert(id, i);
            nodes.push(SimNode {
                dht,
                id,
                alive: true,
                tick_at: u64::MAX,
            });
        }
        Sim {
            config,
            nodes,
            index,
            links,
            queue: EventQueue::new(),
            now_us: 0,
            base,
            rng,
            results: HashMap::new(),
            stats: SimStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now_us)
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now_us)
    }

    pub fn peer_id(&self, node: usize) -> PeerId {
        self.nodes[node].id
    }

    pub fn is_alive(&self, node: usize) -> bool {
        self.nodes[node].alive
    }

    pub fn dht(&self, node: usize) -> &Dht {
        &self.nodes[node].dht
    }

    /// Carries out what node `n`'s state machine asked for.
    fn drain(&mut self, n: u32) {
        while let Some(action) = self.nodes[n as usize].dht.poll_action() {
            match action {
                Action::Send { id, to, request } => {
                    let Some(t) = addr_index(&to.addr).filter(|t| (*t as usize) < self.nodes.len())
                    else {
                        let now = self.instant();
                        self.nodes[n as usize].dht.on_failure(now, id);
                        continue;
                    };
                    self.send(
                        n,
                        t,
                        Event::Request {
                            from: n,
                            to: t,
                            id,
                            request,
                        },
                    );
                }
                Action::Done(r) => {
                    self.results.insert((n, r.id), r);
                }
                Action::Misbehaved { .. } => self.stats.misbehaved += 1,
            }
        }
        self.schedule_tick(n);
    }

    fn send(&mut self, from: u32, to: u32, ev: Event) {
        self.stats.messages += 1;
        match self
            .links
            .arrival(from, to, self.now_us, self.config.loss, &mut self.rng)
        {
            Some(at) => self.queue.push(at, ev),
            None => self.stats.lost += 1,
        }
    }

    fn schedule_tick(&mut self, n: u32) {
        let node = &self.nodes[n as usize];
        if !node.alive {
            return;
        }
        let at = tick_time(node.dht.next_deadline(), self.base, self.now_us);
        if at < node.tick_at {
            self.nodes[n as usize].tick_at = at;
            self.queue.push(at, Event::Tick { node: n });
        }
    }

    /// Processes one event; false when the queue is empty.
    fn step(&mut self) -> bool {
        let Some((at, ev)) = self.queue.pop() else {
            return false;
        };
        self.now_us = at;
        self.stats.events += 1;
        let now = self.instant();
        match ev {
            Event::Request {
                from,
                to,
                id,
                request,
            } => {
                if !self.nodes[to as usize].alive {
                    return true;
                }
                let from_id = self.nodes[from as usize].id;
                let response = self.nodes[to as usize].dht.handle_request(
                    now,
                    from_id,
                    request.listen,
                    request.body,
                );
                self.send(
                    to,
                    from,
                    Event::Response {
                        to: from,
                        id,
                        response,
                    },
                );
                self.drain(to);
            }
            Event::Response { to, id, response } => {
                if !self.nodes[to as usize].alive {
                    return true;
                }
                self.nodes[to as usize].dht.on_response(now, id, response);
                self.drain(to);
            }
            Event::Tick { node } => {
                let nd = &mut self.nodes[node as usize];
                if nd.tick_at != at || !nd.alive {
                    return true;
                }
                nd.tick_at = u64::MAX;
                nd.dht.tick(now);
                self.drain(node);
            }
        }
        true
    }

    /// Runs until virtual time `t` (from the start of the run).
    pub fn run_until(&mut self, t: Duration) {
        let t_us = t.as_micros() as u64;
        while let Some(at) = self.queue.next_at() {
            if at > t_us {
                break;
            }
            self.step();
        }
        self.now_us = self.now_us.max(t_us);
    }

    pub fn run_for(&mut self, d: Duration) {
        let t = self.now() + d;
        self.run_until(t);
    }

    /// Runs until node `n`'s query `q` has finished and returns its result.
    pub fn wait(&mut self, n: usize, q: QueryId) -> QueryResult {
        loop {
            if let Some(r) = self.results.remove(&(n as u32, q)) {
                return r;
            }
            assert!(self.step(), "query can never finish: no events left");
        }
    }

    /// Every node joins, one every `join_interval`, through a random node
    /// that has finished joining (as a real node joins through an
    /// established bootstrap node); then runs until the joins have settled.
    pub fn join_all(&mut self) {
        let mut joined: Vec<u32> = vec![0];
        let mut pending: Vec<(u32, QueryId)> = Vec::new();
        for i in 1..self.nodes.len() as u32 {
            pending.retain(|&(n, q)| match self.results.remove(&(n, q)) {
                Some(_) => {
                    joined.push(n);
                    false
                }
                None => true,
            });
            let seed_idx = joined[self.rng.below(joined.len() as u64) as usize];
            let seed = Contact::new(self.nodes[seed_idx as usize].id, node_addr(seed_idx));
            let now = self.instant();
            let q = self.nodes[i as usize].dht.bootstrap(now, vec![seed]);
            pending.push((i, q));
            self.drain(i);
            let next = self.now() + self.config.join_interval;
            self.run_until(next);
        }
        for (i, q) in pending {
            self.wait(i as usize, q);
        }
        // Let the bucket refreshes that follow each bootstrap finish.
        self.run_for(Duration::from_secs(5));
    }

    /// Every live node refreshes every bucket (as its periodic refresh
    /// would), then the run settles.
    pub fn refresh_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                let now = self.instant();
                self.nodes[i].dht.refresh(now);
                self.drain(i as u32);
            }
        }
        self.run_for(Duration::from_secs(10));
    }

    fn start<F: FnOnce(&mut Dht, Instant) -> QueryId>(&mut self, n: usize, f: F) -> QueryId {
        let now = self.instant();
        let q = f(&mut self.nodes[n].dht, now);
        self.drain(n as u32);
        q
    }

    pub fn put(&mut self, n: usize, key: Key, value: Vec<u8>) -> QueryResult {
        let q = self.start(n, |d, now| {
            d.put(now, key, Bytes::from(value))
                .expect("simulated values are within the record limit")
        });
        self.wait(n, q)
    }

    pub fn get(&mut self, n: usize, key: Key) -> QueryResult {
        let q = self.start(n, |d, now| d.get(now, key));
        self.wait(n, q)
    }

    pub fn closest_peers(&mut self, n: usize, key: Key) -> QueryResult {
        let q = self.start(n, |d, now| d.closest_peers(now, key));
        self.wait(n, q)
    }

    pub fn provide(&mut self, n: usize, key: Key) -> QueryResult {
        let q = self.start(n, |d, now| d.provide(now, key));
        self.wait(n, q)
    }

    pub fn providers(&mut self, n: usize, key: Key) -> QueryResult {
        let q = self.start(n, |d, now| d.providers(now, key));
        self.wait(n, q)
    }

    /// Starts a closest-peers lookup without waiting (for many at once).
    pub fn start_closest_peers(&mut self, n: usize, key: Key) -> QueryId {
        self.start(n, |d, now| d.closest_peers(now, key))
    }

    /// The `k` live peers truly closest to `key`, by brute force.
    pub fn true_closest(&self, key: &Key, k: usize) -> Vec<PeerId> {
        self.brute_force(key, k, None)
    }

    /// What a lookup of `key` started by node `from` should return: the `k`
    /// live peers closest to `key` other than `from` itself.
    pub fn lookup_truth(&self, from: usize, key: &Key, k: usize) -> Vec<PeerId> {
        self.brute_force(key, k, Some(from))
    }

    fn brute_force(&self, key: &Key, k: usize, except: Option<usize>) -> Vec<PeerId> {
        let mut all: Vec<_> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| n.alive && Some(*i) != except)
            .map(|(_, n)| (Key::of_peer(&n.id).distance(key), n.id))
            .collect();
        if all.len() > k && k > 0 {
            all.select_nth_unstable_by(k - 1, |a, b| a.0.cmp(&b.0));
            all.truncate(k);
        }
        all.sort_unstable_by_key(|a| a.0);
        all.into_iter().map(|x| x.1).collect()
    }

    /// A uniformly random live node.
    pub fn random_alive(&mut self) -> usize {
        loop {
            let i = self.rng.below(self.nodes.len() as u64) as usize;
            if self.nodes[i].alive {
                return i;
            }
        }
    }

    pub fn random_key(&mut self) -> Key {
        let mut k = [0u8; 32];
        self.rng.fill(&mut k);
        Key(k)
    }

    /// Kills a random `fraction` of the live nodes at once (they stop
    /// answering; their state is lost). Returns the indices killed.
    pub fn kill(&mut self, fraction: f64) -> Vec<usize> {
        let want = (self.nodes.len() as f64 * fraction) as usize;
        let mut killed = Vec::with_capacity(want);
        while killed.len() < want {
            let i = self.random_alive();
            self.nodes[i].alive = false;
            killed.push(i);
        }
        killed
    }

    /// Splits the network: node `i` goes to group `group_of(i)`; messages
    /// between groups are lost until [`Sim::heal`].
    pub fn partition(&mut self, group_of: impl Fn(usize) -> u32) {
        self.links.partition(group_of);
    }

    pub fn heal(&mut self) {
        self.links.heal();
    }

    /// Index of a peer id.
    pub fn index_of(&self, id: &PeerId) -> Option<usize> {
        self.index.get(id).map(|i| *i as usize)
    }

    /// Sum of routing-table sizes (for memory estimates and diagnostics).
    pub fn table_entries(&self) -> usize {
        self.nodes.iter().map(|n| n.dht.table().len()).sum()
    }
}
