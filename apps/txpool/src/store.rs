//! The chain state on disk (redb), so a restarted node keeps its ledger
//! and the transactions submitted on it.
//!
//! What is kept, in one database `dir/txpool.redb`:
//! * `meta`: the genesis hash (a store made for another genesis is
//!   refused, [`StoreError::OtherGenesis`]), the height and the tip;
//! * `accounts`: every account a block changed (next nonce, balance);
//!   the others are still the genesis's;
//! * `blocks`: the last [`KEPT_BLOCKS`] blocks, to answer peers catching
//!   up and to recognise equivocation after a restart;
//! * `equivocations`: heights where a producer signed two blocks;
//! * `own`: the transactions submitted here that no block has included
//!   yet, so a restart announces them again.
//!
//! A block's effects (accounts, height, tip, the block, the own
//! transactions it included) are one write, so they commit together or
//! not at all. Writes go to the database's writer thread
//! ([`peerlink_net::dbwriter`]): nothing waits for the disk on an async
//! worker; [`Store::durable`] waits for a ticket where a user must know
//! (a `peerlink tx submit` answers once its transaction is on disk).
//! Should the last few blocks be lost in a crash, the node is behind and
//! fetches them from its peers like any node that was offline.

use std::path::Path;

use peerlink_net::dbwriter::{DbWriter, Ticket, Write, WriteError};
use peerlink_net::PeerId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::block::{Block, BlockId, Genesis};
use crate::pool::Account;
use crate::tx::{Transaction, TxId};

/// Blocks kept on disk (and in memory) for peers catching up.
pub const KEPT_BLOCKS: u64 = 256;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Key: the sender's public key. Value: next nonce (u64 LE), balance (u128 LE).
const ACCOUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("accounts");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// Key: height. Value: the producer's key.
const EQUIVOCATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("equivocations");
/// Key: transaction id. Value: its encoding.
const OWN: TableDefinition<&[u8], &[u8]> = TableDefinition::new("own");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("txpool store {path}: {error}")]
    Io { path: String, error: String },
    #[error("the txpool store in {0} was made for another genesis; move it away or use its genesis file")]
    OtherGenesis(String),
    #[error("txpool store: a {what} row does not decode")]
    Corrupt { what: &'static str },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// What a store held when opened.
#[derive(Debug, Default)]
pub struct Loaded {
    pub height: u64,
    pub tip: BlockId,
    /// Accounts blocks changed (the rest are the genesis's).
    pub accounts: Vec<(PeerId, Account)>,
    /// The last blocks, oldest first.
    pub blocks: Vec<Block>,
    pub equivocations: Vec<(u64, PeerId)>,
    /// Transactions submitted here and not yet included.
    pub own: Vec<Transaction>,
}

/// The writer of one txpool database.
#[derive(Clone)]
pub struct Store {
    writer: DbWriter,
}

fn encode_account(a: &Account) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&a.next_nonce.to_le_bytes());
    v[8..].copy_from_slice(&a.balance.to_le_bytes());
    v
}

fn decode_account(v: &[u8]) -> Option<Account> {
    let v: &[u8; 24] = v.try_into().ok()?;
    let (nonce, balance) = v.split_first_chunk::<8>()?;
    Some(Account {
        next_nonce: u64::from_le_bytes(*nonce),
        balance: u128::from_le_bytes(balance.try_into().ok()?),
    })
}

fn peer(v: &[u8]) -> Result<PeerId, StoreError> {
    let bytes: [u8; 32] = v
        .try_into()
        .map_err(|_| StoreError::Corrupt { what: "key" })?;
    PeerId::from_bytes(bytes).map_err(|_| StoreError::Corrupt { what: "key" })
}

