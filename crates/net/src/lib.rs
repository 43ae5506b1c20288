//! # peerlink-net — the tokio driver and the `Node` API
//!
//! A [`Node`] owns an ed25519 identity, listens on TCP and/or QUIC, and
//! keeps one authenticated, encrypted connection per peer. On each
//! connection (the same on both transports: each is a sans-IO session from
//! `peerlink-proto`):
//!
//! * **channels** — numbered message streams (applications use 16 and up),
//!   each with a bounded queue that blocks or drops when full ([`Policy`]);
//!   control traffic goes first;
//! * **request/response** — [`Node::request`] with a timeout and size
//!   limit, served by [`Node::serve`];
//! * **keepalive** — pings measure RTT; silent peers are timed out.
//! * **gossip** — [`Node::gossip`]: topic subscriptions as streams,
//!   publish, validators ([`gossip`]).
//! * **DHT** — [`Node::dht`]: Kademlia records, providers, lookups.
//!
//! Many small messages are packed into one sealed frame and one write.
//! The protocol logic lives in `peerlink-proto`; this crate moves bytes.
//!
//! ```
//! use peerlink_net::Node;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), peerlink_net::NetError> {
//! let alice = Node::builder().listen("127.0.0.1:0".parse().unwrap()).build().await?;
//! let bob = Node::builder().listen("127.0.0.1:0".parse().unwrap()).build().await?;
//!
//! // Bob receives on channel 16; Alice dials him by `<peer-id>@host:port`.
//! let mut inbox = bob.channel(16)?;
//! let bob_addr = bob.addr().unwrap();
//! alice.connect(bob_addr).await?;
//! alice.send(&bob.peer_id(), 16, &b"hello"[..]).await?;
//!
//! let msg = inbox.recv().await.unwrap();
//! assert_eq!((msg.peer, &msg.payload[..]), (alice.peer_id(), &b"hello"[..]));
//!
//! // Request/response with a timeout.
//! let mut echo = bob.serve("echo/1")?;
//! tokio::spawn(async move {
//!     while let Some(req) = echo.recv().await {
//!         let body = req.body.clone();
//!         req.respond(body);
//!     }
//! });
//! let reply = alice.request(&bob.peer_id(), "echo/1", &b"ping"[..]).await?;
//! assert_eq!(&reply[..], b"ping");
//!
//! alice.shutdown().await;
//! bob.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The same over QUIC: listen on a `quic://` address; a `quic://` peer
//! address dials over QUIC (a node may listen on both).
//!
//! ```
//! use peerlink_net::{Node, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), peerlink_net::NetError> {
//! let carol = Node::builder().listen_on("quic://127.0.0.1:0".parse()?).build().await?;
//! let dave = Node::builder().build().await?; // dials without listening
//! let carol_addr = carol.addr().unwrap();
//! assert_eq!(carol_addr.transport, Transport::Quic);
//! dave.connect(carol_addr).await?;
//! let rtt = dave.ping(&carol.peer_id()).await?;
//! assert!(rtt.as_nanos() > 0);
//! assert_eq!(dave.peers()[0].transport, Transport::Quic);
//! dave.shutdown().await;
//! carol.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod admission;
mod builder;
mod config;
mod conn;
pub mod control;
pub mod dbwriter;
pub mod dht;
mod error;
mod fair;
pub mod fsutil;
pub mod gossip;
pub mod keyfile;
mod metrics;
mod metrics_http;
mod node;
mod queue;
mod quic;
mod routing;
mod share;
mod store;
pub mod testnet;

pub use admission::Ban;
pub use builder::NodeBuilder;
pub use config::{ChannelConfig, Limits, NodeConfig, Policy};
pub use dht::{DhtHandle, DhtInfo, Outcome};
pub use error::NetError;
pub use gossip::{GossipHandle, GossipInfo, GossipMessage, Subscription};
pub use metrics::Metrics;
pub use metrics_http::serve_metrics;
pub use node::{Node, PeerEvent, PeerInfo, PeerSender};
pub use peerlink_proto::dht::{DhtConfig, Key as DhtKey, Record};
pub use peerlink_proto::gossip::{GossipConfig, MessageId, PublishError, Published, Validation};
pub use peerlink_proto::keepalive::KeepaliveConfig;
pub use peerlink_proto::peers::PeerBookConfig;
pub use peerlink_proto::{CipherSuite, Keypair, PeerAddr, PeerId, Transport, TransportAddr};
pub use queue::Message;
pub use routing::{Receiver, Request, Requests};
pub use store::RedbStore;

/// Resolves `<peer-id>@host:port` or `<peer-id>@quic://host:port` where
/// host may be a name (`localhost`).
pub async fn resolve_peer_addr(text: &str) -> Result<PeerAddr, NetError> {
    if let Ok(addr) = text.parse::<PeerAddr>() {
        return Ok(addr);
    }
    let (id, at) = text
        .split_once('@')
        .ok_or_else(|| peerlink_proto::IdentityError::AddrSyntax(text.to_string()))?;
    let id: PeerId = id.parse()?;
    // The transport as in `TransportAddr`, then a host name to resolve.
    let (transport, host) = match at.split_once("://") {
        Some((scheme, host)) => {
            let probe = format!("{scheme}://0.0.0.0:0").parse::<TransportAddr>()?;
            (probe.transport, host)
        }
        None => (Transport::Tcp, at),
    };
    let addr = tokio::net::lookup_host(host).await?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} did not resolve"),
        )
    })?;
    Ok(PeerAddr::with(
        id,
        TransportAddr {
            transport,
            socket: addr,
        },
    ))
}
