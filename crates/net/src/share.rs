//! One peer's share of our request handling while other peers are served
//! too.
//!
//! The fair queue ([`crate::fair`]) makes a light peer wait behind at most
//! one request of each heavy one, but it is work-conserving: whatever the
//! light peers leave, a peer with many requests in flight takes, and
//! decrypting, copying and sealing its traffic takes the CPU the light
//! peers' next requests need a moment later (on a shared machine, so does
//! the flooder's own process, kept busy by our answers). So while two or
//! more peers have requests served, each is held to a rate:
//!
//! * every served request costs its peer its request bytes, its response
//!   bytes and [`REQUEST_COST`] for the fixed work;
//! * the node tallies, per [`WINDOW`], how many peers had requests served
//!   and what they cost in all;
//! * a peer's rate is the larger of the node's floor (`peer_serve_rate`)
//!   and 1.5× what the other peers cost on average in the last window:
//!   honest peers of similar weight never meet it, and a peer that asks
//!   for more than that waits for them (at 1×, honest peers of the
//!   same weight pause each other by chance: measured, their p99 rose
//!   fourfold without any flood);
//! * each connection has a token bucket at that rate holding a quarter
//!   window's worth, and may go into debt by as much; a connection in
//!   debt is not read until it is out of it — the peer waits in its own
//!   socket (TCP back-pressure), so its flood costs us nothing meanwhile.
//!
//! A peer alone is never held back (it still pays, so it enters
//! contention owing at most a quarter window). The floor is what a heavy
//! peer keeps when everyone else asks for little. Only served requests
//! count; gossip, channels and responses to our own requests have their
//! own bounds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::queue::lock;

/// What a request costs on top of its bytes: the frame, the task hops and
/// the queueing around it, in bytes of the same rate.
pub(crate) const REQUEST_COST: u64 = 1024;
/// The window in which peers with served requests are tallied.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);
/// A peer may cost this many times the others' average (a ratio).
const SLACK: (u64, u64) = (3, 2);

/// A token bucket, in bytes, at a rate that can change.
pub(crate) struct Budget {
    rate: u64,
    tokens: i64,
    last: Instant,
}

impl Budget {
    /// A full bucket at `rate` bytes a second (at least 1).
    pub fn new(rate: u64, now: Instant) -> Budget {
        let mut b = Budget {
            rate: rate.max(1),
            tokens: 0,
            last: now,
        };
        b.tokens = b.burst();
        b
    }

    /// A quarter window at the rate.
    fn burst(&self) -> i64 {
        let b = u128::from(self.rate) * WINDOW.as_nanos() / 4 / 1_000_000_000;
        i64::try_from(b).unwrap_or(i64::MAX).max(1)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let earned = (elapsed.as_nanos().saturating_mul(u128::from(self.rate)) / 1_000_000_000)
            .min(i64::MAX as u128) as i64;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.burst());
            self.last = now;
        }
    }

    /// From now on, `rate` bytes a second (what was earned at the old rate
    /// is kept).
    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        self.refill(now);
        self.rate = rate.max(1);
        let burst = self.burst();
        self.tokens = self.tokens.clamp(-burst, burst);
    }

    /// Takes `bytes` (the debt stops at one burst).
    pub fn charge(&mut self, bytes: u64, now: Instant) {
        self.refill(now);
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.tokens = self.tokens.saturating_sub(bytes).max(-self.burst());
    }

    /// How long until the bucket is out of debt; `None` if it is not.
    pub fn debt(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        if self.tokens >= 0 {
            return None;
        }
        let nanos =
            (u128::from(self.tokens.unsigned_abs()) * 1_000_000_000) / u128::from(self.rate);
        let wait = Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64);
        Some(wait.clamp(Duration::from_millis(1), WINDOW))
    }
}

/// One window's tally: peers with requests served, and what they cost.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Tally {
    peers: u64,
    bytes: u64,
}

/// The current and the previous window's tallies of a node or a peer.
#[derive(Default)]
struct Windows {
    window: u64,
    current: Tally,
    previous: Tally,
}

