//! # peerlink-registry — a decentralised package registry on peerlink
//!
//! Status: the local half is here — the manifest ([`manifest`]) and
//! deterministic, verifiable archives with safe unpacking ([`archive`]).
//! Publishing to the DHT, announcing on gossip, search and install over
//! the network come next (issue 5).
#![forbid(unsafe_code)]

pub mod archive;
pub mod manifest;

pub use archive::{pack, unpack, ArchiveError, Limits, Packed};
pub use manifest::{Manifest, ManifestError, MANIFEST_FILE};
