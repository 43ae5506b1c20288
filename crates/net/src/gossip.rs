//! The tokio driver of topic gossip: it runs the sans-IO
//! [`peerlink_proto::gossip::Gossip`] over the node's gossip channel.
//!
//! One task owns the state machine. It feeds it connects and disconnects
//! (from [`Node::events`]), the peers' gossip messages, the application's
//! verdicts and timer ticks, and carries out its actions: messages are
//! queued on the peer's connection (forwards are dropped and counted when
//! a peer's queue is full; control and own publishes are not), accepted
//! messages go to the topic's subscriptions.
//!
//! ```
//! use peerlink_net::Node;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), peerlink_net::NetError> {
//! let a = Node::builder().listen("127.0.0.1:0".parse().unwrap()).build().await?;
//! let b = Node::builder().listen("127.0.0.1:0".parse().unwrap()).build().await?;
//! a.connect(b.addr().unwrap()).await?;
//!
//! let mut blocks = b.gossip().subscribe("blocks")?;
//! let _mine = a.gossip().subscribe("blocks")?;
//! // The mesh forms within a round trip of subscribing.
//! while a.gossip().info().await?.topics.iter().all(|(_, mesh, _)| *mesh == 0) {
//!     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! }
//! let sent = a.gossip().publish("blocks", &b"block 1"[..]).await?;
//! assert_eq!(sent.peers, 1);
//! let msg = blocks.recv().await.unwrap();
//! assert_eq!(&msg.data[..], b"block 1");
//! # a.shutdown().await; b.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use peerlink_proto::control::GOSSIP_CHANNEL;
use peerlink_proto::gossip::{
    Action, Gossip, GossipStats, MessageId, Priority, Published, Topic, Validation,
};
use peerlink_proto::rng::Rng;
use peerlink_proto::PeerId;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::node::{Node, PeerEvent, WeakNode};
use crate::routing::Receiver;
use crate::NetError;

/// A message received on a subscribed topic (validated, delivered once).
#[derive(Clone, Debug)]
pub struct GossipMessage {
    pub topic: Topic,
    pub id: MessageId,
    /// The peer it came from (not necessarily its author).
    pub from: PeerId,
    pub data: Bytes,
    /// Forwards between the publisher and this node.
    pub hops: u8,
}

/// Decides whether a message is delivered and forwarded.
pub type Validator = Arc<dyn Fn(&GossipMessage) -> Validation + Send + Sync>;

/// Messages a subscription buffers before newer ones are dropped.
const SUBSCRIPTION_BUFFER: usize = 4096;

enum Command {
    Subscribe(Topic, mpsc::Sender<GossipMessage>),
    /// A subscription was dropped.
    Unsubscribed(Topic),
    Publish(Topic, Bytes, oneshot::Sender<Result<Published, NetError>>),
    Validator(Topic, Validator),
    Info(oneshot::Sender<GossipInfo>),
    Mesh(Topic, oneshot::Sender<Vec<PeerId>>),
}

/// A snapshot of the local gossip state.
#[derive(Clone, Debug)]
pub struct GossipInfo {
    pub stats: GossipStats,
    /// Subscribed topics with their mesh size and eager links.
    pub topics: Vec<(Topic, usize, usize)>,
    pub peers: usize,
    /// Messages dropped because a subscription was not read.
    pub lagged: u64,
}

/// The node's gossip ([`Node::gossip`]). Cheap to clone.
#[derive(Clone)]
pub struct GossipHandle {
    /// `None` when the node runs without gossip.
    tx: Option<mpsc::UnboundedSender<Command>>,
}

/// The messages of one topic; see [`GossipHandle::subscribe`]. Dropping
/// the last subscription of a topic leaves it.
pub struct Subscription {
    topic: Topic,
    rx: mpsc::Receiver<GossipMessage>,
    tx: mpsc::UnboundedSender<Command>,
}

impl Subscription {
    /// The next message, or `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<GossipMessage> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<GossipMessage> {
        self.rx.try_recv().ok()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.rx.close();
        let _ = self.tx.send(Command::Unsubscribed(self.topic.clone()));
    }
}

impl GossipHandle {
    fn sender(&self) -> Result<&mpsc::UnboundedSender<Command>, NetError> {
        self.tx.as_ref().ok_or(NetError::GossipDisabled)
    }

    pub(crate) fn disabled() -> Self {
        GossipHandle { tx: None }
    }

