//! `peerlink bench txpool`: the transaction pool's targets (TARGETS.md,
//! "Transaction pool").
//!
//! * **Core** (one thread, no network): 100,000 signed transactions from
//!   10,000 senders inserted into a pool that has held as many before
//!   (and, reported beside, into a fresh one), timed per batch of
//!   [`BATCH`] and reported per insert; `best()` popped the same way;
//!   blocks of 1,000 transactions applied to the chain and the pool
//!   (remove, advance nonces, promote); admission — decoding and
//!   checking signatures in batches of 256 (one ed25519 batch
//!   verification each) on one thread and on two.
//! * **Propagation**: a real network of N nodes (loopback, 0 ms links)
//!   running [`TxPool`]; transactions submitted at random nodes, each
//!   node's arrival time taken from [`TxPool::subscribe`]: time until
//!   every pool has a transaction, and full copies received per node per
//!   transaction.
//! * **Sustained**: 20 nodes, a steady rate of transactions from many
//!   senders for a while, two producers taking turns every 500 ms: every
//!   transaction must be included, every pool empty and at one height
//!   after the load stops; the process's memory is reported.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use peerlink_net::testnet::{Testnet, TestnetConfig};
use peerlink_net::{Keypair, PeerId};
use peerlink_proto::rng::Rng;
use peerlink_txpool::{
    Account, Block, Chain, Genesis, Pool, PoolConfig, Transaction, TxId, TxPool, TxPoolConfig,
};
use serde::Serialize;

use crate::{rss_bytes, Latency, Meter, Usage};

/// Operations timed together; a sample is their mean.
pub const BATCH: usize = 100;

#[derive(Clone, Debug)]
pub struct TxpoolBench {
    pub senders: usize,
    pub per_sender: u64,
    pub block_txs: usize,
    /// Nodes of the propagation network (0: skip it).
    pub nodes: usize,
    /// Transactions submitted in the propagation run.
    pub txs: usize,
    /// Between two submissions in the propagation run.
    pub interval: Duration,
    /// Nodes of the sustained run (0: skip it).
    pub sustained_nodes: usize,
    /// Transactions per second in the sustained run.
    pub rate: u64,
    pub secs: f64,
    pub block_every: Duration,
    pub seed: u64,
}

