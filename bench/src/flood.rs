//! The flood figure (TARGETS.md, Reliability): one authenticated peer, in
//! a process of its own, sends as fast as it can — requests, DHT writes,
//! gossip, registry announcements, a quarter of the time each — at a node
//! (a process of its own too, so its memory is its own) that meanwhile
//! serves 5 honest peers (this process). Measured in one run: the honest
//! peers' request latency with and without the flood, and the flooded
//! node's resident memory against [`RSS_BOUND`], stated before the run.
//!
//! The flooder never paces itself: it ignores "slow down", floods with
//! many requests in flight, and comes back when it is disconnected (a ban
//! keeps it out). Each phase starts under a new identity from a new
//! loopback address (127.0.0.20 + phase), as an attacker with free keys
//! and a few addresses would, so a ban in one phase does not spare the
//! node the next one. The honest peers' latency is reported per phase as
//! well as overall. Every number the flooder reports is what it saw; the
//! node's own counters come from its process.
//!
//! A run is several rounds, each a no-flood measurement followed by a
//! flood with a fresh flooder (fresh identities and addresses): a sub-ms
//! p99 on a shared machine drifts by more than the effect between one
//! minute and the next, so each round's ratio compares neighbours, and
//! the figure is the median of the rounds' ratios.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use peerlink_net::{Keypair, Node, NodeConfig, PeerAddr};
use peerlink_proto::dht::{Key, Record, Request, RequestBody};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{rss_bytes, Latency};

/// The flooded node's resident memory must stay under this for the whole
/// run (its request queues, read buffers, stores and tables are bounded;
/// this is their sum with room to spare, stated before measuring).
pub const RSS_BOUND: u64 = 256 << 20;

/// Arguments that make the `peerlink` binary run the flooded node
/// ([`serve_target`]) and the flooder ([`serve_flooder`]).
pub const TARGET_COMMAND: [&str; 2] = ["bench", "flood-target"];
pub const FLOODER_COMMAND: [&str; 2] = ["bench", "flood-attacker"];

/// The echo protocol the honest peers and the flooder use.
const ECHO: &str = "bench/echo";

#[derive(Clone, Debug)]
pub struct FloodBench {
    /// Seconds of each half of a round: without, then with the flood.
    pub secs: f64,
    pub honest: usize,
    /// Bytes of an honest request.
    pub size: usize,
    /// Rounds (at most [`MAX_ROUNDS`]).
    pub rounds: usize,
}

/// Each round's flooder takes four loopback addresses of its own.
pub const MAX_ROUNDS: usize = 50;

/// What the flooder did and what it got (summed over rounds).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlooderReport {
    pub requests_sent: u64,
    pub requests_answered: u64,
    pub dht_writes_sent: u64,
    pub dht_writes_stored: u64,
    pub gossip_sent: u64,
    pub announcements_sent: u64,
    /// Times it found itself disconnected, and reconnects refused.
    pub disconnected: u64,
    pub reconnects_refused: u64,
}

/// The phases, in order: what the flooder sends in each.
pub const PHASES: [&str; 4] = ["requests", "dht writes", "gossip", "announcements"];

/// The honest peers' latency while the flooder was in one phase.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseLatency {
    pub phase: &'static str,
    pub latency: Latency,
    /// Its p99 over the no-flood p99.
    pub p99_ratio: f64,
}

/// One round: the honest peers without, then with the flood.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub no_flood: Latency,
    pub flood: Latency,
    /// Honest p99 under the flood over honest p99 without it.
    pub p99_ratio: f64,
    pub phases: Vec<PhaseLatency>,
}