    /// Joins `topic` and returns its messages. Known subscribers are
    /// grafted at once, so messages flow within a round trip. Several
    /// subscriptions to one topic each get every message.
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, NetError> {
        peerlink_proto::gossip::check_topic(topic)?;
        let tx = self.sender()?.clone();
        let topic = Topic::from(topic);
        let (mtx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        tx.send(Command::Subscribe(topic.clone(), mtx))
            .map_err(|_| NetError::Shutdown)?;
        Ok(Subscription { topic, rx, tx })
    }

    /// Publishes `data` on `topic` (subscribed or not). The result says
    /// how many peers it went to; zero means no subscriber is known yet,
    /// which is not an error. The same payload on the same topic within
    /// the seen window is refused ([`peerlink_proto::gossip::PublishError::Duplicate`]).
    pub async fn publish(
        &self,
        topic: &str,
        data: impl Into<Bytes>,
    ) -> Result<Published, NetError> {
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Command::Publish(Topic::from(topic), data.into(), tx))
            .map_err(|_| NetError::Shutdown)?;
        rx.await.map_err(|_| NetError::Shutdown)?
    }

    /// Validates every message of `topic` before it is delivered or
    /// forwarded. `Reject` penalises the sender; `Ignore` drops quietly.
    /// The function runs on the gossip task: keep it quick.
    pub fn set_validator(
        &self,
        topic: &str,
        f: impl Fn(&GossipMessage) -> Validation + Send + Sync + 'static,
    ) -> Result<(), NetError> {
        peerlink_proto::gossip::check_topic(topic)?;
        self.sender()?
            .send(Command::Validator(Topic::from(topic), Arc::new(f)))
            .map_err(|_| NetError::Shutdown)
    }

    /// The peers in this node's mesh for `topic` (empty when it does not
    /// subscribe). The mesh is symmetric and degree-bounded, kept
    /// connected by the gossip heartbeat: an application can use it as
    /// an overlay of its own, as the transaction pool does for its
    /// announcements.
    pub async fn mesh(&self, topic: &str) -> Result<Vec<PeerId>, NetError> {
        peerlink_proto::gossip::check_topic(topic)?;
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Command::Mesh(Topic::from(topic), tx))
            .map_err(|_| NetError::Shutdown)?;
        rx.await.map_err(|_| NetError::Shutdown)
    }

    pub async fn info(&self) -> Result<GossipInfo, NetError> {
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(Command::Info(tx))
            .map_err(|_| NetError::Shutdown)?;
        rx.await.map_err(|_| NetError::Shutdown)
    }
}

impl Node {
    /// The node's topic gossip: subscribe, publish, validate. Calls fail
    /// with [`NetError::GossipDisabled`] when the node was built without it.
    pub fn gossip(&self) -> GossipHandle {
        self.service().unwrap_or_else(GossipHandle::disabled)
    }
}

/// Starts the gossip task for a freshly built node.
pub(crate) fn start(node: &Node) -> GossipHandle {
    let Some(config) = node.config().gossip.clone() else {
        return GossipHandle::disabled();
    };
    let mut rng = Rng::from_os();
    let gossip = Gossip::new(config, node.peer_id(), Instant::now(), rng.next_u64());
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = Driver {
        node: node.downgrade(),
        gossip,
        subscribers: HashMap::new(),
        validators: HashMap::new(),
        lagged: 0,
    };
    // The gossip channel's inbox is made at build and claimed only here.
    let Some(inbox) = node.internal_channel(GOSSIP_CHANNEL) else {
        return GossipHandle::disabled();
    };
    let events = node.events();
    node.add_task(tokio::spawn(driver.run(rx, inbox, events)));
    GossipHandle { tx: Some(tx) }
}

