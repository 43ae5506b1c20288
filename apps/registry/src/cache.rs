//! The content cache: archives by BLAKE3 hash on disk, least recently used
//! evicted beyond a size bound; the archives this node published are
//! pinned (kept and served for as long as the node runs).
//!
//! Hits and misses are counted: [`CacheStats::hit_rate`] is the figure the
//! registry benchmark reports.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::release::Hash;

/// How big the cache may grow.
#[derive(Clone, Copy, Debug)]
pub struct CacheLimits {
    pub max_entries: usize,
    pub max_bytes: u64,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_entries: 10_000,
            max_bytes: 1 << 30,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
    pub bytes: u64,
    pub pinned: usize,
}

impl CacheStats {
    /// Hits over lookups, 0 when nothing was looked up.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

pub struct BlobCache {
    dir: PathBuf,
    limits: CacheLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Cached (unpinned) blobs: hash → (last use, size).
    entries: HashMap<Hash, (u64, u64)>,
    by_use: BTreeMap<u64, Hash>,
    pinned: HashMap<Hash, u64>,
    tick: u64,
    stats: CacheStats,
}

impl BlobCache {
    /// Opens the cache in `dir`, adopting the blobs already there (oldest
    /// modification first in the LRU order).
    pub fn open(dir: &Path, limits: CacheLimits) -> std::io::Result<BlobCache> {
        let cache = BlobCache {
            dir: dir.to_path_buf(),
            limits,
            state: Mutex::new(State::default()),
        };
        for sub in ["cache", "pinned"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let mut found = Vec::new();
        for sub in ["cache", "pinned"] {
            for entry in std::fs::read_dir(dir.join(sub))? {
                let entry = entry?;
                let Some(hash) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue; // a leftover temporary file
                };
                let meta = entry.metadata()?;
                found.push((meta.modified().ok(), sub == "pinned", hash, meta.len()));
            }
        }
        found.sort_by_key(|f| f.0);
        {
            let mut s = cache.lock();
            for (_, pinned, hash, size) in found {
                if pinned {
                    s.pinned.insert(hash, size);
                } else {
                    s.touch(hash, size);
                }
            }
        }
        cache.evict();
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, hash: &Hash, pinned: bool) -> PathBuf {
        self.dir
            .join(if pinned { "pinned" } else { "cache" })
            .join(hash.to_string())
    }

    /// Whether the blob is here (not counted as a lookup).
    pub fn contains(&self, hash: &Hash) -> bool {
        let s = self.lock();
        s.pinned.contains_key(hash) || s.entries.contains_key(hash)
    }

    pub fn is_pinned(&self, hash: &Hash) -> bool {
        self.lock().pinned.contains_key(hash)
    }

    /// Drops the blob, pinned or cached.
    pub fn remove(&self, hash: &Hash) {
        let (pinned, cached) = {
            let mut s = self.lock();
            (s.pinned.remove(hash).is_some(), s.forget(hash))
        };
        for (gone, is_pinned) in [(pinned, true), (cached, false)] {
            if gone {
                let _ = std::fs::remove_file(self.path(hash, is_pinned));
            }
        }
    }

    /// The blob, counted as a hit or a miss.
    pub fn get(&self, hash: &Hash) -> Option<Vec<u8>> {
        let found = self.read(hash);
        let mut s = self.lock();
        match &found {
            Some(_) => s.stats.hits += 1,
            None => s.stats.misses += 1,
        }
        found
    }

    /// Where the blob is, marking it used.
    fn locate(&self, hash: &Hash) -> Option<PathBuf> {
        let mut s = self.lock();
        if s.pinned.contains_key(hash) {
            return Some(self.path(hash, true));
        }
        let &(_, size) = s.entries.get(hash)?;
        s.touch(*hash, size);
        Some(self.path(hash, false))
    }

