//! Layer 3 — one connection as a sans-IO state machine.
//!
//! A [`Session`] is what a connection does once its handshake is done,
//! whatever carries its bytes: it is fed the plaintext of each received
//! frame ([`Session::handle_frame`]) and the time ([`Session::handle_timeout`]),
//! and asked for plaintext frames to write ([`Session::poll_transmit`]),
//! for the events it produced, and for its next deadline
//! ([`Session::poll_timeout`]). It owns:
//!
//! - the per-channel outbound queues, their byte bounds and [`Policy`],
//!   and the packing of records into frames;
//! - the control records: ping/pong (keepalive and RTT), go-away;
//! - the request table (a token of the driver's choosing per request in
//!   flight) and the count of the peer's requests being served;
//! - closing: go-away, the drain during which requests that crossed it
//!   are still answered, and when the connection is finished;
//! - [`keep_newer`], the rule both peers apply to settle two connections
//!   between them.
//!
//! Sealing is not here: over TCP the driver seals each frame this hands
//! out (in one place), over an already-encrypted transport it writes the
//! plaintext as is. Delivery of [`Event`]s to user queues is the driver's.
//!
//! ```
//! use std::time::Instant;
//! use peerlink_proto::session::{Event, Session, SessionConfig};
//!
//! let now = Instant::now();
//! let config = std::sync::Arc::new(SessionConfig::default());
//! let (mut a, mut b) = (Session::<()>::new(config.clone(), now), Session::<()>::new(config, now));
//! a.push(16, b"hello", false).unwrap();
//! let mut events = Vec::new();
//! for frame in a.poll_transmit(now, true).unwrap().frames {
//!     // A driver would seal `frame`, write it, and the peer open it.
//!     let plain = bytes::Bytes::from(frame).slice(4..);
//!     b.handle_frame(plain, now, &mut events).unwrap();
//! }
//! assert!(matches!(&events[0], Event::Message { channel: 16, payload } if payload == &b"hello"[..]));
//! ```

mod outbound;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::control::{
    Control, ControlError, GoAwayReason, RemoteErrorCode, RrMessage, CONTROL_CHANNEL,
    FIRST_APP_CHANNEL, GOSSIP_CHANNEL, REQUEST_CHANNEL,
};
use crate::frame::{self, FrameError, Records};
use crate::keepalive::{Keepalive, KeepaliveAction, KeepaliveConfig};
use crate::PeerId;

pub use outbound::{CONTROL_QUEUE, FORCED_OVERRUN};

/// User pings carry nonces with the top bit set; keepalive's never do.
const USER_PING_BIT: u64 = 1 << 63;

/// What a full queue does with one more message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The sender waits for space (`send`), or gets `QueueFull`
    /// (`try_send`). On inbound queues, the connection stops reading, so
    /// flow control pushes back on the remote sender.
    Block,
    /// The message is dropped and counted.
    Drop,
}

/// Per-channel queue settings. Application channels are numbered from
/// [`FIRST_APP_CHANNEL`] (16) up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    pub id: u16,
    /// Bytes that may wait per connection (outbound) or per node (inbound).
    pub max_queued_bytes: usize,
    pub policy: Policy,
}

impl ChannelConfig {
    /// A channel with the default limit (4 MiB) and [`Policy::Block`].
    pub fn new(id: u16) -> Self {
        ChannelConfig {
            id,
            max_queued_bytes: 4 << 20,
            policy: Policy::Block,
        }
    }

    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes.max(1);
        self
    }

    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
}

/// Settings shared by every session of a node.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub keepalive: KeepaliveConfig,
    /// Channels with their own queue settings; others get
    /// [`ChannelConfig::new`]'s defaults.
    pub channels: Vec<ChannelConfig>,
    /// How long a closing session still answers requests that crossed its
    /// go-away.
    pub drain: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            keepalive: KeepaliveConfig::default(),
            channels: Vec::new(),
            drain: Duration::from_secs(5),
        }
    }
}

