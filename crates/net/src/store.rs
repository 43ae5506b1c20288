//! A persistent [`RecordStore`] on redb: a node restarted on the same data
//! directory keeps its records and provider records, and what it owns: the
//! records it signed and the keys it provides, so it goes on re-signing
//! and re-announcing them.
//!
//! Reads are served from an in-memory copy loaded at open. Writes change
//! the copy and are queued to the database's writer thread
//! ([`crate::dbwriter`]), which commits what has queued up as one
//! transaction: the DHT task never waits on an fsync. Its own records and
//! provided keys are acknowledged to the user only once committed (the
//! driver waits for [`RedbStore::writer`]'s ticket); peers' records are
//! refused ("full") while the writer is far behind.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use peerlink_proto::dht::{
    Contact, Key, MemoryStore, ProviderRecord, Record, RecordStore, StoreError,
};
use peerlink_proto::{PeerId, TransportAddr};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::dbwriter::{DbWriter, MAX_BACKLOG};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Key: record key (32) ‖ provider id (32). Value: expiry ‖ address text
/// (`ip:port` for TCP, `quic://ip:port` for QUIC).
const PROVIDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("providers");
/// Key: record key. Value: the newest record this node signed under it.
const OWN: TableDefinition<&[u8], &[u8]> = TableDefinition::new("own");
/// Key: a key this node provides. Value: empty.
const PROVIDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("providing");
type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
const TABLES: [Table; 4] = [RECORDS, PROVIDERS, OWN, PROVIDING];
/// One row of a write: the table, the key, and the value (`None` removes).
type Row = (Table, Vec<u8>, Option<Vec<u8>>);

