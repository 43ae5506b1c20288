//! DHT workloads on a real testnet (real sockets, the tokio driver,
//! injected per-link delay): `peerlink bench dht` and `peerlink bench
//! bootstrap`; and the testnet shards that spread a network over several
//! processes, which `peerlink bench gossip` uses too.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peerlink_net::testnet::{Testnet, TestnetConfig};
use peerlink_net::{DhtKey, Node, PeerId};
use peerlink_proto::rng::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::{rss_bytes, Latency, Meter, Usage};

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
    /// DHT connections kept per node (the least recently used beyond this
    /// close once idle).
    pub max_dht_connections: usize,
    /// Nodes per process: beyond this the network spreads over child
    /// processes (`peerlink bench dht-shard`), because one process may
    /// hold only so many descriptors.
    pub nodes_per_process: usize,
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
            // What a node gets by default (the testnet's own default is
            // lower, so that its 200-node test fits one process).
            max_dht_connections: peerlink_net::NodeConfig::default().max_dht_connections,
            nodes_per_process: 100,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DhtReport {
    pub nodes: usize,
    pub processes: usize,
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
    /// CPU per operation over the puts, gets and lookups, and memory per
    /// node at their end: the whole network (every shard process).
    pub usage: Usage,
}

fn median_u32(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The key every benchmark record `i` is stored under, and its value.
fn record(i: usize) -> (String, String) {
    (format!("bench-{i}"), format!("value of bench-{i}"))
}

/// How one share of the network is started: `nodes` nodes numbered from
/// `first`, joining through `seed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardSpec {
    pub first: usize,
    pub nodes: usize,
    /// The seed as `id@ip:port`.
    pub seed: String,
    pub link_delay_us: u64,
    pub max_dht_connections: usize,
}

/// What the coordinator asks a shard to do; nodes are named by their
/// network-wide index.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Cmd {
    /// Node `.0` puts record `.1`.
    Put {
        items: Vec<(usize, usize)>,
    },
    /// Node `.0` gets record `.1`, then looks up the random key `.2`.
    Query {
        items: Vec<(usize, usize, [u8; 32])>,
    },
    Stats,
    /// Every node of the shard subscribes to `topic` and records what it
    /// receives.
    Subscribe {
        topic: String,
    },
    /// Node `.0` publishes message number `.1`, `size` bytes, on `topic`.
    Publish {
        topic: String,
        size: usize,
        items: Vec<(usize, u64)>,
    },
    /// What the shard's nodes received since the last call.
    Deliveries,
    Quit,
}

/// One message received by one node: node, message number, when (Unix
/// time in ns: the shards share the machine's clock) and hops.
pub(crate) type Delivery = (usize, u64, u64, u8);

