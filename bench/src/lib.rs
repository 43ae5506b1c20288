//! # peerlink-bench — scenario benchmarks over real sockets
//!
//! Level 2 of the benchmark plan: one encrypted connection between two
//! nodes on loopback, measured beside a raw TCP reference in the same run
//! so the ratio is meaningful on a noisy shared machine.
//!
//! * [`stream`]: many messages in flight, one `send` per message; every
//!   message carries a sequence number, and the receiver checks that all
//!   arrive, in order.
//! * [`request_response`]: round trips with one request in flight.
//! * [`handshake`]: dial to first delivered message.
//!
//! Run them through the CLI: `peerlink bench stream --size 64`.

use std::time::{Duration, Instant};

pub mod baseline;
pub mod churn;
pub mod dht;
pub mod flood;
pub mod gossip;
pub mod registry;
pub mod report;
pub mod sla;
pub mod txpool;

/// The results document every workload writes (shared with the
/// instruction counts).
pub use peerlink_icount::provenance;

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use peerlink_net::{Limits, Node, NodeConfig, Transport, TransportAddr};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHANNEL: u16 = 16;
const MIB: f64 = 1024.0 * 1024.0;

/// Throughput of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub messages: u64,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mib_per_sec: f64,
}

impl Throughput {
    fn new(messages: u64, size: usize, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Throughput {
            messages,
            seconds,
            msgs_per_sec: messages as f64 / seconds,
            mib_per_sec: messages as f64 * size as f64 / MIB / seconds,
        }
    }
}

/// The stream workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub size: usize,
    pub peerlink: Throughput,
    /// Process CPU time (user + system, both nodes, all threads) per
    /// message delivered: steadier than throughput on a noisy machine.
    pub cpu_ns_per_msg: Option<f64>,
    /// Every message arrived, in order.
    pub complete_and_ordered: bool,
    /// Raw TCP, the same bytes coalesced into 64 KiB writes, no framing or
    /// encryption: the physical ceiling of this machine's loopback.
    pub raw_tcp: Throughput,
    /// peerlink's share of the raw TCP byte rate.
    pub ratio_to_raw: f64,
}

fn bench_config() -> NodeConfig {
    NodeConfig {
        limits: Limits {
            max_per_ip: 4096,
            max_peers: 4096,
            max_inbound: 4096,
            max_pending_per_ip: 4096,
            max_pending_per_prefix: 4096,
            ..Limits::default()
        },
        ip_ban_strikes: 0,
        // One address for the whole network: DHT quotas per prefix off.
        dht: Some(peerlink_proto::dht::DhtConfig::default().shared_address()),
        ..NodeConfig::default()
    }
}

async fn node() -> Result<Node> {
    node_on(Transport::Tcp).await
}

/// A node listening on loopback over `transport`.
async fn node_on(transport: Transport) -> Result<Node> {
    let at = TransportAddr {
        transport,
        socket: "127.0.0.1:0".parse()?,
    };
    Ok(Node::builder()
        .listen_on(at)
        .config(bench_config())
        .build()
        .await?)
}

/// Messages of `size` bytes, each starting with its sequence number, cut
/// from shared chunks so the sender does not allocate per message.
struct MessageSource {
    size: usize,
    chunk: Bytes,
    next: u64,
}

impl MessageSource {
    const PER_CHUNK: usize = 1024;

    fn new(size: usize) -> Self {
        MessageSource {
            size,
            chunk: Bytes::new(),
            next: 0,
        }
    }

    fn next(&mut self) -> Bytes {
        if self.chunk.is_empty() {
            let mut b = BytesMut::with_capacity(self.size * Self::PER_CHUNK);
            for i in 0..Self::PER_CHUNK as u64 {
                let seq = (self.next + i).to_le_bytes();
                let n = self.size.min(8);
                b.put_slice(&seq[..n]);
                b.put_bytes(0xab, self.size - n);
            }
            self.chunk = b.freeze();
        }
        self.next += 1;
        self.chunk.split_to(self.size)
    }
}

