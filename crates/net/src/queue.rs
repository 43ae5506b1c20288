//! Bounded queues between user tasks and connection tasks.
//!
//! [`Outbound`] holds one connection's queued messages, per channel; the
//! writer takes everything queued in one lock and packs it into frames.
//! [`Inbox`] holds one channel's received messages from every peer; the
//! reader pushes a frame's worth in one lock. Both are bounded in bytes and
//! apply the channel's [`Policy`] when full.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use peerlink_proto::cipher::TAG_LEN;
use peerlink_proto::control::{GoAwayReason, CONTROL_CHANNEL, REQUEST_CHANNEL};
use peerlink_proto::frame::{self, DEFAULT_FRAME_TARGET, FRAME_HEADER_LEN};
use peerlink_proto::{FrameSealer, PeerId};
use tokio::net::tcp::OwnedWriteHalf;
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
    id: u16,
    /// Frames being filled: each starts with room for the frame header and
    /// holds encoded records up to the frame target.
    segments: VecDeque<BytesMut>,
    /// Payload bytes queued (what the limit applies to).
    bytes: usize,
    /// Messages and payload bytes queued since the writer last took.
    new_messages: u64,
    new_bytes: u64,
    config: ChannelConfig,
    counters: ChannelCounters,
}

#[derive(Default)]
pub(crate) struct OutState {
    /// Index 0 is the control channel, always drained first.
    channels: Vec<OutChannel>,
    /// Emptied segments for reuse, so the hot path does not allocate.
    pool: Vec<BytesMut>,
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

/// The socket's write half and the frame sealer. The writer task holds it
/// while it writes and parks it in the [`Outbound`] while it sleeps, so a
/// sender that finds the connection quiet seals and writes directly: one
/// task hand-off less, which is most of a round trip on a quiet connection.
pub(crate) struct WriteSide {
    pub wr: OwnedWriteHalf,
    pub sealer: FrameSealer,
    /// Bytes a direct write could not finish; the writer sends them first.
    pub backlog: BytesMut,
}

/// One connection's outbound queues. Senders encode their message into the
/// channel's current frame segment under one short lock (the one copy of
/// the payload); the writer takes whole segments, seals them in place and
/// writes them, with no per-message work.
pub(crate) struct Outbound {
    state: Mutex<OutState>,
    wake_writer: Notify,
    space: Notify,
    channels: Arc<Vec<ChannelConfig>>,
    metrics: Arc<Metrics>,
    /// The write side, while the writer task sleeps.
    write_slot: Mutex<Option<WriteSide>>,
    /// Application messages went out by direct write since the writer last
    /// looked (it tells the keepalive machine).
    sent_app: AtomicBool,
    /// When a direct write was last tried, in ns since `created` (0: never).
    last_direct: AtomicU64,
    created: Instant,
}

/// Why a message was not queued.
pub(crate) enum Refused {
    Closed,
    Full,
    /// The channel blocks: wait for space and offer the payload again.
    Wait(Bytes),
}

impl Refused {
    pub fn into_error(self, channel: u16) -> NetError {
        match self {
            Refused::Closed => NetError::ConnectionClosed,
            Refused::Full | Refused::Wait(_) => NetError::QueueFull { channel },
        }
    }
}

/// What the writer took in one go.
#[derive(Default)]
pub(crate) struct Batch {
    /// Unsealed frames, control first.
    pub frames: Vec<BytesMut>,
    /// Whether any application message (not just pings) is among them.
    pub app: bool,
    pub closing: Option<Close>,
}

const POOL: usize = 8;
/// Only messages up to this size are written directly.
const DIRECT_WRITE_MAX: usize = 4 << 10;
/// Direct writes at most this often (ns); denser traffic goes via the writer.
const DIRECT_WRITE_GAP_NS: u64 = 5_000;
/// Control messages are tiny; this much queued means a flood.
const CONTROL_QUEUE: usize = 64 << 10;
/// Forced pushes may exceed a channel's limit by this factor, no more.
const FORCED_OVERRUN: usize = 4;

impl Outbound {
    pub fn new(channels: Arc<Vec<ChannelConfig>>, metrics: Arc<Metrics>) -> Self {
        let control = OutChannel {
            id: CONTROL_CHANNEL,
            segments: VecDeque::new(),
            bytes: 0,
            new_messages: 0,
            new_bytes: 0,
            config: ChannelConfig::new(CONTROL_CHANNEL).max_queued_bytes(CONTROL_QUEUE),
            counters: metrics.outbound(CONTROL_CHANNEL),
        };
        let state = OutState {
            channels: vec![control],
            ..OutState::default()
        };
        Outbound {
            state: Mutex::new(state),
            wake_writer: Notify::new(),
            space: Notify::new(),
            channels,
            metrics,
            write_slot: Mutex::new(None),
            sent_app: AtomicBool::new(false),
            last_direct: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    /// Marks work as pending and gets it written: directly when `small`
    /// and the writer sleeps, else by waking the writer.
    fn wake(&self, mut st: MutexGuard<'_, OutState>, small: bool) {
        let first = !st.pending;
        st.pending = true;
        drop(st);
        // Large messages gain nothing from skipping the writer: one write
        // of them already amortises its system call.
        if first && !(small && self.write_through()) {
            self.wake_writer.notify_one();
        }
    }

    /// If the writer is asleep with its write side parked, seals and writes
    /// what is queued from this task. True when all of it went out; false
    /// when the writer must be woken (busy, closing, or a partial write).
    fn write_through(&self) -> bool {
        // Only for sparse traffic: a sender that comes back within the gap
        // is streaming, and the writer task batches that far better.
        let now = self.created.elapsed().as_nanos() as u64 + 1;
        let last = self.last_direct.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < DIRECT_WRITE_GAP_NS {
            return false;
        }
        self.last_direct.store(now, Ordering::Relaxed);
        let Ok(mut slot) = self.write_slot.try_lock() else {
            return false;
        };
        let Some(ws) = slot.as_mut() else {
            return false;
        };
        if !ws.backlog.is_empty() {
            return false;
        }
        let Some(batch) = self.take_inner(false) else {
            return false;
        };
        if batch.app {
            self.sent_app.store(true, Ordering::Relaxed);
        }
        for mut frame in batch.frames {
            if ws.sealer.seal(&mut frame, 0).is_err() {
                // Nonce space exhausted (2^64 frames): only a new connection helps.
                drop(slot);
                self.close(Close {
                    reason: GoAwayReason::ProtocolError,
                    flush: false,
                });
                return true;
            }
            let written = if ws.backlog.is_empty() {
                ws.wr.try_write(&frame).unwrap_or(0)
            } else {
                0
            };
            // What did not fit (or failed) goes to the writer, in order;
            // a real socket error resurfaces there and ends the connection.
            if let Some(rest) = frame.get(written..).filter(|r| !r.is_empty()) {
                ws.backlog.extend_from_slice(rest);
            }
            self.recycle(frame);
        }
        ws.backlog.is_empty()
    }

    /// The writer task parks its write side here before it sleeps...
    pub fn park_write_side(&self, ws: WriteSide) {
        *lock(&self.write_slot) = Some(ws);
    }

    /// ...and takes it back when it wakes.
    pub fn unpark_write_side(&self) -> Option<WriteSide> {
        lock(&self.write_slot).take()
    }

    /// Whether direct writes sent application messages since last asked.
    pub fn take_sent_app(&self) -> bool {
        self.sent_app.swap(false, Ordering::Relaxed)
    }

    /// Queues a control message; false when the control queue is over its
    /// hard cap (a peer making us answer faster than it reads).
    #[must_use]
    pub fn push_control(&self, msg: Bytes) -> bool {
        self.enqueue(CONTROL_CHANNEL, msg, true, false).is_ok()
    }

    /// Queues `payload` on `channel`. `force` ignores the limit (for
    /// responses, which are bounded by the request queue instead).
    pub fn try_push(&self, channel: u16, payload: Bytes, force: bool) -> Result<(), NetError> {
        self.enqueue(channel, payload, force, false)
            .map_err(|e| e.into_error(channel))
    }

    /// The queueing core: on a full blocking channel with `wait`, hands the
    /// payload back so the caller can wait for space and retry.
    fn enqueue(
        &self,
        channel: u16,
        payload: Bytes,
        force: bool,
        wait: bool,
    ) -> Result<(), Refused> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        // A graceful close still answers requests that crossed our
        // go-away (see `conn::writer`); nothing else new goes out.
        let answering = channel == REQUEST_CHANNEL && st.closing.is_some_and(|c| c.flush);
        if st.closing.is_some() && channel != CONTROL_CHANNEL && !answering {
            return Err(Refused::Closed);
        }
        let idx = match st.channels.iter().position(|c| c.id == channel) {
            Some(i) => i,
            None => {
                st.channels.push(OutChannel {
                    id: channel,
                    segments: VecDeque::new(),
                    bytes: 0,
                    new_messages: 0,
                    new_bytes: 0,
                    config: channel_config(&self.channels, channel),
                    counters: self.metrics.outbound(channel),
                });
                st.channels.len() - 1
            }
        };
        let c = &mut st.channels[idx];
        let len = payload.len();
        // Forced messages (pongs, responses) may overrun the limit, but only
        // so far: past it the peer is not reading what it asks for.
        if force && c.bytes > FORCED_OVERRUN * c.config.max_queued_bytes {
            return Err(Refused::Full);
        }
        // An empty queue always takes one message, however large.
        if !(force || c.bytes == 0 || c.bytes + len <= c.config.max_queued_bytes) {
            if c.config.policy == Policy::Drop {
                c.counters.dropped.inc();
                return Err(Refused::Full);
            }
            if !wait {
                return Err(Refused::Full);
            }
            st.senders_waiting = true;
            return Err(Refused::Wait(payload));
        }
        let record = frame::record_len(channel, len);
        let fits = c.segments.back().is_some_and(|s| {
            s.len() == FRAME_HEADER_LEN
                || s.len() + record <= FRAME_HEADER_LEN + DEFAULT_FRAME_TARGET
        });
        if !fits {
            let mut seg = match st.pool.pop() {
                Some(seg) if record <= DEFAULT_FRAME_TARGET => seg,
                _ => BytesMut::with_capacity(
                    FRAME_HEADER_LEN + record.max(DEFAULT_FRAME_TARGET) + TAG_LEN,
                ),
            };
            frame::begin_frame(&mut seg);
            c.segments.push_back(seg);
        }
        if let Some(seg) = c.segments.back_mut() {
            frame::put_record(seg, channel, &payload);
        }
        c.bytes += len;
        c.new_messages += 1;
        c.new_bytes += len as u64;
        self.wake(guard, len <= DIRECT_WRITE_MAX);
        Ok(())
    }

    /// Queues `payload` on `channel` if there is room now; otherwise hands
    /// it back (blocking channel) or fails. The synchronous fast path of
    /// sending, so no future is built per message.
    pub fn push_now(&self, channel: u16, payload: Bytes) -> Result<(), Refused> {
        self.enqueue(channel, payload, false, true)
    }

    /// Queues `payload` on `channel`, waiting for space if the channel blocks.
    pub async fn push(&self, channel: u16, payload: Bytes) -> Result<(), NetError> {
        match self.push_now(channel, payload) {
            Ok(()) => Ok(()),
            Err(Refused::Wait(payload)) => self.push_slow(channel, payload).await,
            Err(e) => Err(e.into_error(channel)),
        }
    }

    /// Waits for space on a full blocking channel, then queues.
    pub async fn push_slow(&self, channel: u16, mut payload: Bytes) -> Result<(), NetError> {
        loop {
            // Register for a wake-up before re-checking, so none is lost.
            let space = self.space.notified();
            match self.enqueue(channel, payload, false, true) {
                Ok(()) => return Ok(()),
                Err(Refused::Wait(back)) => payload = back,
                Err(e) => return Err(e.into_error(channel)),
            }
            space.await;
        }
    }

    /// Takes every queued frame (control first), or `None` when nothing is.
    pub fn take(&self) -> Option<Batch> {
        self.take_inner(true)
    }

    /// `writer`: the writer task, which also handles closing; a direct
    /// write leaves a closing connection to it.
    fn take_inner(&self, writer: bool) -> Option<Batch> {
        let mut st = lock(&self.state);
        if !writer && st.closing.is_some() {
            return None;
        }
        if !st.pending {
            return st.closing.map(|c| Batch {
                closing: Some(c),
                ..Batch::default()
            });
        }
        st.pending = false;
        let mut batch = Batch {
            frames: Vec::new(),
            app: false,
            closing: st.closing,
        };
        let abort = st.closing.is_some_and(|c| !c.flush);
        for c in &mut st.channels {
            if abort && c.id != CONTROL_CHANNEL {
                // Aborting: queued application data is dropped, not sent.
                c.segments.clear();
            }
            batch.frames.extend(c.segments.drain(..));
            c.bytes = 0;
            batch.app |= c.id != CONTROL_CHANNEL && c.new_messages > 0;
            if c.new_messages > 0 && !abort {
                c.counters.messages.inc_by(c.new_messages);
                c.counters.bytes.inc_by(c.new_bytes);
            }
            c.new_messages = 0;
            c.new_bytes = 0;
        }
        let wake_senders = std::mem::take(&mut st.senders_waiting);
        drop(st);
        if wake_senders {
            self.space.notify_waiters();
        }
        Some(batch)
    }

    /// Returns a written frame's buffer for reuse.
    pub fn recycle(&self, mut seg: BytesMut) {
        seg.clear();
        if seg.capacity() <= 2 * DEFAULT_FRAME_TARGET {
            let mut st = lock(&self.state);
            if st.pool.len() < POOL {
                st.pool.push(seg);
            }
        }
    }

    /// Frees the reusable buffers (the writer is about to go idle).
    pub fn trim(&self) {
        lock(&self.state).pool = Vec::new();
    }

    /// Whether [`Outbound::close`] was called: nothing but control records
    /// goes out any more.
    pub fn is_closing(&self) -> bool {
        lock(&self.state).closing.is_some()
    }

    /// Starts closing: the writer sends a go-away (after the queue if
    /// `flush`) and shuts the socket down. Later pushes fail, except, when
    /// `flush`, request/response answers while the connection drains.
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

    /// Payload bytes queued on `channel`.
    pub fn queued_bytes(&self, channel: u16) -> usize {
        lock(&self.state)
            .channels
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
