//! `peerlink bench`: the level-2 scenarios, printed and optionally saved as JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    workload: Workload,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Size {
    #[value(name = "64")]
    B64,
    #[value(name = "1024")]
    K1,
    #[value(name = "16384")]
    K16,
}

impl Size {
    fn bytes(self) -> usize {
        match self {
            Size::B64 => 64,
            Size::K1 => 1024,
            Size::K16 => 16384,
        }
    }
}

#[derive(Subcommand)]
enum Workload {
    /// One encrypted connection, many messages in flight, vs raw TCP.
    Stream {
        /// Message sizes (repeatable; default all three).
        #[arg(long, value_enum)]
        size: Vec<Size>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Request/response round trips, one in flight, vs raw TCP ping-pong.
    Rr {
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Dial to first delivered message on a fresh connection.
    Handshake {
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
    /// Resident memory per idle connection (every pair of N nodes connected).
    Idle {
        #[arg(long, default_value_t = 40)]
        nodes: usize,
    },
}

pub async fn run(args: Args) -> Result<()> {
    let report = match args.workload {
        Workload::Stream { size, secs } => {
            let sizes = if size.is_empty() {
                vec![Size::B64, Size::K1, Size::K16]
            } else {
                size
            };
            let mut all = Vec::new();
            println!(
                "{:>7} | {:>14} {:>12} {:>10} | {:>14} {:>12} | {:>8} | in order",
                "size", "peerlink msg/s", "MiB/s", "CPU ns/msg", "raw TCP msg/s", "MiB/s", "of raw"
            );
            for s in sizes {
                let r = peerlink_bench::stream(s.bytes(), secs).await?;
                println!(
                    "{:>7} | {:>14.0} {:>12.1} {:>10.0} | {:>14.0} {:>12.1} | {:>7.1}% | {}",
                    r.size,
                    r.peerlink.msgs_per_sec,
                    r.peerlink.mib_per_sec,
                    r.cpu_ns_per_msg.unwrap_or(f64::NAN),
                    r.raw_tcp.msgs_per_sec,
                    r.raw_tcp.mib_per_sec,
                    r.ratio_to_raw * 100.0,
                    if r.complete_and_ordered { "yes" } else { "NO" }
                );
                if !r.complete_and_ordered {
                    anyhow::bail!("messages were lost or reordered at {} bytes", r.size);
                }
                all.push(r);
            }
            serde_json::to_value(all)?
        }
        Workload::Rr { size, secs } => {
            let r = peerlink_bench::request_response(size, secs).await?;
            println!(
                "request/response, {size} B, one in flight ({} round trips)",
                r.peerlink.samples
            );
            let row = |name: &str, l: &peerlink_bench::Latency| {
                println!(
                    "  {name:<20} p50 {:>8.1} µs   p99 {:>8.1} µs",
                    l.p50_us, l.p99_us
                );
            };
            row("peerlink", &r.peerlink);
            row("raw TCP (tokio)", &r.raw_tcp);
            row("raw TCP (blocking)", &r.raw_tcp_blocking);
            println!(
                "  {:<20} p50 {:>8.2}×     p99 {:>8.2}×",
                "ratio to tokio", r.p50_ratio, r.p99_ratio
            );
            println!(
                "  {:<20} p50 {:>8.2}×",
                "ratio to blocking", r.p50_ratio_blocking
            );
            serde_json::to_value(r)?
        }
        Workload::Handshake { count } => {
            let r = peerlink_bench::handshake(count).await?;
            let l = &r.dial_to_first_message;
            println!(
                "dial to first message ({} dials): p50 {:.0} µs, p99 {:.0} µs",
                l.samples, l.p50_us, l.p99_us
            );
            serde_json::to_value(r)?
        }
        Workload::Idle { nodes } => {
            let r = peerlink_bench::idle_memory(nodes.max(2)).await?;
            println!(
                "{} idle connections among {} nodes: {:.1} KiB per connection (both ends), {:.1} KiB per node without connections",
                r.connections,
                r.nodes,
                r.bytes_per_connection / 1024.0,
                r.bytes_per_node / 1024.0
            );
            serde_json::to_value(r)?
        }
    };
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
