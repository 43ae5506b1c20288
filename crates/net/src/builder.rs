//! [`NodeBuilder`]: the one place that assembles a node — the transport
//! ([`crate::node`]) first, then the services on top of it (the DHT and
//! gossip), each started from the node's public surface.

use std::net::SocketAddr;

use peerlink_proto::{Keypair, PeerAddr, TransportAddr};

use crate::config::{ChannelConfig, Limits, NodeConfig};
use crate::node::Node;
use crate::NetError;

/// Builds a [`Node`]; every setting has a default.
pub struct NodeBuilder {
    keypair: Option<Keypair>,
    listen: Vec<TransportAddr>,
    bootstrap: Vec<PeerAddr>,
    config: NodeConfig,
}

impl NodeBuilder {
    /// The node's identity (default: a fresh random one).
    pub fn keypair(mut self, keypair: Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Adds a TCP listen address (`127.0.0.1:0` picks a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen.push(TransportAddr::tcp(addr));
        self
    }

    /// Adds a listen address on any transport (`quic://127.0.0.1:0`); a
    /// node may listen on TCP and QUIC at once.
    pub fn listen_on(mut self, at: TransportAddr) -> Self {
        self.listen.push(at);
        self
    }

    /// Adds seed peers, dialled at start and re-dialled with backoff.
    pub fn bootstrap(mut self, seeds: impl IntoIterator<Item = PeerAddr>) -> Self {
        self.bootstrap.extend(seeds);
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Configures one application channel's queues.
    pub fn channel(mut self, channel: ChannelConfig) -> Self {
        self.config.channels.retain(|c| c.id != channel.id);
        self.config.channels.push(channel);
        self
    }

    /// Replaces the whole configuration.
    /// DHT settings (the DHT is on by default).
    pub fn dht(mut self, config: peerlink_proto::dht::DhtConfig) -> Self {
        self.config.dht = Some(config);
        self
    }

    /// Runs without a DHT (plain transport and request/response).
    pub fn without_dht(mut self) -> Self {
        self.config.dht = None;
        self
    }

    /// Gossip settings (gossip is on by default).
    pub fn gossip(mut self, config: peerlink_proto::gossip::GossipConfig) -> Self {
        self.config.gossip = Some(config);
        self
    }

    /// Runs without topic gossip.
    pub fn without_gossip(mut self) -> Self {
        self.config.gossip = None;
        self
    }

    /// Keeps DHT records in a redb database in `dir`, across restarts.
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self
    }

    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Binds the listeners and starts the node and its services.
    pub async fn build(self) -> Result<Node, NetError> {
        let node = Node::start(self.keypair, &self.listen, &self.bootstrap, self.config).await?;
        let dht = crate::dht::start(&node, &self.bootstrap)?;
        node.set_service(dht);
        let gossip = crate::gossip::start(&node);
        node.set_service(gossip);
        Ok(node)
    }
}

impl Node {
    /// Starts building a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            keypair: None,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            config: NodeConfig::default(),
        }
    }
}
