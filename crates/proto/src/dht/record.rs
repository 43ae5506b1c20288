//! Signed mutable records, provider records, and the [`RecordStore`]
//! trait with its in-memory implementation.
//!
//! A record is signed by its publisher over the domain string, key,
//! publisher, sequence number, expiry and value. A stored record is only
//! replaced by one from the same publisher with a higher sequence number.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};

use super::key::Key;
use crate::{Keypair, PeerId};

pub const SIGNATURE_LEN: usize = 64;
const DOMAIN: &[u8] = b"peerlink-dht-record-v1:";

#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub value: Bytes,
    pub publisher: PeerId,
    pub seq: u64,
    /// Unix time in milliseconds after which nobody serves it.
    pub expires_ms: u64,
    pub signature: [u8; SIGNATURE_LEN],
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key)
            .field("len", &self.value.len())
            .field("publisher", &self.publisher)
            .field("seq", &self.seq)
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// Why a record was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("bad signature")]
    BadSignature,
    #[error("value of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("expired")]
    Expired,
    #[error("expiry {ahead_ms} ms ahead is beyond the maximum of {max_ms} ms")]
    ExpiryTooFar { ahead_ms: u64, max_ms: u64 },
    #[error("sequence number {got} does not beat the stored {have}")]
    Stale { got: u64, have: u64 },
    #[error("the key is held by another publisher")]
    NotOwner,
}

impl Record {
    fn signed_bytes(
        key: &Key,
        publisher: &PeerId,
        seq: u64,
        expires_ms: u64,
        value: &[u8],
    ) -> Vec<u8> {
        let mut m = BytesMut::with_capacity(DOMAIN.len() + 90 + value.len());
        m.extend_from_slice(DOMAIN);
        m.extend_from_slice(&key.0);
        m.extend_from_slice(publisher.as_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&expires_ms.to_be_bytes());
        m.extend_from_slice(value);
        m.to_vec()
    }

    pub fn sign(keypair: &Keypair, key: Key, value: Bytes, seq: u64, expires_ms: u64) -> Record {
        let publisher = keypair.peer_id();
        let signature = keypair.sign(&Self::signed_bytes(
            &key, &publisher, seq, expires_ms, &value,
        ));
        Record {
            key,
            value,
            publisher,
            seq,
            expires_ms,
            signature,
        }
    }

    /// Checks size, expiry window and signature (cheapest first).
    pub fn validate(
        &self,
        now_ms: u64,
        max_value: usize,
        max_ttl_ms: u64,
    ) -> Result<(), RecordError> {
        if self.value.len() > max_value {
            return Err(RecordError::TooLarge {
                len: self.value.len(),
                max: max_value,
            });
        }
        if self.expires_ms <= now_ms {
            return Err(RecordError::Expired);
        }
        let ahead_ms = self.expires_ms - now_ms;
        if ahead_ms > max_ttl_ms {
            return Err(RecordError::ExpiryTooFar {
                ahead_ms,
                max_ms: max_ttl_ms,
            });
        }
        let msg = Self::signed_bytes(
            &self.key,
            &self.publisher,
            self.seq,
            self.expires_ms,
            &self.value,
        );
        self.publisher
            .verify(&msg, &self.signature)
            .map_err(|_| RecordError::BadSignature)
    }

    /// May `self` replace `stored`?
    pub fn supersedes(&self, stored: &Record) -> Result<(), RecordError> {
        if self.publisher != stored.publisher {
            return Err(RecordError::NotOwner);
        }
        if self.seq <= stored.seq {
            return Err(RecordError::Stale {
                got: self.seq,
                have: stored.seq,
            });
        }
        Ok(())
    }

    /// Encoded size, for store accounting.
    pub fn encoded_len(&self) -> usize {
        32 + 32 + 16 + 5 + self.value.len() + SIGNATURE_LEN
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        super::wire::put_record(&mut out, self);
        out.freeze()
    }

    /// Decodes a record written by [`Record::encode`] (no validation).
    pub fn decode(input: &[u8]) -> Result<Record, super::wire::WireError> {
        super::wire::decode_record(input)
    }
}

