//! The registry running on a [`Node`]: publish, search, info and install
//! over the DHT, gossip and request/response.
//!
//! * **Records.** A package's releases live in one signed DHT record under
//!   `registry/pkg/NAME` ([`PackageRecord`]). The DHT refuses a record
//!   under a key that another key already holds, and every node's store
//!   refuses a release of a name it has seen owned by another key.
//! * **Blobs.** Archives are served in 256 KiB chunks over
//!   `registry/chunk/1`; a node that has one (published or installed)
//!   provides `registry/blob/HASH` in the DHT. Installs take chunks from
//!   several providers at once and check each against the signed chunk
//!   hashes, so a provider that sends garbage is caught, disconnected and
//!   replaced at its first bad chunk; one that stalls times out and is
//!   replaced.
//! * **Announcements.** New releases go out on the gossip topic
//!   `registry/announce`; the validator checks signature and ownership
//!   before a message is forwarded, and every node adds what it accepts to
//!   its store and its search index.
//! * **Publish is done when it is stored.** A publish succeeds once the
//!   package record and the provider record are each on
//!   [`REQUIRED_REPLICAS`] peers (fewer when the node knows fewer);
//!   otherwise it fails with [`RegistryError::NotStored`] and can be run
//!   again: publishing the same archive under the same version again only
//!   re-stores it. Peers over their write rate answer "slow down" and the
//!   DHT sends the write again in the slot it was given, so a burst of
//!   honest publishes is paced, not lost.
//! * **Search.** The local index answers first; peers are asked over
//!   `registry/search/1` in parallel when the caller wants it or when the
//!   local index has too few hits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use peerlink_net::dbwriter::Ticket;
use peerlink_net::{GossipMessage, NetError, Node, PeerAddr, PeerId, Validation};
use peerlink_proto::prefix::Prefix;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admit::{Allowance, NewReleases};
use crate::archive::{self, ArchiveError, Limits};
use crate::cache::{BlobCache, CacheLimits, CacheStats};
use crate::index::{decode_hits, merge, Hit, IndexError, SearchIndex, MAX_HITS, MAX_QUERY_LEN};
use crate::manifest::{Manifest, ManifestError};
use crate::release::{
    Hash, PackageRecord, Release, ReleaseError, SignedRelease, CHUNK_SIZE, MAX_BLOB_SIZE,
};
use crate::resolve::{self, ResolveError, Universe};
use crate::store::{Inserted, MetaStore, Origin, StoreError, StoreLimits};

/// The gossip topic new releases are announced on.
pub const ANNOUNCE_TOPIC: &str = "registry/announce";
pub const SEARCH_PROTOCOL: &str = "registry/search/1";
pub const CHUNK_PROTOCOL: &str = "registry/chunk/1";
/// Most packages an install's dependency graph may reach (each unknown
/// one costs a DHT lookup; hostile graphs stop here).
const MAX_TREE_PACKAGES: usize = 5000;
/// Largest search request body.
const MAX_SEARCH_REQUEST: usize = 1024;

fn package_key(name: &str) -> String {
    format!("registry/pkg/{name}")
}

fn blob_key(hash: &Hash) -> String {
    format!("registry/blob/{hash}")
}

fn task_failed(e: tokio::task::JoinError) -> RegistryError {
    RegistryError::Task(e.to_string())
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, f64) {
    let t = Instant::now();
    let r = f.await;
    (r, ms_since(t))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Settings; [`RegistryConfig::new`] has the defaults.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Where the store and the content cache live.
    pub dir: PathBuf,
    pub cache: CacheLimits,
    pub archive: Limits,
    /// Peers a remote search asks at once.
    pub search_peers: usize,
    /// Fewer local hits than this make a search ask peers too.
    pub min_local_hits: usize,
    pub search_timeout: Duration,
    /// A chunk request slower than this fails over to another provider.
    pub chunk_timeout: Duration,
    /// Blobs fetched at once during one install.
    pub parallel_fetches: usize,
    /// Chunk requests in flight to one provider, over all installs at
    /// once; more wait their turn here (their timeout starts when they are
    /// sent). 8 chunks are 2 MiB: within what a connection queues for its
    /// responses, so a provider never has to drop one under demand.
    pub chunks_per_provider: usize,
    /// Providers one archive is fetched from at most (provider lists are
    /// unverified: anyone may announce).
    pub max_providers: usize,
    /// One archive must arrive within this, whoever provides it.
    pub fetch_deadline: Duration,
    /// New releases (names or versions) peers may make us store, per
    /// publisher key and per network they arrive from ([`crate::admit`]).
    pub per_publisher: Allowance,
    pub per_prefix: Allowance,
    /// Bounds on releases announced by peers ([`crate::store`]).
    pub store: StoreLimits,
    /// A release announced by a peer is checked for a provider this long
    /// after it arrived; if nobody serves its archive it leaves the store
    /// and the search index. Served ones are checked again every
    /// `recheck_every`.
    pub unserved_grace: Duration,
    pub recheck_every: Duration,
    /// How often due checks run, and how many releases one round checks.
    pub sweep_every: Duration,
    pub sweep_batch: usize,
}

