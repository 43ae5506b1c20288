//! One connection: the handshake over a socket, then a reader task and a
//! writer task around the sans-IO frame codec and keepalive machine.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use peerlink_proto::control::{
    Control, GoAwayReason, RemoteErrorCode, RrMessage, CONTROL_CHANNEL, FIRST_APP_CHANNEL,
    GOSSIP_CHANNEL, REQUEST_CHANNEL,
};
use peerlink_proto::frame::{Record, DEFAULT_FRAME_TARGET, MAX_RECORD_OVERHEAD};
use peerlink_proto::keepalive::{Keepalive, KeepaliveAction};
use peerlink_proto::{
    Established, FrameDecoder, FrameSealer, Handshake, HandshakeError, PeerId, Records,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::node::Inner;
use crate::queue::{lock, Close, Inbox, Message, Outbound, WriteSide};
use crate::share::Share;
use crate::NetError;

/// Read at least this much at a time while traffic flows...
const READ_CHUNK: usize = 256 << 10;
/// ...and this much when it is light.
const IDLE_READ: usize = 4 << 10;
/// A closing connection answers requests that crossed its go-away for at
/// most this long...
const DRAIN: Duration = Duration::from_secs(5);
/// ...checking this often whether both sides are done.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// User pings carry nonces with the top bit set; keepalive's never do.
const USER_PING_BIT: u64 = 1 << 63;

/// Runs the handshake on `stream`; returns the session and any bytes that
/// arrived after it (early frames).
/// The responder's deadline for the initiator's first message; `heard`
/// is set once it arrived whole.
pub(crate) struct FirstMessage<'a> {
    pub within: Duration,
    pub heard: &'a std::sync::atomic::AtomicBool,
}

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

type Pending = oneshot::Sender<Result<Bytes, NetError>>;

/// State shared by a connection's tasks and the node.
pub(crate) struct Conn {
    pub id: u64,
    pub peer: PeerId,
    pub addr: SocketAddr,
    pub inbound: bool,
    pub connected_at: Instant,
    pub out: Outbound,
    pub keepalive: Mutex<Keepalive>,
    requests: Mutex<HashMap<u64, Pending>>,
    /// Requests from the peer handed to a handler and not yet answered.
    serving: AtomicUsize,
    /// What its served requests cost against its rate ([`crate::share`]);
    /// `None` when the node sets no rate.
    share: Option<Share>,
    /// The peer said go-away: it takes no new requests on this connection.
    peer_leaving: AtomicBool,
    pings: Mutex<HashMap<u64, oneshot::Sender<Instant>>>,
    next_id: AtomicU64,
    terminated: AtomicBool,
    tasks: OnceLock<[AbortHandle; 2]>,
}

impl Conn {
    pub fn new(
        id: u64,
        peer: PeerId,
        addr: SocketAddr,
        inbound: bool,
        keepalive: Keepalive,
        out: Outbound,
        share: Option<Share>,
    ) -> Self {
        Conn {
            id,
            peer,
            addr,
            inbound,
            connected_at: Instant::now(),
            out,
            keepalive: Mutex::new(keepalive),
            requests: Mutex::new(HashMap::new()),
            serving: AtomicUsize::new(0),
            share,
            peer_leaving: AtomicBool::new(false),
            pings: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            terminated: AtomicBool::new(false),
            tasks: OnceLock::new(),
        }
    }

    pub fn rtt(&self) -> Option<Duration> {
        lock(&self.keepalive).rtt()
    }

