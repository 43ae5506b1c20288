//! The gossip state machine ([`Gossip`]) in virtual time, at 10,000 nodes
//! and more, with loss, churn and partitions.
//!
//! Each node is connected to `peers_per_node` random others (as
//! discovery would keep it); every node subscribes to one topic; random
//! nodes publish; the report gives delivery, time to reach everyone and
//! duplicates, measured exactly as the real-network benchmark does.
//!
//! ```
//! use peerlink_sim::{GossipSim, GossipSimConfig};
//! let mut sim = GossipSim::new(GossipSimConfig { nodes: 300, ..GossipSimConfig::default() });
//! let r = sim.run(20);
//! assert_eq!(r.delivery, 1.0);
//! ```

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerlink_proto::gossip::{Action, Gossip, GossipConfig, MessageId, Validation, Wire};
use peerlink_proto::rng::Rng;
use peerlink_proto::PeerId;

use crate::links::{tick_time, EventQueue, Latency, Links};

#[derive(Clone, Debug)]
pub struct GossipSimConfig {
    pub nodes: usize,
    pub seed: u64,
    pub gossip: GossipConfig,
    pub latency: Latency,
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Random connections each node opens (links are both ways, so the
    /// average degree is about twice this).
    pub peers_per_node: usize,
    /// Virtual time between two publishes.
    pub publish_interval: Duration,
    pub payload: usize,
    /// Fraction of nodes killed at once half way through the run.
    pub kill: f64,
}

impl Default for GossipSimConfig {
    fn default() -> Self {
        GossipSimConfig {
            nodes: 1000,
            seed: 1,
            gossip: GossipConfig::default(),
            latency: Latency::Geo,
            loss: 0.0,
            peers_per_node: 8,
            publish_interval: Duration::from_millis(100),
            payload: 256,
            kill: 0.0,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GossipReport {
    pub nodes: usize,
    pub messages: usize,
    /// Deliveries over (messages × live nodes other than the publisher).
    pub delivery: f64,
    /// Per message, time until the last live node had it.
    pub time_to_all_ms_p50: f64,
    pub time_to_all_ms_p99: f64,
    /// Per delivery, time from publish.
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    /// Full copies beyond the first, per node per message.
    pub duplicates_per_node_per_message: f64,
    pub hops_p50: u32,
    pub repaired: u64,
    pub lost_messages: u64,
    pub killed: usize,
    pub events: u64,
    pub wall_s: f64,
    pub events_per_sec: f64,
}

enum Event {
    Deliver { from: u32, to: u32, msg: Wire },
    Tick { node: u32 },
}

struct SimNode {
    gossip: Gossip,
    alive: bool,
    tick_at: u64,
}

pub struct GossipSim {
    config: GossipSimConfig,
    nodes: Vec<SimNode>,
    ids: Vec<PeerId>,
    index: HashMap<PeerId, u32>,
    neighbours: Vec<Vec<u32>>,
    links: Links,
    queue: EventQueue<Event>,
    now_us: u64,
    base: Instant,
    rng: Rng,
    /// Per message: publish time (µs) and publisher.
    published: HashMap<MessageId, (u64, u32)>,
    /// Per message: delivery times (µs after publish) and hops.
    deliveries: HashMap<MessageId, Vec<(u64, u8, u32)>>,
    events: u64,
    lost: u64,
}

impl GossipSim {
    /// Creates the nodes, connects them and subscribes every node.
    pub fn new(config: GossipSimConfig) -> GossipSim {
        let base = Instant::now();
        let mut rng = Rng::new(config.seed);
        let n = config.nodes.max(2);
        let mut links = Links::new(config.latency.clone(), config.seed, n);
        let mut ids = Vec::with_capacity(n);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            // Ids only name peers here; no signature is ever checked.
            let id = PeerId::unverified(b);
            ids.push(id);
            nodes.push(SimNode {
                gossip: Gossip::new(config.gossip.clone(), id, base, rng.next_u64()),
                alive: true,
                tick_at: u64::MAX,
            });
            links.add_node(&mut rng);
        }
        let mut neighbours: Vec<HashSet<u32>> = vec![HashSet::new(); n];
        for a in 0..n as u32 {
            while neighbours[a as usize].len() < config.peers_per_node.min(n - 1) {
                let b = rng.below(n as u64) as u32;
                if b != a {
                    neighbours[a as usize].insert(b);
                    neighbours[b as usize].insert(a);
                }
            }
        }
        let neighbours: Vec<Vec<u32>> = neighbours
            .into_iter()
            .map(|s| {
                let mut v: Vec<u32> = s.into_iter().collect();
                v.sort_unstable();
                v
            })
            .collect();
        let mut sim = GossipSim {
            index: ids
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, i as u32))
                .collect(),
            ids,
            nodes,
            neighbours,
            links,
            queue: EventQueue::new(),
            now_us: 0,
            base,
            rng,
            published: HashMap::new(),
            deliveries: HashMap::new(),
            events: 0,
            lost: 0,
            config,
        };
        for a in 0..n {
            for j in 0..sim.neighbours[a].len() {
                let b = sim.neighbours[a][j] as usize;
                sim.nodes[a].gossip.add_peer(sim.ids[b]);
            }
            sim.drain(a as u32);
        }
        let now = sim.instant();
        for a in 0..n {
            let _ = sim.nodes[a].gossip.subscribe(now, "sim");
            sim.drain(a as u32);
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now_us)
    }