impl RegistryConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RegistryConfig {
            dir: dir.into(),
            cache: CacheLimits::default(),
            archive: Limits::default(),
            search_peers: 8,
            min_local_hits: 3,
            search_timeout: Duration::from_secs(2),
            chunk_timeout: Duration::from_secs(3),
            parallel_fetches: 8,
            chunks_per_provider: 8,
            max_providers: 16,
            fetch_deadline: Duration::from_secs(120),
            per_publisher: Allowance {
                burst: 1000.0,
                per_sec: 1.0,
            },
            per_prefix: Allowance {
                burst: 2000.0,
                per_sec: 2.0,
            },
            store: StoreLimits::default(),
            unserved_grace: Duration::from_secs(600),
            recheck_every: Duration::from_secs(6 * 3600),
            sweep_every: Duration::from_secs(10),
            sweep_batch: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{0} is already published; bump the version to publish again")]
    AlreadyPublished(String),
    #[error(
        "{id}: the DHT record reached {record} and the provider record {provider} of the \
         {required} peers needed; the release is kept here, run publish again to retry"
    )]
    NotStored {
        id: String,
        record: usize,
        provider: usize,
        required: usize,
    },
    #[error("the package is {size} bytes packed, over the limit of {MAX_BLOB_SIZE}")]
    TooLarge { size: u64 },
    #[error("the DHT record of {name} is invalid: {reason}")]
    BadRecord { name: String, reason: String },
    #[error("{id}: no provider could deliver the archive ({tried} tried: {reasons})")]
    Fetch {
        id: String,
        tried: usize,
        reasons: String,
    },
    #[error("peer {0} sent a malformed search answer")]
    BadAnswer(String),
    #[error("the dependency graph of {0} reaches more than {MAX_TREE_PACKAGES} packages")]
    TreeTooLarge(String),
    #[error("an internal task failed: {0}")]
    Task(String),
    #[error("{0:?} is not NAME or NAME@REQUIREMENT: {1}")]
    Spec(String, String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Peers that must hold a package's record and provider record before a
/// publish reports success (or all the node knows, when fewer).
pub const REQUIRED_REPLICAS: usize = 3;

/// What a publish found for its release.
enum Checked {
    /// A new version: the name's record so far.
    New(PackageRecord),
    /// This archive was published under this version before by this key
    /// (an earlier publish that did not reach enough peers): only the
    /// record and provider are stored again, with the first signature.
    Again(PackageRecord, Box<SignedRelease>),
}

/// Counters a node keeps about its registry.
#[derive(Default)]
struct Counters {
    announcements_accepted: AtomicU64,
    announcements_refused: AtomicU64,
    announcements_throttled: AtomicU64,
    announcements_over_quota: AtomicU64,
    unserved_evicted: AtomicU64,
    searches_served: AtomicU64,
    chunks_served: AtomicU64,
    bad_chunks: AtomicU64,
    bad_answers: AtomicU64,
    failovers: AtomicU64,
}

/// A snapshot of a registry's state and counters.
#[derive(Clone, Debug, Serialize)]
pub struct RegistryStats {
    pub packages: usize,
    pub releases: usize,
    pub indexed: u64,
    pub cache: CacheStats,
    pub cache_hit_rate: f64,
    pub announcements_accepted: u64,
    pub announcements_refused: u64,
    /// Announcements of new releases ignored: over a publisher's or a
    /// network's allowance, or with the store full.
    pub announcements_throttled: u64,
    pub announcements_over_quota: u64,
    /// Releases from peers and their bytes held (bounded by
    /// [`RegistryConfig::store`]).
    pub remote_releases: usize,
    pub remote_bytes: usize,
    /// Releases from peers that no provider served, evicted.
    pub unserved_evicted: u64,
    pub searches_served: u64,
    pub chunks_served: u64,
    /// Chunks that failed their hash (the provider was disconnected).
    pub bad_chunks: u64,
    /// Malformed search answers (the peer was disconnected).
    pub bad_answers: u64,
    /// Chunk requests that failed over to another provider.
    pub failovers: u64,
}

/// What a publish did.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    pub name: String,
    pub version: String,
    pub blob: String,
    pub size: u64,
    pub files: usize,
    /// Peers that stored the package record (plus this node).
    pub record_stored: usize,
    pub provider_stored: usize,
    /// Mesh peers the announcement went to.
    pub announced_to: usize,
    /// The DHT lookup of the name's current record (ownership, versions).
    pub check_ms: f64,
    /// The three network steps, run at once after the check.
    pub put_ms: f64,
    pub provide_ms: f64,
    pub announce_ms: f64,
    pub elapsed_ms: f64,
}

/// What a search found.
#[derive(Clone, Debug, Serialize)]
pub struct SearchReport {
    pub hits: Vec<Hit>,
    pub local_hits: usize,
    pub peers_asked: usize,
    pub peers_answered: usize,
    pub elapsed_us: u64,
}

/// One package an install put in place.
#[derive(Clone, Debug, Serialize)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// "cache" or the number of providers the chunks came from.
    pub source: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct InstallReport {
    pub packages: Vec<Installed>,
    pub resolve_ms: f64,
    pub fetch_ms: f64,
    pub elapsed_ms: f64,
    pub cache_hit_rate: f64,
}

/// Fetch progress of one archive during an install.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    pub id: String,
    pub done: u64,
    pub total: u64,
    /// Something the user should know meanwhile (e.g. waiting for another
    /// install into the same directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Everything the registry knows about one package.
#[derive(Clone, Debug, Serialize)]
pub struct PackageInfo {
    pub name: String,
    pub owner: String,
    pub releases: Vec<Release>,
}

/// The registry of one node. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    config: RegistryConfig,
    store: Mutex<MetaStore>,
    /// Allowances for new releases from peers.
    admit: Mutex<NewReleases>,
    index: SearchIndex,
    cache: BlobCache,
    counters: Counters,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Chunk request slots per provider ([`RegistryConfig::chunks_per_provider`]);
    /// an entry nobody holds is dropped.
    chunk_slots: Mutex<HashMap<PeerId, Arc<tokio::sync::Semaphore>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            t.abort();
        }
    }
}

