//! A pool opened on a directory keeps its chain and its own transactions
//! across a restart, and refuses a directory made for another genesis.

use peerlink_net::{Keypair, Node};
use peerlink_txpool::{Genesis, Located, OpenError, StoreError, Transaction, TxPool, TxPoolConfig};

async fn node(key: &Keypair) -> Node {
    Node::builder()
        .keypair(key.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_pool_resumes_at_its_height_with_its_own_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let producer = Keypair::generate().unwrap();
    let user = Keypair::generate().unwrap();
    let genesis = Genesis {
        producers: vec![producer.peer_id()],
        accounts: vec![(user.peer_id(), 1_000_000)],
    };
    let t0 = Transaction::sign(&user, 0, 2, b"zero".to_vec()).unwrap();
    let t1 = Transaction::sign(&user, 1, 2, b"one".to_vec()).unwrap();
    let t2 = Transaction::sign(&user, 2, 2, b"two".to_vec()).unwrap();
    let (height, tip) = {
        let n = node(&producer).await;
        let pool = TxPool::open(&n, TxPoolConfig::new(genesis.clone()), dir.path())
            .await
            .unwrap();
        pool.submit(t0.clone()).unwrap();
        pool.submit(t1.clone()).unwrap();
        let b1 = pool.produce().await.unwrap();
        assert_eq!(b1.txs.len(), 2);
        pool.submit(t2.clone()).unwrap();
        pool.flush().await.unwrap();
        let st = pool.status();
        drop(pool);
        n.shutdown().await;
        (st.height, b1.id())
    };
    assert_eq!(height, 1);

    let n = node(&producer).await;
    let pool = TxPool::open(&n, TxPoolConfig::new(genesis.clone()), dir.path())
        .await
        .unwrap();
    let st = pool.status();
    assert_eq!(st.height, 1);
    // The ledger moved: the user's next nonce is 3 (t2 pending).
    assert_eq!(pool.next_nonce(&user.peer_id()), 3);
    assert_eq!(pool.locate(&t0.id()), Some(Located::Included(1)));
    assert_eq!(pool.locate(&t2.id()), Some(Located::Pending));
    assert_eq!(st.pool.pending, 1);
    // A stale nonce is refused against the restored ledger.
    let stale = Transaction::sign(&user, 0, 9, b"again".to_vec()).unwrap();
    assert!(pool.submit(stale).is_err());
    // The chain goes on from the stored tip.
    let b2 = pool.produce().await.unwrap();
    assert_eq!((b2.height, b2.parent), (2, tip));
    assert_eq!(b2.txs, vec![t2]);
    drop(pool);
    n.shutdown().await;

    // Another genesis on the same directory is refused by name.
    let other = Genesis {
        producers: vec![user.peer_id()],
        accounts: vec![],
    };
    let n = node(&user).await;
    let r = TxPool::open(&n, TxPoolConfig::new(other), dir.path()).await;
    assert!(matches!(
        r,
        Err(OpenError::Store(StoreError::OtherGenesis(_)))
    ));
    n.shutdown().await;
}
