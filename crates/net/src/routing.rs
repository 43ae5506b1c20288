//! Where inbound traffic goes: each channel's [`Inbox`] and its
//! [`Receiver`], and each served protocol's request queue and its
//! [`Requests`]. Connections hand what their sessions received to the
//! [`Router`]; a [`Request`] answers through the [`Responder`] it came
//! from, so this module knows nothing of connections.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use peerlink_proto::control::RemoteErrorCode;
use peerlink_proto::session::SessionConfig;
use peerlink_proto::PeerId;

use crate::config::Policy;
use crate::fair::{self, FairQueue};
use crate::metrics::Metrics;
use crate::queue::{lock, Inbox, Message};
use crate::NetError;

/// The side of a connection a request is answered on.
pub(crate) trait Responder: Send + Sync {
    fn respond(&self, id: u64, body: Bytes) -> Result<(), NetError>;
    fn respond_error(&self, id: u64, code: RemoteErrorCode, message: &str) -> Result<(), NetError>;
    /// Counts `bytes` against the peer's share of request handling.
    fn charge(&self, bytes: u64);
}

/// A node's inboxes and request handlers.
pub(crate) struct Router {
    inboxes: Mutex<HashMap<u16, Arc<Inbox>>>,
    /// Bumped whenever `inboxes` changes, so readers refresh their cache.
    generation: AtomicU64,
    handlers: Mutex<HashMap<String, Arc<FairQueue<Request>>>>,
    session: Arc<SessionConfig>,
    metrics: Arc<Metrics>,
    max_request_size: usize,
    request_queue: usize,
}

/// Per-reader cache of the inboxes, refreshed when the router's set changes.
pub(crate) struct InboxCache {
    generation: u64,
    map: HashMap<u16, Arc<Inbox>>,
}

impl Default for InboxCache {
    fn default() -> Self {
        InboxCache {
            generation: u64::MAX,
            map: HashMap::new(),
        }
    }
}

impl Router {
    pub fn new(
        session: Arc<SessionConfig>,
        metrics: Arc<Metrics>,
        max_request_size: usize,
        request_queue: usize,
    ) -> Self {
        Router {
            inboxes: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            handlers: Mutex::new(HashMap::new()),
            session,
            metrics,
            max_request_size,
            request_queue,
        }
    }

    /// Channel `id`'s inbox, created on first use.
    pub fn inbox(&self, id: u16) -> Arc<Inbox> {
        let mut map = lock(&self.inboxes);
        let inbox = map
            .entry(id)
            .or_insert_with(|| {
                Arc::new(Inbox::new(
                    self.session.channel(id),
                    self.metrics.inbound(id),
                ))
            })
            .clone();
        self.generation.fetch_add(1, Ordering::AcqRel);
        inbox
    }

    /// The receiver of channel `id`, or `None` if it already has one.
    pub fn receiver(self: &Arc<Self>, id: u16) -> Option<Receiver> {
        let inbox = self.inbox(id);
        inbox.claim().then(|| Receiver {
            inbox,
            router: Arc::downgrade(self),
            id,
        })
    }

    /// Channel `ch`'s inbox if it has one, through `cache`.
    pub fn routed(&self, cache: &mut InboxCache, ch: u16) -> Option<Arc<Inbox>> {
        let generation = self.generation.load(Ordering::Acquire);
        if generation != cache.generation {
            cache.map = lock(&self.inboxes).clone();
            cache.generation = generation;
        }
        cache.map.get(&ch).cloned()
    }

    /// Serves `protocol`: its requests arrive on the returned stream.
    pub fn serve(&self, protocol: &str) -> Result<Requests, NetError> {
        let mut handlers = lock(&self.handlers);
        if handlers.get(protocol).is_some_and(|h| !h.is_closed()) {
            return Err(NetError::ProtocolTaken(protocol.to_string()));
        }
        let queue = Arc::new(FairQueue::new(self.request_queue));
        handlers.insert(protocol.to_string(), queue.clone());
        Ok(Requests { queue })
    }

    /// Hands the peer's request `id` to its protocol's handler, or answers
    /// it with an error at once. Fails only when the peer lets answers
    /// pile up unread (it should be disconnected).
    pub fn on_request(
        &self,
        peer: PeerId,
        responder: Weak<dyn Responder>,
        id: u64,
        protocol: String,
        body: Bytes,
    ) -> Result<(), NetError> {
        let Some(conn) = responder.upgrade() else {
            return Ok(());
        };
        if body.len() > self.max_request_size {
            return conn.respond_error(id, RemoteErrorCode::TooLarge, "request too large");
        }
        let handler = lock(&self.handlers).get(&protocol).cloned();
        let Some(handler) = handler else {
            return conn.respond_error(id, RemoteErrorCode::UnknownProtocol, &protocol);
        };
        conn.charge(body.len() as u64 + crate::share::REQUEST_COST);
        let request = Request {
            peer,
            protocol,
            body,
            reply: Some((responder, id)),
        };
        match handler.push(peer, request) {
            Ok(()) => Ok(()),
            Err(fair::Refused::Full(mut r)) => {
                r.reply = None;
                conn.respond_error(id, RemoteErrorCode::Overloaded, "request queue full")
            }
            Err(fair::Refused::Closed(mut r)) => {
                r.reply = None;
                conn.respond_error(id, RemoteErrorCode::UnknownProtocol, "no longer served")
            }
        }
    }

