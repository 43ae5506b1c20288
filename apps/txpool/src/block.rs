//! Blocks and the chain they extend: producers in turn, the ledger they
//! change, equivocation recorded.
//!
//! ```text
//! version   u8 = 1
//! height    u64 little-endian
//! parent    32 bytes, the id of the block at height - 1 (zeros at 1)
//! producer  32 bytes, an ed25519 public key
//! time_ms   u64 little-endian, milliseconds since the Unix epoch
//! count     u32 little-endian, at most MAX_BLOCK_TXS
//! count × { length u32 little-endian, a transaction's encoding }
//! signature 64 bytes, by the producer over everything before it
//! ```
//!
//! A block's id is the BLAKE3 hash of its encoding. The producers are
//! named in the genesis, and height h belongs to `producers[h % n]`. A
//! block is applied whole or not at all: at the wrong height or on the
//! wrong parent, from the wrong producer, or with a transaction the
//! ledger cannot take (a nonce out of turn, more than the balance), it is
//! refused with a named error and nothing changes. A second block signed
//! by the rightful producer for a height already filled is refused and
//! recorded as equivocation (no fork choice).

use std::collections::HashMap;

use peerlink_net::{Keypair, PeerId};

use crate::pool::{Account, Ledger, Map};
use crate::tx::{Transaction, TxError, TxId, MAX_ENCODED};

/// Transactions in a block, at most.
pub const MAX_BLOCK_TXS: usize = 10_000;
/// A block's encoding, at most.
pub const MAX_BLOCK_BYTES: usize = 4 << 20;
const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 32 + 32 + 8 + 4;
const SIGNATURE: usize = 64;
/// Heights whose block ids are kept to recognise equivocation.
const KEPT_HEIGHTS: u64 = 1024;

/// A block's id: the BLAKE3 hash of its encoding.
pub type BlockId = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block of {0} bytes is over the {MAX_BLOCK_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("block truncated")]
    Truncated,
    #[error("unknown block version {0}")]
    Version(u8),
    #[error("{0} transactions is over the {MAX_BLOCK_TXS} limit")]
    TooManyTransactions(usize),
    #[error("{0} bytes after the block")]
    TrailingBytes(usize),
    #[error("producer is not an ed25519 key")]
    BadProducer,
    #[error("bad block signature")]
    BadSignature,
    #[error("transaction {index}: {error}")]
    BadTransaction { index: usize, error: TxError },
    #[error("height {height} is not the next one ({expected})")]
    UnexpectedHeight { height: u64, expected: u64 },
    #[error("the parent is not the chain's tip")]
    WrongParent,
    #[error("height {height} belongs to another producer")]
    WrongProducer { height: u64 },
    #[error("a second block for height {height} from its producer")]
    Equivocation { height: u64 },
    #[error("transaction {index} has nonce {nonce}, its sender's next is {next}")]
    NonceOutOfTurn { index: usize, nonce: u64, next: u64 },
    #[error("transaction {index} costs more than its sender's balance")]
    Unaffordable { index: usize },
    #[error("the block's transactions are over the {MAX_BLOCK_BYTES}-byte limit")]
    Full,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub height: u64,
    pub parent: BlockId,
    pub producer: PeerId,
    pub time_ms: u64,
    pub txs: Vec<Transaction>,
    id: BlockId,
    encoded: Vec<u8>,
}

fn take<const N: usize>(r: &mut &[u8]) -> Result<[u8; N], BlockError> {
    let (head, rest) = r.split_first_chunk::<N>().ok_or(BlockError::Truncated)?;
    *r = rest;
    Ok(*head)
}