impl Windows {
    /// Moves on to window `w`; true if it is a new one. Never back: a
    /// thread that read the clock just before another is counted in the
    /// newer window rather than wiping it.
    fn roll(&mut self, w: u64) -> bool {
        if w <= self.window {
            return false;
        }
        self.previous = if w == self.window + 1 {
            self.current
        } else {
            Tally::default()
        };
        self.current = Tally::default();
        self.window = w;
        true
    }
}

/// The node's tallies.
pub(crate) struct Requesters {
    epoch: Instant,
    windows: Mutex<Windows>,
}

impl Requesters {
    pub fn new(now: Instant) -> Requesters {
        Requesters {
            epoch: now,
            windows: Mutex::new(Windows::default()),
        }
    }

    fn window(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / WINDOW.as_nanos()) as u64
    }

    /// Window `w`'s tally so far and the one before it.
    fn tallies(&self, w: u64) -> (Tally, Tally) {
        let mut n = lock(&self.windows);
        n.roll(w);
        (n.current, n.previous)
    }
}

/// One connection's account.
pub(crate) struct Share {
    floor: u64,
    requesters: Arc<Requesters>,
    account: Mutex<Account>,
    /// Set by the first charge: a connection that never had a request
    /// served (streams only) is never looked at.
    charged: AtomicBool,
}

struct Account {
    budget: Budget,
    /// What this peer cost (`peers` is 1 in a window it was served in).
    mine: Windows,
    /// The window the budget's rate was set for.
    rated: u64,
}

impl Share {
    /// `None` for no limit (`floor` 0).
    pub fn new(floor: u64, requesters: Arc<Requesters>) -> Option<Share> {
        if floor == 0 {
            return None;
        }
        let now = Instant::now();
        let w = requesters.window(now);
        let mut mine = Windows::default();
        mine.roll(w);
        Some(Share {
            floor,
            account: Mutex::new(Account {
                budget: Budget::new(floor, now),
                mine,
                rated: w,
            }),
            requesters,
            charged: AtomicBool::new(false),
        })
    }

    /// Charges `bytes` of served requests.
    pub fn charge(&self, bytes: u64) {
        self.charge_at(bytes, Instant::now())
    }

    /// How long to stop reading: while other peers are served too, a peer
    /// over its rate waits until it is back within it.
    pub fn over(&self) -> Option<Duration> {
        self.over_at(Instant::now())
    }

    fn charge_at(&self, bytes: u64, now: Instant) {
        self.charged.store(true, Ordering::Relaxed);
        let w = self.requesters.window(now);
        let mut a = lock(&self.account);
        a.mine.roll(w);
        let first = a.mine.current.peers == 0;
        a.mine.current.peers = 1;
        a.mine.current.bytes = a.mine.current.bytes.saturating_add(bytes);
        a.budget.charge(bytes, now);
        drop(a);
        let mut n = lock(&self.requesters.windows);
        n.roll(w);
        n.current.peers += u64::from(first);
        n.current.bytes = n.current.bytes.saturating_add(bytes);
    }

    fn over_at(&self, now: Instant) -> Option<Duration> {
        if !self.charged.load(Ordering::Relaxed) {
            return None;
        }
        let w = self.requesters.window(now);
        let mut a = lock(&self.account);
        a.mine.roll(w);
        if a.rated != w {
            a.rated = w;
            // The others' average over the window that just ended.
            let previous = self.requesters.tallies(w).1;
            let others = Tally {
                peers: previous.peers.saturating_sub(a.mine.previous.peers),
                bytes: previous.bytes.saturating_sub(a.mine.previous.bytes),
            };
            let rate = self.rate(others);
            a.budget.set_rate(rate, now);
        }
        // The node's tallies are looked at only when this peer is in debt.
        let wait = a.budget.debt(now)?;
        drop(a);
        let (current, previous) = self.requesters.tallies(w);
        (current.peers.max(previous.peers) >= 2).then_some(wait)
    }

