//! The [`Node`]: listeners, dialling, the peer table, channels,
//! request/response, events, seeds and shutdown.

use std::any::Any;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytes::BytesMut;
use peerlink_proto::control::{GoAwayReason, FIRST_APP_CHANNEL, GOSSIP_CHANNEL, MAX_PROTOCOL_NAME};
use peerlink_proto::session::{keep_newer, Session, SessionConfig};
use peerlink_proto::{
    Handshake, Keypair, NoiseIdentity, PeerAddr, PeerId, Transport, TransportAddr,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::admission::{Admitted, Ban, Bans, PendingHandshakes};
use crate::config::NodeConfig;
use crate::conn::{self, Conn};
use crate::metrics::Metrics;
use crate::queue::lock;
use crate::quic::{self, QuicTls};
use crate::routing::{Receiver, Requests, Router};
use crate::share::{self, Share};
use crate::NetError;

/// Something that happened to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    Connected {
        peer: PeerId,
        addr: SocketAddr,
        inbound: bool,
    },
    Disconnected {
        peer: PeerId,
        reason: String,
    },
}

/// A connected peer, as listed by [`Node::peers`].
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub id: PeerId,
    pub addr: SocketAddr,
    /// What carries the connection.
    pub transport: Transport,
    /// The peer dialled us.
    pub inbound: bool,
    /// Smoothed keepalive round-trip time, once measured.
    pub rtt: Option<Duration>,
    pub connected_for: Duration,
}

impl Node {
    /// Binds the listeners and starts the transport: accepting, seeds,
    /// connections. Services (DHT, gossip) are started on top by the
    /// builder ([`crate::NodeBuilder::build`]).
    pub(crate) async fn start(
        keypair: Option<Keypair>,
        listen: &[TransportAddr],
        bootstrap: &[PeerAddr],
        config: NodeConfig,
    ) -> Result<Node, NetError> {
        let keypair = match keypair {
            Some(k) => k,
            None => Keypair::generate()?,
        };
        let identity = NoiseIdentity::new(&keypair)?;
        let tls = QuicTls::new(&keypair, config.keepalive.timeout * 2)?;
        let (mut listeners, mut endpoints) = (Vec::new(), Vec::new());
        for at in listen {
            match at.transport {
                Transport::Tcp => listeners.push(TcpListener::bind(at.socket).await?),
                Transport::Quic => endpoints.push(quic::endpoint(&tls, at.socket, true)?),
            }
        }
        let mut listen_addrs = Vec::new();
        for l in &listeners {
            listen_addrs.push(TransportAddr::tcp(l.local_addr()?));
        }
        for e in &endpoints {
            listen_addrs.push(TransportAddr::quic(e.local_addr()?));
        }
        let metrics = Arc::new(Metrics::new());
        let session = Arc::new(SessionConfig {
            keepalive: config.keepalive,
            channels: config.channels.clone(),
            drain: conn::DRAIN,
        });
        let router = Arc::new(Router::new(
            session.clone(),
            metrics.clone(),
            config.max_request_size,
            config.request_queue,
        ));
        let (events, _) = broadcast::channel(512);
        let inner = Arc::new(Inner {
            keypair,
            identity,
            session,
            handshakes: PendingHandshakes::new(config.limits),
            bans: Bans::new(config.max_bans, config.ip_ban_strikes),
            config,
            metrics,
            peers: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            dials: Mutex::new(HashMap::new()),
            router,
            events,
            next_conn_id: AtomicU64::new(1),
            listen_addrs,
            quic: QuicSide {
                tls,
                endpoints: endpoints.clone(),
                dialling: Mutex::new(Vec::new()),
            },
            tasks: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            services: Mutex::new(Vec::new()),
            requesters: Arc::new(share::Requesters::new(Instant::now())),
        });
        for c in inner
            .session
            .channels
            .iter()
            .filter(|c| c.id >= FIRST_APP_CHANNEL)
        {
            inner.router.inbox(c.id);
        }
        if inner.config.gossip.is_some() {
            // Before any connection, so no peer's subscriptions are lost.
            inner.router.inbox(GOSSIP_CHANNEL);
        }
        let mut tasks = Vec::new();
        for listener in listeners {
            tasks.push(tokio::spawn(accept_loop(Arc::downgrade(&inner), listener)));
        }
        for endpoint in endpoints {
            tasks.push(tokio::spawn(quic_accept_loop(
                Arc::downgrade(&inner),
                endpoint,
            )));
        }
        for seed in bootstrap.iter().copied() {
            tasks.push(tokio::spawn(redial_loop(Arc::downgrade(&inner), seed)));
        }
        lock(&inner.tasks).extend(tasks);
        Ok(Node { inner })
    }
}