impl Block {
    /// Builds and signs a block.
    pub fn sign(
        key: &Keypair,
        height: u64,
        parent: BlockId,
        time_ms: u64,
        txs: Vec<Transaction>,
    ) -> Result<Block, BlockError> {
        if txs.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTransactions(txs.len()));
        }
        let body: usize = txs.iter().map(|t| 4 + t.size()).sum();
        if HEADER + body + SIGNATURE > MAX_BLOCK_BYTES {
            return Err(BlockError::Full);
        }
        let producer = key.peer_id();
        let mut out = Vec::with_capacity(HEADER + body + SIGNATURE);
        out.push(VERSION);
        out.extend_from_slice(&height.to_le_bytes());
        out.extend_from_slice(&parent);
        out.extend_from_slice(producer.as_bytes());
        out.extend_from_slice(&time_ms.to_le_bytes());
        out.extend_from_slice(&(txs.len() as u32).to_le_bytes());
        for t in &txs {
            out.extend_from_slice(&(t.size() as u32).to_le_bytes());
            out.extend_from_slice(t.encoded());
        }
        let signature = key.sign(&out);
        out.extend_from_slice(&signature);
        Ok(Block {
            height,
            parent,
            producer,
            time_ms,
            txs,
            id: *blake3::hash(&out).as_bytes(),
            encoded: out,
        })
    }

    /// Decodes a block and checks its signature and every transaction's.
    pub fn decode(input: &[u8]) -> Result<Block, BlockError> {
        let block = Self::decode_producer_checked(input)?;
        block.verify_txs(|_| false)?;
        Ok(block)
    }

    /// Checks the signature of every transaction for which `known` is
    /// false (those already verified, e.g. in the pool, are skipped).
    /// They are checked in one batch ([`Transaction::verify_many`]).
    pub fn verify_txs(&self, known: impl Fn(&TxId) -> bool) -> Result<(), BlockError> {
        let unknown: Vec<(usize, &Transaction)> = self
            .txs
            .iter()
            .enumerate()
            .filter(|(_, t)| !known(&t.id()))
            .collect();
        Transaction::verify_many(unknown.iter().map(|(_, t)| *t)).map_err(|i| {
            BlockError::BadTransaction {
                index: unknown.get(i).map_or(0, |(index, _)| *index),
                error: TxError::BadSignature,
            }
        })
    }

    /// Decodes a block and checks the producer's signature only: one
    /// verification, quick enough for a gossip validator. Follow with
    /// [`Block::verify_txs`] before applying it.
    pub fn decode_producer_checked(input: &[u8]) -> Result<Block, BlockError> {
        if input.len() > MAX_BLOCK_BYTES {
            return Err(BlockError::TooLarge(input.len()));
        }
        let mut r = input;
        let version = take::<1>(&mut r)?[0];
        if version != VERSION {
            return Err(BlockError::Version(version));
        }
        let height = u64::from_le_bytes(take::<8>(&mut r)?);
        let parent = take::<32>(&mut r)?;
        let producer =
            PeerId::from_bytes(take::<32>(&mut r)?).map_err(|_| BlockError::BadProducer)?;
        let time_ms = u64::from_le_bytes(take::<8>(&mut r)?);
        let count = u32::from_le_bytes(take::<4>(&mut r)?) as usize;
        if count > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTransactions(count));
        }
        // Each transaction takes at least its length and overhead, so the
        // count is checked against the bytes before anything is reserved.
        if count.saturating_mul(4 + crate::tx::OVERHEAD) > r.len() {
            return Err(BlockError::Truncated);
        }
        let mut spans = Vec::with_capacity(count);
        for index in 0..count {
            let len = u32::from_le_bytes(take::<4>(&mut r)?) as usize;
            if len > MAX_ENCODED {
                return Err(BlockError::BadTransaction {
                    index,
                    error: TxError::TooLarge(len),
                });
            }
            let tx = r.get(..len).ok_or(BlockError::Truncated)?;
            spans.push(tx);
            r = &r[len..];
        }
        let signature = take::<SIGNATURE>(&mut r)?;
        if !r.is_empty() {
            return Err(BlockError::TrailingBytes(r.len()));
        }
        let signed = input.len() - SIGNATURE;
        producer
            .verify(&input[..signed], &signature)
            .map_err(|_| BlockError::BadSignature)?;
        let txs = spans
            .into_iter()
            .enumerate()
            .map(|(index, bytes)| {
                Transaction::decode_unverified(bytes)
                    .map_err(|error| BlockError::BadTransaction { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Block {
            height,
            parent,
            producer,
            time_ms,
            txs,
            id: *blake3::hash(input).as_bytes(),
            encoded: input.to_vec(),
        })
    }

    pub fn id(&self) -> BlockId {
        self.id
    }

    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

/// Who may produce, and what everyone starts with.
///
/// As a file ([`Genesis::from_toml`], [`Genesis::to_toml`]):
///
/// ```toml
/// producers = ["<peer id>", "<peer id>"]
///
/// [accounts]
/// "<peer id>" = 1000000000
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    pub producers: Vec<PeerId>,
    pub accounts: Vec<(PeerId, u128)>,
}

/// A genesis file that does not read.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis file: {0}")]
    Syntax(String),
    #[error("genesis file: {0:?} is not a peer id")]
    BadKey(String),
    #[error("genesis file: no producers")]
    NoProducers,
    #[error("genesis file: {0} named twice")]
    Duplicate(String),
    #[error("genesis file: more than {MAX_GENESIS_ENTRIES} producers or accounts")]
    TooLarge,
}

