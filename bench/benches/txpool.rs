//! The transaction pool's core (issue 15 targets): inserting 100,000
//! signed transactions from 10,000 senders (signatures checked before, as
//! the pool expects), and taking them back out in `best()` order.
//! Then admission: decoding and checking signatures one by one and in
//! batches, on one and two threads.
//! `cargo bench -p peerlink-bench --bench txpool`

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peerlink_net::Keypair;
use peerlink_txpool::{Account, Pool, PoolConfig, Transaction};

const SENDERS: usize = 10_000;
const PER_SENDER: u64 = 10;

fn config() -> PoolConfig {
    PoolConfig {
        max_count: 200_000,
        max_bytes: 1 << 30,
        ..PoolConfig::default()
    }
}

fn txpool(c: &mut Criterion) {
    let keys: Vec<Keypair> = (0..SENDERS).map(|_| Keypair::generate().unwrap()).collect();
    let ledger: HashMap<_, _> = keys
        .iter()
        .map(|k| {
            let a = Account {
                next_nonce: 0,
                balance: u128::MAX,
            };
            (k.peer_id(), a)
        })
        .collect();
    // Nonces in order per sender, senders interleaved, fee rates spread.
    let mut txs = Vec::new();
    for nonce in 0..PER_SENDER {
        for (i, k) in keys.iter().enumerate() {
            let fee = 1 + (i as u64 * 7919 + nonce * 104_729) % 1000;
            txs.push(Transaction::sign(k, nonce, fee, vec![0u8; 100]).unwrap());
        }
    }
    let n = txs.len() as u64;
    let mut group = c.benchmark_group("txpool");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.bench_function("insert 100k from 10k senders", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut pool = Pool::new(config());
                let now = Instant::now();
                let start = Instant::now();
                for tx in &txs {
                    black_box(pool.insert(tx.clone(), &ledger, now).is_ok());
                }
                total += start.elapsed();
                drop(pool);
            }
            total
        })
    });
    let mut pool = Pool::new(config());
    let now = Instant::now();
    for tx in &txs {
        pool.insert(tx.clone(), &ledger, now).unwrap();
    }
    group.bench_function("best() over 100k, nonce order kept", |b| {
        b.iter(|| {
            let mut taken = 0u64;
            for tx in pool.best() {
                taken += black_box(tx.nonce) & 1;
            }
            black_box(taken)
        })
    });
    group.finish();

    // Admission: decode and check signatures as they arrive from peers,
    // in batches of 256 (a `Txs` message), one batch verification each;
    // on one thread and split over two.
    let wires: Vec<Vec<u8>> = txs
        .iter()
        .take(25_600)
        .map(|t| t.encoded().to_vec())
        .collect();
    let admit = |batch: &[Vec<u8>]| {
        let decoded: Vec<Transaction> = batch
            .iter()
            .map(|w| Transaction::decode_unverified(w).unwrap())
            .collect();
        assert_eq!(Transaction::verify_many(&decoded), Ok(()));
    };
    let mut group = c.benchmark_group("txpool admission");
    group.throughput(Throughput::Elements(wires.len() as u64));
    group.sample_size(10);
    group.bench_function("decode + verify one by one, 1 thread", |b| {
        b.iter(|| {
            for w in &wires {
                black_box(Transaction::decode(w).unwrap());
            }
        })
    });
    group.bench_function("decode + batch verify (256), 1 thread", |b| {
        b.iter(|| wires.chunks(256).for_each(admit))
    });
    group.bench_function("decode + batch verify (256), 2 threads", |b| {
        b.iter(|| {
            let (left, right) = wires.split_at(wires.len() / 2);
            std::thread::scope(|s| {
                s.spawn(|| left.chunks(256).for_each(admit));
                right.chunks(256).for_each(admit);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, txpool);
criterion_main!(benches);