/// A handle to a [`Node`] that does not keep it alive.
#[derive(Clone)]
pub(crate) struct WeakNode(Weak<Inner>);

impl WeakNode {
    pub fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|inner| Node { inner })
    }
}

/// A peerlink node: a keypair, listeners and connections to peers.
///
/// Cheap to clone; all clones drive the same node. Call
/// [`Node::shutdown`] to close it (dropping the handles does not).
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub keypair: Keypair,
    identity: NoiseIdentity,
    pub config: NodeConfig,
    /// What every connection's session is configured with.
    session: Arc<SessionConfig>,
    pub metrics: Arc<Metrics>,
    peers: Mutex<HashMap<PeerId, Arc<Conn>>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// One dial per peer at a time (see `Node::connect`).
    dials: Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<()>>>>,
    handshakes: Arc<PendingHandshakes>,
    bans: Bans,
    /// Where inbound messages and requests go.
    router: Arc<Router>,
    events: broadcast::Sender<PeerEvent>,
    next_conn_id: AtomicU64,
    /// Where it listens, TCP first.
    pub listen_addrs: Vec<TransportAddr>,
    quic: QuicSide,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    shutdown: AtomicBool,
    /// The services started on top (the DHT's and gossip's handles), one
    /// per type: the node itself knows none of them.
    services: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
    /// Peers with requests served lately (see [`crate::share`]).
    requesters: Arc<share::Requesters>,
}

/// Holds one slot of the per-IP connection limit until dropped.
pub(crate) struct IpSlot {
    node: Weak<Inner>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(node) = self.node.upgrade() {
            let mut m = lock(&node.per_ip);
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

async fn accept_loop(node: Weak<Inner>, listener: TcpListener) {
    // Failures in a row: logged once when they start and once when they end.
    let mut failures = 0u32;
    loop {
        let accepted = listener.accept().await;
        let Some(inner) = node.upgrade() else { return };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Usually out of descriptors: back off (up to 1 s) instead
                // of spinning.
                if failures == 0 {
                    tracing::warn!("accept failed: {e}; retrying with backoff");
                }
                failures = failures.saturating_add(1);
                drop(inner);
                let backoff = 50u64.saturating_mul(1 << failures.min(5)).min(1000);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                continue;
            }
        };
        if failures > 0 {
            tracing::warn!("accepting again after {failures} failed accepts");
            failures = 0;
        }
        if inner.shutdown.load(Ordering::Acquire) {
            return;
        }
        let Some((admitted, slot)) = inner.admit(addr.ip()) else {
            continue;
        };
        tokio::spawn(inbound(inner, stream, addr, admitted, slot));
    }
}

async fn inbound(
    node: Arc<Inner>,
    mut stream: TcpStream,
    addr: SocketAddr,
    mut admitted: Admitted,
    slot: IpSlot,
) {
    let timeout = node.config.handshake_timeout;
    let first = conn::FirstMessage {
        within: node.config.first_message_timeout,
        heard: &admitted.heard,
    };
    let handshake = tokio::time::timeout(timeout, async {
        stream.set_nodelay(true)?;
        let hs = Handshake::responder(&node.identity)?;
        conn::handshake(&mut stream, hs, node.config.link_delay, Some(first)).await
    });
    let result = tokio::select! {
        r = handshake => r.unwrap_or(Err(NetError::HandshakeTimeout {
            addr,
            after: timeout,
        })),
        _ = &mut admitted.evicted => Err(NetError::HandshakeEvicted),
    };
    drop(admitted);
    match result {
        Ok((est, buf)) => {
            let peer = est.remote;
            let est = Box::new(est);
            let _ = node.register(Wire::Tcp { stream, est, buf }, peer, addr, true, Some(slot));
        }
        Err(e) => {
            tracing::debug!(%addr, "inbound handshake failed: {e}");
            Metrics::inc(&node.metrics.handshake_failures, "reason", e.label());
        }
    }
}

/// What carries a connection once its handshake is done.
pub(crate) enum Wire {
    Tcp {
        stream: TcpStream,
        est: Box<peerlink_proto::Established>,
        /// Bytes that arrived after the handshake.
        buf: BytesMut,
    },
    Quic {
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    },
}

impl Wire {
    fn quic_connection(&self) -> Option<quinn::Connection> {
        match self {
            Wire::Tcp { .. } => None,
            Wire::Quic { conn, .. } => Some(conn.clone()),
        }
    }
}

/// A node's QUIC side: its TLS identity, its listening endpoints, and the
/// endpoints it dials from when it listens on none of that address family.
struct QuicSide {
    tls: QuicTls,
    endpoints: Vec<quinn::Endpoint>,
    dialling: Mutex<Vec<quinn::Endpoint>>,
}

