//! peerlink vs rust-libp2p 0.57 (tcp + noise + yamux) on the same
//! workloads, in one invocation. Without a subcommand: the stream workload
//! (one connection, many messages in flight) and request/response; `dht`:
//! the DHT workload on N nodes against rust-libp2p kad.
//!
//! rust-libp2p is measured twice: one `write_all` per message (what a
//! user writes first), and with the sender buffering into 64 KiB writes by
//! hand (what a user must do to go fast). commonware-p2p (authenticated
//! lookup network) runs the stream workload too, with a bounded window of
//! messages in flight (its receive side drops what it cannot queue).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/stream/1");

mod commonware;
mod gossipsub;
mod kad;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    workload: Option<Workload>,
    /// Message sizes for the stream workload.
    #[arg(long, value_delimiter = ',', default_value = "64,1024,16384")]
    sizes: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// commonware-p2p: messages in flight past the receiver's
    /// acknowledgements (its receive side drops what it cannot queue).
    #[arg(long, default_value_t = commonware::WINDOW)]
    cw_window: u64,
    /// Write all results as JSON here.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Workload {
    /// Bootstrap, put, get and closest-peers on N nodes (0 ms links):
    /// peerlink's DHT, then rust-libp2p kad.
    Dht {
        #[arg(long, default_value_t = 200)]
        nodes: usize,
        #[arg(long, default_value_t = 50)]
        records: usize,
        /// Gets (and as many closest-peer lookups) measured.
        #[arg(long, default_value_t = 300)]
        queries: usize,
        /// Queries in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Run only the rust-libp2p side and print its report as JSON (the
        /// parent runs this in a child process so that each side has its
        /// own descriptors and its own RSS).
        #[arg(long, hide = true)]
        kad_only: bool,
    },
    /// Time-to-all and duplicates on N nodes (0 ms links): peerlink's
    /// gossip, then rust-libp2p gossipsub.
    Gossip {
        #[arg(long, value_delimiter = ',', default_value = "50,200")]
        nodes: Vec<usize>,
        #[arg(long, default_value_t = 50)]
        messages: usize,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Milliseconds between two publishes.
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        /// Connections each gossipsub node dials.
        #[arg(long, default_value_t = 8)]
        peers: usize,
    },
}

/// A tcp + noise + yamux swarm with `behaviour`, closing connections idle
/// for `idle`.
pub(crate) fn tcp_swarm<B: libp2p::swarm::NetworkBehaviour>(
    behaviour: impl FnOnce(
        &libp2p::identity::Keypair,
    ) -> Result<B, Box<dyn std::error::Error + Send + Sync>>,
    idle: Duration,
) -> Result<libp2p::Swarm<B>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(behaviour)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
}

/// Listens on a fresh loopback port and returns its address.
pub(crate) async fn listen_loopback<B: libp2p::swarm::NetworkBehaviour>(
    swarm: &mut libp2p::Swarm<B>,
) -> Result<Multiaddr> {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>()?)?;
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return Ok(address);
        }
    }
}

fn swarm() -> Result<libp2p::Swarm<libp2p_stream::Behaviour>> {
    tcp_swarm(
        |_| Ok(libp2p_stream::Behaviour::new()),
        Duration::from_secs(60),
    )
}

