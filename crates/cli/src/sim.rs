//! `peerlink sim dht` and `peerlink sim gossip`: the protocol code in the
//! simulator, at up to 100,000 nodes.

use std::time::{Duration, Instant};

use peerlink_proto::dht::QueryOutput;
use peerlink_sim::{GossipSim, GossipSimConfig, Latency, Sim, SimConfig};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Join N nodes, then run random lookups and compare each result with
    /// the true k closest (brute force).
    Dht {
        #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
        nodes: usize,
        #[arg(long, default_value_t = 200)]
        lookups: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Probability that a message is lost.
        #[arg(long, default_value_t = 0.0, value_parser = fraction)]
        loss: f64,
        #[arg(long)]
        json: bool,
    },
    /// Every node subscribes to one topic; random nodes publish; reports
    /// delivery, time to all nodes and duplicates.
    Gossip {
        #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
        nodes: usize,
        #[arg(long, default_value_t = 100)]
        messages: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Probability that a message is lost.
        #[arg(long, default_value_t = 0.0, value_parser = fraction)]
        loss: f64,
        /// Fraction of nodes killed at once half way through.
        #[arg(long, default_value_t = 0.0, value_parser = fraction)]
        kill: f64,
        /// Fixed one-way link delay (e.g. 20ms) instead of the geographic model.
        #[arg(long, value_parser = crate::bench::parse_duration)]
        latency: Option<Duration>,
        /// Random connections each node opens.
        #[arg(long, default_value_t = 8)]
        peers: usize,
        #[arg(long, default_value_t = 256)]
        payload: usize,
        #[arg(long)]
        json: bool,
    },
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("a network needs at least one node".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A probability or share: 0 to 1.
fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        Ok(f) => Err(format!("{f} is not between 0 and 1")),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (nodes, lookups, seed, loss, json) = match args.what {
        What::Dht {
            nodes,
            lookups,
            seed,
            loss,
            json,
        } => (nodes, lookups, seed, loss, json),
        What::Gossip {
            nodes,
            messages,
            seed,
            loss,
            kill,
            latency,
            peers,
            payload,
            json,
        } => {
            let mut sim = GossipSim::new(GossipSimConfig {
                nodes,
                seed,
                loss,
                kill,
                latency: latency.map_or(Latency::Geo, Latency::Fixed),
                peers_per_node: peers,
                payload,
                ..GossipSimConfig::default()
            });
            let report = sim.run(messages);
            print(&serde_json::to_value(&report)?, json)?;
            return Ok(());
        }
    };
    let rss0 = peerlink_bench::rss_bytes().unwrap_or(0);
    let t = Instant::now();
    let mut sim = Sim::new(SimConfig {
        nodes,
        seed,
        loss,
        ..SimConfig::default()
    });
    sim.join_all();
    let join_wall = t.elapsed();
    let join_events = sim.stats.events;
    let rss = peerlink_bench::rss_bytes()
        .unwrap_or(0)
        .saturating_sub(rss0);
    let k = sim.dht(0).config().k;
    let (mut exact, mut found, mut hops, mut lat) = (0usize, 0usize, Vec::new(), Vec::new());
    let t2 = Instant::now();
    let ev2 = sim.stats.events;
    for _ in 0..lookups {
        let from = sim.random_alive();
        let key = sim.random_key();
        let r = sim.closest_peers(from, key);
        let QueryOutput::ClosestPeers(got) = r.output else {
            continue;
        };
        let got: Vec<_> = got.iter().map(|c| c.id).collect();
        let truth = sim.lookup_truth(from, &key, k);
        exact += usize::from(got == truth);
        found += truth.iter().filter(|t| got.contains(t)).count();
        hops.push(r.hops);
        lat.push(r.elapsed);
    }
    let lookup_wall = t2.elapsed();
    hops.sort_unstable();
    lat.sort_unstable();
    let pct = |v: &[Duration], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let n = lookups.max(1) as f64;
    let report = serde_json::json!({
        "nodes": nodes,
        "seed": seed,
        "lookups": lookups,
        "exact_k_closest": exact as f64 / n,
        "recall": found as f64 / (n * k as f64),
        "hops_p50": hops.get(hops.len() / 2),
        "lookup_virtual_ms_p50": pct(&lat, 0.5).as_secs_f64() * 1e3,
        "lookup_virtual_ms_p99": pct(&lat, 0.99).as_secs_f64() * 1e3,
        "join_wall_s": join_wall.as_secs_f64(),
        "events": sim.stats.events,
        "events_per_sec_join": join_events as f64 / join_wall.as_secs_f64(),
        "events_per_sec_lookups": (sim.stats.events - ev2) as f64 / lookup_wall.as_secs_f64(),
        "rss_per_node_bytes": rss / nodes.max(1) as u64,
        "table_entries_per_node": sim.table_entries() / nodes.max(1),
    });
    print(&report, json)
}

fn print(report: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(())
}
