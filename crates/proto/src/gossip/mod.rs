//! Layer 6 — topic gossip as a sans-IO state machine.
//!
//! [`Gossip`] takes peers coming and going ([`Gossip::add_peer`],
//! [`Gossip::remove_peer`]), their messages ([`Gossip::on_message`]), the
//! application's verdicts ([`Gossip::validated`]) and time
//! ([`Gossip::tick`]); it returns [`Action`]s: messages to send, messages
//! to validate and deliver, misbehaving peers.
//!
//! The design is gossipsub's mesh with Plumtree's broadcast trees on top:
//!
//! - **Mesh.** Per topic, each node keeps `mesh_n` (between `mesh_n_low`
//!   and `mesh_n_high`) subscribed peers, grafted at once when a topic is
//!   joined or a subscriber appears, repaired on every heartbeat.
//! - **Eager and lazy links.** A mesh link starts *eager*: full messages
//!   are pushed over it. When a full message arrives twice, the second
//!   sender is *choked* ([`Wire::Choke`]): the link stays in the mesh but
//!   carries only ids (IHAVE) from then on, both ways. The eager links
//!   thin out to a spanning tree, so a node receives each message about
//!   once instead of once per mesh peer.
//! - **Repair.** An IHAVE for a message that has not arrived within
//!   `repair_after` is answered with IWANT, and the announcer's link made
//!   eager again (GRAFT), so the tree heals around lost messages and dead
//!   peers. A heartbeat also sends recent ids to a few non-mesh
//!   subscribers, so even a node with a broken mesh catches up.
//! - **Large messages.** A node that receives one tells its other eager
//!   peers IDONTWANT before validating it, so they skip sending it.
//! - **Validation first.** A message reaches the application
//!   ([`Action::Validate`]) once (ids are content hashes held in a
//!   time-bounded seen cache) and is forwarded only after
//!   [`Validation::Accept`].
//! - **Scoring.** Rejected messages, undelivered IHAVE promises and IWANT
//!   / IHAVE floods lower a peer's score: below `gossip_threshold` it gets
//!   no gossip, below `graylist_threshold` it is ignored and pruned, at
//!   `disconnect_threshold` it is reported ([`Action::Misbehaved`]).
//!   Malformed messages are reported at once.

pub mod wire;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::rng::Rng;
use crate::PeerId;
pub use wire::{check_topic, MessageId, Topic, Wire, WireError, MAX_TOPIC_LEN};

/// Gossip settings. The defaults suit a public network.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Mesh peers per topic: the target, and the bounds the heartbeat keeps.
    pub mesh_n: usize,
    pub mesh_n_low: usize,
    pub mesh_n_high: usize,
    /// Eager mesh links a node keeps however many duplicates they bring:
    /// a pure tree (0) has no duplicates but long paths and breaks at
    /// every lost message; a few extra links shorten paths and carry
    /// messages around losses.
    pub min_eager: usize,
    /// Non-mesh subscribers that get recent ids on each heartbeat.
    pub gossip_lazy: usize,
    pub heartbeat: Duration,
    /// Heartbeats a message stays available to IWANT, and heartbeats
    /// whose ids are sent as heartbeat IHAVE.
    pub history_length: usize,
    pub history_gossip: usize,
    /// How long a message id is remembered (duplicates are dropped).
    pub seen_ttl: Duration,
    pub max_seen: usize,
    /// An IHAVE'd message missing this long is asked for (IWANT).
    pub repair_after: Duration,
    /// An IWANT unanswered this long is a broken promise; the next
    /// announcer is asked.
    pub iwant_timeout: Duration,
    /// Publishing to a topic one is not subscribed to uses these peers
    /// for this long after the last publish.
    pub fanout_ttl: Duration,
    /// Largest payload, in bytes.
    pub max_message_size: usize,
    /// Payloads at least this large trigger IDONTWANT to eager peers.
    pub idontwant_threshold: usize,
    /// A pruned peer may not graft again for this long.
    pub prune_backoff: Duration,
    /// Per peer and heartbeat: IHAVE messages and IWANT'd ids served.
    pub max_ihave_per_heartbeat: u32,
    pub max_iwant_per_heartbeat: u32,
    /// Times one cached message is sent to one peer in answer to IWANT
    /// (gossipsub's `gossip_retransmission`); more asks are ignored and
    /// counted in [`GossipStats::iwant_refused`].
    pub max_retransmissions: u8,
    /// Topics a peer may announce.
    pub max_peer_topics: usize,
    /// Messages waiting for the application's verdict, and for how long.
    pub max_pending_validation: usize,
    pub validation_timeout: Duration,
    /// Ids of IHAVE'd messages being waited for.
    pub max_missing: usize,
    /// Bytes of full messages kept for IWANT.
    pub max_cache_bytes: usize,
    pub scoring: ScoreConfig,
}