struct Driver {
    node: WeakNode,
    gossip: Gossip,
    subscribers: HashMap<Topic, Vec<mpsc::Sender<GossipMessage>>>,
    validators: HashMap<Topic, Validator>,
    lagged: u64,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut inbox: Receiver,
        mut events: broadcast::Receiver<PeerEvent>,
    ) {
        if let Some(node) = self.node.upgrade() {
            self.sync_peers(&node);
        }
        let mut batch = Vec::with_capacity(256);
        loop {
            let Some(node) = self.node.upgrade() else {
                return;
            };
            self.carry_out(&node);
            let deadline = tokio::time::Instant::from_std(self.gossip.next_deadline());
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => return,
                },
                n = inbox.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        return;
                    }
                    let now = Instant::now();
                    for m in batch.drain(..) {
                        if !self.gossip.has_peer(&m.peer) && node.is_connected(&m.peer) {
                            // Its first messages can beat the Connected event.
                            self.gossip.add_peer(m.peer);
                        }
                        self.gossip.on_message(now, m.peer, &m.payload);
                        self.carry_out(&node);
                    }
                }
                ev = events.recv() => match ev {
                    Ok(PeerEvent::Connected { peer, .. }) => self.gossip.add_peer(peer),
                    Ok(PeerEvent::Disconnected { peer, .. }) => {
                        if !node.is_connected(&peer) {
                            self.gossip.remove_peer(&peer);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.sync_peers(&node),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(deadline) => self.gossip.tick(Instant::now()),
            }
        }
    }

    /// Brings the state machine's peer set in line with the node's.
    fn sync_peers(&mut self, node: &Node) {
        let connected: Vec<PeerId> = node.peers().into_iter().map(|p| p.id).collect();
        let gone: Vec<PeerId> = self
            .gossip
            .peers()
            .filter(|p| !connected.contains(p))
            .copied()
            .collect();
        for p in gone {
            self.gossip.remove_peer(&p);
        }
        for p in connected {
            self.gossip.add_peer(p);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Subscribe(topic, tx) => {
                let _ = self.gossip.subscribe(now, &topic);
                self.subscribers.entry(topic).or_default().push(tx);
            }
            Command::Unsubscribed(topic) => {
                if let Some(subs) = self.subscribers.get_mut(&topic) {
                    subs.retain(|s| !s.is_closed());
                    if subs.is_empty() {
                        self.subscribers.remove(&topic);
                        self.gossip.unsubscribe(&topic);
                    }
                }
            }
            Command::Publish(topic, data, reply) => {
                let r = self
                    .gossip
                    .publish(now, &topic, data)
                    .map_err(NetError::from);
                let _ = reply.send(r);
            }
            Command::Validator(topic, f) => {
                self.validators.insert(topic, f);
            }
            Command::Info(reply) => {
                let topics = self
                    .gossip
                    .topics()
                    .map(|t| {
                        let mesh = self.gossip.mesh(t);
                        let eager = mesh.iter().filter(|(_, e)| *e).count();
                        (t.clone(), mesh.len(), eager)
                    })
                    .collect();
                let _ = reply.send(GossipInfo {
                    stats: self.gossip.stats,
                    topics,
                    peers: self.gossip.peers().count(),
                    lagged: self.lagged,
                });
            }
            Command::Mesh(topic, reply) => {
                let _ = reply.send(
                    self.gossip
                        .mesh(&topic)
                        .into_iter()
                        .map(|(p, _)| p)
                        .collect(),
                );
            }
        }
    }

    /// Carries out what the state machine asked for.
    fn carry_out(&mut self, node: &Node) {
        while let Some(action) = self.gossip.poll_action() {
            match action {
                Action::Send {
                    to,
                    message,
                    priority,
                } => {
                    let force = priority != Priority::Forward;
                    match node.push_internal(&to, GOSSIP_CHANNEL, message.encode(), force) {
                        Err(NetError::QueueFull { .. }) => {
                            node.metrics().outbound(GOSSIP_CHANNEL).dropped.inc();
                        }
                        Err(NetError::NotConnected(_)) => self.gossip.remove_peer(&to),
                        _ => {}
                    }
                }
                Action::Validate {
                    id,
                    from,
                    topic,
                    data,
                    hops,
                } => {
                    let msg = GossipMessage {
                        topic,
                        id,
                        from,
                        data,
                        hops,
                    };
                    let verdict = self
                        .validators
                        .get(&msg.topic)
                        .map_or(Validation::Accept, |f| f(&msg));
                    self.gossip.validated(id, verdict);
                    if verdict == Validation::Accept {
                        self.deliver(msg);
                    }
                }
                Action::Misbehaved { peer, reason } => {
                    self.gossip.remove_peer(&peer);
                    node.punish(&peer, reason);
                }
            }
        }
    }

    fn deliver(&mut self, msg: GossipMessage) {
        let Some(subs) = self.subscribers.get_mut(&msg.topic) else {
            return;
        };
        subs.retain(|s| !s.is_closed());
        for s in subs.iter() {
            if s.try_send(msg.clone()).is_err() {
                self.lagged += 1;
            }
        }
    }
}
