//! The measured kernels: level 0 (seal/open, frame packing, codecs) and
//! level 1 (one protocol event in, its actions out, for the DHT, gossip
//! and the transaction pool).
//!
//! Every input comes from fixed seeds and fixed keys, so a kernel executes
//! the same instructions on every run. Setup happens in [`Kernel::setup`];
//! only [`Kernel::run`] is counted and timed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use peerlink_proto::dht::{self, Dht, DhtConfig, Key, MemoryStore, Request, RequestBody, Response};
use peerlink_proto::frame::{DEFAULT_FRAME_TARGET, FRAME_HEADER_LEN};
use peerlink_proto::gossip::{self, Gossip, GossipConfig, Validation, Wire};
use peerlink_proto::rng::Rng;
use peerlink_proto::session::{Event as SessionEvent, Session, SessionConfig};
use peerlink_proto::{
    CipherState, CipherSuite, FrameDecoder, FrameEncoder, Keypair, PeerId, Records, TransportAddr,
};
use peerlink_txpool::{Account, Genesis, Pool, PoolConfig, Transaction};

/// One kernel: what it measures and how many operations one run does.
pub struct Spec {
    pub name: &'static str,
    /// What one operation is, for the table.
    pub op: &'static str,
    pub setup: fn() -> Result<Box<dyn Kernel>>,
}

pub trait Kernel {
    /// Does the measured work once and returns how many operations that was.
    fn run(&mut self) -> Result<u64>;
}

pub const ALL: &[Spec] = &[
    Spec {
        name: "seal_open_1k",
        op: "1 KiB sealed and opened",
        setup: SealOpen::setup,
    },
    Spec {
        name: "frame_encode_64b",
        op: "64 B record packed into sealed frames",
        setup: FrameEncode::setup,
    },
    Spec {
        name: "frame_decode_64b",
        op: "64 B record opened and read from frames",
        setup: FrameDecode::setup,
    },
    Spec {
        name: "session_64b",
        op: "64 B message queued, framed, handed over, routed by sessions",
        setup: SessionStream::setup,
    },
    Spec {
        name: "dht_find_node",
        op: "FIND_NODE decoded, answered, encoded",
        setup: DhtFindNode::setup,
    },
    Spec {
        name: "gossip_data",
        op: "1 KiB message in, validated, forwarded",
        setup: GossipData::setup,
    },
    Spec {
        name: "tx_decode",
        op: "transaction decoded and its signature checked",
        setup: TxDecode::setup,
    },
    Spec {
        name: "pool_insert",
        op: "transaction inserted into the pool",
        setup: PoolInsert::setup,
    },
];

pub fn find(name: &str) -> Result<&'static Spec> {
    match ALL.iter().find(|s| s.name == name) {
        Some(s) => Ok(s),
        None => bail!(
            "no kernel {name:?} (kernels: {})",
            ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The work callgrind counts: `--toggle-collect=icount_measured` turns
/// collection on for exactly this call. Not inlined, one symbol.
#[no_mangle]
#[inline(never)]
pub fn icount_measured(kernel: &mut dyn Kernel) -> Result<u64> {
    kernel.run()
}

/// Median wall-clock time per operation over `repeats` fresh setups.
pub fn time(spec: &Spec, repeats: usize) -> Result<Duration> {
    let mut per_op = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let mut k = (spec.setup)()?;
        let t = Instant::now();
        let ops = icount_measured(k.as_mut())?;
        per_op.push(t.elapsed() / ops.max(1) as u32);
    }
    per_op.sort_unstable();
    Ok(per_op[per_op.len() / 2])
}

fn peer(i: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(i + 1).to_le_bytes());
    PeerId::unverified(b)
}

fn keypair(i: u64) -> Keypair {
    let mut s = [0x5au8; 32];
    s[..8].copy_from_slice(&i.to_le_bytes());
    Keypair::from_secret(s)
}

fn addr(i: u64) -> SocketAddr {
    // One /24 per peer: per-subnet limits stay out of the way.
    SocketAddr::from(([10, i as u8, (i >> 8) as u8, 1], 4000))
}