/// "`provider` has the content under this key, until `expires_ms`."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderRecord {
    pub provider: super::wire::Contact,
    pub expires_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("record store full")]
    Full,
    #[error("storage error: {0}")]
    Io(String),
}

/// Where a node keeps the records and provider records it holds. The DHT
/// validates before it stores; a store only keeps and bounds.
pub trait RecordStore: Send {
    fn get(&self, key: &Key) -> Option<Record>;
    /// Inserts or overwrites.
    fn put(&mut self, record: Record) -> Result<(), StoreError>;
    fn remove(&mut self, key: &Key);
    /// Every stored key, in key order.
    fn keys(&self) -> Vec<Key>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Inserts or refreshes `record.provider` for `key`.
    fn add_provider(&mut self, key: Key, record: ProviderRecord) -> Result<(), StoreError>;
    fn providers(&self, key: &Key) -> Vec<ProviderRecord>;
    fn provider_keys(&self) -> Vec<Key>;
    fn remove_provider(&mut self, key: &Key, provider: &PeerId);
    /// Stores a record this node signed and remembers it as its own, in
    /// one write: own records are re-signed before they expire, also after
    /// a restart, and are kept even once the held copy has expired.
    fn put_own(&mut self, record: Record) -> Result<(), StoreError>;
    /// The newest version of every record this node signed.
    fn own_records(&self) -> Vec<Record>;
    /// Remembers that this node provides `key` (re-announced, also after
    /// a restart).
    fn add_providing(&mut self, key: Key) -> Result<(), StoreError>;
    fn providing(&self) -> Vec<Key>;
}

/// The default store: bounded maps in memory.
pub struct MemoryStore {
    records: BTreeMap<Key, Record>,
    providers: BTreeMap<Key, Vec<ProviderRecord>>,
    own: BTreeMap<Key, Record>,
    providing: BTreeSet<Key>,
    max_records: usize,
    max_providers_per_key: usize,
}