    /// The blob without counting a lookup.
    pub fn read(&self, hash: &Hash) -> Option<Vec<u8>> {
        match std::fs::read(self.locate(hash)?) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                // Removed behind our back: forget it.
                let mut s = self.lock();
                s.pinned.remove(hash);
                s.forget(hash);
                None
            }
        }
    }

    /// Up to `len` bytes of the blob from `offset` (serving one chunk to a
    /// peer: only that much is read). `None` if the blob is not here or
    /// `offset` is past its end.
    pub fn read_range(&self, hash: &Hash, offset: u64, len: usize) -> Option<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(self.locate(hash)?).ok()?;
        let size = f.metadata().ok()?.len();
        if offset >= size {
            return None;
        }
        f.seek(SeekFrom::Start(offset)).ok()?;
        let want = (size - offset).min(len as u64) as usize;
        let mut buf = vec![0u8; want];
        f.read_exact(&mut buf).ok()?;
        Some(buf)
    }

    /// Stores a verified blob. `pin` keeps it regardless of the bounds.
    pub fn put(&self, hash: Hash, bytes: &[u8], pin: bool) -> std::io::Result<()> {
        if self.contains(&hash) && !pin {
            return Ok(());
        }
        let dest = self.path(&hash, pin);
        peerlink_net::fsutil::write_atomic(&dest, bytes, true)?;
        {
            let mut s = self.lock();
            if pin {
                if s.forget(&hash) {
                    let _ = std::fs::remove_file(self.path(&hash, false));
                }
                s.pinned.insert(hash, bytes.len() as u64);
            } else {
                s.touch(hash, bytes.len() as u64);
            }
        }
        self.evict();
        Ok(())
    }

    fn evict(&self) {
        let mut gone = Vec::new();
        {
            let mut s = self.lock();
            while s.entries.len() > self.limits.max_entries || s.stats.bytes > self.limits.max_bytes
            {
                let Some((_, hash)) = s.by_use.pop_first() else {
                    break;
                };
                s.forget(&hash);
                s.stats.evictions += 1;
                gone.push(hash);
            }
        }
        for hash in gone {
            let _ = std::fs::remove_file(self.path(&hash, false));
        }
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            entries: s.entries.len(),
            pinned: s.pinned.len(),
            ..s.stats
        }
    }
}

impl State {
    fn touch(&mut self, hash: Hash, size: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((old, _)) = self.entries.insert(hash, (tick, size)) {
            self.by_use.remove(&old);
        } else {
            self.stats.bytes += size;
        }
        self.by_use.insert(tick, hash);
    }

    fn forget(&mut self, hash: &Hash) -> bool {
        match self.entries.remove(hash) {
            Some((tick, size)) => {
                self.by_use.remove(&tick);
                self.stats.bytes -= size;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first_and_pins_stay() {
        let dir = tempfile::tempdir().unwrap();
        let limits = CacheLimits {
            max_entries: 2,
            max_bytes: 1 << 20,
        };
        let cache = BlobCache::open(dir.path(), limits).unwrap();
        let blob = |i: u8| (Hash::of(&[i]), vec![i; 10]);
        let (a, b, c, p) = (blob(1), blob(2), blob(3), blob(9));
        cache.put(p.0, &p.1, true).unwrap();
        cache.put(a.0, &a.1, false).unwrap();
        cache.put(b.0, &b.1, false).unwrap();
        assert_eq!(cache.get(&a.0), Some(a.1.clone())); // a is now newer than b
        cache.put(c.0, &c.1, false).unwrap();
        assert_eq!(cache.get(&b.0), None, "b was the least recently used");
        assert!(cache.get(&a.0).is_some() && cache.get(&c.0).is_some());
        assert_eq!(cache.get(&p.0), Some(p.1.clone()), "pinned blobs stay");
        let s = cache.stats();
        assert_eq!(
            (s.hits, s.misses, s.evictions, s.entries, s.pinned),
            (4, 1, 1, 2, 1)
        );
        assert_eq!(s.bytes, 20);
        assert!((s.hit_rate() - 0.8).abs() < 1e-9);
        drop(cache);
        // Reopened, it adopts what is on disk.
        let cache = BlobCache::open(dir.path(), limits).unwrap();
        assert!(cache.contains(&a.0) && cache.contains(&c.0) && cache.contains(&p.0));
        assert!(!cache.contains(&b.0));
        // Ranges, as chunks are served.
        assert_eq!(cache.read_range(&a.0, 4, 100), Some(vec![1; 6]));
        assert_eq!(cache.read_range(&a.0, 10, 1), None, "past the end");
        assert_eq!(cache.read_range(&b.0, 0, 1), None, "not here");
        cache.remove(&p.0);
        assert!(!cache.contains(&p.0) && !cache.is_pinned(&p.0));
        assert_eq!(
            std::fs::read_dir(dir.path().join("pinned"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn the_byte_bound_evicts() {
        let dir = tempfile::tempdir().unwrap();
        let limits = CacheLimits {
            max_entries: 100,
            max_bytes: 25,
        };
        let cache = BlobCache::open(dir.path(), limits).unwrap();
        for i in 0..5u8 {
            cache.put(Hash::of(&[i]), &[i; 10], false).unwrap();
        }
        let s = cache.stats();
        assert_eq!((s.entries, s.bytes, s.evictions), (2, 20, 3));
    }
}
