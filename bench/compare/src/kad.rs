//! The DHT workload of `peerlink bench dht` on rust-libp2p kad (tcp +
//! noise + yamux, memory record store), so both run in one invocation.
//!
//! Same plan as peerlink's: N nodes join through node 0 (16 at a time),
//! records are put from random nodes, then gets of random records and
//! closest-peer lookups of random keys run from random nodes, a fixed
//! number in flight. A get counts as done at its first record (peerlink's
//! get also stops at the first valid record). Links are loopback with no
//! injected delay: rust-libp2p has no hook for one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore, GetRecordOk, Mode, QueryId, QueryResult};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId};
use peerlink_bench::Latency;
use peerlink_proto::rng::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

enum Cmd {
    Bootstrap(PeerId, Multiaddr, oneshot::Sender<bool>),
    Put(String, String, oneshot::Sender<bool>),
    Get(String, oneshot::Sender<Option<Vec<u8>>>),
    Closest([u8; 32], oneshot::Sender<usize>),
    Peers(oneshot::Sender<usize>),
}

enum Pending {
    Bootstrap(oneshot::Sender<bool>),
    Put(oneshot::Sender<bool>),
    Get(oneshot::Sender<Option<Vec<u8>>>),
    Closest(oneshot::Sender<usize>),
}

/// kad with identify, as rust-libp2p's own examples set it up: kad learns
/// an inbound peer's listen addresses only from identify.
#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

/// One kad node driven by its own task.
struct KadNode {
    id: PeerId,
    addr: Multiaddr,
    tx: mpsc::UnboundedSender<Cmd>,
}

impl KadNode {
    async fn start() -> Result<KadNode> {
        let behaviour = |key: &libp2p::identity::Keypair| {
            let id = key.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                id,
                MemoryStore::new(id),
                kad::Config::new(kad::PROTOCOL_NAME),
            );
            // Without confirmed external addresses kad stays a client
            // and nobody could store records on it.
            kad.set_mode(Some(Mode::Server));
            let identify = identify::Behaviour::new(identify::Config::new(
                "/ipfs/id/1.0.0".into(),
                key.public(),
            ));
            Ok(Behaviour { kad, identify })
        };
        // Like peerlink's testnet: idle connections close after 30 s.
        let mut swarm = crate::tcp_swarm(behaviour, Duration::from_secs(30))?;
        let addr = crate::listen_loopback(&mut swarm).await?;
        let id = *swarm.local_peer_id();
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        tokio::spawn(async move {
            let mut pending: HashMap<QueryId, Pending> = HashMap::new();
            loop {
                tokio::select! {
                    cmd = rx.recv() => {
                        let Some(cmd) = cmd else { break };
                        let kad = &mut swarm.behaviour_mut().kad;
                        match cmd {
                            Cmd::Bootstrap(peer, addr, reply) => {
                                kad.add_address(&peer, addr);
                                match kad.bootstrap() {
                                    Ok(q) => { pending.insert(q, Pending::Bootstrap(reply)); }
                                    Err(_) => { let _ = reply.send(false); }
                                }
                            }
                            Cmd::Put(key, value, reply) => {
                                let record = kad::Record::new(kad::RecordKey::new(&key), value.into_bytes());
                                match kad.put_record(record, kad::Quorum::One) {
                                    Ok(q) => { pending.insert(q, Pending::Put(reply)); }
                                    Err(_) => { let _ = reply.send(false); }
                                }
                            }
                            Cmd::Get(key, reply) => {
                                let q = kad.get_record(kad::RecordKey::new(&key));
                                pending.insert(q, Pending::Get(reply));
                            }
                            Cmd::Closest(key, reply) => {
                                let q = kad.get_closest_peers(key.to_vec());
                                pending.insert(q, Pending::Closest(reply));
                            }
                            Cmd::Peers(reply) => {
                                let _ = reply.send(swarm.network_info().num_peers());
                            }
                        }
                    }
                    event = swarm.select_next_some() => {
                        let (id, result, step) = match event {
                            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                                for addr in info.listen_addrs {
                                    swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                                }
                                continue;
                            }
                            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. })) => (id, result, step),
                            _ => continue,
                        };
                        match (result, pending.remove(&id)) {
                            (QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(r))), Some(Pending::Get(reply))) => {
                                let _ = reply.send(Some(r.record.value));
                                if let Some(mut q) = swarm.behaviour_mut().kad.query_mut(&id) {
                                    q.finish();
                                }
                            }
                            (_, Some(p)) if !step.last => { pending.insert(id, p); }
                            (QueryResult::Bootstrap(r), Some(Pending::Bootstrap(reply))) => { let _ = reply.send(r.is_ok()); }
                            (QueryResult::PutRecord(r), Some(Pending::Put(reply))) => { let _ = reply.send(r.is_ok()); }
                            (QueryResult::GetRecord(_), Some(Pending::Get(reply))) => { let _ = reply.send(None); }
                            (QueryResult::GetClosestPeers(r), Some(Pending::Closest(reply))) => {
                                let _ = reply.send(r.map_or(0, |ok| ok.peers.len()));
                            }
                            _ => {}
                        }
                    }
                }
            }
        });
        Ok(KadNode { id, addr, tx })
    }

    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(cmd(reply))
            .map_err(|_| anyhow::anyhow!("kad node stopped"))?;
        rx.await.context("kad query dropped")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KadReport {
    pub nodes: usize,
    pub join_s: f64,
    pub bootstrap: Latency,
    pub bootstrap_ok: f64,
    pub put: Latency,
    pub get: Latency,
    pub get_success: f64,
    pub closest: Latency,
    /// Connected peers per node at the end.
    pub connections_per_node: f64,
    pub rss_per_node_bytes: u64,
}