impl MemoryStore {
    pub fn new(max_records: usize, max_providers_per_key: usize) -> Self {
        MemoryStore {
            records: BTreeMap::new(),
            providers: BTreeMap::new(),
            own: BTreeMap::new(),
            providing: BTreeSet::new(),
            max_records,
            max_providers_per_key,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(65_536, 64)
    }
}

impl RecordStore for MemoryStore {
    fn get(&self, key: &Key) -> Option<Record> {
        self.records.get(key).cloned()
    }
    fn put(&mut self, record: Record) -> Result<(), StoreError> {
        if self.records.len() >= self.max_records && !self.records.contains_key(&record.key) {
            return Err(StoreError::Full);
        }
        self.records.insert(record.key, record);
        Ok(())
    }
    fn remove(&mut self, key: &Key) {
        self.records.remove(key);
    }
    fn keys(&self) -> Vec<Key> {
        self.records.keys().copied().collect()
    }
    fn len(&self) -> usize {
        self.records.len()
    }
    fn add_provider(&mut self, key: Key, record: ProviderRecord) -> Result<(), StoreError> {
        if !self.providers.contains_key(&key) && self.providers.len() >= self.max_records {
            return Err(StoreError::Full);
        }
        let list = self.providers.entry(key).or_default();
        if let Some(p) = list
            .iter_mut()
            .find(|p| p.provider.id == record.provider.id)
        {
            *p = record;
            return Ok(());
        }
        if list.len() >= self.max_providers_per_key {
            return Err(StoreError::Full);
        }
        list.push(record);
        Ok(())
    }
    fn providers(&self, key: &Key) -> Vec<ProviderRecord> {
        self.providers.get(key).cloned().unwrap_or_default()
    }
    fn provider_keys(&self) -> Vec<Key> {
        self.providers.keys().copied().collect()
    }
    fn remove_provider(&mut self, key: &Key, provider: &PeerId) {
        if let Some(list) = self.providers.get_mut(key) {
            list.retain(|p| p.provider.id != *provider);
            if list.is_empty() {
                self.providers.remove(key);
            }
        }
    }
    fn put_own(&mut self, record: Record) -> Result<(), StoreError> {
        // Own records are the local user's, bounded like held ones.
        if self.own.len() >= self.max_records && !self.own.contains_key(&record.key) {
            return Err(StoreError::Full);
        }
        self.put(record.clone())?;
        self.own.insert(record.key, record);
        Ok(())
    }
    fn own_records(&self) -> Vec<Record> {
        self.own.values().cloned().collect()
    }
    fn add_providing(&mut self, key: Key) -> Result<(), StoreError> {
        if self.providing.len() >= self.max_records && !self.providing.contains(&key) {
            return Err(StoreError::Full);
        }
        self.providing.insert(key);
        Ok(())
    }
    fn providing(&self) -> Vec<Key> {
        self.providing.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn sign_validate_and_hostile_records() {
        let kp = Keypair::from_secret([1; 32]);
        let r = Record::sign(
            &kp,
            Key::hash(b"k"),
            Bytes::from_static(b"v"),
            5,
            NOW + 1000,
        );
        assert_eq!(r.validate(NOW, 10, 10_000), Ok(()));
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);

        let mut bad = r.clone();
        bad.value = Bytes::from_static(b"w");
        assert_eq!(
            bad.validate(NOW, 10, 10_000),
            Err(RecordError::BadSignature)
        );
        let mut bad = r.clone();
        bad.seq = 6;
        assert_eq!(
            bad.validate(NOW, 10, 10_000),
            Err(RecordError::BadSignature)
        );
        assert_eq!(
            r.validate(NOW + 1000, 10, 10_000),
            Err(RecordError::Expired)
        );
        assert!(matches!(
            r.validate(NOW, 10, 999),
            Err(RecordError::ExpiryTooFar { .. })
        ));
        let big = Record::sign(&kp, r.key, Bytes::from(vec![0u8; 11]), 1, NOW + 1);
        assert!(matches!(
            big.validate(NOW, 10, 10_000),
            Err(RecordError::TooLarge { .. })
        ));

        let newer = Record::sign(&kp, r.key, Bytes::from_static(b"x"), 6, NOW + 1000);
        assert_eq!(newer.supersedes(&r), Ok(()));
        assert_eq!(
            r.supersedes(&newer),
            Err(RecordError::Stale { got: 5, have: 6 })
        );
        assert_eq!(
            r.supersedes(&r),
            Err(RecordError::Stale { got: 5, have: 5 })
        );
        let other = Record::sign(
            &Keypair::from_secret([2; 32]),
            r.key,
            Bytes::new(),
            99,
            NOW + 1,
        );
        assert_eq!(other.supersedes(&r), Err(RecordError::NotOwner));
    }

    #[test]
    fn memory_store_is_bounded() {
        let kp = Keypair::from_secret([1; 32]);
        let mut s = MemoryStore::new(2, 1);
        for i in 0..2u8 {
            s.put(Record::sign(&kp, Key::hash(&[i]), Bytes::new(), 1, NOW))
                .unwrap();
        }
        let third = Record::sign(&kp, Key::hash(&[3]), Bytes::new(), 1, NOW);
        assert_eq!(s.put(third), Err(StoreError::Full));
        assert_eq!(s.len(), 2);
        let c = |i: u8| {
            super::super::wire::Contact::new(
                Keypair::from_secret([i; 32]).peer_id(),
                ([1, 1, 1, i], 1).into(),
            )
        };
        let k = Key::hash(b"p");
        s.add_provider(
            k,
            ProviderRecord {
                provider: c(1),
                expires_ms: 5,
            },
        )
        .unwrap();
        s.add_provider(
            k,
            ProviderRecord {
                provider: c(1),
                expires_ms: 9,
            },
        )
        .unwrap();
        assert_eq!(
            s.add_provider(
                k,
                ProviderRecord {
                    provider: c(2),
                    expires_ms: 9
                }
            ),
            Err(StoreError::Full)
        );
        assert_eq!(s.providers(&k)[0].expires_ms, 9);
        s.remove_provider(&k, &c(1).id);
        assert!(s.providers(&k).is_empty());
    }
}