/// A phase's ratio, the median over rounds.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRatio {
    pub phase: &'static str,
    pub p99_ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FloodReport {
    pub honest_peers: usize,
    pub phase_secs: f64,
    pub rounds: Vec<Round>,
    /// The median of the rounds' p99 ratios (target ≤ 2).
    pub p99_ratio: f64,
    /// Each phase's median ratio.
    pub phases: Vec<PhaseRatio>,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_bound: u64,
    pub flooder: FlooderReport,
    /// The flooded node's own account: bans, refused writes, registry
    /// counters.
    pub target: serde_json::Value,
    /// CPU of every process (the node, the honest peers, the flooders)
    /// per message the node handled, and memory per node.
    pub usage: crate::Usage,
}

/// Where the flooder comes from in `phase`; the honest peers and the
/// node are on 127.0.0.1. Every limit is the default.
fn flooder_ip(round: usize, phase: usize) -> std::net::IpAddr {
    let last = 20 + PHASES.len() * round.min(MAX_ROUNDS - 1) + phase;
    std::net::Ipv4Addr::new(127, 0, 0, last as u8).into()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl FlooderReport {
    fn add(&mut self, o: &FlooderReport) {
        self.requests_sent += o.requests_sent;
        self.requests_answered += o.requests_answered;
        self.dht_writes_sent += o.dht_writes_sent;
        self.dht_writes_stored += o.dht_writes_stored;
        self.gossip_sent += o.gossip_sent;
        self.announcements_sent += o.announcements_sent;
        self.disconnected += o.disconnected;
        self.reconnects_refused += o.reconnects_refused;
    }
}

async fn echo_node(data_dir: Option<&std::path::Path>) -> Result<Node> {
    let mut b = Node::builder()
        .listen("127.0.0.1:0".parse()?)
        .config(NodeConfig::default());
    if let Some(d) = data_dir {
        b = b.data_dir(d);
    }
    let node = b.build().await?;
    let mut requests = node.serve(ECHO)?;
    tokio::spawn(async move {
        while let Some(r) = requests.recv().await {
            let body = r.body.clone();
            r.respond(body);
        }
    });
    Ok(node)
}

pub async fn flood(b: &FloodBench) -> Result<FloodReport> {
    let exe = std::env::current_exe()?;
    let mut meter = crate::Meter::new();
    let mut target = tokio::process::Command::new(&exe)
        .args(TARGET_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = target.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("the flooded node did not start")??
        .context("the flooded node exited")?;
    let addr: PeerAddr = first
        .strip_prefix("ready ")
        .context("unexpected first line")?
        .parse()
        .map_err(|e| anyhow::anyhow!("bad address: {e:?}"))?;
    // Its memory, as it reports it every 50 ms, and its last word.
    let rss = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let last_word = {
        let rss = rss.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(v) = l.strip_prefix("rss ").and_then(|v| v.parse().ok()) {
                    rss.0.store(v, Relaxed);
                    rss.1.fetch_max(v, Relaxed);
                } else if let Some(stats) = l.strip_prefix("stats ") {
                    return serde_json::from_str(stats).unwrap_or_default();
                }
            }
            serde_json::Value::Null
        })
    };
    let mut honest = Vec::new();
    for _ in 0..b.honest {
        let n = echo_node(None).await?;
        n.connect(addr).await?;
        honest.push(n);
    }
    if b.rounds == 0 || b.rounds > MAX_ROUNDS {
        bail!("rounds must be 1 to {MAX_ROUNDS}");
    }
    let rss_before = rss.0.load(Relaxed);
    rss.1.store(rss_before, Relaxed);
    let mut rounds = Vec::new();
    let mut flooded = FlooderReport::default();
    meter.start();
    for round in 0..b.rounds {
        let (r, report) = flood_round(b, &exe, &honest, addr, round).await?;
        flooded.add(&report);
        rounds.push(r);
    }
    // Every message the node handled: honest requests and the flood.
    let handled: u64 = rounds
        .iter()
        .map(|r: &Round| (r.no_flood.samples + r.flood.samples) as u64)
        .sum::<u64>()
        + flooded.requests_sent
        + flooded.dht_writes_sent
        + flooded.gossip_sent
        + flooded.announcements_sent;
    let usage = meter.finish(1 + b.honest, "message handled (honest or flood)", handled);
    for n in &honest {
        n.shutdown().await;
    }
    // End of its input: it says what it saw and exits.
    drop(target.stdin.take());
    let target_stats = tokio::time::timeout(Duration::from_secs(10), last_word)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    drop(target);
    let phases = PHASES
        .iter()
        .enumerate()
        .map(|(i, phase)| PhaseRatio {
            phase,
            p99_ratio: median(
                rounds
                    .iter()
                    .filter_map(|r| r.phases.get(i).map(|p| p.p99_ratio))
                    .collect(),
            ),
        })
        .collect();
    Ok(FloodReport {
        honest_peers: b.honest,
        phase_secs: b.secs,
        p99_ratio: median(rounds.iter().map(|r| r.p99_ratio).collect()),
        phases,
        rounds,
        rss_before,
        rss_peak: rss.1.load(Relaxed),
        rss_bound: RSS_BOUND,
        flooder: flooded,
        target: target_stats,
        usage,
    })
}