/// Producers and accounts a genesis file may name, each at most.
pub const MAX_GENESIS_ENTRIES: usize = 1_000_000;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    producers: Vec<String>,
    #[serde(default)]
    accounts: std::collections::BTreeMap<String, u64>,
}

impl Genesis {
    /// Reads a genesis file (TOML, see [`Genesis`]). Balances are
    /// integers up to 2^63 − 1 (TOML's range).
    pub fn from_toml(text: &str) -> Result<Genesis, GenesisError> {
        let f: GenesisFile =
            toml::from_str(text).map_err(|e| GenesisError::Syntax(e.to_string()))?;
        if f.producers.len() > MAX_GENESIS_ENTRIES || f.accounts.len() > MAX_GENESIS_ENTRIES {
            return Err(GenesisError::TooLarge);
        }
        let id = |s: &String| {
            s.parse::<PeerId>()
                .map_err(|_| GenesisError::BadKey(s.clone()))
        };
        let producers = f.producers.iter().map(id).collect::<Result<Vec<_>, _>>()?;
        if producers.is_empty() {
            return Err(GenesisError::NoProducers);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(p) = producers.iter().find(|p| !seen.insert(**p)) {
            return Err(GenesisError::Duplicate(p.to_string()));
        }
        let accounts = f
            .accounts
            .iter()
            .map(|(k, b)| Ok((id(k)?, u128::from(*b))))
            .collect::<Result<Vec<_>, GenesisError>>()?;
        // Two spellings of one key would be two entries in the map.
        let mut seen = std::collections::HashSet::new();
        if let Some((k, _)) = accounts.iter().find(|(k, _)| !seen.insert(*k)) {
            return Err(GenesisError::Duplicate(k.to_string()));
        }
        Ok(Genesis {
            producers,
            accounts,
        })
    }

    /// The file [`Genesis::from_toml`] reads (balances above 2^63 − 1
    /// are written as that).
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# peerlink txpool genesis: who produces blocks (in turn), and the opening balances\nproducers = [\n");
        for p in &self.producers {
            out.push_str(&format!("    \"{p}\",\n"));
        }
        out.push_str("]\n\n[accounts]\n");
        for (k, b) in &self.accounts {
            let b = u64::try_from(*b).unwrap_or(u64::MAX).min(i64::MAX as u64);
            out.push_str(&format!("\"{k}\" = {b}\n"));
        }
        out
    }

