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
pub struct RawPeer {
    pub stream: TcpStream,
    pub enc: FrameEncoder,
    pub dec: FrameDecoder,
    pub buf: BytesMut,
    pub keypair: Keypair,
}

impl RawPeer {
    pub async fn connect(target: &Node) -> RawPeer {
        let keypair = Keypair::generate().unwrap();
        let identity = NoiseIdentity::new(&keypair).unwrap();
        let mut stream = TcpStream::connect(target.listen_addrs()[0]).await.unwrap();
        let mut hs =
            Handshake::initiator(&identity, target.peer_id(), CipherSuite::default()).unwrap();
        let mut buf = BytesMut::new();
        while !hs.is_complete() {
            if let Some(out) = hs.take_output() {
                stream.write_all(&out).await.unwrap();
            }
            buf.reserve(1024);
            assert!(
                stream.read_buf(&mut buf).await.unwrap() > 0,
                "closed during handshake"
            );
            hs.read(&mut buf).unwrap();
        }
        if let Some(out) = hs.take_output() {
            stream.write_all(&out).await.unwrap();
        }
        let est = hs.finish().unwrap();
        RawPeer {
            stream,
            enc: FrameEncoder::new(est.send, 1 << 20, DEFAULT_FRAME_TARGET),
            dec: FrameDecoder::new(est.recv, 2 << 20),
            buf,
            keypair,
        }
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
