//! One peer's share of our request handling while other peers are served
//! too.
//!
//! The fair queue ([`crate::fair`]) makes a light peer wait behind at most
//! one request of each heavy one, but it is work-conserving: whatever the
//! light peers leave, a peer with many large requests in flight takes, and
//! decrypting, copying and sealing its megabytes takes the CPU the light
//! peers' next requests need a moment later. So while two or more peers
//! have requests served, each is held to a rate:
//!
//! * every served request costs its peer its request bytes, its response
//!   bytes and [`REQUEST_COST`] for the fixed work;
//! * each connection has a token bucket of `rate` bytes a second holding at
//!   most an eighth of a second's worth; it may go into debt by as much;
//! * the node counts the peers whose requests it served in the current and
//!   the previous [`WINDOW`]; while two or more did, a connection in debt is
//!   not read until it is out of debt — the peer waits in its own socket
//!   (TCP back-pressure), so its flood costs us nothing while it waits.
//!
//! A peer alone is never held back (it still pays, so it enters
//! contention owing at most an eighth of a second). The rate bounds what a
//! peer gets while others are served; it is not a fair share of a
//! measured capacity: the capacity of a shared machine is not known, and a
//! share computed from what was served lets a flood grow its own share.
//! Only served requests count; gossip, channels and responses to our own
//! requests have their own bounds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::queue::lock;

/// What a request costs on top of its bytes: the frame, the task hops and
/// the queueing around it, in bytes of the same rate.
pub(crate) const REQUEST_COST: u64 = 256;
/// The window in which peers with served requests are counted.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);
/// The longest single pause (a debt is at most an eighth of a second).
const MAX_PAUSE: Duration = Duration::from_millis(125);

/// One connection's token bucket, in bytes.
pub(crate) struct Budget {
    rate: u64,
    tokens: i64,
    burst: i64,
    last: Instant,
}

impl Budget {
    /// A full bucket of `rate` bytes a second; `None` for no limit.
    pub fn new(rate: u64, now: Instant) -> Option<Budget> {
        if rate == 0 {
            return None;
        }
        let burst = i64::try_from(rate / 8).unwrap_or(i64::MAX).max(1);
        Some(Budget {
            rate,
            tokens: burst,
            burst,
            last: now,
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let earned = (elapsed.as_nanos().saturating_mul(u128::from(self.rate)) / 1_000_000_000)
            .min(u128::from(u64::MAX)) as i64;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            self.last = now;
        }
    }

    /// Takes `bytes` (the debt stops at one burst).
    pub fn charge(&mut self, bytes: u64, now: Instant) {
        self.refill(now);
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.tokens = self.tokens.saturating_sub(bytes).max(-self.burst);
    }

    /// How long until the bucket is out of debt; `None` if it is not.
    pub fn debt(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        if self.tokens >= 0 {
            return None;
        }
        let nanos = (self.tokens.unsigned_abs() as u128 * 1_000_000_000) / u128::from(self.rate);
        let wait = Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64);
        Some(wait.clamp(Duration::from_millis(1), MAX_PAUSE))
    }
}

/// One connection's account: its bucket, and the node's count of peers
/// with requests served.
pub(crate) struct Share {
    budget: Mutex<Budget>,
    /// The last window this peer was counted in.
    seen: AtomicU64,
    requesters: Arc<Requesters>,
}

impl Share {
    /// `None` for no limit (`rate` 0).
    pub fn new(rate: u64, requesters: Arc<Requesters>) -> Option<Share> {
        Some(Share {
            budget: Mutex::new(Budget::new(rate, Instant::now())?),
            seen: AtomicU64::new(u64::MAX),
            requesters,
        })
    }

    /// Charges `bytes` of served requests.
    pub fn charge(&self, bytes: u64) {
        let now = Instant::now();
        self.requesters.count(&self.seen, now);
        lock(&self.budget).charge(bytes, now);
    }

    /// How long to stop reading: while other peers are served too, a peer
    /// over its rate waits until it is back within it.
    pub fn over(&self) -> Option<Duration> {
        let now = Instant::now();
        let wait = lock(&self.budget).debt(now)?;
        self.requesters.contended(now).then_some(wait)
    }
}

/// How many peers had requests served recently, node-wide.
pub(crate) struct Requesters {
    epoch: Instant,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    /// The window `current` counts.
    window: u64,
    current: u32,
    previous: u32,
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

    /// Counts the peer whose connection last counted itself in window
    /// `seen` (the lock is taken once per peer per window).
    pub fn count(&self, seen: &AtomicU64, now: Instant) {
        let w = self.window(now);
        if seen.swap(w, Ordering::Relaxed) == w {
            return;
        }
        let mut s = lock(&self.windows);
        s.roll(w);
        s.current = s.current.saturating_add(1);
    }

    /// Two or more peers had requests served in this window or the last.
    pub fn contended(&self, now: Instant) -> bool {
        let w = self.window(now);
        let mut s = lock(&self.windows);
        s.roll(w);
        s.current.max(s.previous) >= 2
    }
}

impl Windows {
    fn roll(&mut self, w: u64) {
        if w == self.window {
            return;
        }
        self.previous = if w == self.window + 1 {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.window = w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_allows_its_burst_then_charges_time() {
        let t = Instant::now();
        // 8 MB/s: a burst of 1 MB.
        let mut b = Budget::new(8_000_000, t).unwrap();
        b.charge(1_000_000, t);
        assert_eq!(b.debt(t), None);
        b.charge(400_000, t);
        // 400 kB of debt at 8 MB/s: 50 ms.
        assert_eq!(b.debt(t), Some(50 * MS));
        assert_eq!(b.debt(t + 20 * MS), Some(30 * MS));
        assert_eq!(b.debt(t + 50 * MS), None);
    }

    #[test]
    fn debt_and_pauses_are_bounded() {
        let t = Instant::now();
        let mut b = Budget::new(8_000_000, t).unwrap();
        b.charge(u64::MAX, t);
        // A debt of at most one burst: an eighth of a second.
        assert_eq!(b.debt(t), Some(MAX_PAUSE));
        // An idle hour refills no more than one burst.
        let later = t + Duration::from_secs(3600);
        assert_eq!(b.debt(later), None);
        b.charge(1_000_001, later);
        assert!(b.debt(later).is_some());
        // A tiny debt still pauses a millisecond (the timer's grain).
        let mut b = Budget::new(8_000_000, t).unwrap();
        b.charge(1_000_001, t);
        assert_eq!(b.debt(t), Some(MS));
        assert!(Budget::new(0, t).is_none());
    }

    #[test]
    fn contention_needs_two_peers_in_a_window_or_the_last() {
        let t = Instant::now();
        let r = Requesters::new(t);
        let (a, b) = (AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX));
        // One peer, however busy, is alone.
        for i in 0..10 {
            r.count(&a, t + i * MS);
        }
        assert!(!r.contended(t + 10 * MS));
        r.count(&b, t + 20 * MS);
        assert!(r.contended(t + 20 * MS));
        // Still contended through the next window, then alone again.
        assert!(r.contended(t + WINDOW + 50 * MS));
        r.count(&a, t + WINDOW + 60 * MS);
        assert!(r.contended(t + WINDOW + 60 * MS));
        assert!(!r.contended(t + 2 * WINDOW + 10 * MS));
        // A long silence forgets both windows.
        r.count(&a, t + 10 * WINDOW);
        r.count(&b, t + 10 * WINDOW);
        assert!(r.contended(t + 10 * WINDOW));
        assert!(!r.contended(t + 12 * WINDOW));
    }
}