    /// The hash a store is tied to: producers in order, then accounts in
    /// key order.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"peerlink-txpool-genesis-1");
        h.update(&(self.producers.len() as u64).to_le_bytes());
        for p in &self.producers {
            h.update(p.as_bytes());
        }
        let mut accounts = self.accounts.clone();
        accounts.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        h.update(&(accounts.len() as u64).to_le_bytes());
        for (k, b) in &accounts {
            h.update(k.as_bytes());
            h.update(&b.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }
}

/// The chain's tip and the ledger it leads to (in memory).
pub struct Chain {
    producers: Vec<PeerId>,
    accounts: Map<PeerId, Account>,
    height: u64,
    tip: BlockId,
    /// Ids of the last [`KEPT_HEIGHTS`] blocks, by height.
    recent: HashMap<u64, BlockId>,
    /// Heights where a producer signed two blocks.
    pub equivocations: Vec<(u64, PeerId)>,
}

/// What a block changed: the senders whose accounts moved.
#[derive(Debug)]
pub struct Applied {
    pub senders: Vec<PeerId>,
    /// Transactions it included.
    pub txs: usize,
}

impl Chain {
    pub fn new(genesis: &Genesis) -> Chain {
        Chain {
            producers: genesis.producers.clone(),
            accounts: genesis
                .accounts
                .iter()
                .map(|(k, b)| {
                    let a = Account {
                        next_nonce: 0,
                        balance: *b,
                    };
                    (*k, a)
                })
                .collect(),
            height: 0,
            tip: [0; 32],
            recent: HashMap::new(),
            equivocations: Vec::new(),
        }
    }

    /// The chain a store held ([`crate::store::Loaded`]): the genesis's
    /// accounts with the stored ones over them, the height and tip, the
    /// recent blocks' ids and the equivocations seen.
    pub fn restore(genesis: &Genesis, loaded: &crate::store::Loaded) -> Chain {
        let mut chain = Chain::new(genesis);
        chain.accounts.extend(loaded.accounts.iter().copied());
        chain.height = loaded.height;
        chain.tip = loaded.tip;
        chain.recent = loaded.blocks.iter().map(|b| (b.height, b.id)).collect();
        chain.equivocations = loaded.equivocations.clone();
        chain
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn tip(&self) -> BlockId {
        self.tip
    }

    /// Who produces `height` (none without producers).
    pub fn producer_of(&self, height: u64) -> Option<PeerId> {
        let n = self.producers.len() as u64;
        (n > 0).then(|| self.producers[(height % n) as usize])
    }

    /// Applies `block` whole, or refuses it and changes nothing (but an
    /// equivocation is recorded).
    pub fn apply(&mut self, block: &Block) -> Result<Applied, BlockError> {
        if self.producer_of(block.height) != Some(block.producer) {
            return Err(BlockError::WrongProducer {
                height: block.height,
            });
        }
        let filled = self.recent.get(&block.height);
        if block.height <= self.height && filled.is_some_and(|id| *id != block.id) {
            // Once per height: a producer signing many blocks for one
            // height does not grow the record.
            let e = (block.height, block.producer);
            if !self.equivocations.contains(&e) {
                self.equivocations.push(e);
            }
            return Err(BlockError::Equivocation {
                height: block.height,
            });
        }
        if block.height != self.height + 1 {
            return Err(BlockError::UnexpectedHeight {
                height: block.height,
                expected: self.height + 1,
            });
        }
        if block.parent != self.tip {
            return Err(BlockError::WrongParent);
        }
        // On a copy of the accounts it touches, so a refusal changes nothing.
        let mut touched: Map<PeerId, Account> = Map::default();
        for (index, tx) in block.txs.iter().enumerate() {
            let a = touched
                .entry(tx.sender)
                .or_insert_with(|| self.account(&tx.sender));
            if tx.nonce != a.next_nonce {
                return Err(BlockError::NonceOutOfTurn {
                    index,
                    nonce: tx.nonce,
                    next: a.next_nonce,
                });
            }
            a.balance = a
                .balance
                .checked_sub(tx.cost())
                .ok_or(BlockError::Unaffordable { index })?;
            a.next_nonce += 1;
        }
        let senders = touched.keys().copied().collect();
        self.accounts.extend(touched);
        self.height = block.height;
        self.tip = block.id;
        self.recent.insert(block.height, block.id);
        self.recent
            .remove(&block.height.saturating_sub(KEPT_HEIGHTS));
        Ok(Applied {
            senders,
            txs: block.txs.len(),
        })
    }
}

impl Ledger for Chain {
    fn account(&self, sender: &PeerId) -> Account {
        self.accounts.get(sender).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Pool, PoolConfig};
    use std::time::Instant;