// ----- level 0 -----------------------------------------------------------

struct SealOpen {
    tx: CipherState,
    rx: CipherState,
    buf: Vec<u8>,
}

impl SealOpen {
    const OPS: u64 = 2_000;

    fn setup() -> Result<Box<dyn Kernel>> {
        let suite = CipherSuite::default();
        Ok(Box::new(SealOpen {
            tx: CipherState::new(suite, &[7; 32]),
            rx: CipherState::new(suite, &[7; 32]),
            buf: Vec::with_capacity(1024 + 16),
        }))
    }
}

impl Kernel for SealOpen {
    fn run(&mut self) -> Result<u64> {
        for _ in 0..Self::OPS {
            self.buf.clear();
            self.buf.resize(1024, 0x42);
            let tag = self.tx.seal(&[0, 0, 0, 1], &mut self.buf)?;
            self.buf.extend_from_slice(&tag);
            self.rx.open(&[0, 0, 0, 1], &mut self.buf)?;
        }
        Ok(Self::OPS)
    }
}

const RECORDS: u64 = 20_000;

fn encoder() -> FrameEncoder {
    FrameEncoder::new(
        CipherState::new(CipherSuite::default(), &[1; 32]),
        1 << 20,
        DEFAULT_FRAME_TARGET,
    )
}

struct FrameEncode {
    enc: FrameEncoder,
}

impl FrameEncode {
    fn setup() -> Result<Box<dyn Kernel>> {
        Ok(Box::new(FrameEncode { enc: encoder() }))
    }
}

impl Kernel for FrameEncode {
    fn run(&mut self) -> Result<u64> {
        let msg = [0x42u8; 64];
        // Batches of 100 records, as a busy connection's write loop packs them.
        for _ in 0..RECORDS / 100 {
            for _ in 0..100 {
                self.enc.push(16, &msg)?;
            }
            self.enc.finish()?;
            std::hint::black_box(self.enc.bytes().len());
            self.enc.clear();
        }
        Ok(RECORDS)
    }
}

struct FrameDecode {
    dec: FrameDecoder,
    wire: BytesMut,
}

impl FrameDecode {
    fn setup() -> Result<Box<dyn Kernel>> {
        let mut enc = encoder();
        let msg = [0x42u8; 64];
        let mut wire = BytesMut::new();
        for _ in 0..RECORDS / 100 {
            for _ in 0..100 {
                enc.push(16, &msg)?;
            }
            enc.finish()?;
            wire.extend_from_slice(enc.bytes());
            enc.clear();
        }
        Ok(Box::new(FrameDecode {
            dec: FrameDecoder::new(CipherState::new(CipherSuite::default(), &[1; 32]), 1 << 20),
            wire,
        }))
    }
}

impl Kernel for FrameDecode {
    fn run(&mut self) -> Result<u64> {
        let mut n = 0u64;
        while let Some(plain) = self.dec.decode(&mut self.wire)? {
            for r in Records::new(plain) {
                std::hint::black_box(r?.payload.len());
                n += 1;
            }
        }
        if n != RECORDS {
            bail!("decoded {n} of {RECORDS} records");
        }
        Ok(n)
    }
}

// ----- level 1 -----------------------------------------------------------

/// The connection core's hot path without sockets or sealing: a message
/// pushed into one session, taken out in frames, handed to the other
/// session and routed to its channel (what a stream does per message).
struct SessionStream {
    tx: Session<()>,
    rx: Session<()>,
    events: Vec<SessionEvent<()>>,
    payload: [u8; 64],
}

impl SessionStream {
    const OPS: u64 = 20_000;

    fn setup() -> Result<Box<dyn Kernel>> {
        let now = Instant::now();
        let config = Arc::new(SessionConfig::default());
        Ok(Box::new(SessionStream {
            tx: Session::new(config.clone(), now),
            rx: Session::new(config, now),
            events: Vec::with_capacity(2048),
            payload: [0x42; 64],
        }))
    }
}