fn seq_of(payload: &[u8]) -> u64 {
    let mut n = [0u8; 8];
    let k = payload.len().min(8);
    n[..k].copy_from_slice(&payload[..k]);
    u64::from_le_bytes(n)
}

/// Streams `size`-byte messages from one node to another for `secs`.
pub async fn stream(size: usize, secs: f64) -> Result<StreamReport> {
    stream_on(Transport::Tcp, size, secs).await
}

/// [`stream`] over `transport`.
pub async fn stream_on(transport: Transport, size: usize, secs: f64) -> Result<StreamReport> {
    if size < 8 {
        bail!("message size must be at least 8 bytes (it carries a sequence number)");
    }
    let (a, b) = (node_on(transport).await?, node_on(transport).await?);
    let mut rx = b.channel(CHANNEL)?;
    a.connect(b.addr().context("no listen address")?).await?;
    let tx = a.sender(&b.peer_id())?;
    let duration = Duration::from_secs_f64(secs);
    let cpu_before = process_cpu();

    let sender = tokio::spawn(async move {
        let mut source = MessageSource::new(size);
        let start = Instant::now();
        let mut sent = 0u64;
        'outer: loop {
            for _ in 0..256 {
                if tx.send(CHANNEL, source.next()).await.is_err() {
                    break 'outer;
                }
                sent += 1;
            }
            if start.elapsed() >= duration {
                break;
            }
        }
        sent
    });

    // Receive until the sender is done and everything it sent has arrived.
    let mut buf = Vec::with_capacity(4096);
    let (mut received, mut ordered) = (0u64, true);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut sent_total: Option<u64> = None;
    let mut sender = Some(sender);
    loop {
        if let Some(total) = sent_total {
            if received >= total {
                break;
            }
        }
        buf.clear();
        let got =
            tokio::time::timeout(Duration::from_millis(200), rx.recv_many(&mut buf, 8192)).await;
        if let Ok(n) = got {
            if n == 0 {
                break;
            }
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            for m in &buf {
                if size >= 8 && seq_of(&m.payload) != received {
                    ordered = false;
                }
                received += 1;
            }
        }
        if sent_total.is_none() && sender.as_ref().is_some_and(|s| s.is_finished()) {
            if let Some(s) = sender.take() {
                sent_total = Some(s.await?);
            }
        } else if got.is_err() && sent_total.is_some() {
            break; // nothing more is coming
        }
    }
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let sent_total = sent_total.unwrap_or(0);
    let elapsed = first.map_or(Duration::ZERO, |f| last - f);
    let peerlink = Throughput::new(received, size, elapsed);
    a.shutdown().await;
    b.shutdown().await;

    let raw_tcp = raw_stream(size, secs).await?;
    Ok(StreamReport {
        size,
        cpu_ns_per_msg: cpu.map(|c| c.as_nanos() as f64 / received.max(1) as f64),
        ratio_to_raw: peerlink.mib_per_sec / raw_tcp.mib_per_sec.max(1e-9),
        complete_and_ordered: ordered && received == sent_total,
        peerlink,
        raw_tcp,
    })
}

/// CPU time (user + system) this process has used, from /proc (Linux).
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// CPU and memory of a whole benchmark network: this process and its
/// child processes (testnet shards, a flooded node), over the measured
/// phase.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Usage {
    /// CPU seconds, user + system, every process of the network.
    pub cpu_s: f64,
    /// What one event is ("delivered message", "DHT operation"...).
    pub event: String,
    pub events: u64,
    /// CPU per event: the whole network's work for one, divided out.
    pub cpu_us_per_event: f64,
    /// Resident memory the network's processes added since before it
    /// started, per node, at the end of the measured phase.
    pub rss_per_node_bytes: u64,
}

/// Measures a [`Usage`]: created before the network starts (the memory
/// baseline), [`Meter::start`] at the start of the measured phase (the
/// CPU baseline), [`Meter::finish`] at its end, while every process is
/// still alive.
pub struct Meter {
    rss_base: u64,
    cpu0: Duration,
}