    struct Net {
        producers: Vec<Keypair>,
        users: Vec<Keypair>,
        chain: Chain,
    }

    fn net() -> Net {
        let producers: Vec<Keypair> = (0..2).map(|_| Keypair::generate().unwrap()).collect();
        let users: Vec<Keypair> = (0..3).map(|_| Keypair::generate().unwrap()).collect();
        let genesis = Genesis {
            producers: producers.iter().map(Keypair::peer_id).collect(),
            accounts: users.iter().map(|k| (k.peer_id(), 1_000_000)).collect(),
        };
        let chain = Chain::new(&genesis);
        Net {
            producers,
            users,
            chain,
        }
    }

    impl Net {
        fn block(&self, txs: Vec<Transaction>) -> Block {
            let h = self.chain.height() + 1;
            let key = &self.producers[(h % 2) as usize];
            Block::sign(key, h, self.chain.tip(), 0, txs).unwrap()
        }

        fn tx(&self, who: usize, nonce: u64) -> Transaction {
            Transaction::sign(&self.users[who], nonce, 2, &b"t"[..]).unwrap()
        }
    }

    #[test]
    fn genesis_files_round_trip_and_bad_ones_are_named() {
        let (a, b) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let g = Genesis {
            producers: vec![a.peer_id(), b.peer_id()],
            accounts: vec![(b.peer_id(), 7)],
        };
        let back = Genesis::from_toml(&g.to_toml()).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.hash(), g.hash());
        assert!(matches!(
            Genesis::from_toml("producers = ["),
            Err(GenesisError::Syntax(_))
        ));
        assert!(matches!(
            Genesis::from_toml("producers = [\"nope\"]"),
            Err(GenesisError::BadKey(_))
        ));
        assert!(matches!(
            Genesis::from_toml("producers = []"),
            Err(GenesisError::NoProducers)
        ));
        let twice = format!("producers = [\"{0}\", \"{0}\"]", a.peer_id());
        assert!(matches!(
            Genesis::from_toml(&twice),
            Err(GenesisError::Duplicate(_))
        ));
        let unknown = format!("producers = [\"{}\"]\nextra = 1", a.peer_id());
        assert!(matches!(
            Genesis::from_toml(&unknown),
            Err(GenesisError::Syntax(_))
        ));
    }
    #[test]
    fn a_block_round_trips_and_moves_the_ledger_and_the_pool() {
        let mut n = net();
        let mut pool = Pool::new(PoolConfig::default());
        let now = Instant::now();
        for nonce in 0..3 {
            pool.insert(n.tx(0, nonce), &n.chain, now).unwrap();
        }
        pool.insert(n.tx(1, 0), &n.chain, now).unwrap();
        let picked: Vec<Transaction> = pool.best().take(2).cloned().collect();
        let b = n.block(picked.clone());
        let back = Block::decode(b.encoded()).unwrap();
        assert_eq!(back, b);
        let applied = n.chain.apply(&back).unwrap();
        assert_eq!(n.chain.height(), 1);
        assert_eq!(n.chain.tip(), b.id());
        let dropped = pool.update_accounts(&applied.senders, &n.chain);
        assert_eq!(dropped.len(), 2);
        assert_eq!(pool.len(), 2);
        for t in &picked {
            assert!(!pool.contains(&t.id()));
            let a = n.chain.account(&t.sender);
            assert!(a.next_nonce > t.nonce);
        }
    }

