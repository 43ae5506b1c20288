//! The pool and the fetcher driven by a sequence of operations: inserts
//! from a table of signed transactions (4 senders, nonces 0–11, 4 fee
//! rates), blocks that advance nonces and spend balances, expiry, and
//! announcements / answers / failures from 3 peers. After every step
//! every bound holds and `best()` keeps each sender's nonce order.
#![no_main]
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerlink_proto::{Keypair, PeerId};
use peerlink_proto::prefix::Prefix;
use peerlink_txpool::wire::Announced;
use peerlink_txpool::{Account, FetchConfig, Fetcher, Pool, PoolConfig, Transaction};

fn table() -> &'static Vec<Transaction> {
    static TABLE: OnceLock<Vec<Transaction>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let keys: Vec<Keypair> = (0..4u8).map(|i| Keypair::from_secret([i + 1; 32])).collect();
        let mut out = Vec::new();
        for k in &keys {
            for nonce in 0..12 {
                for fee in [1u64, 2, 3, 9] {
                    out.push(Transaction::sign(k, nonce, fee, vec![nonce as u8; 40]).unwrap());
                }
            }
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let txs = table();
    let config = PoolConfig {
        max_pending_per_sender: 4,
        max_queued_per_sender: 6,
        max_count: 20,
        max_bytes: 20 * 200,
        queued_lifetime: Duration::from_secs(10),
        ..PoolConfig::default()
    };
    let mut pool = Pool::new(config.clone());
    let fetch = FetchConfig { per_peer: 8, per_prefix: 12, total: 16, batch: 3, ..FetchConfig::default() };
    let mut fetcher = Fetcher::new(fetch.clone());
    let peers: Vec<PeerId> = (1..=3u8).map(|i| PeerId::unverified([i; 32])).collect();
    let prefix = Prefix::of(std::net::IpAddr::from([10, 0, 0, 1]));
    let mut ledger: HashMap<PeerId, Account> = HashMap::new();
    for t in txs.iter().step_by(48) {
        ledger.insert(t.sender, Account { next_nonce: 0, balance: 40_000 });
    }
    let mut now = Instant::now();
    for pair in data.chunks(2) {
        let (op, arg) = (pair[0], *pair.get(1).unwrap_or(&0));
        let tx = &txs[arg as usize % txs.len()];
        match op % 8 {
            0..=2 => {
                let before = pool.len();
                if pool.insert(tx.clone(), &ledger, now).is_err() {
                    assert_eq!(pool.len(), before);
                }
            }
            3 => {
                // A block: the best few executable, applied to the ledger.
                let picked: Vec<Transaction> = pool.best().take(arg as usize % 6).cloned().collect();
                for t in &picked {
                    let a = ledger.entry(t.sender).or_default();
                    assert_eq!(t.nonce, a.next_nonce);
                    a.next_nonce += 1;
                    a.balance = a.balance.saturating_sub(t.cost());
                }
                let senders: Vec<PeerId> = picked.iter().map(|t| t.sender).collect();
                pool.update_accounts(senders.iter(), &ledger);
            }
            4 => {
                now += Duration::from_secs(u64::from(arg) / 16);
                pool.prune(now);
            }
            5 => {
                let a = Announced { id: tx.id(), size: tx.size() as u32, fee_rate: tx.fee_rate };
                fetcher.announced(peers[arg as usize % 3], prefix, &[a]);
            }
            6 => {
                for (peer, ids) in fetcher.requests() {
                    assert!(ids.len() <= fetch.batch);
                    let sent: Vec<_> = ids.iter().copied().filter(|_| arg % 2 == 0).collect();
                    fetcher.answered(&peer, &sent);
                }
            }
            _ => match arg % 3 {
                0 => fetcher.failed(&peers[arg as usize % 3]),
                1 => fetcher.peer_gone(&peers[arg as usize % 3]),
                _ => {
                    fetcher.got(&tx.id());
                }
            },
        }
        let s = pool.status();
        assert_eq!(s.pending + s.queued, pool.len());
        assert!(pool.len() <= config.max_count && s.bytes <= config.max_bytes);
        assert!(fetcher.wanted() <= fetch.total);
        let mut next: HashMap<PeerId, u64> = HashMap::new();
        for t in pool.best() {
            let n = next.entry(t.sender).or_insert(ledger.get(&t.sender).map_or(0, |a| a.next_nonce));
            assert_eq!(t.nonce, *n);
            *n += 1;
        }
        assert!(next.values().zip(next.keys()).all(|(n, p)| {
            *n - ledger.get(p).map_or(0, |a| a.next_nonce) <= config.max_pending_per_sender as u64
        }));
    }
});