/// Peer scoring: penalties, thresholds and decay. Scores start at 0.
#[derive(Clone, Debug)]
pub struct ScoreConfig {
    pub invalid_message: f64,
    pub broken_promise: f64,
    pub flood: f64,
    pub graft_in_backoff: f64,
    /// Each full message from a graylisted peer.
    pub graylisted_message: f64,
    pub gossip_threshold: f64,
    pub graylist_threshold: f64,
    pub disconnect_threshold: f64,
    /// Each heartbeat a negative score is multiplied by this.
    pub decay: f64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            invalid_message: 20.0,
            broken_promise: 5.0,
            flood: 10.0,
            graft_in_backoff: 5.0,
            graylisted_message: 10.0,
            gossip_threshold: -20.0,
            graylist_threshold: -50.0,
            disconnect_threshold: -100.0,
            decay: 0.95,
        }
    }
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            mesh_n: 6,
            mesh_n_low: 4,
            mesh_n_high: 12,
            min_eager: 3,
            gossip_lazy: 3,
            heartbeat: Duration::from_secs(1),
            history_length: 5,
            history_gossip: 3,
            seen_ttl: Duration::from_secs(120),
            max_seen: 200_000,
            repair_after: Duration::from_millis(150),
            iwant_timeout: Duration::from_secs(1),
            fanout_ttl: Duration::from_secs(60),
            max_message_size: 1 << 20,
            idontwant_threshold: 1024,
            prune_backoff: Duration::from_secs(60),
            max_ihave_per_heartbeat: 64,
            max_iwant_per_heartbeat: 5000,
            max_retransmissions: 3,
            max_peer_topics: 1000,
            max_pending_validation: 4096,
            validation_timeout: Duration::from_secs(10),
            max_missing: 20_000,
            max_cache_bytes: 64 << 20,
            scoring: ScoreConfig::default(),
        }
    }
}

/// The application's verdict on a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Deliver and forward.
    Accept,
    /// Invalid: drop, and penalise the peer that sent it.
    Reject,
    /// Drop without penalty (e.g. valid but not wanted now).
    Ignore,
}

/// How a driver should queue an outbound message when the peer is slow:
/// forwards are dropped first, control and own publishes are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Control,
    Publish,
    Forward,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        to: PeerId,
        message: Wire,
        priority: Priority,
    },
    /// A new message: the application validates it and answers with
    /// [`Gossip::validated`]; on `Accept` it is delivered there once.
    Validate {
        id: MessageId,
        from: PeerId,
        topic: Topic,
        data: Bytes,
        hops: u8,
    },
    /// The peer broke the protocol or its score fell too low; the driver
    /// counts and disconnects it.
    Misbehaved { peer: PeerId, reason: &'static str },
}

/// Why a publish was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("bad topic: {0}")]
    Topic(#[from] WireError),
    #[error("message of {size} bytes is over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("the same payload was published on this topic within the seen window (ids are content hashes; add a nonce to repeat a message)")]
    Duplicate,
    #[error("{max} messages were seen within the seen window, the most remembered; retry once older ones expire")]
    SeenFull { max: usize },
}

/// What a publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub id: MessageId,
    /// Peers the message (or its id, to lazy mesh peers) was sent to.
    /// Zero means no peer is known to subscribe to the topic yet; the
    /// message stays available to IWANT for `history_length` heartbeats.
    pub peers: usize,
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub published: u64,
    /// Messages accepted by validation (delivered to the application).
    pub delivered: u64,
    /// Full copies of messages already seen.
    pub duplicates: u64,
    pub rejected: u64,
    pub ignored: u64,
    /// Full messages sent on (forwards and IWANT replies).
    pub forwarded: u64,
    pub ihave_sent: u64,
    pub iwant_sent: u64,
    /// Messages that arrived after an IWANT.
    pub repaired: u64,
    pub chokes_sent: u64,
    pub grafts_sent: u64,
    pub prunes_sent: u64,
    pub broken_promises: u64,
    pub floods: u64,
    pub malformed: u64,
    /// IWANT'd ids not served again: the peer had this message
    /// `max_retransmissions` times already.
    pub iwant_refused: u64,
    /// Messages dropped because the seen cache was full: new messages are
    /// refused rather than old ids forgotten, which would let their
    /// copies in again as new.
    pub seen_full: u64,
}

#[derive(Debug, Default)]
struct Peer {
    topics: HashSet<Topic>,
    score: f64,
    reported: bool,
    /// Ids the peer said it does not want, with the heartbeat they came in.
    dont_want: HashSet<MessageId>,
    dont_want_order: VecDeque<(u64, MessageId)>,
    ihaves: u32,
    iwants: u32,
    flooded: bool,
    /// No graft to or from this peer in a topic until then.
    backoff: HashMap<Topic, Instant>,
}

#[derive(Default)]
struct TopicState {
    /// Mesh peers, and whether the link is eager (full messages).
    mesh: BTreeMap<PeerId, bool>,
}

struct Fanout {
    peers: Vec<PeerId>,
    last_publish: Instant,
}

struct Cached {
    topic: Topic,
    data: Bytes,
    hops: u8,
    /// Peers served this message after an IWANT, and how often.
    served: Vec<(PeerId, u8)>,
}

struct Pending {
    from: PeerId,
    topic: Topic,
    data: Bytes,
    hops: u8,
    since: Instant,
}

struct Missing {
    topic: Topic,
    announcers: Vec<PeerId>,
    /// The peer last asked (IWANT) and not yet delivering.
    asked: Option<PeerId>,
    deadline: Instant,
}

/// Negative scores of departed peers are kept (and decay) until above
/// this, so a reconnect does not wipe a penalty.
const FORGIVEN: f64 = -1.0;
/// Most departed peers whose score is remembered.
const MAX_DEPARTED: usize = 4096;