    #[test]
    fn a_refused_block_changes_nothing_and_says_why() {
        let mut n = net();
        let ok = n.block(vec![n.tx(0, 0)]);
        // Out of turn: nonce 1 before 0.
        let b = n.block(vec![n.tx(1, 1)]);
        assert!(matches!(
            n.chain.apply(&b),
            Err(BlockError::NonceOutOfTurn {
                index: 0,
                nonce: 1,
                next: 0
            })
        ));
        // A second transaction the first made unaffordable.
        let big = Transaction::sign(&n.users[2], 0, 5_000, &b"t"[..]).unwrap();
        let bigger = Transaction::sign(&n.users[2], 1, 5_000, &b"t"[..]).unwrap();
        let b = n.block(vec![big, bigger]);
        assert!(matches!(
            n.chain.apply(&b),
            Err(BlockError::Unaffordable { index: 1 })
        ));
        assert_eq!(n.chain.account(&n.users[2].peer_id()).next_nonce, 0);
        // The wrong producer, height or parent.
        let wrong = Block::sign(&n.producers[0], 1, [0; 32], 0, vec![]).unwrap();
        assert!(matches!(
            n.chain.apply(&wrong),
            Err(BlockError::WrongProducer { height: 1 })
        ));
        let stranger = Keypair::generate().unwrap();
        let wrong = Block::sign(&stranger, 1, [0; 32], 0, vec![]).unwrap();
        assert!(matches!(
            n.chain.apply(&wrong),
            Err(BlockError::WrongProducer { .. })
        ));
        let wrong = Block::sign(&n.producers[1], 3, [0; 32], 0, vec![]).unwrap();
        assert!(matches!(
            n.chain.apply(&wrong),
            Err(BlockError::UnexpectedHeight {
                height: 3,
                expected: 1
            })
        ));
        let wrong = Block::sign(&n.producers[1], 1, [7; 32], 0, vec![]).unwrap();
        assert_eq!(n.chain.apply(&wrong).unwrap_err(), BlockError::WrongParent);
        assert_eq!(n.chain.height(), 0);
        // The right one goes in; another block for its height from the same
        // producer is equivocation.
        n.chain.apply(&ok).unwrap();
        let twin = Block::sign(&n.producers[1], 1, [0; 32], 1, vec![]).unwrap();
        assert_eq!(
            n.chain.apply(&twin).unwrap_err(),
            BlockError::Equivocation { height: 1 }
        );
        assert_eq!(n.chain.equivocations, vec![(1, n.producers[1].peer_id())]);
        assert_eq!(n.chain.height(), 1);
    }

    #[test]
    fn malformed_truncated_oversized_and_forged_blocks_are_named() {
        let n = net();
        let b = n.block(vec![n.tx(0, 0), n.tx(0, 1)]);
        let wire = b.encoded().to_vec();
        for cut in 0..wire.len() {
            assert!(Block::decode(&wire[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = wire.clone();
        long.push(0);
        assert_eq!(Block::decode(&long), Err(BlockError::TrailingBytes(1)));
        assert!(matches!(
            Block::decode(&vec![0u8; MAX_BLOCK_BYTES + 1]),
            Err(BlockError::TooLarge(_))
        ));
        // A count claiming a million transactions, before any is read.
        let mut many = wire.clone();
        many[HEADER - 4..HEADER].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert_eq!(
            Block::decode(&many),
            Err(BlockError::TooManyTransactions(1_000_000))
        );
        let mut lots = wire.clone();
        lots[HEADER - 4..HEADER].copy_from_slice(&9_999u32.to_le_bytes());
        assert_eq!(Block::decode(&lots), Err(BlockError::Truncated));
        // A flipped bit anywhere: the block's or a transaction's signature.
        for i in [5, 20, 50, 90, HEADER + 10, wire.len() - 1] {
            let mut f = wire.clone();
            f[i] ^= 1;
            assert!(Block::decode(&f).is_err(), "flip at {i}");
        }
        // A block re-signed around a forged transaction.
        let mut tx = n.tx(0, 0).encoded().to_vec();
        let last = tx.len() - 1;
        tx[last] ^= 1;
        let forged_len = (tx.len() as u32).to_le_bytes();
        let mut body = wire[..HEADER].to_vec();
        body[HEADER - 4..].copy_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&forged_len);
        body.extend_from_slice(&tx);
        let key = &n.producers[1];
        let sig = key.sign(&body);
        body.extend_from_slice(&sig);
        assert!(matches!(
            Block::decode(&body),
            Err(BlockError::BadTransaction {
                index: 0,
                error: TxError::BadSignature
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = Block::decode(&bytes);
        }
    }
}
