//! Bounded inbound queues between connection tasks and user tasks.
//!
//! [`Inbox`] holds one channel's received messages from every peer; the
//! reader pushes a frame's worth in one lock. It is bounded in bytes and
//! applies the channel's [`Policy`] when full. (Outbound queues are the
//! session's: `peerlink_proto::session`.)

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::Bytes;
use peerlink_proto::PeerId;
use tokio::sync::Notify;

use crate::config::{ChannelConfig, Policy};
use crate::metrics::ChannelCounters;

/// Locks a mutex, ignoring poisoning: our critical sections leave the data
/// consistent even if a panic unwinds through them.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A message received on an application channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Who sent it.
    pub peer: PeerId,
    pub payload: Bytes,
}

struct InboxState {
    queue: VecDeque<Message>,
    bytes: usize,
    waker: Option<Waker>,
    /// The receiver was dropped: further messages are dropped and counted.
    closed: bool,
    /// A `Receiver` was handed out.
    claimed: bool,
}

/// One application channel's received messages, from every peer.
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    pub config: ChannelConfig,
    pub counters: ChannelCounters,
    space: Notify,
}

impl Inbox {
    pub fn new(config: ChannelConfig, counters: ChannelCounters) -> Self {
        Inbox {
            state: Mutex::new(InboxState {
                queue: VecDeque::new(),
                bytes: 0,
                waker: None,
                closed: false,
                claimed: false,
            }),
            config,
            counters,
            space: Notify::new(),
        }
    }

    /// Marks the inbox as having a receiver; false if it already had one.
    pub fn claim(&self) -> bool {
        let mut st = lock(&self.state);
        !std::mem::replace(&mut st.claimed, true)
    }

    /// Moves messages from `items` into the inbox. Returns true when all
    /// went in (or were dropped under [`Policy::Drop`]); false when the
    /// caller must wait for space ([`Policy::Block`]) and retry.
    pub fn push(&self, items: &mut VecDeque<Message>) -> bool {
        let mut st = lock(&self.state);
        let (mut n, mut bytes, mut dropped) = (0u64, 0u64, 0u64);
        while let Some(m) = items.front() {
            let len = m.payload.len();
            if st.closed {
                dropped += 1;
                items.pop_front();
                continue;
            }
            if st.bytes != 0 && st.bytes + len > self.config.max_queued_bytes {
                if self.config.policy == Policy::Drop {
                    dropped += 1;
                    items.pop_front();
                    continue;
                }
                break;
            }
            st.bytes += len;
            n += 1;
            bytes += len as u64;
            if let Some(m) = items.pop_front() {
                st.queue.push_back(m);
            }
        }
        let waker = if n > 0 { st.waker.take() } else { None };
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        self.counters.messages.inc_by(n);
        self.counters.bytes.inc_by(bytes);
        if dropped > 0 {
            self.counters.dropped.inc_by(dropped);
        }
        items.is_empty()
    }

    /// Waits until the inbox may have space.
    pub async fn wait_for_space(&self) {
        let notified = self.space.notified();
        {
            let st = lock(&self.state);
            if st.closed || st.bytes < self.config.max_queued_bytes {
                return;
            }
        }
        notified.await
    }

    fn after_pop(&self, st: &InboxState, before: usize) {
        // Wake blocked readers once the queue is down to half.
        let half = self.config.max_queued_bytes / 2;
        if before > half && st.bytes <= half {
            self.space.notify_waiters();
        }
    }

    pub async fn recv(&self) -> Option<Message> {
        poll_fn(|cx| {
            let mut st = lock(&self.state);
            if let Some(m) = st.queue.pop_front() {
                let before = st.bytes;
                st.bytes -= m.payload.len();
                self.after_pop(&st, before);
                return Poll::Ready(Some(m));
            }
            if st.closed {
                return Poll::Ready(None);
            }
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    pub async fn recv_many(&self, out: &mut Vec<Message>, max: usize) -> usize {
        poll_fn(|cx| {
            let mut st = lock(&self.state);
            if st.queue.is_empty() {
                if st.closed {
                    return Poll::Ready(0);
                }
                st.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let before = st.bytes;
            let n = st.queue.len().min(max.max(1));
            let mut freed = 0;
            for m in st.queue.drain(..n) {
                freed += m.payload.len();
                out.push(m);
            }
            st.bytes -= freed;
            self.after_pop(&st, before);
            Poll::Ready(n)
        })
        .await
    }

    pub fn try_recv(&self) -> Option<Message> {
        let mut st = lock(&self.state);
        let m = st.queue.pop_front()?;
        let before = st.bytes;
        st.bytes -= m.payload.len();
        self.after_pop(&st, before);
        Some(m)
    }

    /// Refuses further messages, waking anyone blocked on space. `discard`
    /// drops what is queued (the receiver is gone); otherwise the receiver
    /// drains it and then sees the end (the node shut down).
    pub fn close(&self, discard: bool) {
        let mut st = lock(&self.state);
        st.closed = true;
        let waker = st.waker.take();
        if discard {
            st.queue.clear();
            st.bytes = 0;
        }
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        self.space.notify_waiters();
    }
}