/// Two swarms on loopback, the client dialling the server, each driven by
/// a background task; the server accepts streams of `protocol`.
struct Pair {
    control: libp2p_stream::Control,
    incoming: libp2p_stream::IncomingStreams,
    server_id: libp2p::PeerId,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

async fn pair(protocol: StreamProtocol) -> Result<Pair> {
    let mut server = swarm()?;
    let mut client = swarm()?;
    let server_id = *server.local_peer_id();
    let incoming = server.behaviour().new_control().accept(protocol)?;
    let addr = listen_loopback(&mut server).await?;
    let control = client.behaviour().new_control();
    client.dial(addr)?;
    let tasks = [
        tokio::spawn(async move {
            loop {
                server.select_next_some().await;
            }
        }),
        tokio::spawn(async move {
            loop {
                client.select_next_some().await;
            }
        }),
    ];
    Ok(Pair {
        control,
        incoming,
        server_id,
        tasks,
    })
}

/// Messages per second and MiB/s of one libp2p stream.
async fn libp2p_stream(size: usize, secs: f64, buffered: bool) -> Result<(f64, f64)> {
    // The swarm tasks keep running, detached, as they always have here.
    let Pair {
        mut control,
        mut incoming,
        server_id,
        tasks: _,
    } = pair(PROTOCOL).await?;

    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.context("no incoming stream")?;
        let mut buf = vec![0u8; 256 << 10];
        let (mut total, mut first, mut last) = (0u64, None, Instant::now());
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            total += n as u64;
        }
        Ok::<_, anyhow::Error>((total, first.map_or(Duration::ZERO, |f| last - f)))
    });
    let mut stream = loop {
        match control.open_stream(server_id, PROTOCOL).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let msg = vec![0xabu8; size];
    let start = Instant::now();
    if buffered {
        let mut w = futures::io::BufWriter::with_capacity(64 << 10, &mut stream);
        while start.elapsed().as_secs_f64() < secs {
            for _ in 0..256 {
                w.write_all(&msg).await?;
            }
        }
        w.flush().await?;
    } else {
        while start.elapsed().as_secs_f64() < secs {
            for _ in 0..256 {
                stream.write_all(&msg).await?;
            }
        }
    }
    stream.close().await?;
    let (total, elapsed) = reader.await??;
    let s = elapsed.as_secs_f64().max(1e-9);
    Ok((
        (total / size as u64) as f64 / s,
        total as f64 / (1 << 20) as f64 / s,
    ))
}

const RR_PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/rr/1");

/// Request/response round trips on rust-libp2p, one in flight, the way its
/// request-response behaviour does it: a new substream per request, the
/// request written and the write side closed, the response read to the end.
async fn libp2p_rr(size: usize, secs: f64) -> Result<peerlink_bench::Latency> {
    let Pair {
        mut control,
        mut incoming,
        server_id,
        tasks,
    } = pair(RR_PROTOCOL).await?;
    let echo = tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if stream.read_to_end(&mut buf).await.is_ok() {
                    let _ = stream.write_all(&buf).await;
                    let _ = stream.close().await;
                }
            });
        }
    });
    let body = vec![0x5au8; size];
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let mut stream = match control.open_stream(server_id, RR_PROTOCOL).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stream.write_all(&body).await?;
        stream.close().await?;
        let mut reply = Vec::with_capacity(size);
        stream.read_to_end(&mut reply).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(reply.len() == size, "echo returned {} bytes", reply.len());
    }
    echo.abort();
    for t in tasks {
        t.abort();
    }
    Ok(peerlink_bench::Latency::from_samples(samples))
}

#[tokio::main(worker_threads = 2)]
async fn main() -> Result<()> {
    // All work on the two workers, none on the main thread.
    tokio::spawn(run(Args::parse())).await?
}

