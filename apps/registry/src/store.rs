//! The node's embedded store (redb) of every release it has seen, and of
//! who owns each name.
//!
//! A name belongs to the key that the store first saw publish it; a later
//! release of that name signed by any other key is refused
//! ([`StoreError::NotOwner`]). Reads come from an in-memory copy loaded at
//! open; writes go to the database, a batch per transaction, before the
//! copy changes.

use std::collections::BTreeMap;
use std::path::Path;

use peerlink_net::PeerId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use semver::Version;

use crate::release::SignedRelease;

/// Key: `name \0 version`. Value: the signed release as carried.
const RELEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("releases");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{name} belongs to {owner}; a release signed by {publisher} is refused")]
    NotOwner {
        name: String,
        owner: PeerId,
        publisher: PeerId,
    },
    #[error("registry store: {0}")]
    Io(String),
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// What [`MetaStore::insert`] did with a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// This version was already stored (the first copy is kept).
    Known,
}

pub struct MetaStore {
    db: Database,
    packages: BTreeMap<String, BTreeMap<Version, SignedRelease>>,
}

impl MetaStore {
    /// Opens (or creates) `dir/registry.redb` and loads it. Rows that no
    /// longer decode or verify are skipped.
    pub fn open(dir: &Path) -> Result<MetaStore, StoreError> {
        peerlink_net::fsutil::create_private_dir(dir).map_err(io)?;
        let db = Database::create(dir.join("registry.redb")).map_err(io)?;
        let tx = db.begin_write().map_err(io)?;
        tx.open_table(RELEASES).map_err(io)?;
        tx.commit().map_err(io)?;
        let mut store = MetaStore {
            db,
            packages: BTreeMap::new(),
        };
        let tx = store.db.begin_read().map_err(io)?;
        for row in tx.open_table(RELEASES).map_err(io)?.iter().map_err(io)? {
            let (_, v) = row.map_err(io)?;
            if let Ok(r) = SignedRelease::decode(v.value()) {
                if store.check(&r).is_ok() {
                    store.remember(r);
                }
            }
        }
        drop(tx);
        Ok(store)
    }

    /// Who owns `name`, if any release of it is known.
    pub fn owner(&self, name: &str) -> Option<PeerId> {
        self.packages
            .get(name)
            .and_then(|v| v.values().next())
            .map(|r| r.publisher)
    }

    /// Refuses a release of a name owned by another key.
    pub fn check(&self, r: &SignedRelease) -> Result<Inserted, StoreError> {
        match self.owner(&r.release.name) {
            Some(owner) if owner != r.publisher => Err(StoreError::NotOwner {
                name: r.release.name.clone(),
                owner,
                publisher: r.publisher,
            }),
            _ if self.get(&r.release.name, &r.release.version).is_some() => Ok(Inserted::Known),
            _ => Ok(Inserted::New),
        }
    }

    /// Stores releases in one transaction; one result per release, in
    /// order. Releases refused by ownership are not written.
    pub fn insert_many(
        &mut self,
        releases: Vec<SignedRelease>,
    ) -> Vec<Result<Inserted, StoreError>> {
        let mut results = Vec::with_capacity(releases.len());
        let mut new = Vec::new();
        for r in releases {
            let verdict = self.check(&r).and_then(|v| {
                // Two releases of one new name in a batch: the first wins.
                match new
                    .iter()
                    .find(|n: &&SignedRelease| n.release.name == r.release.name)
                {
                    Some(n) if n.publisher != r.publisher => Err(StoreError::NotOwner {
                        name: r.release.name.clone(),
                        owner: n.publisher,
                        publisher: r.publisher,
                    }),
                    Some(n) if n.release.version == r.release.version => Ok(Inserted::Known),
                    _ => Ok(v),
                }
            });
            if matches!(verdict, Ok(Inserted::New)) {
                new.push(r);
            }
            results.push(verdict);
        }
        if new.is_empty() {
            return results;
        }
        if let Err(e) = self.write(&new) {
            let msg = e.to_string();
            return results
                .into_iter()
                .map(|v| match v {
                    Ok(Inserted::New) => Err(StoreError::Io(msg.clone())),
                    other => other,
                })
                .collect();
        }
        for r in new {
            self.remember(r);
        }
        results
    }

    fn write(&self, releases: &[SignedRelease]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        {
            let mut table = tx.open_table(RELEASES).map_err(io)?;
            for r in releases {
                let key = format!("{}\0{}", r.release.name, r.release.version);
                table
                    .insert(key.as_bytes(), r.encode().as_slice())
                    .map_err(io)?;
            }
        }
        tx.commit().map_err(io)
    }

    fn remember(&mut self, r: SignedRelease) {
        self.packages
            .entry(r.release.name.clone())
            .or_default()
            .entry(r.release.version.clone())
            .or_insert(r);
    }

    pub fn get(&self, name: &str, version: &Version) -> Option<&SignedRelease> {
        self.packages.get(name)?.get(version)
    }

    /// Every known release of `name`, oldest version first.
    pub fn releases(&self, name: &str) -> impl Iterator<Item = &SignedRelease> {
        self.packages.get(name).into_iter().flat_map(|v| v.values())
    }

    /// The newest release of `name`.
    pub fn latest(&self, name: &str) -> Option<&SignedRelease> {
        self.packages.get(name)?.values().next_back()
    }

    /// The newest release of every package.
    pub fn all_latest(&self) -> impl Iterator<Item = &SignedRelease> {
        self.packages
            .values()
            .filter_map(|v| v.values().next_back())
    }

    /// Every release of every package.
    pub fn all_releases(&self) -> impl Iterator<Item = &SignedRelease> {
        self.packages.values().flat_map(|v| v.values())
    }

    pub fn packages(&self) -> usize {
        self.packages.len()
    }

    pub fn releases_total(&self) -> usize {
        self.packages.values().map(BTreeMap::len).sum()
    }
}