impl QuicSide {
    /// The endpoint to dial `to` from: a listening one of its family (so
    /// the peer sees our listening port), else one bound for dialling.
    fn endpoint_for(&self, to: SocketAddr) -> Result<quinn::Endpoint, NetError> {
        let family =
            |e: &quinn::Endpoint| e.local_addr().is_ok_and(|a| a.is_ipv4() == to.is_ipv4());
        if let Some(e) = self.endpoints.iter().find(|e| family(e)) {
            return Ok(e.clone());
        }
        let mut dialling = lock(&self.dialling);
        if let Some(e) = dialling.iter().find(|e| family(e)) {
            return Ok(e.clone());
        }
        let any: SocketAddr = match to.is_ipv4() {
            true => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            false => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let e = quic::endpoint(&self.tls, any, false)?;
        dialling.push(e.clone());
        Ok(e)
    }

    fn close_all(&self) {
        for e in self.endpoints.iter().chain(lock(&self.dialling).iter()) {
            e.close(0u32.into(), b"shutdown");
        }
    }
}

async fn quic_accept_loop(node: Weak<Inner>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let Some(inner) = node.upgrade() else { return };
        if inner.shutdown.load(Ordering::Acquire) {
            return;
        }
        let addr = incoming.remote_address();
        // The same admission as TCP, before any handshake work is done.
        let Some((admitted, slot)) = inner.admit(addr.ip()) else {
            incoming.refuse();
            continue;
        };
        tokio::spawn(inbound_quic(inner, incoming, addr, admitted, slot));
    }
}

async fn inbound_quic(
    node: Arc<Inner>,
    incoming: quinn::Incoming,
    addr: SocketAddr,
    mut admitted: Admitted,
    slot: IpSlot,
) {
    let timeout = node.config.handshake_timeout;
    let heard = &admitted.heard;
    let handshake = tokio::time::timeout(timeout, async {
        let conn = incoming.accept().map_err(NetError::Quic)?.await?;
        heard.store(true, Ordering::Release);
        let peer = quic::peer_of(&conn)?;
        // The dialler opens the stream and writes to it at once.
        let (send, recv) = conn.accept_bi().await?;
        Ok::<_, NetError>((peer, Wire::Quic { conn, send, recv }))
    });
    let result = tokio::select! {
        r = handshake => r.unwrap_or(Err(NetError::HandshakeTimeout {
            addr,
            after: timeout,
        })),
        _ = &mut admitted.evicted => Err(NetError::HandshakeEvicted),
    };
    drop(admitted);
    match result {
        Ok((peer, wire)) => {
            let _ = node.register(wire, peer, addr, true, Some(slot));
        }
        Err(e) => {
            tracing::debug!(%addr, "inbound QUIC handshake failed: {e}");
            Metrics::inc(&node.metrics.handshake_failures, "reason", e.label());
        }
    }
}

async fn redial_loop(node: Weak<Inner>, seed: PeerAddr) {
    let mut backoff = match node.upgrade() {
        Some(n) => n.config.redial_backoff,
        None => return,
    };
    loop {
        let Some(inner) = node.upgrade() else { return };
        if inner.shutdown.load(Ordering::Acquire) {
            return;
        }
        let wait = if inner.connected(&seed.id) {
            Duration::from_millis(250)
        } else {
            match (Node {
                inner: inner.clone(),
            })
            .connect(seed)
            .await
            {
                Ok(_) => {
                    backoff = inner.config.redial_backoff;
                    Duration::from_millis(250)
                }
                Err(e) => {
                    tracing::debug!(%seed, "seed dial failed: {e}; retrying in {backoff:?}");
                    let wait = backoff + jitter(backoff / 4);
                    backoff = (backoff * 2).min(inner.config.max_redial_backoff);
                    wait
                }
            }
        };
        drop(inner);
        tokio::time::sleep(wait).await;
    }
}

/// Up to `max` of jitter, from the clock's low bits (spreads redials).
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let max = max.as_nanos().max(1) as u64;
    Duration::from_nanos(u64::from(nanos) % max)
}

impl Inner {
    /// A peer broke the protocol (connected from `ip`): counted in
    /// `peer_errors` under `reason` and banned for the ban duration; its
    /// address collects a strike (see [`crate::admission`]).
    fn ban_offender(&self, peer: PeerId, ip: Option<IpAddr>, reason: &'static str) {
        Metrics::inc(&self.metrics.peer_errors, "reason", reason);
        let duration = self.config.ban_duration;
        if self.bans.ban(Instant::now(), peer, ip, duration, reason) {
            tracing::info!(?ip, "address banned: repeated offences");
        }
    }

