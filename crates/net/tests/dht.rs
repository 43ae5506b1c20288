//! The DHT over real sockets: a 200-node testnet where every node reads
//! every record, persistence across restarts, and hostile DHT requests.

use std::collections::HashSet;
use std::time::Duration;

use peerlink_net::testnet::{Testnet, TestnetConfig};
use peerlink_net::{Keypair, Node};

/// Descriptors this process has open (Linux), or `None` elsewhere.
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// The soft limit on open descriptors (Linux), or `None` elsewhere.
fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_nodes_every_node_gets_every_record() {
    // 200 nodes in one process share its descriptors. Connect on demand
    // must keep them well inside the limit: a dial that fails for want of
    // a descriptor fails at once, and a lookup whose every contact fails
    // so reads a stored record as missing.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(open_fds().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let net = Testnet::start(TestnetConfig {
        nodes: 200,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    let n = net.nodes.len();
    let started = std::time::Instant::now();
    // Every node puts one record.
    let puts = net.nodes.iter().enumerate().map(|(i, node)| {
        let node = node.clone();
        tokio::spawn(async move {
            node.dht()
                .put(format!("key-{i}"), format!("value-{i}"))
                .await
        })
    });
    // What the network saw, for a failure message.
    let counters = |net: &Testnet| {
        let sum = |name: &str, label: &str| -> u64 {
            net.nodes
                .iter()
                .map(|n| n.metrics().counter(name, label))
                .sum()
        };
        format!(
            "requests ok {} timeout {} closed {} failed {}; handshake failures: timeout {} eof {}; connections closed {}",
            sum("requests", "ok"),
            sum("requests", "timeout"),
            sum("requests", "closed"),
            sum("requests", "failed"),
            sum("handshake_failures", "timeout"),
            sum("handshake_failures", "eof"),
            sum("connections_closed", "closed"),
        )
    };
    // Writes the DHTs refused, and why.
    let refusals = async |net: &Testnet| {
        let (mut far, mut quota, mut slowed) = (0, 0, 0);
        for node in &net.nodes {
            if let Ok(i) = node.dht().info().await {
                far += i.stats.refused_far;
                quota += i.stats.refused_quota;
                slowed += i.stats.rate_limited;
            }
        }
        format!("writes refused: not close {far}, over quota {quota}, slowed down {slowed}")
    };
    for p in puts.collect::<Vec<_>>() {
        let out = p.await.unwrap().unwrap();
        if out.value < 10 {
            panic!(
                "stored on {} peers ({} answered, {} failed, {:?}); {}; {}",
                out.value,
                out.answered,
                out.failed,
                out.elapsed,
                counters(&net),
                refusals(&net).await
            );
        }
    }
    eprintln!(
        "puts: {:?}; {}; {}",
        started.elapsed(),
        counters(&net),
        refusals(&net).await
    );
    let started = std::time::Instant::now();
    // Every node gets every other node's record: with the one-round-trip
    // get for all of them, and with the quorum get (the default: the
    // same lookup, waiting for three holders) for the next 10 keys —
    // at 200 × 199 quorum gets the test spent its time on the handshakes
    // of 64-connection nodes talking to everyone, not on the DHT.
    let gets = net.nodes.iter().enumerate().map(|(i, node)| {
        let node = node.clone();
        tokio::spawn(async move {
            let mut missing = Vec::new();
            let quorum = (1..=10).map(|d| (i + d) % n);
            for (j, first) in (0..n).map(|j| (j, true)).chain(quorum.map(|j| (j, false))) {
                if j == i {
                    continue;
                }
                let dht = node.dht();
                let key = format!("key-{j}");
                let got = match first {
                    true => dht.get_first(key).await,
                    false => dht.get(key).await,
                };
                match got {
                    Ok(o)
                        if o.value
                            .as_ref()
                            .is_some_and(|r| r.value == format!("value-{j}").as_bytes()) => {}
                    other => missing.push((j, first, format!("{other:?}"))),
                }
            }
            missing
        })
    });
    let mut failures = Vec::new();
    for (i, g) in gets.collect::<Vec<_>>().into_iter().enumerate() {
        for m in g.await.unwrap() {
            failures.push((i, m));
        }
    }
    let refused = refusals(&net).await;
    eprintln!(
        "gets: {:?}; {}; {refused}",
        started.elapsed(),
        counters(&net)
    );
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} gets failed (descriptors: peak {peak} of {:?}), first (node, key, first-answer get, result): {:?}; {}; {refused}",
        failures.len(),
        n * (n - 1) + n * 10,
        fd_limit(),
        failures.first(),
        counters(&net)
    );
    match fd_limit() {
        Some(limit) => {
            eprintln!("open descriptors: peak {peak} of {limit}");
            assert!(
                peak < limit * 9 / 10,
                "{peak} descriptors open at the peak, limit {limit}: connections are not closing"
            );
        }
        None => eprintln!("descriptor check skipped: no /proc/self/limits on this system"),
    }
    net.shutdown().await;
}

