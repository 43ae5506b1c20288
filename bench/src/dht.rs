//! DHT workloads on a real in-process testnet (real sockets, the tokio
//! driver, injected per-link delay): `peerlink bench dht` and
//! `peerlink bench bootstrap`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use peerlink_net::testnet::{Testnet, TestnetConfig};
use peerlink_net::{DhtKey, Node, PeerId};
use peerlink_proto::rng::Rng;
use serde::Serialize;

use crate::{rss_bytes, Latency};

#[derive(Clone, Debug)]
pub struct DhtBench {
    pub nodes: usize,
    pub link_delay: Duration,
    /// Records put (each by a random node) before the gets.
    pub records: usize,
    /// Gets and closest-peer lookups measured, each from a random node.
    pub queries: usize,
    /// Queries in flight at once across the network.
    pub concurrency: usize,
    /// Outbound DHT connections kept per node (the rest close, LRU).
    pub max_dht_connections: usize,
    pub seed: u64,
}

impl Default for DhtBench {
    fn default() -> Self {
        DhtBench {
            nodes: 100,
            link_delay: Duration::from_millis(20),
            records: 50,
            queries: 300,
            concurrency: 8,
            max_dht_connections: 32,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DhtReport {
    pub nodes: usize,
    pub link_delay_ms: f64,
    /// All nodes joined (bootstrap lookups done), first to last.
    pub join_s: f64,
    pub bootstrap: Latency,
    pub put: Latency,
    /// Peers that acknowledged each put, median.
    pub put_stored_p50: usize,
    pub get: Latency,
    pub get_success: f64,
    pub get_hops_p50: u32,
    pub lookup: Latency,
    pub lookup_hops_p50: u32,
    /// Open connections per node at the end.
    pub connections_per_node: f64,
    pub rss_per_node_bytes: u64,
}

fn median_u32(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Starts `b.nodes` nodes, puts `b.records` records, then measures gets of
/// random records and lookups of random keys from random nodes.
pub async fn dht(b: &DhtBench) -> Result<DhtReport> {
    if b.nodes < 2 {
        bail!("a DHT benchmark needs at least 2 nodes");
    }
    let rss0 = rss_bytes().unwrap_or(0);
    let mut config = TestnetConfig {
        nodes: b.nodes,
        link_delay: b.link_delay,
        ..TestnetConfig::default()
    };
    config.node.max_dht_connections = b.max_dht_connections;
    let net = Testnet::start(config).await?;
    let rss = rss_bytes().unwrap_or(0).saturating_sub(rss0);
    let mut rng = Rng::new(b.seed);
    let pick = |rng: &mut Rng| rng.below(net.nodes.len() as u64) as usize;

    // Puts, `concurrency` at a time.
    let mut put_times = Vec::new();
    let mut stored = Vec::new();
    let keys: Vec<String> = (0..b.records).map(|i| format!("bench-{i}")).collect();
    for chunk in keys.chunks(b.concurrency.max(1)) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|k| {
                let (node, k) = (net.nodes[pick(&mut rng)].clone(), k.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    let o = node.dht().put(&k, format!("value of {k}")).await?;
                    Ok::<_, anyhow::Error>((t.elapsed(), o.value))
                })
            })
            .collect();
        for t in tasks {
            let (d, s) = t.await??;
            put_times.push(d);
            stored.push(s as u32);
        }
    }

    // Gets of random records and lookups of random keys.
    let (mut get_times, mut get_hops, mut ok) = (Vec::new(), Vec::new(), 0usize);
    let (mut lookup_times, mut lookup_hops) = (Vec::new(), Vec::new());
    let mut left = b.queries;
    while left > 0 {
        let n = left.min(b.concurrency.max(1));
        left -= n;
        let mut tasks = Vec::new();
        for _ in 0..n {
            let node = net.nodes[pick(&mut rng)].clone();
            let key = keys
                .get(rng.below(keys.len().max(1) as u64) as usize)
                .cloned()
                .unwrap_or_default();
            let mut random = [0u8; 32];
            rng.fill(&mut random);
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let g = node.dht().get(&key).await?;
                let get_time = t.elapsed();
                let want = format!("value of {key}");
                let found = g.value.is_some_and(|r| r.value == want.as_bytes());
                let t = Instant::now();
                let l = node.dht().closest_peers(DhtKey(random)).await?;
                Ok::<_, anyhow::Error>((get_time, g.hops, found, t.elapsed(), l.hops))
            }));
        }
        for t in tasks {
            let (gt, gh, found, lt, lh) = t.await??;
            get_times.push(gt);
            get_hops.push(gh);
            ok += usize::from(found);
            lookup_times.push(lt);
            lookup_hops.push(lh);
        }
    }
    let connections: usize = net.nodes.iter().map(|n| n.peers().len()).sum();
    let report = DhtReport {
        nodes: b.nodes,
        link_delay_ms: b.link_delay.as_secs_f64() * 1e3,
        join_s: net.join_time.as_secs_f64(),
        bootstrap: Latency::from_samples(net.bootstrap_times.clone()),
        put: Latency::from_samples(put_times),
        put_stored_p50: median_u32(stored) as usize,
        get_success: ok as f64 / b.queries.max(1) as f64,
        get: Latency::from_samples(get_times),
        get_hops_p50: median_u32(get_hops),
        lookup: Latency::from_samples(lookup_times),
        lookup_hops_p50: median_u32(lookup_hops),
        connections_per_node: connections as f64 / b.nodes as f64,
        rss_per_node_bytes: rss / b.nodes as u64,
    };
    net.shutdown().await;
    Ok(report)
}