fn w(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Store {
    /// Opens (or creates) `dir/txpool.redb` for `genesis` and loads it.
    /// Blocking: call it off the async workers.
    pub fn open(dir: &Path, genesis: &Genesis) -> Result<(Store, Loaded), StoreError> {
        let path = dir.join("txpool.redb");
        let io = |e: &dyn std::fmt::Display| StoreError::Io {
            path: path.display().to_string(),
            error: e.to_string(),
        };
        peerlink_net::fsutil::create_private_dir(dir).map_err(|e| io(&e))?;
        let db = Database::create(&path).map_err(|e| io(&e))?;
        let hash = genesis.hash();
        let tx = db.begin_write().map_err(|e| io(&e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| io(&e))?;
            let stored = meta
                .get("genesis")
                .map_err(|e| io(&e))?
                .map(|v| v.value().to_vec());
            match stored {
                Some(g) if g != hash => {
                    return Err(StoreError::OtherGenesis(dir.display().to_string()))
                }
                Some(_) => {}
                None => {
                    meta.insert("genesis", &hash[..]).map_err(|e| io(&e))?;
                }
            }
            tx.open_table(ACCOUNTS).map_err(|e| io(&e))?;
            tx.open_table(BLOCKS).map_err(|e| io(&e))?;
            tx.open_table(EQUIVOCATIONS).map_err(|e| io(&e))?;
            tx.open_table(OWN).map_err(|e| io(&e))?;
        }
        tx.commit().map_err(|e| io(&e))?;

        let mut loaded = Loaded::default();
        let rx = db.begin_read().map_err(|e| io(&e))?;
        let meta = rx.open_table(META).map_err(|e| io(&e))?;
        if let Some(h) = meta.get("height").map_err(|e| io(&e))? {
            let h: [u8; 8] = h
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt { what: "height" })?;
            loaded.height = u64::from_le_bytes(h);
        }
        if let Some(t) = meta.get("tip").map_err(|e| io(&e))? {
            loaded.tip = t
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt { what: "tip" })?;
        }
        for row in rx
            .open_table(ACCOUNTS)
            .map_err(|e| io(&e))?
            .iter()
            .map_err(|e| io(&e))?
        {
            let (k, v) = row.map_err(|e| io(&e))?;
            let a = decode_account(v.value()).ok_or(StoreError::Corrupt { what: "account" })?;
            loaded.accounts.push((peer(k.value())?, a));
        }
        for row in rx
            .open_table(BLOCKS)
            .map_err(|e| io(&e))?
            .iter()
            .map_err(|e| io(&e))?
        {
            let (_, v) = row.map_err(|e| io(&e))?;
            // Verified when it was applied; the producer's signature is
            // checked again as a guard against a damaged file.
            let b = Block::decode_producer_checked(v.value())
                .map_err(|_| StoreError::Corrupt { what: "block" })?;
            loaded.blocks.push(b);
        }
        for row in rx
            .open_table(EQUIVOCATIONS)
            .map_err(|e| io(&e))?
            .iter()
            .map_err(|e| io(&e))?
        {
            let (h, p) = row.map_err(|e| io(&e))?;
            loaded.equivocations.push((h.value(), peer(p.value())?));
        }
        for row in rx
            .open_table(OWN)
            .map_err(|e| io(&e))?
            .iter()
            .map_err(|e| io(&e))?
        {
            let (_, v) = row.map_err(|e| io(&e))?;
            // A row that no longer verifies is skipped, not trusted.
            if let Ok(t) = Transaction::decode(v.value()) {
                loaded.own.push(t);
            }
        }
        drop(meta);
        drop(rx);
        let writer = DbWriter::start(db, "txpool").map_err(|e| io(&e))?;
        Ok((Store { writer }, loaded))
    }

    /// Queues a block's effects as one write: the accounts it changed, the
    /// new height and tip, the block (the one [`KEPT_BLOCKS`] below it
    /// goes), and the own transactions it included.
    pub fn block(
        &self,
        block: &Block,
        accounts: Vec<(PeerId, Account)>,
        own_included: Vec<TxId>,
    ) -> Result<Ticket, WriteError> {
        let (height, tip, encoded) = (block.height, block.id(), block.encoded().to_vec());
        let write: Write = Box::new(move |tx| {
            let mut t = tx.open_table(ACCOUNTS).map_err(w)?;
            for (p, a) in &accounts {
                t.insert(&p.as_bytes()[..], &encode_account(a)[..])
                    .map_err(w)?;
            }
            let mut meta = tx.open_table(META).map_err(w)?;
            meta.insert("height", &height.to_le_bytes()[..])
                .map_err(w)?;
            meta.insert("tip", &tip[..]).map_err(w)?;
            let mut blocks = tx.open_table(BLOCKS).map_err(w)?;
            blocks.insert(height, encoded.as_slice()).map_err(w)?;
            if let Some(old) = height.checked_sub(KEPT_BLOCKS) {
                blocks.remove(old).map_err(w)?;
            }
            let mut own = tx.open_table(OWN).map_err(w)?;
            for id in &own_included {
                own.remove(&id.0[..]).map_err(w)?;
            }
            Ok(())
        });
        self.writer.write(write)
    }

    /// Queues a transaction submitted here.
    pub fn own(&self, t: &Transaction) -> Result<Ticket, WriteError> {
        let (id, encoded) = (t.id(), t.encoded().to_vec());
        self.writer.write(Box::new(move |tx| {
            let mut own = tx.open_table(OWN).map_err(w)?;
            own.insert(&id.0[..], encoded.as_slice()).map_err(w)?;
            Ok(())
        }))
    }

    /// Queues forgetting own transactions that left the pool otherwise
    /// (replaced, or no longer valid at a restart).
    pub fn forget_own(&self, ids: Vec<TxId>) -> Result<Ticket, WriteError> {
        self.writer.write(Box::new(move |tx| {
            let mut own = tx.open_table(OWN).map_err(w)?;
            for id in &ids {
                own.remove(&id.0[..]).map_err(w)?;
            }
            Ok(())
        }))
    }

    /// Queues an equivocation record.
    pub fn equivocation(&self, height: u64, producer: PeerId) -> Result<Ticket, WriteError> {
        self.writer.write(Box::new(move |tx| {
            let mut t = tx.open_table(EQUIVOCATIONS).map_err(w)?;
            t.insert(height, &producer.as_bytes()[..]).map_err(w)?;
            Ok(())
        }))
    }

    /// Waits until every write queued so far is on disk.
    pub async fn flush(&self) -> Result<(), WriteError> {
        self.writer.durable(self.writer.last_ticket()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_net::Keypair;

    fn genesis(producer: &Keypair, user: &Keypair) -> Genesis {
        Genesis {
            producers: vec![producer.peer_id()],
            accounts: vec![(user.peer_id(), 1_000_000)],
        }
    }

    #[tokio::test]
    async fn a_block_and_own_transactions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (p, u) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let g = genesis(&p, &u);
        let t0 = Transaction::sign(&u, 0, 3, b"a".to_vec()).unwrap();
        let t1 = Transaction::sign(&u, 1, 3, b"b".to_vec()).unwrap();
        let b = Block::sign(&p, 1, [0; 32], 7, vec![t0.clone()]).unwrap();
        {
            let (s, loaded) = Store::open(dir.path(), &g).unwrap();
            assert_eq!(loaded.height, 0);
            s.own(&t0).unwrap();
            s.own(&t1).unwrap();
            let a = Account {
                next_nonce: 1,
                balance: 1_000_000 - t0.cost(),
            };
            s.block(&b, vec![(u.peer_id(), a)], vec![t0.id()]).unwrap();
            s.equivocation(1, p.peer_id()).unwrap();
            s.flush().await.unwrap();
        }
        let (_s, l) = Store::open(dir.path(), &g).unwrap();
        assert_eq!((l.height, l.tip), (1, b.id()));
        assert_eq!(l.accounts.len(), 1);
        assert_eq!(l.accounts[0].1.next_nonce, 1);
        assert_eq!(l.blocks, vec![b]);
        assert_eq!(l.equivocations, vec![(1, p.peer_id())]);
        // t0 was included: only t1 is still ours to announce.
        assert_eq!(l.own, vec![t1]);
    }

    #[test]
    fn a_store_of_another_genesis_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (p, u) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        drop(Store::open(dir.path(), &genesis(&p, &u)).unwrap());
        let other = genesis(&u, &p);
        assert!(matches!(
            Store::open(dir.path(), &other),
            Err(StoreError::OtherGenesis(_))
        ));
    }

    #[test]
    fn account_rows_of_the_wrong_length_do_not_decode() {
        assert_eq!(decode_account(&[0; 23]), None);
        assert_eq!(decode_account(&[0; 25]), None);
        let a = Account {
            next_nonce: 9,
            balance: u128::MAX,
        };
        assert_eq!(decode_account(&encode_account(&a)), Some(a));
    }
}
