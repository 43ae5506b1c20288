//! QUIC beneath the same `Node` API: what works over TCP works over QUIC,
//! and the fault tests of `faults.rs` that apply have a QUIC twin here.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use peerlink_net::{
    ChannelConfig, Keypair, Limits, NetError, Node, NodeConfig, PeerAddr, Policy, Transport,
};

async fn quic_node_with(config: NodeConfig) -> Node {
    Node::builder()
        .listen_on("quic://127.0.0.1:0".parse().unwrap())
        .config(config)
        .build()
        .await
        .unwrap()
}

async fn quic_node() -> Node {
    quic_node_with(NodeConfig::default()).await
}

fn quic_addr(node: &Node) -> PeerAddr {
    node.addrs()
        .into_iter()
        .find(|a| a.transport == Transport::Quic)
        .expect("a QUIC listener")
}

/// The node still accepts and serves an honest peer over QUIC.
async fn still_serves(node: &Node) {
    let honest = quic_node().await;
    honest.connect(quic_addr(node)).await.unwrap();
    honest.ping(&node.peer_id()).await.unwrap();
    honest.shutdown().await;
}

#[tokio::test]
async fn two_nodes_talk_over_quic_messages_requests_and_pings() {
    let (a, b) = (quic_node().await, quic_node().await);
    let mut rx = b.channel(16).unwrap();
    let mut requests = b.serve("echo/1").unwrap();
    tokio::spawn(async move {
        while let Some(r) = requests.recv().await {
            let body = r.body.clone();
            r.respond(body);
        }
    });
    assert_eq!(a.connect(quic_addr(&b)).await.unwrap(), b.peer_id());
    for i in 0..2000u32 {
        a.send(&b.peer_id(), 16, i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    for i in 0..2000u32 {
        let m = rx.recv().await.unwrap();
        assert_eq!(
            (m.peer, &m.payload[..]),
            (a.peer_id(), &i.to_be_bytes()[..])
        );
    }
    let big = vec![7u8; 200 << 10];
    let answer = a
        .request(&b.peer_id(), "echo/1", big.clone())
        .await
        .unwrap();
    assert_eq!(answer, big);
    let rtt = a.ping(&b.peer_id()).await.unwrap();
    assert!(rtt > Duration::ZERO);
    eventually("b sees a", || b.is_connected(&a.peer_id())).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_listens_on_tcp_and_quic_at_once() {
    let both = Node::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .listen_on("quic://127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let addrs = both.addrs();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0].transport, Transport::Tcp);
    let over_tcp = common::node().await;
    let over_quic = quic_node().await;
    over_tcp.connect(addrs[0]).await.unwrap();
    over_quic.connect(quic_addr(&both)).await.unwrap();
    over_tcp.ping(&both.peer_id()).await.unwrap();
    over_quic.ping(&both.peer_id()).await.unwrap();
    eventually("both connected", || both.peers().len() == 2).await;
    for n in [over_tcp, over_quic, both] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_without_a_quic_listener_still_dials_quic() {
    let b = quic_node().await;
    let a = Node::builder().build().await.unwrap();
    a.connect(quic_addr(&b)).await.unwrap();
    a.ping(&b.peer_id()).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_different_key_than_dialled_is_refused_over_quic() {
    let (a, b) = (quic_node().await, quic_node().await);
    let mut wrong = quic_addr(&b);
    wrong.id = Keypair::generate().unwrap().peer_id();
    let err = a.connect(wrong).await.unwrap_err();
    assert!(matches!(err, NetError::Quic(_)), "{err:?}");
    assert!(err.to_string().contains("not the"), "{err}");
    assert!(!a.is_connected(&b.peer_id()) && a.peers().is_empty());
    a.connect(quic_addr(&b)).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn garbage_datagrams_on_the_quic_port() {
    let node = quic_node().await;
    let target = quic_addr(&node).addr;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..500usize {
        let len = [1, 20, 100, 1200, 1350, 1500][i % 6];
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        socket.send_to(&datagram, target).await.unwrap();
    }
    still_serves(&node).await;
    assert_eq!(node.peers().len(), 0);
    node.shutdown().await;
}

#[tokio::test]
async fn per_ip_limit_refuses_excess_quic_connections() {
    let config = NodeConfig {
        limits: Limits {
            max_per_ip: 2,
            ..Limits::default()
        },
        ..NodeConfig::default()
    };
    let node = quic_node_with(config).await;
    let (a, b, c) = (quic_node().await, quic_node().await, quic_node().await);
    a.connect(quic_addr(&node)).await.unwrap();
    b.connect(quic_addr(&node)).await.unwrap();
    assert!(c.connect(quic_addr(&node)).await.is_err());
    assert_eq!(node.metrics().counter("connections_rejected", "per_ip"), 1);
    assert_eq!(node.peers().len(), 2);
    for n in [a, b, c, node] {
        n.shutdown().await;
    }
}

/// A QUIC client built by hand, so tests can misbehave after (or during)
/// the handshake: it presents `keypair`'s certificate and trusts any
/// server.
mod raw {
    use super::*;
    use quinn::crypto::rustls::QuicClientConfig;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{
        CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
    };
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct TrustAnyone;

    impl ServerCertVerifier for TrustAnyone {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    }

    /// `keypair`'s self-signed certificate and key (`None`: no certificate).
    pub fn client(keypair: Option<&Keypair>) -> quinn::Endpoint {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAnyone));
        let mut tls = match keypair {
            None => builder.with_no_client_auth(),
            Some(kp) => {
                let mut der = vec![
                    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04,
                    0x22, 0x04, 0x20,
                ];
                der.extend_from_slice(&kp.secret());
                let key = PrivatePkcs8KeyDer::from(der);
                let signer =
                    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)
                        .unwrap();
                let cert = rcgen::CertificateParams::new(vec!["peerlink".into()])
                    .unwrap()
                    .self_signed(&signer)
                    .unwrap();
                builder
                    .with_client_auth_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key))
                    .unwrap()
            }
        };
        tls.alpn_protocols = vec![b"peerlink/1".to_vec()];
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(config);
        endpoint
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let node = quic_node().await;
    let endpoint = raw::client(None);
    let result = async {
        let conn = endpoint.connect(quic_addr(&node).addr, "peerlink")?.await?;
        // The server may only refuse once it has the client's (missing)
        // certificate: a stream must then fail.
        let (mut send, _recv) = conn.open_bi().await?;
        send.write_all(&[0u8; 4]).await?;
        conn.closed().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), result).await;
    assert!(node.peers().is_empty());
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_completes_tls_but_never_opens_its_stream_times_out() {
    let config = NodeConfig {
        handshake_timeout: Duration::from_millis(500),
        ..NodeConfig::default()
    };
    let node = quic_node_with(config).await;
    let kp = Keypair::generate().unwrap();
    let endpoint = raw::client(Some(&kp));
    let conn = endpoint
        .connect(quic_addr(&node).addr, "peerlink")
        .unwrap()
        .await
        .unwrap();
    // TLS is done; the peer never opens the connection's stream.
    eventually("stalled handshake counted", || {
        node.metrics().counter("handshake_failures", "timeout") == 1
    })
    .await;
    assert!(!node.is_connected(&kp.peer_id()));
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the node closes the stalled connection");
    still_serves(&node).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_quic_peer_that_stops_reading_is_bounded_and_timed_out() {
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
    let node = quic_node_with(config).await;
    let kp = Keypair::generate().unwrap();
    let endpoint = raw::client(Some(&kp));
    let conn = endpoint
        .connect(quic_addr(&node).addr, "peerlink")
        .unwrap()
        .await
        .unwrap();
    // Opens the stream as a node would, then never reads from it.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0u8; 4]).await.unwrap();
    let peer = kp.peer_id();
    eventually("registered", || node.is_connected(&peer)).await;
    let mut dropped = 0u64;
    for _ in 0..50_000 {
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
        "drops counted once flow control and the queue are full"
    );
    assert_eq!(node.metrics().dropped(16, "out"), dropped);
    // The silent peer never answers pings: timed out and removed.
    eventually("timed out", || node.peers().is_empty()).await;
    still_serves(&node).await;
    drop(conn);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_only_network_forms_and_works_through_the_dht() {
    use peerlink_net::testnet::{Testnet, TestnetConfig};
    let net = Testnet::start(TestnetConfig {
        nodes: 12,
        transport: Transport::Quic,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    // Every node learned the others' QUIC addresses from the DHT alone
    // (they were seeded with node 0 only): puts and gets reach across.
    for (i, node) in net.nodes.iter().enumerate() {
        assert!(node.listen_addrs().is_empty(), "QUIC only");
        node.dht()
            .put(format!("k{i}"), format!("v{i}"))
            .await
            .unwrap();
    }
    for node in &net.nodes {
        for i in 0..net.nodes.len() {
            let got = node.dht().get(format!("k{i}")).await.unwrap();
            let value = got.value.map(|r| r.value);
            assert_eq!(value.as_deref(), Some(format!("v{i}").as_bytes()));
        }
    }
    let peers = net.nodes[11].peers();
    assert!(
        peers.len() >= 2,
        "node 11 knows more than its seed: {}",
        peers.len()
    );
    net.shutdown().await;
}
