//! A connection's outbound queues: one per channel, bounded in payload
//! bytes, each holding plaintext frames being filled with records.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::cipher::TAG_LEN;
use crate::control::CONTROL_CHANNEL;
use crate::frame::{self, DEFAULT_FRAME_TARGET, FRAME_HEADER_LEN};

use super::{ChannelConfig, Policy, Refused};

/// Control messages are tiny; this much queued means a flood.
pub const CONTROL_QUEUE: usize = 64 << 10;
/// Forced pushes may exceed a channel's limit by this factor, no more.
pub const FORCED_OVERRUN: usize = 4;
/// Emptied frame buffers kept for reuse, so the hot path does not allocate.
const POOL: usize = 8;

struct OutChannel {
    config: ChannelConfig,
    /// Frames being filled: each starts with room for the frame header and
    /// holds encoded records up to the frame target.
    segments: VecDeque<BytesMut>,
    /// Payload bytes queued (what the limit applies to).
    bytes: usize,
    /// Messages and payload bytes queued since the last take.
    new_messages: u64,
    new_bytes: u64,
}

/// Per-channel queues; index 0 is the control channel, always taken first.
pub(super) struct OutQueues {
    channels: Vec<OutChannel>,
    pool: Vec<BytesMut>,
    /// Something was queued since the last take.
    pub pending: bool,
    /// A push was refused for lack of space since the last take.
    pub blocked: bool,
}

impl OutQueues {
    pub fn new() -> Self {
        let control = ChannelConfig::new(CONTROL_CHANNEL).max_queued_bytes(CONTROL_QUEUE);
        OutQueues {
            channels: vec![OutChannel::new(control)],
            pool: Vec::new(),
            pending: false,
            blocked: false,
        }
    }

    /// Appends `payload` as a record on `channel` (configured by `config`
    /// the first time it is used). `force` may overrun the limit up to
    /// [`FORCED_OVERRUN`] times.
    pub fn push(
        &mut self,
        channel: u16,
        payload: &[u8],
        force: bool,
        config: impl FnOnce() -> ChannelConfig,
    ) -> Result<(), Refused> {
        let idx = match self.channels.iter().position(|c| c.config.id == channel) {
            Some(i) => i,
            None => {
                let mut config = config();
                config.id = channel;
                self.channels.push(OutChannel::new(config));
                self.channels.len() - 1
            }
        };
        let Some(c) = self.channels.get_mut(idx) else {
            return Err(Refused::Closed);
        };
        let len = payload.len();
        let limit = c.config.max_queued_bytes;
        // Forced messages (pongs, responses) may overrun the limit, but only
        // so far: past it the peer is not reading what it asks for.
        if force && c.bytes > FORCED_OVERRUN.saturating_mul(limit) {
            return Err(Refused::Full);
        }
        // An empty queue always takes one message, however large.
        if !(force || c.bytes == 0 || c.bytes + len <= limit) {
            return Err(match c.config.policy {
                Policy::Drop => Refused::Dropped,
                Policy::Block => {
                    self.blocked = true;
                    Refused::Blocked
                }
            });
        }
        let record = frame::record_len(channel, len);
        let fits = c.segments.back().is_some_and(|s| {
            s.len() == FRAME_HEADER_LEN
                || s.len() + record <= FRAME_HEADER_LEN + DEFAULT_FRAME_TARGET
        });
        if !fits {
            let mut seg = match self.pool.pop() {
                Some(seg) if record <= DEFAULT_FRAME_TARGET => seg,
                _ => BytesMut::with_capacity(
                    FRAME_HEADER_LEN + record.max(DEFAULT_FRAME_TARGET) + TAG_LEN,
                ),
            };
            frame::begin_frame(&mut seg);
            c.segments.push_back(seg);
        }
        if let Some(seg) = c.segments.back_mut() {
            frame::put_record(seg, channel, payload);
        }
        c.bytes += len;
        c.new_messages += 1;
        c.new_bytes += len as u64;
        self.pending = true;
        Ok(())
    }

    /// Moves every queued frame (control first) into `frames`; `discard`
    /// drops application data instead (an aborting close). Reports what
    /// was taken per channel to `sent`; returns whether any of it was an
    /// application message.
    pub fn take(
        &mut self,
        frames: &mut Vec<BytesMut>,
        discard: bool,
        sent: &mut dyn FnMut(u16, u64, u64),
    ) -> bool {
        self.pending = false;
        let mut app = false;
        for c in &mut self.channels {
            let control = c.config.id == CONTROL_CHANNEL;
            let dropped = discard && !control;
            if dropped {
                c.segments.clear();
            }
            frames.extend(c.segments.drain(..));
            c.bytes = 0;
            app |= !control && c.new_messages > 0;
            if c.new_messages > 0 && !dropped {
                sent(c.config.id, c.new_messages, c.new_bytes);
            }
            c.new_messages = 0;
            c.new_bytes = 0;
        }
        app
    }

    /// Returns a written frame's buffer for reuse.
    pub fn recycle(&mut self, mut seg: BytesMut) {
        seg.clear();
        if seg.capacity() <= 2 * DEFAULT_FRAME_TARGET && self.pool.len() < POOL {
            self.pool.push(seg);
        }
    }

    /// Frees the reusable buffers (the connection is going quiet).
    pub fn trim(&mut self) {
        self.pool = Vec::new();
    }

    pub fn queued_bytes(&self, channel: u16) -> usize {
        self.channels
            .iter()
            .find(|c| c.config.id == channel)
            .map_or(0, |c| c.bytes)
    }
}

impl OutChannel {
    fn new(config: ChannelConfig) -> Self {
        OutChannel {
            config,
            segments: VecDeque::new(),
            bytes: 0,
            new_messages: 0,
            new_bytes: 0,
        }
    }
}