/// Runs the workload on `nodes` kad nodes.
pub async fn run(
    nodes: usize,
    records: usize,
    queries: usize,
    concurrency: usize,
    seed: u64,
) -> Result<KadReport> {
    if nodes < 2 {
        bail!("a DHT benchmark needs at least 2 nodes");
    }
    let rss0 = peerlink_bench::rss_bytes().unwrap_or(0);
    let mut net = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        net.push(KadNode::start().await?);
    }
    let (seed_id, seed_addr) = (net[0].id, net[0].addr.clone());
    let started = Instant::now();
    let (mut boot, mut boot_ok) = (Vec::new(), 0usize);
    let net = std::sync::Arc::new(net);
    for chunk in (1..nodes).collect::<Vec<_>>().chunks(16) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let (net, addr) = (net.clone(), seed_addr.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    let ok = net[i].ask(|r| Cmd::Bootstrap(seed_id, addr, r)).await?;
                    Ok::<_, anyhow::Error>((t.elapsed(), ok))
                })
            })
            .collect();
        for t in tasks {
            let (d, ok) = t.await??;
            boot.push(d);
            boot_ok += usize::from(ok);
        }
    }
    let join_s = started.elapsed().as_secs_f64();
    let rss = peerlink_bench::rss_bytes()
        .unwrap_or(0)
        .saturating_sub(rss0);

    let mut rng = Rng::new(seed);
    let pick = |rng: &mut Rng| rng.below(nodes as u64) as usize;
    let batch = concurrency.max(1);
    let mut put = Vec::new();
    for chunk in (0..records).collect::<Vec<_>>().chunks(batch) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&r| {
                let (net, n) = (net.clone(), pick(&mut rng));
                tokio::spawn(async move {
                    let t = Instant::now();
                    let key = format!("bench-{r}");
                    let value = format!("value of {key}");
                    net[n].ask(|reply| Cmd::Put(key, value, reply)).await?;
                    Ok::<_, anyhow::Error>(t.elapsed())
                })
            })
            .collect();
        for t in tasks {
            put.push(t.await??);
        }
    }
    let (mut get, mut closest, mut found) = (Vec::new(), Vec::new(), 0usize);
    let mut left = queries;
    while left > 0 {
        let n = left.min(batch);
        left -= n;
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (net, node) = (net.clone(), pick(&mut rng));
                let r = rng.below(records.max(1) as u64);
                let mut random = [0u8; 32];
                rng.fill(&mut random);
                tokio::spawn(async move {
                    let key = format!("bench-{r}");
                    let t = Instant::now();
                    let value = net[node].ask(|reply| Cmd::Get(key.clone(), reply)).await?;
                    let get = t.elapsed();
                    let ok = value.is_some_and(|v| v == format!("value of {key}").as_bytes());
                    let t = Instant::now();
                    net[node].ask(|reply| Cmd::Closest(random, reply)).await?;
                    Ok::<_, anyhow::Error>((get, ok, t.elapsed()))
                })
            })
            .collect();
        for t in tasks {
            let (g, ok, c) = t.await??;
            get.push(g);
            found += usize::from(ok);
            closest.push(c);
        }
    }
    let mut connections = 0;
    for n in net.iter() {
        connections += n.ask(Cmd::Peers).await?;
    }
    Ok(KadReport {
        nodes,
        join_s,
        bootstrap: Latency::from_samples(boot),
        bootstrap_ok: boot_ok as f64 / (nodes - 1) as f64,
        put: Latency::from_samples(put),
        get: Latency::from_samples(get),
        get_success: found as f64 / queries.max(1) as f64,
        closest: Latency::from_samples(closest),
        connections_per_node: connections as f64 / nodes as f64,
        rss_per_node_bytes: rss / nodes as u64,
    })
}