impl SessionConfig {
    /// The queue settings of `channel`.
    pub fn channel(&self, channel: u16) -> ChannelConfig {
        self.channels
            .iter()
            .find(|c| c.id == channel)
            .copied()
            .unwrap_or_else(|| ChannelConfig::new(channel))
    }
}

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The session is closing (or closed): nothing new goes out.
    Closed,
    /// Over the limit, and waiting would not help (a forced push past its
    /// overrun: the peer is not reading what it asks for).
    Full,
    /// Over the limit of a [`Policy::Drop`] channel: dropped (count it).
    Dropped,
    /// Over the limit of a [`Policy::Block`] channel: wait for space
    /// ([`Session::take_space_waiters`]) and offer it again.
    Blocked,
}

/// The peer broke the protocol; the connection must end (and the peer be
/// counted). Every variant names what it did.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SessionError {
    #[error("frame error: {0}")]
    Frame(#[from] FrameError),
    #[error("malformed message: {0}")]
    Message(#[from] ControlError),
    #[error("peer used reserved channel {0}")]
    ReservedChannel(u16),
    #[error("peer floods {0} without reading the answers")]
    Flood(&'static str),
}

/// What a received frame produced, for the driver. Messages are the hot
/// path, so the rare variants are boxed: an event is as small as a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<T> {
    /// A message on the gossip channel or an application channel.
    Message { channel: u16, payload: Bytes },
    /// The peer asks; answer with [`Session::respond`] or
    /// [`Session::respond_error`] (it was counted as being served).
    Request(Box<PeerRequest>),
    /// The answer to one of our requests.
    Response(Box<Answer<T>>),
    /// The pong of a [`Session::ping`].
    Pong { token: T },
    /// The peer is leaving: it takes no new requests.
    GoAway(GoAwayReason),
}

/// A request from the peer.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerRequest {
    pub id: u64,
    pub protocol: String,
    pub body: Bytes,
}

/// The answer to one of our requests, with its token.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer<T> {
    pub token: T,
    pub result: Result<Bytes, RemoteError>,
}

/// The remote's error answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError {
    pub code: RemoteErrorCode,
    pub message: String,
}

/// Plaintext frames to write, in order.
#[derive(Debug, Default)]
pub struct Transmit {
    /// Each frame starts with [`frame::FRAME_HEADER_LEN`] bytes of room for
    /// its header, then its records; seal it (or fill the header) and write.
    pub frames: Vec<BytesMut>,
    /// Whether any application message (not just control) is among them.
    pub app: bool,
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Open,
    /// Closing: our go-away is queued or out; requests that crossed it are
    /// still answered until the deadline.
    Draining {
        until: Option<Instant>,
    },
    /// Done: shut the transport's write side down. `linger`: give the peer
    /// a moment to close its side first (a graceful close).
    Finished {
        linger: bool,
    },
}

/// How a close was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Close {
    reason: GoAwayReason,
    /// Send what is queued first (graceful) or not (protocol error).
    flush: bool,
}

/// The keepalive found the peer silent past its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut;

/// One connection's state. `T` is the driver's token for a request or
/// ping in flight (e.g. the channel its caller waits on).
pub struct Session<T> {
    config: Arc<SessionConfig>,
    out: outbound::OutQueues,
    keepalive: Keepalive,
    requests: HashMap<u64, T>,
    pings: HashMap<u64, T>,
    next_id: u64,
    /// The peer's requests handed to a handler and not yet answered.
    serving: usize,
    /// The peer said go-away: it takes no new requests.
    peer_leaving: bool,
    closing: Option<Close>,
    /// The first go-away either side said: why the connection ends.
    first_go_away: Option<GoAwayReason>,
    /// Set once our go-away went out: the end of the drain.
    drain_until: Option<Instant>,
}