/// (CPU, RSS) of this process and its live children, plus the CPU of
/// the children it has already reaped (the cutime/cstime fields).
fn process_tree() -> (Duration, u64) {
    fn stat(pid: &str) -> Option<(u32, u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // After the command: state, ppid, ... utime (12th), stime, cutime, cstime.
        let ppid = rest.get(1)?.parse().ok()?;
        let own = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        let reaped = rest.get(13)?.parse::<u64>().ok()? + rest.get(14)?.parse::<u64>().ok()?;
        Some((ppid, own, reaped))
    }
    fn rss(pid: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map_or(0, |kib| kib * 1024)
    }
    let me = std::process::id();
    let (mut ticks, mut bytes) = (0u64, rss("self"));
    if let Some((_, own, reaped)) = stat("self") {
        ticks += own + reaped;
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some((_, own, reaped)) = stat(pid).filter(|s| s.0 == me) {
                ticks += own + reaped;
                bytes += rss(pid);
            }
        }
    }
    // Clock ticks are 100 per second on Linux.
    (Duration::from_millis(ticks * 10), bytes)
}

impl Meter {
    pub fn new() -> Meter {
        let (cpu0, rss_base) = process_tree();
        Meter { rss_base, cpu0 }
    }

    /// The measured phase starts now.
    pub fn start(&mut self) {
        self.cpu0 = process_tree().0;
    }

    pub fn finish(&self, nodes: usize, event: &str, events: u64) -> Usage {
        let (cpu, rss) = process_tree();
        let cpu = cpu.saturating_sub(self.cpu0);
        Usage {
            cpu_s: cpu.as_secs_f64(),
            event: event.to_string(),
            events,
            cpu_us_per_event: cpu.as_secs_f64() * 1e6 / events.max(1) as f64,
            rss_per_node_bytes: rss.saturating_sub(self.rss_base) / nodes.max(1) as u64,
        }
    }
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new()
    }
}

/// Raw TCP over loopback: `size`-byte messages coalesced into 64 KiB writes.
pub async fn raw_stream(size: usize, secs: f64) -> Result<Throughput> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        let start = Instant::now();
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        Ok::<_, std::io::Error>((total, start.elapsed()))
    });
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let per_write = ((64 << 10) / size).max(1);
    let chunk = vec![0xabu8; per_write * size];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..16 {
            s.write_all(&chunk).await?;
        }
    }
    s.shutdown().await?;
    drop(s);
    let (total, elapsed) = reader.await??;
    Ok(Throughput::new(total / size as u64, size, elapsed))
}

/// Latency percentiles in microseconds, from an HDR histogram (3
/// significant digits: a percentile is within 0.1 % of the exact sample).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    /// (quantile, µs) at [`CDF_QUANTILES`]: the distribution's shape, for
    /// CDF plots (`peerlink bench report`).
    #[serde(default)]
    pub cdf_us: Vec<(f64, f64)>,
    /// Every sample, in µs, when there are at most [`RAW_SAMPLES`] (block
    /// applies, joins, installs): few enough to keep whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raw_us: Vec<f64>,
}

/// Up to this many samples, a [`Latency`] keeps them all.
pub const RAW_SAMPLES: usize = 64;

/// Where [`Latency::cdf_us`] samples the distribution.
pub const CDF_QUANTILES: [f64; 13] = [
    0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0,
];

/// A latency histogram in nanoseconds; histograms from several places (a
/// multi-process network's shards, several rounds) add up with
/// [`Histogram::add`].
pub type Histogram = hdrhistogram::Histogram<u64>;

/// An empty [`Histogram`] that grows to any value.
pub fn histogram() -> Histogram {
    // 3 significant digits, auto-resizing: cannot fail.
    Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is in range"))
}

impl Latency {
    pub fn from_samples(samples: Vec<Duration>) -> Self {
        let mut h = histogram();
        let raw_us = if samples.len() <= RAW_SAMPLES {
            samples.iter().map(|s| s.as_secs_f64() * 1e6).collect()
        } else {
            Vec::new()
        };
        for s in samples {
            let ns = s.as_nanos().min(u64::MAX as u128) as u64;
            // Grows to fit (saturating_record would clamp to the current top).
            if h.record(ns).is_err() {
                h.saturating_record(ns);
            }
        }
        Latency {
            raw_us,
            ..Latency::from_histogram(&h)
        }
    }

