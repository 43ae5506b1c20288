//! Requests waiting for a handler, taken in turn by peer.
//!
//! A served protocol's queue holds at most `request_queue` requests, and
//! one peer at most an eighth of that (at least one): a peer with many
//! requests in flight cannot take the whole queue, and is answered
//! "overloaded" for the excess while others still get in. The handler
//! takes requests round-robin across peers — one from each peer that has
//! any, in turn — so a request from a peer with one outstanding waits
//! behind at most one request of every other peer, however many a heavy
//! peer has queued. Pushing, taking and closing are O(1).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use peerlink_proto::PeerId;
use tokio::sync::Notify;

use crate::queue::lock;

/// Why a push was refused; the item comes back.
pub(crate) enum Refused<T> {
    /// The queue, or the peer's share of it, is full.
    Full(T),
    /// The handler is gone.
    Closed(T),
}

pub(crate) struct FairQueue<T> {
    state: Mutex<State<T>>,
    /// One permit per push; a single receiver waits on it.
    ready: Notify,
    max_total: usize,
    max_per_peer: usize,
}

struct State<T> {
    queues: HashMap<PeerId, VecDeque<T>>,
    /// Peers with something queued, each once, in serving order.
    turn: VecDeque<PeerId>,
    len: usize,
    closed: bool,
}

impl<T> FairQueue<T> {
    /// Holds `max_total` items, an eighth of them (at least one) per peer.
    pub fn new(max_total: usize) -> Self {
        let max_total = max_total.max(1);
        FairQueue {
            state: Mutex::new(State {
                queues: HashMap::new(),
                turn: VecDeque::new(),
                len: 0,
                closed: false,
            }),
            ready: Notify::new(),
            max_total,
            max_per_peer: (max_total / 8).max(1),
        }
    }

    pub fn push(&self, peer: PeerId, item: T) -> Result<(), Refused<T>> {
        let mut s = lock(&self.state);
        if s.closed {
            return Err(Refused::Closed(item));
        }
        if s.len >= self.max_total {
            return Err(Refused::Full(item));
        }
        let q = s.queues.entry(peer).or_default();
        if q.len() >= self.max_per_peer {
            return Err(Refused::Full(item));
        }
        let first = q.is_empty();
        q.push_back(item);
        if first {
            s.turn.push_back(peer);
        }
        s.len += 1;
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// The next item; `Err` once closed and empty.
    fn try_pop(&self) -> Result<Option<T>, ()> {
        let mut s = lock(&self.state);
        while let Some(peer) = s.turn.pop_front() {
            let Some(q) = s.queues.get_mut(&peer) else {
                continue;
            };
            let item = q.pop_front();
            if q.is_empty() {
                s.queues.remove(&peer);
            } else {
                s.turn.push_back(peer);
            }
            if let Some(item) = item {
                s.len -= 1;
                return Ok(Some(item));
            }
        }
        if s.closed {
            Err(())
        } else {
            Ok(None)
        }
    }

    /// The next item, in turn by peer; `None` once closed and empty.
    /// Takes from the task's cooperative budget as a channel would, so a
    /// handler kept busy by a flood still lets its worker run other tasks.
    /// The budget is taken before an item is, so a `recv` dropped while it
    /// yields loses nothing.
    pub async fn recv(&self) -> Option<T> {
        tokio::task::coop::consume_budget().await;
        loop {
            match self.try_pop() {
                Ok(Some(item)) => return Some(item),
                Ok(None) => self.ready.notified().await,
                Err(()) => return None,
            }
        }
    }

    /// No more pushes; what is queued can still be taken.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_one();
    }

    /// Closes and hands back what was queued (the caller drops it outside
    /// the lock).
    pub fn close_and_drain(&self) -> Vec<T> {
        let mut s = lock(&self.state);
        s.closed = true;
        s.turn.clear();
        s.len = 0;
        let queues = std::mem::take(&mut s.queues);
        drop(s);
        queues.into_values().flatten().collect()
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.state).len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8) -> PeerId {
        PeerId::unverified([i; 32])
    }

    fn pop(q: &FairQueue<(u8, u32)>) -> Option<(u8, u32)> {
        q.try_pop().ok().flatten()
    }

    #[test]
    fn a_light_peer_waits_behind_one_request_of_a_heavy_one() {
        let q = FairQueue::new(64);
        for i in 0..8 {
            assert!(q.push(peer(1), (1, i)).is_ok());
        }
        // The heavy peer's share is an eighth of the queue.
        assert!(matches!(q.push(peer(1), (1, 8)), Err(Refused::Full(_))));
        assert!(q.push(peer(2), (2, 0)).is_ok());
        assert!(q.push(peer(3), (3, 0)).is_ok());
        assert_eq!(pop(&q), Some((1, 0)));
        assert_eq!(pop(&q), Some((2, 0)));
        assert_eq!(pop(&q), Some((3, 0)));
        assert_eq!(pop(&q), Some((1, 1)));
        // A newcomer joins the round behind those already waiting.
        assert!(q.push(peer(2), (2, 1)).is_ok());
        assert_eq!(pop(&q), Some((1, 2)));
        assert_eq!(pop(&q), Some((2, 1)));
        assert_eq!(pop(&q), Some((1, 3)));
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn the_total_is_bounded_whatever_the_number_of_peers() {
        let q = FairQueue::new(16);
        let mut taken = 0;
        for i in 0..=255u8 {
            if q.push(peer(i), (i, 0)).is_ok() {
                taken += 1;
            }
        }
        assert_eq!(taken, 16);
        assert_eq!(q.len(), 16);
        let drained = q.close_and_drain();
        assert_eq!(drained.len(), 16);
        assert!(matches!(q.push(peer(1), (1, 0)), Err(Refused::Closed(_))));
        assert_eq!(q.try_pop(), Err(()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_handler_kept_busy_still_lets_other_tasks_run() {
        let q = std::sync::Arc::new(FairQueue::new(4096));
        for i in 0..1000 {
            assert!(q.push(peer((i % 200) as u8), (0, i)).is_ok());
        }
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let other = {
            let ran = ran.clone();
            tokio::spawn(async move { ran.store(true, std::sync::atomic::Ordering::SeqCst) })
        };
        let mut taken = 0;
        while !ran.load(std::sync::atomic::Ordering::SeqCst) {
            q.recv().await.unwrap();
            taken += 1;
            assert!(taken < 1000, "recv never yielded");
        }
        other.await.unwrap();
    }

    #[tokio::test]
    async fn recv_wakes_for_a_push_and_ends_when_closed() {
        let q = std::sync::Arc::new(FairQueue::new(4));
        let rx = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(x) = q.recv().await {
                    got.push(x);
                }
                got
            })
        };
        tokio::task::yield_now().await;
        assert!(q.push(peer(1), (1, 0)).is_ok());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(q.push(peer(2), (2, 0)).is_ok());
        q.close();
        assert_eq!(rx.await.unwrap(), vec![(1, 0), (2, 0)]);
    }
}