impl Registry {
    /// Opens the store and cache in `config.dir`, indexes what the store
    /// holds, and starts serving: announcements, searches and chunks.
    pub async fn start(node: Node, config: RegistryConfig) -> Result<Registry, RegistryError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Io { path, source }
        };
        let store = MetaStore::open(&config.dir, config.store)?;
        let admit = Mutex::new(NewReleases::new(config.per_publisher, config.per_prefix));
        let index = SearchIndex::new()?;
        for r in store.all_latest() {
            index.upsert(&r.release);
        }
        index.commit()?;
        let blobs = config.dir.join("blobs");
        let cache = BlobCache::open(&blobs, config.cache).map_err(io(&blobs))?;
        let gossip = node.gossip();
        let announcements = gossip.subscribe(ANNOUNCE_TOPIC)?;
        let searches = node.serve(SEARCH_PROTOCOL)?;
        let chunks = node.serve(CHUNK_PROTOCOL)?;
        let inner = Arc::new(Inner {
            node,
            config,
            store: Mutex::new(store),
            admit,
            index,
            cache,
            counters: Counters::default(),
            tasks: Mutex::new(Vec::new()),
            chunk_slots: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        gossip.set_validator(ANNOUNCE_TOPIC, move |m: &GossipMessage| {
            match weak.upgrade() {
                Some(inner) => inner.validate(m),
                None => Validation::Ignore,
            }
        })?;
        let tasks = vec![
            tokio::spawn(receive_announcements(Arc::downgrade(&inner), announcements)),
            tokio::spawn(serve_searches(Arc::downgrade(&inner), searches)),
            tokio::spawn(serve_chunks(Arc::downgrade(&inner), chunks)),
            tokio::spawn(commit_when_quiet(Arc::downgrade(&inner))),
            tokio::spawn(sweep_unserved(Arc::downgrade(&inner))),
        ];
        *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        // Keep serving what this node has: re-announce as a provider.
        let registry = Registry { inner };
        registry.provide_all();
        Ok(registry)
    }

    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    fn provide_all(&self) {
        let hashes: Vec<Hash> = {
            let store = self.inner.store();
            store
                .all_releases()
                .map(|r| r.release.blob)
                .filter(|h| self.inner.cache.contains(h))
                .collect()
        };
        if hashes.is_empty() {
            return;
        }
        let dht = self.inner.node.dht();
        tokio::spawn(async move {
            for h in hashes {
                let _ = dht.provide(blob_key(&h)).await;
            }
        });
    }

    /// Packs `dir`, signs its release with the node's key, pins the
    /// archive, stores the package record in the DHT, provides the archive
    /// and announces the release.
    pub async fn publish(&self, dir: &Path) -> Result<PublishReport, RegistryError> {
        let started = Instant::now();
        let inner = &self.inner;
        let manifest = Manifest::load(dir)?;
        let dir = dir.to_path_buf();
        let limits = inner.config.archive;
        let packed = tokio::task::spawn_blocking(move || archive::pack(&dir, &limits))
            .await
            .map_err(task_failed)??;
        if packed.bytes.len() as u64 > MAX_BLOB_SIZE {
            return Err(RegistryError::TooLarge {
                size: packed.bytes.len() as u64,
            });
        }
        let release = Release::new(&manifest, &packed.bytes, unix_ms());
        let signed = SignedRelease::sign(release, inner.node.keypair());
        // Who owns the name, by this node's store and by the network.
        // The archive is pinned and provided while the name's record is
        // looked up: a provider record for an archive nobody names is
        // harmless, and the provide lookup is the slowest step.
        let blob = signed.release.blob;
        let was_pinned = inner.cache.is_pinned(&blob);
        inner
            .cache
            .put(blob, &packed.bytes, true)
            .map_err(|source| RegistryError::Io {
                path: inner.config.dir.join("blobs"),
                source,
            })?;
        let dht = inner.node.dht();
        let provide = {
            let (dht, key) = (dht.clone(), blob_key(&blob));
            tokio::spawn(async move { timed(dht.provide(key)).await })
        };
        let check = Instant::now();
        let checked = self.check_new(&signed).await;
        let check_ms = ms_since(check);
        let (record, signed) = match checked {
            Ok(Checked::New(mut record)) => {
                inner.add_own(vec![signed.clone()]).await?;
                record.releases.push(signed.clone());
                (record, signed)
            }
            Ok(Checked::Again(record, first)) => (record, *first),
            Err(e) => {
                provide.abort();
                if !was_pinned {
                    inner.cache.remove(&blob);
                }
                return Err(e);
            }
        };
        let value = record.encode();
        let gossip = inner.node.gossip();
        let ((put, put_ms), (announce, announce_ms)) = tokio::join!(
            timed(dht.put(package_key(&manifest.name), value)),
            timed(gossip.publish(ANNOUNCE_TOPIC, signed.encode())),
        );
        let (provide, provide_ms) = provide.await.map_err(task_failed)?;
        let (record_stored, provider_stored) = (put?.value, provide?.value);
        let required = REQUIRED_REPLICAS.min(dht.info().await?.routing_table);
        if record_stored < required || provider_stored < required {
            return Err(RegistryError::NotStored {
                id: signed.release.id(),
                record: record_stored,
                provider: provider_stored,
                required,
            });
        }
        // Announcing the same release again is a duplicate: it went out
        // the first time.
        let announced_to = match announce {
            Ok(a) => a.peers,
            Err(NetError::Publish(peerlink_net::PublishError::Duplicate)) => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(PublishReport {
            name: manifest.name,
            version: manifest.version.to_string(),
            blob: blob.to_string(),
            size: packed.bytes.len() as u64,
            files: packed.files,
            record_stored,
            provider_stored,
            announced_to,
            check_ms,
            put_ms,
            provide_ms,
            announce_ms,
            elapsed_ms: ms_since(started),
        })
    }

    /// The name's current record, if `signed` may be added to it: the
    /// name is unowned or owned by the same key, and the version is new.
    async fn check_new(&self, signed: &SignedRelease) -> Result<Checked, RegistryError> {
        let name = &signed.release.name;
        let record = self.record(name).await?.unwrap_or_default();
        if let Some(first) = record.releases.first() {
            if first.publisher != signed.publisher {
                return Err(StoreError::NotOwner {
                    name: name.clone(),
                    owner: first.publisher,
                    publisher: signed.publisher,
                }
                .into());
            }
        }
        let version = &signed.release.version;
        let stored = self.inner.store().get(name, version).cloned();
        let known = stored.or_else(|| {
            record
                .releases
                .iter()
                .find(|r| r.release.version == *version)
                .cloned()
        });
        match known {
            Some(first)
                if first.publisher == signed.publisher
                    && first.release.blob == signed.release.blob =>
            {
                Ok(Checked::Again(record, Box::new(first)))
            }
            Some(_) => Err(RegistryError::AlreadyPublished(signed.release.id())),
            None => Ok(Checked::New(record)),
        }
    }

    /// The package's releases as the DHT holds them merged with this
    /// node's store (verified; what is new is stored and indexed).
    async fn record(&self, name: &str) -> Result<Option<PackageRecord>, RegistryError> {
        let got = self.inner.node.dht().get(package_key(name)).await?;
        let mut from_dht = Vec::new();
        if let Some(rec) = got.value {
            let bad = |reason: String| RegistryError::BadRecord {
                name: name.to_string(),
                reason,
            };
            let decoded = PackageRecord::decode(&rec.value).map_err(|e| bad(e.to_string()))?;
            for r in &decoded.releases {
                if r.release.name != name || r.publisher != rec.publisher {
                    return Err(bad(format!(
                        "it holds {} signed by {}, under a record of {}",
                        r.release.id(),
                        r.publisher,
                        rec.publisher
                    )));
                }
            }
            from_dht = decoded.releases;
        }
        // Ownership as this node saw it first wins over the DHT's answer.
        // A store full of peers' releases does not keep these; they are
        // used as the DHT gave them.
        let mut full = false;
        for result in self.inner.add(from_dht.clone(), Origin::Remote).0 {
            match result {
                Err(StoreError::Full { .. }) => full = true,
                other => {
                    other?;
                }
            }
        }
        let mut releases: Vec<SignedRelease> = self.inner.store().releases(name).cloned().collect();
        if full && releases.is_empty() {
            releases = from_dht;
        }
        Ok((!releases.is_empty()).then_some(PackageRecord { releases }))
    }

    /// Everything known about `name`, asking the DHT when the store has
    /// nothing.
    pub async fn info(&self, name: &str) -> Result<Option<PackageInfo>, RegistryError> {
        let local: Vec<SignedRelease> = self.inner.store().releases(name).cloned().collect();
        let releases = if local.is_empty() {
            match self.record(name).await? {
                Some(r) => r.releases,
                None => return Ok(None),
            }
        } else {
            local
        };
        Ok(releases.first().map(|first| PackageInfo {
            name: name.to_string(),
            owner: first.publisher.to_string(),
            releases: releases.iter().map(|r| r.release.clone()).collect(),
        }))
    }

    /// Searches the local index; asks peers too when `remote` is set or
    /// the local index has fewer than `min_local_hits` hits.
    pub async fn search(
        &self,
        query: &str,
        limit: usize,
        remote: bool,
    ) -> Result<SearchReport, RegistryError> {
        let started = Instant::now();
        let inner = &self.inner;
        let limit = limit.clamp(1, MAX_HITS);
        let mut hits = inner.index.search(query, limit)?;
        let local_hits = hits.len();
        let (mut asked, mut answered) = (0, 0);
        if remote || local_hits < inner.config.min_local_hits.min(limit) {
            let mut peers = inner.node.peers();
            peers.sort_by_key(|p| p.rtt.unwrap_or(Duration::MAX));
            peers.truncate(inner.config.search_peers);
            asked = peers.len();
            let mut calls = tokio::task::JoinSet::new();
            for p in peers {
                let this = self.clone();
                let query = query.to_string();
                calls.spawn(async move { this.search_peer(&p.id, &query, limit).await.ok() });
            }
            while let Some(r) = calls.join_next().await {
                if let Ok(Some(remote_hits)) = r {
                    answered += 1;
                    hits.extend(remote_hits);
                }
            }
            hits = merge(hits, limit);
        }
        Ok(SearchReport {
            hits,
            local_hits,
            peers_asked: asked,
            peers_answered: answered,
            elapsed_us: started.elapsed().as_micros() as u64,
        })
    }

    /// Asks one connected peer's index; hits that fail validation are
    /// dropped, a malformed answer is an error.
    pub async fn search_peer(
        &self,
        peer: &PeerId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Hit>, RegistryError> {
        if query.len() > MAX_QUERY_LEN {
            return Err(IndexError::QueryTooLong(query.len()).into());
        }
        let limit = limit.clamp(1, MAX_HITS);
        let body = serde_json::to_vec(&SearchRequest {
            q: query.to_string(),
            limit: limit as u32,
        })
        .unwrap_or_default();
        let reply = self
            .inner
            .node
            .request_with(
                peer,
                SEARCH_PROTOCOL,
                body,
                self.inner.config.search_timeout,
                256 * 1024,
            )
            .await?;
        decode_hits(&reply, limit).ok_or_else(|| {
            self.inner.counters.bad_answers.fetch_add(1, Relaxed);
            tracing::warn!(%peer, "sent a malformed search answer; disconnecting");
            self.inner.node.disconnect(peer);
            RegistryError::BadAnswer(peer.to_string())
        })
    }

    /// Resolves `spec` (`NAME` or `NAME@REQ`), fetches every archive of
    /// the tree (cache first, then providers), verifies and unpacks them
    /// into `to/NAME-VERSION`. Either every package of the tree is put in
    /// place or none is.
    pub async fn install(
        &self,
        spec: &str,
        to: &Path,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<InstallReport, RegistryError> {
        let started = Instant::now();
        let (name, req) = parse_spec(spec)?;
        let universe = self.universe(&name).await?;
        let order = resolve::resolve(&name, &req, &universe)?;
        let resolve_ms = started.elapsed().as_secs_f64() * 1e3;
        let releases: Vec<SignedRelease> = {
            let store = self.inner.store();
            order
                .iter()
                .filter_map(|(n, v)| store.get(n, v).cloned())
                .collect()
        };
        // Fetch in parallel, a bounded number at once.
        let fetch_started = Instant::now();
        let mut fetched: HashMap<Hash, (Bytes, String)> = HashMap::new();
        let mut pending = releases.iter();
        let mut calls = tokio::task::JoinSet::new();
        loop {
            while calls.len() < self.inner.config.parallel_fetches.max(1) {
                let Some(r) = pending.next() else { break };
                let (this, r, progress) = (self.clone(), r.clone(), progress.clone());
                calls.spawn(async move {
                    let got = this.fetch(&r, progress.as_ref()).await;
                    (r.release.blob, got)
                });
            }
            let Some(done) = calls.join_next().await else {
                break;
            };
            let (hash, got) = done.map_err(task_failed)?;
            fetched.insert(hash, got?);
        }
        let fetch_ms = fetch_started.elapsed().as_secs_f64() * 1e3;
        let to = to.to_path_buf();
        let limits = self.inner.config.archive;
        let plan: Vec<(Release, Bytes, String)> = releases
            .into_iter()
            .filter_map(|r| {
                let (bytes, source) = fetched.get(&r.release.blob)?.clone();
                Some((r.release, bytes, source))
            })
            .collect();
        let waiting = move |note: String| {
            if let Some(p) = &progress {
                let _ = p.send(Progress {
                    id: String::new(),
                    done: 0,
                    total: 0,
                    note: Some(note),
                });
            }
        };
        let packages = tokio::task::spawn_blocking(move || unpack_all(plan, &to, &limits, waiting))
            .await
            .map_err(task_failed)??;
        Ok(InstallReport {
            packages,
            resolve_ms,
            fetch_ms,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            cache_hit_rate: self.inner.cache.stats().hit_rate(),
        })
    }

    /// Every release of every package reachable from `root`: from the
    /// store, and from the DHT for names the store does not know.
    async fn universe(&self, root: &str) -> Result<Universe, RegistryError> {
        let mut universe = Universe::new();
        let mut frontier: BTreeSet<String> = [root.to_string()].into();
        let mut seen = BTreeSet::new();
        while !frontier.is_empty() {
            let mut lookups = tokio::task::JoinSet::new();
            if seen.len() + frontier.len() > MAX_TREE_PACKAGES {
                return Err(RegistryError::TreeTooLarge(root.to_string()));
            }
            for name in std::mem::take(&mut frontier) {
                seen.insert(name.clone());
                let known = self.inner.store().releases(&name).next().is_some();
                if !known {
                    let this = self.clone();
                    lookups.spawn(async move { this.record(&name).await.map(|_| ()) });
                }
            }
            while let Some(r) = lookups.join_next().await {
                // A name nobody has is reported by the resolver.
                match r {
                    Ok(Err(RegistryError::Net(_))) | Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(task_failed(e)),
                }
            }
            let store = self.inner.store();
            for name in seen.iter() {
                if universe.contains_key(name) {
                    continue;
                }
                let versions: BTreeMap<Version, BTreeMap<String, VersionReq>> = store
                    .releases(name)
                    .map(|r| (r.release.version.clone(), r.release.dependencies.clone()))
                    .collect();
                for deps in versions.values() {
                    for d in deps.keys() {
                        if !seen.contains(d) {
                            frontier.insert(d.clone());
                        }
                    }
                }
                if !versions.is_empty() {
                    universe.insert(name.clone(), versions);
                }
            }
        }
        Ok(universe)
    }

    /// One archive: from the cache, else in chunks from providers (the
    /// DHT's, and the publisher when connected: it pins what it published).
    async fn fetch(
        &self,
        signed: &SignedRelease,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
    ) -> Result<(Bytes, String), RegistryError> {
        let inner = &self.inner;
        let r = &signed.release;
        let report = |done| {
            if let Some(p) = progress {
                let _ = p.send(Progress {
                    id: r.id(),
                    done,
                    total: r.size,
                    note: None,
                });
            }
        };
        if let Some(bytes) = inner.cache.get(&r.blob) {
            if Hash::of(&bytes) == r.blob {
                report(r.size);
                return Ok((Bytes::from(bytes), "cache".into()));
            }
        }
        let announced: Vec<PeerAddr> = inner
            .node
            .dht()
            .providers(blob_key(&r.blob))
            .await?
            .value
            .into_iter()
            .map(|c| PeerAddr::with(c.id, c.transport_addr()))
            .collect();
        let owner = signed.publisher;
        let owner = inner
            .node
            .remote(&owner)
            .map(|at| PeerAddr::with(owner, at));
        let providers = pick_providers(
            owner,
            announced,
            inner.node.peer_id(),
            &inner
                .node
                .addrs()
                .iter()
                .map(|a| a.addr)
                .collect::<Vec<_>>(),
            inner.config.max_providers,
        );
        let fail = |tried: usize, reasons: Vec<String>| RegistryError::Fetch {
            id: r.id(),
            tried,
            reasons: if reasons.is_empty() {
                "no provider is known".into()
            } else {
                reasons.join("; ")
            },
        };
        if providers.is_empty() {
            return Err(fail(0, vec![]));
        }
        // Chunk i starts at provider i mod P and moves on when one fails.
        let bad: Arc<Mutex<BTreeSet<PeerId>>> = Arc::default();
        let reasons: Arc<Mutex<Vec<String>>> = Arc::default();
        let done = Arc::new(AtomicU64::new(0));
        let mut calls = tokio::task::JoinSet::new();
        for (i, want) in r.chunks.iter().enumerate() {
            let (this, providers, want) = (self.clone(), providers.clone(), *want);
            let (bad, reasons, done, blob) = (bad.clone(), reasons.clone(), done.clone(), r.blob);
            let progress = progress.cloned();
            let (id, total) = (r.id(), r.size);
            calls.spawn(async move {
                let n = providers.len();
                for k in 0..n {
                    let Some(p) = providers.get((i + k) % n) else {
                        break;
                    };
                    if bad.lock().map(|b| b.contains(&p.id)).unwrap_or(true) {
                        continue;
                    }
                    if k > 0 {
                        this.inner.counters.failovers.fetch_add(1, Relaxed);
                    }
                    match this.chunk(p, &blob, i as u32, &want).await {
                        Ok(bytes) => {
                            let d =
                                done.fetch_add(bytes.len() as u64, Relaxed) + bytes.len() as u64;
                            if let Some(tx) = &progress {
                                let _ = tx.send(Progress {
                                    id,
                                    done: d,
                                    total,
                                    note: None,
                                });
                            }
                            return Some((i, bytes, p.id));
                        }
                        Err(e) => {
                            if let ChunkError::Garbage = e {
                                if let Ok(mut b) = bad.lock() {
                                    b.insert(p.id);
                                }
                            }
                            if let Ok(mut rs) = reasons.lock() {
                                rs.push(format!("{}: {e}", p.id));
                            }
                        }
                    }
                }
                None
            });
        }
        let mut parts: Vec<Option<Bytes>> = vec![None; r.chunks.len()];
        let mut used = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + inner.config.fetch_deadline;
        loop {
            match tokio::time::timeout_at(deadline, calls.join_next()).await {
                Ok(Some(Ok(Some((i, bytes, from))))) => {
                    if let Some(slot) = parts.get_mut(i) {
                        *slot = Some(bytes);
                    }
                    used.insert(from);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    calls.abort_all();
                    if let Ok(mut rs) = reasons.lock() {
                        rs.push(format!(
                            "not complete within {:?} (fetch_deadline)",
                            inner.config.fetch_deadline
                        ));
                    }
                    break;
                }
            }
        }
        let reasons = reasons.lock().map(|r| r.clone()).unwrap_or_default();
        if parts.iter().any(Option::is_none) {
            return Err(fail(providers.len(), reasons));
        }
        let mut blob = Vec::with_capacity(r.size as usize);
        for p in parts.into_iter().flatten() {
            blob.extend_from_slice(&p);
        }
        if Hash::of(&blob) != r.blob {
            return Err(fail(
                providers.len(),
                vec!["the chunks do not add up to the signed archive".into()],
            ));
        }
        // Keep it, and offer it to others from now on.
        if inner.cache.put(r.blob, &blob, false).is_ok() {
            let dht = inner.node.dht();
            let key = blob_key(&r.blob);
            tokio::spawn(async move {
                let _ = dht.provide(key).await;
            });
        }
        Ok((Bytes::from(blob), format!("{} providers", used.len())))
    }

    /// One chunk from one provider, checked against its signed hash.
    async fn chunk(
        &self,
        provider: &PeerAddr,
        blob: &Hash,
        index: u32,
        want: &Hash,
    ) -> Result<Bytes, ChunkError> {
        let node = &self.inner.node;
        // Wait for a slot to this provider before the clock starts: under
        // demand requests queue here instead of timing out there.
        let slots = {
            let mut map = self
                .inner
                .chunk_slots
                .lock()
                .map_err(|_| ChunkError::Net(NetError::Shutdown))?;
            map.retain(|_, s| Arc::strong_count(s) > 1);
            let per = self.inner.config.chunks_per_provider.max(1);
            map.entry(provider.id)
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(per)))
                .clone()
        };
        let _slot = slots
            .acquire_owned()
            .await
            .map_err(|_| ChunkError::Net(NetError::Shutdown))?;
        if !node.is_connected(&provider.id) {
            node.connect(*provider).await.map_err(ChunkError::Net)?;
        }
        let mut body = Vec::with_capacity(36);
        body.extend_from_slice(&blob.0);
        body.extend_from_slice(&index.to_be_bytes());
        let bytes = node
            .request_with(
                &provider.id,
                CHUNK_PROTOCOL,
                body,
                self.inner.config.chunk_timeout,
                CHUNK_SIZE,
            )
            .await
            .map_err(ChunkError::Net)?;
        if Hash::of(&bytes) != *want {
            self.inner.counters.bad_chunks.fetch_add(1, Relaxed);
            tracing::warn!(peer = %provider.id, "sent a chunk that fails its hash; disconnecting");
            node.disconnect(&provider.id);
            return Err(ChunkError::Garbage);
        }
        Ok(bytes)
    }

    pub fn stats(&self) -> RegistryStats {
        let inner = &self.inner;
        let c = &inner.counters;
        let (packages, releases, (remote_releases, remote_bytes)) = {
            let s = inner.store();
            (s.packages(), s.releases_total(), s.remote_usage())
        };
        let cache = inner.cache.stats();
        RegistryStats {
            packages,
            releases,
            indexed: inner.index.len(),
            cache_hit_rate: cache.hit_rate(),
            cache,
            announcements_accepted: c.announcements_accepted.load(Relaxed),
            announcements_refused: c.announcements_refused.load(Relaxed),
            announcements_throttled: c.announcements_throttled.load(Relaxed),
            announcements_over_quota: c.announcements_over_quota.load(Relaxed),
            remote_releases,
            remote_bytes,
            unserved_evicted: c.unserved_evicted.load(Relaxed),
            searches_served: c.searches_served.load(Relaxed),
            chunks_served: c.chunks_served.load(Relaxed),
            bad_chunks: c.bad_chunks.load(Relaxed),
            bad_answers: c.bad_answers.load(Relaxed),
            failovers: c.failovers.load(Relaxed),
        }
    }

    /// Adds already signed releases (an imported catalogue, say) to the
    /// store and index without touching the network; searchable on return.
    pub async fn import(&self, releases: Vec<SignedRelease>) -> Result<usize, RegistryError> {
        let new = self.inner.add_own(releases).await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.index.commit())
            .await
            .map_err(task_failed)??;
        Ok(new)
    }
}

