//! One connection over TCP: the handshake over a socket, then a reader
//! task and a writer task that drive the sans-IO [`Session`] — the reader
//! opens frames and hands their plaintext in, the writer takes frames out,
//! seals them (the one place they are sealed) and writes them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use peerlink_proto::control::{
    GoAwayReason, RemoteErrorCode, FIRST_APP_CHANNEL, GOSSIP_CHANNEL, REQUEST_CHANNEL,
};
use peerlink_proto::frame::{Record, DEFAULT_FRAME_TARGET, MAX_RECORD_OVERHEAD};
use peerlink_proto::session::{Event, Refused, Session, Status, Transmit};
use peerlink_proto::{
    Established, FrameDecoder, FrameSealer, Handshake, HandshakeError, PeerId, Records, Transport,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio::task::AbortHandle;

use crate::metrics::{ChannelCounters, Metrics};
use crate::queue::{lock, Inbox, Message};
use crate::routing::{deliver, InboxCache, Responder, Router};
use crate::share::Share;
use crate::NetError;

/// Read at least this much at a time while traffic flows...
const READ_CHUNK: usize = 256 << 10;
/// ...and this much when it is light.
const IDLE_READ: usize = 4 << 10;
/// A closing connection answers requests that crossed its go-away for at
/// most this long, and after its go-away lingers this long for the peer
/// to close its side...
pub(crate) const DRAIN: Duration = Duration::from_secs(5);
/// ...checking this often whether both sides are done.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The responder's deadline for the initiator's first message; `heard`
/// is set once it arrived whole.
pub(crate) struct FirstMessage<'a> {
    pub within: Duration,
    pub heard: &'a std::sync::atomic::AtomicBool,
}