impl<T> Session<T> {
    pub fn new(config: Arc<SessionConfig>, now: Instant) -> Self {
        Session {
            keepalive: Keepalive::new(config.keepalive, now),
            config,
            out: outbound::OutQueues::new(),
            requests: HashMap::new(),
            pings: HashMap::new(),
            next_id: 1,
            serving: 0,
            peer_leaving: false,
            closing: None,
            first_go_away: None,
            drain_until: None,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    // ---- sending -------------------------------------------------------

    /// Queues `payload` on `channel`. `force` ignores the channel's limit
    /// (within [`FORCED_OVERRUN`]): for answers, which the request queue
    /// bounds instead.
    pub fn push(&mut self, channel: u16, payload: &[u8], force: bool) -> Result<(), Refused> {
        // A graceful close still answers requests that crossed our
        // go-away; nothing else new goes out.
        let answering = channel == REQUEST_CHANNEL && self.closing.is_some_and(|c| c.flush);
        if self.closing.is_some() && channel != CONTROL_CHANNEL && !answering {
            return Err(Refused::Closed);
        }
        let config = &self.config;
        self.out
            .push(channel, payload, force, || config.channel(channel))
    }

    /// Queues a control record; false when the control queue is over its
    /// cap (a peer making us answer faster than it reads).
    fn push_control(&mut self, control: Control) -> bool {
        self.out
            .push(CONTROL_CHANNEL, &control.encode(), true, || {
                ChannelConfig::new(CONTROL_CHANNEL)
            })
            .is_ok()
    }

    /// Queues a request; `token` comes back with its [`Event::Response`],
    /// or from [`Session::forget_request`]. On refusal the token is handed
    /// back with the reason.
    pub fn request(&mut self, protocol: &str, body: Bytes, token: T) -> Result<u64, (Refused, T)> {
        let id = self.next_id();
        let msg = RrMessage::Request {
            id,
            protocol: protocol.to_string(),
            body,
        }
        .encode();
        match self.push(REQUEST_CHANNEL, &msg, false) {
            Ok(()) => {
                self.requests.insert(id, token);
                Ok(id)
            }
            Err(e) => Err((e, token)),
        }
    }

    /// Gives up on request `id` (timed out, or its caller went away).
    pub fn forget_request(&mut self, id: u64) -> Option<T> {
        let token = self.requests.remove(&id);
        self.settle();
        token
    }

    /// Whether request `id` of ours awaits its answer.
    pub fn awaits(&self, id: u64) -> bool {
        self.requests.contains_key(&id)
    }

    /// Answers the peer's request `id`; fails if the peer lets too many
    /// answers pile up unread (it should be disconnected for that).
    pub fn respond(&mut self, id: u64, body: Bytes) -> Result<(), SessionError> {
        self.answer(RrMessage::Response { id, body })
    }

    /// Answers the peer's request `id` with an error.
    pub fn respond_error(
        &mut self,
        id: u64,
        code: RemoteErrorCode,
        message: &str,
    ) -> Result<(), SessionError> {
        self.answer(RrMessage::Error {
            id,
            code,
            message: message.to_string(),
        })
    }

    fn answer(&mut self, msg: RrMessage) -> Result<(), SessionError> {
        self.serving = self.serving.saturating_sub(1);
        let result = match self.push(REQUEST_CHANNEL, &msg.encode(), true) {
            // A closed session drops the answer: that is not the peer's fault.
            Ok(()) | Err(Refused::Closed) => Ok(()),
            Err(_) => Err(SessionError::Flood("requests")),
        };
        self.settle();
        result
    }

    /// Sends a ping now; `token` comes back with its [`Event::Pong`].
    /// Returns its nonce for [`Session::forget_ping`].
    pub fn ping(&mut self, token: T) -> u64 {
        let nonce = self.next_id() | USER_PING_BIT;
        // A full control queue loses the ping; its caller times out.
        if self.push_control(Control::Ping(nonce)) {
            self.pings.insert(nonce, token);
        }
        nonce
    }

    pub fn forget_ping(&mut self, nonce: u64) -> Option<T> {
        self.pings.remove(&nonce)
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1) & !USER_PING_BIT;
        id
    }

    // ---- receiving -----------------------------------------------------

    /// Handles the plaintext of one frame (its records, without the
    /// header), appending what it produced to `events`. An error means the
    /// peer broke the protocol: end the connection.
    pub fn handle_frame(
        &mut self,
        plain: Bytes,
        now: Instant,
        events: &mut Vec<Event<T>>,
    ) -> Result<(), SessionError> {
        let mut app = false;
        for record in Records::new(plain) {
            let record = record?;
            match record.channel {
                CONTROL_CHANNEL => match Control::decode(&record.payload)? {
                    Control::Ping(n) => {
                        if !self.push_control(Control::Pong(n)) {
                            return Err(SessionError::Flood("pings"));
                        }
                    }
                    Control::Pong(n) if n & USER_PING_BIT != 0 => {
                        if let Some(token) = self.pings.remove(&n) {
                            events.push(Event::Pong { token });
                        }
                    }
                    Control::Pong(n) => {
                        self.keepalive.on_pong(n, now);
                    }
                    Control::GoAway(reason) => {
                        self.first_go_away.get_or_insert(reason);
                        self.peer_leaving = true;
                        self.settle();
                        events.push(Event::GoAway(reason));
                    }
                },
                REQUEST_CHANNEL => {
                    app = true;
                    match RrMessage::decode(&record.payload)? {
                        RrMessage::Request { id, protocol, body } => {
                            self.serving += 1;
                            events.push(Event::Request(Box::new(PeerRequest {
                                id,
                                protocol,
                                body,
                            })));
                        }
                        RrMessage::Response { id, body } => {
                            if let Some(token) = self.requests.remove(&id) {
                                events.push(Event::Response(Box::new(Answer {
                                    token,
                                    result: Ok(body),
                                })));
                            }
                        }
                        RrMessage::Error { id, code, message } => {
                            if let Some(token) = self.requests.remove(&id) {
                                events.push(Event::Response(Box::new(Answer {
                                    token,
                                    result: Err(RemoteError { code, message }),
                                })));
                            }
                        }
                    }
                    self.settle();
                }
                ch if ch < FIRST_APP_CHANNEL && ch != GOSSIP_CHANNEL => {
                    return Err(SessionError::ReservedChannel(ch))
                }
                channel => {
                    app = true;
                    events.push(Event::Message {
                        channel,
                        payload: record.payload,
                    });
                }
            }
        }
        self.keepalive.on_receive(now);
        if app {
            self.keepalive.on_app_traffic(now);
        }
        Ok(())
    }

    // ---- writing -------------------------------------------------------

    /// Takes every queued frame, control first, or `None` when nothing is
    /// queued. `writer`: the caller also carries out closing (it gets the
    /// go-away frame, after the flushed queue); a caller that is not (a
    /// sender writing through) gets nothing from a closing session.
    /// `sent` learns the messages and bytes taken per channel.
    pub fn poll_transmit_counted(
        &mut self,
        now: Instant,
        writer: bool,
        sent: &mut dyn FnMut(u16, u64, u64),
    ) -> Option<Transmit> {
        if self.closing.is_some() && !writer {
            return None;
        }
        let goaway_due = self.closing.is_some() && self.drain_until.is_none();
        if !self.out.pending && !goaway_due {
            return None;
        }
        let mut t = Transmit::default();
        let discard = self.closing.is_some_and(|c| !c.flush);
        if self.out.pending {
            t.app = self.out.take(&mut t.frames, discard, sent);
        }
        if let Some(close) = self.closing.filter(|_| goaway_due) {
            let mut frame = BytesMut::new();
            frame::begin_frame(&mut frame);
            frame::put_record(
                &mut frame,
                CONTROL_CHANNEL,
                &Control::GoAway(close.reason).encode(),
            );
            t.frames.push(frame);
            self.drain_until = Some(now + self.config.drain);
        }
        if t.app {
            self.keepalive.on_app_traffic(now);
        }
        (!t.frames.is_empty()).then_some(t)
    }

    /// [`Session::poll_transmit_counted`] without the counts.
    pub fn poll_transmit(&mut self, now: Instant, writer: bool) -> Option<Transmit> {
        self.poll_transmit_counted(now, writer, &mut |_, _, _| {})
    }

    /// Whether frames are queued and not yet taken.
    pub fn has_pending(&self) -> bool {
        self.out.pending || (self.closing.is_some() && self.drain_until.is_none())
    }

    /// Whether a push was refused for space since last asked: senders may
    /// be waiting, and the frames just taken made room for them.
    pub fn take_space_waiters(&mut self) -> bool {
        std::mem::take(&mut self.out.blocked)
    }

    /// Returns a written frame's buffer for reuse.
    pub fn recycle(&mut self, frame: BytesMut) {
        self.out.recycle(frame);
    }

    /// Frees the reusable buffers (the connection is going quiet).
    pub fn trim(&mut self) {
        self.out.trim();
    }

    /// Payload bytes queued on `channel` and not yet taken.
    pub fn queued_bytes(&self, channel: u16) -> usize {
        self.out.queued_bytes(channel)
    }

    // ---- time and closing ----------------------------------------------

    /// Runs the timers due at `now`: keepalive pings, the idle close.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TimedOut> {
        match self.keepalive.poll(now) {
            KeepaliveAction::Wait => {}
            KeepaliveAction::SendPing(n) => {
                // A full control queue means a flood; the receive side ends that.
                let _ = self.push_control(Control::Ping(n));
            }
            KeepaliveAction::TimedOut => return Err(TimedOut),
            KeepaliveAction::Idle if self.closing.is_none() => self.close(GoAwayReason::Idle, true),
            KeepaliveAction::Idle => {}
        }
        Ok(())
    }