    fn reject(&self, limit: &'static str) {
        Metrics::inc(&self.metrics.connections_rejected, "limit", limit);
    }

    /// Admission of a connection from `ip`, on any transport, before any
    /// handshake work: not banned, a pending-handshake slot, an IP slot.
    /// A refusal is counted under its limit.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<(Admitted, IpSlot)> {
        if self.bans.ip_banned(Instant::now(), &ip) {
            self.reject("banned");
            return None;
        }
        let admitted = match self.handshakes.admit(ip) {
            Ok((admitted, _evicted)) => admitted,
            Err(refusal) => {
                self.reject(refusal.label());
                return None;
            }
        };
        let Some(slot) = self.ip_slot(ip) else {
            self.reject("per_ip");
            return None;
        };
        Some((admitted, slot))
    }

    fn ip_slot(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut m = lock(&self.per_ip);
        let n = m.entry(ip).or_insert(0);
        if *n >= self.config.limits.max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            node: Arc::downgrade(self),
            ip,
        })
    }

    /// Connected and usable: a connection that is closing (either side
    /// said go-away) takes no new requests, so it does not count.
    fn connected(&self, peer: &PeerId) -> bool {
        lock(&self.peers).get(peer).is_some_and(|c| c.is_open())
    }

    /// Installs an established connection and starts its tasks.
    fn register(
        self: &Arc<Self>,
        wire: Wire,
        peer: PeerId,
        addr: SocketAddr,
        inbound: bool,
        slot: Option<IpSlot>,
    ) -> Result<PeerId, NetError> {
        if self.bans.peer_banned(Instant::now(), &peer) {
            // Only now is the identity known: no connection, not even for
            // a moment (the stream closes here). Coming back while banned
            // is a strike against the address it came from.
            self.reject("banned");
            if inbound && self.bans.returned(Instant::now(), &peer, addr.ip()) {
                tracing::info!(%addr, %peer, "address banned: a banned peer kept coming back");
            }
            return Err(NetError::Banned(peer));
        }
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(
            Conn::new(
                id,
                peer,
                addr,
                inbound,
                Session::new(self.session.clone(), Instant::now()),
                Share::new(self.config.peer_serve_rate, self.requesters.clone()),
                self.metrics.clone(),
            )
            .with_quic(wire.quic_connection()),
        );
        let mut refused = None;
        {
            let mut peers = lock(&self.peers);
            if self.shutdown.load(Ordering::Acquire) {
                return Err(NetError::Shutdown);
            }
            match peers.get(&peer) {
                Some(old)
                    if old.is_open()
                        && !keep_newer(self.keypair.peer_id(), peer, old.inbound, inbound) =>
                {
                    refused = Some((GoAwayReason::Duplicate, None))
                }
                Some(old) => {
                    old.close(GoAwayReason::Duplicate, true);
                    peers.insert(peer, conn.clone());
                }
                None => {
                    let limits = &self.config.limits;
                    let inbound_count = peers.values().filter(|c| c.inbound).count();
                    if peers.len() >= limits.max_peers {
                        refused = Some((GoAwayReason::TooManyPeers, Some("max_peers")));
                    } else if inbound && inbound_count >= limits.max_inbound {
                        refused = Some((GoAwayReason::TooManyPeers, Some("max_inbound")));
                    } else {
                        peers.insert(peer, conn.clone());
                        self.metrics.gauge(if inbound { "in" } else { "out" }).inc();
                    }
                }
            }
        }
        let max = self.config.limits.max_message_size;
        let (rd, wr, buf, enc, dec) = match wire {
            Wire::Tcp { stream, est, buf } => {
                let (enc, dec) = conn::codecs(*est, max);
                let (rd, wr) = stream.into_split();
                (
                    Box::new(rd) as conn::Rd,
                    Box::new(wr) as conn::Wr,
                    buf,
                    enc,
                    dec,
                )
            }
            Wire::Quic { send, recv, .. } => {
                let (enc, dec) = conn::plain_codecs(max);
                (
                    Box::new(recv) as conn::Rd,
                    Box::new(send) as conn::Wr,
                    BytesMut::new(),
                    enc,
                    dec,
                )
            }
        };
        let reader = tokio::spawn({
            let (node, conn) = (self.clone(), conn.clone());
            async move {
                let (router, delay) = (node.router.clone(), node.config.link_delay);
                let result = conn::reader(conn.clone(), router, rd, buf, dec, delay).await;
                node.on_closed(&conn, result);
                drop(slot);
            }
        });
        let writer = tokio::spawn({
            let (node, conn) = (self.clone(), conn.clone());
            async move {
                let result = conn::writer(conn.clone(), wr, enc).await;
                node.on_closed(&conn, result);
            }
        });
        conn.set_tasks(reader.abort_handle(), writer.abort_handle());
        if let Some((reason, limit)) = refused {
            // The peer learns why from the go-away; its connection ends.
            conn.close(reason, false);
            return match limit {
                Some(l) => {
                    self.reject(l);
                    Err(NetError::LimitReached(l))
                }
                None => Ok(peer), // a duplicate: the peer is connected already
            };
        }
        Metrics::inc(
            &self.metrics.connections_opened,
            "direction",
            if inbound { "in" } else { "out" },
        );
        let _ = self.events.send(PeerEvent::Connected {
            peer,
            addr,
            inbound,
        });
        Ok(peer)
    }

    /// Cleans up after a connection's task ended (idempotent).
    fn on_closed(&self, conn: &Arc<Conn>, result: Result<Option<GoAwayReason>, NetError>) {
        if !conn.terminate() {
            return;
        }
        let reason = match &result {
            Ok(None) => "closed".to_string(),
            Ok(Some(r)) => format!("go-away: {r:?}"),
            Err(e) => {
                if e.is_peer_fault() {
                    tracing::info!(peer = %conn.peer, "peer broke the protocol: {e}");
                    self.ban_offender(conn.peer, Some(conn.addr.ip()), e.label());
                }
                e.to_string()
            }
        };
        self.metrics.closed(match &result {
            Ok(_) => "closed",
            Err(e) => e.label(),
        });
        let removed = {
            let mut peers = lock(&self.peers);
            match peers.get(&conn.peer) {
                Some(c) if c.id == conn.id => peers.remove(&conn.peer),
                _ => None,
            }
        };
        if removed.is_some() {
            self.metrics
                .gauge(if conn.inbound { "in" } else { "out" })
                .dec();
            let _ = self.events.send(PeerEvent::Disconnected {
                peer: conn.peer,
                reason,
            });
        }
    }
}

