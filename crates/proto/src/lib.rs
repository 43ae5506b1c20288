//! # peerlink-proto — the sans-IO core of peerlink
//!
//! Everything here is a plain state machine or codec: bytes and time in,
//! bytes and actions out; no sockets, tasks or clocks. The tokio driver
//! (`peerlink-net`) and the simulator (`peerlink-sim`) drive this same code.
//!
//! | layer | module |
//! |---|---|
//! | 1 identity | [`identity`]: [`Keypair`], [`PeerId`], [`PeerAddr`] |
//! | 2 secure session | [`handshake`] (Noise XX bound to ed25519), [`cipher`], [`frame`] |
//! | 3 connection | [`session`] (one connection: queues, requests, go-away, drain), [`control`] (its records), [`keepalive`] |
//! | 4 discovery | [`peers`]: the address book for peer exchange and bootstrap |
//! | 5 DHT | [`dht`]: Kademlia routing, lookups, signed records, providers |
//! | 6 gossip | [`gossip`]: topic mesh, broadcast trees, IHAVE/IWANT repair, scoring |
//! | 7 request/response | [`control::RrMessage`] |
//!
//! Every decoder bounds lengths before allocating and returns a named
//! error; none panics on peer input (see the property tests and `fuzz/`).
#![forbid(unsafe_code)]

pub mod cipher;
pub mod control;
pub mod dht;
pub mod frame;
pub mod gossip;
pub mod handshake;
pub mod identity;
pub mod keepalive;
pub mod peers;
pub mod prefix;
pub mod recent;
pub mod rng;
pub mod session;
pub mod tlscert;
pub mod varint;

pub use cipher::{CipherState, CipherSuite};
pub use frame::{FrameDecoder, FrameEncoder, FrameError, FrameSealer, Record, Records};
pub use handshake::{Established, Handshake, HandshakeError, NoiseIdentity};
pub use identity::{IdentityError, Keypair, PeerAddr, PeerId, Transport, TransportAddr};
