//! What both simulators share: the latency model of the links between
//! nodes, partitions, and the virtual-time event queue.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use peerlink_proto::rng::Rng;

/// How one-way delays are drawn.
#[derive(Clone, Debug)]
pub enum Latency {
    Fixed(Duration),
    /// Regions, access links and jitter; median one-way delay ≈ 45 ms.
    Geo,
}

/// Fractions of nodes per region and one-way delays between regions (ms),
/// in the spirit of public inter-region latency tables.
const REGION_WEIGHTS: [f64; 6] = [0.30, 0.30, 0.25, 0.05, 0.05, 0.05];
const REGION_MS: [[f64; 6]; 6] = [
    // NA    EU    Asia  SA    Oce   Afr
    [15.0, 45.0, 80.0, 60.0, 75.0, 110.0],
    [45.0, 10.0, 90.0, 100.0, 135.0, 70.0],
    [80.0, 90.0, 25.0, 150.0, 60.0, 120.0],
    [60.0, 100.0, 150.0, 20.0, 140.0, 170.0],
    [75.0, 135.0, 60.0, 140.0, 10.0, 190.0],
    [110.0, 70.0, 120.0, 170.0, 190.0, 20.0],
];

/// Per-node link properties and the delay between any two nodes.
pub(crate) struct Links {
    latency: Latency,
    seed: u64,
    region: Vec<u8>,
    /// One-way access delay in microseconds.
    access_us: Vec<u32>,
    /// Partition group; messages between groups are lost.
    group: Vec<u32>,
}

impl Links {
    pub fn new(latency: Latency, seed: u64, nodes: usize) -> Links {
        Links {
            latency,
            seed,
            region: Vec::with_capacity(nodes),
            access_us: Vec::with_capacity(nodes),
            group: Vec::with_capacity(nodes),
        }
    }

    /// Draws the next node's region and access delay from `rng`.
    pub fn add_node(&mut self, rng: &mut Rng) {
        let mut u = rng.unit();
        let mut region = 0u8;
        for (r, w) in REGION_WEIGHTS.iter().enumerate() {
            if u < *w {
                region = r as u8;
                break;
            }
            u -= w;
        }
        // Log-normal access delay, median 3 ms.
        let access_ms = 3.0 * (0.6 * normal(rng)).exp();
        self.region.push(region);
        self.access_us
            .push((access_ms * 1000.0).min(100_000.0) as u32);
        self.group.push(0);
    }

    /// One-way delay from `a` to `b` in microseconds (deterministic per
    /// ordered pair, so both directions are similar but not identical).
    pub fn delay_us(&self, a: u32, b: u32) -> u64 {
        match &self.latency {
            Latency::Fixed(d) => d.as_micros() as u64,
            Latency::Geo => {
                let (a, b) = (a as usize, b as usize);
                let base = REGION_MS[self.region[a] as usize][self.region[b] as usize] * 1000.0;
                let mut h = Rng::new(self.seed ^ ((a as u64) << 32 | b as u64));
                let jitter = 1.0 + 0.1 * h.unit();
                (base * jitter) as u64 + self.access_us[a] as u64 + self.access_us[b] as u64
            }
        }
    }

    /// When a message sent from `from` to `to` at `now_us` arrives, or
    /// `None` if it is lost: across a partition, or with probability `loss`
    /// (drawn from `rng` only when `loss > 0`).
    pub fn arrival(
        &self,
        from: u32,
        to: u32,
        now_us: u64,
        loss: f64,
        rng: &mut Rng,
    ) -> Option<u64> {
        if self.group[from as usize] != self.group[to as usize] || (loss > 0.0 && rng.unit() < loss)
        {
            return None;
        }
        Some(now_us + self.delay_us(from, to))
    }

    /// Node `i` goes to group `group_of(i)`; messages between groups are
    /// lost until [`Links::heal`].
    pub fn partition(&mut self, group_of: impl Fn(usize) -> u32) {
        for (i, g) in self.group.iter_mut().enumerate() {
            *g = group_of(i);
        }
    }

    pub fn heal(&mut self) {
        self.group.fill(0);
    }
}

/// The virtual time (µs) at which to tick a state machine whose next
/// deadline is `deadline`: rounded up (a tick before the deadline would do
/// nothing and reschedule itself at the same microsecond forever), and
/// never before `now_us`.
pub(crate) fn tick_time(deadline: Instant, base: Instant, now_us: u64) -> u64 {
    let at = deadline
        .saturating_duration_since(base)
        .as_nanos()
        .div_ceil(1000) as u64;
    at.max(now_us)
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.unit().max(1e-12);
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Events ordered by virtual time (microseconds), then by insertion.
/// Bodies live in reused slots so the heap moves only small keys.
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slots: Vec<Option<E>>,
    free: Vec<usize>,
    seq: u64,
}

impl<E> EventQueue<E> {
    pub fn new() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }

    pub fn push(&mut self, at_us: u64, ev: E) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(ev);
                s
            }
            None => {
                self.slots.push(Some(ev));
                self.slots.len() - 1
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at_us, self.seq, slot)));
    }

    pub fn pop(&mut self) -> Option<(u64, E)> {
        loop {
            let Reverse((at, _, slot)) = self.heap.pop()?;
            if let Some(ev) = self.slots[slot].take() {
                self.free.push(slot);
                return Some((at, ev));
            }
        }
    }

    /// The time of the next event.
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }
}
