//! Bounded queues between user tasks and connection tasks.
//!
//! [`Outbound`] holds one connection's queued messages, per channel; the
//! writer takes everything queued in one lock and packs it into frames.
//! [`Inbox`] holds one channel's received messages from every peer; the
//! reader pushes a frame's worth in one lock. Both are bounded in bytes and
//! apply the channel's [`Policy`] when full.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::Bytes;
use peerlink_proto::control::{GoAwayReason, CONTROL_CHANNEL};
use peerlink_proto::PeerId;
use tokio::sync::Notify;

use crate::config::{channel_config, ChannelConfig, Policy};
use crate::metrics::{ChannelCounters, Metrics};
use crate::NetError;

/// Locks a mutex, ignoring poisoning: our critical sections leave the data
/// consistent even if a panic unwinds through them.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct OutChannel {
    pub id: u16,
    pub queue: VecDeque<Bytes>,
    bytes: usize,
    config: ChannelConfig,
    pub counters: ChannelCounters,
}

#[derive(Default)]
pub(crate) struct OutState {
    control: Vec<Bytes>,
    pub channels: Vec<OutChannel>,
    pending: bool,
    senders_waiting: bool,
    closing: Option<Close>,
}

/// How a connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Close {
    pub reason: GoAwayReason,
    /// Send what is queued first (graceful) or not (protocol error).
    pub flush: bool,
}

/// One connection's outbound queues.
pub(crate) struct Outbound {
    state: Mutex<OutState>,
    wake_writer: Notify,
    space: Notify,
    channels: Arc<Vec<ChannelConfig>>,
    metrics: Arc<Metrics>,
}

/// What the writer took in one go.
#[derive(Default)]
pub(crate) struct Batch {
    pub control: Vec<Bytes>,
    /// (channel index in `OutState::channels`, its messages)
    pub channels: Vec<(usize, VecDeque<Bytes>)>,
    pub closing: Option<Close>,
}

impl Outbound {
    pub fn new(channels: Arc<Vec<ChannelConfig>>, metrics: Arc<Metrics>) -> Self {
        Outbound {
            state: Mutex::default(),
            wake_writer: Notify::new(),
            space: Notify::new(),
            channels,
            metrics,
        }
    }

    fn wake(&self, mut st: MutexGuard<'_, OutState>) {
        let wake = !st.pending;
        st.pending = true;
        drop(st);
        if wake {
            self.wake_writer.notify_one();
        }
    }

    /// Queues a control message (never dropped, never blocks).
    pub fn push_control(&self, msg: Bytes) {
        let mut st = lock(&self.state);
        st.control.push(msg);
        self.wake(st);
    }

    /// Queues `payload` on `channel`. `force` ignores the limit (for
    /// responses, which are bounded by the request queue instead).
    pub fn try_push(&self, channel: u16, payload: Bytes, force: bool) -> Result<(), NetError> {
        self.enqueue(channel, payload, force, false)
            .map_err(|(e, _)| e)
    }

    /// The queueing core: on a full blocking channel with `wait`, hands the
    /// payload back so the caller can wait for space and retry.
    fn enqueue(
        &self,
        channel: u16,
        payload: Bytes,
        force: bool,
        wait: bool,
    ) -> Result<(), (NetError, Option<Bytes>)> {
        let mut st = lock(&self.state);
        if st.closing.is_some() {
            return Err((NetError::ConnectionClosed, None));
        }
        let idx = match st.channels.iter().position(|c| c.id == channel) {
            Some(i) => i,
            None => {
                let config = channel_config(&self.channels, channel);
                let counters = self.metrics.outbound(channel);
                st.channels.push(OutChannel {
                    id: channel,
                    queue: VecDeque::new(),
                    bytes: 0,
                    config,
                    counters,
                });
                st.channels.len() - 1
            }
        };
        let c = &mut st.channels[idx];
        let len = payload.len();
        // An empty queue always takes one message, however large.
        if force || c.bytes == 0 || c.bytes + len <= c.config.max_queued_bytes {
            c.bytes += len;
            c.queue.push_back(payload);
            self.wake(st);
            return Ok(());
        }
        if c.config.policy == Policy::Drop {
            c.counters.dropped.inc();
            return Err((NetError::QueueFull { channel }, None));
        }
        if !wait {
            return Err((NetError::QueueFull { channel }, None));
        }
        st.senders_waiting = true;
        Err((NetError::QueueFull { channel }, Some(payload)))
    }

    /// Queues `payload` on `channel`, waiting for space if the channel blocks.
    pub async fn push(&self, channel: u16, payload: Bytes) -> Result<(), NetError> {
        let mut payload = payload;
        loop {
            let space = self.space.notified();
            match self.enqueue(channel, payload, false, true) {
                Ok(()) => return Ok(()),
                Err((_, Some(back))) => payload = back,
                Err((e, None)) => return Err(e),
            }
            space.await;
        }
    }

    /// Takes everything queued, or `None` when nothing is. `spare` supplies
    /// empty deques to swap in so allocations are reused.
    pub fn take(&self, spare: &mut Vec<VecDeque<Bytes>>) -> Option<Batch> {
        let mut st = lock(&self.state);
        if !st.pending {
            return st.closing.map(|c| Batch {
                closing: Some(c),
                ..Batch::default()
            });
        }
        st.pending = false;
        let mut batch = Batch {
            control: std::mem::take(&mut st.control),
            channels: Vec::new(),
            closing: st.closing,
        };
        if st.closing.is_some_and(|c| !c.flush) {
            // Aborting: queued application data is dropped, not sent.
            for c in &mut st.channels {
                c.queue.clear();
                c.bytes = 0;
            }
        }
        for (i, c) in st.channels.iter_mut().enumerate() {
            if !c.queue.is_empty() {
                let mut q = spare.pop().unwrap_or_default();
                std::mem::swap(&mut q, &mut c.queue);
                c.bytes = 0;
                batch.channels.push((i, q));
            }
        }
        let wake_senders = std::mem::take(&mut st.senders_waiting);
        drop(st);
        if wake_senders {
            self.space.notify_waiters();
        }
        Some(batch)
    }

    /// Counters of channel index `i` (as given in a [`Batch`]).
    pub fn counters(&self, i: usize) -> Option<(u16, ChannelCounters)> {
        lock(&self.state)
            .channels
            .get(i)
            .map(|c| (c.id, c.counters.clone()))
    }

    /// Starts closing: the writer sends a go-away (after the queue if
    /// `flush`) and shuts the socket down. Later pushes fail.
    pub fn close(&self, close: Close) {
        let mut st = lock(&self.state);
        if st.closing.is_none() || !close.flush {
            st.closing = Some(close);
        }
        st.pending = true;
        drop(st);
        self.wake_writer.notify_one();
        self.space.notify_waiters();
    }

    pub async fn wait_for_work(&self) {
        self.wake_writer.notified().await
    }

    /// Bytes queued on `channel`.
    pub fn queued_bytes(&self, channel: u16) -> usize {
        let st = lock(&self.state);
        if channel == CONTROL_CHANNEL {
            return st.control.iter().map(Bytes::len).sum();
        }
        st.channels
            .iter()
            .find(|c| c.id == channel)
            .map_or(0, |c| c.bytes)
    }
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