    /// When [`Session::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Instant {
        self.keepalive.next_deadline()
    }

    /// Smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.keepalive.rtt()
    }

    /// Starts closing: a go-away goes out (after what is queued, if
    /// `flush`), then the session drains. A later non-flushing close
    /// overrides a flushing one; nothing else changes a close.
    pub fn close(&mut self, reason: GoAwayReason, flush: bool) {
        if self.closing.is_none() || !flush {
            self.closing = Some(Close { reason, flush });
        }
        self.first_go_away.get_or_insert(reason);
    }

    /// Why the connection ends: the first go-away either side said (a
    /// go-away answering the other's is an acknowledgement, not a reason).
    pub fn go_away_reason(&self) -> Option<GoAwayReason> {
        self.first_go_away
    }

    /// Whether [`Session::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Usable for new traffic: not closing, and the peer is not leaving.
    pub fn is_open(&self) -> bool {
        self.closing.is_none() && !self.peer_leaving
    }

    /// Requests are in flight either way: closing now would fail them.
    pub fn is_busy(&self) -> bool {
        self.serving > 0 || !self.requests.is_empty()
    }

    /// Where the session is at `now`.
    pub fn status(&self, now: Instant) -> Status {
        let Some(close) = self.closing else {
            return Status::Open;
        };
        // A peer that broke the protocol gets no drain; otherwise requests
        // that crossed our go-away are answered until the peer says
        // go-away too (it does once nothing of its own is in flight) and
        // we have answered everything, or the deadline.
        let abort = !close.flush || close.reason == GoAwayReason::ProtocolError;
        let done = self.peer_leaving && !self.is_busy();
        match self.drain_until {
            Some(until) if abort || done || now >= until => Status::Finished { linger: !abort },
            until => Status::Draining { until },
        }
    }

    /// Ends every request and ping in flight, handing their tokens back
    /// (the connection is gone).
    pub fn abort_all(&mut self) -> impl Iterator<Item = T> + '_ {
        self.pings.clear();
        self.requests.drain().map(|(_, t)| t)
    }

    /// The peer is leaving and nothing is in flight either way: say
    /// go-away too, so both sides close now rather than at the drain
    /// deadline.
    fn settle(&mut self) {
        if self.peer_leaving && !self.is_busy() && self.closing.is_none() {
            self.close(GoAwayReason::Normal, true);
        }
    }
}

/// Of two connections between the same two peers, whether to keep the
/// newer one. Both peers must reach the same answer without talking, so
/// the rule looks only at who dialled each: the connection dialled by the
/// smaller peer id wins; two dialled by the same side keep the newer.
/// `*_inbound`: the remote dialled it (from `local`'s point of view).
pub fn keep_newer(local: PeerId, remote: PeerId, old_inbound: bool, new_inbound: bool) -> bool {
    let dialler = |inbound: bool| if inbound { remote } else { local };
    if dialler(old_inbound) == dialler(new_inbound) {
        return true;
    }
    dialler(new_inbound) == local.min(remote)
}
