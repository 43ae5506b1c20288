//! Which data structures the transaction pool should use, by measurement
//! (issue 15; the go-p2p seed's method): each candidate on the same
//! operation mix, on one thread and shared by two (the machine has 2
//! cores), 75 % reads and 25 % writes where that applies.
//!
//! * **Ordered pending set** (fee rate, id): a read peeks the best, a
//!   write inserts a new entry or removes a random one (half each):
//!   `BinaryHeap` with lazy deletion, `BTreeMap` — each behind
//!   `std::sync::Mutex` or `parking_lot::Mutex` — and
//!   `crossbeam_skiplist::SkipMap` (lock-free). Also: popping a whole set
//!   of 10,000 in order, one thread.
//! * **Seen-id set / by-id map** (32-byte ids): a read looks an id up
//!   (half hit, half miss), a write inserts: `Mutex<HashMap>`,
//!   `RwLock<HashMap>`, `dashmap`, `papaya` (lock-free).
//! * **Hand-off queue** network → pool: 100,000 items through
//!   `tokio::sync::mpsc`, `crossbeam-channel` and `Mutex<VecDeque>` (with
//!   a `Condvar`), bounded at 1,024; on one thread (push a burst, drain
//!   it) and producer and consumer on two.
//!
//! `cargo bench -p peerlink-bench --bench txpool_structures`
//! Each sample is every thread's ops together; throughput is per op.

use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::hint::black_box;
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Ops per thread per sample.
const OPS: usize = 20_000;
/// Entries a set or map holds when measuring starts.
const PREFILL: usize = 10_000;

/// A small deterministic generator (xorshift), so every candidate sees
/// the same operations.
struct Xs(u64);
impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One operation of the mix.
#[derive(Clone, Copy)]
enum Op {
    Read(u64),
    Insert(u64, u64),
    Remove(u64),
}

/// `n` operations, 75 % reads; keys from `seed`.
fn mix(n: usize, seed: u64) -> Vec<Op> {
    let mut r = Xs(seed | 1);
    (0..n)
        .map(|_| {
            let x = r.next();
            match x % 8 {
                0..=5 => Op::Read(r.next() % (2 * PREFILL as u64)),
                6 => Op::Insert(r.next() % 1000, r.next() % (2 * PREFILL as u64)),
                _ => Op::Remove(r.next() % (2 * PREFILL as u64)),
            }
        })
        .collect()
}

/// Runs `work(thread)` on `threads` threads at once, `iters` times;
/// returns the total time.
fn timed(iters: u64, threads: usize, work: &(dyn Fn(usize) + Sync)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let t = Instant::now();
        std::thread::scope(|s| {
            for i in 1..threads {
                s.spawn(move || work(i));
            }
            work(0);
        });
        total += t.elapsed();
    }
    total
}

// ---- the ordered pending set ------------------------------------------

/// The set's operations, whatever the structure.
trait Ordered: Sync {
    fn apply(&self, op: Op);
}

/// Max-heap of (fee, id) with lazy deletion: removed ids are skipped when
/// they reach the top.
#[derive(Default)]
struct LazyHeap {
    heap: BinaryHeap<(u64, u64)>,
    live: HashMap<u64, u64>,
}

impl LazyHeap {
    fn insert(&mut self, fee: u64, id: u64) {
        if self.live.insert(id, fee).is_none() {
            self.heap.push((fee, id));
        }
    }
    fn remove(&mut self, id: u64) {
        self.live.remove(&id);
        // Keep the heap from filling with the dead.
        if self.heap.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.heap.retain(|(f, i)| live.get(i) == Some(f));
        }
    }
    fn peek(&mut self) -> Option<(u64, u64)> {
        while let Some(&(f, i)) = self.heap.peek() {
            if self.live.get(&i) == Some(&f) {
                return Some((f, i));
            }
            self.heap.pop();
        }
        None
    }
    fn pop(&mut self) -> Option<(u64, u64)> {
        let top = self.peek()?;
        self.heap.pop();
        self.live.remove(&top.1);
        Some(top)
    }
}

/// (fee, id) → () ordered, with id → fee to remove by id.
#[derive(Default)]
struct Tree {
    set: BTreeMap<(u64, u64), ()>,
    fee: HashMap<u64, u64>,
}