    pub fn gossip(&self, node: usize) -> &Gossip {
        &self.nodes[node].gossip
    }

    fn drain(&mut self, n: u32) {
        while let Some(a) = self.nodes[n as usize].gossip.poll_action() {
            match a {
                Action::Send { to, message, .. } => {
                    let Some(&t) = self.index.get(&to) else {
                        continue;
                    };
                    let arrival =
                        self.links
                            .arrival(n, t, self.now_us, self.config.loss, &mut self.rng);
                    let Some(at) = arrival else {
                        self.lost += 1;
                        continue;
                    };
                    self.queue.push(
                        at,
                        Event::Deliver {
                            from: n,
                            to: t,
                            msg: message,
                        },
                    );
                }
                Action::Validate { id, hops, .. } => {
                    if let Some((t0, _)) = self.published.get(&id) {
                        self.deliveries
                            .entry(id)
                            .or_default()
                            .push((self.now_us - t0, hops, n));
                    }
                    self.nodes[n as usize]
                        .gossip
                        .validated(id, Validation::Accept);
                }
                Action::Misbehaved { .. } => {}
            }
        }
        let node = &mut self.nodes[n as usize];
        if node.alive {
            let at = tick_time(node.gossip.next_deadline(), self.base, self.now_us);
            if at < node.tick_at {
                node.tick_at = at;
                self.queue.push(at, Event::Tick { node: n });
            }
        }
    }

    fn step(&mut self) -> bool {
        let Some((at, ev)) = self.queue.pop() else {
            return false;
        };
        self.now_us = at;
        self.events += 1;
        let now = self.instant();
        match ev {
            Event::Deliver { from, to, msg } => {
                if !self.nodes[to as usize].alive || !self.nodes[from as usize].alive {
                    return true;
                }
                let from_id = self.ids[from as usize];
                self.nodes[to as usize].gossip.on_wire(now, from_id, msg);
                self.drain(to);
            }
            Event::Tick { node } => {
                let nd = &mut self.nodes[node as usize];
                if nd.tick_at != at || !nd.alive {
                    return true;
                }
                nd.tick_at = u64::MAX;
                nd.gossip.tick(now);
                self.drain(node);
            }
        }
        true
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now_us + d.as_micros() as u64;
        while self.queue.next_at().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now_us = self.now_us.max(end);
    }

    /// A random live node.
    fn random_alive(&mut self) -> u32 {
        loop {
            let i = self.rng.below(self.nodes.len() as u64) as u32;
            if self.nodes[i as usize].alive {
                return i;
            }
        }
    }

    /// Node `n` publishes `data`; returns the message id.
    pub fn publish(&mut self, n: usize, data: Vec<u8>) -> Option<MessageId> {
        let now = self.instant();
        let p = self.nodes[n]
            .gossip
            .publish(now, "sim", Bytes::from(data))
            .ok()?;
        self.published.insert(p.id, (self.now_us, n as u32));
        self.drain(n as u32);
        Some(p.id)
    }

    /// Kills a random `fraction` of live nodes at once; their neighbours
    /// notice the connection drop.
    pub fn kill(&mut self, fraction: f64) -> usize {
        let want = (self.nodes.len() as f64 * fraction) as usize;
        for _ in 0..want {
            let i = self.random_alive();
            self.nodes[i as usize].alive = false;
            let id = self.ids[i as usize];
            for j in 0..self.neighbours[i as usize].len() {
                let b = self.neighbours[i as usize][j];
                if self.nodes[b as usize].alive {
                    self.nodes[b as usize].gossip.remove_peer(&id);
                    self.drain(b);
                }
            }
        }
        want
    }

    /// Splits the network: node `i` goes to group `group_of(i)`; messages
    /// between groups are lost until [`GossipSim::heal`].
    pub fn partition(&mut self, group_of: impl Fn(usize) -> u32) {
        self.links.partition(group_of);
    }

