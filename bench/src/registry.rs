//! The package registry's workloads (`peerlink bench registry`), on the
//! embedded catalogue of 20,000 real npm packages:
//!
//! * [`local_search`]: one node's tantivy index over the whole catalogue;
//!   queries are words from real package summaries.
//! * [`remote_search`]: a node with an empty index asks P peers in
//!   parallel (each holds the catalogue) and merges their answers.
//! * [`publish_install`]: publish end to end (sign, store, DHT put,
//!   provide, announce) and install of a 1 MiB package with 5
//!   dependencies on nodes that never fetched it, on an N-node network.
//! * [`concurrent_searches`]: K remote searches in flight against one
//!   node: throughput and latency.
//! * [`cache_hit_rate`]: the content cache's hit rate when installs follow
//!   a Zipf law, or the catalogue's real download counts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peerlink_net::testnet::{Testnet, TestnetConfig};
use peerlink_proto::rng::Rng;
use peerlink_registry::cache::BlobCache;
use peerlink_registry::catalogue::{write_package, Catalogue};
use peerlink_registry::index::SearchIndex;
use peerlink_registry::{
    CacheLimits, Hash, Manifest, Registry, RegistryConfig, Release, SignedRelease,
};
use serde::Serialize;

use crate::Latency;

/// `n` search queries: one or two words from random real summaries.
pub fn queries(cat: &Catalogue, n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !cat.is_empty() {
        let e = &cat.entries[rng.below(cat.len() as u64) as usize];
        let words: Vec<&str> = e
            .summary
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 3)
            .collect();
        if words.is_empty() {
            out.push(e.name.clone());
            continue;
        }
        let i = rng.below(words.len() as u64) as usize;
        let q = match (rng.below(2), words.get(i + 1)) {
            (1, Some(next)) => format!("{} {next}", words[i]),
            _ => words[i].to_string(),
        };
        out.push(q.to_lowercase());
    }
    out
}

