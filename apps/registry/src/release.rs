//! Signed release metadata: what a publisher states about one version of
//! a package, and the DHT record that lists a package's releases.
//!
//! A [`Release`] is the manifest plus the archive's BLAKE3 hash, size and
//! per-chunk hashes (so each chunk fetched from a provider is checked on
//! arrival and a lying provider is caught at the first bad chunk). It is
//! serialised as JSON and signed with the publisher's ed25519 key; the
//! signature covers the exact bytes carried, so nobody re-encodes anything.
//!
//! Wire form of a [`SignedRelease`]: `version (1) | publisher (32) |
//! signature (64) | body length (u32 BE) | body (JSON)`. A package record
//! ([`PackageRecord`], the DHT value under `registry/pkg/NAME`) is
//! `count (u16 BE)` signed releases back to back. Every length is checked
//! against a fixed bound before anything is allocated.

use std::collections::BTreeMap;

use bytes::Bytes;
use peerlink_net::{Keypair, PeerId};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

/// Bytes per chunk of a blob, as fetched from one provider in one request.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// The largest archive the registry carries.
pub const MAX_BLOB_SIZE: u64 = 16 << 20;
/// Largest JSON body of one release.
pub const MAX_RELEASE_BODY: usize = 16 * 1024;
/// Largest package record: under the DHT's 64 KiB value limit.
pub const MAX_RECORD_BYTES: usize = 60 * 1024;
/// Most releases a package record lists (the newest are kept).
pub const MAX_RECORD_RELEASES: usize = 256;

const WIRE_VERSION: u8 = 1;
const HEADER: usize = 1 + 32 + 64 + 4;

/// A 32-byte BLAKE3 hash, written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::archive::hex(&self.0))
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_string()[..12])
    }
}

impl std::str::FromStr for Hash {
    type Err = ReleaseError;
    fn from_str(s: &str) -> Result<Hash, ReleaseError> {
        let bad = || ReleaseError::BadHash(s.chars().take(80).collect());
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = s
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)?;
        }
        Ok(Hash(out))
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = <&str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One published version: the manifest and the archive it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub name: String,
    pub version: Version,
    pub description: String,
    pub keywords: Vec<String>,
    pub license: String,
    pub dependencies: BTreeMap<String, VersionReq>,
    /// BLAKE3 of the whole archive.
    pub blob: Hash,
    pub size: u64,
    /// BLAKE3 of each [`CHUNK_SIZE`] piece of the archive, in order.
    pub chunks: Vec<Hash>,
    /// When it was published (Unix ms, as the publisher's clock says).
    pub published_ms: u64,
    /// Monthly downloads that the source registry reported, when the
    /// package was imported from one (0 when unknown). Used only to rank.
    #[serde(default)]
    pub downloads: u64,
}

impl Release {
    /// The release of a packed manifest.
    pub fn new(manifest: &Manifest, archive: &[u8], published_ms: u64) -> Release {
        Release {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            description: manifest.description.clone(),
            keywords: manifest.keywords.clone(),
            license: manifest.license.clone(),
            dependencies: manifest.dependencies.clone(),
            blob: Hash::of(archive),
            size: archive.len() as u64,
            chunks: archive.chunks(CHUNK_SIZE).map(Hash::of).collect(),
            published_ms,
            downloads: 0,
        }
    }

    /// `name@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    fn check(&self) -> Result<(), ReleaseError> {
        let manifest = Manifest {
            name: self.name.clone(),
            version: self.version.clone(),
            description: self.description.clone(),
            keywords: self.keywords.clone(),
            license: self.license.clone(),
            dependencies: self.dependencies.clone(),
        };
        manifest
            .check()
            .map_err(|(field, reason)| ReleaseError::Field { field, reason })?;
        if self.size > MAX_BLOB_SIZE {
            return Err(ReleaseError::BlobTooLarge(self.size));
        }
        let want = self.size.div_ceil(CHUNK_SIZE as u64).max(1);
        if self.chunks.len() as u64 != want {
            return Err(ReleaseError::Chunks {
                size: self.size,
                chunks: self.chunks.len(),
            });
        }
        Ok(())
    }
}

/// A release with its publisher's signature over the exact JSON carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRelease {
    pub release: Release,
    pub publisher: PeerId,
    body: Bytes,
    signature: [u8; 64],
}

/// Why release metadata was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    #[error("truncated release metadata")]
    Truncated,
    #[error("unknown release format version {0}")]
    Version(u8),
    #[error("release metadata of {0} bytes is over the limit of {MAX_RELEASE_BODY}")]
    TooLarge(usize),
    #[error("{0} trailing bytes after the release metadata")]
    Trailing(usize),
    #[error("the publisher key is not a valid ed25519 key")]
    BadKey,
    #[error("the signature does not match the publisher's key")]
    BadSignature,
    #[error("malformed release metadata: {0}")]
    Malformed(String),
    #[error("release metadata field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error("archive of {0} bytes is over the limit of {MAX_BLOB_SIZE}")]
    BlobTooLarge(u64),
    #[error("an archive of {size} bytes needs one chunk hash per 256 KiB, not {chunks}")]
    Chunks { size: u64, chunks: usize },
    #[error("not a BLAKE3 hash: {0:?}")]
    BadHash(String),
    #[error("a package record of {0} bytes is over the limit of {MAX_RECORD_BYTES}")]
    RecordTooLarge(usize),
    #[error("a package record lists {0} releases, at most {MAX_RECORD_RELEASES}")]
    TooManyReleases(usize),
    #[error("the package record mixes packages or publishers ({0})")]
    MixedRecord(String),
}

