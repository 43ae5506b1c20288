//! Bad input and faults from peers. In every case: a named error, a metric
//! incremented, the connection closed, and the node still serving others.

mod common;

use std::time::Duration;

use common::*;
use peerlink_net::{ChannelConfig, Limits, NetError, Node, NodeConfig, Policy};
use peerlink_proto::control::{CONTROL_CHANNEL, REQUEST_CHANNEL};
use peerlink_proto::{HandshakeError, Keypair, PeerAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The node still accepts and serves an honest peer.
async fn still_serves(node: &Node) {
    let honest = common::node().await;
    honest.connect(node.addr().unwrap()).await.unwrap();
    honest.ping(&node.peer_id()).await.unwrap();
    honest.shutdown().await;
}

async fn hostile_frame(node: &Node, bytes: impl FnOnce(&mut RawPeer) -> Vec<u8>, reason: &str) {
    let mut raw = RawPeer::connect(node).await;
    eventually("raw peer registered", || node.peers().len() == 1).await;
    let wire = bytes(&mut raw);
    raw.send_raw(&wire).await;
    raw.expect_closed().await;
    eventually(reason, || {
        node.metrics().counter("peer_errors", reason) == 1
    })
    .await;
    eventually("peer removed", || node.peers().is_empty()).await;
    still_serves(node).await;
}

#[tokio::test]
async fn garbage_on_the_listening_port() {
    let node = node().await;
    let mut s = TcpStream::connect(node.listen_addrs()[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0),
        0
    );
    eventually("bad_magic counted", || {
        node.metrics().counter("handshake_failures", "bad_magic") == 1
    })
    .await;
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn silent_client_times_out_with_bounded_memory() {
    let config = NodeConfig {
        handshake_timeout: Duration::from_millis(200),
        limits: Limits {
            max_pending_handshakes: 4,
            max_per_ip: 64,
            ..Limits::default()
        },
        ..NodeConfig::default()
    };
    let node = node_with(config).await;
    // More silent clients than handshake slots: the excess is refused at
    // accept, and every slot is freed by the timeout.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(node.listen_addrs()[0]).await.unwrap());
    }
    eventually("excess refused", || {
        node.metrics()
            .counter("connections_rejected", "pending_handshakes")
            >= 4
    })
    .await;
    eventually("timeouts counted", || {
        node.metrics().counter("handshake_failures", "timeout") >= 4
    })
    .await;
    for mut s in silent {
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "server closed the silent connection");
    }
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn four_gib_length_prefix_is_rejected_before_allocating() {
    let node = node().await;
    hostile_frame(
        &node,
        |_| vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        "frame_too_large",
    )
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn tampered_frame_closes_the_connection() {
    let node = node().await;
    hostile_frame(
        &node,
        |raw| {
            let mut f = raw.frame(&[(16, b"hello")]);
            let last = f.len() - 1;
            f[last] ^= 0x40;
            f
        },
        "authentication",
    )
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn replayed_frame_closes_the_connection() {
    let node = node().await;
    let mut rx = node.channel(16).unwrap();
    hostile_frame(
        &node,
        |raw| {
            let f = raw.frame(&[(16, b"once")]);
            [f.clone(), f].concat()
        },
        "authentication",
    )
    .await;
    // The genuine first copy was delivered; the replay was not.
    assert_eq!(&rx.recv().await.unwrap().payload[..], b"once");
    assert!(rx.try_recv().is_none());
    node.shutdown().await;
}

#[tokio::test]
async fn malformed_control_and_reserved_channels_close_the_connection() {
    let node = node().await;
    hostile_frame(
        &node,
        |raw| raw.frame(&[(CONTROL_CHANNEL, &[0x09, 1, 2])]),
        "bad_message",
    )
    .await;
    let node2 = common::node().await;
    hostile_frame(
        &node2,
        |raw| raw.frame(&[(5, b"reserved")]),
        "reserved_channel",
    )
    .await;
    let node3 = common::node().await;
    hostile_frame(
        &node3,
        |raw| raw.frame(&[(REQUEST_CHANNEL, &[1, 0, 200])]),
        "bad_message",
    )
    .await;
    for n in [node, node2, node3] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_different_key_than_dialled_is_refused() {
    let (a, b) = (node().await, node().await);
    let wrong = PeerAddr::new(Keypair::generate().unwrap().peer_id(), b.listen_addrs()[0]);
    match a.connect(wrong).await {
        Err(NetError::Handshake(HandshakeError::PeerIdMismatch { expected, actual })) => {
            assert_eq!((expected, actual), (wrong.id, b.peer_id()));
        }
        other => panic!("expected a peer id mismatch, got {other:?}"),
    }
    assert_eq!(
        a.metrics()
            .counter("handshake_failures", "peer_id_mismatch"),
        1
    );
    a.connect(b.addr().unwrap()).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn version_mismatch_is_named_on_both_sides() {
    let node = node().await;
    let mut s = TcpStream::connect(node.listen_addrs()[0]).await.unwrap();
    // A msg1 from a future version 9 of the protocol.
    let mut msg = vec![0u8, 43];
    msg.extend_from_slice(b"peerlink");
    msg.extend_from_slice(&9u16.to_be_bytes());
    msg.push(2);
    msg.extend_from_slice(&[7u8; 32]);
    s.write_all(&msg).await.unwrap();
    let mut reply = vec![0u8; 64];
    let n = s.read(&mut reply).await.unwrap();
    // The node answers with its own header: magic and version 1.
    assert_eq!(&reply[2..10], b"peerlink");
    assert_eq!(
        u16::from_be_bytes([reply[10], reply[11]]),
        1,
        "{:?}",
        &reply[..n]
    );
    eventually("mismatch counted", || {
        node.metrics()
            .counter("handshake_failures", "version_mismatch")
            == 1
    })
    .await;
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn per_ip_limit_refuses_excess_connections() {
    let config = NodeConfig {
        limits: Limits {
            max_per_ip: 2,
            ..Limits::default()
        },
        ..NodeConfig::default()
    };
    let node = node_with(config).await;
    let _a = RawPeer::connect(&node).await;
    let _b = RawPeer::connect(&node).await;
    let mut third = TcpStream::connect(node.listen_addrs()[0]).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(node.metrics().counter("connections_rejected", "per_ip"), 1);
    assert_eq!(node.peers().len(), 2);
    node.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_bounded_and_timed_out() {
    let config = NodeConfig {
        keepalive: peerlink_net::KeepaliveConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(1500),
            idle_timeout: None,
        },
        channels: vec![ChannelConfig::new(16)
            .max_queued_bytes(64 << 10)
            .policy(Policy::Drop)],
        ..NodeConfig::default()
    };
    let node = node_with(config).await;
    let raw = RawPeer::connect(&node).await; // completes the handshake, then never reads
    eventually("registered", || node.peers().len() == 1).await;
    let peer = raw.keypair.peer_id();
    let mut dropped = 0u64;
    for _ in 0..20_000 {
        match node.try_send(&peer, 16, vec![1u8; 1024]) {
            Err(NetError::QueueFull { .. }) => dropped += 1,
            Err(NetError::NotConnected(_)) | Err(NetError::ConnectionClosed) => break,
            r => r.unwrap(),
        }
        assert!(
            node.queued_bytes(&peer, 16) <= 64 << 10,
            "queue stays bounded"
        );
        if dropped > 1000 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        dropped > 0,
        "drops counted once the socket and queue are full"
    );
    assert_eq!(node.metrics().dropped(16, "out"), dropped);
    // The silent peer never answers pings: timed out and removed.
    eventually("timed out", || node.peers().is_empty()).await;
    still_serves(&node).await;
    drop(raw);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_peer_that_never_reads_is_cut_off() {
    let node = node().await;
    let mut raw = RawPeer::connect(&node).await;
    eventually("registered", || node.peers().len() == 1).await;
    // Pings as fast as we can write them, never reading a pong.
    let ping = peerlink_proto::control::Control::Ping(7).encode();
    let records: Vec<(u16, &[u8])> = (0..4096).map(|_| (CONTROL_CHANNEL, &ping[..])).collect();
    let flood = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..1000 {
            let frame = raw.frame(&records);
            if raw.stream.write_all(&frame).await.is_err() {
                return; // the node hung up on us
            }
        }
    })
    .await;
    assert!(flood.is_ok(), "flood should end with the connection");
    eventually("flood counted", || {
        node.metrics().counter("peer_errors", "flood") == 1
    })
    .await;
    eventually("peer removed", || node.peers().is_empty()).await;
    still_serves(&node).await;
    node.shutdown().await;
}
