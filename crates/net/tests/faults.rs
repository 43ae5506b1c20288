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
            max_pending_per_ip: 64,
            max_pending_per_prefix: 64,
            max_per_ip: 64,
            ..Limits::default()
        },
        ..NodeConfig::default()
    };
    let node = node_with(config).await;
    // More silent clients than handshake slots: each newcomer evicts the
    // oldest silent one, and every slot is freed by the timeout.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(node.listen_addrs()[0]).await.unwrap());
    }
    eventually("oldest evicted", || {
        node.metrics().counter("handshake_failures", "evicted") >= 4
    })
    .await;
    eventually("timeouts counted", || {
        node.metrics().counter("handshake_failures", "timeout") >= 4
    })
    .await;
    for mut s in silent {
        assert!(
            closed_by_node(&mut s).await,
            "server closed the silent connection"
        );
    }
    still_serves(&node).await;
    node.shutdown().await;
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn pending_handshakes_are_shared_out_by_address_and_silent_ones_make_room() {
    let config = NodeConfig {
        handshake_timeout: Duration::from_secs(30),
        first_message_timeout: Duration::from_secs(30),
        limits: Limits {
            max_pending_handshakes: 8,
            max_pending_per_ip: 2,
            max_pending_per_prefix: 4,
            ..Limits::default()
        },
        ..NodeConfig::default()
    };
    let node = node_with(config).await;
    let rejected = |limit| node.metrics().counter("connections_rejected", limit);
    let mut held = Vec::new();
    for from in ["127.0.1.1", "127.0.1.1"] {
        held.push(dial_from(&node, Some(ip(from))).await);
    }
    // A third from one address is refused...
    let mut third = dial_from(&node, Some(ip("127.0.1.1"))).await;
    assert!(closed_by_node(&mut third).await);
    assert_eq!(rejected("pending_per_ip"), 1);
    // ...and a fifth from one /24, whatever its address.
    for from in ["127.0.1.2", "127.0.1.2"] {
        held.push(dial_from(&node, Some(ip(from))).await);
    }
    let mut fifth = dial_from(&node, Some(ip("127.0.1.3"))).await;
    assert!(closed_by_node(&mut fifth).await);
    assert_eq!(rejected("pending_per_prefix"), 1);
    // Other networks fill the rest: every slot is taken by silence.
    for from in ["127.0.2.1", "127.0.2.1", "127.0.3.1", "127.0.3.1"] {
        held.push(dial_from(&node, Some(ip(from))).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // An honest peer still gets in: the oldest silent one makes room.
    still_serves(&node).await;
    assert!(closed_by_node(&mut held[0]).await, "the oldest went");
    assert_eq!(node.metrics().counter("handshake_failures", "evicted"), 1);
    assert_eq!(rejected("pending_handshakes"), 0);
    node.shutdown().await;
}

#[tokio::test]
async fn the_first_handshake_message_has_a_short_deadline() {
    let config = NodeConfig {
        handshake_timeout: Duration::from_secs(30),
        first_message_timeout: Duration::from_millis(300),
        ..NodeConfig::default()
    };
    let node = node_with(config).await;
    let mut silent = dial_from(&node, None).await;
    // Part of a first message is not a first message.
    let mut partial = dial_from(&node, None).await;
    partial.write_all(&[0, 40, b'p']).await.unwrap();
    assert!(closed_by_node(&mut silent).await);
    assert!(closed_by_node(&mut partial).await);
    eventually("counted", || {
        node.metrics()
            .counter("handshake_failures", "first_message_timeout")
            == 2
    })
    .await;
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_kicked_peer_stays_out_and_repeat_offenders_lose_their_address() {
    let node = node().await;
    let garbage = |raw: &mut RawPeer| raw.frame(&[(CONTROL_CHANNEL, &[0xee; 5][..])]);
    let offend = |from: &'static str, keypair: Keypair| {
        let node = node.clone();
        async move {
            let mut raw = RawPeer::connect_as(&node, keypair, Some(ip(from)))
                .await
                .expect("admitted");
            let wire = garbage(&mut raw);
            raw.send_raw(&wire).await;
            raw.expect_closed().await;
        }
    };
    let banned = || node.metrics().counter("connections_rejected", "banned");
    let k = Keypair::generate().unwrap();
    offend("127.0.4.1", k.clone()).await;
    eventually("banned", || node.is_banned(&k.peer_id())).await;
    assert_eq!(node.bans()[0].peer, k.peer_id());
    // The same identity is refused at handshake completion, from anywhere
    // (each a strike against that address: see the next test).
    for from in ["127.0.4.8", "127.0.4.9"] {
        let back = RawPeer::connect_as(&node, k.clone(), Some(ip(from))).await;
        if let Some(mut raw) = back {
            raw.expect_closed().await;
        }
    }
    assert_eq!(banned(), 2);
    assert!(node.peers().is_empty());
    // Lifted by hand, it gets in again.
    assert!(node.unban(&k.peer_id()));
    let mut raw = RawPeer::connect_as(&node, k.clone(), Some(ip("127.0.4.1")))
        .await
        .unwrap();
    eventually("back", || node.peers().len() == 1).await;
    // Three offences from one address (new identities are free): the
    // address itself is banned, before any handshake.
    let wire = garbage(&mut raw);
    raw.send_raw(&wire).await;
    raw.expect_closed().await;
    offend("127.0.4.1", Keypair::generate().unwrap()).await;
    eventually("address banned", || !node.banned_ips().is_empty()).await;
    assert_eq!(node.banned_ips(), vec![ip("127.0.4.1")]);
    let mut fresh = dial_from(&node, Some(ip("127.0.4.1"))).await;
    assert!(closed_by_node(&mut fresh).await);
    assert_eq!(banned(), 3);
    // Its neighbours are not.
    let ok = RawPeer::connect_as(&node, Keypair::generate().unwrap(), Some(ip("127.0.4.2"))).await;
    assert!(ok.is_some());
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_banned_peer_that_keeps_reconnecting_soon_costs_no_handshakes() {
    let node = node().await;
    let k = Keypair::generate().unwrap();
    let mut raw = RawPeer::connect_as(&node, k.clone(), Some(ip("127.0.5.1")))
        .await
        .expect("admitted");
    let wire = raw.frame(&[(CONTROL_CHANNEL, &[0xee; 5][..])]);
    raw.send_raw(&wire).await;
    raw.expect_closed().await;
    eventually("banned", || node.is_banned(&k.peer_id())).await;
    let handshakes = || node.metrics().counter("connections_rejected", "banned");
    // Back twice while banned: refused after its handshake each time, and
    // with the ban itself that is three strikes against the address.
    for _ in 0..2 {
        if let Some(mut raw) = RawPeer::connect_as(&node, k.clone(), Some(ip("127.0.5.1"))).await {
            raw.expect_closed().await;
        }
    }
    eventually("address banned", || {
        node.banned_ips() == vec![ip("127.0.5.1")]
    })
    .await;
    let before = handshakes();
    // From now on it is refused at accept, before a handshake starts.
    for _ in 0..5 {
        let mut s = dial_from(&node, Some(ip("127.0.5.1"))).await;
        assert!(closed_by_node(&mut s).await);
    }
    assert_eq!(handshakes(), before + 5);
    assert_eq!(
        node.metrics()
            .counter("handshake_failures", "first_message_timeout"),
        0
    );
    // Honest neighbours and other addresses are not affected.
    assert!(
        RawPeer::connect_as(&node, Keypair::generate().unwrap(), Some(ip("127.0.5.2")))
            .await
            .is_some()
    );
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn node_ban_closes_the_connection_and_keeps_the_peer_out_both_ways() {
    let node = node().await;
    let other = common::node().await;
    other.connect(node.addr().unwrap()).await.unwrap();
    eventually("connected", || node.peers().len() == 1).await;
    node.ban(&other.peer_id(), Duration::from_secs(60));
    eventually("disconnected", || node.peers().is_empty()).await;
    // It cannot dial us, and we do not dial it.
    let _ = other.connect(node.addr().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(node.peers().is_empty());
    assert!(matches!(
        node.connect(other.addr().unwrap()).await,
        Err(NetError::Banned(_))
    ));
    assert!(node.unban(&other.peer_id()));
    node.connect(other.addr().unwrap()).await.unwrap();
    other.shutdown().await;
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

/// Resident memory of this process, from /proc (Linux).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::test]
async fn small_requests_padded_with_discarded_bytes_do_not_pin_the_padding() {
    let node = node().await;
    // A handler that holds every request without answering.
    let mut held = node.serve("hold/1").unwrap();
    let mut raw = RawPeer::connect(&node).await;
    eventually("registered", || node.peers().len() == 1).await;
    let Some(before) = rss() else {
        eprintln!("skipped: no /proc/self/statm on this system");
        return;
    };
    let frames = 64;
    let pad = vec![0x5a; 1000 << 10];
    for id in 0..frames {
        let request = peerlink_proto::control::RrMessage::Request {
            id,
            protocol: "hold/1".into(),
            body: bytes::Bytes::from_static(&[7; 40]),
        }
        .encode();
        // Channel 999 has no inbox: its megabyte is dropped on arrival.
        let wire = raw.frame(&[(REQUEST_CHANNEL, &request[..]), (999, &pad[..])]);
        raw.send_raw(&wire).await;
    }
    let mut kept = Vec::new();
    while kept.len() < frames as usize {
        let r = tokio::time::timeout(Duration::from_secs(10), held.recv())
            .await
            .expect("requests arrive")
            .unwrap();
        assert_eq!(&r.body[..], &[7; 40]);
        kept.push(r);
    }
    let grown = rss().unwrap_or(before).saturating_sub(before);
    // Pinned, the padding would be 64 MB; copied out, the 64 held
    // requests cost next to nothing.
    assert!(
        grown < 24 << 20,
        "{} MiB resident after holding {frames} small requests",
        grown >> 20
    );
    drop(kept);
    node.shutdown().await;
}

#[tokio::test]
async fn a_request_that_crosses_our_go_away_is_still_answered() {
    use peerlink_proto::control::{Control, RrMessage};
    use peerlink_proto::Records;
    let node = node().await;
    let mut echo = node.serve("echo/1").unwrap();
    tokio::spawn(async move {
        while let Some(req) = echo.recv().await {
            let body = req.body.clone();
            req.respond(body);
        }
    });
    let mut raw = RawPeer::connect(&node).await;
    eventually("registered", || node.peers().len() == 1).await;
    // The node lets the connection go (its cap, idle, or by hand); the
    // peer sent a request before it saw the go-away.
    node.disconnect(&raw.keypair.peer_id());
    let request = RrMessage::Request {
        id: 1,
        protocol: "echo/1".into(),
        body: bytes::Bytes::from_static(b"in flight"),
    }
    .encode();
    let wire = raw.frame(&[(REQUEST_CHANNEL, &request[..])]);
    raw.send_raw(&wire).await;
    let (mut goaway, mut answer) = (false, None);
    let read = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            while let Some(plain) = raw.dec.decode(&mut raw.buf).unwrap() {
                for r in Records::new(plain) {
                    let r = r.unwrap();
                    if r.channel == CONTROL_CHANNEL {
                        goaway |= matches!(Control::decode(&r.payload), Ok(Control::GoAway(_)));
                    } else if r.channel == REQUEST_CHANNEL {
                        answer = Some(RrMessage::decode(&r.payload).unwrap());
                    }
                }
            }
            if answer.is_some() {
                return;
            }
            raw.buf.reserve(4096);
            if raw.stream.read_buf(&mut raw.buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer and no close within 4 s");
    assert!(goaway, "the node said go-away");
    match answer {
        Some(RrMessage::Response { id: 1, body }) => assert_eq!(&body[..], b"in flight"),
        other => panic!("the request was dropped: {other:?}"),
    }
    node.shutdown().await;
}
