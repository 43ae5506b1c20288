//! Churn: 30 % of a network killed and restarted on their data
//! directories, twice. No record is lost (restarted nodes come back with
//! what they held and owned) and gossip reaches every node again, the
//! restarted ones included. The outcome is checked, not the time; the
//! time to resume is a benchmark figure.

use std::path::PathBuf;
use std::time::Duration;

use peerlink_net::testnet::TestnetConfig;
use peerlink_net::{Keypair, Node, PeerAddr, Subscription};

const NODES: usize = 20;
const KILLED: usize = 6;

async fn start(kp: &Keypair, dir: &PathBuf, seed: Option<PeerAddr>) -> Node {
    // The testnet's loopback limits and connection settings.
    let config = TestnetConfig::default().node;
    let node = Node::builder()
        .keypair(kp.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .config(config)
        .data_dir(dir)
        .build()
        .await
        .unwrap();
    if let Some(seed) = seed {
        node.dht().bootstrap(vec![seed]).await.unwrap();
    }
    node
}

/// Publishes `data` from `from` and waits until every subscriber has it.
async fn gossip_reaches_everyone(
    nodes: &[Node],
    subs: &mut [Subscription],
    from: usize,
    data: &str,
) {
    // A restarted node's mesh forms as its subscriptions reach its peers;
    // publish again (new payload) until every node has one of them.
    let mut got = vec![false; nodes.len()];
    got[from] = true;
    for attempt in 0..50 {
        let payload = format!("{data} #{attempt}");
        let _ = nodes[from].gossip().publish("churn", payload.clone()).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        for (i, sub) in subs.iter_mut().enumerate() {
            while !got[i] {
                match tokio::time::timeout_at(deadline, sub.recv()).await {
                    Ok(Some(m)) if m.data.starts_with(data.as_bytes()) => got[i] = true,
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
        if got.iter().all(|g| *g) {
            return;
        }
    }
    let missing: Vec<usize> = (0..nodes.len()).filter(|i| !got[*i]).collect();
    panic!("{data}: nodes {missing:?} never received gossip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_killed_and_restarted_twice_lose_nothing() {
    let root = tempfile::tempdir().unwrap();
    let keys: Vec<Keypair> = (0..NODES).map(|_| Keypair::generate().unwrap()).collect();
    let dirs: Vec<PathBuf> = (0..NODES)
        .map(|i| root.path().join(format!("n{i}")))
        .collect();
    let mut nodes = vec![start(&keys[0], &dirs[0], None).await];
    let seed = nodes[0].addr().unwrap();
    for i in 1..NODES {
        nodes.push(start(&keys[i], &dirs[i], Some(seed)).await);
    }
    for (i, n) in nodes.iter().enumerate() {
        let out = n
            .dht()
            .put(format!("churn-{i}"), format!("value {i}"))
            .await
            .unwrap();
        assert!(out.value >= 5, "node {i} stored on {}", out.value);
    }
    let mut subs: Vec<Subscription> = nodes
        .iter()
        .map(|n| n.gossip().subscribe("churn").unwrap())
        .collect();
    gossip_reaches_everyone(&nodes, &mut subs, 0, "before").await;
    for round in 0..2 {
        // A different 30 % each round; the seed stays.
        let killed: Vec<usize> = (0..KILLED)
            .map(|k| 1 + (k * 3 + round) % (NODES - 1))
            .collect();
        for &i in &killed {
            nodes[i].shutdown().await;
        }
        for &i in &killed {
            nodes[i] = start(&keys[i], &dirs[i], Some(seed)).await;
            subs[i] = nodes[i].gossip().subscribe("churn").unwrap();
        }
        for (i, n) in nodes.iter().enumerate() {
            for j in 0..NODES {
                let got = n.dht().get(format!("churn-{j}")).await.unwrap();
                assert_eq!(
                    got.value.map(|r| r.value),
                    Some(bytes::Bytes::from(format!("value {j}"))),
                    "round {round}: node {i} (killed: {}) reads churn-{j}",
                    killed.contains(&i)
                );
            }
        }
        let from = killed[0];
        gossip_reaches_everyone(&nodes, &mut subs, from, &format!("round {round}")).await;
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
