//! # peerlink-txpool — a transaction pool on peerlink
//!
//! The second application of PRODUCT.md, for blockchain-style networks,
//! built only on peerlink's public API (`Node`, `gossip()`, channels and
//! `request`/`serve`):
//!
//! * [`tx`]: signed transactions (sender key, nonce, fee rate, payload)
//!   and their bounded wire form, with named errors and batch signature
//!   checks;
//! * [`pool`]: the pool itself (sans-IO) — pending and queued
//!   transactions per sender, checked against a [`pool::Ledger`] (next
//!   nonce, balance), with per-sender and total bounds, replacement by fee
//!   bump, eviction of the cheapest, expiry of queued ones, and
//!   [`pool::Pool::best`] in fee order keeping each sender's nonce order;
//! * [`block`]: signed blocks and the [`block::Chain`] they extend
//!   (producers in turn, applied whole or not at all, equivocation
//!   recorded); a chain is the pool's ledger;
//! * [`fetch`]: which announced transactions to fetch from whom (sans-IO,
//!   bounded per peer, per IP prefix and in total);
//! * [`wire`]: the gossip messages (push, announce, fetch);
//! * [`service`]: [`TxPool`], the pool on a node — announce first, fetch
//!   on demand, blocks on their own topic, a producer, peers scored and
//!   banned for invalid input;
//! * [`store`]: the chain and the node's own transactions in redb, so a
//!   restarted node resumes ([`TxPool::open`]);
//! * [`control`]: `peerlink tx` commands on the node's control socket.
//!
//! ```no_run
//! # async fn run(node: peerlink_net::Node, key: peerlink_net::Keypair) {
//! use peerlink_txpool::{Genesis, Transaction, TxPool, TxPoolConfig};
//! let genesis = Genesis {
//!     producers: vec![node.peer_id()],
//!     accounts: vec![(key.peer_id(), 1_000_000_000)],
//! };
//! let pool = TxPool::new(&node, TxPoolConfig::new(genesis)).unwrap();
//! pool.submit(Transaction::sign(&key, 0, 5, b"hello".to_vec()).unwrap()).unwrap();
//! let block = pool.produce().await; // this node's turn: packs best()
//! # }
//! ```
//!

#![forbid(unsafe_code)]

pub mod block;
pub mod control;
pub mod fetch;
pub mod pool;
pub mod service;
pub mod store;
pub mod tx;
pub mod wire;

pub use block::{Applied, Block, BlockError, BlockId, Chain, Genesis, GenesisError};
pub use fetch::{FetchConfig, Fetcher};
pub use pool::{Account, Inserted, Ledger, Placed, Pool, PoolConfig, Rejected, Status};
pub use service::{Located, OpenError, SubmitError, TxPool, TxPoolConfig, TxPoolStatus};
pub use store::{Store, StoreError};
pub use tx::{Transaction, TxError, TxId};
pub use wire::{BLOCK_PROTOCOL, BLOCK_TOPIC, GET_PROTOCOL, TX_CHANNEL};