#[derive(Debug, thiserror::Error)]
enum ChunkError {
    #[error("{0}")]
    Net(NetError),
    #[error("sent a chunk that does not match its signed hash")]
    Garbage,
}

impl Inner {
    fn store(&self) -> std::sync::MutexGuard<'_, MetaStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores releases and indexes the new ones; returns a result per
    /// release and the ticket of their write.
    fn add(
        &self,
        releases: Vec<SignedRelease>,
        origin: Origin,
    ) -> (Vec<Result<Inserted, StoreError>>, Option<Ticket>) {
        let ids: Vec<(String, Version)> = releases
            .iter()
            .map(|r| (r.release.name.clone(), r.release.version.clone()))
            .collect();
        let (results, ticket, newest) = {
            let mut store = self.store();
            let (results, ticket) = store.insert_many(releases, origin);
            let newest: Vec<Release> = ids
                .iter()
                .zip(&results)
                .filter(|(_, res)| matches!(res, Ok(Inserted::New)))
                .filter_map(|((name, version), _)| {
                    store
                        .latest(name)
                        .filter(|l| l.release.version == *version)
                        .map(|l| l.release.clone())
                })
                .collect();
            (results, ticket, newest)
        };
        for release in &newest {
            self.index.upsert(release);
        }
        (results, ticket)
    }