impl Tree {
    fn insert(&mut self, fee: u64, id: u64) {
        if self.fee.insert(id, fee).is_none() {
            self.set.insert((fee, id), ());
        }
    }
    fn remove(&mut self, id: u64) {
        if let Some(f) = self.fee.remove(&id) {
            self.set.remove(&(f, id));
        }
    }
    fn peek(&self) -> Option<(u64, u64)> {
        self.set.last_key_value().map(|(k, _)| *k)
    }
    fn pop(&mut self) -> Option<(u64, u64)> {
        let (k, _) = self.set.pop_last()?;
        self.fee.remove(&k.1);
        Some(k)
    }
}

macro_rules! locked_ordered {
    ($name:ident, $lock:ty, $guard:ident) => {
        struct $name($lock);
        impl Ordered for $name {
            fn apply(&self, op: Op) {
                let mut s = $guard(&self.0);
                match op {
                    Op::Read(_) => {
                        black_box(s.peek());
                    }
                    Op::Insert(f, i) => s.insert(f, i),
                    Op::Remove(i) => s.remove(i),
                }
            }
        }
    };
}

fn std_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn pl_lock<T>(m: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    m.lock()
}

locked_ordered!(HeapStd, Mutex<LazyHeap>, std_lock);
locked_ordered!(HeapPl, parking_lot::Mutex<LazyHeap>, pl_lock);
locked_ordered!(TreeStd, Mutex<Tree>, std_lock);
locked_ordered!(TreePl, parking_lot::Mutex<Tree>, pl_lock);

/// Lock-free: (fee, id) ordered in a skip list, id → fee in a second.
struct Skip {
    set: crossbeam_skiplist::SkipMap<(u64, u64), ()>,
    fee: crossbeam_skiplist::SkipMap<u64, u64>,
}

impl Ordered for Skip {
    fn apply(&self, op: Op) {
        match op {
            Op::Read(_) => {
                black_box(self.set.back().map(|e| *e.key()));
            }
            Op::Insert(f, i) => {
                if !self.fee.contains_key(&i) {
                    self.fee.insert(i, f);
                    self.set.insert((f, i), ());
                }
            }
            Op::Remove(i) => {
                if let Some(e) = self.fee.remove(&i) {
                    self.set.remove(&(*e.value(), i));
                }
            }
        }
    }
}

fn prefilled(set: &dyn Ordered) {
    let mut r = Xs(99);
    for i in 0..PREFILL as u64 {
        set.apply(Op::Insert(r.next() % 1000, i * 2));
    }
}

fn ordered_set(c: &mut Criterion) {
    let mut g = c.benchmark_group("pending set, 75% peek best / 25% insert or remove");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    let ops: Vec<Vec<Op>> = (0..2).map(|t| mix(OPS, 7 + t)).collect();
    type Make = fn() -> Box<dyn Ordered>;
    let candidates: [(&str, Make); 5] = [
        ("Mutex<BinaryHeap> lazy", || {
            Box::new(HeapStd(Mutex::default()))
        }),
        ("parking_lot Mutex<BinaryHeap> lazy", || {
            Box::new(HeapPl(parking_lot::Mutex::default()))
        }),
        ("Mutex<BTreeMap>", || Box::new(TreeStd(Mutex::default()))),
        ("parking_lot Mutex<BTreeMap>", || {
            Box::new(TreePl(parking_lot::Mutex::default()))
        }),
        ("crossbeam SkipMap", || {
            Box::new(Skip {
                set: crossbeam_skiplist::SkipMap::new(),
                fee: crossbeam_skiplist::SkipMap::new(),
            })
        }),
    ];
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements((OPS * threads) as u64));
        for (name, make) in &candidates {
            g.bench_with_input(BenchmarkId::new(*name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    let set = make();
                    prefilled(&*set);
                    timed(iters, threads, &|t| {
                        for op in &ops[t] {
                            set.apply(*op);
                        }
                    })
                })
            });
        }
    }
    g.finish();

    // Popping everything in order (block building), one thread.
    let mut g = c.benchmark_group("pending set, pop 10,000 in order");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(PREFILL as u64));
    let fees: Vec<u64> = {
        let mut r = Xs(5);
        (0..PREFILL).map(|_| r.next() % 1000).collect()
    };
    fn pop_all<S>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        fees: &[u64],
        insert: impl Fn(&mut S, u64, u64),
        pop: impl Fn(&mut S) -> bool,
    ) where
        S: Default,
    {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut s = S::default();
                    for (i, f) in fees.iter().enumerate() {
                        insert(&mut s, *f, i as u64);
                    }
                    s
                },
                |mut s| while pop(&mut s) {},
                criterion::BatchSize::LargeInput,
            )
        });
    }
    pop_all(&mut g, "BinaryHeap lazy", &fees, LazyHeap::insert, |h| {
        black_box(h.pop()).is_some()
    });
    pop_all(&mut g, "BTreeMap", &fees, Tree::insert, |t| {
        black_box(t.pop()).is_some()
    });
    pop_all(
        &mut g,
        "crossbeam SkipMap",
        &fees,
        |s: &mut crossbeam_skiplist::SkipMap<(u64, u64), ()>, f, i| {
            s.insert((f, i), ());
        },
        |s| black_box(s.pop_back()).is_some(),
    );
    g.finish();
}