pub(crate) fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct QuerySample {
    get_us: u64,
    get_hops: u32,
    found: bool,
    lookup_us: u64,
    lookup_hops: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub(crate) enum Reply {
    Ready {
        bootstrap_us: Vec<u64>,
        rss: u64,
    },
    Put {
        samples: Vec<(u64, usize)>,
    },
    Query {
        samples: Vec<QuerySample>,
    },
    Stats {
        connections: usize,
    },
    /// Per publish: Unix time (ns) and peers it went to.
    Published {
        samples: Vec<(u64, usize)>,
    },
    Deliveries {
        items: Vec<Delivery>,
        duplicates: u64,
    },
    Done,
    Failed {
        error: String,
    },
}

/// The nodes of one process.
pub(crate) struct Shard {
    first: usize,
    nodes: Vec<Node>,
    deliveries: Arc<std::sync::Mutex<Vec<Delivery>>>,
}

impl Shard {
    fn new(first: usize, nodes: Vec<Node>) -> Shard {
        Shard {
            first,
            nodes,
            deliveries: Arc::default(),
        }
    }

    fn node(&self, global: usize) -> Result<Node> {
        global
            .checked_sub(self.first)
            .and_then(|i| self.nodes.get(i))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("node {global} is not in this shard"))
    }

    /// Runs every item of `cmd` at once and returns the samples in order.
    async fn handle(&self, cmd: Cmd) -> Result<Reply> {
        Ok(match cmd {
            Cmd::Put { items } => {
                let mut tasks = Vec::new();
                for (n, r) in items {
                    let node = self.node(n)?;
                    tasks.push(tokio::spawn(async move {
                        let (key, value) = record(r);
                        let t = Instant::now();
                        let o = node.dht().put(&key, value).await?;
                        Ok::<_, anyhow::Error>((us(t.elapsed()), o.value))
                    }));
                }
                Reply::Put {
                    samples: all(tasks).await?,
                }
            }
            Cmd::Query { items } => {
                let mut tasks = Vec::new();
                for (n, r, random) in items {
                    let node = self.node(n)?;
                    tasks.push(tokio::spawn(async move {
                        let (key, value) = record(r);
                        let t = Instant::now();
                        let g = node.dht().get(&key).await?;
                        let get_us = us(t.elapsed());
                        let found = g.value.is_some_and(|r| r.value == value.as_bytes());
                        let t = Instant::now();
                        let l = node.dht().closest_peers(DhtKey(random)).await?;
                        Ok::<_, anyhow::Error>(QuerySample {
                            get_us,
                            get_hops: g.hops,
                            found,
                            lookup_us: us(t.elapsed()),
                            lookup_hops: l.hops,
                        })
                    }));
                }
                Reply::Query {
                    samples: all(tasks).await?,
                }
            }
            Cmd::Stats => Reply::Stats {
                connections: self.nodes.iter().map(|n| n.peers().len()).sum(),
            },
            Cmd::Subscribe { topic } => {
                for (i, node) in self.nodes.iter().enumerate() {
                    let mut sub = node.gossip().subscribe(&topic)?;
                    let log = self.deliveries.clone();
                    let global = self.first + i;
                    tokio::spawn(async move {
                        while let Some(m) = sub.recv().await {
                            let at = unix_ns();
                            let seq = crate::gossip::payload_seq(&m.data);
                            if let (Some(seq), Ok(mut log)) = (seq, log.lock()) {
                                log.push((global, seq, at, m.hops));
                            }
                        }
                    });
                }
                Reply::Done
            }
            Cmd::Publish { topic, size, items } => {
                let mut tasks = Vec::new();
                for (n, seq) in items {
                    let node = self.node(n)?;
                    let topic = topic.clone();
                    tasks.push(tokio::spawn(async move {
                        let data = crate::gossip::payload(seq, size);
                        let at = unix_ns();
                        let p = node.gossip().publish(&topic, data).await?;
                        Ok::<_, anyhow::Error>((at, p.peers))
                    }));
                }
                Reply::Published {
                    samples: all(tasks).await?,
                }
            }
            Cmd::Deliveries => {
                let items = self
                    .deliveries
                    .lock()
                    .map(|mut v| std::mem::take(&mut *v))
                    .unwrap_or_default();
                let mut duplicates = 0;
                for n in &self.nodes {
                    duplicates += n.gossip().info().await?.stats.duplicates;
                }
                Reply::Deliveries { items, duplicates }
            }
            Cmd::Quit => {
                for n in &self.nodes {
                    n.shutdown().await;
                }
                Reply::Done
            }
        })
    }
}

type Call = (Cmd, oneshot::Sender<Result<Reply>>);

/// A shard in this process or in a child process (JSON lines over its
/// stdin and stdout).
#[derive(Clone)]
pub(crate) enum ShardHandle {
    Local(Arc<Shard>),
    Remote(mpsc::Sender<Call>),
}

impl ShardHandle {
    async fn call(self, cmd: Cmd) -> Result<Reply> {
        let reply = match self {
            ShardHandle::Local(shard) => shard.handle(cmd).await?,
            ShardHandle::Remote(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send((cmd, reply))
                    .await
                    .map_err(|_| anyhow::anyhow!("a shard process exited"))?;
                rx.await
                    .map_err(|_| anyhow::anyhow!("a shard process exited"))??
            }
        };
        if let Reply::Failed { error } = reply {
            bail!("shard: {error}");
        }
        Ok(reply)
    }

    /// Starts `peerlink bench dht-shard SPEC` and waits until its nodes
    /// have joined.
    async fn spawn(exe: &Path, spec: &ShardSpec) -> Result<(ShardHandle, Vec<u64>, u64)> {
        let mut child = tokio::process::Command::new(exe)
            .args(SHARD_COMMAND)
            .arg(serde_json::to_string(spec)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("shard process has no pipes");
        };
        let mut lines = BufReader::new(stdout).lines();
        let read = |line: Option<String>| -> Result<Reply> {
            let line = line.ok_or_else(|| anyhow::anyhow!("a shard process exited"))?;
            Ok(serde_json::from_str(&line)?)
        };
        // Joining 100 nodes at 20 ms links takes ~30 s on 2 cores.
        let ready = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("a shard did not join within 10 minutes"))?;
        let (bootstrap_us, rss) = match read(ready?)? {
            Reply::Ready { bootstrap_us, rss } => (bootstrap_us, rss),
            Reply::Failed { error } => bail!("shard failed to start: {error}"),
            other => bail!("shard sent {other:?} before it was ready"),
        };
        let (tx, mut rx) = mpsc::channel::<Call>(1);
        tokio::spawn(async move {
            let _child = child;
            while let Some((cmd, reply)) = rx.recv().await {
                let result = async {
                    let mut line = serde_json::to_string(&cmd)?;
                    line.push('\n');
                    stdin.write_all(line.as_bytes()).await?;
                    read(lines.next_line().await?)
                }
                .await;
                let _ = reply.send(result);
            }
        });
        Ok((ShardHandle::Remote(tx), bootstrap_us, rss))
    }
}