async fn run(args: Args) -> Result<()> {
    if let Some(Workload::Dht {
        nodes,
        records,
        queries,
        concurrency,
        kad_only,
    }) = args.workload
    {
        if kad_only {
            let r = kad::run(nodes, records, queries, concurrency, 1).await?;
            println!("{}", serde_json::to_string(&r)?);
            return Ok(());
        }
        return dht(nodes, records, queries, concurrency, args.json).await;
    }
    if let Some(Workload::Gossip {
        nodes,
        messages,
        size,
        interval_ms,
        peers,
    }) = args.workload
    {
        return gossip(
            nodes,
            messages,
            size,
            Duration::from_millis(interval_ms),
            peers,
            args.json,
        )
        .await;
    }
    let mut results = Vec::new();
    println!(
        "{:>6} | {:>22} | {:>22} | {:>22} | {:>16} | {:>9} {:>9}",
        "size",
        "peerlink msg/s (MiB/s)",
        "libp2p direct",
        "libp2p buffered",
        "raw TCP MiB/s",
        "×direct",
        "×buffered"
    );
    for &size in &args.sizes {
        let ours = peerlink_bench::stream(size, args.secs).await?;
        let (d_msgs, d_mib) = libp2p_stream(size, args.secs, false).await?;
        let (b_msgs, b_mib) = libp2p_stream(size, args.secs, true).await?;
        let secs = args.secs;
        let window = args.cw_window;
        let cw =
            tokio::task::spawn_blocking(move || commonware::stream(size, secs, window)).await??;
        println!(
            "{:>6} | {:>12.0} ({:>7.1}) | {:>12.0} ({:>7.1}) | {:>12.0} ({:>7.1}) | {:>16.1} | {:>8.1}× {:>8.1}×",
            size, ours.peerlink.msgs_per_sec, ours.peerlink.mib_per_sec, d_msgs, d_mib, b_msgs, b_mib,
            ours.raw_tcp.mib_per_sec, ours.peerlink.msgs_per_sec / d_msgs, ours.peerlink.msgs_per_sec / b_msgs,
        );
        println!(
            "{:>6} | commonware-p2p (window {}): {:.0} msg/s ({:.1} MiB/s), {} of {} sent arrived; peerlink {:.1}×",
            size,
            cw.window,
            cw.msgs_per_sec,
            cw.mib_per_sec,
            cw.received,
            cw.sent,
            ours.peerlink.msgs_per_sec / cw.msgs_per_sec.max(1e-9)
        );
        results.push(serde_json::json!({
            "size": size,
            "peerlink": ours,
            "libp2p_direct": { "msgs_per_sec": d_msgs, "mib_per_sec": d_mib },
            "libp2p_buffered": { "msgs_per_sec": b_msgs, "mib_per_sec": b_mib },
            "ratio_direct": ours.peerlink.msgs_per_sec / d_msgs,
            "ratio_buffered": ours.peerlink.msgs_per_sec / b_msgs,
            "commonware": cw,
            "ratio_commonware": ours.peerlink.msgs_per_sec / cw.msgs_per_sec.max(1e-9),
        }));
    }
    // Request/response, 64 B, one in flight.
    let ours = peerlink_bench::request_response(64, args.secs).await?;
    let theirs = libp2p_rr(64, args.secs).await?;
    println!();
    println!("request/response 64 B, one in flight   p50 µs     p99 µs");
    println!(
        "  peerlink                        {:>10.1} {:>10.1}",
        ours.peerlink.p50_us, ours.peerlink.p99_us
    );
    println!(
        "  rust-libp2p (stream per request) {:>9.1} {:>10.1}",
        theirs.p50_us, theirs.p99_us
    );
    println!(
        "  raw TCP (tokio)                 {:>10.1} {:>10.1}",
        ours.raw_tcp.p50_us, ours.raw_tcp.p99_us
    );
    println!(
        "  peerlink is {:.2}× faster at p50, {:.2}× at p99",
        theirs.p50_us / ours.peerlink.p50_us.max(1e-9),
        theirs.p99_us / ours.peerlink.p99_us.max(1e-9)
    );
    let rr = serde_json::json!({ "size": 64, "peerlink": ours, "libp2p": theirs });
    if let Some(path) = args.json {
        let results = serde_json::json!({ "stream": results, "rr": rr });
        write_doc(&path, "compare", results)?;
    }
    Ok(())
}

