//! A persistent [`RecordStore`] on redb: a node restarted on the same data
//! directory keeps its records and provider records.
//!
//! Reads are served from an in-memory copy loaded at open; every write goes
//! to the database in its own transaction before it is acknowledged.

use std::path::Path;

use peerlink_proto::dht::{
    Contact, Key, MemoryStore, ProviderRecord, Record, RecordStore, StoreError,
};
use peerlink_proto::PeerId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Key: record key (32) ‖ provider id (32). Value: addr text ‖ expiry.
const PROVIDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("providers");

pub struct RedbStore {
    db: Database,
    mem: MemoryStore,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) `dir/dht.redb` and loads what it holds. Entries
    /// that no longer decode are skipped, not fatal.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io)?;
        let db = Database::create(dir.join("dht.redb")).map_err(io)?;
        {
            let tx = db.begin_write().map_err(io)?;
            tx.open_table(RECORDS).map_err(io)?;
            tx.open_table(PROVIDERS).map_err(io)?;
            tx.commit().map_err(io)?;
        }
        let mut mem = MemoryStore::default();
        let tx = db.begin_read().map_err(io)?;
        for row in tx.open_table(RECORDS).map_err(io)?.iter().map_err(io)? {
            let (_, v) = row.map_err(io)?;
            if let Ok(r) = Record::decode(v.value()) {
                let _ = mem.put(r);
            }
        }
        for row in tx.open_table(PROVIDERS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            if let Some((key, p)) = decode_provider(k.value(), v.value()) {
                let _ = mem.add_provider(key, p);
            }
        }
        drop(tx);
        Ok(RedbStore { db, mem })
    }

    fn write(
        &self,
        f: impl FnOnce(
            &mut redb::Table<&[u8], &[u8]>,
            &mut redb::Table<&[u8], &[u8]>,
        ) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        {
            let mut records = tx.open_table(RECORDS).map_err(io)?;
            let mut providers = tx.open_table(PROVIDERS).map_err(io)?;
            f(&mut records, &mut providers).map_err(io)?;
        }
        tx.commit().map_err(io)
    }
}

fn provider_key(key: &Key, peer: &PeerId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&key.0);
    k[32..].copy_from_slice(peer.as_bytes());
    k
}

fn decode_provider(k: &[u8], v: &[u8]) -> Option<(Key, ProviderRecord)> {
    let key = Key(k.get(..32)?.try_into().ok()?);
    let id = PeerId::from_slice(k.get(32..64)?).ok()?;
    let expires_ms = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let addr = std::str::from_utf8(v.get(8..)?).ok()?.parse().ok()?;
    Some((
        key,
        ProviderRecord {
            provider: Contact::new(id, addr),
            expires_ms,
        },
    ))
}

impl RecordStore for RedbStore {
    fn get(&self, key: &Key) -> Option<Record> {
        self.mem.get(key)
    }
    fn put(&mut self, record: Record) -> Result<(), StoreError> {
        if self.mem.get(&record.key).is_none() && self.mem.put(record.clone()).is_err() {
            return Err(StoreError::Full);
        }
        let bytes = record.encode();
        self.write(|r, _| r.insert(&record.key.0[..], &bytes[..]).map(|_| ()))?;
        self.mem.put(record)
    }
    fn remove(&mut self, key: &Key) {
        self.mem.remove(key);
        let _ = self.write(|r, _| r.remove(&key.0[..]).map(|_| ()));
    }
    fn keys(&self) -> Vec<Key> {
        self.mem.keys()
    }
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn add_provider(&mut self, key: Key, record: ProviderRecord) -> Result<(), StoreError> {
        self.mem.add_provider(key, record)?;
        let k = provider_key(&key, &record.provider.id);
        let mut v = record.expires_ms.to_be_bytes().to_vec();
        v.extend_from_slice(record.provider.addr.to_string().as_bytes());
        self.write(|_, p| p.insert(&k[..], &v[..]).map(|_| ()))
    }
    fn providers(&self, key: &Key) -> Vec<ProviderRecord> {
        self.mem.providers(key)
    }
    fn provider_keys(&self) -> Vec<Key> {
        self.mem.provider_keys()
    }
    fn remove_provider(&mut self, key: &Key, provider: &PeerId) {
        self.mem.remove_provider(key, provider);
        let k = provider_key(key, provider);
        let _ = self.write(|_, p| p.remove(&k[..]).map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use peerlink_proto::Keypair;

    #[test]
    fn records_survive_reopen_and_garbage_rows_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let kp = Keypair::from_secret([4; 32]);
        let key = Key::hash(b"persist");
        let rec = Record::sign(&kp, key, Bytes::from_static(b"v"), 3, u64::MAX / 2);
        let c = Contact::new(kp.peer_id(), "10.1.2.3:4001".parse().unwrap());
        {
            let mut s = RedbStore::open(dir.path()).unwrap();
            s.put(rec.clone()).unwrap();
            s.add_provider(
                key,
                ProviderRecord {
                    provider: c,
                    expires_ms: 77,
                },
            )
            .unwrap();
            s.put(Record::sign(&kp, Key::hash(b"gone"), Bytes::new(), 1, 5))
                .unwrap();
            s.remove(&Key::hash(b"gone"));
            // A corrupt row must not stop the node from starting.
            s.write(|r, _| r.insert(&[1u8; 32][..], &b"garbage"[..]).map(|_| ()))
                .unwrap();
        }
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.get(&key), Some(rec));
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.providers(&key),
            vec![ProviderRecord {
                provider: c,
                expires_ms: 77
            }]
        );
    }
}