    /// [`Inner::add`] of the local user's releases, returning once they
    /// are on disk.
    async fn add_own(&self, releases: Vec<SignedRelease>) -> Result<usize, RegistryError> {
        let (results, ticket) = self.add(releases, Origin::Local);
        let mut new = 0;
        for r in results {
            if r? == Inserted::New {
                new += 1;
            }
        }
        if let Some(t) = ticket {
            let writer = self.store().writer().clone();
            writer.durable(t).await.map_err(StoreError::from)?;
        }
        Ok(new)
    }

    /// The gossip validator: signature, bounds and ownership; and for a
    /// release new to us, the publisher's and the relay's network's
    /// allowances and room in the store (over them: ignored, not held
    /// against the relay).
    fn validate(&self, m: &GossipMessage) -> Validation {
        let prefix = self.node.remote_addr(&m.from).map(|a| Prefix::of(a.ip()));
        let spent = prefix.is_some_and(|p| {
            let admit = self.admit.lock().unwrap_or_else(|e| e.into_inner());
            admit.prefix_spent(Instant::now(), p)
        });
        // The relay's network is over its allowance: nothing new it sends
        // is stored, so its signatures are not worth checking.
        let verdict = if spent {
            Validation::Ignore
        } else {
            self.judge(m, prefix)
        };
        let counter = match verdict {
            Validation::Accept => &self.counters.announcements_accepted,
            Validation::Reject => &self.counters.announcements_refused,
            Validation::Ignore => &self.counters.announcements_throttled,
        };
        counter.fetch_add(1, Relaxed);
        verdict
    }

