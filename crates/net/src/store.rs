//! A persistent [`RecordStore`] on redb: a node restarted on the same data
//! directory keeps its records and provider records, and what it owns: the
//! records it signed and the keys it provides, so it goes on re-signing
//! and re-announcing them.
//!
//! Reads are served from an in-memory copy loaded at open; every write goes
//! to the database in its own transaction before it is acknowledged.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use peerlink_proto::dht::{
    Contact, Key, MemoryStore, ProviderRecord, Record, RecordStore, StoreError,
};
use peerlink_proto::PeerId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Key: record key (32) ‖ provider id (32). Value: addr text ‖ expiry.
const PROVIDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("providers");
/// Key: record key. Value: the newest record this node signed under it.
const OWN: TableDefinition<&[u8], &[u8]> = TableDefinition::new("own");
/// Key: a key this node provides. Value: empty.
const PROVIDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("providing");
type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
const TABLES: [Table; 4] = [RECORDS, PROVIDERS, OWN, PROVIDING];
/// One row of a write: the table, the key, and the value (`None` removes).
type Row<'a> = (Table, &'a [u8], Option<&'a [u8]>);

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
        crate::fsutil::create_private_dir(dir).map_err(io)?;
        let db = Database::create(dir.join("dht.redb")).map_err(io)?;
        {
            let tx = db.begin_write().map_err(io)?;
            for t in TABLES {
                tx.open_table(t).map_err(io)?;
            }
            tx.commit().map_err(io)?;
        }
        let mut mem = MemoryStore::default();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // The file is not trusted more than a peer: every record is
        // verified again. Own records are kept past their expiry (the
        // node re-signs them); others' expired ones are dropped.
        let mut skipped = 0usize;
        let tx = db.begin_read().map_err(io)?;
        for row in tx.open_table(RECORDS).map_err(io)?.iter().map_err(io)? {
            let (_, v) = row.map_err(io)?;
            match Record::decode(v.value()) {
                Ok(r) if r.validate(now_ms, usize::MAX, u64::MAX).is_ok() => {
                    let _ = mem.put(r);
                }
                _ => skipped += 1,
            }
        }
        for row in tx.open_table(PROVIDERS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            if let Some((key, p)) = decode_provider(k.value(), v.value()) {
                let _ = mem.add_provider(key, p);
            }
        }
        for row in tx.open_table(OWN).map_err(io)?.iter().map_err(io)? {
            let (_, v) = row.map_err(io)?;
            match Record::decode(v.value()) {
                Ok(r) if r.validate(0, usize::MAX, u64::MAX).is_ok() => {
                    let _ = mem.put_own(r);
                }
                _ => skipped += 1,
            }
        }
        for row in tx.open_table(PROVIDING).map_err(io)?.iter().map_err(io)? {
            let (k, _) = row.map_err(io)?;
            if let Ok(key) = <[u8; 32]>::try_from(k.value()) {
                let _ = mem.add_providing(Key(key));
            }
        }
        drop(tx);
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "{}: records that no longer decode, verify or live were not loaded",
                dir.display()
            );
        }
        Ok(RedbStore { db, mem })
    }

    /// One transaction: `rows` are (table, key, value to insert or `None`
    /// to remove), committed together.
    fn write(&self, rows: &[Row<'_>]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        for (table, k, v) in rows {
            let mut t = tx.open_table(*table).map_err(io)?;
            match v {
                Some(v) => t.insert(*k, *v).map(|_| ()),
                None => t.remove(*k).map(|_| ()),
            }
            .map_err(io)?;
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
        self.write(&[(RECORDS, &record.key.0, Some(&bytes))])?;
        self.mem.put(record)
    }
    fn remove(&mut self, key: &Key) {
        self.mem.remove(key);
        let _ = self.write(&[(RECORDS, &key.0, None)]);
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
        self.write(&[(PROVIDERS, &k, Some(&v))])
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
        let _ = self.write(&[(PROVIDERS, &k, None)]);
    }
    fn put_own(&mut self, record: Record) -> Result<(), StoreError> {
        let bytes = record.encode();
        let key = record.key.0;
        self.mem.put_own(record)?;
        // The held copy and the own copy in one transaction.
        self.write(&[(RECORDS, &key, Some(&bytes)), (OWN, &key, Some(&bytes))])
    }
    fn own_records(&self) -> Vec<Record> {
        self.mem.own_records()
    }
    fn add_providing(&mut self, key: Key) -> Result<(), StoreError> {
        self.mem.add_providing(key)?;
        self.write(&[(PROVIDING, &key.0, Some(&[]))])
    }
    fn providing(&self) -> Vec<Key> {
        self.mem.providing()
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
            s.write(&[(RECORDS, &[1u8; 32], Some(b"garbage"))]).unwrap();
            // Nor is a row someone edited on disk believed: the value
            // changed under its signature.
            let mut forged = Record::sign(&kp, Key::hash(b"forged"), Bytes::new(), 1, u64::MAX / 2);
            forged.value = Bytes::from_static(b"changed");
            s.put(forged.clone()).unwrap();
            s.put_own(forged).unwrap();
        }
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.get(&key), Some(rec));
        assert_eq!(s.len(), 1, "the forged record is not loaded");
        assert!(s.own_records().is_empty(), "nor re-signed as our own");
        assert_eq!(
            s.providers(&key),
            vec![ProviderRecord {
                provider: c,
                expires_ms: 77
            }]
        );
    }

    /// Delivers every request between the two state machines until both
    /// are quiet; returns the finished queries.
    fn pump(
        nodes: &mut [(&mut peerlink_proto::dht::Dht, std::net::SocketAddr); 2],
        now: std::time::Instant,
    ) -> Vec<peerlink_proto::dht::QueryResult> {
        use peerlink_proto::dht::Action;
        let mut done = Vec::new();
        loop {
            let mut moved = false;
            for i in 0..2 {
                while let Some(a) = nodes[i].0.poll_action() {
                    moved = true;
                    match a {
                        Action::Send { id, to, request } => {
                            let j = 1 - i;
                            assert_eq!(to.id, nodes[j].0.local_id());
                            let (from, addr) = (nodes[i].0.local_id(), nodes[i].1);
                            let resp =
                                nodes[j]
                                    .0
                                    .handle_request(now, from, Some(addr), request.body);
                            nodes[i].0.on_response(now, id, resp);
                        }
                        Action::Done(r) => done.push(r),
                        Action::Misbehaved { peer, reason } => panic!("{peer}: {reason}"),
                    }
                }
            }
            if !moved {
                return done;
            }
        }
    }

    /// Data loss, before: `published` lived in memory only, so after a
    /// restart a node re-put its own record as it was and never re-signed
    /// it; every copy expired 24 h after the last signature, and anyone
    /// could then claim the key. Now what a node owns is in the store.
    #[test]
    fn own_records_are_re_signed_after_a_restart() {
        use peerlink_proto::dht::{Dht, DhtConfig, QueryOutput};
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let (ka, kb) = (Keypair::from_secret([7; 32]), Keypair::from_secret([8; 32]));
        let (addr_a, addr_b) = (
            "10.0.0.1:4001".parse().unwrap(),
            "10.0.0.2:4001".parse().unwrap(),
        );
        let config = DhtConfig::default();
        let (t0, wall) = (Instant::now(), 1_800_000_000_000u64);
        let open = |at: Instant| {
            let store = Box::new(RedbStore::open(dir.path()).unwrap());
            Dht::new(
                config.clone(),
                ka.clone(),
                Some(addr_a),
                store,
                at,
                wall + (at - t0).as_millis() as u64,
                1,
            )
        };
        let mut b = Dht::new(
            config.clone(),
            kb.clone(),
            Some(addr_b),
            Box::new(MemoryStore::default()),
            t0,
            wall,
            2,
        );
        let key = Key::hash(b"mine");
        {
            let mut a = open(t0);
            a.bootstrap(t0, vec![Contact::new(kb.peer_id(), addr_b)]);
            pump(&mut [(&mut a, addr_a), (&mut b, addr_b)], t0);
            a.put(t0, key, Bytes::from_static(b"v")).unwrap();
            a.provide(t0, Key::hash(b"blob"));
            let done = pump(&mut [(&mut a, addr_a), (&mut b, addr_b)], t0);
            assert!(
                done.iter()
                    .any(|r| r.output == QueryOutput::Put { stored: 1 }),
                "{done:?}"
            );
        }
        // Restarted a minute later on the same data directory.
        let t1 = t0 + Duration::from_secs(60);
        let mut a = open(t1);
        a.bootstrap(t1, vec![Contact::new(kb.peer_id(), addr_b)]);
        pump(&mut [(&mut a, addr_a), (&mut b, addr_b)], t1);
        // 25 hours after the put: the first signature has expired everywhere.
        let later = t0 + Duration::from_secs(25 * 3600);
        for at in [t1 + config.resume_after, later] {
            a.tick(at);
            b.tick(at);
            pump(&mut [(&mut a, addr_a), (&mut b, addr_b)], at);
        }
        b.get(later, key);
        let done = pump(&mut [(&mut b, addr_b), (&mut a, addr_a)], later);
        let found = done.iter().find_map(|r| match &r.output {
            QueryOutput::Get(Some(rec)) => Some(rec.clone()),
            _ => None,
        });
        let rec = found.expect("the record outlived its first signature");
        assert_eq!(rec.publisher, ka.peer_id());
        assert!(
            rec.seq >= 2,
            "signed anew after the restart: seq {}",
            rec.seq
        );
        let now_ms = wall + (later - t0).as_millis() as u64;
        assert_eq!(
            rec.validate(now_ms, config.max_record_size, u64::MAX),
            Ok(())
        );
        // And the provider record was announced again from the stored list.
        assert!(
            !b.store().providers(&Key::hash(b"blob")).is_empty(),
            "the provided key was re-announced"
        );
    }
}