/// Most announcers remembered per missing message.
const MAX_ANNOUNCERS: usize = 8;
/// Largest backoff a peer may ask for.
const MAX_BACKOFF_SECS: u16 = 3600;

/// The gossip state machine of one node.
///
/// Peers, topics and meshes are ordered maps: the order in which a node
/// sends (and draws random numbers) must not depend on hash seeds, so the
/// simulator replays a seed exactly.
pub struct Gossip {
    config: GossipConfig,
    local: PeerId,
    rng: Rng,
    peers: BTreeMap<PeerId, Peer>,
    topics: BTreeMap<Topic, TopicState>,
    fanout: BTreeMap<Topic, Fanout>,
    /// Scores of peers that left with a penalty.
    departed: BTreeMap<PeerId, f64>,
    seen: HashSet<MessageId>,
    seen_order: VecDeque<(Instant, MessageId)>,
    cache: HashMap<MessageId, Cached>,
    /// Ids cached per heartbeat, newest first.
    cache_windows: VecDeque<Vec<MessageId>>,
    cache_bytes: usize,
    pending: HashMap<MessageId, Pending>,
    missing: HashMap<MessageId, Missing>,
    /// Deadlines of `missing` entries (stale ones are skipped).
    missing_due: BinaryHeap<Reverse<(Instant, MessageId)>>,
    next_heartbeat: Instant,
    heartbeats: u64,
    actions: VecDeque<Action>,
    pub stats: GossipStats,
}

impl Gossip {
    pub fn new(config: GossipConfig, local: PeerId, now: Instant, seed: u64) -> Gossip {
        let mut rng = Rng::new(seed);
        // Spread heartbeats so a network started at once does not beat in step.
        let first = config.heartbeat.mul_f64(0.5 + rng.unit());
        Gossip {
            local,
            rng,
            peers: BTreeMap::new(),
            topics: BTreeMap::new(),
            fanout: BTreeMap::new(),
            departed: BTreeMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            cache: HashMap::new(),
            cache_windows: VecDeque::from([Vec::new()]),
            cache_bytes: 0,
            pending: HashMap::new(),
            missing: HashMap::new(),
            missing_due: BinaryHeap::new(),
            next_heartbeat: now + first,
            heartbeats: 0,
            actions: VecDeque::new(),
            stats: GossipStats::default(),
            config,
        }
    }

    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    pub fn local_id(&self) -> PeerId {
        self.local
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Topics this node subscribes to.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.keys()
    }

    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// The mesh of a topic: peers and whether each link is eager.
    pub fn mesh(&self, topic: &str) -> Vec<(PeerId, bool)> {
        self.topics
            .get(topic)
            .map(|t| t.mesh.iter().map(|(p, e)| (*p, *e)).collect())
            .unwrap_or_default()
    }

    /// Connected peers that subscribe to `topic`.
    pub fn topic_peers(&self, topic: &str) -> usize {
        self.peers
            .values()
            .filter(|p| p.topics.contains(topic))
            .count()
    }

    pub fn score(&self, peer: &PeerId) -> Option<f64> {
        self.peers.get(peer).map(|p| p.score)
    }

    /// Peers known to be connected (see [`Gossip::add_peer`]).
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    /// Bytes of full messages held for IWANT.
    pub fn cached_bytes(&self) -> usize {
        self.cache_bytes
    }

    pub fn has_peer(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    fn send(&mut self, to: PeerId, message: Wire, priority: Priority) {
        self.actions.push_back(Action::Send {
            to,
            message,
            priority,
        });
    }

    // ----- peers -------------------------------------------------------

    /// A connection to `peer` is up: it learns our subscriptions.
    pub fn add_peer(&mut self, peer: PeerId) {
        if peer == self.local || self.peers.contains_key(&peer) {
            return;
        }
        // A peer that left with a bad score comes back with it.
        let score = self.departed.remove(&peer).unwrap_or(0.0);
        self.peers.insert(
            peer,
            Peer {
                score,
                ..Peer::default()
            },
        );
        let topics: Vec<Topic> = self.topics.keys().cloned().collect();
        for t in topics {
            self.send(peer, Wire::Subscribe(t), Priority::Control);
        }
    }

    /// The connection to `peer` is gone.
    pub fn remove_peer(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.remove(peer).filter(|p| p.score < FORGIVEN) {
            if self.departed.len() >= MAX_DEPARTED {
                // Full: the mildest is forgotten first.
                let mildest = self
                    .departed
                    .iter()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(id, _)| *id);
                if let Some(id) = mildest {
                    self.departed.remove(&id);
                }
            }
            self.departed.insert(*peer, p.score);
        }
        for t in self.topics.values_mut() {
            t.mesh.remove(peer);
        }
        for f in self.fanout.values_mut() {
            f.peers.retain(|p| p != peer);
        }
    }

    fn penalize(&mut self, peer: PeerId, amount: f64, reason: &'static str) {
        let s = &self.config.scoring;
        let (graylist, disconnect) = (s.graylist_threshold, s.disconnect_threshold);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.score -= amount;
        let score = p.score;
        if score <= disconnect && !p.reported {
            p.reported = true;
            self.actions.push_back(Action::Misbehaved { peer, reason });
        }
        if score < graylist {
            for t in self.topics.values_mut() {
                t.mesh.remove(&peer);
            }
        }
    }