impl Kernel for SessionStream {
    fn run(&mut self) -> Result<u64> {
        let now = Instant::now();
        let mut delivered = 0u64;
        for batch in 0..Self::OPS / 1000 {
            for i in 0..1000u64 {
                self.payload[..8].copy_from_slice(&(batch * 1000 + i).to_le_bytes());
                if self.tx.push(16, &self.payload, false).is_err() {
                    bail!("session refused a message");
                }
            }
            let Some(t) = self.tx.poll_transmit(now, true) else {
                bail!("nothing to transmit");
            };
            for frame in t.frames {
                let plain = bytes::Bytes::from(frame).slice(FRAME_HEADER_LEN..);
                self.rx.handle_frame(plain, now, &mut self.events)?;
            }
            for e in self.events.drain(..) {
                if let SessionEvent::Message { payload, .. } = e {
                    delivered += u64::from(payload.len() == 64);
                }
            }
        }
        if delivered != Self::OPS {
            bail!("delivered {delivered} of {}", Self::OPS);
        }
        Ok(Self::OPS)
    }
}

/// A DHT whose table holds 300 verified peers, answering FIND_NODE
/// requests for random targets from them, off the wire and back onto it.
struct DhtFindNode {
    dht: Dht,
    now: Instant,
    requests: Vec<(PeerId, Bytes)>,
}

impl DhtFindNode {
    const PEERS: u64 = 300;
    const OPS: usize = 2_000;

    fn setup() -> Result<Box<dyn Kernel>> {
        let now = Instant::now();
        let mut dht = Dht::new(
            DhtConfig::default(),
            keypair(0),
            Some(TransportAddr::tcp(addr(0))),
            Box::new(MemoryStore::default()),
            now,
            1_700_000_000_000,
            1,
        );
        // Each peer asks once (which makes the DHT ping it) and answers
        // the ping, which puts it in the table.
        for i in 1..=Self::PEERS {
            let body = RequestBody::FindNode {
                target: Key([0; 32]),
            };
            dht.handle_request(now, peer(i), Some(TransportAddr::tcp(addr(i))), body);
            while let Some(a) = dht.poll_action() {
                if let dht::Action::Send { id, .. } = a {
                    dht.on_response(now, id, Response::Pong);
                }
            }
        }
        if dht.table().len() < 50 {
            bail!("only {} peers in the table", dht.table().len());
        }
        let mut rng = Rng::new(3);
        let requests = (0..Self::OPS)
            .map(|_| {
                let mut target = [0u8; 32];
                rng.fill(&mut target);
                let from = 1 + rng.below(Self::PEERS);
                let r = Request {
                    listen: Some(TransportAddr::tcp(addr(from))),
                    body: RequestBody::FindNode {
                        target: Key(target),
                    },
                };
                (peer(from), r.encode())
            })
            .collect();
        Ok(Box::new(DhtFindNode { dht, now, requests }))
    }
}

impl Kernel for DhtFindNode {
    fn run(&mut self) -> Result<u64> {
        for (from, bytes) in &self.requests {
            let req = Request::decode(bytes)?;
            let resp = self
                .dht
                .handle_request(self.now, *from, req.listen, req.body);
            std::hint::black_box(resp.encode());
            while let Some(a) = self.dht.poll_action() {
                std::hint::black_box(a);
            }
        }
        Ok(self.requests.len() as u64)
    }
}

/// A gossip node subscribed to one topic with a full mesh of 8 peers
/// (and 8 more outside it), taking new messages from them: decode,
/// validate, accept, forward.
struct GossipData {
    gossip: Gossip,
    now: Instant,
    messages: Vec<(PeerId, Bytes)>,
}

impl GossipData {
    const PEERS: u64 = 16;
    const OPS: u64 = 2_000;

