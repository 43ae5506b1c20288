//! The pool on a real 20-node network over loopback: transactions
//! submitted at random nodes reach every pool with about one full copy
//! each, a produced block removes them everywhere, and a peer sending
//! forged or unfundable transactions is banned and nothing it sent is
//! forwarded.

use std::time::Duration;

use peerlink_net::testnet::{Testnet, TestnetConfig};
use peerlink_net::{Keypair, Node};
use peerlink_txpool::wire::{self, Announced};
use peerlink_txpool::{Genesis, Transaction, TxPool, TxPoolConfig, BLOCK_TOPIC, TX_CHANNEL};
use std::sync::atomic::Ordering::Relaxed;

/// Waits until every node has a mesh peer on the block topic.
async fn mesh_formed(nodes: &[Node]) {
    eventually("the block mesh formed", async || {
        for n in nodes {
            let info = n.gossip().info().await.unwrap();
            if !info
                .topics
                .iter()
                .any(|(t, mesh, _)| &**t == BLOCK_TOPIC && *mesh > 0)
            {
                return false;
            }
        }
        true
    })
    .await;
}

/// Polls `f` until it is true or 60 s pass (a bound, not a measurement).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_share_transactions_and_blocks_and_ban_a_forger() {
    let net = Testnet::start(TestnetConfig {
        nodes: 20,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    let senders: Vec<Keypair> = (0..40).map(|_| Keypair::generate().unwrap()).collect();
    let genesis = Genesis {
        producers: vec![net.nodes[0].peer_id()],
        accounts: senders.iter().map(|k| (k.peer_id(), 1u128 << 60)).collect(),
    };
    let pools: Vec<TxPool> = net
        .nodes
        .iter()
        .map(|n| TxPool::new(n, TxPoolConfig::new(genesis.clone())).unwrap())
        .collect();
    mesh_formed(&net.nodes).await;

    // 40 senders × 3 nonces, each sender at its own node.
    let mut ids = Vec::new();
    for (i, key) in senders.iter().enumerate() {
        for nonce in 0..3 {
            let tx = Transaction::sign(key, nonce, 10 + i as u64, vec![i as u8; 200]).unwrap();
            ids.push(tx.id());
            pools[(i * 7) % pools.len()].submit(tx).unwrap();
        }
    }
    eventually("every pool has every transaction", async || {
        pools
            .iter()
            .all(|p| ids.iter().all(|id| p.get(id).is_some()))
    })
    .await;
    for p in &pools {
        assert_eq!(p.status().pool.pending, ids.len());
    }
    // About one full copy per node per transaction: pushes go to √peers
    // at the origin only, the rest is fetched once.
    let received: u64 = pools
        .iter()
        .map(|p| p.counters().received.load(Relaxed))
        .sum();
    let copies = received as f64 / (ids.len() * (pools.len() - 1)) as f64;
    eprintln!("{copies:.2} full copies per node per transaction");
    assert!(
        copies <= 1.5,
        "{copies:.2} full copies per node per transaction"
    );

    // The producer packs them all into one block; every pool empties.
    let block = pools[0].produce().await.expect("node 0 produces height 1");
    assert_eq!(block.txs.len(), ids.len());
    eventually("every node applied the block", async || {
        pools
            .iter()
            .all(|p| p.status().height == 1 && p.status().pool.pending == 0)
    })
    .await;

    // A hostile peer (a plain node, no pool) pushes an unfundable but
    // well-signed transaction, then a forged one, to node 5.
    let attacker = Node::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .config(TestnetConfig::default().node)
        .build()
        .await
        .unwrap();
    let victim = &net.nodes[5];
    attacker.connect(victim.addr().unwrap()).await.unwrap();
    let broke = Keypair::generate().unwrap();
    let unfunded = Transaction::sign(&broke, 0, 50, vec![1; 64]).unwrap();
    attacker
        .send(
            &victim.peer_id(),
            TX_CHANNEL,
            wire::push([unfunded.encoded().as_ref()]),
        )
        .await
        .unwrap();
    // Also announced, so a relay that forwarded it would be caught.
    let item = Announced {
        id: unfunded.id(),
        size: unfunded.size() as u32,
        fee_rate: unfunded.fee_rate,
    };
    let _ = attacker
        .send(&victim.peer_id(), TX_CHANNEL, wire::announce(&[item]))
        .await;
    let mut forged = Transaction::sign(&senders[0], 3, 50, vec![2; 64])
        .unwrap()
        .encoded()
        .to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    attacker
        .send(
            &victim.peer_id(),
            TX_CHANNEL,
            wire::push([forged.as_slice()]),
        )
        .await
        .unwrap();
    eventually("the forger is banned", async || {
        victim.is_banned(&attacker.peer_id())
    })
    .await;
    assert!(pools[5].counters().kicked.load(Relaxed) >= 1);
    assert!(pools[5].counters().refused.load(Relaxed) >= 1);

    // An honest transaction still flows everywhere afterwards...
    let honest = Transaction::sign(&senders[1], 3, 99, vec![3; 100]).unwrap();
    pools[5].submit(honest.clone()).unwrap();
    eventually("the honest transaction reaches every pool", async || {
        pools.iter().all(|p| p.get(&honest.id()).is_some())
    })
    .await;
    // ...and nothing the attacker sent is in any pool.
    for p in &pools {
        assert!(p.get(&unfunded.id()).is_none());
        assert_eq!(p.status().pool.pending, 1);
    }
    drop(pools);
    attacker.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_well_signed_unfundable_transactions_gets_its_sender_banned() {
    let net = Testnet::start(TestnetConfig {
        nodes: 3,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    let funded = Keypair::generate().unwrap();
    let genesis = Genesis {
        producers: vec![net.nodes[0].peer_id()],
        accounts: vec![(funded.peer_id(), 1u128 << 60)],
    };
    let pools: Vec<TxPool> = net
        .nodes
        .iter()
        .map(|n| TxPool::new(n, TxPoolConfig::new(genesis.clone())).unwrap())
        .collect();
    let attacker = Node::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .config(TestnetConfig::default().node)
        .build()
        .await
        .unwrap();
    let victim = &net.nodes[1];
    attacker.connect(victim.addr().unwrap()).await.unwrap();
    // 2 × 150 transactions, each from a fresh key with no balance: every
    // signature checks, nothing can pay.
    for _ in 0..2 {
        let txs: Vec<Transaction> = (0..150)
            .map(|_| {
                let k = Keypair::generate().unwrap();
                Transaction::sign(&k, 0, 50, vec![9; 32]).unwrap()
            })
            .collect();
        let _ = attacker
            .send(
                &victim.peer_id(),
                TX_CHANNEL,
                wire::push(txs.iter().map(|t| t.encoded().as_ref())),
            )
            .await;
    }
    eventually("the flooder is banned", async || {
        victim.is_banned(&attacker.peer_id())
    })
    .await;
    assert_eq!(pools[1].counters().kicked.load(Relaxed), 1);
    assert!(pools[1].counters().refused.load(Relaxed) >= 200);
    // Nothing was taken or sent on, and honest traffic still flows.
    let honest = Transaction::sign(&funded, 0, 10, vec![1; 40]).unwrap();
    pools[1].submit(honest.clone()).unwrap();
    eventually("the honest transaction reaches every pool", async || {
        pools.iter().all(|p| p.get(&honest.id()).is_some())
    })
    .await;
    for p in &pools {
        assert_eq!(p.status().pool.pending + p.status().pool.queued, 1);
    }
    drop(pools);
    attacker.shutdown().await;
    net.shutdown().await;
}

/// Two producers taking turns; the first makes block 1 before the
/// second is connected, so block 1's gossip never reaches it. The
/// second asks for the block it missed once its chain stood still for a
/// few of its ticks, and the turn order goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_missed_a_block_catches_up_and_the_chain_moves_on() {
    let start = async || {
        Node::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (start().await, start().await);
    // Height h is producers[h % 2]'s: a has the odd ones.
    let genesis = Genesis {
        producers: vec![b.peer_id(), a.peer_id()],
        accounts: Vec::new(),
    };
    let config = |g: &Genesis| TxPoolConfig {
        produce_every: Some(Duration::from_millis(100)),
        ..TxPoolConfig::new(g.clone())
    };
    let pa = TxPool::new(&a, config(&genesis)).unwrap();
    eventually("a made block 1 alone", async || pa.status().height >= 1).await;
    let pb = TxPool::new(&b, config(&genesis)).unwrap();
    b.connect(a.addr().unwrap()).await.unwrap();
    // Height 2 is b's: the chain passes it only if b caught up block 1.
    eventually("both chains past height 3", async || {
        pa.status().height >= 3 && pb.status().height >= 3
    })
    .await;
}