#[derive(Debug, Clone, Serialize)]
pub struct BootstrapReport {
    /// Nodes already in the network.
    pub nodes: usize,
    pub link_delay_ms: f64,
    pub joins: usize,
    /// Seed dialled to the self-lookup done.
    pub bootstrap: Latency,
    /// Seed dialled to a full routing table: every bucket holds
    /// min(k, nodes of the network that fall in it).
    pub full_table: Latency,
    /// Joins that reached a full table within 10 s.
    pub full_fraction: f64,
    /// Round trips the full table took, at this link delay.
    pub full_table_rtts_p50: Option<f64>,
}

/// The routing table a node with id `me` has when it knows everyone:
/// per bucket (shared prefix length), min(k, peers in it).
fn full_table_size(me: &PeerId, others: impl Iterator<Item = PeerId>, k: usize) -> usize {
    let mine = DhtKey::of_peer(me);
    let mut per_bucket = [0usize; 257];
    for o in others {
        let lz = mine.distance(&DhtKey::of_peer(&o)).leading_zeros();
        if let Some(c) = per_bucket.get_mut(lz) {
            *c += 1;
        }
    }
    per_bucket.iter().take(256).map(|c| (*c).min(k)).sum()
}

/// Joins `joins` fresh nodes, one at a time, to a running network of
/// `nodes` through one seed, timing the bootstrap and the fill of the
/// routing table.
pub async fn bootstrap(
    nodes: usize,
    link_delay: Duration,
    joins: usize,
) -> Result<BootstrapReport> {
    let config = TestnetConfig {
        nodes: nodes.max(1),
        link_delay,
        ..TestnetConfig::default()
    };
    let node_config = {
        let mut c = config.node.clone();
        c.link_delay = link_delay;
        c
    };
    let net = Testnet::start(config).await?;
    let seed = net.nodes[0]
        .addr()
        .ok_or_else(|| anyhow::anyhow!("seed has no address"))?;
    let ids: Vec<PeerId> = net.nodes.iter().map(Node::peer_id).collect();
    let (mut boot, mut full) = (Vec::new(), Vec::new());
    for _ in 0..joins {
        let node = Node::builder()
            .listen("127.0.0.1:0".parse()?)
            .config(node_config.clone())
            .build()
            .await?;
        let k = node_config.dht.as_ref().map_or(20, |d| d.k);
        let want = full_table_size(&node.peer_id(), ids.iter().copied(), k);
        let t = Instant::now();
        node.dht().bootstrap(vec![seed]).await?;
        boot.push(t.elapsed());
        let deadline = t + Duration::from_secs(10);
        loop {
            if node.dht().info().await?.routing_table >= want {
                full.push(t.elapsed());
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        node.shutdown().await;
    }
    net.shutdown().await;
    let full_fraction = full.len() as f64 / joins.max(1) as f64;
    let full_table = Latency::from_samples(full);
    let rtt_us = 2.0 * link_delay.as_secs_f64() * 1e6;
    Ok(BootstrapReport {
        nodes,
        link_delay_ms: link_delay.as_secs_f64() * 1e3,
        joins,
        bootstrap: Latency::from_samples(boot),
        full_table_rtts_p50: (rtt_us > 0.0 && full_table.samples > 0)
            .then(|| full_table.p50_us / rtt_us),
        full_table,
        full_fraction,
    })
}