/// The same results document as `peerlink bench --json` writes (schema,
/// provenance), so `peerlink bench report` reads both.
fn write_doc(path: &std::path::Path, workload: &str, results: serde_json::Value) -> Result<()> {
    let doc = peerlink_bench::provenance::document(workload, results, serde_json::Value::Null);
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// peerlink, then rust-libp2p gossipsub, same plan, per network size.
async fn gossip(
    sizes: Vec<usize>,
    messages: usize,
    size: usize,
    interval: Duration,
    peers: usize,
    json: Option<std::path::PathBuf>,
) -> Result<()> {
    println!(
        "Gossip, 0 ms links: {messages} messages of {size} B, one every {} ms from a random node",
        interval.as_millis()
    );
    println!(
        "{:>6} | {:>10} | {:>22} | {:>18} | {:>9} | {:>13}",
        "nodes", "system", "time-to-all p50/p99 ms", "latency p50/p99 ms", "dups/node", "delivery"
    );
    let mut results = Vec::new();
    for n in sizes {
        let ours = peerlink_bench::gossip::gossip(&peerlink_bench::gossip::GossipBench {
            nodes: n,
            link_delay: Duration::ZERO,
            messages,
            size,
            interval,
            nodes_per_process: n,
            ..Default::default()
        })
        .await?;
        let theirs = gossipsub::run(n, messages, size, interval, peers, 1).await?;
        let ms =
            |l: &peerlink_bench::Latency| format!("{:.2}/{:.2}", l.p50_us / 1e3, l.p99_us / 1e3);
        for (name, tta, lat, dups, delivery) in [
            (
                "peerlink",
                &ours.time_to_all,
                &ours.latency,
                ours.duplicates_per_node_per_message,
                ours.delivery,
            ),
            (
                "gossipsub",
                &theirs.time_to_all,
                &theirs.latency,
                theirs.duplicates_per_node_per_message,
                theirs.delivery,
            ),
        ] {
            println!(
                "{:>6} | {:>10} | {:>22} | {:>18} | {:>9.2} | {:>12.3}%",
                n,
                name,
                ms(tta),
                ms(lat),
                dups,
                delivery * 100.0
            );
        }
        let ratio_p99 = theirs.time_to_all.p99_us / ours.time_to_all.p99_us.max(1e-9);
        let ratio_dups =
            ours.duplicates_per_node_per_message / theirs.duplicates_per_node_per_message.max(1e-9);
        println!(
            "{:>6} | time-to-all p99 {:.1}× better; duplicates {:.2}× gossipsub's",
            "", ratio_p99, ratio_dups
        );
        results.push(serde_json::json!({
            "nodes": n, "peerlink": ours, "gossipsub": theirs,
            "time_to_all_p99_ratio": ratio_p99, "duplicates_ratio": ratio_dups,
        }));
    }
    if let Some(path) = json {
        write_doc(&path, "compare-gossip", serde_json::Value::Array(results))?;
    }
    Ok(())
}

/// peerlink in this process, then rust-libp2p kad in a child process (one
/// process holds at most ~20,000 descriptors, and at 200 nodes each side
/// needs most of them), same plan and seed.
async fn dht(
    nodes: usize,
    records: usize,
    queries: usize,
    concurrency: usize,
    json: Option<std::path::PathBuf>,
) -> Result<()> {
    println!("DHT, {nodes} nodes, 0 ms links: {records} records, {queries} gets and {queries} closest-peer lookups, {concurrency} in flight");
    let ours = peerlink_bench::dht::dht(&peerlink_bench::dht::DhtBench {
        nodes,
        link_delay: Duration::ZERO,
        records,
        queries,
        concurrency,
        nodes_per_process: nodes,
        ..Default::default()
    })
    .await?;
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "dht",
            "--kad-only",
            "--nodes",
            &nodes.to_string(),
            "--records",
            &records.to_string(),
        ])
        .args([
            "--queries",
            &queries.to_string(),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "the rust-libp2p run failed ({})",
        out.status
    );
    let theirs: kad::KadReport =
        serde_json::from_slice(&out.stdout).context("rust-libp2p report")?;
    let ms = |l: &peerlink_bench::Latency| format!("{:.1} / {:.1}", l.p50_us / 1e3, l.p99_us / 1e3);
    let ratio = |a: &peerlink_bench::Latency, b: &peerlink_bench::Latency| {
        format!(
            "{:.1}× / {:.1}×",
            b.p50_us / a.p50_us.max(1e-9),
            b.p99_us / a.p99_us.max(1e-9)
        )
    };
    println!(
        "{:<22} | {:>22} | {:>22} | {:>16}",
        "p50 / p99 ms", "peerlink", "rust-libp2p kad", "peerlink faster"
    );
    for (what, a, b) in [
        ("bootstrap (per node)", &ours.bootstrap, &theirs.bootstrap),
        ("put", &ours.put, &theirs.put),
        ("get", &ours.get, &theirs.get),
        ("closest peers", &ours.lookup, &theirs.closest),
    ] {
        println!(
            "{:<22} | {:>22} | {:>22} | {:>16}",
            what,
            ms(a),
            ms(b),
            ratio(a, b)
        );
    }
    println!(
        "{:<22} | {:>21.1}% | {:>21.1}% |",
        "get success",
        ours.get_success * 100.0,
        theirs.get_success * 100.0
    );
    println!(
        "{:<22} | {:>22.2} | {:>22.2} |",
        "all joined, s", ours.join_s, theirs.join_s
    );
    println!(
        "{:<22} | {:>22.1} | {:>22.1} |",
        "connections per node", ours.connections_per_node, theirs.connections_per_node
    );
    println!(
        "{:<22} | {:>18.0} KiB | {:>18.0} KiB |",
        "RSS per node",
        ours.rss_per_node_bytes as f64 / 1024.0,
        theirs.rss_per_node_bytes as f64 / 1024.0
    );
    println!(
        "rust-libp2p bootstraps that succeeded: {:.1}%",
        theirs.bootstrap_ok * 100.0
    );
    if let Some(path) = json {
        let all = serde_json::json!({ "peerlink": ours, "libp2p_kad": theirs });
        write_doc(&path, "compare-dht", all)?;
    }
    Ok(())
}
