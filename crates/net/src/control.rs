//! The local control interface: how `peerlink dht put` (and later the
//! gossip and registry commands) drive a running node.
//!
//! A Unix socket in the node's home directory (`control.sock`, mode 0600,
//! in a directory the node creates 0700). Only the user who owns the
//! socket may use it: besides the file mode, every connection's peer
//! credentials (`SO_PEERCRED`) are checked against the socket's owner, so
//! nobody else on the machine can drive the node.
//!
//! The protocol is JSON lines: one [`ControlRequest`] per line (an object
//! tagged by `"op"`), one response object per line, `{"ok": true, ...}` or
//! `{"ok": false, "error": "..."}`. A request line is at most
//! [`MAX_LINE`] bytes; a longer one closes the connection, a malformed one
//! is answered with an error and the connection stays usable.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{DhtKey, Node};

/// The longest request or response line accepted, in bytes (a DHT value
/// is at most 64 KiB, hex-escaped JSON stays well under this).
pub const MAX_LINE: usize = 1 << 20;

/// Control connections served at once; more are answered with an error
/// and closed. Only the node's own user may connect, but a stuck script
/// must not hold the node's memory (each may buffer a `MAX_LINE` line).
pub const MAX_CONNECTIONS: usize = 64;

/// A connection that sends no complete request line for this long is
/// closed (a subscription or a running command is not idle).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket's file name inside the node's home directory.
pub const SOCKET_NAME: &str = "control.sock";

/// One command for the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Peer id, addresses, connections, DHT state.
    Info,
    /// Sign `value` and store it under `key` (hashed with BLAKE3).
    DhtPut { key: String, value: String },
    /// The newest record under `key`.
    DhtGet { key: String },
    /// The peers closest to `key`.
    DhtClosest { key: String },
    /// Publish `message` on gossip `topic`.
    GossipPublish { topic: String, message: String },
    /// Subscribe to gossip `topic`: after the first answer, the node sends
    /// one line per message (`{"ok": true, "message": {...}}`) until the
    /// client closes the connection.
    GossipSubscribe { topic: String },
    /// Keep `peer` (a peer id) out for `secs` seconds.
    Ban { peer: String, secs: u64 },
    /// Lift a ban on `peer`: a peer id, or an IP address banned after
    /// repeated offences.
    Unban { peer: String },
}

/// Errors of the control interface, on either side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no node is listening on {0} (start one with `peerlink node`)")]
    NotRunning(PathBuf),
    #[error("a node is already serving {0}")]
    InUse(PathBuf),
    #[error("line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("the node closed the connection")]
    Closed,
    #[error("the node serves {0} control connections already; try again when one ends")]
    Busy(usize),
    #[error("no request within {0:?}; connection closed")]
    Idle(Duration),
    #[error("the node refused: {0}")]
    Remote(String),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes (without the newline);
/// `None` at a clean end of stream.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<()>, ControlError> {
    buf.clear();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .await
        .map_err(|_| ControlError::Closed)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(ControlError::LineTooLong);
    }
    Ok(Some(()))
}

/// A running control server; the socket file is removed on drop.
pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlServer {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The answer of an extension command: a JSON object, or an error text.
pub type ExtensionReply = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;

/// Commands an application adds to the control interface (the package
/// registry's publish, search and install; the transaction pool's
/// submit, pool and show). A request whose `"op"` the node does not know
/// is offered to each registered extension in turn; the first that takes
/// it answers. Name ops with the application's prefix (`registry_`,
/// `tx_`) so they cannot collide.
pub trait ControlExtension: Send + Sync + 'static {
    /// `None` when `op` is not the extension's either. Values sent on
    /// `progress` reach the client as `{"ok": true, "progress": ...}`
    /// lines before the answer.
    fn handle(
        &self,
        op: &str,
        request: Value,
        progress: mpsc::UnboundedSender<Value>,
    ) -> Option<ExtensionReply>;
}