pub struct RedbStore {
    writer: DbWriter,
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
        let writer = DbWriter::start(db, "dht").map_err(io)?;
        Ok(RedbStore { writer, mem })
    }

    /// The database writer; a ticket from it says when a write is on disk.
    pub fn writer(&self) -> DbWriter {
        self.writer.clone()
    }

    /// Queues `rows` as one write. `own`: the user's data, queued whatever
    /// the backlog; peers' data is refused while the writer is far behind.
    fn write(&self, rows: Vec<Row>, own: bool) -> Result<(), StoreError> {
        let write: crate::dbwriter::Write = Box::new(move |tx| {
            for (table, k, v) in rows {
                let mut t = tx.open_table(table).map_err(|e| e.to_string())?;
                match v {
                    Some(v) => t.insert(k.as_slice(), v.as_slice()).map(|_| ()),
                    None => t.remove(k.as_slice()).map(|_| ()),
                }
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        match own {
            true => self.writer.write(write),
            false => self.writer.try_write(write),
        }
        .map(|_| ())
        .map_err(io)
    }

    /// Whether peers' writes are being refused for the writer's backlog.
    fn behind(&self) -> bool {
        self.writer.backlog() >= MAX_BACKLOG
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
    // A bare address is TCP (rows written before transports existed).
    let at: TransportAddr = std::str::from_utf8(v.get(8..)?).ok()?.parse().ok()?;
    Some((
        key,
        ProviderRecord {
            provider: Contact::at(id, at),
            expires_ms,
        },
    ))
}

impl RecordStore for RedbStore {
    fn get(&self, key: &Key) -> Option<Record> {
        self.mem.get(key)
    }
    fn put(&mut self, record: Record) -> Result<(), StoreError> {
        if self.behind() {
            return Err(StoreError::Full);
        }
        let bytes = record.encode().to_vec();
        let key = record.key.0.to_vec();
        self.mem.put(record)?;
        self.write(vec![(RECORDS, key, Some(bytes))], false)
    }
    fn remove(&mut self, key: &Key) {
        self.mem.remove(key);
        let _ = self.write(vec![(RECORDS, key.0.to_vec(), None)], true);
    }
    fn keys(&self) -> Vec<Key> {
        self.mem.keys()
    }
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn add_provider(&mut self, key: Key, record: ProviderRecord) -> Result<(), StoreError> {
        if self.behind() {
            return Err(StoreError::Full);
        }
        self.mem.add_provider(key, record)?;
        let k = provider_key(&key, &record.provider.id).to_vec();
        let mut v = record.expires_ms.to_be_bytes().to_vec();
        v.extend_from_slice(record.provider.transport_addr().to_string().as_bytes());
        self.write(vec![(PROVIDERS, k, Some(v))], false)
    }
    fn providers(&self, key: &Key) -> Vec<ProviderRecord> {
        self.mem.providers(key)
    }
    fn provider_keys(&self) -> Vec<Key> {
        self.mem.provider_keys()
    }
    fn remove_provider(&mut self, key: &Key, provider: &PeerId) {
        self.mem.remove_provider(key, provider);
        let k = provider_key(key, provider).to_vec();
        let _ = self.write(vec![(PROVIDERS, k, None)], true);
    }
    fn put_own(&mut self, record: Record) -> Result<(), StoreError> {
        let bytes = record.encode().to_vec();
        let key = record.key.0.to_vec();
        self.mem.put_own(record)?;
        // The held copy and the own copy in one transaction.
        self.write(
            vec![
                (RECORDS, key.clone(), Some(bytes.clone())),
                (OWN, key, Some(bytes)),
            ],
            true,
        )
    }
    fn own_records(&self) -> Vec<Record> {
        self.mem.own_records()
    }
    fn add_providing(&mut self, key: Key) -> Result<(), StoreError> {
        self.mem.add_providing(key)?;
        self.write(vec![(PROVIDING, key.0.to_vec(), Some(Vec::new()))], true)
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
            s.write(
                vec![(RECORDS, vec![1u8; 32], Some(b"garbage".to_vec()))],
                true,
            )
            .unwrap();
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

    #[test]
    fn a_quic_provider_stays_quic_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let kp = Keypair::from_secret([5; 32]);
        let key = Key::hash(b"over quic");
        let at: TransportAddr = "quic://10.1.2.3:4001".parse().unwrap();
        let record = ProviderRecord {
            provider: Contact::at(kp.peer_id(), at),
            expires_ms: u64::MAX / 2,
        };
        RedbStore::open(dir.path())
            .unwrap()
            .add_provider(key, record)
            .unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.providers(&key), vec![record]);
    }

    #[test]
    fn a_stalled_disk_stalls_no_write_and_a_backlog_refuses_only_peers() {
        let dir = tempfile::tempdir().unwrap();
        let kp = Keypair::from_secret([5; 32]);
        let (release, rx) = std::sync::mpsc::channel::<()>();
        {
            let mut s = RedbStore::open(dir.path()).unwrap();
            // The disk stops: the writer sits in a commit.
            s.writer()
                .write(Box::new(move |_| {
                    let _ = rx.recv();
                    Ok(())
                }))
                .unwrap();
            for i in 0..100u32 {
                let r = Record::sign(
                    &kp,
                    Key::hash(&i.to_le_bytes()),
                    Bytes::new(),
                    1,
                    u64::MAX / 2,
                );
                s.put(r).unwrap();
            }
            assert_eq!(s.len(), 100, "served from memory meanwhile");
            // Peers' writes are refused once the writer is far behind...
            let filler: Vec<_> = (0..crate::dbwriter::MAX_BACKLOG)
                .map(|_| s.writer().write(Box::new(|_| Ok(()))))
                .collect();
            assert!(filler.iter().all(Result::is_ok));
            let late = Record::sign(&kp, Key::hash(b"late"), Bytes::new(), 1, u64::MAX / 2);
            assert!(matches!(s.put(late), Err(StoreError::Full)));
            // ...but not the user's own.
            let own = Record::sign(&kp, Key::hash(b"own"), Bytes::new(), 1, u64::MAX / 2);
            s.put_own(own).unwrap();
            release.send(()).unwrap();
        }
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.len(), 101);
        assert_eq!(s.own_records().len(), 1);
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
                            let resp = nodes[j].0.handle_request(
                                now,
                                from,
                                Some(TransportAddr::tcp(addr)),
                                request.body,
                            );
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
                Some(TransportAddr::tcp(addr_a)),
                store,
                at,
                wall + (at - t0).as_millis() as u64,
                1,
            )
        };
        let mut b = Dht::new(
            config.clone(),
            kb.clone(),
            Some(TransportAddr::tcp(addr_b)),
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