/// How the multi-process benchmark builds one network: a second testnet
/// joins the first through its seed, and records cross between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testnet_joins_another_through_its_seed() {
    let a = Testnet::start(TestnetConfig {
        nodes: 8,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    let b = Testnet::start(TestnetConfig {
        nodes: 8,
        seed: a.nodes[0].addr(),
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(
        b.bootstrap_times.len(),
        8,
        "every node of b joined through a's seed"
    );
    for (side, net) in [("a", &a), ("b", &b)] {
        for (i, node) in net.nodes.iter().enumerate() {
            node.dht()
                .put(format!("{side}-{i}"), format!("value {side}-{i}"))
                .await
                .unwrap();
        }
    }
    for (reader, other) in [(&a, "b"), (&b, "a")] {
        for node in &reader.nodes {
            for i in 0..8 {
                let got = node.dht().get(format!("{other}-{i}")).await.unwrap();
                let value = got.value.map(|r| r.value);
                assert_eq!(
                    value.as_deref(),
                    Some(format!("value {other}-{i}").as_bytes())
                );
            }
        }
    }
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn records_persist_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Keypair::generate().unwrap();
    let build = || {
        Node::builder()
            .keypair(kp.clone())
            .listen("127.0.0.1:0".parse().unwrap())
            .data_dir(dir.path())
            .build()
    };
    let node = build().await.unwrap();
    let out = node.dht().put("persist", "me").await.unwrap();
    assert_eq!(out.value, 0, "no peers yet");
    node.shutdown().await;
    drop(node);
    let node = build().await.unwrap();
    let got = node.dht().get("persist").await.unwrap();
    assert_eq!(
        got.value.map(|r| r.value),
        Some(bytes::Bytes::from_static(b"me"))
    );
    node.shutdown().await;
}

#[tokio::test]
async fn malformed_dht_requests_disconnect_and_count_while_others_are_served() {
    let a = Node::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let evil = Node::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .without_dht()
        .build()
        .await
        .unwrap();
    let honest = Node::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    evil.connect(a.addr().unwrap()).await.unwrap();
    let r = evil.request(&a.peer_id(), "dht/1", vec![0xFFu8; 40]).await;
    assert!(r.is_err(), "{r:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !a.is_connected(&evil.peer_id()),
        "the hostile peer was disconnected"
    );
    let text = a.metrics().encode();
    assert!(text.contains("reason=\"dht_malformed\""), "{text}");
    // The node still serves an honest peer.
    let out = honest
        .dht()
        .bootstrap(vec![a.addr().unwrap()])
        .await
        .unwrap();
    assert_eq!(out.answered, 1);
    honest.dht().put("k", "v").await.unwrap();
    let got = a.dht().get("k").await.unwrap();
    assert!(got.value.is_some());
    let seen: HashSet<_> = a.peers().iter().map(|p| p.id).collect();
    assert!(seen.contains(&honest.peer_id()));
    for n in [a, evil, honest] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_writer_that_ignores_slow_down_waits_in_its_own_socket_while_others_are_served() {
    use peerlink_proto::dht::{Key, Record, Request, RequestBody, Response};
    let listen = || "127.0.0.1:0".parse().unwrap();
    let a = Node::builder().listen(listen()).build().await.unwrap();
    let mut echo = a.serve("echo/1").unwrap();
    tokio::spawn(async move {
        while let Some(r) = echo.recv().await {
            let body = r.body.clone();
            r.respond(body);
        }
    });
    let writer = Node::builder()
        .listen(listen())
        .without_dht()
        .build()
        .await
        .unwrap();
    let light = Node::builder()
        .listen(listen())
        .without_dht()
        .build()
        .await
        .unwrap();
    writer.connect(a.addr().unwrap()).await.unwrap();
    light.connect(a.addr().unwrap()).await.unwrap();
    let target = a.peer_id();
    // Another peer is served throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    light.request(&target, "echo/1", &b"hi"[..]).await.unwrap();
    let light_task = {
        let (light, stop) = (light.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answered = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                light.request(&target, "echo/1", &b"hi"[..]).await.unwrap();
                answered += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answered
        })
    };
    // 600 writes of fresh keys, 16 at a time, "slow down" ignored: past
    // the burst of 100 each costs 64 KiB of the writer's share, so it is
    // soon paused.
    let mut calls = tokio::task::JoinSet::new();
    let (mut slowed, mut sent) = (0u32, 0u64);
    while sent < 600 || !calls.is_empty() {
        while sent < 600 && calls.len() < 16 {
            let record = Record::sign(
                writer.keypair(),
                Key::hash(&sent.to_le_bytes()),
                bytes::Bytes::from_static(b"v"),
                1,
                u64::MAX / 2,
            );
            let req = Request {
                listen: None,
                body: RequestBody::PutRecord { record },
            };
            let w = writer.clone();
            calls.spawn(async move { w.request(&target, "dht/1", req.encode()).await });
            sent += 1;
        }
        match calls.join_next().await {
            Some(Ok(Ok(resp))) => {
                if matches!(Response::decode(&resp), Ok(Response::SlowDown { .. })) {
                    slowed += 1;
                }
            }
            // Banned for write_flood before the end: the connection closed.
            Some(_) => {}
            None => break,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(slowed > 100, "{slowed} writes slowed down");
    assert!(a.metrics().serve_pauses() > 0);
    assert!(light_task.await.unwrap() > 0);
    for n in [a, writer, light] {
        n.shutdown().await;
    }
}