    fn judge(&self, m: &GossipMessage, prefix: Option<Prefix>) -> Validation {
        match SignedRelease::decode(&m.data) {
            Ok(r) => {
                // The store's lock is let go before admit_new takes it.
                let checked = self.store().check(&r);
                match checked {
                    Ok(Inserted::Known) => Validation::Accept,
                    Ok(Inserted::New) => self.admit_new(&r, m.data.len(), prefix),
                    Err(_) => Validation::Reject,
                }
            }
            Err(_) => Validation::Reject,
        }
    }

    fn admit_new(&self, r: &SignedRelease, len: usize, prefix: Option<Prefix>) -> Validation {
        if r.publisher == self.node.peer_id() {
            return Validation::Accept;
        }
        if self.store().has_room(len).is_err() {
            self.counters.announcements_over_quota.fetch_add(1, Relaxed);
            return Validation::Ignore;
        }
        let admitted = self.admit.lock().unwrap_or_else(|e| e.into_inner()).admit(
            Instant::now(),
            r.publisher,
            prefix,
        );
        match admitted {
            Ok(()) => Validation::Accept,
            Err(_) => Validation::Ignore,
        }
    }

    /// Checks due releases from peers for a provider: evicts those nobody
    /// serves (from the store and the index), and puts the rest back in
    /// line.
    async fn check_served(self: &Arc<Self>, now: Instant) {
        let c = &self.config;
        let due = self
            .store()
            .due_for_check(now, c.unserved_grace, c.recheck_every, c.sweep_batch);
        let dht = self.node.dht();
        let mut checks = tokio::task::JoinSet::new();
        for (name, version, blob) in due {
            let (dht, inner) = (dht.clone(), self.clone());
            checks.spawn(async move {
                let served = match inner.cache.contains(&blob) {
                    true => Some(true),
                    false => match dht.providers(blob_key(&blob)).await {
                        Ok(o) if !o.value.is_empty() => Some(true),
                        // Peers answered and none knows a provider.
                        Ok(o) if o.answered > 0 => Some(false),
                        _ => None,
                    },
                };
                (name, version, served)
            });
            if checks.len() >= PARALLEL_SERVICE_CHECKS {
                if let Some(Ok(done)) = checks.join_next().await {
                    self.settle(done);
                }
            }
        }
        while let Some(done) = checks.join_next().await {
            if let Ok(done) = done {
                self.settle(done);
            }
        }
    }