    /// The node shut down: receivers drain what is queued and then end;
    /// queued requests are answered "no response".
    pub fn close(&self) {
        for inbox in lock(&self.inboxes).values() {
            inbox.close(false);
        }
        let handlers = std::mem::take(&mut *lock(&self.handlers));
        for queue in handlers.values() {
            queue.close();
        }
    }

    pub fn dropped_unrouted(&self) {
        self.metrics.dropped_unrouted();
    }
}

/// Hands the messages gathered for one inbox over, waiting for space if
/// the channel blocks (which stops the calling connection's reading).
pub(crate) async fn deliver(inbox: &mut Option<Arc<Inbox>>, pending: &mut VecDeque<Message>) {
    if let Some(inbox) = inbox {
        while !inbox.push(pending) {
            inbox.wait_for_space().await;
        }
    }
    pending.clear();
}

/// Receives an application channel's messages; see [`crate::Node::channel`].
/// Dropping it discards what is queued and frees the channel.
pub struct Receiver {
    inbox: Arc<Inbox>,
    router: Weak<Router>,
    id: u16,
}

impl Receiver {
    /// The next message, or `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<Message> {
        self.inbox.recv().await
    }

    /// Appends up to `max` queued messages to `out` (waiting for at least
    /// one); returns how many, 0 once the node has shut down.
    pub async fn recv_many(&mut self, out: &mut Vec<Message>, max: usize) -> usize {
        self.inbox.recv_many(out, max).await
    }

    pub fn try_recv(&mut self) -> Option<Message> {
        self.inbox.try_recv()
    }

    /// Messages dropped on this channel because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inbox.counters.dropped.get()
    }

    pub fn policy(&self) -> Policy {
        self.inbox.config.policy
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.inbox.close(true);
        if let Some(router) = self.router.upgrade() {
            let mut map = lock(&router.inboxes);
            if map
                .get(&self.id)
                .is_some_and(|i| Arc::ptr_eq(i, &self.inbox))
            {
                map.remove(&self.id);
            }
            router.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Incoming requests of one served protocol; see [`crate::Node::serve`].
///
/// Requests are taken in turn by peer, one from each peer with any
/// waiting, and one peer may hold at most an eighth of the queue
/// (`NodeConfig::request_queue`; beyond it the peer is answered
/// "overloaded"), so a peer with many requests in flight does not delay
/// one with a single request by more than one request's handling.
pub struct Requests {
    queue: Arc<FairQueue<Request>>,
}

impl Requests {
    /// The next request, or `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<Request> {
        self.queue.recv().await
    }
}

impl Drop for Requests {
    /// No longer served: what is queued is answered "no response".
    fn drop(&mut self) {
        drop(self.queue.close_and_drain());
    }
}

/// A request from a peer. Answer with [`Request::respond`] or
/// [`Request::reject`]; dropping it unanswered sends a `NoResponse` error.
pub struct Request {
    pub peer: PeerId,
    pub protocol: String,
    pub body: Bytes,
    reply: Option<(Weak<dyn Responder>, u64)>,
}

impl Request {
    /// The connection to answer on, once.
    fn take_reply(&mut self) -> Option<(Arc<dyn Responder>, u64)> {
        let (conn, id) = self.reply.take()?;
        Some((conn.upgrade()?, id))
    }

    /// Counts `bytes` more against the peer's share of request handling
    /// ([`crate::NodeConfig::peer_serve_rate`]), for a request that cost
    /// more than its bytes or was worth nothing to us.
    pub(crate) fn charge(&self, bytes: u64) {
        if let Some(conn) = self.reply.as_ref().and_then(|(c, _)| c.upgrade()) {
            conn.charge(bytes);
        }
    }

    /// Sends `body` as the response (dropped if the peer has gone).
    pub fn respond(mut self, body: impl Into<Bytes>) {
        if let Some((conn, id)) = self.take_reply() {
            // Fails only if the peer is not reading its answers.
            let _ = conn.respond(id, body.into());
        }
    }

    /// Answers with an application error.
    pub fn reject(mut self, message: &str) {
        if let Some((conn, id)) = self.take_reply() {
            // Fails only if the peer is not reading; its connection closes.
            let _ = conn.respond_error(id, RemoteErrorCode::Application, message);
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some((conn, id)) = self.take_reply() {
            let _ = conn.respond_error(
                id,
                RemoteErrorCode::NoResponse,
                "handler dropped the request",
            );
        }
    }
}