/// Serves `node` on the Unix socket `path`, creating its directory (0700)
/// if needed. A stale socket left by a dead node is replaced; a live one
/// is an error.
pub async fn serve(node: Node, path: &Path) -> Result<ControlServer, ControlError> {
    serve_with(node, path, Vec::new()).await
}

/// [`serve`], with applications' commands (tried in order).
pub async fn serve_with(
    node: Node,
    path: &Path,
    extensions: Vec<Arc<dyn ControlExtension>>,
) -> Result<ControlServer, ControlError> {
    serve_limited(node, path, extensions.into(), MAX_CONNECTIONS, IDLE_TIMEOUT).await
}

async fn serve_limited(
    node: Node,
    path: &Path,
    extensions: Arc<[Arc<dyn ControlExtension>]>,
    max_connections: usize,
    idle: Duration,
) -> Result<ControlServer, ControlError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_err(path))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    let owner = std::fs::metadata(path).map_err(io_err(path))?.uid();
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == owner => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let (node, extensions) = (node.clone(), extensions.clone());
                        tokio::spawn(async move {
                            connection(node, &extensions, stream, idle).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        tokio::spawn(async move {
                            let (_, mut w) = stream.into_split();
                            let busy = ControlError::Busy(max_connections);
                            let _ = write_reply(&mut w, Err(busy)).await;
                        });
                    }
                },
                other => tracing::warn!(
                    "control: refused a connection from uid {:?}",
                    other.ok().map(|c| c.uid())
                ),
            }
        }
    });
    Ok(ControlServer {
        path: path.to_path_buf(),
        task,
    })
}

async fn connection(
    node: Node,
    extensions: &[Arc<dyn ControlExtension>],
    stream: UnixStream,
    idle: Duration,
) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        let read = tokio::time::timeout(idle, read_line(&mut r, &mut line))
            .await
            .unwrap_or(Err(ControlError::Idle(idle)));
        let reply = match read {
            Ok(None) | Err(ControlError::Closed) => return,
            Ok(Some(())) => match serde_json::from_slice::<ControlRequest>(&line) {
                Ok(ControlRequest::GossipSubscribe { topic }) => {
                    stream_topic(&node, &topic, &mut r, &mut w).await;
                    return;
                }
                Ok(req) => handle(&node, req).await,
                Err(e) => {
                    let e = ControlError::Malformed(e.to_string());
                    match extension_call(extensions, &line, &mut w).await {
                        Some(reply) => reply,
                        None => Err(e),
                    }
                }
            },
            Err(e) => {
                // Too long or idle: the stream cannot be resynchronised.
                let _ = write_reply(&mut w, Err(e)).await;
                return;
            }
        };
        if write_reply(&mut w, reply).await.is_err() {
            return;
        }
    }
}

/// Runs an extension command, writing its progress lines; `None` when no
/// extension takes the request.
async fn extension_call(
    extensions: &[Arc<dyn ControlExtension>],
    line: &[u8],
    w: &mut tokio::net::unix::OwnedWriteHalf,
) -> Option<Result<Value, ControlError>> {
    let request: Value = serde_json::from_slice(line).ok()?;
    let op = request.get("op")?.as_str()?.to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut reply = extensions
        .iter()
        .find_map(|e| e.handle(&op, request.clone(), tx.clone()))?;
    drop(tx);
    loop {
        tokio::select! {
            biased;
            Some(p) = rx.recv() => {
                if write_reply(w, Ok(json!({ "progress": p }))).await.is_err() {
                    return Some(Err(ControlError::Closed));
                }
            }
            r = &mut reply => {
                // Progress sent just before the end still goes first.
                while let Ok(p) = rx.try_recv() {
                    let _ = write_reply(w, Ok(json!({ "progress": p }))).await;
                }
                return Some(r.map_err(ControlError::Remote));
            }
        }
    }
}

