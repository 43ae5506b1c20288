//! `peerlink bench`: the level-2 scenarios, printed and optionally saved as JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use peerlink_bench::baseline::{self, Baseline};
use peerlink_bench::sla::{self, Targets, Verdict};
use peerlink_net::Transport;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    workload: Workload,
    /// Also write the results as JSON to this file (with the commit, the
    /// machine and the arguments they came from).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Check the results against the targets (bench/targets.toml): print
    /// target / measured / verdict per row and exit 1 if one is missed.
    /// Rows the run did not measure at the target's parameters are "not
    /// measured", never met.
    #[arg(long, global = true)]
    check_sla: bool,
    /// Another targets file for --check-sla.
    #[arg(long, global = true, requires = "check_sla")]
    targets: Option<PathBuf>,
    /// Run the workload this many times: a baseline keeps every run, and
    /// compares medians with their confidence intervals.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Save the runs as baseline NAME (target/bench-baselines/NAME.json,
    /// or NAME itself if it is a path).
    #[arg(long, global = true, value_name = "NAME")]
    save_baseline: Option<String>,
    /// Compare with baseline NAME: the change of every metric, judged
    /// against noise (see --strict).
    #[arg(long, global = true, value_name = "NAME")]
    baseline: Option<String>,
    /// With --baseline: exit 1 if a metric regressed by more than 5 % and
    /// the confidence intervals of the two medians do not overlap.
    #[arg(long, global = true, requires = "baseline")]
    strict: bool,
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