    fn setup() -> Result<Box<dyn Kernel>> {
        let start = Instant::now();
        let mut gossip = Gossip::new(GossipConfig::default(), peer(0), start, 5);
        let topic: gossip::Topic = "bench".into();
        gossip.subscribe(start, &topic)?;
        for i in 1..=Self::PEERS {
            gossip.add_peer(peer(i));
            gossip.on_wire(start, peer(i), Wire::Subscribe(topic.clone()));
        }
        // One heartbeat builds the mesh.
        let now = start + Duration::from_secs(2);
        gossip.tick(now);
        while gossip.poll_action().is_some() {}
        let messages = (0..Self::OPS)
            .map(|i| {
                let mut data = vec![0x42u8; 1024];
                data[..8].copy_from_slice(&i.to_le_bytes());
                let w = Wire::Data {
                    topic: topic.clone(),
                    hops: 1,
                    data: data.into(),
                };
                (peer(1 + i % Self::PEERS), w.encode())
            })
            .collect();
        Ok(Box::new(GossipData {
            gossip,
            now,
            messages,
        }))
    }
}

impl Kernel for GossipData {
    fn run(&mut self) -> Result<u64> {
        let mut forwarded = 0u64;
        for (from, bytes) in &self.messages {
            self.gossip.on_message(self.now, *from, bytes);
            while let Some(a) = self.gossip.poll_action() {
                match a {
                    gossip::Action::Validate { id, .. } => {
                        self.gossip.validated(id, Validation::Accept)
                    }
                    gossip::Action::Send { .. } => forwarded += 1,
                    gossip::Action::Misbehaved { reason, .. } => bail!("misbehaved: {reason}"),
                }
            }
        }
        if forwarded == 0 {
            bail!("no message was forwarded");
        }
        Ok(self.messages.len() as u64)
    }
}

/// Signed transactions from fixed keys: `senders` × `per_sender`, nonces
/// in order, fee rates spread.
fn transactions(senders: u64, per_sender: u64) -> Result<(Vec<Keypair>, Vec<Transaction>)> {
    let keys: Vec<Keypair> = (0..senders).map(|i| keypair(1000 + i)).collect();
    let mut txs = Vec::new();
    for nonce in 0..per_sender {
        for (i, k) in keys.iter().enumerate() {
            let fee = 1 + (i as u64 * 7919 + nonce * 104_729) % 1000;
            txs.push(Transaction::sign(k, nonce, fee, vec![0u8; 100])?);
        }
    }
    Ok((keys, txs))
}

struct TxDecode {
    encoded: Vec<Bytes>,
}

impl TxDecode {
    fn setup() -> Result<Box<dyn Kernel>> {
        let (_, txs) = transactions(50, 4)?;
        Ok(Box::new(TxDecode {
            encoded: txs.iter().map(|t| t.encoded().clone()).collect(),
        }))
    }
}

impl Kernel for TxDecode {
    fn run(&mut self) -> Result<u64> {
        for e in &self.encoded {
            std::hint::black_box(Transaction::decode(e)?);
        }
        Ok(self.encoded.len() as u64)
    }
}

struct PoolInsert {
    pool: Pool,
    ledger: std::collections::HashMap<PeerId, Account>,
    txs: Vec<Transaction>,
    now: Instant,
}

impl PoolInsert {
    fn setup() -> Result<Box<dyn Kernel>> {
        let (keys, txs) = transactions(200, 10)?;
        let genesis = Genesis {
            producers: vec![keypair(0).peer_id()],
            accounts: keys.iter().map(|k| (k.peer_id(), 1u128 << 100)).collect(),
        };
        let ledger = genesis
            .accounts
            .iter()
            .map(|(p, balance)| {
                let a = Account {
                    next_nonce: 0,
                    balance: *balance,
                };
                (*p, a)
            })
            .collect();
        let pool = Pool::new(PoolConfig {
            max_count: txs.len() * 2,
            max_bytes: 1 << 30,
            ..PoolConfig::default()
        });
        Ok(Box::new(PoolInsert {
            pool,
            ledger,
            txs,
            now: Instant::now(),
        }))
    }
}

impl Kernel for PoolInsert {
    fn run(&mut self) -> Result<u64> {
        let n = self.txs.len() as u64;
        for tx in std::mem::take(&mut self.txs) {
            if let Err(e) = self.pool.insert(tx, &self.ledger, self.now) {
                bail!("insert refused: {e:?}");
            }
        }
        Ok(n)
    }
}
