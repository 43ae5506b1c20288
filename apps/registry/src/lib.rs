//! # peerlink-registry — a decentralised package registry on peerlink
//!
//! Built only on peerlink's public API ([`peerlink_net::Node`]: the DHT,
//! gossip and request/response). A package is a directory with a
//! `package.toml` ([`manifest`]); publishing packs it deterministically
//! ([`archive`]), signs its [`release`] metadata with the node's key,
//! stores the record in the DHT, provides the archive and announces the
//! release on gossip. Every node keeps what it sees in a redb [`store`]
//! and a tantivy [`index`]; `install` resolves with pubgrub ([`resolve`]),
//! fetches chunks from several providers, verifies and unpacks atomically,
//! and keeps an LRU [`cache`]. The network side is [`Registry`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use peerlink_registry::{Registry, RegistryConfig};
//! let node = peerlink_net::Node::builder().build().await?;
//! let registry = Registry::start(node, RegistryConfig::new("/tmp/registry")).await?;
//! registry.publish("./my-package".as_ref()).await?;
//! let found = registry.search("http client", 10, false).await?;
//! registry.install("my-package@^1", "./deps".as_ref(), None).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod admit;
pub mod archive;
pub mod cache;
pub mod catalogue;
pub mod control;
pub mod index;
pub mod manifest;
pub mod release;
pub mod resolve;
mod service;
pub mod store;

pub use archive::{pack, unpack, ArchiveError, Limits, Packed};
pub use cache::{CacheLimits, CacheStats};
pub use index::Hit;
pub use manifest::{Manifest, ManifestError, MANIFEST_FILE};
pub use release::{Hash, PackageRecord, Release, SignedRelease};
pub use service::{
    parse_spec, InstallReport, Installed, PackageInfo, Progress, PublishReport, Registry,
    RegistryConfig, RegistryError, RegistryStats, SearchReport, ANNOUNCE_TOPIC, CHUNK_PROTOCOL,
    INSTALL_LOCK, REQUIRED_REPLICAS, SEARCH_PROTOCOL,
};