impl SignedRelease {
    /// Signs `release` with `keypair`.
    pub fn sign(release: Release, keypair: &Keypair) -> SignedRelease {
        let body = Bytes::from(serde_json::to_vec(&release).unwrap_or_default());
        let signature = keypair.sign(&body);
        SignedRelease {
            release,
            publisher: keypair.peer_id(),
            body,
            signature,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.body.len());
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(WIRE_VERSION);
        out.extend_from_slice(self.publisher.as_bytes());
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
    }

    /// Decodes, verifies the signature and validates the metadata.
    pub fn decode(bytes: &[u8]) -> Result<SignedRelease, ReleaseError> {
        let (release, rest) = Self::decode_prefix(bytes)?;
        if !rest.is_empty() {
            return Err(ReleaseError::Trailing(rest.len()));
        }
        Ok(release)
    }

    /// Decodes one release from the front of `bytes`, returning the rest.
    fn decode_prefix(bytes: &[u8]) -> Result<(SignedRelease, &[u8]), ReleaseError> {
        let (header, rest) = bytes
            .split_at_checked(HEADER)
            .ok_or(ReleaseError::Truncated)?;
        let (version, header) = header.split_first().ok_or(ReleaseError::Truncated)?;
        if *version != WIRE_VERSION {
            return Err(ReleaseError::Version(*version));
        }
        let (key, header) = header.split_at(32);
        let (sig, len) = header.split_at(64);
        let len = u32::from_be_bytes(len.try_into().map_err(|_| ReleaseError::Truncated)?) as usize;
        if len > MAX_RELEASE_BODY {
            return Err(ReleaseError::TooLarge(len));
        }
        let (body, rest) = rest.split_at_checked(len).ok_or(ReleaseError::Truncated)?;
        let publisher = PeerId::from_slice(key).map_err(|_| ReleaseError::BadKey)?;
        publisher
            .verify(body, sig)
            .map_err(|_| ReleaseError::BadSignature)?;
        let release: Release =
            serde_json::from_slice(body).map_err(|e| ReleaseError::Malformed(e.to_string()))?;
        release.check()?;
        let signature = sig.try_into().map_err(|_| ReleaseError::Truncated)?;
        Ok((
            SignedRelease {
                release,
                publisher,
                body: Bytes::copy_from_slice(body),
                signature,
            },
            rest,
        ))
    }
}

/// The DHT value under `registry/pkg/NAME`: every release of one package,
/// all signed by the package's owner, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageRecord {
    pub releases: Vec<SignedRelease>,
}

impl PackageRecord {
    /// Encodes the newest releases that fit in [`MAX_RECORD_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        let mut take = 0;
        let mut size = 2;
        for r in self.releases.iter().rev().take(MAX_RECORD_RELEASES) {
            let len = HEADER + r.body.len();
            if size + len > MAX_RECORD_BYTES {
                break;
            }
            size += len;
            take += 1;
        }
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&(take as u16).to_be_bytes());
        let first = self.releases.len() - take;
        for r in &self.releases[first..] {
            r.encode_into(&mut out);
        }
        out
    }

    /// Decodes and verifies every release; all must name one package and
    /// carry one publisher's signature.
    pub fn decode(bytes: &[u8]) -> Result<PackageRecord, ReleaseError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(ReleaseError::RecordTooLarge(bytes.len()));
        }
        let (count, mut rest) = bytes.split_at_checked(2).ok_or(ReleaseError::Truncated)?;
        let count =
            u16::from_be_bytes(count.try_into().map_err(|_| ReleaseError::Truncated)?) as usize;
        if count > MAX_RECORD_RELEASES {
            return Err(ReleaseError::TooManyReleases(count));
        }
        let mut releases: Vec<SignedRelease> = Vec::with_capacity(count);
        for _ in 0..count {
            let (r, tail) = SignedRelease::decode_prefix(rest)?;
            if let Some(first) = releases.first() {
                if first.release.name != r.release.name || first.publisher != r.publisher {
                    return Err(ReleaseError::MixedRecord(format!(
                        "{} by {} and {} by {}",
                        first.release.name, first.publisher, r.release.name, r.publisher
                    )));
                }
            }
            releases.push(r);
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(ReleaseError::Trailing(rest.len()));
        }
        Ok(PackageRecord { releases })
    }
}

#[cfg(test)]
mod tests;