    /// Acts on one check: served (check again later), served by nobody
    /// (evicted), or unknown (the lookup failed: try again after a grace).
    fn settle(&self, (name, version, served): (String, Version, Option<bool>)) {
        let now = Instant::now();
        match served {
            Some(true) => self.store().served(&name, &version, now),
            Some(false) => {
                let latest = {
                    let mut store = self.store();
                    store.evict(&name, &version);
                    store.latest(&name).map(|l| l.release.clone())
                };
                match latest {
                    Some(l) => self.index.upsert(&l),
                    None => self.index.remove(&name),
                }
                self.counters.unserved_evicted.fetch_add(1, Relaxed);
            }
            None => self.store().check_later(&name, &version, now),
        }
    }
}

/// Provider lookups one sweep makes at once.
const PARALLEL_SERVICE_CHECKS: usize = 8;

/// Evicts releases from peers that nobody serves ([`Inner::check_served`]).
async fn sweep_unserved(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => i.config.sweep_every,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.check_served(Instant::now()).await;
    }
}

async fn receive_announcements(inner: Weak<Inner>, mut sub: peerlink_net::Subscription) {
    let mut batch = Vec::new();
    while let Some(first) = sub.recv().await {
        batch.push(first);
        while batch.len() < 1024 {
            match sub.try_recv() {
                Some(m) => batch.push(m),
                None => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let releases: Vec<SignedRelease> = batch
            .drain(..)
            .filter_map(|m| SignedRelease::decode(&m.data).ok())
            .collect();
        // Ownership was checked by the validator; what fails here is I/O.
        for result in inner.add(releases, Origin::Remote).0 {
            if let Err(e @ StoreError::Io(_)) = result {
                tracing::warn!("registry: could not store an announcement: {e}");
            }
        }
    }
}

/// Commits index additions once they stop arriving (250 ms without one,
/// or 2 s at most), so searches rarely pay for a commit; a commit costs
/// milliseconds of CPU, too much to make per announcement on every node.
async fn commit_when_quiet(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let due = inner.index.pending_for().is_some_and(|(oldest, newest)| {
            newest >= Duration::from_millis(250) || oldest >= Duration::from_secs(2)
        });
        if due {
            let commit = tokio::task::spawn_blocking(move || inner.index.commit()).await;
            if let Ok(Err(e)) = commit {
                tracing::warn!("registry: index commit failed: {e}");
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    q: String,
    limit: u32,
}

async fn serve_searches(inner: Weak<Inner>, mut requests: peerlink_net::Requests) {
    while let Some(req) = requests.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        if req.body.len() > MAX_SEARCH_REQUEST {
            req.reject("search request too large");
            continue;
        }
        let parsed: Result<SearchRequest, _> = serde_json::from_slice(&req.body);
        let Ok(sr) = parsed else {
            req.reject("malformed search request");
            continue;
        };
        if sr.q.len() > MAX_QUERY_LEN {
            req.reject("query too long");
            continue;
        }
        inner.counters.searches_served.fetch_add(1, Relaxed);
        // A search may commit pending additions first: CPU work under the
        // index lock, kept off the async workers.
        let found =
            tokio::task::spawn_blocking(move || inner.index.search(&sr.q, sr.limit as usize)).await;
        match found {
            Ok(Ok(hits)) => req.respond(serde_json::to_vec(&hits).unwrap_or_default()),
            Ok(Err(e)) => req.reject(&e.to_string()),
            Err(_) => req.reject("search failed"),
        }
    }
}

/// Chunk reads from disk at once.
const PARALLEL_CHUNK_READS: usize = 4;

async fn serve_chunks(inner: Weak<Inner>, mut requests: peerlink_net::Requests) {
    let reads = Arc::new(tokio::sync::Semaphore::new(PARALLEL_CHUNK_READS));
    while let Some(req) = requests.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let Some((hash, index)) = req.body.split_at_checked(32).and_then(|(h, i)| {
            let h: [u8; 32] = h.try_into().ok()?;
            let i: [u8; 4] = i.try_into().ok()?;
            Some((Hash(h), u32::from_be_bytes(i) as usize))
        }) else {
            req.reject("a chunk request is a 32-byte hash and a 4-byte index");
            continue;
        };
        // Reading from disk: off the async workers, a few at a time, one
        // chunk each (a flood of requests cannot pile up blob reads).
        let Ok(permit) = reads.clone().acquire_owned().await else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let chunk = (index as u64)
                .checked_mul(CHUNK_SIZE as u64)
                .and_then(|offset| inner.cache.read_range(&hash, offset, CHUNK_SIZE));
            match chunk {
                Some(c) => {
                    inner.counters.chunks_served.fetch_add(1, Relaxed);
                    req.respond(c)
                }
                None => req.reject("no such chunk here"),
            }
        });
    }
}

/// `NAME` or `NAME@REQ` (any version when no requirement is given).
pub fn parse_spec(spec: &str) -> Result<(String, VersionReq), RegistryError> {
    let (name, req) = match spec.split_once('@') {
        Some((n, r)) => (
            n,
            VersionReq::parse(r).map_err(|e| RegistryError::Spec(spec.into(), e.to_string()))?,
        ),
        None => (spec, VersionReq::STAR),
    };
    if !crate::manifest::valid_name(name) {
        return Err(RegistryError::Spec(
            spec.into(),
            "not a valid package name".into(),
        ));
    }
    Ok((name.to_string(), req))
}

/// The lock file that makes installs into one directory take turns.
pub const INSTALL_LOCK: &str = ".peerlink-install.lock";