/// One round: the honest peers' latency for `secs` without the flood,
/// then for `secs` while a fresh flooder runs its phases.
async fn flood_round(
    b: &FloodBench,
    exe: &std::path::Path,
    honest: &[Node],
    addr: PeerAddr,
    round: usize,
) -> Result<(Round, FlooderReport)> {
    let target = addr.id;
    let no_flood = Latency::from_samples(
        honest_samples(honest, target, b.size, b.secs)
            .await?
            .into_iter()
            .map(|s| s.1)
            .collect(),
    );
    let mut flooder = tokio::process::Command::new(exe)
        .args(FLOODER_COMMAND)
        .arg(addr.to_string())
        .arg(b.secs.to_string())
        .arg(round.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // It says when each phase starts, then its report.
    let mut said = BufReader::new(flooder.stdout.take().context("no stdout")?).lines();
    let mut starts = Vec::new();
    while starts.is_empty() {
        let line = next_line(&mut said).await?;
        if line.starts_with("phase ") {
            starts.push(Instant::now());
        }
    }
    let load = {
        let honest = honest.to_vec();
        let (size, secs) = (b.size, b.secs);
        tokio::spawn(async move { honest_samples(&honest, target, size, secs).await })
    };
    let report: FlooderReport = loop {
        let line = next_line(&mut said).await?;
        if line.starts_with("phase ") {
            starts.push(Instant::now());
        } else {
            break serde_json::from_str(&line).with_context(|| format!("flooder said {line:?}"))?;
        }
    };
    let samples = load.await??;
    let _ = flooder.wait().await;
    let flood = Latency::from_samples(samples.iter().map(|s| s.1).collect());
    let ratio = |l: &Latency| l.p99_us / no_flood.p99_us.max(1e-9);
    let phases = PHASES
        .iter()
        .enumerate()
        .map(|(i, phase)| {
            let from = starts.get(i).copied();
            let to = starts.get(i + 1).copied();
            let latency = Latency::from_samples(
                samples
                    .iter()
                    .filter(|(at, _)| from.is_some_and(|f| *at >= f) && to.is_none_or(|t| *at < t))
                    .map(|s| s.1)
                    .collect(),
            );
            PhaseLatency {
                phase,
                p99_ratio: ratio(&latency),
                latency,
            }
        })
        .collect();
    let round = Round {
        p99_ratio: ratio(&flood),
        phases,
        no_flood,
        flood,
    };
    Ok((round, report))
}

/// The flooder's next line (it says something within a minute).
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Result<String> {
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("the flooder went quiet")??
        .context("the flooder exited")
}

/// Every honest peer sends one request at a time for `secs`: when each
/// was sent, and how long its answer took.
async fn honest_samples(
    nodes: &[Node],
    target: peerlink_net::PeerId,
    size: usize,
    secs: f64,
) -> Result<Vec<(Instant, Duration)>> {
    let body = Bytes::from(vec![0x11u8; size]);
    let mut tasks = Vec::new();
    for n in nodes {
        let (n, body) = (n.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < secs {
                let t = Instant::now();
                let reply = n.request(&target, ECHO, body.clone()).await?;
                samples.push((t, t.elapsed()));
                if reply.len() != body.len() {
                    bail!("echo returned {} bytes", reply.len());
                }
            }
            Ok(samples)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// The flooded node: an echo service, the DHT on a data dir, gossip and a
/// registry. Prints `ready <addr>`, then its RSS every 50 ms until stdin
/// closes.
pub async fn serve_target() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = echo_node(Some(&dir.path().join("node"))).await?;
    let registry = peerlink_registry::Registry::start(
        node.clone(),
        peerlink_registry::RegistryConfig::new(dir.path().join("registry")),
    )
    .await?;
    println!("ready {}", node.addr().context("no address")?);
    let mut stdin = tokio::io::stdin();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            _ = tick.tick() => println!("rss {}", rss_bytes().unwrap_or(0)),
            n = tokio::io::AsyncReadExt::read(&mut stdin, &mut buf) => {
                if n.map_or(true, |n| n == 0) {
                    break;
                }
            }
        }
    }
    println!("stats {}", target_stats(&node, &registry).await);
    Ok(())
}

/// The flooded node's account of the run, one JSON line.
async fn target_stats(node: &Node, registry: &peerlink_registry::Registry) -> serde_json::Value {
    let bans: Vec<String> = node.bans().into_iter().map(|b| b.reason).collect();
    let dht = node.dht().info().await.ok();
    let r = registry.stats();
    serde_json::json!({
        "bans": bans,
        "serve_pauses": node.metrics().serve_pauses(),
        "dht_held_bytes": dht.as_ref().map(|d| d.held_bytes),
        "dht_writes_slowed": dht.as_ref().map(|d| d.stats.rate_limited),
        "dht_writes_refused_quota": dht.as_ref().map(|d| d.stats.refused_quota),
        "gossip_rejected": node.gossip().info().await.ok().map(|g| g.stats.rejected),
        "announcements_accepted": r.announcements_accepted,
        "announcements_refused": r.announcements_refused,
        "announcements_throttled": r.announcements_throttled,
        "remote_releases": r.remote_releases,
    })
}

/// Requests in flight at once while flooding.
const IN_FLIGHT: usize = 64;

/// The flooder of round `round`: floods `addr` for `secs`, a quarter of
/// the time with each kind, each under a new identity from its own
/// address; prints `phase N` as each starts and what happened as one JSON
/// line at the end.
pub async fn serve_flooder(addr: &str, secs: f64, round: usize) -> Result<()> {
    let addr: PeerAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("bad address: {e:?}"))?;
    let r = Arc::new(Counters::default());
    let quarter = Duration::from_secs_f64(secs / 4.0);
    for kind in 0..PHASES.len() {
        let ip = flooder_ip(round, kind);
        let node = Node::builder()
            .listen(std::net::SocketAddr::new(ip, 0))
            .config(NodeConfig {
                dial_source: Some(ip),
                ..NodeConfig::default()
            })
            .build()
            .await?;
        let _sub = node.gossip().subscribe(peerlink_registry::ANNOUNCE_TOPIC)?;
        node.connect(addr).await?;
        println!("phase {kind}");
        let until = Instant::now() + quarter;
        let mut tasks = Vec::new();
        for lane in 0..IN_FLIGHT as u64 {
            let (node, r) = (node.clone(), r.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = lane;
                while Instant::now() < until {
                    if !node.is_connected(&addr.id) {
                        r.disconnected.fetch_add(1, Relaxed);
                        if node.connect(addr).await.is_err() {
                            r.reconnects_refused.fetch_add(1, Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                    flood_once(&node, addr.id, kind as u8, i, &r).await;
                    i += IN_FLIGHT as u64;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        node.shutdown().await;
    }
    println!("{}", serde_json::to_string(&r.report())?);
    Ok(())
}

#[derive(Default)]
struct Counters {
    requests_sent: AtomicU64,
    requests_answered: AtomicU64,
    dht_writes_sent: AtomicU64,
    dht_writes_stored: AtomicU64,
    gossip_sent: AtomicU64,
    announcements_sent: AtomicU64,
    disconnected: AtomicU64,
    reconnects_refused: AtomicU64,
}

impl Counters {
    fn report(&self) -> FlooderReport {
        FlooderReport {
            requests_sent: self.requests_sent.load(Relaxed),
            requests_answered: self.requests_answered.load(Relaxed),
            dht_writes_sent: self.dht_writes_sent.load(Relaxed),
            dht_writes_stored: self.dht_writes_stored.load(Relaxed),
            gossip_sent: self.gossip_sent.load(Relaxed),
            announcements_sent: self.announcements_sent.load(Relaxed),
            disconnected: self.disconnected.load(Relaxed),
            reconnects_refused: self.reconnects_refused.load(Relaxed),
        }
    }
}

async fn flood_once(node: &Node, target: peerlink_net::PeerId, kind: u8, i: u64, r: &Counters) {
    match kind {
        // Requests: 16 KiB each, as fast as answers come.
        0 => {
            r.requests_sent.fetch_add(1, Relaxed);
            if node
                .request(&target, ECHO, vec![0xAAu8; 16 << 10])
                .await
                .is_ok()
            {
                r.requests_answered.fetch_add(1, Relaxed);
            }
        }
        // DHT writes of fresh keys, "slow down" ignored.
        1 => {
            let record = Record::sign(
                node.keypair(),
                Key::hash(&i.to_le_bytes()),
                Bytes::from(vec![0xBBu8; 4096]),
                1,
                unix_ms() + 3_600_000,
            );
            let req = Request {
                listen: None,
                body: RequestBody::PutRecord { record },
            };
            r.dht_writes_sent.fetch_add(1, Relaxed);
            if let Ok(resp) = node.request(&target, "dht/1", req.encode()).await {
                if matches!(
                    peerlink_proto::dht::Response::decode(&resp),
                    Ok(peerlink_proto::dht::Response::Stored)
                ) {
                    r.dht_writes_stored.fetch_add(1, Relaxed);
                }
            }
        }
        // Gossip nobody can use, on the topic the node validates.
        2 => {
            let mut junk = vec![0xCCu8; 1024];
            junk[..8].copy_from_slice(&i.to_le_bytes());
            r.gossip_sent.fetch_add(1, Relaxed);
            let _ = node
                .gossip()
                .publish(peerlink_registry::ANNOUNCE_TOPIC, junk)
                .await;
            tokio::task::yield_now().await;
        }
        // Validly signed releases of new names under fresh keys, for
        // archives that do not exist.
        _ => {
            let manifest = peerlink_registry::Manifest {
                name: format!("flood{i}"),
                version: semver::Version::new(1, 0, 0),
                description: "flood".into(),
                keywords: vec![],
                license: "MIT".into(),
                dependencies: Default::default(),
            };
            let release = peerlink_registry::Release::new(&manifest, &i.to_le_bytes(), unix_ms());
            let key = match Keypair::generate() {
                Ok(k) => k,
                Err(_) => return,
            };
            let signed = peerlink_registry::SignedRelease::sign(release, &key);
            r.announcements_sent.fetch_add(1, Relaxed);
            let _ = node
                .gossip()
                .publish(peerlink_registry::ANNOUNCE_TOPIC, signed.encode())
                .await;
            tokio::task::yield_now().await;
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
