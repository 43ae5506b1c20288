//! A map of recently used entries with a hard size bound and O(1)
//! updates, for per-peer state that a stream of fresh identities would
//! otherwise grow without end.
//!
//! Two generations: entries live in `new` when touched; when `new` holds
//! half the bound it becomes `old` and the previous `old` is dropped. An
//! entry touched in either generation survives; one untouched for a whole
//! generation is forgotten (for a rate bucket that means it starts full
//! again, as a quiet peer's would).

use std::collections::HashMap;
use std::hash::Hash;

/// Keeps at most `max` entries, dropping the least recently used half
/// at a time.
pub struct Recent<K, V> {
    half: usize,
    new: HashMap<K, V>,
    old: HashMap<K, V>,
}

impl<K: Hash + Eq + Copy, V> Recent<K, V> {
    /// At most `max` entries (at least 2).
    pub fn new(max: usize) -> Self {
        Recent {
            half: (max / 2).max(1),
            new: HashMap::new(),
            old: HashMap::new(),
        }
    }

    /// The entry for `k`, made with `make` if it was not held.
    pub fn entry(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        let v = match self.new.remove(&k) {
            Some(v) => v,
            None => {
                let v = self.old.remove(&k).unwrap_or_else(make);
                if self.new.len() >= self.half {
                    self.old = std::mem::take(&mut self.new);
                }
                v
            }
        };
        self.new.entry(k).or_insert(v)
    }

    /// The entry for `k` if held, without touching it.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.new.get(k).or_else(|| self.old.get(k))
    }

    pub fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_what_is_in_use() {
        let mut r: Recent<u32, u32> = Recent::new(100);
        for i in 0..100_000u32 {
            *r.entry(i, || 0) += 1;
            // A busy peer among a stream of fresh ones keeps its state.
            *r.entry(u32::MAX, || 0) += 1;
            assert!(r.len() <= 100);
        }
        assert_eq!(*r.entry(u32::MAX, || 0), 100_000);
        // A fresh one, untouched since, is gone.
        assert_eq!(*r.entry(5, || 7), 7);
    }
}