#[derive(Clone, Subcommand)]
enum Workload {
    /// One encrypted connection, many messages in flight, vs raw TCP.
    Stream {
        /// Message sizes (repeatable; default all three).
        #[arg(long, value_enum)]
        size: Vec<Size>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// The transport peerlink runs on: tcp or quic (raw TCP stays
        /// the reference either way).
        #[arg(long, default_value = "tcp", value_parser = parse_transport)]
        transport: Transport,
    },
    /// Request/response round trips, one in flight, vs raw TCP ping-pong.
    Rr {
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// tcp or quic.
        #[arg(long, default_value = "tcp", value_parser = parse_transport)]
        transport: Transport,
    },
    /// Dial to first delivered message on a fresh connection.
    Handshake {
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// tcp or quic.
        #[arg(long, default_value = "tcp", value_parser = parse_transport)]
        transport: Transport,
    },
    /// Resident memory per idle connection (every pair of N nodes connected).
    Idle {
        #[arg(long, default_value_t = 40)]
        nodes: usize,
    },
    /// DHT put, get and lookup latency, hops and success on a real
    /// in-process network, per network size.
    Dht {
        /// Network sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
        nodes: Vec<usize>,
        /// One-way delay injected on every link, e.g. 20ms.
        #[arg(long, value_parser = parse_duration, default_value = "20ms")]
        latency: Duration,
        #[arg(long, default_value_t = 50)]
        records: usize,
        /// Gets (and as many lookups of random keys) measured.
        #[arg(long, default_value_t = 300)]
        queries: usize,
        /// Queries in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// DHT connections kept per node (the least recently used beyond this
        /// close once idle).
        #[arg(long)]
        max_dht_connections: Option<usize>,
        /// Nodes per process; larger networks spread over child processes
        /// (a loopback connection costs two of a process's ~20,000
        /// descriptors).
        #[arg(long, default_value_t = 100)]
        nodes_per_process: usize,
    },
    /// Topic gossip on a real network, per size: delivery, time until
    /// every node has a message, duplicates per node per message.
    Gossip {
        #[arg(long, value_delimiter = ',', default_value = "5,10,20,50")]
        nodes: Vec<usize>,
        #[arg(long, value_parser = parse_duration, default_value = "20ms")]
        latency: Duration,
        #[arg(long, default_value_t = 50)]
        messages: usize,
        /// Payload bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Time between two publishes.
        #[arg(long, value_parser = parse_duration, default_value = "50ms")]
        interval: Duration,
        #[arg(long, default_value_t = 100)]
        nodes_per_process: usize,
    },
    /// Churn: a share of the nodes killed and restarted on their data
    /// dirs, round after round: time to rejoin, time until gossip reaches
    /// every node again, records lost.
    Churn {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Share of the nodes killed each round.
        #[arg(long, default_value_t = 0.3)]
        killed: f64,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long, value_parser = parse_duration, default_value = "0ms")]
        latency: Duration,
    },
    /// The package registry: local and remote search, publish and install
    /// end to end, concurrent searches, cache hit rate.
    Registry(crate::bench_registry::Args),
    /// One authenticated flooder (its own process) against a node (its
    /// own process) serving honest peers: their request latency with and
    /// without the flood, and the node's memory against a stated bound.
    Flood {
        /// Seconds of each half of a round (without, then with the flood).
        #[arg(long, default_value_t = 8.0)]
        secs: f64,
        /// Rounds; the figure is the median of their ratios.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 5)]
        honest: usize,
        /// Bytes of an honest request.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// The transaction pool: insert, best(), block apply and admission
    /// on one thread; propagation on an N-node network; a sustained load
    /// with blocks on 20 nodes. Exits 1 if a transaction was lost.
    Txpool {
        /// Nodes of the propagation network (0 skips it).
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Transactions submitted in the propagation run.
        #[arg(long, default_value_t = 100)]
        txs: usize,
        /// Between two submissions in the propagation run (its latency is
        /// measured unloaded; the sustained run is the load).
        #[arg(long, value_parser = parse_duration, default_value = "50ms")]
        interval: Duration,
        /// Nodes of the sustained run (0 skips it).
        #[arg(long, default_value_t = 20)]
        sustained_nodes: usize,
        /// Transactions per second in the sustained run.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Seconds of sustained load.
        #[arg(long, default_value_t = 30.0)]
        secs: f64,
        /// Senders in the core measurement (10 transactions each).
        #[arg(long, default_value_t = 10_000)]
        senders: usize,
    },
    /// One process's share of a `bench dht` network (started by it).
    #[command(hide = true)]
    DhtShard { spec: String },
    /// The flooded node of `bench flood` (started by it).
    #[command(hide = true)]
    FloodTarget,
    /// The flooder of `bench flood` (started by it).
    #[command(hide = true)]
    FloodAttacker {
        addr: String,
        secs: f64,
        round: usize,
    },
    /// Every workload in turn, one JSON document and one targets table
    /// for all (with --check-sla).
    All {
        /// CI size: each workload small enough that the whole suite runs
        /// in a few minutes. Targets stated at other sizes are then "not
        /// measured".
        #[arg(long)]
        quick: bool,
    },
    /// Markdown tables and SVG plots from result files (the --json of any
    /// workload or `bench all`, bench/compare, peerlink-icount).
    Report {
        /// Result documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Directory for the SVG plots.
        #[arg(long, default_value = "bench/report")]
        plots: PathBuf,
        /// Write the markdown to this file (default: print it).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace what lies between `<!-- report:begin -->` and
        /// `<!-- report:end -->` in this file (BENCHMARKS.md): the tables
        /// are generated, the analysis around them stays.
        #[arg(long, conflicts_with = "out")]
        update: Option<PathBuf>,
    },
    /// A fresh node joins an N-node network through one seed: time to the
    /// end of its bootstrap lookup and to a full routing table.
    Bootstrap {
        #[arg(long, value_delimiter = ',', default_value = "5,10,20,50")]
        nodes: Vec<usize>,
        #[arg(long, value_parser = parse_duration, default_value = "0ms")]
        latency: Duration,
        /// Joins measured per network size.
        #[arg(long, default_value_t = 10)]
        joins: usize,
    },
}

/// `20ms`, `1.5s`, `500us` or a bare number of milliseconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 20ms"))?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        _ => return Err(format!("unknown unit {unit:?} (use s, ms or us)")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Workload {
    /// The subcommand's name, as targets.toml names workloads.
    fn name(&self) -> &'static str {
        match self {
            Workload::Stream { .. } => "stream",
            Workload::Rr { .. } => "rr",
            Workload::Handshake { .. } => "handshake",
            Workload::Idle { .. } => "idle",
            Workload::Dht { .. } => "dht",
            Workload::Gossip { .. } => "gossip",
            Workload::Churn { .. } => "churn",
            Workload::Registry(_) => "registry",
            Workload::Flood { .. } => "flood",
            Workload::Txpool { .. } => "txpool",
            Workload::Bootstrap { .. } => "bootstrap",
            Workload::DhtShard { .. } => "dht-shard",
            Workload::FloodTarget => "flood-target",
            Workload::FloodAttacker { .. } => "flood-attacker",
            Workload::All { .. } => "all",
            Workload::Report { .. } => "report",
        }
    }
}