/// The arguments that make the `peerlink` binary serve one shard
/// ([`serve_shard`]).
pub const SHARD_COMMAND: [&str; 2] = ["bench", "dht-shard"];

/// A shard process: starts the nodes of `spec`, joins them through the
/// seed, prints `ready`, then answers one command per stdin line on stdout
/// until `quit` or end of input.
pub async fn serve_shard(spec: &str) -> Result<()> {
    let spec: ShardSpec = serde_json::from_str(spec).context("shard spec")?;
    let mut out = tokio::io::stdout();
    let rss0 = rss_bytes().unwrap_or(0);
    let mut config = TestnetConfig {
        nodes: spec.nodes,
        link_delay: Duration::from_micros(spec.link_delay_us),
        seed: Some(spec.seed.parse().context("shard seed")?),
        ..TestnetConfig::default()
    };
    config.node.max_dht_connections = spec.max_dht_connections;
    let net = match Testnet::start(config).await {
        Ok(net) => net,
        Err(e) => {
            say(
                &mut out,
                &Reply::Failed {
                    error: e.to_string(),
                },
            )
            .await?;
            return Err(e.into());
        }
    };
    say(
        &mut out,
        &Reply::Ready {
            bootstrap_us: net.bootstrap_times.iter().copied().map(us).collect(),
            rss: rss_bytes().unwrap_or(0).saturating_sub(rss0),
        },
    )
    .await?;
    let shard = Shard::new(spec.first, net.nodes);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let cmd: Cmd = serde_json::from_str(&line).context("shard command")?;
        let quit = matches!(cmd, Cmd::Quit);
        let reply = shard.handle(cmd).await.unwrap_or_else(|e| Reply::Failed {
            error: format!("{e:#}"),
        });
        say(&mut out, &reply).await?;
        if quit {
            break;
        }
    }
    Ok(())
}

async fn say(out: &mut tokio::io::Stdout, reply: &Reply) -> Result<()> {
    let mut line = serde_json::to_string(reply)?;
    line.push('\n');
    out.write_all(line.as_bytes()).await?;
    Ok(out.flush().await?)
}

/// Sends each shard its part of `items` (grouped by the node that runs
/// them) at once and returns the replies.
pub(crate) async fn scatter<T: Clone>(
    shards: &[ShardHandle],
    per: usize,
    items: &[T],
    node_of: impl Fn(&T) -> usize,
    cmd: impl Fn(Vec<T>) -> Cmd,
) -> Result<Vec<Reply>> {
    let mut parts = vec![Vec::new(); shards.len()];
    for item in items {
        if let Some(part) = parts.get_mut(node_of(item) / per.max(1)) {
            part.push(item.clone());
        }
    }
    gather(
        shards
            .iter()
            .zip(parts)
            .filter(|(_, part)| !part.is_empty())
            .map(|(s, part)| (s.clone(), cmd(part))),
    )
    .await
}

/// Sends every shard `cmd` at once and returns the replies.
pub(crate) async fn join_all(shards: &[ShardHandle], cmd: Cmd) -> Result<Vec<Reply>> {
    gather(shards.iter().map(|s| (s.clone(), cmd.clone()))).await
}

async fn gather(calls: impl Iterator<Item = (ShardHandle, Cmd)>) -> Result<Vec<Reply>> {
    all(calls.map(|(s, cmd)| tokio::spawn(s.call(cmd))).collect()).await
}

