//! Node configuration: limits, timeouts and channel policies, with defaults
//! that suit a public node. Everything here has a builder method on
//! [`crate::NodeBuilder`].

use std::time::Duration;

use peerlink_proto::keepalive::KeepaliveConfig;
use peerlink_proto::CipherSuite;

pub use peerlink_proto::session::{ChannelConfig, Policy};

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Established connections in total.
    pub max_peers: usize,
    /// Established connections that the remote side opened.
    pub max_inbound: usize,
    /// Connections (established or handshaking) from one IP address.
    pub max_per_ip: usize,
    /// Inbound handshakes in progress at once. When full, the oldest that
    /// has not sent its first message is evicted for a newcomer.
    pub max_pending_handshakes: usize,
    /// Inbound handshakes in progress from one IP address...
    pub max_pending_per_ip: usize,
    /// ...and from one network (IPv4 /24, IPv6 /48).
    pub max_pending_per_prefix: usize,
    /// Largest application message, in bytes.
    pub max_message_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_peers: 256,
            max_inbound: 192,
            max_per_ip: 16,
            max_pending_handshakes: 64,
            max_pending_per_ip: 4,
            max_pending_per_prefix: 16,
            max_message_size: 1 << 20,
        }
    }
}

/// Everything a node needs besides its keypair and addresses.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub limits: Limits,
    pub keepalive: KeepaliveConfig,
    /// Dial, plus the handshake, must finish within this.
    pub handshake_timeout: Duration,
    /// An inbound connection must send its first handshake message
    /// within this.
    pub first_message_timeout: Duration,
    /// How long a peer that broke the protocol is kept out.
    pub ban_duration: Duration,
    /// Peers banned from one address within a ban period before the
    /// address itself is banned; 0: addresses are never banned.
    pub ip_ban_strikes: u32,
    /// Entries of the ban table (peers, addresses, strikes); when full,
    /// the ban nearest its end is lifted first.
    pub max_bans: usize,
    /// Local address outgoing connections leave from (a multi-homed
    /// host, or one of many loopback addresses on one machine); `None`:
    /// the operating system picks.
    pub dial_source: Option<std::net::IpAddr>,
    /// Default timeout of [`crate::Node::request`].
    pub request_timeout: Duration,
    /// Largest request body a served protocol accepts.
    pub max_request_size: usize,
    /// Requests waiting for a handler, per protocol; one peer may hold an
    /// eighth of them, and the handler takes them in turn by peer.
    pub request_queue: usize,
    /// While other peers have requests served too, one peer's served
    /// requests (request and response bytes, plus 1 KiB each for the
    /// fixed work) are held to the larger of this many bytes a second and
    /// 1.5× what the others cost on average; over it, its connection is
    /// not read until it is back within it, so it waits in its own socket.
    /// A peer alone is not limited. 0: no limit. The default, 32 MiB/s,
    /// is about a thousand 16 KiB echoes or 30,000 small requests a second.
    pub peer_serve_rate: u64,
    /// AEAD for connections this node dials.
    pub cipher: CipherSuite,
    /// Channel settings; unlisted channels use [`ChannelConfig::new`].
    pub channels: Vec<ChannelConfig>,
    /// First delay before re-dialling a seed; doubles up to `max_redial_backoff`.
    pub redial_backoff: Duration,
    pub max_redial_backoff: Duration,
    /// Injected one-way delay on every link, for testnets on one machine
    /// (no netem needed): received data is handled this much later, and
    /// dials wait for a simulated TCP round trip. Zero in production.
    pub link_delay: Duration,
    /// The Kademlia DHT; `None` turns it off.
    pub dht: Option<peerlink_proto::dht::DhtConfig>,
    /// Where the DHT keeps records across restarts (a redb file in this
    /// directory); `None` keeps them in memory.
    pub data_dir: Option<std::path::PathBuf>,
    /// Peer exchange and connection targets.
    pub discovery: peerlink_proto::peers::PeerBookConfig,
    /// Most connections the DHT keeps open, dialled or accepted; the least
    /// recently used beyond this are closed once idle for a request
    /// timeout (connect on demand).
    pub max_dht_connections: usize,
    /// Topic gossip; `None` turns it off.
    pub gossip: Option<peerlink_proto::gossip::GossipConfig>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            limits: Limits::default(),
            keepalive: KeepaliveConfig::default(),
            handshake_timeout: Duration::from_secs(5),
            first_message_timeout: Duration::from_secs(2),
            ban_duration: Duration::from_secs(600),
            ip_ban_strikes: 3,
            max_bans: 65_536,
            dial_source: None,
            request_timeout: Duration::from_secs(10),
            max_request_size: 1 << 20,
            request_queue: 1024,
            peer_serve_rate: 32 << 20,
            cipher: CipherSuite::default(),
            channels: Vec::new(),
            redial_backoff: Duration::from_millis(250),
            max_redial_backoff: Duration::from_secs(30),
            link_delay: Duration::ZERO,
            dht: Some(peerlink_proto::dht::DhtConfig::default()),
            data_dir: None,
            discovery: peerlink_proto::peers::PeerBookConfig::default(),
            max_dht_connections: 64,
            gossip: Some(peerlink_proto::gossip::GossipConfig::default()),
        }
    }
}
