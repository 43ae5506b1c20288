//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1 (hyper).
//!
//! Policy: at most [`MAX_CONNECTIONS`] connections at once (more are closed
//! on accept); a request head must arrive within [`HEADER_TIMEOUT`]; a
//! connection lives at most [`CONNECTION_DEADLINE`] (keep-alive scrapers
//! reconnect). An accept error — out of descriptors (EMFILE), a connection
//! reset before it was accepted — is logged and the loop goes on after a
//! short pause: the endpoint outlives every transient error.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::{NetError, Node};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Time allowed for a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);
/// Pause after an accept error before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `addr` until the task is aborted. Returns the
/// bound address and the task.
pub async fn serve_metrics(
    node: Node,
    addr: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>), NetError> {
    serve_limited(node, addr, MAX_CONNECTIONS, HEADER_TIMEOUT).await
}

async fn serve_limited(
    node: Node,
    addr: SocketAddr,
    max_connections: usize,
    header_timeout: Duration,
) -> Result<(SocketAddr, JoinHandle<()>), NetError> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(max_connections));
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept failed ({e}); still serving");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Full: the newcomer is closed at once (dropped).
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let node = node.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let body = respond(&node, &req);
                    async move { Ok::<_, Infallible>(body) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
                drop(slot);
            });
        }
    });
    Ok((bound, task))
}

fn respond(node: &Node, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"not found: metrics are at /metrics\n"),
        );
    }
    let mut r = reply(StatusCode::OK, Bytes::from(node.metrics().encode()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn serves_metrics_and_sheds_idle_connections_past_the_cap() {
        let node = Node::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .build()
            .await
            .unwrap();
        let any = "127.0.0.1:0".parse().unwrap();
        let (addr, _task) = serve_limited(node.clone(), any, 3, Duration::from_millis(300))
            .await
            .unwrap();
        let ok = get(addr, "/metrics").await.unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("application/openmetrics-text"), "{ok}");
        assert!(ok.contains("# EOF"), "{ok}");
        let missing = get(addr, "/nope").await.unwrap();
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

        // Three silent connections take every slot: a fourth is closed
        // without an answer.
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = get(addr, "/metrics").await.unwrap_or_default();
        assert!(!refused.contains("200 OK"), "{refused}");
        // Their heads never come: they are closed and scrapes work again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let again = get(addr, "/metrics").await.unwrap();
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        drop(silent);
        node.shutdown().await;
    }
}