// ---- the seen-id set and by-id map --------------------------------------

trait IdMap: Sync {
    fn get(&self, k: &[u8; 32]) -> bool;
    fn insert(&self, k: [u8; 32], v: u64);
}

impl IdMap for Mutex<HashMap<[u8; 32], u64>> {
    fn get(&self, k: &[u8; 32]) -> bool {
        std_lock(self).contains_key(k)
    }
    fn insert(&self, k: [u8; 32], v: u64) {
        std_lock(self).insert(k, v);
    }
}

impl IdMap for RwLock<HashMap<[u8; 32], u64>> {
    fn get(&self, k: &[u8; 32]) -> bool {
        self.read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(k)
    }
    fn insert(&self, k: [u8; 32], v: u64) {
        self.write().unwrap_or_else(|e| e.into_inner()).insert(k, v);
    }
}

impl IdMap for dashmap::DashMap<[u8; 32], u64> {
    fn get(&self, k: &[u8; 32]) -> bool {
        self.contains_key(k)
    }
    fn insert(&self, k: [u8; 32], v: u64) {
        dashmap::DashMap::insert(self, k, v);
    }
}

impl IdMap for papaya::HashMap<[u8; 32], u64> {
    fn get(&self, k: &[u8; 32]) -> bool {
        self.pin().contains_key(k)
    }
    fn insert(&self, k: [u8; 32], v: u64) {
        self.pin().insert(k, v);
    }
}

fn id(n: u64) -> [u8; 32] {
    *blake3::hash(&n.to_le_bytes()).as_bytes()
}

fn id_maps(c: &mut Criterion) {
    let mut g = c.benchmark_group("seen-id map, 75% lookup / 25% insert");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    let ops: Vec<Vec<(bool, [u8; 32])>> = (0..2u64)
        .map(|t| {
            mix(OPS, 11 + t)
                .into_iter()
                .map(|op| match op {
                    Op::Read(k) => (true, id(k)),
                    Op::Insert(_, k) | Op::Remove(k) => (false, id(k + 3 * PREFILL as u64)),
                })
                .collect()
        })
        .collect();
    type Make = fn() -> Box<dyn IdMap>;
    let candidates: [(&str, Make); 4] = [
        ("Mutex<HashMap>", || Box::new(Mutex::new(HashMap::new()))),
        ("RwLock<HashMap>", || Box::new(RwLock::new(HashMap::new()))),
        ("dashmap", || Box::new(dashmap::DashMap::new())),
        ("papaya (lock-free)", || Box::new(papaya::HashMap::new())),
    ];
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements((OPS * threads) as u64));
        for (name, make) in &candidates {
            g.bench_with_input(BenchmarkId::new(*name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    let m = make();
                    // Even keys present: half the lookups hit.
                    for i in 0..PREFILL as u64 {
                        m.insert(id(i * 2), i);
                    }
                    timed(iters, threads, &|t| {
                        for (read, k) in &ops[t] {
                            if *read {
                                black_box(m.get(k));
                            } else {
                                m.insert(*k, 1);
                            }
                        }
                    })
                })
            });
        }
    }
    g.finish();
}

// ---- the hand-off queue -----------------------------------------------

