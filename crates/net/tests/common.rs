//! Helpers for the integration tests: nodes on loopback and a raw client
//! built from the proto pieces, so tests can misbehave on a real socket.
#![allow(dead_code)]

use std::time::Duration;

use bytes::BytesMut;
use peerlink_net::{Node, NodeConfig};
use peerlink_proto::frame::DEFAULT_FRAME_TARGET;
use peerlink_proto::{CipherSuite, FrameDecoder, FrameEncoder, Handshake, Keypair, NoiseIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn node_with(config: NodeConfig) -> Node {
    Node::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .config(config)
        .build()
        .await
        .unwrap()
}

pub async fn node() -> Node {
    node_with(NodeConfig::default()).await
}

/// Polls `f` until it holds or 5 s pass.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client speaking the wire protocol by hand.
/// A TCP connection to `target`, from source address `from` if given.
pub async fn dial_from(target: &Node, from: Option<std::net::IpAddr>) -> TcpStream {
    let to = target.listen_addrs()[0];
    match from {
        None => TcpStream::connect(to).await.unwrap(),
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(std::net::SocketAddr::new(ip, 0)).unwrap();
            socket.connect(to).await.unwrap()
        }
    }
}

/// Whether the node closes `s` (EOF or reset) within 5 s, sending nothing.
pub async fn closed_by_node(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

pub struct RawPeer {
    pub stream: TcpStream,
    pub enc: FrameEncoder,
    pub dec: FrameDecoder,
    pub buf: BytesMut,
    pub keypair: Keypair,
}

impl RawPeer {
    pub async fn connect(target: &Node) -> RawPeer {
        Self::connect_as(target, Keypair::generate().unwrap(), None)
            .await
            .expect("closed during handshake")
    }

    /// Dials from source address `from` (any 127.x.y.z works on Linux
    /// loopback) with identity `keypair`; `None` if the node closed the
    /// connection before the handshake completed.
    pub async fn connect_as(
        target: &Node,
        keypair: Keypair,
        from: Option<std::net::IpAddr>,
    ) -> Option<RawPeer> {
        let identity = NoiseIdentity::new(&keypair).unwrap();
        let mut stream = dial_from(target, from).await;
        let mut hs =
            Handshake::initiator(&identity, target.peer_id(), CipherSuite::default()).unwrap();
        let mut buf = BytesMut::new();
        while !hs.is_complete() {
            if let Some(out) = hs.take_output() {
                stream.write_all(&out).await.unwrap();
            }
            buf.reserve(1024);
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return None;
            }
            hs.read(&mut buf).unwrap();
        }
        if let Some(out) = hs.take_output() {
            stream.write_all(&out).await.ok()?;
        }
        let est = hs.finish().unwrap();
        Some(RawPeer {
            stream,
            enc: FrameEncoder::new(est.send, 1 << 20, DEFAULT_FRAME_TARGET),
            dec: FrameDecoder::new(est.recv, 2 << 20),
            buf,
            keypair,
        })
    }

    /// Seals `records` into one frame and returns its bytes (not sent).
    pub fn frame(&mut self, records: &[(u16, &[u8])]) -> Vec<u8> {
        for (ch, p) in records {
            self.enc.push(*ch, p).unwrap();
        }
        self.enc.finish().unwrap();
        let out = self.enc.bytes().to_vec();
        self.enc.clear();
        out
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // The node may already have closed on us; that is fine.
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads until the node closes the connection (or 5 s pass).
    pub async fn expect_closed(&mut self) {
        let mut scratch = vec![0u8; 64 << 10];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "node did not close the connection");
    }
}