/// The catalogue's releases, signed by one publisher key, for workloads
/// that read metadata only (search): no archive is packed, each release's
/// blob hash is of a stand-in (its name), and nothing is ever fetched.
pub fn catalogue_releases(cat: &Catalogue, key: &peerlink_net::Keypair) -> Vec<SignedRelease> {
    (0..cat.len())
        .filter_map(|i| {
            let m = cat.manifest(i)?;
            let mut r = Release::new(&m, m.name.as_bytes(), 0);
            r.downloads = cat.entries[i].downloads;
            Some(SignedRelease::sign(r, key))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalSearchReport {
    pub packages: usize,
    pub index_build_ms: f64,
    pub latency: Latency,
    pub mean_hits: f64,
}

pub fn local_search(cat: &Catalogue, queries: &[String]) -> Result<LocalSearchReport> {
    let key = peerlink_net::Keypair::generate()?;
    let releases = catalogue_releases(cat, &key);
    let started = Instant::now();
    let index = SearchIndex::new()?;
    for r in &releases {
        index.upsert(&r.release);
    }
    index.commit()?;
    let index_build_ms = started.elapsed().as_secs_f64() * 1e3;
    // Warm-up: the first searches fault pages in.
    for q in queries.iter().take(100) {
        index.search(q, 10)?;
    }
    let mut samples = Vec::with_capacity(queries.len());
    let mut hits = 0;
    for q in queries {
        let t = Instant::now();
        hits += index.search(q, 10)?.len();
        samples.push(t.elapsed());
    }
    Ok(LocalSearchReport {
        packages: index.len() as usize,
        index_build_ms,
        latency: Latency::from_samples(samples),
        mean_hits: hits as f64 / queries.len().max(1) as f64,
    })
}

/// A testnet whose nodes all run the registry.
pub struct RegistryNet {
    pub net: Testnet,
    pub registries: Vec<Registry>,
    /// Started before the network: its memory baseline.
    pub meter: crate::Meter,
    _dir: tempfile::TempDir,
}

/// Starts a registry on each node, with its data under `dir`.
pub async fn start_registries(nodes: &[peerlink_net::Node], dir: &Path) -> Result<Vec<Registry>> {
    let mut registries = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let config = RegistryConfig::new(dir.join(format!("node{i}")));
        registries.push(Registry::start(n.clone(), config).await?);
    }
    Ok(registries)
}

impl RegistryNet {
    pub async fn start(nodes: usize, latency: Duration) -> Result<RegistryNet> {
        let meter = crate::Meter::new();
        let net = Testnet::start(TestnetConfig {
            nodes,
            link_delay: latency,
            ..TestnetConfig::default()
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let registries = start_registries(&net.nodes, dir.path()).await?;
        Ok(RegistryNet {
            net,
            registries,
            meter,
            _dir: dir,
        })
    }

    pub async fn shutdown(&self) {
        self.net.shutdown().await;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RemoteSearchRow {
    pub peers: usize,
    pub latency: Latency,
    pub mean_answered: f64,
    pub mean_hits: f64,
}

/// For each P in `peers`: a node with an empty index searches with its P
/// nearest peers (each holding the catalogue).
pub async fn remote_search(
    cat: &Catalogue,
    peers: &[usize],
    latency: Duration,
    queries: &[String],
) -> Result<Vec<RemoteSearchRow>> {
    let max = peers.iter().copied().max().unwrap_or(1);
    let rn = RegistryNet::start(max + 1, latency).await?;
    let key = peerlink_net::Keypair::generate()?;
    let releases = catalogue_releases(cat, &key);
    for r in &rn.registries[1..] {
        r.import(releases.clone()).await?;
    }
    let searcher_node = &rn.net.nodes[0];
    let mut rows = Vec::new();
    for &p in peers {
        // As `search --remote` does, with exactly P peers, connected now
        // (idle connections close after 30 s, as in any testnet).
        let searcher = &rn.registries[0];
        for n in &rn.net.nodes[1..=p] {
            if !searcher_node.is_connected(&n.peer_id()) {
                searcher_node
                    .connect(n.addr().context("no address")?)
                    .await?;
            }
        }
        let targets: Vec<_> = rn.net.nodes[1..=p].iter().map(|n| n.peer_id()).collect();
        let mut samples = Vec::with_capacity(queries.len());
        let (mut answered, mut hits) = (0usize, 0usize);
        for q in queries {
            let t = Instant::now();
            let mut calls = tokio::task::JoinSet::new();
            for id in &targets {
                let (s, q, id) = (searcher.clone(), q.clone(), *id);
                calls.spawn(async move { s.search_peer(&id, &q, 10).await.ok() });
            }
            let mut merged = Vec::new();
            while let Some(r) = calls.join_next().await {
                if let Ok(Some(h)) = r {
                    answered += 1;
                    merged.extend(h);
                }
            }
            let merged = peerlink_registry::index::merge(merged, 10);
            samples.push(t.elapsed());
            hits += merged.len();
        }
        rows.push(RemoteSearchRow {
            peers: p,
            latency: Latency::from_samples(samples),
            mean_answered: answered as f64 / queries.len().max(1) as f64,
            mean_hits: hits as f64 / queries.len().max(1) as f64,
        });
    }
    rn.shutdown().await;
    Ok(rows)
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishInstallReport {
    /// Packages published (the catalogue's and the 1 MiB one).
    pub published: usize,
    pub nodes: usize,
    pub latency_ms: f64,
    pub publish: Latency,
    /// Medians of the publish steps: ownership check (DHT get), DHT put,
    /// provide, announce.
    pub publish_steps_p50_ms: [f64; 4],
    /// Installs of a 1 MiB package with 5 dependencies, each on a node
    /// that had none of them.
    pub install: Latency,
    pub install_packages: usize,
    pub install_bytes: u64,
    /// CPU per publish or install, the whole network's, and memory per
    /// node (when the caller metered the network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::Usage>,
}

/// Publishes `publishes` catalogue packages (16 KiB each) from random
/// nodes, then a 1 MiB package with 5 of them as dependencies, then
/// installs it on `installs` other nodes, one after another.
pub async fn publish_install(
    registries: &[Registry],
    cat: &Catalogue,
    publishes: usize,
    installs: usize,
    seed: u64,
) -> Result<PublishInstallReport> {
    let dir = tempfile::tempdir()?;
    let n = registries.len();
    let mut rng = Rng::new(seed);
    // Dependencies point backwards, so publishing in order keeps every
    // published tree installable.
    let count = publishes.clamp(6, cat.len());
    let mut publish = Vec::with_capacity(count);
    let mut steps = Vec::with_capacity(count);
    let mut publishers = std::collections::BTreeSet::new();
    for i in 0..count {
        let path = cat.write_package(i, dir.path(), 16 * 1024)?;
        let who = rng.below(n as u64) as usize;
        publishers.insert(who);
        let t = Instant::now();
        let r = registries[who].publish(&path).await?;
        publish.push(t.elapsed());
        steps.push([r.check_ms, r.put_ms, r.provide_ms, r.announce_ms]);
    }
    // The 1 MiB package: 5 published catalogue packages without
    // dependencies of their own.
    let deps: Vec<(String, semver::VersionReq)> = (0..count)
        .rev()
        .filter_map(|i| cat.manifest(i))
        .filter(|m| m.dependencies.is_empty())
        .take(5)
        .filter_map(|m| {
            let req = semver::VersionReq::parse(&format!("={}", m.version)).ok()?;
            Some((m.name, req))
        })
        .collect();
    let big = Manifest {
        name: format!("bench-big-{seed}"),
        version: semver::Version::new(1, 0, 0),
        description: "One MiB of content with five dependencies".into(),
        keywords: vec!["bench".into()],
        license: "MIT".into(),
        dependencies: deps.into_iter().collect(),
    };
    let path = write_package(&big, dir.path(), 1 << 20)?;
    let who = rng.below(n as u64) as usize;
    publishers.insert(who);
    registries[who].publish(&path).await?;
    let mut install = Vec::new();
    let (mut pkgs, mut bytes) = (0, 0);
    for (k, registry) in registries.iter().enumerate() {
        if install.len() >= installs {
            break;
        }
        if publishers.contains(&k) {
            continue;
        }
        let to = dir.path().join(format!("install{k}"));
        let t = Instant::now();
        let r = registry.install(&big.name, &to, None).await?;
        install.push(t.elapsed());
        pkgs = r.packages.len();
        bytes = r.packages.iter().map(|p| p.bytes).sum();
    }
    let median = |k: usize| {
        let mut v: Vec<f64> = steps.iter().map(|s: &[f64; 4]| s[k]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Ok(PublishInstallReport {
        published: count + 1,
        nodes: n,
        latency_ms: 0.0,
        publish_steps_p50_ms: [median(0), median(1), median(2), median(3)],
        publish: Latency::from_samples(publish),
        install: Latency::from_samples(install),
        install_packages: pkgs,
        install_bytes: bytes,
        usage: None,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ConcurrencyRow {
    pub in_flight: usize,
    pub searches_per_sec: f64,
    pub latency: Latency,
}

/// K searches in flight from one node to another holding the catalogue,
/// for `secs` per level.
pub async fn concurrent_searches(
    cat: &Catalogue,
    levels: &[usize],
    secs: f64,
    queries: &[String],
) -> Result<Vec<ConcurrencyRow>> {
    let rn = RegistryNet::start(2, Duration::ZERO).await?;
    let key = peerlink_net::Keypair::generate()?;
    rn.registries[1]
        .import(catalogue_releases(cat, &key))
        .await?;
    let server = rn.net.nodes[1].peer_id();
    let queries = std::sync::Arc::new(queries.to_vec());
    let mut rows = Vec::new();
    for &k in levels {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..k {
            let (client, queries) = (rn.registries[0].clone(), queries.clone());
            tasks.spawn(async move {
                let mut samples = Vec::new();
                let mut i = t;
                while Instant::now() < deadline {
                    let q = &queries[i % queries.len().max(1)];
                    let s = Instant::now();
                    if client.search_peer(&server, q, 10).await.is_ok() {
                        samples.push(s.elapsed());
                    }
                    i += k;
                }
                samples
            });
        }
        let started = Instant::now();
        let mut samples = Vec::new();
        while let Some(r) = tasks.join_next().await {
            samples.extend(r?);
        }
        let elapsed = started.elapsed().as_secs_f64();
        rows.push(ConcurrencyRow {
            in_flight: k,
            searches_per_sec: samples.len() as f64 / elapsed,
            latency: Latency::from_samples(samples),
        });
    }
    rn.shutdown().await;
    Ok(rows)
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    /// "zipf s=1" or "npm downloads".
    pub popularity: String,
    pub packages: usize,
    pub cache_entries: usize,
    pub installs: usize,
    pub hit_rate: f64,
    /// The best any cache of this size could do: the share of installs
    /// that go to the most popular `cache_entries` packages.
    pub optimum_hit_rate: f64,
    pub evictions: u64,
}

/// Zipf weights 1/k^s for `n` packages.
pub fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect()
}

/// Installs drawn with probability proportional to `weights`, through a
/// content cache holding `fraction` of the packages: fetch on a miss, keep.
pub fn cache_hit_rate(
    popularity: &str,
    weights: &[f64],
    fraction: f64,
    installs: usize,
    dir: &Path,
    seed: u64,
) -> Result<CacheReport> {
    let packages = weights.len().max(1);
    let entries = ((packages as f64 * fraction).round() as usize).max(1);
    let cache = BlobCache::open(
        dir,
        CacheLimits {
            max_entries: entries,
            max_bytes: u64::MAX,
        },
    )?;
    let mut cdf = Vec::with_capacity(packages);
    let mut total = 0.0;
    for w in weights {
        total += w;
        cdf.push(total);
    }
    let mut sorted = weights.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let optimum = sorted.iter().take(entries).sum::<f64>() / total;
    let mut rng = Rng::new(seed);
    for _ in 0..installs {
        let u = (rng.next_u64() as f64 / u64::MAX as f64) * total;
        let k = cdf.partition_point(|&c| c < u).min(packages - 1);
        let blob = format!("package {k}").into_bytes();
        let hash = Hash::of(&blob);
        if cache.get(&hash).is_none() {
            cache.put(hash, &blob, false)?;
        }
    }
    let stats = cache.stats();
    Ok(CacheReport {
        popularity: popularity.to_string(),
        packages,
        cache_entries: entries,
        installs,
        hit_rate: stats.hit_rate(),
        optimum_hit_rate: optimum,
        evictions: stats.evictions,
    })
}
