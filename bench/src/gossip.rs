//! `peerlink bench gossip`: topic gossip on a real testnet (real sockets,
//! the tokio driver, injected per-link delay), spread over several
//! processes beyond `nodes_per_process`.
//!
//! Every node subscribes to one topic; after the mesh forms and one
//! warm-up message, random nodes publish numbered messages at a fixed
//! interval. Each node logs when it received which message (Unix time:
//! the processes share the machine's clock). Reported: delivery, time
//! until the last node had a message (p50/p99 over messages), per-node
//! latency, and full copies beyond the first per node per message.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use peerlink_proto::rng::Rng;
use serde::Serialize;

use crate::dht::{join_all, scatter, Cmd, Delivery, Network, Reply};
use crate::{Latency, Meter, Usage};

const TOPIC: &str = "bench";

/// A benchmark message: its number in the first 8 bytes, `size` bytes in
/// all (at least 8).
pub fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size.max(8)];
    data[..8].copy_from_slice(&seq.to_le_bytes());
    data
}

/// The number of a benchmark message ([`payload`]).
pub fn payload_seq(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

#[derive(Clone, Debug)]
pub struct GossipBench {
    pub nodes: usize,
    pub link_delay: Duration,
    pub messages: usize,
    pub size: usize,
    /// Time between two publishes.
    pub interval: Duration,
    pub nodes_per_process: usize,
    pub seed: u64,
}

impl Default for GossipBench {
    fn default() -> Self {
        GossipBench {
            nodes: 50,
            link_delay: Duration::from_millis(20),
            messages: 50,
            size: 1024,
            interval: Duration::from_millis(50),
            nodes_per_process: 100,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GossipReport {
    pub nodes: usize,
    pub processes: usize,
    pub link_delay_ms: f64,
    pub messages: usize,
    pub size: usize,
    /// Deliveries over messages × (nodes − 1).
    pub delivery: f64,
    /// Per message: publish until the last node had it.
    pub time_to_all: Latency,
    /// Per delivery: publish until that node had it.
    pub latency: Latency,
    pub duplicates_per_node_per_message: f64,
    pub hops_p50: u32,
    /// Peers each publish went to, median.
    pub publish_peers_p50: usize,
    pub join_s: f64,
    /// CPU per delivered message and memory per node, the whole network.
    pub usage: Usage,
}

pub async fn gossip(b: &GossipBench) -> Result<GossipReport> {
    if b.nodes < 2 {
        bail!("a gossip benchmark needs at least 2 nodes");
    }
    let per = b.nodes_per_process.max(1);
    let max_dht = peerlink_net::NodeConfig::default().max_dht_connections;
    let mut meter = Meter::new();
    let net = Network::start(b.nodes, per, b.link_delay, max_dht).await?;
    let shards = net.shards;
    join_all(
        &shards,
        Cmd::Subscribe {
            topic: TOPIC.into(),
        },
    )
    .await?;
    // Subscriptions and grafts cross in a round trip; leave a few.
    tokio::time::sleep(b.link_delay * 10 + Duration::from_millis(200)).await;
    let mut rng = Rng::new(b.seed);
    let publish = |items: Vec<(usize, u64)>| Cmd::Publish {
        topic: TOPIC.into(),
        size: b.size,
        items,
    };
    // Warm-up: the first message floods the mesh and its duplicates
    // choke redundant links.
    scatter(&shards, per, &[(0, u64::MAX)], |i| i.0, &publish).await?;
    tokio::time::sleep(b.link_delay * 20 + Duration::from_millis(500)).await;
    let dups0 = deliveries(&shards).await?.1;
    meter.start();

    let mut sent: HashMap<u64, (u64, usize)> = HashMap::new();
    let mut peers = Vec::new();
    for seq in 0..b.messages as u64 {
        let from = rng.below(b.nodes as u64) as usize;
        for reply in scatter(&shards, per, &[(from, seq)], |i| i.0, &publish).await? {
            if let Reply::Published { samples } = reply {
                for (at, p) in samples {
                    sent.insert(seq, (at, from));
                    peers.push(p);
                }
            }
        }
        tokio::time::sleep(b.interval).await;
    }
    tokio::time::sleep(b.link_delay * 30 + Duration::from_secs(1)).await;
    let (log, dups1) = deliveries(&shards).await?;
    let logged = log.len() as u64;
    let usage = meter.finish(b.nodes, "delivered message", logged);
    join_all(&shards, Cmd::Quit).await?;

    let mut per_msg: HashMap<u64, Vec<(u64, u8)>> = HashMap::new();
    for (_, seq, at, hops) in log {
        if let Some((t0, _)) = sent.get(&seq) {
            per_msg
                .entry(seq)
                .or_default()
                .push((at.saturating_sub(*t0), hops));
        }
    }
    let (mut tta, mut lat, mut hops) = (Vec::new(), Vec::new(), Vec::new());
    let mut delivered = 0;
    for seq in sent.keys() {
        let got = per_msg.get(seq).map(Vec::as_slice).unwrap_or(&[]);
        delivered += got.len();
        for (ns, h) in got {
            lat.push(Duration::from_nanos(*ns));
            hops.push(*h as u32);
        }
        if got.len() >= b.nodes - 1 {
            tta.push(Duration::from_nanos(
                got.iter().map(|x| x.0).max().unwrap_or(0),
            ));
        }
    }
    hops.sort_unstable();
    peers.sort_unstable();
    let expected = (sent.len() * (b.nodes - 1)).max(1);
    Ok(GossipReport {
        nodes: b.nodes,
        processes: shards.len(),
        link_delay_ms: b.link_delay.as_secs_f64() * 1e3,
        messages: sent.len(),
        size: b.size,
        delivery: delivered as f64 / expected as f64,
        time_to_all: Latency::from_samples(tta),
        latency: Latency::from_samples(lat),
        duplicates_per_node_per_message: (dups1 - dups0) as f64
            / (sent.len().max(1) * b.nodes) as f64,
        hops_p50: hops.get(hops.len() / 2).copied().unwrap_or(0),
        publish_peers_p50: peers.get(peers.len() / 2).copied().unwrap_or(0),
        join_s: net.join.as_secs_f64(),
        usage,
    })
}

/// Every shard's log since the last call, and the network's duplicates
/// so far.
async fn deliveries(shards: &[crate::dht::ShardHandle]) -> Result<(Vec<Delivery>, u64)> {
    let (mut log, mut dups) = (Vec::new(), 0);
    for reply in join_all(shards, Cmd::Deliveries).await? {
        if let Reply::Deliveries { items, duplicates } = reply {
            log.extend(items);
            dups += duplicates;
        }
    }
    Ok((log, dups))
}
