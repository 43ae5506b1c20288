//! Topic gossip over real sockets: delivery exactly once, validation
//! before forwarding, hostile peers, and clear results at the edges.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use peerlink_net::{GossipMessage, NetError, Node, NodeConfig, Subscription, Validation};
use peerlink_proto::control::GOSSIP_CHANNEL;
use peerlink_proto::gossip::{PublishError, Topic, Wire, WireError};

fn config() -> NodeConfig {
    NodeConfig {
        dht: None,
        ..NodeConfig::default()
    }
}

async fn nodes(n: usize) -> Vec<Node> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(node_with(config()).await);
    }
    v
}

/// Waits until every node has a mesh peer in `topic`.
async fn mesh_formed(nodes: &[Node], topic: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for n in nodes {
        loop {
            let info = n.gossip().info().await.unwrap();
            if info
                .topics
                .iter()
                .any(|(t, mesh, _)| &**t == topic && *mesh > 0)
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "mesh never formed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Sums over all nodes of the gossip counters a test checks.
#[derive(Debug, Default)]
struct Totals {
    duplicates: u64,
    chokes: u64,
    grafts: u64,
    iwants: u64,
    /// Mesh link ends, and the eager ones among them, in the first topic.
    mesh: u64,
    eager: u64,
}

async fn info_of(node: &Node) -> (peerlink_proto::gossip::GossipStats, usize, usize) {
    let info = node.gossip().info().await.unwrap();
    let (mesh, eager) = info.topics.first().map_or((0, 0), |t| (t.1, t.2));
    (info.stats, mesh, eager)
}

async fn totals(nodes: &[Node]) -> Totals {
    let mut t = Totals::default();
    for n in nodes {
        let (s, mesh, eager) = info_of(n).await;
        t.duplicates += s.duplicates;
        t.chokes += s.chokes_sent;
        t.grafts += s.grafts_sent;
        t.iwants += s.iwant_sent;
        t.mesh += mesh as u64;
        t.eager += eager as u64;
    }
    t
}

/// Publishes one message and waits until every other subscriber has it
/// and the copies still on their way have landed (duplicates come after
/// the first copy).
async fn send_and_wait(nodes: &[Node], subs: &mut [Subscription], from: usize, data: String) {
    nodes[from]
        .gossip()
        .publish("blocks", data.clone())
        .await
        .unwrap();
    for (i, sub) in subs.iter_mut().enumerate() {
        if i != from {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .expect("delivered within 10 s")
                .unwrap();
            assert_eq!(m.data, data.as_bytes(), "node {i}");
        }
    }
    // Let the last duplicates land; any later are counted with the next
    // message, which is why the bound is checked on the sum.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Drains what arrives on `sub` within `quiet` of the last message.
async fn collect(sub: &mut Subscription, quiet: Duration) -> Vec<GossipMessage> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.recv()).await {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_receives_every_message_exactly_once() {
    let nodes = nodes(12).await;
    // A ring with chords: every node dials the next three.
    for i in 0..nodes.len() {
        for d in 1..=3 {
            let j = (i + d) % nodes.len();
            nodes[i].connect(nodes[j].addr().unwrap()).await.unwrap();
        }
    }
    let mut subs: Vec<Subscription> = nodes
        .iter()
        .map(|n| n.gossip().subscribe("blocks").unwrap())
        .collect();
    mesh_formed(&nodes, "blocks").await;
    // The first message floods the mesh; the duplicates it causes choke
    // redundant links, leaving a broadcast tree.
    nodes[0]
        .gossip()
        .publish("blocks", &b"warm-up"[..])
        .await
        .unwrap();
    for sub in subs.iter_mut().skip(1) {
        assert_eq!(&sub.recv().await.unwrap().data[..], b"warm-up");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut warm = 0;
    for n in &nodes {
        warm += n.gossip().info().await.unwrap().stats.duplicates;
    }
    let mut published = HashMap::new();
    for round in 0..5u32 {
        for p in [0usize, 4, 7, 11] {
            let data = format!("block {round} from {p}");
            let r = nodes[p]
                .gossip()
                .publish("blocks", data.clone())
                .await
                .unwrap();
            assert!(r.peers > 0);
            published.insert(data, p);
        }
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        let got = collect(sub, Duration::from_millis(150)).await;
        let mut seen = HashMap::new();
        for m in &got {
            *seen
                .entry(String::from_utf8(m.data.to_vec()).unwrap())
                .or_insert(0) += 1;
            assert_eq!(&*m.topic, "blocks");
        }
        for (data, publisher) in &published {
            let want = usize::from(*publisher != i);
            assert_eq!(
                seen.get(data).copied().unwrap_or(0),
                want,
                "node {i}, {data:?}"
            );
        }
        let want = published.values().filter(|p| **p != i).count();
        assert_eq!(got.len(), want, "node {i} got extra messages");
    }
    let burst = totals(&nodes).await;
    eprintln!(
        "warm-up (a flood) duplicates {warm}, then a burst of {}: {:.2} per node per message",
        published.len(),
        (burst.duplicates - warm) as f64 / (published.len() * nodes.len()) as f64
    );
    // How many duplicates a burst brings depends on how many messages
    // overtake the chokes of the ones before (scheduling, CPU load), so it
    // is printed, not bounded. What does not depend on timing: the flood
    // choked redundant links (each node keeps at least min_eager = 3 of its
    // 6), and no message ever costs more copies than the eager links
    // allow, checked one message at a time below.
    let t = totals(&nodes).await;
    assert!(t.eager < t.mesh, "no link was choked: {t:?}");
    let n = nodes.len() as u64;
    let (mut dups_sum, mut bound_sum) = (0, 0);
    for round in 0..12u32 {
        let publisher = (round as usize * 5) % nodes.len();
        let before = totals(&nodes).await;
        let mesh_pub = info_of(&nodes[publisher]).await.1 as u64;
        let eager_pub = info_of(&nodes[publisher]).await.2 as u64;
        send_and_wait(&nodes, &mut subs, publisher, format!("tree {round}")).await;
        let after = totals(&nodes).await;
        // The publisher sends to its whole mesh; every other node forwards
        // once to each link eager at that moment (those it had, plus one per
        // graft), and every IWANT is answered with at most one copy. All
        // copies beyond the first at each of the n-1 others are duplicates.
        let bound = (before.eager - eager_pub)
            + mesh_pub
            + (after.grafts - before.grafts)
            + (after.iwants - before.iwants)
            - (n - 1);
        let dups = after.duplicates - before.duplicates;
        eprintln!("message {round}: {dups} duplicates (bound {bound})");
        dups_sum += dups;
        bound_sum += bound;
    }
    // Checked on the sum: a copy that lands after its message's window is
    // counted in the next one.
    eprintln!(
        "one at a time: {:.2} duplicates per node per message (a flood: {:.2})",
        dups_sum as f64 / (12 * n) as f64,
        (t.mesh - (n - 1)) as f64 / n as f64
    );
    assert!(
        dups_sum <= bound_sum,
        "{dups_sum} duplicates over 12 messages, more than the tree allows ({bound_sum})"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn invalid_messages_never_reach_a_second_hop_and_the_sender_is_disconnected() {
    // A line: a - b - c. b rejects anything that starts with "bad".
    let v = nodes(3).await;
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    a.connect(b.addr().unwrap()).await.unwrap();
    c.connect(b.addr().unwrap()).await.unwrap();
    b.gossip()
        .set_validator("tx", |m: &GossipMessage| {
            if m.data.starts_with(b"bad") {
                Validation::Reject
            } else {
                Validation::Accept
            }
        })
        .unwrap();
    let _sa = a.gossip().subscribe("tx").unwrap();
    let mut sb = b.gossip().subscribe("tx").unwrap();
    let mut sc = c.gossip().subscribe("tx").unwrap();
    mesh_formed(&v, "tx").await;
    a.gossip().publish("tx", &b"good"[..]).await.unwrap();
    assert_eq!(&sc.recv().await.unwrap().data[..], b"good");
    assert_eq!(&sb.recv().await.unwrap().data[..], b"good");
    for i in 0..20u8 {
        if a.gossip()
            .publish("tx", vec![b'b', b'a', b'd', i])
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("a disconnected by b", || !b.is_connected(&a.peer_id())).await;
    let errors = b.metrics().counter("peer_errors", "gossip_spam")
        + b.metrics().counter("peer_errors", "gossip_invalid_message");
    assert_eq!(errors, 1);
    assert!(collect(&mut sc, Duration::from_millis(200))
        .await
        .is_empty());
    assert!(collect(&mut sb, Duration::from_millis(10)).await.is_empty());
    // b still serves c.
    c.gossip().publish("tx", &b"still here"[..]).await.unwrap();
    assert_eq!(&sb.recv().await.unwrap().data[..], b"still here");
    for n in &v {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn malformed_and_oversized_gossip_disconnects_the_peer_and_is_counted() {
    let node = node_with(NodeConfig {
        gossip: Some(peerlink_net::GossipConfig {
            max_message_size: 1000,
            ..Default::default()
        }),
        ..config()
    })
    .await;
    let _sub = node.gossip().subscribe("t").unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![42, 1, 2, 3], "gossip_malformed"),
        (vec![8, 0xff, 0xff], "gossip_malformed"),
        (
            Wire::Data {
                topic: Topic::from("t"),
                hops: 0,
                data: vec![0u8; 1001].into(),
            }
            .encode()
            .to_vec(),
            "gossip_oversized",
        ),
    ];
    for (bytes, reason) in cases {
        let before = node.metrics().counter("peer_errors", reason);
        let mut raw = RawPeer::connect(&node).await;
        eventually("raw peer registered", || node.peers().len() == 1).await;
        let wire = raw.frame(&[(GOSSIP_CHANNEL, &bytes)]);
        raw.send_raw(&wire).await;
        raw.expect_closed().await;
        eventually(reason, || {
            node.metrics().counter("peer_errors", reason) == before + 1
        })
        .await;
        eventually("peer removed", || node.peers().is_empty()).await;
    }
    node.shutdown().await;
}

#[tokio::test]
async fn edges_are_reported_clearly() {
    let v = nodes(2).await;
    // Nobody subscribes yet: not an error, zero peers.
    let r = v[0].gossip().publish("news", &b"first"[..]).await.unwrap();
    assert_eq!(r.peers, 0);
    assert!(matches!(
        v[0].gossip().publish("news", &b"first"[..]).await,
        Err(NetError::Publish(PublishError::Duplicate))
    ));
    let long = "x".repeat(300);
    assert!(matches!(
        v[0].gossip().subscribe(&long),
        Err(NetError::Topic(WireError::TopicTooLong(300)))
    ));
    let off = Node::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .without_gossip()
        .without_dht()
        .build()
        .await
        .unwrap();
    assert!(matches!(
        off.gossip().subscribe("t"),
        Err(NetError::GossipDisabled)
    ));
    // Publishing to a topic one does not subscribe to reaches subscribers.
    v[0].connect(v[1].addr().unwrap()).await.unwrap();
    let mut sub = v[1].gossip().subscribe("news").unwrap();
    publish_until(&v[0], "news", 1).await;
    assert!(sub.recv().await.unwrap().data.starts_with(b"probe"));
    // Dropping the subscription leaves the topic.
    drop(sub);
    publish_until(&v[0], "news", 0).await;
    for n in v.iter().chain([&off]) {
        n.shutdown().await;
    }
}

/// Publishes fresh probes (ids are content hashes) until one reaches
/// `peers` peers, or fails after 5 s.
async fn publish_until(node: &Node, topic: &str, peers: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for i in 0u32.. {
        let p = node
            .gossip()
            .publish(topic, format!("probe {peers} {i}"))
            .await
            .unwrap();
        if p.peers == peers {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {peers} peers"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_peer_that_never_reads_costs_bounded_memory_and_is_timed_out() {
    let config = NodeConfig {
        keepalive: peerlink_net::KeepaliveConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(2000),
            idle_timeout: None,
        },
        channels: vec![peerlink_net::ChannelConfig::new(GOSSIP_CHANNEL).max_queued_bytes(1 << 20)],
        ..config()
    };
    let a = node_with(config).await;
    let b = node_with(self::config()).await;
    let mut sa = a.gossip().subscribe("t").unwrap();
    let _sb = b.gossip().subscribe("t").unwrap();
    // The silent peer joins a's mesh, then never reads a byte.
    let mut raw = RawPeer::connect(&a).await;
    let join = raw.frame(&[
        (GOSSIP_CHANNEL, &Wire::Subscribe(Topic::from("t")).encode()),
        (GOSSIP_CHANNEL, &Wire::Graft(Topic::from("t")).encode()),
    ]);
    raw.send_raw(&join).await;
    let silent = raw.keypair.peer_id();
    eventually("silent peer registered", || a.is_connected(&silent)).await;
    b.connect(a.addr().unwrap()).await.unwrap();
    mesh_formed(&[a.clone(), b.clone()], "t").await;
    let mut max_queued = 0;
    for i in 0..200u32 {
        let mut data = vec![0u8; 64 << 10];
        data[..4].copy_from_slice(&i.to_le_bytes());
        b.gossip().publish("t", data).await.unwrap();
        max_queued = max_queued.max(a.queued_bytes(&silent, GOSSIP_CHANNEL));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // a keeps serving: every message reaches its application.
    for _ in 0..200 {
        tokio::time::timeout(Duration::from_secs(5), sa.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert!(
        max_queued <= 4 << 20,
        "queue to the silent peer stayed bounded: {max_queued}"
    );
    assert!(
        a.metrics().dropped(GOSSIP_CHANNEL, "out") > 0,
        "forwards were dropped and counted"
    );
    eventually("silent peer timed out", || !a.is_connected(&silent)).await;
    a.shutdown().await;
    b.shutdown().await;
}