impl Default for TxpoolBench {
    fn default() -> Self {
        TxpoolBench {
            senders: 10_000,
            per_sender: 10,
            block_txs: 1000,
            nodes: 100,
            txs: 100,
            interval: Duration::from_millis(50),
            sustained_nodes: 20,
            rate: 500,
            secs: 30.0,
            block_every: Duration::from_millis(500),
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CoreReport {
    pub transactions: usize,
    pub senders: usize,
    /// Per insert (mean of each batch of [`BATCH`]) into a pool whose
    /// memory has held as many before: a running node's steady state.
    pub insert_ns: Latency,
    /// The same into a fresh pool, whose every page is touched for the
    /// first time.
    pub insert_cold_ns: Latency,
    /// Per `best()` pop, nonce order kept.
    pub pop_ns: Latency,
    /// Applying a block to the chain and the pool.
    pub block_apply: Latency,
    pub block_txs: usize,
    pub admission_one_by_one_per_s: f64,
    pub admission_batched_1_thread_per_s: f64,
    pub admission_batched_2_threads_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SustainedReport {
    pub rate: u64,
    pub secs: f64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub load: LoadReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct TxpoolReport {
    pub core: CoreReport,
    pub propagation: Option<LoadReport>,
    pub sustained: Option<SustainedReport>,
}

fn per_op(d: Duration, ops: usize) -> Duration {
    d / ops.max(1) as u32
}

/// Signs `per_sender` transactions for each key, nonces in order per
/// sender, senders interleaved, fee rates spread; over both cores.
pub fn sign_all(keys: &[Keypair], per_sender: u64, payload: usize) -> Vec<Transaction> {
    let mut out: Vec<Transaction> = Vec::with_capacity(keys.len() * per_sender as usize);
    let halves: Vec<Vec<Transaction>> = std::thread::scope(|s| {
        let (a, b) = keys.split_at(keys.len() / 2);
        let sign = |part: &[Keypair], offset: usize| -> Vec<Transaction> {
            let mut v = Vec::new();
            for nonce in 0..per_sender {
                for (i, k) in part.iter().enumerate() {
                    let fee = 1 + ((i + offset) as u64 * 7919 + nonce * 104_729) % 1000;
                    if let Ok(t) = Transaction::sign(k, nonce, fee, vec![0u8; payload]) {
                        v.push(t);
                    }
                }
            }
            v
        };
        let left = s.spawn(move || sign(a, 0));
        let right = sign(b, a.len());
        vec![left.join().unwrap_or_default(), right]
    });
    for h in halves {
        out.extend(h);
    }
    out
}

pub fn keys(n: usize) -> Result<Vec<Keypair>> {
    (0..n)
        .map(|_| Keypair::generate().map_err(anyhow::Error::from))
        .collect()
}

/// The pool's core on one thread.
pub fn core(b: &TxpoolBench) -> Result<CoreReport> {
    let keys = keys(b.senders)?;
    let producer = Keypair::generate()?;
    let txs = sign_all(&keys, b.per_sender, 100);
    let genesis = Genesis {
        producers: vec![producer.peer_id()],
        accounts: keys.iter().map(|k| (k.peer_id(), 1u128 << 100)).collect(),
    };
    // The genesis chain is the ledger inserts read.
    let ledger = Chain::new(&genesis);
    let config = PoolConfig {
        max_count: txs.len() * 2,
        max_bytes: 1 << 30,
        ..PoolConfig::default()
    };
    let now = Instant::now();
    // Insert: a fresh pool filled once (cold: its memory is touched for
    // the first time), then emptied by an account update that makes every
    // transaction stale and filled again, twice (warm: a running pool's
    // steady state, its memory reused). The last fill is kept for pops
    // and blocks.
    let mut cold = Vec::new();
    let mut insert = Vec::new();
    let mut pool = Pool::new(config.clone());
    let spent: HashMap<PeerId, Account> = keys
        .iter()
        .map(|k| {
            let a = Account {
                next_nonce: b.per_sender,
                balance: 1u128 << 100,
            };
            (k.peer_id(), a)
        })
        .collect();
    for round in 0..3 {
        if round > 0 {
            pool.update_accounts(spent.keys(), &spent);
            if !pool.is_empty() {
                bail!(
                    "{} transactions left after every one went stale",
                    pool.len()
                );
            }
        }
        let samples = if round == 0 { &mut cold } else { &mut insert };
        // Owned transactions, as a decoder hands them over (cloning inside
        // the timed loop would time a reference count in a cold cache line).
        let mut owned = txs.clone().into_iter();
        loop {
            let chunk: Vec<Transaction> = owned.by_ref().take(BATCH).collect();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            let t = Instant::now();
            for tx in chunk {
                std::hint::black_box(pool.insert(tx, &ledger, now).is_ok());
            }
            samples.push(per_op(t.elapsed(), n));
        }
        if pool.len() != txs.len() {
            bail!("only {} of {} inserts were taken", pool.len(), txs.len());
        }
    }
    // Pops: the whole pool in best() order, three times.
    let mut pop = Vec::new();
    for _ in 0..3 {
        // Building the heap of each sender's head counts in the first batch.
        let mut first = Some(Instant::now());
        let mut best = pool.best();
        loop {
            let t = first.take().unwrap_or_else(Instant::now);
            let mut n = 0;
            while n < BATCH && std::hint::black_box(best.next()).is_some() {
                n += 1;
            }
            if n == 0 {
                break;
            }
            pop.push(per_op(t.elapsed(), n));
        }
    }
    // Blocks of `block_txs` from best(), applied to chain and pool.
    let mut chain = Chain::new(&genesis);
    let mut apply = Vec::new();
    let blocks = (txs.len() / b.block_txs.max(1)).min(20);
    for _ in 0..blocks {
        let picked: Vec<Transaction> = pool.best().take(b.block_txs).cloned().collect();
        let block = Block::sign(&producer, chain.height() + 1, chain.tip(), 0, picked)?;
        let t = Instant::now();
        let applied = chain.apply(&block)?;
        pool.update_accounts(applied.senders.iter(), &chain);
        apply.push(t.elapsed());
    }
    // Admission: decode and verify.
    let wires: Vec<Vec<u8>> = txs
        .iter()
        .take(25_600)
        .map(|t| t.encoded().to_vec())
        .collect();
    let admit = |batch: &[Vec<u8>]| -> bool {
        let decoded: Vec<Transaction> = batch
            .iter()
            .filter_map(|w| Transaction::decode_unverified(w).ok())
            .collect();
        decoded.len() == batch.len() && Transaction::verify_many(&decoded).is_ok()
    };
    let rate = |f: &dyn Fn() -> bool| -> Result<f64> {
        let mut rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            if !f() {
                bail!("a transaction failed to verify");
            }
            rates.push(wires.len() as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        Ok(rates[1])
    };
    let one_by_one = rate(&|| wires.iter().all(|w| Transaction::decode(w).is_ok()))?;
    let batched_1 = rate(&|| wires.chunks(256).all(admit))?;
    let batched_2 = rate(&|| {
        let (left, right) = wires.split_at(wires.len() / 2);
        std::thread::scope(|s| {
            let l = s.spawn(|| left.chunks(256).all(admit));
            let r = right.chunks(256).all(admit);
            l.join().unwrap_or(false) && r
        })
    })?;
    Ok(CoreReport {
        transactions: txs.len(),
        senders: keys.len(),
        insert_ns: Latency::from_samples(insert),
        insert_cold_ns: Latency::from_samples(cold),
        pop_ns: Latency::from_samples(pop),
        block_apply: Latency::from_samples(apply),
        block_txs: b.block_txs,
        admission_one_by_one_per_s: one_by_one,
        admission_batched_1_thread_per_s: batched_1,
        admission_batched_2_threads_per_s: batched_2,
    })
}

/// A network of `n` nodes each running a pool; `producers` of them
/// produce in turn every `block_every` (none: no blocks).
async fn network(
    n: usize,
    accounts: Vec<(PeerId, u128)>,
    producers: usize,
    block_every: Option<Duration>,
) -> Result<(Testnet, Vec<TxPool>)> {
    let net = Testnet::start(TestnetConfig {
        nodes: n,
        ..TestnetConfig::default()
    })
    .await?;
    let genesis = Genesis {
        producers: net
            .nodes
            .iter()
            .take(producers.max(1))
            .map(|n| n.peer_id())
            .collect(),
        accounts,
    };
    let mut pools = Vec::with_capacity(n);
    for (i, node) in net.nodes.iter().enumerate() {
        let mut c = TxPoolConfig::new(genesis.clone());
        if i < producers {
            c.produce_every = block_every;
        }
        pools.push(TxPool::new(node, c)?);
    }
    Ok((net, pools))
}

/// Records when each pool first had each transaction.
fn watch(pools: &[TxPool]) -> Arc<Mutex<HashMap<TxId, Vec<Instant>>>> {
    let seen: Arc<Mutex<HashMap<TxId, Vec<Instant>>>> = Arc::default();
    for p in pools {
        let mut rx = p.subscribe();
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(t) = rx.recv().await {
                let now = Instant::now();
                let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                s.entry(t.id()).or_default().push(now);
            }
        });
    }
    seen
}

fn sum(pools: &[TxPool], f: impl Fn(&peerlink_txpool::service::Counters) -> u64) -> u64 {
    pools.iter().map(|p| f(p.counters())).sum()
}

/// What [`drive`] waits for once every transaction is submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Every pool has every transaction.
    AllHave,
    /// Every pool is empty, at one height (blocks included everything).
    AllIncluded,
}

/// A load driven through running pools, and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub nodes: usize,
    pub submitted: u64,
    /// Refused at submission (should be none).
    pub refused_at_submit: u64,
    /// Pools that had each transaction, over transactions × pools.
    pub complete: f64,
    /// Per transaction: submitted until the last pool had it.
    pub time_to_all: Latency,
    /// Full copies received per node per transaction (pushes and fetches).
    pub copies_per_node: f64,
    /// Full copies a node already had, per node per transaction.
    pub duplicates_per_node: f64,
    pub fetch_failures: u64,
    /// Announcements that could not be queued to a peer.
    pub unsent: u64,
    /// The most transactions one pool held at once (sampled).
    pub max_pool: usize,
    /// Transactions included in blocks (as node 0 applied them).
    pub included: u64,
    pub height: u64,
    /// From the last submission until the wait ended.
    pub settle_ms: f64,
    /// Whether what [`Until`] asked for happened within 60 s.
    pub settled: bool,
    pub rss_peak: u64,
    /// CPU per transaction delivered to a pool, the whole network's, and
    /// memory per node at the end of the load.
    pub usage: Usage,
}

/// Submits `txs` at random pools at `rate` per second, then waits for
/// `until` (at most 60 s).
pub async fn drive(
    pools: &[TxPool],
    txs: &[Transaction],
    rate: f64,
    until: Until,
    seed: u64,
    meter: &mut Meter,
) -> Result<LoadReport> {
    if pools.len() < 2 {
        bail!("a load needs at least 2 pools");
    }
    meter.start();
    let seen = watch(pools);
    let received_before = sum(pools, |c| c.received.load(Relaxed));
    let dups_before = sum(pools, |c| c.duplicates.load(Relaxed));
    let included_before = pools[0].counters().included.load(Relaxed);
    let mut rng = Rng::new(seed);
    let mut refused = 0u64;
    let mut rss_peak = rss_bytes().unwrap_or(0);
    let mut max_pool = 0;
    let mut submitted: Vec<(TxId, Instant)> = Vec::with_capacity(txs.len());
    let tick = Duration::from_millis(10);
    let start = Instant::now();
    let mut next = tokio::time::Instant::now();
    let mut sent = 0usize;
    while sent < txs.len() {
        next += tick;
        tokio::time::sleep_until(next).await;
        let due = (start.elapsed().as_secs_f64() * rate).ceil() as usize;
        while sent < due.min(txs.len()) {
            let at = rng.below(pools.len() as u64) as usize;
            let t = Instant::now();
            match pools[at].submit(txs[sent].clone()) {
                Ok(_) => submitted.push((txs[sent].id(), t)),
                Err(_) => refused += 1,
            }
            sent += 1;
        }
        if sent % 256 < 8 {
            rss_peak = rss_peak.max(rss_bytes().unwrap_or(0));
            max_pool = max_pool.max(
                pools
                    .iter()
                    .map(|p| {
                        let s = p.status().pool;
                        s.pending + s.queued
                    })
                    .max()
                    .unwrap_or(0),
            );
        }
    }
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(60);
    let settled = loop {
        let done = match until {
            Until::AllHave => {
                let s = seen.lock().unwrap_or_else(|e| e.into_inner());
                submitted
                    .iter()
                    .all(|(id, _)| s.get(id).is_some_and(|v| v.len() >= pools.len()))
            }
            Until::AllIncluded => {
                let st: Vec<_> = pools.iter().map(TxPool::status).collect();
                max_pool = max_pool.max(
                    st.iter()
                        .map(|s| s.pool.pending + s.pool.queued)
                        .max()
                        .unwrap_or(0),
                );
                st.iter()
                    .all(|s| s.height == st[0].height && s.pool.pending + s.pool.queued == 0)
            }
        };
        rss_peak = rss_peak.max(rss_bytes().unwrap_or(0));
        if done {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let settle_ms = stopped.elapsed().as_secs_f64() * 1e3;
    let s = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut times = Vec::new();
    let mut complete = 0usize;
    for (id, t) in &submitted {
        let v = s.get(id).map_or(&[][..], |v| v.as_slice());
        complete += v.len().min(pools.len());
        if v.len() >= pools.len() {
            if let Some(last) = v.iter().max() {
                times.push(last.saturating_duration_since(*t));
            }
        }
    }
    let per = (submitted.len().max(1) * (pools.len() - 1)) as f64;
    let usage = meter.finish(
        pools.len(),
        "transaction delivered to a pool",
        complete as u64,
    );
    Ok(LoadReport {
        nodes: pools.len(),
        submitted: submitted.len() as u64,
        refused_at_submit: refused,
        complete: complete as f64 / (submitted.len().max(1) * pools.len()) as f64,
        time_to_all: Latency::from_samples(times),
        copies_per_node: (sum(pools, |c| c.received.load(Relaxed)) - received_before) as f64 / per,
        duplicates_per_node: (sum(pools, |c| c.duplicates.load(Relaxed)) - dups_before) as f64
            / per,
        fetch_failures: sum(pools, |c| c.fetch_failures.load(Relaxed)),
        unsent: sum(pools, |c| c.unsent.load(Relaxed)),
        max_pool,
        included: pools[0].counters().included.load(Relaxed) - included_before,
        height: pools[0].status().height,
        settle_ms,
        settled,
        rss_peak,
        usage,
    })
}

/// Transactions submitted at random nodes of a quiet network, until
/// every pool has every one.
pub async fn propagation(b: &TxpoolBench) -> Result<LoadReport> {
    let senders = keys(b.txs.clamp(1, 1000))?;
    let accounts = senders.iter().map(|k| (k.peer_id(), 1u128 << 60)).collect();
    let per_sender = b.txs.div_ceil(senders.len()) as u64;
    let txs: Vec<Transaction> = sign_all(&senders, per_sender, 150)
        .into_iter()
        .take(b.txs)
        .collect();
    let mut meter = Meter::new();
    let (net, pools) = network(b.nodes.max(2), accounts, 1, None).await?;
    // Let connections settle after the joins.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rate = 1.0 / b.interval.as_secs_f64().max(1e-4);
    let report = drive(&pools, &txs, rate, Until::AllHave, b.seed, &mut meter).await;
    drop(pools);
    net.shutdown().await;
    report
}

/// A steady load with blocks, then the wait for every pool to empty.
pub async fn sustained(b: &TxpoolBench) -> Result<SustainedReport> {
    let total = (b.rate as f64 * b.secs) as usize;
    // At most 12 transactions a sender, under the 16 pending a sender may have.
    let senders = keys(total.div_ceil(12).max(1))?;
    let accounts = senders.iter().map(|k| (k.peer_id(), 1u128 << 60)).collect();
    let txs: Vec<Transaction> = sign_all(&senders, 12, 150)
        .into_iter()
        .take(total)
        .collect();
    let rss_before = rss_bytes().unwrap_or(0);
    let mut meter = Meter::new();
    let (net, pools) = network(b.sustained_nodes.max(2), accounts, 2, Some(b.block_every)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load = drive(
        &pools,
        &txs,
        b.rate as f64,
        Until::AllIncluded,
        b.seed,
        &mut meter,
    )
    .await;
    let rss_after = rss_bytes().unwrap_or(0);
    drop(pools);
    net.shutdown().await;
    Ok(SustainedReport {
        rate: b.rate,
        secs: b.secs,
        rss_before,
        rss_after,
        load: load?,
    })
}

/// Every part [`TxpoolBench`] asks for.
pub async fn txpool(b: &TxpoolBench) -> Result<TxpoolReport> {
    let c = b.clone();
    let core = tokio::task::spawn_blocking(move || core(&c)).await??;
    let propagation = if b.nodes > 0 {
        Some(propagation(b).await?)
    } else {
        None
    };
    let sustained = if b.sustained_nodes > 0 {
        Some(sustained(b).await?)
    } else {
        None
    };
    Ok(TxpoolReport {
        core,
        propagation,
        sustained,
    })
}