/// Answers a subscription, then writes each message of `topic` as a line
/// until the client goes away.
async fn stream_topic(
    node: &Node,
    topic: &str,
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    w: &mut tokio::net::unix::OwnedWriteHalf,
) {
    let mut sub = match node.gossip().subscribe(topic) {
        Ok(sub) => sub,
        Err(e) => {
            let _ = write_reply(w, Err(remote(e))).await;
            return;
        }
    };
    if write_reply(w, Ok(json!({ "subscribed": topic })))
        .await
        .is_err()
    {
        return;
    }
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            m = sub.recv() => {
                let Some(m) = m else { return };
                let v = json!({ "message": {
                    "topic": &*m.topic,
                    "id": m.id.to_string(),
                    "from": m.from.to_string(),
                    "hops": m.hops,
                    "data": std::str::from_utf8(&m.data).ok(),
                    "data_hex": hex(&m.data),
                }});
                if write_reply(w, Ok(v)).await.is_err() {
                    return;
                }
            }
            // Anything the client sends now, or its end, ends the stream.
            _ = r.read(&mut scratch) => return,
        }
    }
}

async fn write_reply(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    reply: Result<Value, ControlError>,
) -> std::io::Result<()> {
    let v = match reply {
        Ok(Value::Object(mut m)) => {
            m.insert("ok".into(), Value::Bool(true));
            Value::Object(m)
        }
        Ok(other) => json!({ "ok": true, "result": other }),
        // The client says "the node refused"; don't say it twice.
        Err(ControlError::Remote(e)) => json!({ "ok": false, "error": e }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    };
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    bytes.push(b'\n');
    w.write_all(&bytes).await
}

fn remote(e: impl std::fmt::Display) -> ControlError {
    ControlError::Remote(e.to_string())
}

async fn handle(node: &Node, req: ControlRequest) -> Result<Value, ControlError> {
    let dht = node.dht();
    Ok(match req {
        ControlRequest::Info => {
            let d = dht.info().await.ok();
            json!({
                "peer_id": node.peer_id().to_string(),
                "listen": node.addrs().iter().map(|a| a.at().to_string()).collect::<Vec<_>>(),
                "connections": node.peers().len(),
                "gossip": node.gossip().info().await.ok().map(|g| json!({
                    "peers": g.peers,
                    "topics": g.topics.iter().map(|(t, mesh, eager)| json!({
                        "topic": &**t, "mesh": mesh, "eager": eager,
                    })).collect::<Vec<_>>(),
                    "delivered": g.stats.delivered,
                    "duplicates": g.stats.duplicates,
                })),
                "bans": node.bans().iter().map(|b| json!({
                    "peer": b.peer.to_string(),
                    "remaining_s": b.remaining.as_secs(),
                    "reason": b.reason,
                })).collect::<Vec<_>>(),
                "banned_ips": node.banned_ips().iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
                "dht": d.map(|d| json!({
                    "routing_table": d.routing_table,
                    "records": d.records,
                    "held_bytes": d.held_bytes,
                    "queries": d.queries,
                    "writes_slowed": d.stats.rate_limited,
                    "writes_refused_far": d.stats.refused_far,
                    "writes_refused_quota": d.stats.refused_quota,
                    "known_addresses": d.known_addresses,
                })),
            })
        }
        ControlRequest::Ban { peer, secs } => {
            let id: crate::PeerId = peer.parse().map_err(remote)?;
            node.ban(&id, Duration::from_secs(secs));
            json!({ "banned": id.to_string(), "secs": secs })
        }
        ControlRequest::Unban { peer } => {
            let lifted = match peer.parse::<std::net::IpAddr>() {
                Ok(ip) => node.unban_ip(&ip),
                Err(_) => node.unban(&peer.parse().map_err(remote)?),
            };
            json!({ "unbanned": lifted })
        }
        ControlRequest::DhtPut { key, value } => {
            let o = dht
                .put(key.as_bytes(), value.into_bytes())
                .await
                .map_err(remote)?;
            with_outcome(
                json!({
                    "stored": o.value,
                }),
                &o,
            )
        }
        ControlRequest::DhtGet { key } => {
            let o = dht.get(key.as_bytes()).await.map_err(remote)?;
            let rec = o.value.as_ref();
            with_outcome(
                json!({
                    "found": rec.is_some(),
                    "value": rec.and_then(|r| std::str::from_utf8(&r.value).ok()),
                    "value_hex": rec.map(|r| hex(&r.value)),
                    "publisher": rec.map(|r| r.publisher.to_string()),
                    "seq": rec.map(|r| r.seq),
                }),
                &o,
            )
        }
        ControlRequest::DhtClosest { key } => {
            let o = dht
                .closest_peers(DhtKey::hash(key.as_bytes()))
                .await
                .map_err(remote)?;
            with_outcome(
                json!({
                    "peers": o.value.iter().map(|c| format!("{}@{}", c.id, c.addr)).collect::<Vec<_>>(),
                }),
                &o,
            )
        }
        ControlRequest::GossipPublish { topic, message } => {
            let p = node
                .gossip()
                .publish(&topic, message.into_bytes())
                .await
                .map_err(remote)?;
            json!({ "id": p.id.to_string(), "peers": p.peers })
        }
        // Served by `stream_topic`.
        ControlRequest::GossipSubscribe { .. } => {
            return Err(ControlError::Malformed("subscribe is a stream".into()))
        }
    })
}

/// Adds how the network answered a query to its result object.
fn with_outcome<T>(mut v: Value, o: &crate::Outcome<T>) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert("answered".into(), o.answered.into());
        m.insert("failed".into(), o.failed.into());
        m.insert("hops".into(), o.hops.into());
        m.insert("elapsed_ms".into(), (o.elapsed.as_secs_f64() * 1e3).into());
    }
    v
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A connection to a running node's control socket.
pub struct ControlClient {
    path: PathBuf,
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    line: Vec<u8>,
}

