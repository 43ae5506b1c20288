//! The metrics endpoint outlives running out of file descriptors. Alone in
//! its test binary: it exhausts the process's descriptors on purpose.

use std::time::Duration;

use peerlink_net::{serve_metrics, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::other("no answer in 10 s"))??;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_keeps_serving_after_running_out_of_descriptors() {
    let node = Node::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let (addr, _task) = serve_metrics(node.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(scrape(addr).await.unwrap().starts_with("HTTP/1.1 200"));

    // Take every descriptor, then give one back for the client's socket:
    // the server's accept fails with EMFILE.
    let mut hog = Vec::new();
    let exhausted = loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) => break e,
        }
        assert!(hog.len() < 1_000_000, "no descriptor limit to reach");
    };
    assert_eq!(exhausted.raw_os_error(), Some(24), "EMFILE: {exhausted}");
    hog.pop();
    let pending = tokio::spawn(scrape(addr));
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(hog);
    // The connection made while descriptors were out is served, and so is
    // a new one.
    let late = pending.await.unwrap().unwrap();
    assert!(late.starts_with("HTTP/1.1 200"), "{late}");
    let fresh = scrape(addr).await.unwrap();
    assert!(fresh.starts_with("HTTP/1.1 200"), "{fresh}");
    node.shutdown().await;
}