    /// The floor, or 1.5× the others' average rate.
    fn rate(&self, others: Tally) -> u64 {
        let per_window = others.bytes / others.peers.max(1);
        let per_sec = u128::from(per_window) * 1_000_000_000 / WINDOW.as_nanos();
        let relative =
            u64::try_from(per_sec * u128::from(SLACK.0) / u128::from(SLACK.1)).unwrap_or(u64::MAX);
        self.floor.max(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_allows_a_quarter_window_then_charges_time() {
        let t = Instant::now();
        // 8 MB/s: a burst of 200 kB.
        let mut b = Budget::new(8_000_000, t);
        b.charge(200_000, t);
        assert_eq!(b.debt(t), None);
        b.charge(80_000, t);
        // 80 kB of debt at 8 MB/s: 10 ms.
        assert_eq!(b.debt(t), Some(10 * MS));
        assert_eq!(b.debt(t + 4 * MS), Some(6 * MS));
        assert_eq!(b.debt(t + 10 * MS), None);
        // Half the rate from now: what it owes takes twice as long.
        b.charge(80_000, t + 10 * MS);
        b.set_rate(4_000_000, t + 10 * MS);
        assert_eq!(b.debt(t + 10 * MS), Some(20 * MS));
    }

    #[test]
    fn debt_and_pauses_are_bounded() {
        let t = Instant::now();
        let mut b = Budget::new(8_000_000, t);
        b.charge(u64::MAX, t);
        // A debt of at most one burst: a quarter window.
        assert_eq!(b.debt(t), Some(WINDOW / 4));
        // An idle hour refills no more than one burst.
        let later = t + Duration::from_secs(3600);
        assert_eq!(b.debt(later), None);
        b.charge(200_001, later);
        // A tiny debt still pauses a millisecond (the timer's grain).
        assert_eq!(b.debt(later), Some(MS));
        // A rate of 0 is 1 byte a second, not a division by zero, and the
        // longest pause is a window.
        let mut b = Budget::new(0, t);
        b.charge(10, t);
        assert_eq!(b.debt(t), Some(WINDOW));
    }

    fn share(r: &Arc<Requesters>, floor: u64) -> Share {
        Share::new(floor, r.clone()).unwrap()
    }

    #[test]
    fn a_late_clock_reading_does_not_wipe_the_window() {
        let t = Instant::now();
        let r = Arc::new(Requesters::new(t));
        let (a, b) = (share(&r, 1_000_000), share(&r, 1_000_000));
        a.charge_at(10, t + WINDOW);
        // A charge stamped just before the window began, locked after.
        b.charge_at(10, t + WINDOW - MS);
        assert_eq!(
            r.tallies(1).0,
            Tally {
                peers: 2,
                bytes: 20
            }
        );
    }

    #[test]
    fn alone_a_peer_is_never_held_back() {
        let t = Instant::now();
        let r = Arc::new(Requesters::new(t));
        let a = share(&r, 1_000_000);
        for i in 0..100 {
            a.charge_at(1 << 20, t + i * MS);
            assert_eq!(a.over_at(t + i * MS), None);
        }
        assert!(Share::new(0, r).is_none());
    }

    #[test]
    fn with_others_a_peer_gets_the_floor_or_half_again_their_average() {
        let t = Instant::now();
        let r = Arc::new(Requesters::new(t));
        // Floor 1 MB/s: 100 kB a window, a burst of 25 kB.
        let (heavy, light) = (share(&r, 1_000_000), share(&r, 1_000_000));
        light.charge_at(100, t);
        heavy.charge_at(30_000, t);
        assert_eq!(heavy.over_at(t), Some(5 * MS));
        assert_eq!(light.over_at(t), None);
        // Next window: the light peer cost 100 B, so the heavy one gets the
        // floor.
        let w1 = t + WINDOW;
        assert_eq!(heavy.over_at(w1), None);
        heavy.charge_at(50_000, w1);
        assert_eq!(heavy.over_at(w1), Some(25 * MS));
        // Others that cost 1 MB in a window (10 MB/s on average): the
        // heavy one may have 15 MB/s.
        let w2 = t + 2 * WINDOW;
        let (b, c) = (share(&r, 1_000_000), share(&r, 1_000_000));
        b.charge_at(1_500_000, w1);
        c.charge_at(500_000, w1);
        assert_eq!(heavy.over_at(w2), None);
        // It kept the 25 kB it had; 75 kB beyond that at 15 MB/s is 5 ms.
        heavy.charge_at(25_000 + 75_000, w2);
        assert_eq!(heavy.over_at(w2), Some(5 * MS));
        // A long silence forgets every tally: alone again.
        let later = t + 50 * WINDOW;
        heavy.charge_at(10_000_000, later);
        assert_eq!(heavy.over_at(later), None);
    }
}
