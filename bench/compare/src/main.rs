//! peerlink vs rust-libp2p 0.57 (tcp + noise + yamux) on the same stream
//! workload, in one invocation: one connection, many messages in flight.
//!
//! rust-libp2p is measured twice: one `write_all` per message (what a
//! user writes first), and with the sender buffering into 64 KiB writes by
//! hand (what a user must do to go fast).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/stream/1");

#[derive(Parser)]
struct Args {
    /// Message sizes.
    #[arg(long, value_delimiter = ',', default_value = "64,1024,16384")]
    sizes: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Write all results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn swarm() -> Result<libp2p::Swarm<libp2p_stream::Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Messages per second and MiB/s of one libp2p stream.
async fn libp2p_stream(size: usize, secs: f64, buffered: bool) -> Result<(f64, f64)> {
    let mut server = swarm()?;
    let mut client = swarm()?;
    let server_id = *server.local_peer_id();
    let mut incoming = server.behaviour().new_control().accept(PROTOCOL)?;
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let mut control = client.behaviour().new_control();
    client.dial(addr)?;
    tokio::spawn(async move { loop { server.select_next_some().await; } });
    tokio::spawn(async move { loop { client.select_next_some().await; } });

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
    Ok(((total / size as u64) as f64 / s, total as f64 / (1 << 20) as f64 / s))
}

#[tokio::main(worker_threads = 2)]
async fn main() -> Result<()> {
    // All work on the two workers, none on the main thread.
    tokio::spawn(run(Args::parse())).await?
}

async fn run(args: Args) -> Result<()> {
    let mut results = Vec::new();
    println!("{:>6} | {:>22} | {:>22} | {:>22} | {:>16} | {:>9} {:>9}",
        "size", "peerlink msg/s (MiB/s)", "libp2p direct", "libp2p buffered", "raw TCP MiB/s", "×direct", "×buffered");
    for &size in &args.sizes {
        let ours = peerlink_bench::stream(size, args.secs).await?;
        let (d_msgs, d_mib) = libp2p_stream(size, args.secs, false).await?;
        let (b_msgs, b_mib) = libp2p_stream(size, args.secs, true).await?;
        println!(
            "{:>6} | {:>12.0} ({:>7.1}) | {:>12.0} ({:>7.1}) | {:>12.0} ({:>7.1}) | {:>16.1} | {:>8.1}× {:>8.1}×",
            size, ours.peerlink.msgs_per_sec, ours.peerlink.mib_per_sec, d_msgs, d_mib, b_msgs, b_mib,
            ours.raw_tcp.mib_per_sec, ours.peerlink.msgs_per_sec / d_msgs, ours.peerlink.msgs_per_sec / b_msgs,
        );
        results.push(serde_json::json!({
            "size": size,
            "peerlink": ours,
            "libp2p_direct": { "msgs_per_sec": d_msgs, "mib_per_sec": d_mib },
            "libp2p_buffered": { "msgs_per_sec": b_msgs, "mib_per_sec": b_mib },
            "ratio_direct": ours.peerlink.msgs_per_sec / d_msgs,
            "ratio_buffered": ours.peerlink.msgs_per_sec / b_msgs,
        }));
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
