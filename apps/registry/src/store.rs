//! The node's embedded store (redb) of every release it has seen, and of
//! who owns each name.
//!
//! A name belongs to the key that the store first saw publish it; a later
//! release of that name signed by any other key is refused
//! ([`StoreError::NotOwner`]). Reads come from an in-memory copy loaded at
//! open; writes change the copy and are queued to the database's writer
//! thread ([`peerlink_net::dbwriter`]), so no lock is held and no async
//! worker waits across a commit. A caller that must know a write is on
//! disk (a publish, an import) waits for its ticket.
//!
//! ## What peers can make us keep
//! Releases are [`Origin::Local`] (published or imported here: the user's
//! business, outside every limit) or [`Origin::Remote`] (announced by
//! peers). Remote releases are bounded in count and bytes
//! ([`StoreLimits`]); when the store is full a new remote release is
//! refused ([`StoreError::Full`]) — nothing held is evicted to make room,
//! so a flood cannot push out what came before it. What makes room is the
//! check for service: every remote release is queued to be checked after
//! a grace period ([`MetaStore::due_for_check`]); one whose archive no
//! provider serves is evicted ([`MetaStore::evict`]), one that is served
//! is checked again later. The rate at which peers may announce new
//! releases at all is the registry service's (per publisher and per
//! prefix).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use peerlink_net::dbwriter::{DbWriter, Ticket, Write, WriteError};
use peerlink_net::PeerId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use semver::Version;

use crate::release::{Hash, SignedRelease};

/// Key: `name \0 version`. Value: the signed release as carried.
const RELEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("releases");
/// Key: `name \0 version` of a release published or imported here.
const LOCAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("local");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{name} belongs to {owner}; a release signed by {publisher} is refused")]
    NotOwner {
        name: String,
        owner: PeerId,
        publisher: PeerId,
    },
    #[error("registry store is full ({releases} releases, {bytes} bytes of others' releases)")]
    Full { releases: usize, bytes: usize },
    #[error("registry store: {0}")]
    Io(String),
    #[error("registry store: {0}")]
    Write(#[from] WriteError),
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// What [`MetaStore::insert_many`] did with a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// This version was already stored (the first copy is kept).
    Known,
}

/// Where a release came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Published or imported on this node.
    Local,
    /// Announced by a peer, or found in the DHT.
    Remote,
}

/// Bounds on remote releases.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    pub max_releases: usize,
    /// Encoded bytes.
    pub max_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_releases: 250_000,
            max_bytes: 512 << 20,
        }
    }
}

type ReleaseKey = (String, Version);

/// A remote release's place in the checks for service.
#[derive(Clone, Copy, Debug)]
struct Remote {
    bytes: usize,
    /// Seen served at least once.
    served: bool,
}

pub struct MetaStore {
    writer: DbWriter,
    packages: Packages,
    limits: StoreLimits,
    remote: HashMap<ReleaseKey, Remote>,
    remote_bytes: usize,
    /// Remote releases by when they are due a check, oldest first: never
    /// checked (from when they arrived), and served (from their last
    /// check). Entries whose release is gone are skipped.
    unchecked: VecDeque<(Instant, ReleaseKey)>,
    rechecks: VecDeque<(Instant, ReleaseKey)>,
}

fn row_key(name: &str, version: &Version) -> String {
    format!("{name}\0{version}")
}

