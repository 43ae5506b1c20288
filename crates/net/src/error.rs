//! Errors of the driver layer.

use std::time::Duration;

use peerlink_proto::control::RemoteErrorCode;
use peerlink_proto::session::SessionError;
use peerlink_proto::{FrameError, HandshakeError, IdentityError, PeerId};

/// Errors from the [`crate::Node`] API and connection handling.
///
/// By side:
/// - **the peer misbehaved**: [`NetError::Peer`], one variant holding what
///   it did (proto's `SessionError`); it alone closes the connection as a
///   fault, bans the peer and labels `peer_errors` ([`NetError::is_peer_fault`]);
/// - **the remote's answer** to a request: [`NetError::Remote`];
/// - **I/O and transport**: `Io`, `Quic`, `Tls`, the handshake failures
///   and timeouts;
/// - **local misuse or state**: the rest (a reserved channel, a taken
///   protocol, not connected, a full queue, shut down, ...).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("no first handshake message within {0:?}")]
    FirstMessageTimeout(Duration),
    #[error("handshake evicted: every slot was taken and this one had not spoken")]
    HandshakeEvicted,
    #[error("peer {0} is banned")]
    Banned(PeerId),
    #[error("handshake with {addr} timed out after {after:?}")]
    HandshakeTimeout {
        addr: std::net::SocketAddr,
        after: Duration,
    },
    #[error("peer closed the connection during the handshake")]
    HandshakeEof,
    /// The peer broke the protocol (what it did is named inside): its
    /// connection is closed, it is counted in `peer_errors` and banned.
    #[error("peer broke the protocol: {0}")]
    Peer(#[from] SessionError),
    /// This side cannot seal another frame on the connection (its nonce
    /// space is spent): only a new connection helps.
    #[error("cannot seal: {0}")]
    Sealing(FrameError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("QUIC: {0}")]
    Quic(#[from] quinn::ConnectionError),
    #[error("peer certificate: {0}")]
    Cert(#[from] peerlink_proto::tlscert::CertError),
    #[error("no QUIC endpoint: listen on a quic:// address to dial QUIC peers")]
    NoQuic,
    #[error("peer silent for {0:?}: keepalive timed out")]
    PeerSilent(Duration),
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("not connected to {0}")]
    NotConnected(PeerId),
    #[error("queue of channel {channel} is full")]
    QueueFull { channel: u16 },
    #[error("channel {0} is reserved for peerlink (application channels start at 16)")]
    ChannelReserved(u16),
    #[error("channel {0} already has a receiver")]
    ChannelTaken(u16),
    #[error("protocol {0:?} is already served")]
    ProtocolTaken(String),
    #[error("protocol name must be 1..=64 bytes, got {0:?}")]
    BadProtocolName(String),
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge { len: usize, max: usize },
    #[error("connection closed")]
    ConnectionClosed,
    #[error("request timed out after {0:?}")]
    RequestTimeout(Duration),
    #[error("response of {len} bytes exceeds the limit of {max}")]
    ResponseTooLarge { len: usize, max: usize },
    #[error("peer answered {code:?}: {message}")]
    Remote {
        code: RemoteErrorCode,
        message: String,
    },
    #[error("connection limit reached: {0}")]
    LimitReached(&'static str),
    #[error("node is shut down")]
    Shutdown,
    #[error("DHT query timed out after {0:?}")]
    QueryTimeout(Duration),
    #[error("the DHT is turned off on this node")]
    DhtDisabled,
    #[error("{0}")]
    Store(String),
    #[error("record refused: {0}")]
    Record(#[from] peerlink_proto::dht::RecordError),
    #[error("gossip is turned off on this node")]
    GossipDisabled,
    #[error("publish refused: {0}")]
    Publish(#[from] peerlink_proto::gossip::PublishError),
    #[error("{0}")]
    Topic(#[from] peerlink_proto::gossip::WireError),
}

/// Frames that fail to open or parse are the peer's doing.
impl From<FrameError> for NetError {
    fn from(e: FrameError) -> Self {
        NetError::Peer(SessionError::Frame(e))
    }
}

impl NetError {
    /// Whether the peer broke the protocol (as opposed to the network or
    /// this node failing): such peers are counted in `peer_errors`.
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, NetError::Peer(_))
    }

    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            NetError::Io(_) => "io",
            NetError::Handshake(e) => e.label(),
            NetError::HandshakeTimeout { .. } => "timeout",
            NetError::FirstMessageTimeout(_) => "first_message_timeout",
            NetError::HandshakeEvicted => "evicted",
            NetError::Banned(_) => "banned",
            NetError::HandshakeEof => "eof",
            NetError::Peer(SessionError::Frame(FrameError::Cipher(_))) => "authentication",
            NetError::Peer(SessionError::Frame(FrameError::FrameTooLarge { .. })) => {
                "frame_too_large"
            }
            NetError::Peer(SessionError::Frame(_)) => "bad_frame",
            NetError::Peer(SessionError::Message(_)) => "bad_message",
            NetError::Peer(SessionError::ReservedChannel(_)) => "reserved_channel",
            NetError::Peer(SessionError::Flood(_)) => "flood",
            NetError::PeerSilent(_) => "keepalive_timeout",
            _ => "other",
        }
    }
}