/// One workload parsed from its command line (for `bench all`).
#[derive(clap::Parser)]
#[command(no_binary_name = true)]
struct One {
    #[command(subcommand)]
    workload: Workload,
}

/// `bench all`: every workload, in this order; with `--quick`, at these
/// arguments (CI size: proves each still runs, in a few minutes).
const ALL: &[(&str, &str)] = &[
    ("stream", "--secs 0.3"),
    ("rr", "--secs 0.5"),
    ("handshake", "--count 20"),
    ("idle", "--nodes 10"),
    ("bootstrap", "--nodes 5,10 --joins 3"),
    (
        "dht",
        "--nodes 10,30 --latency 0ms --records 10 --queries 30",
    ),
    ("gossip", "--nodes 5,10 --latency 0ms --messages 10"),
    ("churn", "--nodes 10 --rounds 1"),
    (
        "registry",
        "--packages 2000 --queries 200 --peers 5 --nodes 10 --latency 0ms --publishes 5 \
         --installs 5 --concurrency 1,10 --secs 0.5 --zipf-packages 200 --zipf-installs 2000",
    ),
    ("flood", "--secs 1 --rounds 1 --honest 2"),
    (
        "txpool",
        "--nodes 20 --txs 30 --sustained-nodes 5 --rate 100 --secs 3 --senders 500",
    ),
];