impl Metrics {
    pub(crate) fn closed(&self, reason: &'static str) {
        Metrics::inc(&self.connections_closed, "reason", reason);
    }
}

impl Node {
    /// Starts building a node.
    /// A handle that does not keep the node alive (for its own tasks).
    pub(crate) fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    pub(crate) fn add_task(&self, task: JoinHandle<()>) {
        lock(&self.inner.tasks).push(task);
    }

    /// Installs a service's handle (replacing one of the same type).
    pub(crate) fn set_service<T: Any + Send + Sync>(&self, service: T) {
        let mut services = lock(&self.inner.services);
        services.retain(|s| !s.is::<T>());
        services.push(Arc::new(service));
    }

    /// The handle of the service of type `T`, if one was installed.
    pub(crate) fn service<T: Any + Send + Sync + Clone>(&self) -> Option<T> {
        lock(&self.inner.services)
            .iter()
            .find_map(|s| s.downcast_ref::<T>().cloned())
    }

    /// The remote address of the connection to `peer`, if connected.
    pub fn remote_addr(&self, peer: &PeerId) -> Option<SocketAddr> {
        lock(&self.inner.peers).get(peer).map(|c| c.addr)
    }

    /// The remote address of the connection to `peer`, with its transport.
    pub fn remote(&self, peer: &PeerId) -> Option<TransportAddr> {
        lock(&self.inner.peers).get(peer).map(|c| TransportAddr {
            transport: c.transport(),
            socket: c.addr,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.inner.keypair.peer_id()
    }

    pub fn keypair(&self) -> &Keypair {
        &self.inner.keypair
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The bound listen addresses (with real ports where 0 was asked).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen_on(Transport::Tcp)
    }

    /// The local addresses listening on `transport`.
    pub fn listen_on(&self, transport: Transport) -> Vec<SocketAddr> {
        let on = |a: &&TransportAddr| a.transport == transport;
        self.inner
            .listen_addrs
            .iter()
            .filter(on)
            .map(|a| a.socket)
            .collect()
    }

    /// This node's addresses, one per listener (TCP first).
    pub fn addrs(&self) -> Vec<PeerAddr> {
        let id = self.peer_id();
        self.inner
            .listen_addrs
            .iter()
            .map(|a| PeerAddr::with(id, *a))
            .collect()
    }

    /// This node's first listen address in `<peer-id>@host:port` form.
    pub fn addr(&self) -> Option<PeerAddr> {
        self.inner
            .listen_addrs
            .first()
            .map(|a| PeerAddr::with(self.peer_id(), *a))
    }

    /// Dials `addr` unless already connected, checking that the remote key
    /// is `addr.id`. Returns once the connection is established.
    pub async fn connect(&self, addr: PeerAddr) -> Result<PeerId, NetError> {
        let inner = &self.inner;
        if inner.shutdown.load(Ordering::Acquire) {
            return Err(NetError::Shutdown);
        }
        if inner.connected(&addr.id) {
            return Ok(addr.id);
        }
        if inner.bans.peer_banned(Instant::now(), &addr.id) {
            return Err(NetError::Banned(addr.id));
        }
        // One dial per peer at a time: a second caller waits for the first
        // and then finds the peer connected. Two dials of one peer race,
        // and the two sides could each keep a different one of the two
        // connections and close the other (both then end).
        let gate = lock(&inner.dials).entry(addr.id).or_default().clone();
        let result = {
            let _dialling = gate.lock().await;
            if inner.connected(&addr.id) {
                Ok(addr.id)
            } else {
                self.dial(addr).await
            }
        };
        let mut dials = lock(&inner.dials);
        // The map's reference and ours: nobody else is waiting.
        if Arc::strong_count(&gate) == 2 {
            dials.remove(&addr.id);
        }
        result
    }

    async fn dial(&self, addr: PeerAddr) -> Result<PeerId, NetError> {
        let inner = &self.inner;
        let timeout = inner.config.handshake_timeout;
        let result = tokio::time::timeout(timeout, async {
            if addr.transport == Transport::Quic {
                return self.dial_quic(addr).await;
            }
            let delay = inner.config.link_delay;
            if !delay.is_zero() {
                // The TCP handshake's round trip.
                tokio::time::sleep(delay * 2).await;
            }
            let mut stream = match inner.config.dial_source {
                None => TcpStream::connect(addr.addr).await?,
                Some(ip) => {
                    let socket = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(addr.addr).await?
                }
            };
            stream.set_nodelay(true)?;
            let hs = Handshake::initiator(&inner.identity, addr.id, inner.config.cipher)?;
            let (est, buf) = conn::handshake(&mut stream, hs, delay, None).await?;
            let est = Box::new(est);
            Ok::<_, NetError>(Wire::Tcp { stream, est, buf })
        })
        .await
        .unwrap_or(Err(NetError::HandshakeTimeout {
            addr: addr.addr,
            after: timeout,
        }));
        match result {
            Ok(wire) => inner.register(wire, addr.id, addr.addr, false, None),
            Err(e) => {
                if !matches!(e, NetError::Io(_)) {
                    Metrics::inc(&inner.metrics.handshake_failures, "reason", e.label());
                }
                Err(e)
            }
        }
    }

    /// QUIC's handshake, then the connection's one stream, opened and
    /// announced with an empty frame (the peer learns of a stream only
    /// when something arrives on it).
    async fn dial_quic(&self, addr: PeerAddr) -> Result<Wire, NetError> {
        let quic = &self.inner.quic;
        let delay = self.inner.config.link_delay;
        if !delay.is_zero() {
            // The QUIC handshake's round trip.
            tokio::time::sleep(delay * 2).await;
        }
        let endpoint = quic.endpoint_for(addr.addr)?;
        let conn = quic::connect(&endpoint, &quic.tls, addr.addr, addr.id).await?;
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&[0u8; peerlink_proto::frame::FRAME_HEADER_LEN])
            .await
            .map_err(|e| NetError::Io(e.into()))?;
        Ok(Wire::Quic { conn, send, recv })
    }

    /// Closes the connection to `peer` after sending what is queued.
    pub fn disconnect(&self, peer: &PeerId) -> bool {
        let conn = lock(&self.inner.peers).get(peer).cloned();
        match conn {
            Some(c) => {
                c.close(GoAwayReason::Normal, true);
                true
            }
            None => false,
        }
    }

    /// A peer broke the protocol: counted under `reason`, closed at once
    /// (a go-away, no grace period) and banned for the ban duration; its
    /// address collects a strike (see [`crate::admission`]).
    pub(crate) fn punish(&self, peer: &PeerId, reason: &'static str) {
        let conn = lock(&self.inner.peers).get(peer).cloned();
        self.inner
            .ban_offender(*peer, conn.as_ref().map(|c| c.addr.ip()), reason);
        if let Some(c) = conn {
            c.close(GoAwayReason::ProtocolError, false);
        }
    }

    /// Keeps `peer` out for `duration`: its connection is closed and no
    /// new one is accepted or dialled until the ban ends or
    /// [`Node::unban`] lifts it.
    pub fn ban(&self, peer: &PeerId, duration: Duration) {
        self.inner
            .bans
            .ban(Instant::now(), *peer, None, duration, "manual");
        self.disconnect(peer);
    }

    /// Lifts a ban on `peer`; false if it was not banned.
    pub fn unban(&self, peer: &PeerId) -> bool {
        self.inner.bans.unban(peer)
    }

    /// Lifts a ban on an address (set after repeated offences).
    pub fn unban_ip(&self, ip: &IpAddr) -> bool {
        self.inner.bans.unban_ip(ip)
    }

    /// Peer bans in force, longest left first.
    pub fn bans(&self) -> Vec<Ban> {
        self.inner.bans.list(Instant::now())
    }

    /// Addresses banned after repeated offences.
    pub fn banned_ips(&self) -> Vec<IpAddr> {
        self.inner.bans.banned_ips(Instant::now())
    }

    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.inner.bans.peer_banned(Instant::now(), peer)
    }

    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.inner.connected(peer)
    }

    /// The connected peers with their round-trip times.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let peers = lock(&self.inner.peers);
        peers
            .values()
            .map(|c| PeerInfo {
                id: c.peer,
                addr: c.addr,
                transport: c.transport(),
                inbound: c.inbound,
                rtt: c.rtt(),
                connected_for: c.connected_at.elapsed(),
            })
            .collect()
    }

    /// A stream of connect and disconnect events from now on.
    pub fn events(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.events.subscribe()
    }

    fn conn(&self, peer: &PeerId) -> Result<Arc<Conn>, NetError> {
        lock(&self.inner.peers)
            .get(peer)
            .filter(|c| c.is_open())
            .cloned()
            .ok_or(NetError::NotConnected(*peer))
    }

    /// Requests are in flight to or from `peer` (closing the connection
    /// now would fail them).
    pub(crate) fn is_busy(&self, peer: &PeerId) -> bool {
        lock(&self.inner.peers).get(peer).is_some_and(|c| c.busy())
    }

    fn check_send(&self, channel: u16, len: usize) -> Result<(), NetError> {
        if channel < FIRST_APP_CHANNEL {
            return Err(NetError::ChannelReserved(channel));
        }
        let max = self.inner.config.limits.max_message_size;
        if len > max {
            return Err(NetError::MessageTooLarge { len, max });
        }
        Ok(())
    }

    /// Queues a message to `peer` on an application `channel` (>= 16). With
    /// [`Policy::Block`] this waits while the channel's queue is full; with
    /// [`Policy::Drop`] it returns [`NetError::QueueFull`] and counts a drop.
    pub async fn send(
        &self,
        peer: &PeerId,
        channel: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), NetError> {
        let payload = payload.into();
        self.check_send(channel, payload.len())?;
        self.conn(peer)?.push(channel, &payload).await
    }

    /// Like [`Node::send`], but never waits: a full queue is `QueueFull`.
    pub fn try_send(
        &self,
        peer: &PeerId,
        channel: u16,
        payload: impl Into<Bytes>,
    ) -> Result<(), NetError> {
        let payload = payload.into();
        self.check_send(channel, payload.len())?;
        self.conn(peer)?.try_push(channel, &payload, false)
    }

    /// A handle that sends to one peer without a peer-table lookup per
    /// message (for hot loops). It fails once that connection closes.
    pub fn sender(&self, peer: &PeerId) -> Result<PeerSender, NetError> {
        Ok(PeerSender {
            node: self.clone(),
            conn: self.conn(peer)?,
        })
    }

    /// Bytes queued to `peer` on `channel` and not yet written.
    pub fn queued_bytes(&self, peer: &PeerId, channel: u16) -> usize {
        self.conn(peer).map_or(0, |c| c.queued_bytes(channel))
    }

    /// The receiver of an application channel (>= 16): messages from every
    /// peer, in order per peer. One receiver per channel at a time.
    /// Messages on channels without a receiver are dropped and counted,
    /// except configured channels ([`NodeBuilder::channel`]), which queue
    /// from the start.
    pub fn channel(&self, id: u16) -> Result<Receiver, NetError> {
        if id < FIRST_APP_CHANNEL {
            return Err(NetError::ChannelReserved(id));
        }
        self.inner
            .router
            .receiver(id)
            .ok_or(NetError::ChannelTaken(id))
    }

    /// The receiver of a channel peerlink itself uses (below 16); its
    /// inbox was created when the node was built.
    /// `None` if it was claimed already.
    pub(crate) fn internal_channel(&self, id: u16) -> Option<Receiver> {
        self.inner.router.receiver(id)
    }

    /// Queues on an internal channel without waiting; `force` ignores the
    /// queue limit (within the forced overrun).
    pub(crate) fn push_internal(
        &self,
        peer: &PeerId,
        channel: u16,
        payload: Bytes,
        force: bool,
    ) -> Result<(), NetError> {
        self.conn(peer)?.try_push(channel, &payload, force)
    }

    /// Serves a request/response protocol: requests arrive on the returned
    /// stream; answer each with [`Request::respond`].
    pub fn serve(&self, protocol: &str) -> Result<Requests, NetError> {
        check_protocol(protocol)?;
        self.inner.router.serve(protocol)
    }

    /// Sends a request and waits for the response, with the node's default
    /// timeout and the node's message size limit on the response.
    pub async fn request(
        &self,
        peer: &PeerId,
        protocol: &str,
        body: impl Into<Bytes>,
    ) -> Result<Bytes, NetError> {
        let (timeout, max) = (
            self.inner.config.request_timeout,
            self.inner.config.limits.max_message_size,
        );
        self.request_with(peer, protocol, body, timeout, max).await
    }

    /// [`Node::request`] with an explicit timeout and response size limit.
    pub async fn request_with(
        &self,
        peer: &PeerId,
        protocol: &str,
        body: impl Into<Bytes>,
        timeout: Duration,
        max_response: usize,
    ) -> Result<Bytes, NetError> {
        check_protocol(protocol)?;
        let body = body.into();
        let max = self.inner.config.limits.max_message_size;
        if body.len() + MAX_PROTOCOL_NAME + 16 > max {
            return Err(NetError::MessageTooLarge {
                len: body.len(),
                max,
            });
        }
        let conn = self.conn(peer)?;
        let mut sent = None;
        let result = async {
            let (id, rx) = conn.request(protocol, body).await?;
            sent = Some(id);
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(b))) if b.len() > max_response => Err(NetError::ResponseTooLarge {
                    len: b.len(),
                    max: max_response,
                }),
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(NetError::ConnectionClosed),
                Err(_) => Err(NetError::RequestTimeout(timeout)),
            }
        }
        .await;
        if let Some(id) = sent.filter(|_| result.is_err()) {
            conn.forget_request(id);
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(NetError::RequestTimeout(_)) => "timeout",
            Err(NetError::Remote { .. }) => "remote_error",
            Err(NetError::ConnectionClosed) => "closed",
            Err(_) => "failed",
        };
        Metrics::inc(&self.inner.metrics.requests, "outcome", outcome);
        result
    }

    /// Measures one round trip to `peer` with a ping.
    pub async fn ping(&self, peer: &PeerId) -> Result<Duration, NetError> {
        let conn = self.conn(peer)?;
        let (sent, nonce, rx) = conn.ping();
        match tokio::time::timeout(self.inner.config.request_timeout, rx).await {
            Ok(Ok(at)) => Ok(at.saturating_duration_since(sent)),
            Ok(Err(_)) => Err(NetError::ConnectionClosed),
            Err(_) => {
                conn.forget_ping(nonce);
                Err(NetError::RequestTimeout(self.inner.config.request_timeout))
            }
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Closes every connection (flushing queues, bounded by 2 s), stops the
    /// listeners and seed dialling, and ends every receiver.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        let tasks: Vec<_> = lock(&inner.tasks).drain(..).collect();
        for t in tasks {
            t.abort();
            // Wait for it to drop what it holds (listeners, the DHT store).
            let _ = t.await;
        }
        let conns: Vec<_> = lock(&inner.peers).values().cloned().collect();
        for c in &conns {
            c.close(GoAwayReason::Normal, true);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && conns.iter().any(|c| !c.is_terminated()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for c in &conns {
            inner.on_closed(c, Ok(None));
        }
        inner.router.close();
        inner.quic.close_all();
    }
}

fn check_protocol(protocol: &str) -> Result<(), NetError> {
    if protocol.is_empty() || protocol.len() > MAX_PROTOCOL_NAME {
        return Err(NetError::BadProtocolName(protocol.to_string()));
    }
    Ok(())
}

/// Sends to one peer without looking it up each time; see [`Node::sender`].
#[derive(Clone)]
pub struct PeerSender {
    node: Node,
    conn: Arc<Conn>,
}

impl PeerSender {
    pub fn peer(&self) -> PeerId {
        self.conn.peer
    }

    pub async fn send(&self, channel: u16, payload: impl Into<Bytes>) -> Result<(), NetError> {
        let payload = payload.into();
        self.node.check_send(channel, payload.len())?;
        self.conn.push(channel, &payload).await
    }

    pub fn try_send(&self, channel: u16, payload: impl Into<Bytes>) -> Result<(), NetError> {
        let payload = payload.into();
        self.node.check_send(channel, payload.len())?;
        self.conn.try_push(channel, &payload, false)
    }
}