    fn score_of(&self, peer: &PeerId) -> f64 {
        self.peers.get(peer).map_or(f64::NEG_INFINITY, |p| p.score)
    }

    // ----- local API ---------------------------------------------------

    /// Joins `topic`: tells every peer and grafts up to `mesh_n` known
    /// subscribers at once, so messages flow within a round trip.
    pub fn subscribe(&mut self, now: Instant, topic: &str) -> Result<(), WireError> {
        check_topic(topic)?;
        if self.topics.contains_key(topic) {
            return Ok(());
        }
        let topic = Topic::from(topic);
        self.topics.insert(topic.clone(), TopicState::default());
        let all: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in all {
            self.send(p, Wire::Subscribe(topic.clone()), Priority::Control);
        }
        // Fanout peers first: they already carry our messages.
        let fanout = self
            .fanout
            .remove(&topic)
            .map(|f| f.peers)
            .unwrap_or_default();
        for p in fanout {
            self.graft(now, &topic, p);
        }
        self.fill_mesh(now, &topic, self.config.mesh_n);
        Ok(())
    }

    /// Leaves `topic`: mesh peers are pruned, every peer told.
    pub fn unsubscribe(&mut self, topic: &str) {
        let Some((topic, state)) = self.topics.remove_entry(topic) else {
            return;
        };
        let backoff = self.config.prune_backoff.as_secs().min(u16::MAX as u64) as u16;
        for p in state.mesh.into_keys() {
            self.stats.prunes_sent += 1;
            self.send(
                p,
                Wire::Prune {
                    topic: topic.clone(),
                    backoff_secs: backoff,
                },
                Priority::Control,
            );
        }
        let all: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in all {
            self.send(p, Wire::Unsubscribe(topic.clone()), Priority::Control);
        }
    }

