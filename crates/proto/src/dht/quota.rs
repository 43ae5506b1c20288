//! What others may store with us, and what it costs us to keep it.
//!
//! New identities are free, so a per-peer write rate alone does not bound
//! a node's store. Every record and provider record a peer hands us is
//! admitted only if all of these hold:
//!
//! - **closeness**: the key is one we are plausibly responsible for (fewer
//!   than [`DhtConfig::store_radius`] peers we know are closer to it than
//!   we are). A record for a key elsewhere is refused with
//!   [`ErrorCode::NotClose`]; grinding keys near one node is cheap, so
//!   this narrows a flood, it does not stop it;
//! - **per publisher**: records signed by one key, in count and bytes;
//! - **per prefix**: records first written to us from one IPv4 /24 or IPv6
//!   /48 (count and bytes), and provider records announced from one;
//! - **in total**: bytes of held records ([`DhtConfig::max_store_bytes`];
//!   the store also bounds their count).
//!
//! A write over a quota is refused ([`ErrorCode::StoreFull`]) — nothing
//! held is evicted to make room, so a flood cannot push out what honest
//! peers stored; it can only fill its own share. A newer sequence of a
//! record we hold is always taken (it replaces, and grows the byte count
//! by the difference). Records this node signed are its user's, outside
//! every quota. Usage is attributed when a key is first stored and freed
//! when the record expires; every update is O(1).
//!
//! Replication does not grow with what others stored: a held record that
//! another holder re-stored with us within the republish interval is not
//! re-stored by us (one holder per interval does the work for all k), and
//! one republish round re-stores at most [`DhtConfig::republish_budget`]
//! records, least recently refreshed first.
//!
//! [`DhtConfig::store_radius`]: super::DhtConfig::store_radius
//! [`DhtConfig::max_store_bytes`]: super::DhtConfig::max_store_bytes
//! [`DhtConfig::republish_budget`]: super::DhtConfig::republish_budget
//! [`ErrorCode::NotClose`]: super::ErrorCode::NotClose
//! [`ErrorCode::StoreFull`]: super::ErrorCode::StoreFull

use std::collections::HashMap;
use std::time::Instant;

use super::{DhtConfig, Key, Record};
use crate::prefix::Prefix;
use crate::PeerId;

