//! `peerlink bench registry`: the package registry's workloads on the
//! embedded catalogue of 20,000 real packages (see
//! `peerlink_bench::registry`).

use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;
use peerlink_bench::registry as reg;
use peerlink_bench::Latency;
use peerlink_registry::catalogue::Catalogue;
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Local,
    Remote,
    PublishInstall,
    Concurrent,
    Cache,
}

#[derive(Clone, clap::Args)]
pub struct Args {
    /// Workloads to run (repeatable; default all).
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// Packages of the catalogue indexed.
    #[arg(long, default_value_t = 20_000)]
    packages: usize,
    /// Queries per search measurement.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Peers asked at once by a remote search.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20")]
    peers: Vec<usize>,
    /// Network size for publish and install.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// One-way link delays for remote search, publish and install.
    #[arg(long, value_delimiter = ',', value_parser = crate::bench::parse_duration, default_value = "0ms,20ms")]
    latency: Vec<Duration>,
    #[arg(long, default_value_t = 30)]
    publishes: usize,
    #[arg(long, default_value_t = 20)]
    installs: usize,
    /// Searches in flight.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100")]
    concurrency: Vec<usize>,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Cache workloads: packages under the Zipf law, the cache's share of
    /// the packages, the exponent, installs (at least 10 per package).
    #[arg(long, default_value_t = 1000)]
    zipf_packages: usize,
    #[arg(long, default_value_t = 0.1)]
    zipf_cache: f64,
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    #[arg(long, default_value_t = 50_000)]
    zipf_installs: usize,
}

fn ms(l: &Latency) -> String {
    format!("{:.2}/{:.2} ms", l.p50_us / 1e3, l.p99_us / 1e3)
}

pub async fn run(a: Args) -> Result<Value> {
    let on = |p: Part| a.only.is_empty() || a.only.contains(&p);
    let cat = Catalogue::embedded().truncate(a.packages);
    let queries = reg::queries(&cat, a.queries, 7);
    let mut out = serde_json::Map::new();
    if on(Part::Local) {
        let r = reg::local_search(&cat, &queries)?;
        println!(
            "local search, {} packages indexed (built in {:.0} ms): p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs over {} queries, {:.1} hits each",
            r.packages, r.index_build_ms, r.latency.p50_us, r.latency.p90_us, r.latency.p99_us, r.latency.samples, r.mean_hits
        );
        out.insert("local_search".into(), serde_json::to_value(r)?);
    }
    if on(Part::Remote) {
        let q: Vec<String> = queries.iter().take(500).cloned().collect();
        let mut all = Vec::new();
        for &lat in &a.latency {
            println!(
                "remote search, {:.0} ms links (each peer holds {} packages), {} queries:",
                lat.as_secs_f64() * 1e3,
                cat.len(),
                q.len()
            );
            let rows = reg::remote_search(&cat, &a.peers, lat, &q).await?;
            for r in &rows {
                println!(
                    "  {:>3} peers in parallel: {:>20}   answered {:.1}, {:.1} hits after merging",
                    r.peers,
                    ms(&r.latency),
                    r.mean_answered,
                    r.mean_hits
                );
            }
            all.push(json!({ "link_delay_ms": lat.as_secs_f64() * 1e3, "rows": rows }));
        }
        out.insert("remote_search".into(), Value::Array(all));
    }
    if on(Part::PublishInstall) {
        let mut all = Vec::new();
        for (k, &lat) in a.latency.iter().enumerate() {
            let mut rn = reg::RegistryNet::start(a.nodes, lat).await?;
            rn.meter.start();
            let mut r =
                reg::publish_install(&rn.registries, &cat, a.publishes, a.installs, 11 + k as u64)
                    .await?;
            r.latency_ms = lat.as_secs_f64() * 1e3;
            let ops = (r.publish.samples + r.install.samples) as u64;
            r.usage = Some(rn.meter.finish(a.nodes, "publish or install", ops));
            rn.shutdown().await;
            println!(
                "{} nodes, {:.0} ms links: publish p50/p99 {} ({} publishes); install of {} packages ({} KiB) p50/p99 {} ({} installs)",
                r.nodes,
                r.latency_ms,
                ms(&r.publish),
                r.publish.samples,
                r.install_packages,
                r.install_bytes / 1024,
                ms(&r.install),
                r.install.samples
            );
            let st = r.publish_steps_p50_ms;
            println!(
                "    publish steps p50: check (DHT get) {:.1} ms, then at once: put {:.1} ms, provide {:.1} ms, announce {:.1} ms",
                st[0], st[1], st[2], st[3]
            );
            all.push(r);
        }
        out.insert("publish_install".into(), serde_json::to_value(all)?);
    }
    if on(Part::Concurrent) {
        println!(
            "concurrent remote searches against one node ({} packages):",
            cat.len()
        );
        let rows = reg::concurrent_searches(&cat, &a.concurrency, a.secs, &queries).await?;
        for r in &rows {
            println!(
                "  {:>4} in flight: {:>9.0} searches/s, latency p50/p99 {}",
                r.in_flight,
                r.searches_per_sec,
                ms(&r.latency)
            );
        }
        out.insert("concurrent_searches".into(), serde_json::to_value(rows)?);
    }
    if on(Part::Cache) {
        let dir = tempfile::tempdir()?;
        let downloads: Vec<f64> = cat.entries.iter().map(|e| e.downloads as f64).collect();
        let workloads = [
            (
                format!("zipf s={}", a.zipf_exponent),
                reg::zipf_weights(a.zipf_packages, a.zipf_exponent),
            ),
            ("npm downloads".to_string(), downloads),
        ];
        let mut rows = Vec::new();
        for (k, (name, weights)) in workloads.iter().enumerate() {
            let installs = a.zipf_installs.max(weights.len() * 10);
            let r = reg::cache_hit_rate(
                name,
                weights,
                a.zipf_cache,
                installs,
                &dir.path().join(k.to_string()),
                3,
            )?;
            println!(
                "cache (LRU, {:.0} % of packages): {:>14} over {:>5} packages, {} installs: hit rate {:.1} % (best possible {:.1} %)",
                a.zipf_cache * 100.0,
                r.popularity,
                r.packages,
                r.installs,
                r.hit_rate * 100.0,
                r.optimum_hit_rate * 100.0
            );
            rows.push(r);
        }
        out.insert("cache".into(), serde_json::to_value(rows)?);
    }
    Ok(json!(out))
}
