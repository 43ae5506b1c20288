//! `peerlink bench churn`: a real network in one process where a share of
//! the nodes is killed and restarted on its data directories, round after
//! round. Per round: how long the restarted nodes take to rejoin, how long
//! until gossip reaches every node again (the restarted ones included),
//! and how many records are lost (every node reads every record).
//!
//! Gossip resuming is measured from the moment the last restarted node
//! has rejoined: a node that survived publishes a fresh message every
//! 50 ms until one reaches all nodes; the time is that message's delivery
//! to the last node, counted from the first publish.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peerlink_net::testnet::TestnetConfig;
use peerlink_net::{Keypair, Node, PeerAddr, Subscription};
use serde::Serialize;

const TOPIC: &str = "churn";

#[derive(Clone, Debug)]
pub struct ChurnBench {
    pub nodes: usize,
    /// Share of the nodes killed and restarted each round.
    pub killed: f64,
    pub rounds: usize,
    pub link_delay: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChurnRound {
    pub killed: usize,
    /// From the first restart to the last restarted node's bootstrap.
    pub rejoin_ms: f64,
    /// From the first publish after the rejoin to a message at every node.
    pub gossip_resume_ms: f64,
    /// The same in gossip heartbeats.
    pub gossip_resume_heartbeats: f64,
    /// (node, record) reads that did not return the record.
    pub records_lost: usize,
    pub reads: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    pub nodes: usize,
    pub link_delay_ms: f64,
    pub rounds: Vec<ChurnRound>,
    /// CPU per restart over the rounds (rejoins, repair, republishing),
    /// the whole network's; memory per node at the end.
    pub usage: crate::Usage,
}

async fn start(kp: &Keypair, dir: &Path, seed: Option<PeerAddr>, delay: Duration) -> Result<Node> {
    let mut config = TestnetConfig::default().node;
    config.link_delay = delay;
    let node = Node::builder()
        .keypair(kp.clone())
        .listen("127.0.0.1:0".parse()?)
        .config(config)
        .data_dir(dir)
        .build()
        .await?;
    if let Some(seed) = seed {
        node.dht().bootstrap(vec![seed]).await?;
    }
    Ok(node)
}

/// Publishes from `from` every 50 ms until one message reaches every
/// subscriber; returns the time from the first publish to that message's
/// arrival at the last node. Gives up after `limit`.
async fn time_to_resume(
    nodes: &[Node],
    subs: &mut [Subscription],
    from: usize,
    round: usize,
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut seen: Vec<std::collections::HashSet<u64>> = vec![Default::default(); nodes.len()];
    let mut seq = 0u64;
    while started.elapsed() < limit {
        seq += 1;
        let payload = format!("round {round} message {seq}");
        nodes[from].gossip().publish(TOPIC, payload).await?;
        let until = tokio::time::Instant::now() + Duration::from_millis(50);
        for (i, sub) in subs.iter_mut().enumerate() {
            while let Ok(Some(m)) = tokio::time::timeout_at(until, sub.recv()).await {
                let text = String::from_utf8_lossy(&m.data).to_string();
                if let Some(n) = text.strip_prefix(&format!("round {round} message ")) {
                    if let Ok(n) = n.parse() {
                        seen[i].insert(n);
                    }
                }
            }
        }
        let everyone =
            (1..=seq).find(|n| (0..nodes.len()).all(|i| i == from || seen[i].contains(n)));
        if everyone.is_some() {
            return Ok(started.elapsed());
        }
    }
    bail!("gossip did not reach every node within {limit:?}")
}

pub async fn churn(b: &ChurnBench) -> Result<ChurnReport> {
    if b.nodes < 4 {
        bail!("churn needs at least 4 nodes");
    }
    let root = tempfile::tempdir()?;
    let keys: Vec<Keypair> = (0..b.nodes)
        .map(|_| Keypair::generate())
        .collect::<Result<_, _>>()?;
    let dirs: Vec<PathBuf> = (0..b.nodes)
        .map(|i| root.path().join(format!("n{i}")))
        .collect();
    let mut meter = crate::Meter::new();
    let mut nodes = vec![start(&keys[0], &dirs[0], None, b.link_delay).await?];
    let seed = nodes[0].addr().context("the seed has no address")?;
    for chunk in (1..b.nodes).collect::<Vec<_>>().chunks(16) {
        let joins = chunk.iter().map(|&i| {
            let (kp, dir, delay) = (keys[i].clone(), dirs[i].clone(), b.link_delay);
            tokio::spawn(async move { start(&kp, &dir, Some(seed), delay).await })
        });
        for j in joins.collect::<Vec<_>>() {
            nodes.push(j.await??);
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        n.dht()
            .put(format!("churn-{i}"), format!("value {i}"))
            .await?;
    }
    let mut subs: Vec<Subscription> = nodes
        .iter()
        .map(|n| n.gossip().subscribe(TOPIC))
        .collect::<Result<_, _>>()?;
    time_to_resume(&nodes, &mut subs, 0, usize::MAX, Duration::from_secs(30)).await?;
    let count = ((b.nodes as f64 * b.killed) as usize).clamp(1, b.nodes - 2);
    let heartbeat = peerlink_net::GossipConfig::default().heartbeat;
    let mut rounds = Vec::new();
    meter.start();
    for round in 0..b.rounds {
        // Never the seed; a different set each round.
        let killed: Vec<usize> = (0..count)
            .map(|k| 1 + (k * 3 + round) % (b.nodes - 1))
            .collect();
        for &i in &killed {
            nodes[i].shutdown().await;
        }
        let t = Instant::now();
        let restarts = killed.iter().map(|&i| {
            let (kp, dir, delay) = (keys[i].clone(), dirs[i].clone(), b.link_delay);
            tokio::spawn(async move { start(&kp, &dir, Some(seed), delay).await })
        });
        let restarted: Vec<Node> = {
            let mut v = Vec::new();
            for r in restarts.collect::<Vec<_>>() {
                v.push(r.await??);
            }
            v
        };
        let rejoin = t.elapsed();
        for (&i, node) in killed.iter().zip(restarted) {
            subs[i] = node.gossip().subscribe(TOPIC)?;
            nodes[i] = node;
        }
        let from = (0..b.nodes).find(|i| !killed.contains(i)).unwrap_or(0);
        let resume =
            time_to_resume(&nodes, &mut subs, from, round, Duration::from_secs(30)).await?;
        // Every node reads every record (nodes in parallel).
        let reads_per_node = b.nodes;
        let readers = nodes.iter().map(|n| {
            let n = n.clone();
            tokio::spawn(async move {
                let mut lost = 0;
                for j in 0..reads_per_node {
                    let got = n.dht().get(format!("churn-{j}")).await;
                    let want = bytes::Bytes::from(format!("value {j}"));
                    if got.ok().and_then(|g| g.value).map(|r| r.value) != Some(want) {
                        lost += 1;
                    }
                }
                lost
            })
        });
        let mut lost = 0;
        for r in readers.collect::<Vec<_>>() {
            lost += r.await?;
        }
        let reads = b.nodes * reads_per_node;
        rounds.push(ChurnRound {
            killed: count,
            rejoin_ms: rejoin.as_secs_f64() * 1e3,
            gossip_resume_ms: resume.as_secs_f64() * 1e3,
            gossip_resume_heartbeats: resume.as_secs_f64() / heartbeat.as_secs_f64(),
            records_lost: lost,
            reads,
        });
    }
    let restarts = (count * b.rounds) as u64;
    let usage = meter.finish(b.nodes, "node killed and restarted", restarts);
    for n in &nodes {
        n.shutdown().await;
    }
    Ok(ChurnReport {
        nodes: b.nodes,
        link_delay_ms: b.link_delay.as_secs_f64() * 1e3,
        rounds,
        usage,
    })
}
