//! # peerlink-txpool — a transaction pool on peerlink
//!
//! The second application of PRODUCT.md, for blockchain-style networks.
//! This crate holds, so far, the parts that need no network:
//!
//! * [`tx`]: signed transactions (sender key, nonce, fee rate, payload)
//!   and their bounded wire form, with named errors;
//! * [`pool`]: the pool itself — pending and queued transactions per
//!   sender, checked against a [`pool::Ledger`] (next nonce, balance), with
//!   per-sender and total bounds, replacement by fee bump, eviction of the
//!   cheapest, expiry of queued ones, and [`pool::Pool::best`] in fee order
//!   keeping each sender's nonce order;
//! * [`block`]: signed blocks and the [`block::Chain`] they extend
//!   (producers in turn, applied whole or not at all, equivocation
//!   recorded); a chain is the pool's ledger.
//!
//! Gossip (announce, fetch on demand), block production, the redb ledger
//! and the CLI come next (issue 15); see the README for what is true today.

#![forbid(unsafe_code)]

pub mod block;
pub mod fetch;
pub mod pool;
pub mod service;
pub mod tx;
pub mod wire;

pub use block::{Applied, Block, BlockError, BlockId, Chain, Genesis};
pub use fetch::{FetchConfig, Fetcher};
pub use pool::{Account, Inserted, Ledger, Placed, Pool, PoolConfig, Rejected, Status};
pub use service::{SubmitError, TxPool, TxPoolConfig, TxPoolStatus};
pub use tx::{Transaction, TxError, TxId};
pub use wire::{BLOCK_PROTOCOL, BLOCK_TOPIC, GET_PROTOCOL, TX_CHANNEL};
