//! A real network of N nodes in one process, for tests, `peerlink devnet`
//! and benchmarks: real sockets, real handshakes, the tokio driver, with
//! an optional injected one-way delay on every link.
//!
//! Node 0 is the seed; the others join through it (DHT bootstrap), a few
//! at a time so the seed is not flooded with handshakes. With
//! [`TestnetConfig::seed`] set, every node joins through that address
//! instead: this is how one network spreads over several processes (one
//! process holds at most ~20,000 descriptors, and a loopback connection
//! between two of its nodes costs two).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{
    KeepaliveConfig, Limits, NetError, Node, NodeConfig, PeerAddr, Transport, TransportAddr,
};

#[derive(Clone, Debug)]
pub struct TestnetConfig {
    pub nodes: usize,
    /// One-way delay injected on every link.
    pub link_delay: Duration,
    /// The node configuration (limits are raised for loopback).
    pub node: NodeConfig,
    /// Nodes joining at once.
    pub join_concurrency: usize,
    /// Join an existing network through this node instead of making node 0
    /// the seed.
    pub seed: Option<PeerAddr>,
    /// What the nodes listen on (and so dial each other over).
    pub transport: Transport,
}

impl Default for TestnetConfig {
    fn default() -> Self {
        let node = NodeConfig {
            limits: Limits {
                max_per_ip: usize::MAX,
                max_inbound: 4096,
                max_peers: 4096,
                max_pending_handshakes: 256,
                // Every node dials from 127.0.0.1.
                max_pending_per_ip: 256,
                max_pending_per_prefix: 256,
                ..Limits::default()
            },
            // Connect on demand: idle connections close.
            keepalive: KeepaliveConfig {
                idle_timeout: Some(Duration::from_secs(30)),
                ..KeepaliveConfig::default()
            },
            // Below the node default (64) so that 200 nodes fit one
            // process's descriptors.
            max_dht_connections: 64,
            // One address for every node: ban peers, never the address.
            ip_ban_strikes: 0,
            // One address for the whole network: DHT quotas per prefix off.
            dht: Some(peerlink_proto::dht::DhtConfig::default().shared_address()),
            ..NodeConfig::default()
        };
        TestnetConfig {
            nodes: 10,
            link_delay: Duration::ZERO,
            node,
            join_concurrency: 16,
            seed: None,
            transport: Transport::Tcp,
        }
    }
}

pub struct Testnet {
    pub nodes: Vec<Node>,
    /// Time from the first bootstrap to the last one finishing.
    pub join_time: Duration,
    /// Per-node bootstrap durations.
    pub bootstrap_times: Vec<Duration>,
}

impl Testnet {
    /// Starts the nodes and bootstraps every one into the DHT.
    pub async fn start(config: TestnetConfig) -> Result<Testnet, NetError> {
        let mut node_config = config.node.clone();
        node_config.link_delay = config.link_delay;
        let socket: SocketAddr = "127.0.0.1:0".parse().map_err(|_| NetError::Shutdown)?;
        let listen = TransportAddr {
            transport: config.transport,
            socket,
        };
        let mut nodes = Vec::with_capacity(config.nodes);
        for _ in 0..config.nodes.max(1) {
            nodes.push(
                Node::builder()
                    .listen_on(listen)
                    .config(node_config.clone())
                    .build()
                    .await?,
            );
        }
        let (seed, joining) = match config.seed {
            Some(seed) => (seed, &nodes[..]),
            None => (nodes[0].addr().ok_or(NetError::Shutdown)?, &nodes[1..]),
        };
        let started = Instant::now();
        let mut bootstrap_times = Vec::with_capacity(nodes.len());
        for chunk in joining.chunks(config.join_concurrency.max(1)) {
            let joins = chunk.iter().map(|n| {
                let n = n.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    n.dht().bootstrap(vec![seed]).await.map(|_| t.elapsed())
                })
            });
            for j in joins.collect::<Vec<_>>() {
                bootstrap_times.push(j.await.map_err(|_| NetError::Shutdown)??);
            }
        }
        Ok(Testnet {
            nodes,
            join_time: started.elapsed(),
            bootstrap_times,
        })
    }

    pub async fn shutdown(&self) {
        for n in &self.nodes {
            n.shutdown().await;
        }
    }
}