/// Unpacks every archive into a staging directory under `to`, then moves
/// them into place; on any failure, nothing of this install remains.
/// Installs into the same directory (from any process) take turns on
/// `to/.peerlink-install.lock`; one that has to wait says so through
/// `waiting`, and finds what the other put in place "already installed".
fn unpack_all(
    plan: Vec<(Release, Bytes, String)>,
    to: &Path,
    limits: &Limits,
    waiting: impl FnOnce(String),
) -> Result<Vec<Installed>, RegistryError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RegistryError::Io { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    let lock_path = to.join(INSTALL_LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            waiting(format!(
                "waiting for another install into {} to finish",
                to.display()
            ));
            lock.lock().map_err(io(&lock_path))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
    }
    let staging = tempfile::Builder::new()
        .prefix(".installing-")
        .tempdir_in(to)
        .map_err(io(to))?;
    let mut out = Vec::new();
    let mut moves = Vec::new();
    for (r, bytes, source) in plan {
        let dir_name = format!("{}-{}", r.name, r.version);
        let dest = to.join(&dir_name);
        if dest.is_dir() {
            // Installed before (archives are content-addressed; the
            // directory name pins the version).
            out.push(Installed {
                name: r.name,
                version: r.version.to_string(),
                path: dest,
                bytes: r.size,
                source: "already installed".into(),
            });
            continue;
        }
        let staged = staging.path().join(&dir_name);
        archive::unpack(&bytes, &r.blob.0, &staged, limits)?;
        moves.push((staged, dest.clone()));
        out.push(Installed {
            name: r.name,
            version: r.version.to_string(),
            path: dest,
            bytes: r.size,
            source,
        });
    }
    let mut done: Vec<PathBuf> = Vec::new();
    for (from, dest) in moves {
        if let Err(e) = std::fs::rename(&from, &dest) {
            for d in done {
                let _ = std::fs::remove_dir_all(d);
            }
            return Err(RegistryError::Io {
                path: dest,
                source: e,
            });
        }
        done.push(dest);
    }
    Ok(out)
}

/// The providers to fetch from: the publisher first when connected (it
/// pins what it published), then announced ones, without repeats or
/// ourselves, only at addresses this node may dial, at most `max`.
///
/// Provider records are unverified (anyone may announce anything), so an
/// announced address must be in a scope this node is in: loopback only
/// when it listens on loopback, link-local only on link-local, private
/// (RFC 1918, ULA, CGNAT) only when it listens on a private or
/// unspecified address (a LAN); unspecified and multicast never. A node
/// on a public address is never made to dial into private networks.
fn pick_providers(
    owner: Option<PeerAddr>,
    announced: Vec<PeerAddr>,
    me: PeerId,
    listening: &[SocketAddr],
    max: usize,
) -> Vec<PeerAddr> {
    let mut out: Vec<PeerAddr> = Vec::new();
    for p in owner.into_iter().chain(announced) {
        if out.len() >= max {
            break;
        }
        if p.id == me || out.iter().any(|q| q.id == p.id) || !dialable(p.addr.ip(), listening) {
            continue;
        }
        out.push(p);
    }
    out
}

#[derive(PartialEq, Eq)]
enum Scope {
    Never,
    Loopback,
    LinkLocal,
    Private,
    Public,
}

fn scope(ip: IpAddr) -> Scope {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                Scope::Never
            } else if a.is_loopback() {
                Scope::Loopback
            } else if a.is_link_local() {
                Scope::LinkLocal
            } else if a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                Scope::Private
            } else {
                Scope::Public
            }
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            if a.is_unspecified() || a.is_multicast() {
                Scope::Never
            } else if a.is_loopback() {
                Scope::Loopback
            } else if first & 0xffc0 == 0xfe80 {
                Scope::LinkLocal
            } else if first & 0xfe00 == 0xfc00 {
                Scope::Private
            } else {
                Scope::Public
            }
        }
    }
}

/// May this node dial `ip`, learned from an unverified record?
fn dialable(ip: IpAddr, listening: &[SocketAddr]) -> bool {
    let ours = |s: Scope| listening.iter().any(|l| scope(l.ip()) == s);
    match scope(ip) {
        Scope::Never => false,
        Scope::Public => true,
        Scope::Loopback => ours(Scope::Loopback),
        Scope::LinkLocal => ours(Scope::LinkLocal),
        Scope::Private => ours(Scope::Private) || listening.iter().any(|l| l.ip().is_unspecified()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: u8, addr: &str) -> PeerAddr {
        PeerAddr::new(PeerId::unverified([i; 32]), addr.parse().unwrap())
    }

    #[test]
    fn announced_providers_are_capped_deduplicated_and_kept_in_scope() {
        let me = PeerId::unverified([0; 32]);
        let public: Vec<SocketAddr> = vec!["203.0.113.5:4001".parse().unwrap()];
        let owner = at(1, "198.51.100.1:4001");
        let mut announced = vec![
            at(0, "198.51.100.9:1"),    // ourselves
            at(1, "198.51.100.1:4001"), // the owner again
            at(2, "10.0.0.2:4001"),     // private
            at(3, "127.0.0.1:4001"),    // loopback
            at(4, "169.254.1.1:4001"),  // link-local
            at(5, "[fe80::1]:4001"),
            at(6, "[fd00::1]:4001"),
            at(7, "0.0.0.0:4001"),
            at(8, "100.64.0.1:4001"), // CGNAT
            at(9, "[::ffff:192.168.1.1]:4001"),
            at(10, "198.51.100.10:4001"),
        ];
        announced.extend((11..100).map(|i| at(i, &format!("198.51.100.{i}:4001"))));
        let picked = pick_providers(Some(owner), announced.clone(), me, &public, 16);
        assert_eq!(picked.len(), 16, "capped");
        assert_eq!(picked[0], owner, "the publisher first");
        assert_eq!(picked[1].id, PeerId::unverified([10; 32]));
        assert!(picked.iter().all(|p| scope(p.addr.ip()) == Scope::Public));
        // On a LAN, private neighbours are fine; loopback and link-local
        // still need a listener of their own kind.
        let lan: Vec<SocketAddr> = vec!["0.0.0.0:4001".parse().unwrap()];
        let picked = pick_providers(None, announced.clone(), me, &lan, 100);
        let ids: Vec<u8> = picked.iter().map(|p| p.id.as_bytes()[0]).collect();
        assert!(ids.contains(&2) && ids.contains(&6) && ids.contains(&8) && ids.contains(&9));
        assert!(!ids.contains(&3) && !ids.contains(&4) && !ids.contains(&5) && !ids.contains(&7));
        // A loopback testnet dials loopback.
        let local: Vec<SocketAddr> = vec!["127.0.0.1:4001".parse().unwrap()];
        let picked = pick_providers(None, announced, me, &local, 100);
        assert!(picked.iter().any(|p| p.id == PeerId::unverified([3; 32])));
    }
}