    /// Publishes `data` on `topic` (subscribed or not). Not delivered to
    /// the local application.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: &str,
        data: Bytes,
    ) -> Result<Published, PublishError> {
        check_topic(topic)?;
        if data.len() > self.config.max_message_size {
            return Err(PublishError::TooLarge {
                size: data.len(),
                max: self.config.max_message_size,
            });
        }
        let id = MessageId::of(topic, &data);
        if self.seen.contains(&id) {
            return Err(PublishError::Duplicate);
        }
        if !self.mark_seen(now, id) {
            return Err(PublishError::SeenFull {
                max: self.config.max_seen,
            });
        }
        let topic = self
            .topics
            .get_key_value(topic)
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| Topic::from(topic));
        self.stats.published += 1;
        let peers = if self.topics.contains_key(&topic) {
            // A mesh still forming: graft known subscribers now.
            self.fill_mesh(now, &topic, self.config.mesh_n);
            self.forward(&topic, id, &data, 0, None, Priority::Publish)
        } else {
            self.publish_fanout(now, &topic, &data)
        };
        self.cache_insert(id, topic, data, 0);
        Ok(Published { id, peers })
    }

    fn publish_fanout(&mut self, now: Instant, topic: &Topic, data: &Bytes) -> usize {
        let mut peers = self
            .fanout
            .remove(topic)
            .map(|f| f.peers)
            .unwrap_or_default();
        peers.retain(|p| self.peers.get(p).is_some_and(|x| x.topics.contains(topic)));
        if peers.len() < self.config.mesh_n {
            let want = self.config.mesh_n - peers.len();
            let more = self.pick_peers(topic, want, |g, p| {
                !peers.contains(p) && g.score_of(p) >= 0.0
            });
            peers.extend(more);
        }
        for p in &peers {
            self.send(
                *p,
                Wire::Data {
                    topic: topic.clone(),
                    hops: 0,
                    data: data.clone(),
                },
                Priority::Publish,
            );
        }
        let n = peers.len();
        self.fanout.insert(
            topic.clone(),
            Fanout {
                peers,
                last_publish: now,
            },
        );
        n
    }

    /// The application's verdict on a message from [`Action::Validate`].
    pub fn validated(&mut self, id: MessageId, verdict: Validation) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        match verdict {
            Validation::Accept => {
                self.stats.delivered += 1;
                let hops = p.hops.saturating_add(1);
                self.forward(&p.topic, id, &p.data, hops, Some(p.from), Priority::Forward);
                self.cache_insert(id, p.topic, p.data, hops);
            }
            Validation::Reject => {
                self.stats.rejected += 1;
                let amount = self.config.scoring.invalid_message;
                self.penalize(p.from, amount, "gossip_invalid_message");
            }
            Validation::Ignore => self.stats.ignored += 1,
        }
    }

    /// Pushes a message to eager mesh peers and its id to lazy ones;
    /// returns how many peers got either.
    fn forward(
        &mut self,
        topic: &Topic,
        id: MessageId,
        data: &Bytes,
        hops: u8,
        except: Option<PeerId>,
        priority: Priority,
    ) -> usize {
        let Some(state) = self.topics.get(topic) else {
            return 0;
        };
        let mut out = Vec::with_capacity(state.mesh.len());
        for (&p, &eager) in &state.mesh {
            if Some(p) == except {
                continue;
            }
            let Some(peer) = self.peers.get(&p) else {
                continue;
            };
            if peer.dont_want.contains(&id) {
                continue;
            }
            out.push((p, eager));
        }
        for &(p, eager) in &out {
            // Own messages go in full to the whole mesh: one hop less to
            // everyone, for a handful of duplicates per message network-wide.
            if eager || priority == Priority::Publish {
                self.stats.forwarded += u64::from(priority == Priority::Forward);
                self.send(
                    p,
                    Wire::Data {
                        topic: topic.clone(),
                        hops,
                        data: data.clone(),
                    },
                    priority,
                );
            } else {
                self.stats.ihave_sent += 1;
                self.send(
                    p,
                    Wire::IHave {
                        topic: topic.clone(),
                        ids: vec![id],
                    },
                    Priority::Control,
                );
            }
        }
        out.len()
    }

    // ----- inbound -----------------------------------------------------

    /// A message from `from`, as bytes off the wire.
    pub fn on_message(&mut self, now: Instant, from: PeerId, bytes: &Bytes) {
        match Wire::decode(bytes) {
            Ok(m) => self.on_wire(now, from, m),
            Err(_) => {
                self.stats.malformed += 1;
                if let Some(p) = self.peers.get_mut(&from) {
                    p.reported = true;
                }
                self.actions.push_back(Action::Misbehaved {
                    peer: from,
                    reason: "gossip_malformed",
                });
            }
        }
    }

    /// A decoded message from `from` (the simulator skips the codec).
    pub fn on_wire(&mut self, now: Instant, from: PeerId, msg: Wire) {
        let Some(peer) = self.peers.get(&from) else {
            return;
        };
        if peer.score < self.config.scoring.graylist_threshold {
            // Ignored; one that keeps pushing messages is spamming.
            if matches!(msg, Wire::Data { .. }) {
                let amount = self.config.scoring.graylisted_message;
                self.penalize(from, amount, "gossip_spam");
            }
            return;
        }
        match msg {
            Wire::Subscribe(t) => self.on_subscribe(now, from, t),
            Wire::Unsubscribe(t) => {
                if let Some(p) = self.peers.get_mut(&from) {
                    p.topics.remove(&t);
                }
                if let Some(s) = self.topics.get_mut(&t) {
                    s.mesh.remove(&from);
                }
                if let Some(f) = self.fanout.get_mut(&t) {
                    f.peers.retain(|p| *p != from);
                }
            }
            Wire::Graft(t) => self.on_graft(now, from, t),
            Wire::Prune {
                topic,
                backoff_secs,
            } => {
                if let Some(s) = self.topics.get_mut(&topic) {
                    s.mesh.remove(&from);
                }
                let until = now + Duration::from_secs(backoff_secs.min(MAX_BACKOFF_SECS).into());
                if let Some(p) = self.peers.get_mut(&from) {
                    if p.backoff.len() < self.config.max_peer_topics {
                        p.backoff.insert(topic, until);
                    }
                }
            }
            Wire::Choke(t) => self.on_choke(now, from, t),
            Wire::Data { topic, hops, data } => self.on_data(now, from, topic, hops, data),
            Wire::IHave { topic, ids } => self.on_ihave(now, from, topic, ids),
            Wire::IWant(ids) => self.on_iwant(from, ids),
            Wire::IDontWant(ids) => {
                let beat = self.heartbeats;
                if let Some(p) = self.peers.get_mut(&from) {
                    for id in ids {
                        // Bounded: a peer may hold at most a heartbeat's
                        // worth of IWANT-sized entries.
                        if p.dont_want.len() >= self.config.max_iwant_per_heartbeat as usize {
                            break;
                        }
                        if p.dont_want.insert(id) {
                            p.dont_want_order.push_back((beat, id));
                        }
                    }
                }
            }
        }
    }

    /// The link to `from` goes lazy. A node left with fewer than
    /// `min_eager` eager links makes a lazy one eager again, so nobody
    /// ends up hearing of messages only through IHAVE.
    fn on_choke(&mut self, now: Instant, from: PeerId, topic: Topic) {
        let Some(s) = self.topics.get_mut(&topic) else {
            return;
        };
        match s.mesh.get_mut(&from) {
            Some(e) => *e = false,
            None => return,
        }
        let eager = s.mesh.values().filter(|e| **e).count();
        if eager >= self.config.min_eager {
            return;
        }
        let mut lazy: Vec<PeerId> = s
            .mesh
            .iter()
            .filter(|(p, e)| !**e && **p != from)
            .map(|(p, _)| *p)
            .collect();
        if lazy.is_empty() {
            return;
        }
        lazy.sort_unstable();
        let pick = lazy[self.rng.below(lazy.len() as u64) as usize];
        self.graft(now, &topic, pick);
    }

    fn on_subscribe(&mut self, now: Instant, from: PeerId, topic: Topic) {
        let max = self.config.max_peer_topics;
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        if p.topics.len() >= max && !p.topics.contains(&topic) {
            return;
        }
        p.topics.insert(topic.clone());
        let short = self
            .topics
            .get(&topic)
            .is_some_and(|s| s.mesh.len() < self.config.mesh_n);
        if short && self.score_of(&from) >= 0.0 && !self.in_backoff(now, &from, &topic) {
            self.graft(now, &topic, from);
        }
    }

    fn in_backoff(&self, now: Instant, peer: &PeerId, topic: &Topic) -> bool {
        self.peers
            .get(peer)
            .and_then(|p| p.backoff.get(topic))
            .is_some_and(|until| *until > now)
    }

    /// Adds `peer` to the mesh of `topic` as an eager link and tells it.
    fn graft(&mut self, _now: Instant, topic: &Topic, peer: PeerId) {
        let Some(s) = self.topics.get_mut(topic) else {
            return;
        };
        if s.mesh.insert(peer, true) != Some(true) {
            self.stats.grafts_sent += 1;
            self.send(peer, Wire::Graft(topic.clone()), Priority::Control);
        }
    }

    fn prune(&mut self, now: Instant, topic: &Topic, peer: PeerId) {
        if let Some(s) = self.topics.get_mut(topic) {
            s.mesh.remove(&peer);
        }
        let backoff = self.config.prune_backoff;
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.backoff.len() < self.config.max_peer_topics {
                p.backoff.insert(topic.clone(), now + backoff);
            }
        }
        self.stats.prunes_sent += 1;
        self.send(
            peer,
            Wire::Prune {
                topic: topic.clone(),
                backoff_secs: backoff.as_secs().min(u16::MAX as u64) as u16,
            },
            Priority::Control,
        );
    }

    fn on_graft(&mut self, now: Instant, from: PeerId, topic: Topic) {
        let max = self.config.max_peer_topics;
        if let Some(p) = self.peers.get_mut(&from) {
            if p.topics.len() < max {
                p.topics.insert(topic.clone());
            }
        }
        let Some(s) = self.topics.get_mut(&topic) else {
            // Not our topic: tell it to look elsewhere.
            self.prune(now, &topic, from);
            return;
        };
        if let Some(e) = s.mesh.get_mut(&from) {
            *e = true;
            return;
        }
        let full = s.mesh.len() >= self.config.mesh_n_high;
        if self.in_backoff(now, &from, &topic) {
            let amount = self.config.scoring.graft_in_backoff;
            self.penalize(from, amount, "gossip_graft_in_backoff");
            self.prune(now, &topic, from);
        } else if full || self.score_of(&from) < 0.0 {
            self.prune(now, &topic, from);
        } else if let Some(s) = self.topics.get_mut(&topic) {
            s.mesh.insert(from, true);
        }
    }

    fn on_data(&mut self, now: Instant, from: PeerId, topic: Topic, hops: u8, data: Bytes) {
        if data.len() > self.config.max_message_size {
            self.stats.malformed += 1;
            if let Some(p) = self.peers.get_mut(&from) {
                p.reported = true;
            }
            self.actions.push_back(Action::Misbehaved {
                peer: from,
                reason: "gossip_oversized",
            });
            return;
        }
        let Some(state) = self.topics.get_mut(&topic) else {
            // Not subscribed (it may not know yet that we left).
            return;
        };
        let id = MessageId::of(&topic, &data);
        if self.seen.contains(&id) {
            self.stats.duplicates += 1;
            // Plumtree: a second full copy means this link is redundant.
            let eager_links = state.mesh.values().filter(|e| **e).count();
            if eager_links <= self.config.min_eager {
                return;
            }
            if let Some(eager) = state.mesh.get_mut(&from).filter(|e| **e) {
                *eager = false;
                self.stats.chokes_sent += 1;
                self.send(from, Wire::Choke(topic), Priority::Control);
            }
            return;
        }
        let dont_want: Vec<PeerId> = if data.len() >= self.config.idontwant_threshold {
            state
                .mesh
                .iter()
                .filter(|(p, e)| **e && **p != from)
                .map(|(p, _)| *p)
                .collect()
        } else {
            Vec::new()
        };
        if !self.mark_seen(now, id) {
            self.stats.seen_full += 1;
            return;
        }
        if self.missing.remove(&id).is_some_and(|m| m.asked.is_some()) {
            self.stats.repaired += 1;
        }
        for p in dont_want {
            self.send(p, Wire::IDontWant(vec![id]), Priority::Control);
        }
        if self.pending.len() >= self.config.max_pending_validation {
            self.stats.ignored += 1;
            return;
        }
        self.pending.insert(
            id,
            Pending {
                from,
                topic: topic.clone(),
                data: data.clone(),
                hops,
                since: now,
            },
        );
        self.actions.push_back(Action::Validate {
            id,
            from,
            topic,
            data,
            hops,
        });
    }

    fn on_ihave(&mut self, now: Instant, from: PeerId, topic: Topic, ids: Vec<MessageId>) {
        if self.score_of(&from) < self.config.scoring.gossip_threshold
            || !self.topics.contains_key(&topic)
        {
            return;
        }
        let max = self.config.max_ihave_per_heartbeat;
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.ihaves += 1;
        if p.ihaves > max {
            self.flood(from);
            return;
        }
        for id in ids {
            if self.seen.contains(&id) {
                continue;
            }
            if let Some(m) = self.missing.get_mut(&id) {
                if m.announcers.len() < MAX_ANNOUNCERS && !m.announcers.contains(&from) {
                    m.announcers.push(from);
                }
                continue;
            }
            if self.missing.len() >= self.config.max_missing {
                break;
            }
            let deadline = now + self.config.repair_after;
            self.missing.insert(
                id,
                Missing {
                    topic: topic.clone(),
                    announcers: vec![from],
                    asked: None,
                    deadline,
                },
            );
            self.missing_due.push(Reverse((deadline, id)));
        }
    }

    /// Penalises a flood once per heartbeat.
    fn flood(&mut self, from: PeerId) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        if !p.flooded {
            p.flooded = true;
            self.stats.floods += 1;
            let amount = self.config.scoring.flood;
            self.penalize(from, amount, "gossip_flood");
        }
    }

    fn on_iwant(&mut self, from: PeerId, ids: Vec<MessageId>) {
        if self.score_of(&from) < self.config.scoring.gossip_threshold {
            return;
        }
        let max = self.config.max_iwant_per_heartbeat;
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.iwants = p.iwants.saturating_add(ids.len() as u32);
        if p.iwants > max {
            self.flood(from);
            return;
        }
        let most = self.config.max_retransmissions;
        for id in ids {
            if let Some(c) = self.cache.get_mut(&id) {
                let served = match c.served.iter_mut().find(|(p, _)| *p == from) {
                    Some((_, n)) => n,
                    None => {
                        c.served.push((from, 0));
                        match c.served.last_mut() {
                            Some((_, n)) => n,
                            None => continue,
                        }
                    }
                };
                if *served >= most {
                    self.stats.iwant_refused += 1;
                    continue;
                }
                *served += 1;
                let msg = Wire::Data {
                    topic: c.topic.clone(),
                    hops: c.hops,
                    data: c.data.clone(),
                };
                self.stats.forwarded += 1;
                self.send(from, msg, Priority::Forward);
            }
        }
    }

    // ----- caches ------------------------------------------------------

    /// Remembers `id` until `seen_ttl` has passed; false, remembering
    /// nothing, when `max_seen` ids are already remembered. An id is never
    /// forgotten early: its copies may still be in flight or in caches,
    /// and would be taken for new.
    fn mark_seen(&mut self, now: Instant, id: MessageId) -> bool {
        if self.seen.len() >= self.config.max_seen {
            return false;
        }
        self.seen.insert(id);
        self.seen_order.push_back((now, id));
        true
    }

    fn cache_insert(&mut self, id: MessageId, topic: Topic, data: Bytes, hops: u8) {
        if self.cache.contains_key(&id)
            || self.cache_bytes + data.len() > self.config.max_cache_bytes
        {
            return;
        }
        self.cache_bytes += data.len();
        self.cache.insert(
            id,
            Cached {
                topic,
                data,
                hops,
                served: Vec::new(),
            },
        );
        if let Some(w) = self.cache_windows.front_mut() {
            w.push(id);
        }
    }

    // ----- time --------------------------------------------------------

    pub fn next_deadline(&self) -> Instant {
        match self.missing_due.peek() {
            Some(Reverse((t, _))) => (*t).min(self.next_heartbeat),
            None => self.next_heartbeat,
        }
    }

    pub fn tick(&mut self, now: Instant) {
        self.repair(now);
        if now >= self.next_heartbeat {
            self.heartbeat(now);
            self.next_heartbeat = now + self.config.heartbeat;
        }
    }

    /// Asks for IHAVE'd messages that did not arrive (IWANT), making the
    /// announcer's link eager again; a peer asked before and silent broke
    /// its promise.
    fn repair(&mut self, now: Instant) {
        let mut wants: BTreeMap<PeerId, Vec<MessageId>> = BTreeMap::new();
        while let Some(Reverse((t, id))) = self.missing_due.peek().copied() {
            if t > now {
                break;
            }
            self.missing_due.pop();
            let Some(m) = self.missing.get_mut(&id) else {
                continue;
            };
            if m.deadline != t {
                continue;
            }
            let broken = m.asked.take();
            let next = loop {
                if m.announcers.is_empty() {
                    break None;
                }
                let i = self.rng.below(m.announcers.len() as u64) as usize;
                let p = m.announcers.swap_remove(i);
                if self.peers.contains_key(&p) {
                    break Some(p);
                }
            };
            let topic = m.topic.clone();
            match next {
                Some(p) => {
                    m.asked = Some(p);
                    m.deadline = now + self.config.iwant_timeout;
                    self.missing_due.push(Reverse((m.deadline, id)));
                    wants.entry(p).or_default().push(id);
                    // Plumtree: the tree missed this one; use this link.
                    if self
                        .topics
                        .get(&topic)
                        .and_then(|s| s.mesh.get(&p))
                        .is_some_and(|e| !*e)
                    {
                        self.graft(now, &topic, p);
                    }
                }
                None => {
                    self.missing.remove(&id);
                }
            }
            if let Some(b) = broken {
                self.stats.broken_promises += 1;
                let amount = self.config.scoring.broken_promise;
                self.penalize(b, amount, "gossip_broken_promise");
            }
        }
        for (p, ids) in wants {
            for chunk in ids.chunks(wire::MAX_WIRE_IDS) {
                self.stats.iwant_sent += 1;
                self.send(p, Wire::IWant(chunk.to_vec()), Priority::Control);
            }
        }
    }

    fn heartbeat(&mut self, now: Instant) {
        self.heartbeats += 1;
        let topics: Vec<Topic> = self.topics.keys().cloned().collect();
        for t in &topics {
            self.maintain_mesh(now, t);
            self.emit_gossip(t);
        }
        // Fanout: forget idle topics and departed peers.
        let ttl = self.config.fanout_ttl;
        self.fanout
            .retain(|_, f| now.saturating_duration_since(f.last_publish) < ttl);
        // Caches.
        while self.cache_windows.len() >= self.config.history_length.max(1) {
            for id in self.cache_windows.pop_back().unwrap_or_default() {
                if let Some(c) = self.cache.remove(&id) {
                    self.cache_bytes -= c.data.len();
                }
            }
        }
        self.cache_windows.push_front(Vec::new());
        let ttl = self.config.seen_ttl;
        while let Some((t, id)) = self.seen_order.front().copied() {
            if now.saturating_duration_since(t) < ttl {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&id);
        }
        let vt = self.config.validation_timeout;
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.since) < vt);
        self.stats.ignored += (before - self.pending.len()) as u64;
        // Peers: decay, per-heartbeat counters, expired state.
        let (decay, beat) = (self.config.scoring.decay, self.heartbeats);
        self.departed.retain(|_, score| {
            *score *= decay;
            *score < FORGIVEN
        });
        for p in self.peers.values_mut() {
            if p.score < 0.0 {
                p.score *= decay;
            }
            p.ihaves = 0;
            p.iwants = 0;
            p.flooded = false;
            p.backoff.retain(|_, until| *until > now);
            while let Some((b, id)) = p.dont_want_order.front().copied() {
                if beat.saturating_sub(b) < 3 {
                    break;
                }
                p.dont_want_order.pop_front();
                p.dont_want.remove(&id);
            }
        }
    }

    /// Keeps a topic's mesh between its bounds.
    fn maintain_mesh(&mut self, now: Instant, topic: &Topic) {
        let graylist = self.config.scoring.graylist_threshold;
        let scores: Vec<(PeerId, f64)> = match self.topics.get(topic) {
            Some(s) => s.mesh.keys().map(|p| (*p, self.score_of(p))).collect(),
            None => return,
        };
        for (p, score) in scores {
            if score < 0.0 {
                if score < graylist {
                    if let Some(s) = self.topics.get_mut(topic) {
                        s.mesh.remove(&p);
                    }
                } else {
                    self.prune(now, topic, p);
                }
            }
        }
        let len = self.topics.get(topic).map_or(0, |s| s.mesh.len());
        if len < self.config.mesh_n_low {
            self.fill_mesh(now, topic, self.config.mesh_n);
        } else if len > self.config.mesh_n_high {
            // Drop lazy links first (the eager ones carry the tree), each
            // group in random order.
            let mesh = self.mesh(topic);
            let mut order: Vec<(bool, u64, PeerId)> = mesh
                .into_iter()
                .map(|(p, eager)| (eager, self.rng.next_u64(), p))
                .collect();
            order.sort_unstable();
            for (_, _, p) in order.into_iter().take(len - self.config.mesh_n) {
                self.prune(now, topic, p);
            }
        }
    }

    /// Grafts known subscribers until the mesh of `topic` has `want` peers.
    fn fill_mesh(&mut self, now: Instant, topic: &Topic, want: usize) {
        let Some(s) = self.topics.get(topic) else {
            return;
        };
        if s.mesh.len() >= want {
            return;
        }
        let need = want - s.mesh.len();
        let picks = self.pick_peers(topic, need, |g, p| {
            g.score_of(p) >= 0.0
                && !g.in_backoff(now, p, topic)
                && !g.topics.get(topic).is_some_and(|s| s.mesh.contains_key(p))
        });
        for p in picks {
            self.graft(now, topic, p);
        }
    }

    /// Up to `n` random subscribers of `topic` that pass `filter`.
    fn pick_peers(
        &mut self,
        topic: &Topic,
        n: usize,
        filter: impl Fn(&Gossip, &PeerId) -> bool,
    ) -> Vec<PeerId> {
        let mut all: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| p.topics.contains(topic) && filter(self, id))
            .map(|(id, _)| *id)
            .collect();
        all.sort_unstable();
        // A partial Fisher–Yates shuffle: the first n are a random sample.
        let n = n.min(all.len());
        for i in 0..n {
            let j = i + self.rng.below((all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(n);
        all
    }

    /// Heartbeat IHAVE: recent ids to a few subscribers outside the mesh.
    fn emit_gossip(&mut self, topic: &Topic) {
        let ids: Vec<MessageId> = self
            .cache_windows
            .iter()
            .take(self.config.history_gossip)
            .flatten()
            .filter(|id| self.cache.get(id).is_some_and(|c| &c.topic == topic))
            .copied()
            .take(wire::MAX_WIRE_IDS)
            .collect();
        if ids.is_empty() {
            return;
        }
        let threshold = self.config.scoring.gossip_threshold;
        let peers = self.pick_peers(topic, self.config.gossip_lazy, |g, p| {
            g.score_of(p) >= threshold
                && !g.topics.get(topic).is_some_and(|s| s.mesh.contains_key(p))
        });
        for p in peers {
            self.stats.ihave_sent += 1;
            self.send(
                p,
                Wire::IHave {
                    topic: topic.clone(),
                    ids: ids.clone(),
                },
                Priority::Control,
            );
        }
    }
}

#[cfg(test)]
mod tests;