    /// Registers a request and returns its id and the response receiver.
    pub fn register_request(&self) -> (u64, oneshot::Receiver<Result<Bytes, NetError>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.requests).insert(id, tx);
        (id, rx)
    }

    pub fn forget_request(&self, id: u64) {
        lock(&self.requests).remove(&id);
        self.close_if_drained();
    }

    /// The peer said go-away and nothing is in flight either way: say
    /// go-away too, so both sides close now rather than at the drain
    /// deadline.
    pub fn close_if_drained(&self) {
        if self.peer_leaving.load(Ordering::Acquire) && !self.busy() && !self.out.is_closing() {
            self.out.close(Close {
                reason: GoAwayReason::Normal,
                flush: true,
            });
        }
    }

    /// A request from the peer went to a handler; [`Conn::answered`] when
    /// its answer (or its drop) goes out.
    pub fn serving(&self) {
        self.serving.fetch_add(1, Ordering::AcqRel);
    }

    /// Charges the peer `bytes` of served requests ([`crate::share`]).
    pub fn charge(&self, bytes: u64) {
        if let Some(share) = &self.share {
            share.charge(bytes);
        }
    }

    pub fn answered(&self) {
        let _ = self
            .serving
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.close_if_drained();
    }

    /// Requests are in flight on this connection, either way: closing it
    /// now would fail them.
    pub fn busy(&self) -> bool {
        self.serving.load(Ordering::Acquire) > 0 || !lock(&self.requests).is_empty()
    }

    /// Usable for new traffic: neither closing nor ended.
    pub fn is_open(&self) -> bool {
        !self.is_terminated()
            && !self.out.is_closing()
            && !self.peer_leaving.load(Ordering::Acquire)
    }

    /// Sends a ping now and returns when its pong arrives.
    pub fn ping(&self) -> (Instant, oneshot::Receiver<Instant>) {
        let nonce = self.next_id.fetch_add(1, Ordering::Relaxed) | USER_PING_BIT;
        let (tx, rx) = oneshot::channel();
        lock(&self.pings).insert(nonce, tx);
        let sent = Instant::now();
        // If the control queue is full the ping is lost and the caller times out.
        let _ = self.out.push_control(Control::Ping(nonce).encode());
        (sent, rx)
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
        self.out.close(Close {
            reason: GoAwayReason::ProtocolError,
            flush: false,
        });
        for (_, tx) in lock(&self.requests).drain() {
            let _ = tx.send(Err(NetError::ConnectionClosed));
        }
        lock(&self.pings).clear();
        if let Some(tasks) = self.tasks.get() {
            for t in tasks {
                t.abort();
            }
        }
        true
    }
}

/// Per-reader cache of channel inboxes, refreshed when the node's set changes.
struct InboxCache {
    generation: u64,
    map: HashMap<u16, Arc<Inbox>>,
}

/// Reads and dispatches frames until EOF or an error.
pub(crate) async fn reader(
    node: Arc<Inner>,
    conn: Arc<Conn>,
    rd: OwnedReadHalf,
    mut buf: BytesMut,
    mut dec: FrameDecoder,
) -> Result<Option<GoAwayReason>, NetError> {
    let mut rd = Source::new(rd, node.config.link_delay);
    let mut cache = InboxCache {
        generation: u64::MAX,
        map: HashMap::new(),
    };
    let mut pending: VecDeque<Message> = VecDeque::new();
    let mut arena = BytesMut::new();
    let mut goaway = None;
    let mut last_read = 0;
    loop {
        loop {
            // Over its share of our request handling, the peer waits in
            // its own socket.
            if let Some(wait) = conn.share.as_ref().and_then(Share::over) {
                node.metrics.paused(wait);
                tokio::time::sleep(wait).await;
                continue;
            }
            let Some(plain) = dec.decode(&mut buf)? else {
                break;
            };
            let now = Instant::now();
            let mut app = false;
            let mut current: Option<Arc<Inbox>> = None;
            let copy = copies(&node, &conn, &mut cache, &plain);
            for record in Records::new(plain) {
                let record = record?;
                match record.channel {
                    CONTROL_CHANNEL => match Control::decode(&record.payload)? {
                        Control::Ping(n) => {
                            if !conn.out.push_control(Control::Pong(n).encode()) {
                                return Err(NetError::Flood("pings"));
                            }
                        }
                        Control::Pong(n) if n & USER_PING_BIT != 0 => {
                            if let Some(tx) = lock(&conn.pings).remove(&n) {
                                let _ = tx.send(now);
                            }
                        }
                        Control::Pong(n) => {
                            lock(&conn.keepalive).on_pong(n, now);
                        }
                        Control::GoAway(reason) => {
                            conn.peer_leaving.store(true, Ordering::Release);
                            conn.close_if_drained();
                            goaway = Some(reason)
                        }
                    },
                    REQUEST_CHANNEL => {
                        app = true;
                        let payload = match copy {
                            true => copy_out(&mut arena, &record.payload),
                            false => record.payload,
                        };
                        on_rr(&node, &conn, RrMessage::decode(&payload)?)?;
                    }
                    ch if ch < FIRST_APP_CHANNEL && ch != GOSSIP_CHANNEL => {
                        return Err(NetError::ReservedChannel(ch))
                    }
                    ch => {
                        app = true;
                        if current.as_ref().is_none_or(|i| i.config.id != ch) {
                            deliver(&mut current, &mut pending).await;
                            current = inbox_for(&node, &mut cache, ch);
                            if current.is_none() {
                                node.metrics.dropped_unrouted();
                                continue;
                            }
                        }
                        let payload = match copy {
                            true => copy_out(&mut arena, &record.payload),
                            false => record.payload,
                        };
                        pending.push_back(Message {
                            peer: conn.peer,
                            payload,
                        });
                    }
                }
            }
            deliver(&mut current, &mut pending).await;
            let mut ka = lock(&conn.keepalive);
            ka.on_receive(now);
            if app {
                ka.on_app_traffic(now);
            }
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
            return Ok(goaway);
        }
    }
}

