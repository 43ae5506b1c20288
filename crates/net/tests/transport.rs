//! Two real nodes over loopback: ordering, channels, request/response,
//! ping, limits and duplicate connections.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use peerlink_net::{ChannelConfig, Limits, NetError, Node, NodeConfig, PeerEvent, Policy};
use peerlink_proto::control::RemoteErrorCode;

/// Receives `count` messages whose first 8 bytes count up by `step` from 0.
async fn expect_in_order(mut rx: peerlink_net::Receiver, count: u64, step: u64) {
    let mut buf = Vec::new();
    let mut expect = 0;
    while expect < count * step {
        buf.clear();
        rx.recv_many(&mut buf, 4096).await;
        for m in &buf {
            let mut n = [0u8; 8];
            n.copy_from_slice(&m.payload[..8]);
            assert_eq!(u64::from_le_bytes(n), expect, "out of order");
            expect += step;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_complete_and_in_order_per_channel() {
    // The benchmark sends a million; the suite proves the property with fewer.
    const N: u64 = 100_000;
    let (a, b) = (node().await, node().await);
    let rx16 = b.channel(16).unwrap();
    let rx17 = b.channel(17).unwrap();
    a.connect(b.addr().unwrap()).await.unwrap();
    let tx = a.sender(&b.peer_id()).unwrap();
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let mut m = [0u8; 64];
            m[..8].copy_from_slice(&i.to_le_bytes());
            tx.send(16, Bytes::copy_from_slice(&m)).await.unwrap();
            if i % 10 == 0 {
                tx.send(17, Bytes::copy_from_slice(&i.to_le_bytes()))
                    .await
                    .unwrap();
            }
        }
    });
    let c16 = expect_in_order(rx16, N, 1);
    let c17 = expect_in_order(rx17, N / 10, 10);
    tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(c16, c17) })
        .await
        .unwrap();
    sender.await.unwrap();
    assert_eq!(b.metrics().counter("messages_received", "16"), N);
    assert_eq!(a.metrics().counter("messages_sent", "16"), N);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn request_response_timeouts_and_errors() {
    let (a, b) = (node().await, node().await);
    a.connect(b.addr().unwrap()).await.unwrap();
    let bob = b.peer_id();

    let mut echo = b.serve("echo/1").unwrap();
    let mut slow = b.serve("slow/1").unwrap();
    let mut dropper = b.serve("drop/1").unwrap();
    assert!(matches!(b.serve("echo/1"), Err(NetError::ProtocolTaken(_))));
    tokio::spawn(async move {
        while let Some(r) = echo.recv().await {
            let body = r.body.clone();
            r.respond(body);
        }
    });
    let held = tokio::spawn(async move { slow.recv().await });
    tokio::spawn(async move {
        while let Some(r) = dropper.recv().await {
            drop(r);
        }
    });

    assert_eq!(
        a.request(&bob, "echo/1", &b"hi"[..]).await.unwrap(),
        Bytes::from_static(b"hi")
    );
    let big = vec![7u8; 100_000];
    assert!(matches!(
        a.request_with(&bob, "echo/1", big, Duration::from_secs(5), 1000)
            .await,
        Err(NetError::ResponseTooLarge {
            len: 100_000,
            max: 1000
        })
    ));
    assert!(matches!(
        a.request_with(&bob, "slow/1", &b"x"[..], Duration::from_millis(100), 1000)
            .await,
        Err(NetError::RequestTimeout(_))
    ));
    assert!(matches!(
        a.request(&bob, "nobody/1", &b"x"[..]).await,
        Err(NetError::Remote {
            code: RemoteErrorCode::UnknownProtocol,
            ..
        })
    ));
    assert!(matches!(
        a.request(&bob, "drop/1", &b"x"[..]).await,
        Err(NetError::Remote {
            code: RemoteErrorCode::NoResponse,
            ..
        })
    ));
    assert!(matches!(
        a.request(&bob, "", &b"x"[..]).await,
        Err(NetError::BadProtocolName(_))
    ));
    assert_eq!(a.metrics().counter("requests", "timeout"), 1);
    drop(held);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn one_peer_gets_an_eighth_of_a_request_queue_and_the_rest_still_get_in() {
    let config = NodeConfig {
        request_queue: 64,
        ..NodeConfig::default()
    };
    let (heavy, light, b) = (node().await, node().await, node_with(config).await);
    heavy.connect(b.addr().unwrap()).await.unwrap();
    light.connect(b.addr().unwrap()).await.unwrap();
    let bob = b.peer_id();
    let mut held = b.serve("hold/1").unwrap();
    // 20 at once from one peer: its share of 64 is 8, the other 12 are
    // answered "overloaded" straight away.
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..20u8 {
        let heavy = heavy.clone();
        sent.spawn(async move {
            heavy
                .request_with(&bob, "hold/1", vec![i], Duration::from_secs(20), 1000)
                .await
        });
    }
    let mut overloaded = 0;
    while overloaded < 12 {
        let r = tokio::time::timeout(Duration::from_secs(10), sent.join_next())
            .await
            .expect("overloaded answers come at once")
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                r,
                Err(NetError::Remote {
                    code: RemoteErrorCode::Overloaded,
                    ..
                })
            ),
            "{r:?}"
        );
        overloaded += 1;
    }
    // Another peer still gets in, and the held ones are all there.
    let one = {
        let light = light.clone();
        tokio::spawn(async move { light.request(&bob, "hold/1", &b"light"[..]).await })
    };
    let mut got = Vec::new();
    while got.len() < 9 {
        let r = tokio::time::timeout(Duration::from_secs(10), held.recv())
            .await
            .expect("queued requests")
            .unwrap();
        got.push(r.body.clone());
        r.respond(Bytes::from_static(b"ok"));
    }
    assert_eq!(got.iter().filter(|b| &b[..] == b"light").count(), 1);
    assert_eq!(one.await.unwrap().unwrap(), Bytes::from_static(b"ok"));
    while let Some(r) = sent.join_next().await {
        assert_eq!(r.unwrap().unwrap(), Bytes::from_static(b"ok"));
    }
    for n in [heavy, light, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_peer_over_its_serve_rate_waits_while_others_are_served_but_not_alone() {
    // 2 MiB/s: a burst of 256 KiB, far less than the heavy peer sends.
    // No DHT: only the echoes below are served requests.
    let config = NodeConfig {
        peer_serve_rate: 2 << 20,
        dht: None,
        ..NodeConfig::default()
    };
    let (heavy, light, b) = (node().await, node().await, node_with(config).await);
    heavy.connect(b.addr().unwrap()).await.unwrap();
    light.connect(b.addr().unwrap()).await.unwrap();
    let bob = b.peer_id();
    let mut echo = b.serve("echo/1").unwrap();
    tokio::spawn(async move {
        while let Some(r) = echo.recv().await {
            let body = r.body.clone();
            r.respond(body);
        }
    });
    let big = Bytes::from(vec![7u8; 64 << 10]);
    let send_big = |n: usize| {
        let (heavy, big) = (heavy.clone(), big.clone());
        async move {
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..n {
                let (heavy, big) = (heavy.clone(), big.clone());
                calls.spawn(async move { heavy.request(&bob, "echo/1", big).await });
            }
            while let Some(r) = calls.join_next().await {
                assert_eq!(r.unwrap().unwrap().len(), 64 << 10);
            }
        }
    };
    // Alone, a peer is served as fast as it asks: 2 MiB in and out
    // against a 256 KiB burst, and never a pause.
    send_big(16).await;
    assert_eq!(b.metrics().serve_pauses(), 0);
    // With another peer served too, the heavy one waits for its rate; the
    // light one is answered throughout, and nothing is lost.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    light.request(&bob, "echo/1", &b"hi"[..]).await.unwrap();
    let light_task = {
        let (light, stop) = (light.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answered = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(
                    light.request(&bob, "echo/1", &b"hi"[..]).await.unwrap(),
                    Bytes::from_static(b"hi")
                );
                answered += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answered
        })
    };
    send_big(16).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(light_task.await.unwrap() > 0);
    assert!(b.metrics().serve_pauses() > 0);
    assert!(b
        .metrics()
        .encode()
        .contains("peerlink_serve_paused_seconds_total"));
    for n in [heavy, light, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn ping_measures_rtt_and_peers_are_listed() {
    let (a, b) = (node().await, node().await);
    let mut events = b.events();
    a.connect(b.addr().unwrap()).await.unwrap();
    let rtt = a.ping(&b.peer_id()).await.unwrap();
    assert!(rtt < Duration::from_secs(1));
    assert_eq!(a.peers().len(), 1);
    assert!(!a.peers()[0].inbound && b.peers()[0].inbound);
    match events.recv().await.unwrap() {
        PeerEvent::Connected { peer, inbound, .. } => {
            assert_eq!((peer, inbound), (a.peer_id(), true))
        }
        other => panic!("{other:?}"),
    }
    // Keepalive pings fill in the smoothed RTT.
    eventually("keepalive rtt", || {
        a.peers().first().is_some_and(|p| p.rtt.is_some())
    })
    .await;
    assert!(a.disconnect(&b.peer_id()));
    match tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap()
    {
        PeerEvent::Disconnected { peer, .. } => assert_eq!(peer, a.peer_id()),
        other => panic!("{other:?}"),
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn simultaneous_dials_settle_on_one_connection() {
    for _ in 0..5 {
        let (a, b) = (node().await, node().await);
        let (ra, rb) = tokio::join!(a.connect(b.addr().unwrap()), b.connect(a.addr().unwrap()));
        ra.unwrap();
        rb.unwrap();
        eventually("one connection each", || {
            a.peers().len() == 1 && b.peers().len() == 1
        })
        .await;
        // Both sides keep the connection dialled by the smaller id.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (pa, pb) = (a.peers(), b.peers());
        assert_eq!((pa.len(), pb.len()), (1, 1));
        let a_dialled = !pa[0].inbound;
        assert_eq!(
            a_dialled, pb[0].inbound,
            "both ends agree on the surviving connection"
        );
        assert_eq!(a_dialled, a.peer_id() < b.peer_id());
        let mut rx = b.channel(16).unwrap();
        a.send(&b.peer_id(), 16, &b"after the race"[..])
            .await
            .unwrap();
        assert_eq!(&rx.recv().await.unwrap().payload[..], b"after the race");
        a.shutdown().await;
        b.shutdown().await;
    }
}

/// Two dials of one peer from the same side (a seed redial racing a DHT
/// request) used to leave each side keeping a different connection, so
/// both ended; now the second waits for the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dials_from_one_side_leave_one_live_connection() {
    for _ in 0..5 {
        let (a, b) = (node().await, node().await);
        let target = a.addr().unwrap();
        let mut events = b.events();
        let dials: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.connect(target).await })
            })
            .collect();
        for d in dials {
            assert_eq!(d.await.unwrap().unwrap(), a.peer_id());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!((a.peers().len(), b.peers().len()), (1, 1));
        let mut connected = 0;
        while let Ok(e) = events.try_recv() {
            connected += usize::from(matches!(e, PeerEvent::Connected { .. }));
        }
        assert_eq!(connected, 1, "one handshake for eight concurrent dials");
        let mut rx = a.channel(16).unwrap();
        b.send(&a.peer_id(), 16, &b"still connected"[..])
            .await
            .unwrap();
        assert_eq!(&rx.recv().await.unwrap().payload[..], b"still connected");
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn max_peers_and_max_inbound_are_enforced() {
    let config = NodeConfig {
        limits: Limits {
            max_peers: 1,
            ..Limits::default()
        },
        ..NodeConfig::default()
    };
    let server = node_with(config).await;
    let (c1, c2) = (node().await, node().await);
    c1.connect(server.addr().unwrap()).await.unwrap();
    // The second handshake completes, then the server refuses it.
    let _ = c2.connect(server.addr().unwrap()).await;
    eventually("refused peer disconnected", || {
        !c2.is_connected(&server.peer_id())
    })
    .await;
    assert_eq!(server.peers().len(), 1);
    assert_eq!(
        server
            .metrics()
            .counter("connections_rejected", "max_peers"),
        1
    );
    // The first peer is unaffected.
    assert!(c1.ping(&server.peer_id()).await.is_ok());
    for n in [&server, &c1, &c2] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn seeds_are_redialled_with_backoff() {
    let key = peerlink_net::Keypair::generate().unwrap();
    let first = Node::builder()
        .keypair(key.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let seed = first.addr().unwrap();
    first.shutdown().await;
    drop(first);
    let config = NodeConfig {
        redial_backoff: Duration::from_millis(20),
        ..NodeConfig::default()
    };
    let joiner = Node::builder()
        .config(config)
        .bootstrap([seed])
        .build()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!joiner.is_connected(&seed.id));
    // The seed comes back on the same address: the joiner finds it.
    let again = Node::builder()
        .keypair(key)
        .listen(seed.addr)
        .build()
        .await
        .unwrap();
    eventually("seed redialled", || joiner.is_connected(&seed.id)).await;
    joiner.shutdown().await;
    again.shutdown().await;
}

#[tokio::test]
async fn drop_channels_count_drops_and_block_channels_push_back() {
    let config = NodeConfig::default();
    let b = node_with(config).await;
    let a = Node::builder()
        .channel(
            ChannelConfig::new(20)
                .max_queued_bytes(1024)
                .policy(Policy::Drop),
        )
        .channel(
            ChannelConfig::new(21)
                .max_queued_bytes(1024)
                .policy(Policy::Block),
        )
        .build()
        .await
        .unwrap();
    assert!(matches!(a.channel(3), Err(NetError::ChannelReserved(3))));
    let rx = b.channel(20).unwrap();
    assert!(matches!(b.channel(20), Err(NetError::ChannelTaken(20))));
    drop(rx);
    let _rx = b.channel(20).unwrap(); // free again once dropped
    a.connect(b.addr().unwrap()).await.unwrap();
    let peer = b.peer_id();
    // Flood faster than the writer drains; a full drop channel counts drops,
    // a full block channel refuses try_send.
    let (mut dropped, mut full) = (0, 0);
    for _ in 0..100_000 {
        if let Err(NetError::QueueFull { .. }) = a.try_send(&peer, 20, vec![0u8; 512]) {
            dropped += 1;
        }
        if let Err(NetError::QueueFull { .. }) = a.try_send(&peer, 21, vec![0u8; 512]) {
            full += 1;
        }
        assert!(a.queued_bytes(&peer, 20) <= 1024 && a.queued_bytes(&peer, 21) <= 1024);
    }
    assert!(dropped > 0 && full > 0, "dropped {dropped}, full {full}");
    assert_eq!(a.metrics().dropped(20, "out"), dropped);
    assert!(matches!(
        a.try_send(&peer, 16, vec![0u8; 2 << 20]),
        Err(NetError::MessageTooLarge { .. })
    ));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn idle_connections_close_even_while_keepalive_pings_flow() {
    let keepalive = peerlink_net::KeepaliveConfig {
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        idle_timeout: Some(Duration::from_millis(400)),
    };
    let config = NodeConfig {
        keepalive,
        ..NodeConfig::default()
    };
    let (a, b) = (node_with(config.clone()).await, node_with(config).await);
    let mut events = a.events();
    a.connect(b.addr().unwrap()).await.unwrap();
    // Application traffic keeps it open...
    let mut rx = b.channel(16).unwrap();
    for _ in 0..6 {
        a.send(&b.peer_id(), 16, &b"still here"[..]).await.unwrap();
        rx.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.is_connected(&b.peer_id()));
    // ...pings alone do not.
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(PeerEvent::Disconnected { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("idle connection closed");
    assert!(
        closed.contains("Idle") || closed.contains("closed"),
        "{closed}"
    );
    a.shutdown().await;
    b.shutdown().await;
}
