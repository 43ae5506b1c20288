//! A minimal HTTP endpoint serving the Prometheus text format.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{NetError, Node};

/// Serves `GET /metrics` (any path, in fact) on `addr` until the task is
/// aborted. Returns the bound address and the task.
pub async fn serve_metrics(
    node: Node,
    addr: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>), NetError> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let node = node.clone();
            tokio::spawn(async move {
                // Read the request head (bounded); its content does not matter.
                let mut buf = [0u8; 4096];
                let mut seen = 0;
                let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    while seen < buf.len() {
                        match stream.read(&mut buf[seen..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen += n,
                        }
                        if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let body = node.metrics().encode();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}