const ITEMS: usize = 100_000;
const BOUND: usize = 1024;

/// A bounded queue under a mutex, with condvars for full and empty.
struct Locked {
    q: Mutex<VecDeque<u64>>,
    not_empty: Condvar,
    not_full: Condvar,
}

impl Locked {
    /// Wakes the consumer only when the queue was empty (a notify is a
    /// system call even with nobody waiting).
    fn push(&self, v: u64) {
        let mut q = std_lock(&self.q);
        while q.len() >= BOUND {
            q = self.not_full.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        let was_empty = q.is_empty();
        q.push_back(v);
        drop(q);
        if was_empty {
            self.not_empty.notify_one();
        }
    }
    /// Wakes the producer only when the queue was full.
    fn pop(&self) -> u64 {
        let mut q = std_lock(&self.q);
        loop {
            let was_full = q.len() >= BOUND;
            if let Some(v) = q.pop_front() {
                drop(q);
                if was_full {
                    self.not_full.notify_one();
                }
                return v;
            }
            q = self.not_empty.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn hand_off(c: &mut Criterion) {
    let mut g = c.benchmark_group("hand-off queue, 100,000 items, bound 1,024");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(ITEMS as u64));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    // One thread: push a burst of BOUND, drain it.
    g.bench_function(BenchmarkId::new("tokio mpsc", 1), |b| {
        b.iter(|| {
            rt.block_on(async {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(BOUND);
                let mut sum = 0;
                for burst in 0..ITEMS / BOUND {
                    for i in 0..BOUND {
                        let _ = tx.try_send((burst * BOUND + i) as u64);
                    }
                    while let Ok(v) = rx.try_recv() {
                        sum += v;
                    }
                }
                black_box(sum)
            })
        })
    });
    g.bench_function(BenchmarkId::new("crossbeam-channel", 1), |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded::<u64>(BOUND);
            let mut sum = 0;
            for burst in 0..ITEMS / BOUND {
                for i in 0..BOUND {
                    let _ = tx.try_send((burst * BOUND + i) as u64);
                }
                while let Ok(v) = rx.try_recv() {
                    sum += v;
                }
            }
            black_box(sum)
        })
    });
    g.bench_function(BenchmarkId::new("Mutex<VecDeque>", 1), |b| {
        b.iter(|| {
            let q = Locked {
                q: Mutex::new(VecDeque::with_capacity(BOUND)),
                not_empty: Condvar::new(),
                not_full: Condvar::new(),
            };
            let mut sum = 0;
            for burst in 0..ITEMS / BOUND {
                for i in 0..BOUND {
                    q.push((burst * BOUND + i) as u64);
                }
                for _ in 0..BOUND {
                    sum += q.pop();
                }
            }
            black_box(sum)
        })
    });
    // Two threads: a producer and a consumer.
    let n = (ITEMS / BOUND) * BOUND;
    g.bench_function(BenchmarkId::new("tokio mpsc", 2), |b| {
        b.iter(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(BOUND);
            std::thread::scope(|s| {
                s.spawn(move || {
                    for i in 0..n {
                        let _ = tx.blocking_send(i as u64);
                    }
                });
                let mut sum = 0;
                while let Some(v) = rx.blocking_recv() {
                    sum += v;
                }
                black_box(sum)
            })
        })
    });
    g.bench_function(BenchmarkId::new("crossbeam-channel", 2), |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded::<u64>(BOUND);
            std::thread::scope(|s| {
                s.spawn(move || {
                    for i in 0..n {
                        let _ = tx.send(i as u64);
                    }
                });
                black_box(rx.iter().sum::<u64>())
            })
        })
    });
    g.bench_function(BenchmarkId::new("Mutex<VecDeque>", 2), |b| {
        b.iter(|| {
            let q = Locked {
                q: Mutex::new(VecDeque::with_capacity(BOUND)),
                not_empty: Condvar::new(),
                not_full: Condvar::new(),
            };
            std::thread::scope(|s| {
                let q = &q;
                s.spawn(move || {
                    for i in 0..n {
                        q.push(i as u64);
                    }
                });
                let mut sum = 0;
                for _ in 0..n {
                    sum += q.pop();
                }
                black_box(sum)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, ordered_set, id_maps, hand_off);
criterion_main!(benches);