pub async fn run(args: Args) -> Result<()> {
    // A bad targets file is refused before anything runs.
    let targets = match (args.check_sla, &args.targets) {
        (false, _) => None,
        (true, Some(path)) => Some((path.display().to_string(), Targets::load(path)?)),
        (true, None) => Some(("bench/targets.toml".to_string(), Targets::builtin()?)),
    };
    let workload = match args.workload {
        Workload::DhtShard { spec } => return peerlink_bench::dht::serve_shard(&spec).await,
        Workload::FloodTarget => return peerlink_bench::flood::serve_target().await,
        Workload::FloodAttacker { addr, secs, round } => {
            return peerlink_bench::flood::serve_flooder(&addr, secs, round).await
        }
        Workload::Report {
            files,
            plots,
            out,
            update,
        } => {
            return report(
                &files,
                &plots,
                out.as_deref().or(update.as_deref()),
                update.is_some(),
            )
        }
        w => w,
    };
    let name = workload.name();
    // A bad or mismatched baseline is refused before anything runs.
    let base = match &args.baseline {
        Some(b) => {
            let base = Baseline::load(&baseline::path_of(b))?;
            if base.workload != name {
                anyhow::bail!("baseline {b} is of workload {}, not {name}", base.workload);
            }
            Some(base)
        }
        None => None,
    };
    let repeats = args.repeat as usize;
    let mut runs = Vec::with_capacity(repeats);
    let mut checked = Vec::new();
    for i in 0..repeats {
        if repeats > 1 {
            println!("\n=== run {} of {repeats}", i + 1);
        }
        let (report, c) = pass(workload.clone(), targets.as_ref().map(|t| &t.1)).await?;
        runs.push(report);
        checked = c;
    }
    let checked = targets.as_ref().map(|(file, _)| {
        println!("\ntargets ({file}):");
        if checked.is_empty() {
            println!("no target rows for workload {name}");
        } else {
            print!("{}", sla::table(&checked));
        }
        checked
    });
    let mut regressed = 0;
    if let Some(base) = &base {
        let direction_from = targets
            .as_ref()
            .map(|t| t.1.clone())
            .or(Targets::builtin().ok());
        let rows = baseline::compare(
            base,
            &baseline::metrics(&runs),
            direction_from.as_ref(),
            name,
        );
        println!(
            "\nagainst baseline {} ({} runs, now {repeats}; intervals cover the median with {:.0} % / {:.0} %):",
            args.baseline.as_deref().unwrap_or_default(),
            base.repeats,
            baseline::coverage(base.repeats) * 100.0,
            baseline::coverage(repeats) * 100.0,
        );
        print!("{}", baseline::table(&rows));
        regressed = rows
            .iter()
            .filter(|r| r.verdict == baseline::Verdict::Regressed)
            .count();
    }
    if let Some(b) = &args.save_baseline {
        let path = baseline::path_of(b);
        Baseline::new(name, &runs).save(&path)?;
        println!("saved baseline {b} ({repeats} runs) to {}", path.display());
    }
    if let Some(path) = args.json {
        let report = runs.last().cloned().unwrap_or_default();
        let mut doc =
            peerlink_bench::provenance::document(name, report, serde_json::to_value(&checked)?);
        if repeats > 1 {
            doc["runs"] = serde_json::Value::Array(runs);
        }
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    let missed = checked
        .iter()
        .flatten()
        .filter(|c| c.verdict == Verdict::Missed)
        .count();
    if missed > 0 {
        anyhow::bail!("{missed} target(s) missed");
    }
    if args.strict && regressed > 0 {
        anyhow::bail!("{regressed} metric(s) regressed against the baseline");
    }
    Ok(())
}

/// `bench report`: reads the documents, draws the plots, writes (or
/// splices) the markdown.
fn report(
    files: &[PathBuf],
    plots_dir: &std::path::Path,
    out: Option<&std::path::Path>,
    splice: bool,
) -> Result<()> {
    use peerlink_bench::report;
    let docs = files
        .iter()
        .map(|f| report::load(f))
        .collect::<Result<Vec<_>>>()?;
    let plots = report::plots(&docs, plots_dir)?;
    // Links relative to where the markdown goes.
    let base = out
        .and_then(|o| o.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."));
    let links: Vec<PathBuf> = plots
        .iter()
        .map(|p| {
            p.strip_prefix(&base)
                .or_else(|_| p.strip_prefix("./"))
                .map(|r| r.to_path_buf())
                .unwrap_or_else(|_| p.clone())
        })
        .collect();
    let md = report::markdown(&docs, &links);
    match out {
        None => print!("{md}"),
        Some(path) if splice => {
            let (begin, end) = ("<!-- report:begin -->", "<!-- report:end -->");
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let (Some(b), Some(e)) = (text.find(begin), text.find(end)) else {
                anyhow::bail!(
                    "{} has no {begin} ... {end} section to replace",
                    path.display()
                );
            };
            if e < b {
                anyhow::bail!("{}: {end} comes before {begin}", path.display());
            }
            let spliced = format!("{}{begin}\n{md}\n{}", &text[..b], &text[e..]);
            std::fs::write(path, spliced)?;
            eprintln!(
                "updated {} ({} plots in {})",
                path.display(),
                plots.len(),
                plots_dir.display()
            );
        }
        Some(path) => {
            std::fs::write(path, md)?;
            eprintln!(
                "wrote {} ({} plots in {})",
                path.display(),
                plots.len(),
                plots_dir.display()
            );
        }
    }
    Ok(())
}

/// One run of `workload` (every workload in turn for `all`): its results
/// and, with targets, the verdict on each row.
async fn pass(
    workload: Workload,
    targets: Option<&Targets>,
) -> Result<(serde_json::Value, Vec<sla::Checked>)> {
    let mut checked = Vec::new();
    let report = match workload {
        Workload::All { quick } => {
            let mut results = serde_json::Map::new();
            for (name, quick_args) in ALL {
                let quick_args = if quick { *quick_args } else { "" };
                println!("\n== bench {name} {quick_args}");
                let mut argv = vec![*name];
                argv.extend(quick_args.split_whitespace());
                let w = <One as clap::Parser>::try_parse_from(argv)?.workload;
                let r = measure(w).await.with_context(|| format!("bench {name}"))?;
                if let Some(t) = targets {
                    checked.extend(t.check(name, &r));
                }
                results.insert(name.to_string(), r);
            }
            serde_json::Value::Object(results)
        }
        w => {
            let name = w.name();
            let r = measure(w).await?;
            if let Some(t) = targets {
                checked = t.check(name, &r);
            }
            r
        }
    };
    Ok((report, checked))
}

pub(crate) fn parse_transport(s: &str) -> Result<Transport, String> {
    match s {
        "tcp" => Ok(Transport::Tcp),
        "quic" => Ok(Transport::Quic),
        other => Err(format!("unknown transport {other:?} (tcp or quic)")),
    }
}

/// Runs one workload, prints its table and returns its results.
async fn measure(workload: Workload) -> Result<serde_json::Value> {
    Ok(match workload {
        Workload::Stream {
            size,
            secs,
            transport,
        } => {
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
                let r = peerlink_bench::stream_on(transport, s.bytes(), secs).await?;
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
        Workload::Rr {
            size,
            secs,
            transport,
        } => {
            let r = peerlink_bench::request_response_on(transport, size, secs).await?;
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
        Workload::Handshake { count, transport } => {
            let r = peerlink_bench::handshake_on(transport, count).await?;
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
        Workload::Dht {
            nodes,
            latency,
            records,
            queries,
            concurrency,
            max_dht_connections,
            nodes_per_process,
        } => {
            println!(
                "DHT on real nodes, {:.0} ms one-way links: {records} records, {queries} gets and {queries} lookups, {concurrency} in flight",
                latency.as_secs_f64() * 1e3
            );
            println!(
                "{:>6} | {:>8} | {:>15} | {:>15} {:>7} {:>4} | {:>15} {:>4} | {:>6} | {:>9}",
                "nodes",
                "join s",
                "put p50/p99 ms",
                "get p50/p99 ms",
                "success",
                "hops",
                "lookup p50/p99",
                "hops",
                "conns",
                "RSS/node"
            );
            let mut all = Vec::new();
            for n in nodes {
                let mut b = peerlink_bench::dht::DhtBench {
                    nodes: n,
                    link_delay: latency,
                    records,
                    queries,
                    concurrency,
                    nodes_per_process,
                    ..Default::default()
                };
                if let Some(c) = max_dht_connections {
                    b.max_dht_connections = c;
                }
                let r = peerlink_bench::dht::dht(&b).await?;
                if r.processes > 1 {
                    println!("       ({} nodes over {} processes)", r.nodes, r.processes);
                }
                let ms = |l: &peerlink_bench::Latency| {
                    format!("{:.0}/{:.0}", l.p50_us / 1e3, l.p99_us / 1e3)
                };
                println!(
                    "{:>6} | {:>8.2} | {:>15} | {:>15} {:>6.1}% {:>4} | {:>15} {:>4} | {:>6.1} | {:>6.0} KiB",
                    r.nodes,
                    r.join_s,
                    ms(&r.put),
                    ms(&r.get),
                    r.get_success * 100.0,
                    r.get_hops_p50,
                    ms(&r.lookup),
                    r.lookup_hops_p50,
                    r.connections_per_node,
                    r.rss_per_node_bytes as f64 / 1024.0
                );
                all.push(r);
            }
            serde_json::to_value(all)?
        }
        Workload::Churn {
            nodes,
            killed,
            rounds,
            latency,
        } => {
            let b = peerlink_bench::churn::ChurnBench {
                nodes,
                killed,
                rounds,
                link_delay: latency,
            };
            let r = peerlink_bench::churn::churn(&b).await?;
            println!(
                "Churn: {nodes} nodes, {:.0} % killed and restarted on their data dirs per round, {:.0} ms links",
                killed * 100.0,
                latency.as_secs_f64() * 1e3
            );
            println!(
                "{:>5} | {:>6} | {:>10} | {:>22} | {:>14}",
                "round", "killed", "rejoin", "gossip resumes after", "records lost"
            );
            for (i, x) in r.rounds.iter().enumerate() {
                println!(
                    "{:>5} | {:>6} | {:>7.0} ms | {:>8.0} ms ({:.2} hb) | {:>7} of {}",
                    i + 1,
                    x.killed,
                    x.rejoin_ms,
                    x.gossip_resume_ms,
                    x.gossip_resume_heartbeats,
                    x.records_lost,
                    x.reads
                );
            }
            serde_json::to_value(r)?
        }
        Workload::Gossip {
            nodes,
            latency,
            messages,
            size,
            interval,
            nodes_per_process,
        } => {
            println!(
                "Gossip on real nodes, {:.0} ms one-way links: {messages} messages of {size} B, one every {:.0} ms from a random node",
                latency.as_secs_f64() * 1e3,
                interval.as_secs_f64() * 1e3
            );
            println!(
                "{:>6} | {:>5} | {:>9} | {:>20} | {:>18} | {:>10} | {:>4}",
                "nodes",
                "procs",
                "delivery",
                "time-to-all p50/p99",
                "latency p50/p99",
                "dups/node",
                "hops"
            );
            let mut all = Vec::new();
            for n in nodes {
                let b = peerlink_bench::gossip::GossipBench {
                    nodes: n,
                    link_delay: latency,
                    messages,
                    size,
                    interval,
                    nodes_per_process,
                    ..Default::default()
                };
                let r = peerlink_bench::gossip::gossip(&b).await?;
                let ms = |l: &peerlink_bench::Latency| {
                    format!("{:.1}/{:.1} ms", l.p50_us / 1e3, l.p99_us / 1e3)
                };
                println!(
                    "{:>6} | {:>5} | {:>8.3}% | {:>20} | {:>18} | {:>10.2} | {:>4}",
                    r.nodes,
                    r.processes,
                    r.delivery * 100.0,
                    ms(&r.time_to_all),
                    ms(&r.latency),
                    r.duplicates_per_node_per_message,
                    r.hops_p50
                );
                all.push(r);
            }
            serde_json::to_value(all)?
        }
        Workload::Registry(a) => crate::bench_registry::run(a).await?,
        Workload::Txpool {
            nodes,
            txs,
            interval,
            sustained_nodes,
            rate,
            secs,
            senders,
        } => {
            txpool(peerlink_bench::txpool::TxpoolBench {
                nodes,
                txs,
                interval,
                sustained_nodes,
                rate,
                secs,
                senders: senders.max(1),
                ..Default::default()
            })
            .await?
        }
        Workload::DhtShard { .. }
        | Workload::FloodTarget
        | Workload::FloodAttacker { .. }
        | Workload::All { .. }
        | Workload::Report { .. } => anyhow::bail!("not a measurement"),
        Workload::Flood {
            secs,
            rounds,
            honest,
            size,
        } => {
            let b = peerlink_bench::flood::FloodBench {
                secs,
                honest,
                size,
                rounds,
            };
            println!(
                "{honest} honest peers, one request in flight each, {size} B; {rounds} rounds of {secs} s without, then {secs} s with a fresh flooder"
            );
            let r = peerlink_bench::flood::flood(&b).await?;
            let ms = |l: &peerlink_bench::Latency| {
                format!(
                    "{:.2}/{:.2} ms ({} requests)",
                    l.p50_us / 1e3,
                    l.p99_us / 1e3,
                    l.samples
                )
            };
            for (i, round) in r.rounds.iter().enumerate() {
                println!(
                    "round {}: honest p50/p99 {} without, {} with the flood — p99 ratio {:.2}",
                    i + 1,
                    ms(&round.no_flood),
                    ms(&round.flood),
                    round.p99_ratio
                );
                for p in &round.phases {
                    println!(
                        "  while flooding {:<13} {} — p99 ratio {:.2}",
                        format!("{}:", p.phase),
                        ms(&p.latency),
                        p.p99_ratio
                    );
                }
            }
            println!(
                "p99 ratio, median of {} rounds: {:.2} (target <= 2)",
                r.rounds.len(),
                r.p99_ratio
            );
            for p in &r.phases {
                println!(
                    "  while flooding {:<13} median p99 ratio {:.2}",
                    format!("{}:", p.phase),
                    p.p99_ratio
                );
            }
            println!(
                "flooded node RSS: {:.1} MiB before, {:.1} MiB peak (bound {:.0} MiB)",
                r.rss_before as f64 / 1048576.0,
                r.rss_peak as f64 / 1048576.0,
                r.rss_bound as f64 / 1048576.0
            );
            println!("flooder: {:?}", r.flooder);
            println!("flooded node: {}", r.target);
            serde_json::to_value(r)?
        }
        Workload::Bootstrap {
            nodes,
            latency,
            joins,
        } => {
            println!(
                "a fresh node joins through one seed, {:.0} ms one-way links, {joins} joins per size",
                latency.as_secs_f64() * 1e3
            );
            println!(
                "{:>6} | {:>20} | {:>22} | {:>6} | {:>5}",
                "nodes", "bootstrap p50/p99 ms", "full table p50/p99 ms", "RTTs", "full"
            );
            let mut all = Vec::new();
            for n in nodes {
                let r = peerlink_bench::dht::bootstrap(n, latency, joins).await?;
                println!(
                    "{:>6} | {:>20} | {:>22} | {:>6} | {:>4.0}%",
                    r.nodes,
                    format!(
                        "{:.1}/{:.1}",
                        r.bootstrap.p50_us / 1e3,
                        r.bootstrap.p99_us / 1e3
                    ),
                    format!(
                        "{:.1}/{:.1}",
                        r.full_table.p50_us / 1e3,
                        r.full_table.p99_us / 1e3
                    ),
                    r.full_table_rtts_p50
                        .map_or("-".to_string(), |x| format!("{x:.1}")),
                    r.full_fraction * 100.0
                );
                all.push(r);
            }
            serde_json::to_value(all)?
        }
    })
}

async fn txpool(b: peerlink_bench::txpool::TxpoolBench) -> Result<serde_json::Value> {
    let r = peerlink_bench::txpool::txpool(&b).await?;
    let c = &r.core;
    println!(
        "transaction pool core, one thread: {} transactions from {} senders",
        c.transactions, c.senders
    );
    println!(
        "  insert, warm pool  p50 {:>8.0} ns  p99 {:>8.0} ns   (target p50 <= 500 ns)",
        c.insert_ns.p50_us * 1e3,
        c.insert_ns.p99_us * 1e3
    );
    println!(
        "  insert, fresh pool p50 {:>7.0} ns  p99 {:>8.0} ns   (its memory touched the first time)",
        c.insert_cold_ns.p50_us * 1e3,
        c.insert_cold_ns.p99_us * 1e3
    );
    println!(
        "  pop best()        p50 {:>8.0} ns  p99 {:>8.0} ns   (target p50 <= 300 ns)",
        c.pop_ns.p50_us * 1e3,
        c.pop_ns.p99_us * 1e3
    );
    println!(
        "  apply a block of {} p50 {:>7.3} ms  p99 {:>7.3} ms   (target <= 1 ms)",
        c.block_txs,
        c.block_apply.p50_us / 1e3,
        c.block_apply.p99_us / 1e3
    );
    println!(
        "  admission: one by one {:.1} k/s, batched {:.1} k/s on 1 thread, {:.1} k/s on 2 (target >= 50 k/s on 2 cores)",
        c.admission_one_by_one_per_s / 1e3,
        c.admission_batched_1_thread_per_s / 1e3,
        c.admission_batched_2_threads_per_s / 1e3
    );
    if let Some(p) = &r.propagation {
        println!(
            "propagation, {} nodes, 0 ms links, {} transactions: {:.2} % of pools complete; time to all p50 {:.1} ms p99 {:.1} ms (target p99 <= 50 ms); {:.2} full copies per node (target <= 1.3); {} fetch failures, {} announcements unsent",
            p.nodes,
            p.submitted,
            p.complete * 100.0,
            p.time_to_all.p50_us / 1e3,
            p.time_to_all.p99_us / 1e3,
            p.copies_per_node,
            p.fetch_failures,
            p.unsent
        );
    }
    if let Some(s) = &r.sustained {
        let l = &s.load;
        println!(
            "sustained, {} nodes, {} tx/s for {:.0} s, blocks every 500 ms: {} submitted ({} refused), {} included by height {}; every pool empty {:.0} ms after the load ({}); time to all pools p50 {:.1} ms p99 {:.1} ms; {:.2} full copies per node; largest pool {}; RSS {:.0} -> peak {:.0} -> {:.0} MiB",
            l.nodes,
            s.rate,
            s.secs,
            l.submitted,
            l.refused_at_submit,
            l.included,
            l.height,
            l.settle_ms,
            if l.settled { "converged" } else { "NOT converged" },
            l.time_to_all.p50_us / 1e3,
            l.time_to_all.p99_us / 1e3,
            l.copies_per_node,
            l.max_pool,
            s.rss_before as f64 / 1048576.0,
            l.rss_peak as f64 / 1048576.0,
            s.rss_after as f64 / 1048576.0
        );
    }
    let lost = r
        .propagation
        .as_ref()
        .is_some_and(|p| !p.settled || p.refused_at_submit > 0)
        || r.sustained.as_ref().is_some_and(|s| {
            !s.load.settled || s.load.included != s.load.submitted || s.load.refused_at_submit > 0
        });
    let v = serde_json::to_value(&r)?;
    if lost {
        anyhow::bail!("transactions were lost or stuck: {v}");
    }
    Ok(v)
}