/// Bytes a held record is counted as: its encoding, plus what holding it
/// costs beyond that (map entries, bookkeeping).
pub(super) fn cost(record: &Record) -> usize {
    record.encoded_len() + 128
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Usage {
    records: usize,
    bytes: usize,
}

impl Usage {
    fn add(&mut self, bytes: usize) {
        self.records += 1;
        self.bytes += bytes;
    }
    fn sub(&mut self, bytes: usize) {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
    fn fits(&self, bytes: usize, max_records: usize, max_bytes: usize) -> bool {
        self.records < max_records && self.bytes.saturating_add(bytes) <= max_bytes
    }
}

#[derive(Clone, Debug)]
struct Held {
    publisher: PeerId,
    prefix: Option<Prefix>,
    bytes: usize,
    /// When a peer last stored it with us (or we did).
    refreshed: Instant,
}

/// Why a write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Over {
    Total,
    Publisher,
    Prefix,
}

#[derive(Default)]
pub(super) struct Quotas {
    held: HashMap<Key, Held>,
    publishers: HashMap<PeerId, Usage>,
    prefixes: HashMap<Prefix, Usage>,
    total: Usage,
    /// Provider records by (key, provider) and the prefix they came from.
    providers: HashMap<(Key, PeerId), Prefix>,
    provider_prefixes: HashMap<Prefix, usize>,
}

impl Quotas {
    /// Whether `record` may be stored, coming from `prefix` (`None`: found
    /// by our own lookup). A key already held only has to fit the total.
    pub(super) fn admit(
        &self,
        c: &DhtConfig,
        record: &Record,
        prefix: Option<Prefix>,
    ) -> Result<(), Over> {
        let bytes = cost(record);
        if let Some(h) = self.held.get(&record.key) {
            let grows = bytes.saturating_sub(h.bytes);
            return match self.total.bytes.saturating_add(grows) <= c.max_store_bytes {
                true => Ok(()),
                false => Err(Over::Total),
            };
        }
        if self.total.bytes.saturating_add(bytes) > c.max_store_bytes {
            return Err(Over::Total);
        }
        let publisher = self
            .publishers
            .get(&record.publisher)
            .copied()
            .unwrap_or_default();
        if !publisher.fits(
            bytes,
            c.max_records_per_publisher,
            c.max_bytes_per_publisher,
        ) {
            return Err(Over::Publisher);
        }
        if let Some(p) = prefix {
            let usage = self.prefixes.get(&p).copied().unwrap_or_default();
            if !usage.fits(bytes, c.max_records_per_prefix, c.max_bytes_per_prefix) {
                return Err(Over::Prefix);
            }
        }
        Ok(())
    }

    /// Records that `record` is held (after [`Quotas::admit`] and the
    /// store took it). A replaced copy keeps the first writer's prefix.
    pub(super) fn insert(&mut self, record: &Record, prefix: Option<Prefix>, now: Instant) {
        let bytes = cost(record);
        let prefix = match self.forget(&record.key) {
            Some(old) => old.prefix,
            None => prefix,
        };
        self.total.add(bytes);
        self.publishers
            .entry(record.publisher)
            .or_default()
            .add(bytes);
        if let Some(p) = prefix {
            self.prefixes.entry(p).or_default().add(bytes);
        }
        self.held.insert(
            record.key,
            Held {
                publisher: record.publisher,
                prefix,
                bytes,
                refreshed: now,
            },
        );
    }

    /// A peer stored a copy we already hold: it is replicated for now.
    pub(super) fn refreshed(&mut self, key: &Key, now: Instant) {
        if let Some(h) = self.held.get_mut(key) {
            h.refreshed = now;
        }
    }

    /// The record under `key` is gone (expired or removed).
    pub(super) fn remove(&mut self, key: &Key) {
        self.forget(key);
    }

    fn forget(&mut self, key: &Key) -> Option<Held> {
        let h = self.held.remove(key)?;
        self.total.sub(h.bytes);
        if let Some(u) = self.publishers.get_mut(&h.publisher) {
            u.sub(h.bytes);
            if u.records == 0 {
                self.publishers.remove(&h.publisher);
            }
        }
        if let Some(p) = h.prefix {
            if let Some(u) = self.prefixes.get_mut(&p) {
                u.sub(h.bytes);
                if u.records == 0 {
                    self.prefixes.remove(&p);
                }
            }
        }
        Some(h)
    }

    /// Held records no peer re-stored since `before`, least recently
    /// refreshed first, at most `budget`.
    pub(super) fn due_for_republish(&self, before: Instant, budget: usize) -> Vec<Key> {
        let mut due: Vec<(Instant, Key)> = self
            .held
            .iter()
            .filter(|(_, h)| h.refreshed <= before)
            .map(|(k, h)| (h.refreshed, *k))
            .collect();
        if due.len() > budget {
            due.select_nth_unstable(budget);
            due.truncate(budget);
        }
        due.sort_unstable();
        due.into_iter().map(|(_, k)| k).collect()
    }

    /// Whether a provider record for `key` by `provider` from `prefix` may
    /// be added (a refresh of one we hold always may).
    pub(super) fn admit_provider(
        &self,
        c: &DhtConfig,
        key: &Key,
        provider: &PeerId,
        prefix: Prefix,
    ) -> bool {
        self.providers.contains_key(&(*key, *provider))
            || self.provider_prefixes.get(&prefix).copied().unwrap_or(0)
                < c.max_providers_per_prefix
    }

    pub(super) fn insert_provider(&mut self, key: Key, provider: PeerId, prefix: Prefix) {
        if self.providers.insert((key, provider), prefix).is_none() {
            *self.provider_prefixes.entry(prefix).or_default() += 1;
        }
    }

    pub(super) fn remove_provider(&mut self, key: &Key, provider: &PeerId) {
        if let Some(p) = self.providers.remove(&(*key, *provider)) {
            if let Some(n) = self.provider_prefixes.get_mut(&p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.provider_prefixes.remove(&p);
                }
            }
        }
    }

    /// Bytes of held records, as counted against `max_store_bytes`.
    pub(super) fn bytes(&self) -> usize {
        self.total.bytes
    }

    #[cfg(test)]
    pub(super) fn prefix_records(&self, p: &Prefix) -> usize {
        self.prefixes.get(p).map_or(0, |u| u.records)
    }
}