/// Runs the handshake on `stream`; returns the session and any bytes that
/// arrived after it (early frames).
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    mut hs: Handshake,
    delay: Duration,
    first: Option<FirstMessage<'_>>,
) -> Result<(Established, BytesMut), NetError> {
    let mut buf = BytesMut::with_capacity(1024);
    let first_deadline = first
        .as_ref()
        .map(|f| (tokio::time::Instant::now() + f.within, f.within));
    let mut heard = first.is_none();
    loop {
        if let Some(out) = hs.take_output() {
            stream.write_all(&out).await?;
        }
        if hs.is_complete() {
            return Ok((hs.finish()?, buf));
        }
        // A handshake message is at most 514 bytes; never buffer more than two.
        if buf.len() > 2 * (peerlink_proto::handshake::MAX_HANDSHAKE_MESSAGE + 2) {
            return Err(HandshakeError::MessageTooLarge {
                len: buf.len(),
                max: peerlink_proto::handshake::MAX_HANDSHAKE_MESSAGE,
            }
            .into());
        }
        buf.reserve(1024);
        let read = match first_deadline.filter(|_| !heard) {
            Some((at, within)) => tokio::time::timeout_at(at, stream.read_buf(&mut buf))
                .await
                .map_err(|_| NetError::FirstMessageTimeout(within))?,
            None => stream.read_buf(&mut buf).await,
        };
        if read? == 0 {
            return Err(NetError::HandshakeEof);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Err(e) = hs.read(&mut buf) {
            // Tell the peer why (e.g. our version), best effort.
            if let Some(out) = hs.take_output() {
                let _ = stream.write_all(&out).await;
            }
            return Err(e.into());
        }
        if !heard && !hs.awaiting_first_message() {
            heard = true;
            if let Some(f) = &first {
                f.heard.store(true, std::sync::atomic::Ordering::Release);
            }
        }
    }
}

/// What a caller waits on: the answer to its request, or its ping's pong.
pub(crate) enum Waiter {
    Response(oneshot::Sender<Result<Bytes, NetError>>),
    Pong(oneshot::Sender<Instant>),
}

/// One connection as the node sees it: the sans-IO [`Session`] behind one
/// lock, and what the tasks that drive it over a socket share.
pub(crate) struct Conn {
    pub id: u64,
    pub peer: PeerId,
    pub addr: SocketAddr,
    pub inbound: bool,
    pub connected_at: Instant,
    session: Mutex<Session<Waiter>>,
    /// Frames are queued (or the session closes): the writer has work.
    wake_writer: Notify,
    /// Frames were taken: senders waiting on a full channel may retry.
    space: Notify,
    /// The write side, while the writer task sleeps.
    write_slot: Mutex<Option<WriteSide>>,
    /// When a direct write was last tried, in ns since `connected_at` (0: never).
    last_direct: AtomicU64,
    /// What its served requests cost against its rate ([`crate::share`]);
    /// `None` when the node sets no rate.
    share: Option<Share>,
    metrics: Arc<Metrics>,
    /// Over QUIC, the connection to close when this one ends.
    quic: Option<quinn::Connection>,
    terminated: AtomicBool,
    tasks: OnceLock<[AbortHandle; 2]>,
}

/// What a connection reads from and writes to: a TCP socket's halves, or
/// a QUIC stream's.
pub(crate) type Rd = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type Wr = Box<dyn AsyncWrite + Send + Unpin>;

/// The socket's write half and the frame sealer: frames are sealed here
/// and nowhere else. The writer task holds it while it writes and parks it
/// in the [`Conn`] while it sleeps, so a sender that finds the connection
/// quiet seals and writes directly: one task hand-off less, which is most
/// of a round trip on a quiet connection.
pub(crate) struct WriteSide {
    wr: Wr,
    sealer: FrameSealer,
    /// Bytes a direct write could not finish; the writer sends them first.
    backlog: BytesMut,
    /// Sent-message counters per channel, looked up once per connection.
    counters: Vec<(u16, ChannelCounters)>,
    /// Per-channel (messages, bytes) of the frames being written.
    sent: Vec<(u16, u64, u64)>,
}

impl WriteSide {
    pub fn new(wr: Wr, sealer: FrameSealer) -> Self {
        WriteSide {
            wr,
            sealer,
            backlog: BytesMut::new(),
            counters: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Takes what the session has to send (`writer`: with closing).
    fn poll(&mut self, s: &mut Session<Waiter>, writer: bool) -> Option<Transmit> {
        let sent = &mut self.sent;
        s.poll_transmit_counted(Instant::now(), writer, &mut |c, m, b| sent.push((c, m, b)))
    }

    /// Counts what the last [`WriteSide::poll`] took.
    fn count(&mut self, metrics: &Metrics) {
        for (channel, messages, bytes) in self.sent.drain(..) {
            let i = match self.counters.iter().position(|(c, _)| *c == channel) {
                Some(i) => i,
                None => {
                    self.counters.push((channel, metrics.outbound(channel)));
                    self.counters.len() - 1
                }
            };
            if let Some((_, c)) = self.counters.get(i) {
                c.messages.inc_by(messages);
                c.bytes.inc_by(bytes);
            }
        }
    }
}

/// Only messages up to this size are written directly.
const DIRECT_WRITE_MAX: usize = 4 << 10;
/// Direct writes at most this often (ns); denser traffic goes via the writer.
const DIRECT_WRITE_GAP_NS: u64 = 5_000;

impl Conn {
    pub fn new(
        id: u64,
        peer: PeerId,
        addr: SocketAddr,
        inbound: bool,
        session: Session<Waiter>,
        share: Option<Share>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Conn {
            id,
            peer,
            addr,
            inbound,
            connected_at: Instant::now(),
            session: Mutex::new(session),
            wake_writer: Notify::new(),
            space: Notify::new(),
            write_slot: Mutex::new(None),
            last_direct: AtomicU64::new(0),
            share,
            metrics,
            quic: None,
            terminated: AtomicBool::new(false),
            tasks: OnceLock::new(),
        }
    }

    /// What carries this connection.
    pub fn transport(&self) -> Transport {
        match self.quic {
            Some(_) => Transport::Quic,
            None => Transport::Tcp,
        }
    }

    /// Over QUIC: the connection to close when this one ends.
    pub fn with_quic(mut self, quic: Option<quinn::Connection>) -> Self {
        self.quic = quic;
        self
    }

    fn session(&self) -> MutexGuard<'_, Session<Waiter>> {
        lock(&self.session)
    }

    /// Runs `op` on the session and gets what it queued written: directly
    /// when `small` and the writer sleeps, else by waking the writer.
    fn with<R>(&self, small: bool, op: impl FnOnce(&mut Session<Waiter>) -> R) -> R {
        let mut s = self.session();
        let idle = !s.has_pending();
        let r = op(&mut s);
        let wake = idle && s.has_pending();
        drop(s);
        // Large messages gain nothing from skipping the writer: one write
        // of them already amortises its system call.
        if wake && !(small && self.write_through()) {
            self.wake_writer.notify_one();
        }
        r
    }

    /// If the writer is asleep with its write side parked, seals and writes
    /// what is queued from this task. True when all of it went out; false
    /// when the writer must be woken (busy, closing, or a partial write).
    fn write_through(&self) -> bool {
        // Only for sparse traffic: a sender that comes back within the gap
        // is streaming, and the writer task batches that far better.
        let now = self.connected_at.elapsed().as_nanos() as u64 + 1;
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
        let Some(t) = ws.poll(&mut self.session(), false) else {
            return false;
        };
        ws.count(&self.metrics);
        for mut frame in t.frames {
            if ws.sealer.seal(&mut frame, 0).is_err() {
                // Nonce space exhausted (2^64 frames): only a new connection helps.
                drop(slot);
                self.close(GoAwayReason::ProtocolError, false);
                return true;
            }
            let written = if ws.backlog.is_empty() {
                try_write(&mut ws.wr, &frame)
            } else {
                0
            };
            // What did not fit (or failed) goes to the writer, in order;
            // a real socket error resurfaces there and ends the connection.
            if let Some(rest) = frame.get(written..).filter(|r| !r.is_empty()) {
                ws.backlog.extend_from_slice(rest);
            }
            self.session().recycle(frame);
        }
        ws.backlog.is_empty()
    }

    /// Queues `payload` on `channel` if there is room now. The synchronous
    /// fast path of sending, so no future is built per message.
    pub fn push_now(&self, channel: u16, payload: &[u8], force: bool) -> Result<(), Refused> {
        let r = self.with(payload.len() <= DIRECT_WRITE_MAX, |s| {
            s.push(channel, payload, force)
        });
        if r == Err(Refused::Dropped) {
            self.metrics.outbound(channel).dropped.inc();
        }
        r
    }

    /// Queues without waiting: a full queue is `QueueFull`.
    pub fn try_push(&self, channel: u16, payload: &[u8], force: bool) -> Result<(), NetError> {
        self.push_now(channel, payload, force)
            .map_err(|e| refused(e, channel))
    }

    /// Queues `payload` on `channel`, waiting for space if the channel blocks.
    pub async fn push(&self, channel: u16, payload: &[u8]) -> Result<(), NetError> {
        match self.push_now(channel, payload, false) {
            Err(Refused::Blocked) => {}
            r => return r.map_err(|e| refused(e, channel)),
        }
        loop {
            // Register for a wake-up before trying, so none is lost.
            let space = self.space.notified();
            match self.push_now(channel, payload, false) {
                Err(Refused::Blocked) => space.await,
                r => return r.map_err(|e| refused(e, channel)),
            }
        }
    }

    /// Sends a request, waiting for queue space; returns its id and where
    /// its answer arrives.
    pub async fn request(
        &self,
        protocol: &str,
        body: Bytes,
    ) -> Result<(u64, oneshot::Receiver<Result<Bytes, NetError>>), NetError> {
        let (tx, rx) = oneshot::channel();
        let mut waiter = Waiter::Response(tx);
        loop {
            let space = self.space.notified();
            let r = self.with(body.len() <= DIRECT_WRITE_MAX, |s| {
                s.request(protocol, body.clone(), waiter)
            });
            match r {
                Ok(id) => return Ok((id, rx)),
                Err((Refused::Blocked, w)) => {
                    waiter = w;
                    space.await
                }
                Err((e, _)) => return Err(refused(e, REQUEST_CHANNEL)),
            }
        }
    }

    pub fn forget_request(&self, id: u64) {
        self.with(true, |s| s.forget_request(id));
    }

    /// Answers the peer's request `id`; fails if the peer has let too many
    /// answers pile up unread.
    pub fn respond(&self, id: u64, body: Bytes) -> Result<(), NetError> {
        Ok(self.with(body.len() <= DIRECT_WRITE_MAX, |s| s.respond(id, body))?)
    }

    /// Answers the peer's request `id` with an error.
    pub fn respond_error(
        &self,
        id: u64,
        code: RemoteErrorCode,
        message: &str,
    ) -> Result<(), NetError> {
        Ok(self.with(true, |s| s.respond_error(id, code, message))?)
    }

    /// Sends a ping now; returns when it left, its nonce and where its
    /// pong's arrival time comes.
    pub fn ping(&self) -> (Instant, u64, oneshot::Receiver<Instant>) {
        let (tx, rx) = oneshot::channel();
        let sent = Instant::now();
        let nonce = self.with(true, |s| s.ping(Waiter::Pong(tx)));
        (sent, nonce, rx)
    }

    pub fn forget_ping(&self, nonce: u64) {
        self.session().forget_ping(nonce);
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.session().rtt()
    }

    /// Charges the peer `bytes` of served requests ([`crate::share`]).
    pub fn charge(&self, bytes: u64) {
        if let Some(share) = &self.share {
            share.charge(bytes);
        }
    }

    /// Requests are in flight on this connection, either way: closing it
    /// now would fail them.
    pub fn busy(&self) -> bool {
        self.session().is_busy()
    }

    /// Usable for new traffic: neither closing nor ended.
    pub fn is_open(&self) -> bool {
        !self.is_terminated() && self.session().is_open()
    }

    /// Payload bytes queued on `channel` and not yet written.
    pub fn queued_bytes(&self, channel: u16) -> usize {
        self.session().queued_bytes(channel)
    }

    /// Starts closing: a go-away goes out (after what is queued if
    /// `flush`), then the connection drains and ends.
    pub fn close(&self, reason: GoAwayReason, flush: bool) {
        self.session().close(reason, flush);
        self.wake_writer.notify_one();
        self.space.notify_waiters();
    }

    pub fn is_terminated(&self) -> bool {
        self.terminated.load(Ordering::Acquire)
    }

    pub fn set_tasks(&self, reader: AbortHandle, writer: AbortHandle) {
        let _ = self.tasks.set([reader, writer]);
    }

    /// Ends the connection at once (idempotent): pending requests fail and
    /// both tasks stop. Returns false if it had already ended.
    pub fn terminate(&self) -> bool {
        if self.terminated.swap(true, Ordering::AcqRel) {
            return false;
        }
        let waiters: Vec<Waiter> = {
            let mut s = self.session();
            s.close(GoAwayReason::ProtocolError, false);
            s.abort_all().collect()
        };
        for w in waiters {
            if let Waiter::Response(tx) = w {
                let _ = tx.send(Err(NetError::ConnectionClosed));
            }
        }
        self.wake_writer.notify_one();
        self.space.notify_waiters();
        if let Some(quic) = &self.quic {
            quic.close(0u32.into(), b"closed");
        }
        if let Some(tasks) = self.tasks.get() {
            for t in tasks {
                t.abort();
            }
        }
        true
    }
}

impl Responder for Conn {
    fn respond(&self, id: u64, body: Bytes) -> Result<(), NetError> {
        Conn::respond(self, id, body)
    }

    fn respond_error(&self, id: u64, code: RemoteErrorCode, message: &str) -> Result<(), NetError> {
        Conn::respond_error(self, id, code, message)
    }

    fn charge(&self, bytes: u64) {
        Conn::charge(self, bytes)
    }
}

fn refused(e: Refused, channel: u16) -> NetError {
    match e {
        Refused::Closed => NetError::ConnectionClosed,
        Refused::Full | Refused::Dropped | Refused::Blocked => NetError::QueueFull { channel },
    }
}

/// Reads frames, opens them and hands their plaintext to the session until
/// EOF or an error; delivers what the session makes of them.
pub(crate) async fn reader(
    conn: Arc<Conn>,
    router: Arc<Router>,
    rd: Rd,
    mut buf: BytesMut,
    mut dec: FrameDecoder,
    link_delay: Duration,
) -> Result<Option<GoAwayReason>, NetError> {
    let mut rd = Source::new(rd, link_delay);
    let mut cache = InboxCache::default();
    let responder: Weak<dyn Responder> = Arc::downgrade(&conn) as Weak<dyn Responder>;
    let mut events: Vec<Event<Waiter>> = Vec::new();
    let mut pending: VecDeque<Message> = VecDeque::new();
    let mut arena = BytesMut::new();
    let mut last_read = 0;
    loop {
        loop {
            // Over its share of our request handling, the peer waits in
            // its own socket.
            if let Some(wait) = conn.share.as_ref().and_then(Share::over) {
                conn.metrics.paused(wait);
                tokio::time::sleep(wait).await;
                continue;
            }
            let Some(plain) = dec.decode(&mut buf)? else {
                break;
            };
            let copy = conn.with(true, |s| {
                let copy = copies(&router, s, &mut cache, &plain);
                s.handle_frame(plain, Instant::now(), &mut events)
                    .map(|()| copy)
            })?;
            let mut current: Option<Arc<Inbox>> = None;
            for event in events.drain(..) {
                match event {
                    Event::Message { channel, payload } => {
                        if current.as_ref().is_none_or(|i| i.config.id != channel) {
                            deliver(&mut current, &mut pending).await;
                            current = router.routed(&mut cache, channel);
                            if current.is_none() {
                                router.dropped_unrouted();
                                continue;
                            }
                        }
                        pending.push_back(Message {
                            peer: conn.peer,
                            payload: kept(copy, &mut arena, payload),
                        });
                    }
                    Event::Request(r) => {
                        let body = kept(copy, &mut arena, r.body);
                        router.on_request(conn.peer, responder.clone(), r.id, r.protocol, body)?;
                    }
                    Event::Response(answer) => {
                        if let Waiter::Response(tx) = answer.token {
                            let result =
                                answer
                                    .result
                                    .map(|b| kept(copy, &mut arena, b))
                                    .map_err(|e| NetError::Remote {
                                        code: e.code,
                                        message: e.message,
                                    });
                            let _ = tx.send(result);
                        }
                    }
                    Event::Pong { token } => {
                        if let Waiter::Pong(tx) = token {
                            let _ = tx.send(Instant::now());
                        }
                    }
                    // Why it ends is asked of the session at the end.
                    Event::GoAway(_) => {}
                }
            }
            deliver(&mut current, &mut pending).await;
        }
        let need = dec.needed(&buf)?;
        // Busy connections read in large chunks; quiet ones keep a small
        // buffer, so an idle connection holds little memory.
        if buf.is_empty() && last_read < IDLE_READ && buf.capacity() > IDLE_READ {
            buf = BytesMut::new();
        }
        let chunk = if last_read >= IDLE_READ {
            READ_CHUNK
        } else {
            IDLE_READ
        };
        buf.reserve(need.saturating_sub(buf.len()).max(chunk));
        last_read = rd.read_buf(&mut buf).await?;
        if last_read == 0 {
            return Ok(conn.session().go_away_reason());
        }
    }
}

/// Where the reader gets its bytes: the socket, or, on testnets with an
/// injected link delay, a task that reads the socket continuously and
/// stamps each chunk with its arrival time, so every chunk is handled
/// exactly one delay after it arrived and reads never wait on each other
/// (a sleep after each read would delay data by up to twice the delay).
enum Source {
    Direct(Rd),
    Delayed {
        rx: tokio::sync::mpsc::Receiver<(Instant, Bytes)>,
        delay: Duration,
        task: tokio::task::JoinHandle<()>,
    },
}

impl Source {
    fn new(mut rd: Rd, delay: Duration) -> Source {
        if delay.is_zero() {
            return Source::Direct(rd);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let task = tokio::spawn(async move {
            let mut chunk = BytesMut::new();
            loop {
                chunk.reserve(IDLE_READ);
                // A read error ends the stream like EOF (testnets only).
                match rd.read_buf(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let data = chunk.split().freeze();
                        if tx.send((Instant::now(), data)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Source::Delayed { rx, delay, task }
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Source::Direct(rd) => rd.read_buf(buf).await,
            Source::Delayed { rx, delay, .. } => match rx.recv().await {
                None => Ok(0),
                Some((arrived, chunk)) => {
                    tokio::time::sleep_until((arrived + *delay).into()).await;
                    buf.extend_from_slice(&chunk);
                    Ok(chunk.len())
                }
            },
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Delayed { task, .. } = self {
            task.abort();
        }
    }
}

/// Whether `record` will be kept: a request (queued for a handler), a
/// response to a request of ours, or a message on a routed channel.
fn keeps(router: &Router, s: &Session<Waiter>, cache: &mut InboxCache, record: &Record) -> bool {
    let p = &record.payload;
    match record.channel {
        REQUEST_CHANNEL => match p.first() {
            Some(1) => true,
            Some(2) => peerlink_proto::varint::get(p.get(1..).unwrap_or_default(), u64::MAX)
                .is_ok_and(|(id, _)| s.awaits(id)),
            _ => false,
        },
        ch if ch == GOSSIP_CHANNEL || ch >= FIRST_APP_CHANNEL => router.routed(cache, ch).is_some(),
        _ => false,
    }
}

/// Whether a frame's kept payloads are copied out of the read buffer.
///
/// Payloads are slices of the read buffer, and a kept slice keeps its
/// whole allocation alive: a 40-byte request padded with a megabyte
/// nobody keeps, in its frame or in the frames read with it, would pin
/// that megabyte for as long as it waits in a queue. So the kept payloads
/// of every small frame (under half a read chunk), and of a large frame
/// that is mostly discarded, are copied into an arena that holds kept
/// bytes only ([`copy_out`]). A large frame that is mostly kept stays
/// zero-copy: it is at least half of the allocation it pins.
fn copies(router: &Router, s: &Session<Waiter>, cache: &mut InboxCache, plain: &Bytes) -> bool {
    if plain.len() < READ_CHUNK / 2 {
        return true;
    }
    let mut kept = 0usize;
    for record in Records::new(plain.clone()) {
        // A malformed record is reported when the frame is handled.
        let Ok(record) = record else { return true };
        if keeps(router, s, cache, &record) {
            kept += record.payload.len();
        }
    }
    kept.saturating_mul(2) < plain.len()
}

/// A kept payload: copied out of the read buffer when `copy` ([`copies`]).
fn kept(copy: bool, arena: &mut BytesMut, payload: Bytes) -> Bytes {
    match copy {
        true => copy_out(arena, &payload),
        false => payload,
    }
}

/// Arena chunks: one allocation per this many bytes of small payloads.
const ARENA_CHUNK: usize = 16 << 10;

/// `payload`, copied into `arena` (a new chunk when the current one is
/// full). Kept payloads are packed back to back, so what they pin is
/// their own bytes and at most one chunk's unused tail.
fn copy_out(arena: &mut BytesMut, payload: &Bytes) -> Bytes {
    if arena.capacity() < payload.len() {
        *arena = BytesMut::with_capacity(ARENA_CHUNK.max(payload.len()));
    }
    arena.extend_from_slice(payload);
    arena.split().freeze()
}

/// Takes frames from the session, seals and writes them, and runs its
/// timers, until the session is finished.
pub(crate) async fn writer(
    conn: Arc<Conn>,
    wr: Wr,
    sealer: FrameSealer,
) -> Result<Option<GoAwayReason>, NetError> {
    let stall = conn.session().config().keepalive.timeout;
    let mut idle = false;
    let mut held = Some(WriteSide::new(wr, sealer));
    loop {
        if held.is_none() {
            held = lock(&conn.write_slot).take();
        }
        let Some(ws) = held.as_mut() else {
            // A sender is writing directly this instant (it never awaits).
            tokio::task::yield_now().await;
            continue;
        };
        if !ws.backlog.is_empty() {
            write(&mut ws.wr, &ws.backlog, stall).await?;
            ws.backlog.clear();
        }
        let now = Instant::now();
        let (transmit, status, timers, waiters) = {
            let mut s = conn.session();
            let timers = s.handle_timeout(now);
            let t = ws.poll(&mut s, true);
            (t, s.status(now), timers, s.take_space_waiters())
        };
        if waiters {
            conn.space.notify_waiters();
        }
        if timers.is_err() {
            return Err(NetError::PeerSilent(stall));
        }
        if let Some(t) = transmit {
            idle = false;
            ws.count(&conn.metrics);
            let mut frames = t.frames;
            for frame in &mut frames {
                ws.sealer.seal(frame, 0).map_err(NetError::Sealing)?;
                write(&mut ws.wr, frame, stall).await?;
            }
            let mut s = conn.session();
            for frame in frames {
                s.recycle(frame);
            }
            continue;
        }
        match status {
            Status::Open => {
                if !idle {
                    // Let senders on this worker add more before we park:
                    // fewer wake-ups, fuller frames.
                    idle = true;
                    tokio::task::yield_now().await;
                    continue;
                }
                let deadline = {
                    let mut s = conn.session();
                    s.trim();
                    s.poll_timeout()
                };
                // While we sleep, senders may write directly.
                if let Some(ws) = held.take() {
                    *lock(&conn.write_slot) = Some(ws);
                }
                tokio::select! {
                    _ = conn.wake_writer.notified() => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            Status::Draining { .. } => {
                tokio::select! {
                    _ = conn.wake_writer.notified() => {}
                    _ = tokio::time::sleep(DRAIN_POLL) => {}
                }
            }
            Status::Finished { linger } => {
                let _ = ws.wr.shutdown().await;
                // Give the peer a moment to close its side, then end regardless.
                if linger {
                    tokio::time::sleep(DRAIN).await;
                }
                return Ok(conn.session().go_away_reason());
            }
        }
    }
}

/// Writes what the transport takes now, without waiting: the bytes
/// written (0 when it would block or failed; a real error resurfaces on
/// the writer's next write).
fn try_write(wr: &mut Wr, bytes: &[u8]) -> usize {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(wr).poll_write(&mut cx, bytes) {
        std::task::Poll::Ready(Ok(n)) => n,
        _ => 0,
    }
}

async fn write(wr: &mut Wr, bytes: &[u8], stall: Duration) -> Result<(), NetError> {
    if bytes.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(stall, wr.write_all(bytes)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(NetError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer stopped reading",
        ))),
    }
}

/// Frame sealer and decoder for a transport that encrypts already (QUIC).
pub(crate) fn plain_codecs(max_message: usize) -> (FrameSealer, FrameDecoder) {
    let dec = FrameDecoder::plain(DEFAULT_FRAME_TARGET.max(max_message + MAX_RECORD_OVERHEAD));
    (FrameSealer::plain(), dec)
}

/// Frame sealer and decoder for an established session.
pub(crate) fn codecs(est: Established, max_message: usize) -> (FrameSealer, FrameDecoder) {
    let dec = FrameDecoder::new(
        est.recv,
        DEFAULT_FRAME_TARGET.max(max_message + MAX_RECORD_OVERHEAD),
    );
    (FrameSealer::new(est.send), dec)
}