/// Where the reader gets its bytes: the socket, or, on testnets with an
/// injected link delay, a task that reads the socket continuously and
/// stamps each chunk with its arrival time, so every chunk is handled
/// exactly one delay after it arrived and reads never wait on each other
/// (a sleep after each read would delay data by up to twice the delay).
enum Source {
    Socket(OwnedReadHalf),
    Delayed {
        rx: tokio::sync::mpsc::Receiver<(Instant, Bytes)>,
        delay: Duration,
        task: tokio::task::JoinHandle<()>,
    },
}

impl Source {
    fn new(mut rd: OwnedReadHalf, delay: Duration) -> Source {
        if delay.is_zero() {
            return Source::Socket(rd);
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
            Source::Socket(rd) => rd.read_buf(buf).await,
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

/// Hands the messages gathered for one inbox over, waiting for space if
/// the channel blocks (which stops this connection's reading).
async fn deliver(inbox: &mut Option<Arc<Inbox>>, pending: &mut VecDeque<Message>) {
    if let Some(inbox) = inbox {
        while !inbox.push(pending) {
            inbox.wait_for_space().await;
        }
    }
    pending.clear();
}

/// Whether `record` will be kept: a request (queued for a handler), a
/// response to a request of ours, or a message on a routed channel.
fn keeps(node: &Inner, conn: &Conn, cache: &mut InboxCache, record: &Record) -> bool {
    let p = &record.payload;
    match record.channel {
        REQUEST_CHANNEL => match p.first() {
            Some(1) => true,
            Some(2) => peerlink_proto::varint::get(p.get(1..).unwrap_or_default(), u64::MAX)
                .is_ok_and(|(id, _)| lock(&conn.requests).contains_key(&id)),
            _ => false,
        },
        ch if ch == GOSSIP_CHANNEL || ch >= FIRST_APP_CHANNEL => {
            inbox_for(node, cache, ch).is_some()
        }
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
fn copies(node: &Inner, conn: &Conn, cache: &mut InboxCache, plain: &Bytes) -> bool {
    if plain.len() < READ_CHUNK / 2 {
        return true;
    }
    let mut kept = 0usize;
    for record in Records::new(plain.clone()) {
        // A malformed record is reported when the frame is handled.
        let Ok(record) = record else { return true };
        if keeps(node, conn, cache, &record) {
            kept += record.payload.len();
        }
    }
    kept.saturating_mul(2) < plain.len()
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

fn inbox_for(node: &Inner, cache: &mut InboxCache, ch: u16) -> Option<Arc<Inbox>> {
    let generation = node.inbox_generation.load(Ordering::Acquire);
    if generation != cache.generation {
        cache.map = lock(&node.inboxes).clone();
        cache.generation = generation;
    }
    cache.map.get(&ch).cloned()
}

fn on_rr(node: &Arc<Inner>, conn: &Arc<Conn>, msg: RrMessage) -> Result<(), NetError> {
    match msg {
        RrMessage::Request { id, protocol, body } => node.on_request(conn, id, protocol, body)?,
        RrMessage::Response { id, body } => {
            let tx = lock(&conn.requests).remove(&id);
            if let Some(tx) = tx {
                let _ = tx.send(Ok(body));
            }
        }
        RrMessage::Error { id, code, message } => {
            let tx = lock(&conn.requests).remove(&id);
            if let Some(tx) = tx {
                let _ = tx.send(Err(NetError::Remote { code, message }));
            }
        }
    }
    conn.close_if_drained();
    Ok(())
}

/// Sends an error response for request `id`; fails if the peer has let
/// too many answers pile up unread.
pub(crate) fn respond_error(
    conn: &Conn,
    id: u64,
    code: RemoteErrorCode,
    message: &str,
) -> Result<(), NetError> {
    let msg = RrMessage::Error {
        id,
        code,
        message: message.to_string(),
    }
    .encode();
    conn.out
        .try_push(REQUEST_CHANNEL, msg, true)
        .map_err(|e| match e {
            // A closing connection is not the peer's fault.
            NetError::QueueFull { .. } => NetError::Flood("requests"),
            other => other,
        })
}

/// Seals and writes the queued frames until the connection closes.
pub(crate) async fn writer(
    node: Arc<Inner>,
    conn: Arc<Conn>,
    wr: OwnedWriteHalf,
    sealer: FrameSealer,
) -> Result<(), NetError> {
    let stall = node.config.keepalive.timeout;
    let mut idle = false;
    // Set once our go-away is out: the drain's deadline.
    let mut draining: Option<tokio::time::Instant> = None;
    let mut held = Some(WriteSide {
        wr,
        sealer,
        backlog: BytesMut::new(),
    });
    loop {
        if held.is_none() {
            held = conn.out.unpark_write_side();
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
        let Some(batch) = conn.out.take() else {
            if !idle {
                // Let senders on this worker add more before we park: fewer
                // wake-ups, fuller frames.
                idle = true;
                tokio::task::yield_now().await;
                continue;
            }
            conn.out.trim();
            // While we sleep, senders may write directly.
            if let Some(ws) = held.take() {
                conn.out.park_write_side(ws);
            }
            let deadline = lock(&conn.keepalive).next_deadline();
            tokio::select! {
                _ = conn.out.wait_for_work() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            poll_keepalive(&node, &conn);
            continue;
        };
        idle = false;
        for mut frame in batch.frames {
            ws.sealer.seal(&mut frame, 0)?;
            write(&mut ws.wr, &frame, stall).await?;
            conn.out.recycle(frame);
        }
        if let Some(close) = batch.closing {
            let drain_until = match draining {
                Some(t) => t,
                None => {
                    let mut frame = BytesMut::new();
                    peerlink_proto::frame::begin_frame(&mut frame);
                    peerlink_proto::frame::put_record(
                        &mut frame,
                        CONTROL_CHANNEL,
                        &Control::GoAway(close.reason).encode(),
                    );
                    ws.sealer.seal(&mut frame, 0)?;
                    write(&mut ws.wr, &frame, stall).await?;
                    let t = tokio::time::Instant::now() + DRAIN;
                    draining = Some(t);
                    t
                }
            };
            // Draining: a request the peer sent before it saw our go-away
            // is still answered, until the peer says go-away too (it does
            // once nothing of its own is in flight) and we have answered
            // everything. A peer that broke the protocol gets no drain.
            let done = conn.peer_leaving.load(Ordering::Acquire) && !conn.busy();
            let abort = !close.flush || close.reason == GoAwayReason::ProtocolError;
            if !(done || abort || tokio::time::Instant::now() >= drain_until) {
                tokio::select! {
                    _ = conn.out.wait_for_work() => {}
                    _ = tokio::time::sleep(DRAIN_POLL) => {}
                }
                continue;
            }
            let _ = ws.wr.shutdown().await;
            // Give the peer a moment to close its side, then end regardless.
            if !abort {
                tokio::time::sleep(DRAIN).await;
            }
            return Ok(());
        }
        if batch.app {
            lock(&conn.keepalive).on_app_traffic(Instant::now());
        }
        poll_keepalive(&node, &conn);
    }
}

async fn write(wr: &mut OwnedWriteHalf, bytes: &[u8], stall: Duration) -> Result<(), NetError> {
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

fn poll_keepalive(node: &Inner, conn: &Conn) {
    let now = Instant::now();
    let action = {
        let mut ka = lock(&conn.keepalive);
        if conn.out.take_sent_app() {
            ka.on_app_traffic(now);
        }
        ka.poll(now)
    };
    match action {
        KeepaliveAction::Wait => {}
        KeepaliveAction::SendPing(n) => {
            // A full control queue means a flood; the reader closes that.
            let _ = conn.out.push_control(Control::Ping(n).encode());
        }
        KeepaliveAction::TimedOut => {
            node.metrics.closed("keepalive_timeout");
            conn.terminate();
        }
        KeepaliveAction::Idle => conn.out.close(Close {
            reason: GoAwayReason::Idle,
            flush: true,
        }),
    }
}

/// Frame sealer and decoder for an established session.
pub(crate) fn codecs(est: Established, max_message: usize) -> (FrameSealer, FrameDecoder) {
    let dec = FrameDecoder::new(
        est.recv,
        DEFAULT_FRAME_TARGET.max(max_message + MAX_RECORD_OVERHEAD),
    );
    (FrameSealer::new(est.send), dec)
}