impl MetaStore {
    /// Opens (or creates) `dir/registry.redb` and loads it. Rows that no
    /// longer decode or verify are skipped. Remote releases loaded are
    /// checked for service again, a grace period from now.
    pub fn open(dir: &Path, limits: StoreLimits) -> Result<MetaStore, StoreError> {
        peerlink_net::fsutil::create_private_dir(dir).map_err(io)?;
        let db = Database::create(dir.join("registry.redb")).map_err(io)?;
        let tx = db.begin_write().map_err(io)?;
        tx.open_table(RELEASES).map_err(io)?;
        tx.open_table(LOCAL).map_err(io)?;
        tx.commit().map_err(io)?;
        let mut loaded = Vec::new();
        let tx = db.begin_read().map_err(io)?;
        let local = tx.open_table(LOCAL).map_err(io)?;
        for row in tx.open_table(RELEASES).map_err(io)?.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            if let Ok(r) = SignedRelease::decode(v.value()) {
                let origin = match local.get(k.value()).map_err(io)? {
                    Some(_) => Origin::Local,
                    None => Origin::Remote,
                };
                loaded.push((r, origin, v.value().len()));
            }
        }
        drop(local);
        drop(tx);
        let writer = DbWriter::start(db, "registry").map_err(io)?;
        let mut store = MetaStore {
            writer,
            packages: BTreeMap::new(),
            limits,
            remote: HashMap::new(),
            remote_bytes: 0,
            unchecked: VecDeque::new(),
            rechecks: VecDeque::new(),
        };
        let now = Instant::now();
        for (r, origin, bytes) in loaded {
            if check(&store.packages, &r).is_ok() {
                store.remember(r, origin, bytes, now);
            }
        }
        Ok(store)
    }

    /// The database writer: wait on a ticket from [`MetaStore::insert_many`]
    /// to know its releases are on disk.
    pub fn writer(&self) -> &DbWriter {
        &self.writer
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
        check(&self.packages, r)
    }

    /// Whether a new remote release of `bytes` would fit.
    pub fn has_room(&self, bytes: usize) -> Result<(), StoreError> {
        self.fits(0, 0, bytes)
    }

    /// Stores releases (one transaction for the batch); one result per
    /// release, in order, and the ticket of the write if anything was new.
    /// Releases refused by ownership, or remote ones past the limits, are
    /// not written. Local releases are queued whatever the writer's
    /// backlog; remote ones are refused while the writer is far behind.
    pub fn insert_many(
        &mut self,
        releases: Vec<SignedRelease>,
        origin: Origin,
    ) -> (Vec<Result<Inserted, StoreError>>, Option<Ticket>) {
        let mut results = Vec::with_capacity(releases.len());
        let mut new: Vec<(SignedRelease, Vec<u8>)> = Vec::new();
        let mut adding = 0usize;
        for r in releases {
            let bytes = r.encode();
            let verdict = check(&self.packages, &r).and_then(|v| {
                // Two releases of one new name in a batch: the first wins.
                match new.iter().find(|(n, _)| n.release.name == r.release.name) {
                    Some((n, _)) if n.publisher != r.publisher => Err(StoreError::NotOwner {
                        name: r.release.name.clone(),
                        owner: n.publisher,
                        publisher: r.publisher,
                    }),
                    Some((n, _)) if n.release.version == r.release.version => Ok(Inserted::Known),
                    _ => Ok(v),
                }
            });
            let verdict = match verdict {
                Ok(Inserted::New) if origin == Origin::Remote => self
                    .fits(new.len(), adding, bytes.len())
                    .map(|()| Inserted::New),
                other => other,
            };
            if matches!(verdict, Ok(Inserted::New)) {
                adding += bytes.len();
                new.push((r, bytes));
            }
            results.push(verdict);
        }
        if new.is_empty() {
            return (results, None);
        }
        let rows: Vec<(String, Vec<u8>)> = new
            .iter()
            .map(|(r, bytes)| (row_key(&r.release.name, &r.release.version), bytes.clone()))
            .collect();
        let write: Write = Box::new(move |tx| {
            let mut table = tx.open_table(RELEASES).map_err(|e| e.to_string())?;
            let mut local = tx.open_table(LOCAL).map_err(|e| e.to_string())?;
            for (k, v) in &rows {
                table
                    .insert(k.as_bytes(), v.as_slice())
                    .map_err(|e| e.to_string())?;
                if origin == Origin::Local {
                    local
                        .insert(k.as_bytes(), &[][..])
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        });
        let queued = match origin {
            Origin::Local => self.writer.write(write),
            Origin::Remote => self.writer.try_write(write),
        };
        let ticket = match queued {
            Ok(t) => t,
            Err(e) => {
                let msg = e.to_string();
                let results = results
                    .into_iter()
                    .map(|v| match v {
                        Ok(Inserted::New) => Err(StoreError::Io(msg.clone())),
                        other => other,
                    })
                    .collect();
                return (results, None);
            }
        };
        let now = Instant::now();
        for (r, bytes) in new {
            self.remember(r, origin, bytes.len(), now);
        }
        (results, Some(ticket))
    }

    /// Whether one more remote release of `bytes` fits, with `releases`
    /// and `pending` bytes already on their way in.
    fn fits(&self, releases: usize, pending: usize, bytes: usize) -> Result<(), StoreError> {
        let (n, b) = (self.remote.len() + releases, self.remote_bytes + pending);
        if n >= self.limits.max_releases || b.saturating_add(bytes) > self.limits.max_bytes {
            return Err(StoreError::Full {
                releases: n,
                bytes: b,
            });
        }
        Ok(())
    }

    /// Holds `r`, whose encoding is `bytes` long.
    fn remember(&mut self, r: SignedRelease, origin: Origin, bytes: usize, now: Instant) {
        let key = (r.release.name.clone(), r.release.version.clone());
        if origin == Origin::Remote && !self.remote.contains_key(&key) {
            self.remote_bytes += bytes;
            self.remote.insert(
                key.clone(),
                Remote {
                    bytes,
                    served: false,
                },
            );
            self.unchecked.push_back((now, key));
        }
        self.packages
            .entry(r.release.name.clone())
            .or_default()
            .entry(r.release.version.clone())
            .or_insert(r);
    }

    /// Remote releases due a check for service at `now`: never checked
    /// and older than `grace`, or served and last checked over `recheck`
    /// ago. At most `max`; each is taken off the queue (report back with
    /// [`MetaStore::served`], [`MetaStore::evict`] or
    /// [`MetaStore::check_later`]).
    pub fn due_for_check(
        &mut self,
        now: Instant,
        grace: Duration,
        recheck: Duration,
        max: usize,
    ) -> Vec<(String, Version, Hash)> {
        let mut out = Vec::new();
        for (queue, wait) in [(&mut self.unchecked, grace), (&mut self.rechecks, recheck)] {
            while out.len() < max {
                match queue.front() {
                    Some((at, _)) if *at + wait <= now => {}
                    _ => break,
                }
                let Some((_, (name, version))) = queue.pop_front() else {
                    break;
                };
                let blob = self
                    .remote
                    .get(&(name.clone(), version.clone()))
                    .and_then(|_| self.packages.get(&name)?.get(&version))
                    .map(|r| r.release.blob);
                if let Some(blob) = blob {
                    out.push((name, version, blob));
                }
            }
        }
        out
    }

    /// A provider serves it: checked again a recheck period from now.
    pub fn served(&mut self, name: &str, version: &Version, now: Instant) {
        let key = (name.to_string(), version.clone());
        if let Some(r) = self.remote.get_mut(&key) {
            r.served = true;
            self.rechecks.push_back((now, key));
        }
    }

    /// The check could not be made (the lookup failed): try again a grace
    /// period from now.
    pub fn check_later(&mut self, name: &str, version: &Version, now: Instant) {
        let key = (name.to_string(), version.clone());
        if self.remote.contains_key(&key) {
            self.unchecked.push_back((now, key));
        }
    }

    /// Forgets a remote release nobody serves. Returns whether `name`
    /// still has releases here. Local releases are never evicted.
    pub fn evict(&mut self, name: &str, version: &Version) -> bool {
        let key = (name.to_string(), version.clone());
        if let Some(r) = self.remote.remove(&key) {
            self.remote_bytes = self.remote_bytes.saturating_sub(r.bytes);
            if let Some(versions) = self.packages.get_mut(name) {
                versions.remove(version);
                if versions.is_empty() {
                    self.packages.remove(name);
                }
            }
            let k = row_key(name, version);
            let write: Write = Box::new(move |tx| {
                let mut table = tx.open_table(RELEASES).map_err(|e| e.to_string())?;
                table.remove(k.as_bytes()).map_err(|e| e.to_string())?;
                Ok(())
            });
            if let Err(e) = self.writer.write(write) {
                tracing::warn!("registry: could not remove {name} {version} from disk: {e}");
            }
        }
        self.packages.contains_key(name)
    }

    /// Remote releases held, and their bytes.
    pub fn remote_usage(&self) -> (usize, usize) {
        (self.remote.len(), self.remote_bytes)
    }

    /// Whether `name` `version` came from a peer and was seen served.
    pub fn origin(&self, name: &str, version: &Version) -> Option<(Origin, bool)> {
        self.get(name, version)?;
        Some(
            match self.remote.get(&(name.to_string(), version.clone())) {
                Some(r) => (Origin::Remote, r.served),
                None => (Origin::Local, true),
            },
        )
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

type Packages = BTreeMap<String, BTreeMap<Version, SignedRelease>>;

fn check(packages: &Packages, r: &SignedRelease) -> Result<Inserted, StoreError> {
    let versions = packages.get(&r.release.name);
    match versions
        .and_then(|v| v.values().next())
        .map(|f| f.publisher)
    {
        Some(owner) if owner != r.publisher => Err(StoreError::NotOwner {
            name: r.release.name.clone(),
            owner,
            publisher: r.publisher,
        }),
        _ if versions.is_some_and(|v| v.contains_key(&r.release.version)) => Ok(Inserted::Known),
        _ => Ok(Inserted::New),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use crate::release::Release;
    use peerlink_net::Keypair;

    fn signed(name: &str, key: &Keypair) -> SignedRelease {
        let manifest = Manifest {
            name: name.into(),
            version: Version::new(1, 0, 0),
            description: "a test package".into(),
            keywords: vec![],
            license: "MIT".into(),
            dependencies: Default::default(),
        };
        SignedRelease::sign(Release::new(&manifest, name.as_bytes(), 1), key)
    }

    #[test]
    fn peers_releases_are_bounded_local_ones_are_not_and_origins_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::from_secret([3; 32]);
        let limits = StoreLimits {
            max_releases: 5,
            max_bytes: 1 << 20,
        };
        {
            let mut s = MetaStore::open(dir.path(), limits).unwrap();
            let remote: Vec<_> = (0..8).map(|i| signed(&format!("r{i}"), &key)).collect();
            let (results, _) = s.insert_many(remote, Origin::Remote);
            let stored = results
                .iter()
                .filter(|r| matches!(r, Ok(Inserted::New)))
                .count();
            assert_eq!(stored, 5);
            assert!(matches!(
                results[7],
                Err(StoreError::Full { releases: 5, .. })
            ));
            assert!(s.has_room(100).is_err());
            let local: Vec<_> = (0..8).map(|i| signed(&format!("l{i}"), &key)).collect();
            let (results, _) = s.insert_many(local, Origin::Local);
            assert!(results.iter().all(|r| matches!(r, Ok(Inserted::New))));
            assert_eq!(s.releases_total(), 13);
        }
        let s = MetaStore::open(dir.path(), limits).unwrap();
        assert_eq!(s.releases_total(), 13);
        assert_eq!(s.remote_usage().0, 5);
        let v = Version::new(1, 0, 0);
        assert_eq!(s.origin("l3", &v), Some((Origin::Local, true)));
        assert_eq!(s.origin("r3", &v), Some((Origin::Remote, false)));
    }

    #[test]
    fn unserved_releases_come_due_after_the_grace_and_eviction_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::from_secret([4; 32]);
        let limits = StoreLimits {
            max_releases: 3,
            max_bytes: 1 << 20,
        };
        let mut s = MetaStore::open(dir.path(), limits).unwrap();
        let now = Instant::now();
        let (grace, recheck) = (Duration::from_secs(60), Duration::from_secs(3600));
        let rs: Vec<_> = ["a", "b", "c"].iter().map(|n| signed(n, &key)).collect();
        s.insert_many(rs, Origin::Remote);
        s.insert_many(vec![signed("mine", &key)], Origin::Local);
        assert!(
            s.due_for_check(now, grace, recheck, 10).is_empty(),
            "within the grace"
        );
        let later = now + grace + Duration::from_secs(1);
        let due = s.due_for_check(later, grace, recheck, 2);
        assert_eq!(due.len(), 2, "a round takes at most its batch");
        let rest = s.due_for_check(later, grace, recheck, 10);
        assert_eq!(rest.len(), 1, "local releases are never checked");
        let v = Version::new(1, 0, 0);
        // a is served, b nobody serves, c could not be checked.
        s.served("a", &v, later);
        assert!(!s.evict("b", &v), "b had one release");
        s.check_later("c", &v, later);
        assert!(s.get("b", &v).is_none());
        assert_eq!(s.remote_usage().0, 2);
        assert!(s.has_room(100).is_ok(), "the eviction made room");
        // c comes back after another grace; a after the recheck period.
        let again = later + grace + Duration::from_secs(1);
        let names: Vec<_> = s
            .due_for_check(again, grace, recheck, 10)
            .into_iter()
            .map(|d| d.0)
            .collect();
        assert_eq!(names, ["c"]);
        let much_later = later + recheck + Duration::from_secs(1);
        let names: Vec<_> = s
            .due_for_check(much_later, grace, recheck, 10)
            .into_iter()
            .map(|d| d.0)
            .collect();
        assert_eq!(names, ["a"]);
        drop(s);
        let s = MetaStore::open(dir.path(), limits).unwrap();
        assert!(s.get("b", &v).is_none(), "the eviction reached the disk");
        assert!(s.get("mine", &v).is_some());
    }
}