impl ControlClient {
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ControlError::NotRunning(path.to_path_buf())
                }
                _ => ControlError::Io {
                    path: path.to_path_buf(),
                    source: e,
                },
            })?;
        let (r, w) = stream.into_split();
        Ok(ControlClient {
            path: path.to_path_buf(),
            reader: BufReader::new(r),
            writer: w,
            line: Vec::new(),
        })
    }

    /// Sends `req` and returns the node's answer (an object with
    /// `"ok": true`); a refusal becomes [`ControlError::Remote`].
    pub async fn call(&mut self, req: &ControlRequest) -> Result<Value, ControlError> {
        self.send(req).await?;
        self.next().await
    }

    async fn send(&mut self, req: &impl Serialize) -> Result<(), ControlError> {
        let mut bytes =
            serde_json::to_vec(req).map_err(|e| ControlError::Malformed(e.to_string()))?;
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .await
            .map_err(io_err(&self.path))
    }

    /// Sends an extension command (any JSON object with an `"op"`), hands
    /// each progress line to `progress`, and returns the answer.
    pub async fn call_extension(
        &mut self,
        req: &Value,
        mut progress: impl FnMut(&Value),
    ) -> Result<Value, ControlError> {
        self.send(req).await?;
        loop {
            let v = self.next().await?;
            match v.get("progress") {
                Some(p) => progress(p),
                None => return Ok(v),
            }
        }
    }

    /// The next answer on this connection (after a subscription: the next
    /// message).
    pub async fn next(&mut self) -> Result<Value, ControlError> {
        if read_line(&mut self.reader, &mut self.line).await?.is_none() {
            return Err(ControlError::Closed);
        }
        let v: Value = serde_json::from_slice(&self.line)
            .map_err(|e| ControlError::Malformed(e.to_string()))?;
        match v.get("ok") {
            Some(Value::Bool(true)) => Ok(v),
            _ => Err(ControlError::Remote(
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn node() -> Node {
        Node::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .build()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn idle_and_surplus_control_connections_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_NAME);
        let n = node().await;
        let idle = Duration::from_millis(300);
        let _server = serve_limited(n.clone(), &path, Arc::from([]), 4, idle)
            .await
            .unwrap();
        // Four connections hold partial lines: all the slots.
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut s = UnixStream::connect(&path).await.unwrap();
            s.write_all(&vec![b'x'; 100_000]).await.unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = ControlClient::connect(&path).await.unwrap();
        let e = c.call(&ControlRequest::Info).await.unwrap_err();
        assert!(
            e.to_string().contains("4 control connections already"),
            "{e}"
        );
        // The partial lines time out; each holder is told and closed.
        for s in &mut held {
            let mut reply = String::new();
            let mut r = BufReader::new(s);
            tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut reply))
                .await
                .unwrap()
                .unwrap();
            assert!(reply.contains("no request within"), "{reply}");
        }
        drop(held);
        // The slots are free again.
        let v = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut c = ControlClient::connect(&path).await.unwrap();
                if let Ok(v) = c.call(&ControlRequest::Info).await {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(v["peer_id"], n.peer_id().to_string());
        n.shutdown().await;
    }

    #[tokio::test]
    async fn owner_only_socket_answers_and_survives_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home").join(SOCKET_NAME);
        let n = node().await;
        let server = serve(n.clone(), &path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        // A second server on the same live socket is refused.
        assert!(matches!(
            serve(n.clone(), &path).await,
            Err(ControlError::InUse(_))
        ));

        // Malformed, unknown and truncated requests get named errors and
        // the connection keeps working.
        let mut raw = UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = raw.split();
        let mut r = BufReader::new(r);
        for bad in [
            &b"not json\n"[..],
            b"{\"op\":\"launch_missiles\"}\n",
            b"{\"op\":\"dht_put\",\"key\":\"k\"}\n",
            b"{\"op\":\"dht_get\",\"key\":\"k\",\"extra\":1}\n",
            b"[1,2,3]\n",
            b"\xff\xfe\n",
        ] {
            w.write_all(bad).await.unwrap();
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["ok"], false, "{line}");
            assert!(v["error"].as_str().unwrap().contains("malformed"), "{line}");
        }
        w.write_all(b"{\"op\":\"info\"}\n").await.unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["peer_id"], n.peer_id().to_string());

        // An oversized line is refused and that connection closed; the
        // server keeps serving others.
        let mut big = vec![b'x'; MAX_LINE + 10];
        big.push(b'\n');
        let mut raw2 = UnixStream::connect(&path).await.unwrap();
        let _ = raw2.write_all(&big).await;
        let mut reply = String::new();
        let _ = BufReader::new(&mut raw2).read_line(&mut reply).await;
        assert!(reply.contains("longer than"), "{reply}");

        let mut c = ControlClient::connect(&path).await.unwrap();
        let v = c.call(&ControlRequest::Info).await.unwrap();
        assert_eq!(v["peer_id"], n.peer_id().to_string());
        // A lone node stores the record locally and finds it again.
        let put = ControlRequest::DhtPut {
            key: "greeting".into(),
            value: "hello".into(),
        };
        c.call(&put).await.unwrap();
        let v = c
            .call(&ControlRequest::DhtGet {
                key: "greeting".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            (v["found"].clone(), v["value"].clone()),
            (json!(true), json!("hello"))
        );
        // A value over the record limit is refused by name, not stored
        // where it could not be loaded again.
        let e = c
            .call(&ControlRequest::DhtPut {
                key: "big".into(),
                value: "x".repeat(512 << 10),
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("over the limit of 65536"), "{e}");

        drop(server);
        assert!(!path.exists());
        assert!(matches!(
            ControlClient::connect(&path).await,
            Err(ControlError::NotRunning(_))
        ));
        n.shutdown().await;
    }
}