    pub fn from_histogram(h: &Histogram) -> Self {
        let us = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1e3
            }
        };
        Latency {
            samples: h.len() as usize,
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() / 1e3 },
            cdf_us: if h.is_empty() {
                Vec::new()
            } else {
                CDF_QUANTILES.iter().map(|&q| (q, us(q))).collect()
            },
            raw_us: Vec::new(),
        }
    }
}

/// The request/response workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct RrReport {
    pub size: usize,
    pub peerlink: Latency,
    /// Raw TCP ping-pong of the same size, one in flight, on the same
    /// tokio runtime (the same task wake-ups as peerlink pays).
    pub raw_tcp: Latency,
    /// Raw TCP ping-pong with blocking sockets on two OS threads: the
    /// machine's floor, with no async runtime at all.
    pub raw_tcp_blocking: Latency,
    pub p50_ratio: f64,
    pub p99_ratio: f64,
    pub p50_ratio_blocking: f64,
}

/// Request/response round trips with one request in flight for `secs`.
pub async fn request_response(size: usize, secs: f64) -> Result<RrReport> {
    request_response_on(Transport::Tcp, size, secs).await
}

/// [`request_response`] over `transport`.
pub async fn request_response_on(transport: Transport, size: usize, secs: f64) -> Result<RrReport> {
    let (a, b) = (node_on(transport).await?, node_on(transport).await?);
    let mut requests = b.serve("bench/rr")?;
    tokio::spawn(async move {
        while let Some(r) = requests.recv().await {
            let body = r.body.clone();
            r.respond(body);
        }
    });
    a.connect(b.addr().context("no listen address")?).await?;
    let peer = b.peer_id();
    let body = Bytes::from(vec![0x5au8; size]);
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let reply = a.request(&peer, "bench/rr", body.clone()).await?;
        samples.push(t.elapsed());
        if reply.len() != size {
            bail!("echo returned {} bytes, expected {size}", reply.len());
        }
    }
    a.shutdown().await;
    b.shutdown().await;
    let peerlink = Latency::from_samples(samples);
    let raw_tcp = raw_ping_pong(size, secs).await?;
    let raw_tcp_blocking =
        tokio::task::spawn_blocking(move || raw_ping_pong_blocking(size, secs)).await??;
    Ok(RrReport {
        size,
        p50_ratio: peerlink.p50_us / raw_tcp.p50_us.max(1e-9),
        p99_ratio: peerlink.p99_us / raw_tcp.p99_us.max(1e-9),
        p50_ratio_blocking: peerlink.p50_us / raw_tcp_blocking.p50_us.max(1e-9),
        peerlink,
        raw_tcp,
        raw_tcp_blocking,
    })
}

/// Raw TCP ping-pong with blocking std sockets on two threads.
pub fn raw_ping_pong_blocking(size: usize, secs: f64) -> Result<Latency> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = vec![0x5au8; size];
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        samples.push(t.elapsed());
    }
    drop(s);
    let _ = server.join();
    Ok(Latency::from_samples(samples))
}

/// Raw TCP ping-pong: write `size` bytes, read `size` bytes back.
pub async fn raw_ping_pong(size: usize, secs: f64) -> Result<Latency> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).await.is_ok() {
            s.write_all(&buf).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = vec![0x5au8; size];
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        s.write_all(&buf).await?;
        s.read_exact(&mut buf).await?;
        samples.push(t.elapsed());
    }
    Ok(Latency::from_samples(samples))
}

/// The handshake workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeReport {
    /// TCP connect + Noise handshake + first message delivered.
    pub dial_to_first_message: Latency,
}

/// Dials a fresh connection `count` times, measuring until the first
/// message arrives at the other side.
pub async fn handshake(count: usize) -> Result<HandshakeReport> {
    handshake_on(Transport::Tcp, count).await
}