/// Waits for every task, in order; the first failure fails the lot.
async fn all<T>(tasks: Vec<tokio::task::JoinHandle<Result<T>>>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// A testnet spread over this process and child processes.
pub(crate) struct Network {
    pub shards: Vec<ShardHandle>,
    pub bootstrap: Vec<Duration>,
    pub join: Duration,
    pub rss: u64,
}

impl Network {
    /// Starts `nodes` nodes, `per` in each process (the first share in
    /// this one, with the seed); each process joins through the seed, one
    /// after another, as a network grows.
    pub async fn start(
        nodes: usize,
        per: usize,
        link_delay: Duration,
        max_dht_connections: usize,
    ) -> Result<Network> {
        let rss0 = rss_bytes().unwrap_or(0);
        let mut config = TestnetConfig {
            nodes: nodes.min(per),
            link_delay,
            ..TestnetConfig::default()
        };
        config.node.max_dht_connections = max_dht_connections;
        let net = Testnet::start(config).await?;
        let mut rss = rss_bytes().unwrap_or(0).saturating_sub(rss0);
        let seed = net
            .nodes
            .first()
            .and_then(Node::addr)
            .ok_or_else(|| anyhow::anyhow!("seed has no address"))?;
        let mut bootstrap: Vec<Duration> = net.bootstrap_times.clone();
        let mut join = net.join_time;
        let mut shards = vec![ShardHandle::Local(Arc::new(Shard::new(0, net.nodes)))];
        if nodes > per {
            let exe = std::env::current_exe()?;
            for first in (per..nodes).step_by(per) {
                let spec = ShardSpec {
                    first,
                    nodes: per.min(nodes - first),
                    seed: seed.to_string(),
                    link_delay_us: us(link_delay),
                    max_dht_connections,
                };
                let t = Instant::now();
                let (shard, times, shard_rss) = ShardHandle::spawn(&exe, &spec).await?;
                join += t.elapsed();
                bootstrap.extend(times.into_iter().map(Duration::from_micros));
                rss += shard_rss;
                shards.push(shard);
            }
        }
        Ok(Network {
            shards,
            bootstrap,
            join,
            rss,
        })
    }
}

/// Starts `b.nodes` nodes (over several processes beyond
/// `b.nodes_per_process`), puts `b.records` records, then measures gets of
/// random records and lookups of random keys from random nodes.
pub async fn dht(b: &DhtBench) -> Result<DhtReport> {
    if b.nodes < 2 {
        bail!("a DHT benchmark needs at least 2 nodes");
    }
    let per = b.nodes_per_process.max(1);
    let mut meter = Meter::new();
    let net = Network::start(b.nodes, per, b.link_delay, b.max_dht_connections).await?;
    let (shards, bootstrap, join, rss) = (net.shards, net.bootstrap, net.join, net.rss);
    meter.start();
    let mut rng = Rng::new(b.seed);
    let nodes = b.nodes as u64;
    let batch = b.concurrency.max(1);

    // Puts, `concurrency` at a time.
    let (mut put_times, mut stored) = (Vec::new(), Vec::new());
    let puts: Vec<(usize, usize)> = (0..b.records)
        .map(|r| (rng.below(nodes) as usize, r))
        .collect();
    for chunk in puts.chunks(batch) {
        for reply in scatter(&shards, per, chunk, |i| i.0, |items| Cmd::Put { items }).await? {
            if let Reply::Put { samples } = reply {
                for (t, s) in samples {
                    put_times.push(Duration::from_micros(t));
                    stored.push(s as u32);
                }
            }
        }
    }

    // Gets of random records and lookups of random keys.
    let queries: Vec<(usize, usize, [u8; 32])> = (0..b.queries)
        .map(|_| {
            let mut random = [0u8; 32];
            rng.fill(&mut random);
            let n = rng.below(nodes) as usize;
            (n, rng.below(b.records.max(1) as u64) as usize, random)
        })
        .collect();
    let mut samples = Vec::new();
    for chunk in queries.chunks(batch) {
        for reply in scatter(&shards, per, chunk, |i| i.0, |items| Cmd::Query { items }).await? {
            if let Reply::Query { samples: s } = reply {
                samples.extend(s);
            }
        }
    }
    let mut connections = 0;
    for reply in join_all(&shards, Cmd::Stats).await? {
        if let Reply::Stats { connections: c } = reply {
            connections += c;
        }
    }
    let ops = (b.records + 2 * samples.len()) as u64;
    let usage = meter.finish(b.nodes, "DHT operation (put, get or lookup)", ops);
    join_all(&shards, Cmd::Quit).await?;
    let ms = |f: fn(&QuerySample) -> u64| {
        Latency::from_samples(
            samples
                .iter()
                .map(|s| Duration::from_micros(f(s)))
                .collect(),
        )
    };
    Ok(DhtReport {
        nodes: b.nodes,
        processes: shards.len(),
        link_delay_ms: b.link_delay.as_secs_f64() * 1e3,
        join_s: join.as_secs_f64(),
        bootstrap: Latency::from_samples(bootstrap),
        put: Latency::from_samples(put_times),
        put_stored_p50: median_u32(stored) as usize,
        get_success: samples.iter().filter(|s| s.found).count() as f64 / b.queries.max(1) as f64,
        get: ms(|s| s.get_us),
        get_hops_p50: median_u32(samples.iter().map(|s| s.get_hops).collect()),
        lookup: ms(|s| s.lookup_us),
        lookup_hops_p50: median_u32(samples.iter().map(|s| s.lookup_hops).collect()),
        connections_per_node: connections as f64 / b.nodes as f64,
        rss_per_node_bytes: rss / b.nodes as u64,
        usage,
    })
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
    /// CPU per join, the whole network's; memory per node.
    pub usage: Usage,
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
    let mut meter = Meter::new();
    let net = Testnet::start(config).await?;
    meter.start();
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
    let usage = meter.finish(nodes + 1, "join (bootstrap and table fill)", joins as u64);
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
        usage,
    })
}
