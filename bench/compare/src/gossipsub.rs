//! The gossip workload of `peerlink bench gossip` on rust-libp2p
//! gossipsub (default config, signed messages; tcp + noise + yamux), so
//! both run in one invocation.
//!
//! Same plan as peerlink's: every node subscribes to one topic, one
//! warm-up message, then numbered 1 KiB messages from random nodes at a
//! fixed interval; each node logs when it received which. Node i dials
//! `peers` random earlier nodes, so the graph is connected. Duplicates are
//! counted through the message-id function, which gossipsub calls for
//! every message it receives, duplicates included: calls minus unique
//! messages minus own publishes. Links are loopback with no injected
//! delay: rust-libp2p has no hook for one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId};
use libp2p::swarm::SwarmEvent;
use libp2p::Multiaddr;
use peerlink_bench::Latency;
use peerlink_proto::rng::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

const TOPIC: &str = "bench";

enum Cmd {
    Dial(Multiaddr),
    Publish(Vec<u8>, oneshot::Sender<bool>),
}

/// (node, message number, received at)
type Log = Arc<Mutex<Vec<(usize, u64, Instant)>>>;

struct GsNode {
    addr: Multiaddr,
    tx: mpsc::UnboundedSender<Cmd>,
    ids_computed: Arc<AtomicU64>,
}

impl GsNode {
    async fn start(index: usize, log: Log) -> Result<GsNode> {
        let ids_computed = Arc::new(AtomicU64::new(0));
        let counter = ids_computed.clone();
        let behaviour = move |key: &libp2p::identity::Keypair| {
            // Content ids, like peerlink's; the call count is the number of
            // copies received.
            let config = gossipsub::ConfigBuilder::default()
                .message_id_fn(move |m: &gossipsub::Message| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    std::hash::Hash::hash(&m.data, &mut h);
                    MessageId::from(std::hash::Hasher::finish(&h).to_be_bytes().to_vec())
                })
                .build()
                .map_err(|e| e.to_string())?;
            Ok(gossipsub::Behaviour::<
                gossipsub::IdentityTransform,
                gossipsub::AllowAllSubscriptionFilter,
            >::new(
                MessageAuthenticity::Signed(key.clone()), config
            )?)
        };
        let mut swarm = crate::tcp_swarm(behaviour, Duration::from_secs(60))?;
        let addr = crate::listen_loopback(&mut swarm).await?;
        let topic = IdentTopic::new(TOPIC);
        swarm.behaviour_mut().subscribe(&topic)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(Cmd::Dial(a)) => { let _ = swarm.dial(a); }
                        Some(Cmd::Publish(data, reply)) => {
                            let ok = swarm.behaviour_mut().publish(topic.clone(), data).is_ok();
                            let _ = reply.send(ok);
                        }
                        None => break,
                    },
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) = event {
                            let at = Instant::now();
                            let seq = peerlink_bench::gossip::payload_seq(&message.data);
                            if let (Some(seq), Ok(mut log)) = (seq, log.lock()) {
                                log.push((index, seq, at));
                            }
                        }
                    }
                }
            }
        });
        Ok(GsNode {
            addr,
            tx,
            ids_computed,
        })
    }

    async fn publish(&self, data: Vec<u8>) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Publish(data, reply))
            .map_err(|_| anyhow::anyhow!("gossipsub node stopped"))?;
        Ok(rx.await?)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GossipsubReport {
    pub nodes: usize,
    pub messages: usize,
    pub delivery: f64,
    pub time_to_all: Latency,
    pub latency: Latency,
    pub duplicates_per_node_per_message: f64,
}

/// Runs the workload on `nodes` gossipsub nodes.
pub async fn run(
    nodes: usize,
    messages: usize,
    size: usize,
    interval: Duration,
    peers: usize,
    seed: u64,
) -> Result<GossipsubReport> {
    if nodes < 2 {
        bail!("a gossip benchmark needs at least 2 nodes");
    }
    let log: Log = Arc::default();
    let mut net = Vec::with_capacity(nodes);
    for i in 0..nodes {
        net.push(GsNode::start(i, log.clone()).await?);
    }
    let mut rng = Rng::new(seed);
    for i in 1..nodes {
        for _ in 0..peers.min(i) {
            let j = rng.below(i as u64) as usize;
            let _ = net[i].tx.send(Cmd::Dial(net[j].addr.clone()));
        }
    }
    // Subscriptions travel on connect; meshes form on heartbeats (1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    net[0]
        .publish(peerlink_bench::gossip::payload(u64::MAX, size))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids0: u64 = net
        .iter()
        .map(|n| n.ids_computed.load(Ordering::Relaxed))
        .sum();
    let delivered0 = log.lock().map(|l| l.len()).unwrap_or(0) as u64;
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    for seq in 0..messages as u64 {
        let from = rng.below(nodes as u64) as usize;
        let t = Instant::now();
        if net[from]
            .publish(peerlink_bench::gossip::payload(seq, size))
            .await?
        {
            sent.insert(seq, t);
        }
        tokio::time::sleep(interval).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids1: u64 = net
        .iter()
        .map(|n| n.ids_computed.load(Ordering::Relaxed))
        .sum();
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    let mut per_msg: HashMap<u64, Vec<Duration>> = HashMap::new();
    for (_, seq, at) in &log {
        if let Some(t0) = sent.get(seq) {
            per_msg
                .entry(*seq)
                .or_default()
                .push(at.duration_since(*t0));
        }
    }
    let (mut tta, mut lat, mut delivered) = (Vec::new(), Vec::new(), 0);
    for seq in sent.keys() {
        let got = per_msg.remove(seq).unwrap_or_default();
        delivered += got.len();
        if got.len() >= nodes - 1 {
            tta.push(got.iter().copied().max().unwrap_or_default());
        }
        lat.extend(got);
    }
    // Every id computation beyond the first copy of a message at a node
    // (and the publisher's own) is a duplicate copy.
    let unique = log.len() as u64 - delivered0;
    let dups = (ids1 - ids0).saturating_sub(unique + sent.len() as u64);
    Ok(GossipsubReport {
        nodes,
        messages: sent.len(),
        delivery: delivered as f64 / (sent.len().max(1) * (nodes - 1)) as f64,
        time_to_all: Latency::from_samples(tta),
        latency: Latency::from_samples(lat),
        duplicates_per_node_per_message: dups as f64 / (sent.len().max(1) * nodes) as f64,
    })
}