/// [`handshake`] over `transport`.
pub async fn handshake_on(transport: Transport, count: usize) -> Result<HandshakeReport> {
    let b = node_on(transport).await?;
    let mut rx = b.channel(CHANNEL)?;
    let addr = b.addr().context("no listen address")?;
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let a = node_on(transport).await?;
        let t = Instant::now();
        a.connect(addr).await?;
        a.send(&b.peer_id(), CHANNEL, &b"first"[..]).await?;
        rx.recv().await.context("receiver closed")?;
        samples.push(t.elapsed());
        a.shutdown().await;
    }
    b.shutdown().await;
    Ok(HandshakeReport {
        dial_to_first_message: Latency::from_samples(samples),
    })
}

/// The idle-memory workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub nodes: usize,
    pub connections: usize,
    /// Resident memory added by the connections (both ends), per connection.
    pub bytes_per_connection: f64,
    /// Resident memory of a node with no connections.
    pub bytes_per_node: f64,
}

/// Resident set size of this process, from /proc (Linux).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Starts `nodes` nodes, connects every pair, exchanges one ping and a
/// 1 KiB message per connection, lets them go idle, and measures memory.
pub async fn idle_memory(nodes: usize) -> Result<IdleReport> {
    let before = rss_bytes().context("no /proc/self/status")?;
    let mut all = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        all.push(node().await?);
    }
    let with_nodes = rss_bytes().context("no /proc/self/status")?;
    let mut receivers = Vec::new();
    for n in &all {
        receivers.push(n.channel(CHANNEL)?);
    }
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            a.connect(b.addr().context("no listen address")?).await?;
            a.ping(&b.peer_id()).await?;
            a.send(&b.peer_id(), CHANNEL, vec![1u8; 1024]).await?;
        }
    }
    for rx in &mut receivers {
        while rx.try_recv().is_some() {}
    }
    // Let writers go idle and release their buffers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for rx in &mut receivers {
        while rx.try_recv().is_some() {}
    }
    let connected = rss_bytes().context("no /proc/self/status")?;
    let connections = nodes * (nodes - 1) / 2;
    for n in &all {
        n.shutdown().await;
    }
    Ok(IdleReport {
        nodes,
        connections,
        bytes_per_connection: connected.saturating_sub(with_nodes) as f64
            / connections.max(1) as f64,
        bytes_per_node: with_nodes.saturating_sub(before) as f64 / nodes.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn harness_measures_something_real() {
        let s = stream(64, 0.2).await.unwrap();
        assert!(s.complete_and_ordered);
        assert!(s.peerlink.messages > 1000 && s.raw_tcp.messages > 1000);
        let r = request_response(64, 0.1).await.unwrap();
        assert!(r.peerlink.samples > 10 && r.raw_tcp.samples > 10);
        let h = handshake(3).await.unwrap();
        assert_eq!(h.dial_to_first_message.samples, 3);
    }

    #[test]
    fn percentiles_pick_the_right_samples() {
        let l = Latency::from_samples((1..=100).map(Duration::from_micros).collect());
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
        assert!(near(l.p50_us, 50.0) && near(l.p99_us, 99.0), "{l:?}");
        assert!(near(l.mean_us, 50.5), "{l:?}");
        assert_eq!(l.cdf_us.len(), CDF_QUANTILES.len());
        assert!(l.raw_us.is_empty(), "100 samples are over the raw limit");
        let few = Latency::from_samples(vec![Duration::from_micros(3), Duration::from_micros(1)]);
        assert_eq!(few.raw_us, [3.0, 1.0]);
        assert!(near(l.cdf_us[0].1, 1.0) && near(l.cdf_us[12].1, 100.0));
        assert!(l.cdf_us.windows(2).all(|w| w[0].1 <= w[1].1));
        let empty = Latency::from_samples(vec![]);
        assert_eq!((empty.samples, empty.p99_us), (0, 0.0));
        // Histograms add up: two halves give the whole.
        let (mut a, mut b) = (histogram(), histogram());
        for i in 1..=50u64 {
            a.record(i * 1000).unwrap();
            b.record((i + 50) * 1000).unwrap();
        }
        a.add(&b).unwrap();
        assert!(near(Latency::from_histogram(&a).p99_us, 99.0));
    }
}