    pub fn heal(&mut self) {
        self.links.heal();
    }

    /// Nodes that have delivered message `id` to their application.
    pub fn receivers(&self, id: &MessageId) -> usize {
        self.deliveries.get(id).map_or(0, |d| d.len())
    }

    pub fn is_alive(&self, n: usize) -> bool {
        self.nodes[n].alive
    }

    /// Lets the mesh form, sends one warm-up message (it floods the mesh
    /// and the duplicates it causes choke redundant links), then publishes
    /// `messages` from random live nodes, killing `kill` of the nodes half
    /// way, and settles. Only the measured messages are reported.
    pub fn run(&mut self, messages: usize) -> GossipReport {
        let wall = Instant::now();
        self.run_for(Duration::from_millis(500));
        let warm = self.random_alive();
        self.publish(warm as usize, b"warm-up".to_vec());
        self.run_for(Duration::from_secs(2));
        self.published.clear();
        self.deliveries.clear();
        let dups0: u64 = self.nodes.iter().map(|n| n.gossip.stats.duplicates).sum();
        let repaired0: u64 = self.nodes.iter().map(|n| n.gossip.stats.repaired).sum();
        let ev0 = self.events;
        let mut killed = 0;
        for m in 0..messages {
            if m == messages / 2 && self.config.kill > 0.0 {
                killed = self.kill(self.config.kill);
            }
            let from = self.random_alive() as usize;
            let mut data = vec![0u8; self.config.payload.max(8)];
            data[..8].copy_from_slice(&(m as u64).to_le_bytes());
            self.publish(from, data);
            self.run_for(self.config.publish_interval);
        }
        // Repairs run on IHAVE timers and heartbeats; give them time.
        self.run_for(Duration::from_secs(5));
        self.report(messages, killed, dups0, repaired0, ev0, wall.elapsed())
    }

    fn report(
        &self,
        messages: usize,
        killed: usize,
        dups0: u64,
        repaired0: u64,
        ev0: u64,
        wall: Duration,
    ) -> GossipReport {
        let alive: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|i| self.nodes[*i as usize].alive)
            .collect();
        let (mut delivered, mut expected) = (0usize, 0usize);
        let (mut tta, mut lat, mut hops) = (Vec::new(), Vec::new(), Vec::new());
        for (id, (_, publisher)) in &self.published {
            let d = self.deliveries.get(id).map(Vec::as_slice).unwrap_or(&[]);
            let live: Vec<&(u64, u8, u32)> = d
                .iter()
                .filter(|(_, _, n)| self.nodes[*n as usize].alive)
                .collect();
            let want = alive.len() - usize::from(self.nodes[*publisher as usize].alive);
            expected += want;
            delivered += live.len();
            for (t, h, _) in &live {
                lat.push(*t);
                hops.push(*h as u32);
            }
            if live.len() >= want {
                tta.push(live.iter().map(|x| x.0).max().unwrap_or(0));
            } else {
                tta.push(u64::MAX);
            }
        }
        tta.sort_unstable();
        lat.sort_unstable();
        hops.sort_unstable();
        let ms = |v: &[u64], p: f64| -> f64 {
            match v.get(((v.len().max(1) - 1) as f64 * p).round() as usize) {
                Some(&u64::MAX) => f64::INFINITY,
                Some(x) => *x as f64 / 1000.0,
                None => 0.0,
            }
        };
        let dups: u64 = self
            .nodes
            .iter()
            .map(|n| n.gossip.stats.duplicates)
            .sum::<u64>()
            - dups0;
        let repaired: u64 = self
            .nodes
            .iter()
            .map(|n| n.gossip.stats.repaired)
            .sum::<u64>()
            - repaired0;
        let events = self.events - ev0;
        GossipReport {
            nodes: self.nodes.len(),
            messages,
            delivery: if expected == 0 {
                1.0
            } else {
                delivered as f64 / expected as f64
            },
            time_to_all_ms_p50: ms(&tta, 0.5),
            time_to_all_ms_p99: ms(&tta, 0.99),
            latency_ms_p50: ms(&lat, 0.5),
            latency_ms_p99: ms(&lat, 0.99),
            duplicates_per_node_per_message: dups as f64
                / (messages.max(1) as f64 * alive.len().max(1) as f64),
            hops_p50: hops.get(hops.len() / 2).copied().unwrap_or(0),
            repaired,
            lost_messages: self.lost,
            killed,
            events,
            wall_s: wall.as_secs_f64(),
            events_per_sec: events as f64 / wall.as_secs_f64().max(1e-9),
        }
    }
}
