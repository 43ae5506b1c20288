//! The stream workload on commonware-p2p's authenticated lookup network
//! (ed25519 identities, its own encrypted stream), two peers on loopback
//! in one process.
//!
//! commonware's receive side is lossy by design (a full channel mailbox
//! drops the arriving message), so the sender keeps a bounded window in
//! flight: at most `window` messages beyond what the receiver has
//! acknowledged on a second channel. Throughput is what arrived, counted
//! at the receiver; a window that stops moving for a second ends the run
//! and the loss is reported, not hidden.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use commonware_cryptography::{ed25519, ChaCha20Poly1305, Signer as _};
use commonware_p2p::{
    authenticated::lookup::{self, Network},
    Address, AddressableManager as _, Receiver as _, Recipients, Sender as _,
};
use commonware_runtime::{tokio as cw, IoBuf, Quota, Runner as _, Supervisor as _};
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
};
use commonware_utils::{ordered::Map, NZU32};

const DATA: u64 = 0;
const ACK: u64 = 1;
/// Messages in flight past the receiver's acknowledgements. Swept on
/// this machine (64 B, 1 s): 512 → 337 k msg/s, 2,048 → 410 k, 8,192 →
/// 488 k; the default is the largest, so the window is not what limits it.
pub const WINDOW: u64 = 8192;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Report {
    pub msgs_per_sec: f64,
    pub mib_per_sec: f64,
    pub sent: u64,
    pub received: u64,
    pub window: u64,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Streams `size`-byte messages for `secs` from one commonware peer to
/// another. Runs on its own runtime, on its own thread.
pub fn stream(size: usize, secs: f64, window: u64) -> Result<Report> {
    std::thread::spawn(move || run(size, secs, window.max(16)))
        .join()
        .map_err(|_| anyhow!("the commonware run panicked"))?
}

fn run(size: usize, secs: f64, window: u64) -> Result<Report> {
    let ack_every = window / 8;
    let burst = u32::try_from(4 * window)?;
    let burst = std::num::NonZeroU32::new(burst).ok_or_else(|| anyhow!("window"))?;
    let keys = [
        ed25519::PrivateKey::from_seed(1),
        ed25519::PrivateKey::from_seed(2),
    ];
    let addrs = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
    ];
    let max_message = u32::try_from(size.max(64))?;
    let mailbox = NonZeroUsize::new(4096).ok_or_else(|| anyhow!("mailbox"))?;
    let peers = NonZeroUsize::new(2).ok_or_else(|| anyhow!("peers"))?;
    let runner = cw::Runner::new(cw::Config::default().with_worker_threads(2));
    runner.start(|context| async move {
        let mut ends = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let handshake = Cups::<_, ChaCha20Poly1305>::new(
                Sake {
                    signer: key.clone(),
                    synchrony_bound: Duration::from_secs(5),
                    max_handshake_age: Duration::from_secs(10),
                    version: sake::Version::V1,
                },
                cups::Version::V1,
            );
            let cfg = lookup::Config::local(
                handshake,
                b"peerlink-compare",
                addrs[i],
                peers,
                max_message,
                mailbox,
            );
            let (mut network, mut oracle) = Network::new(context.child("network"), cfg);
            let set: Map<_, Address> = keys
                .iter()
                .zip(addrs)
                .map(|(k, a)| (k.public_key(), a.into()))
                .collect::<Vec<_>>()
                .try_into()
                .map_err(|_| anyhow!("peer set"))?;
            let _ = oracle.track(0, set);
            // No rate limit worth the name (the window is the flow control);
            // the burst sizes the receive mailbox, so it holds a window.
            let quota = Quota::per_second(NZU32!(u32::MAX)).allow_burst(burst);
            let data = network.register(DATA, quota);
            let ack = network.register(ACK, quota);
            network.start();
            ends.push((data, ack));
        }
        let (mut b_data, mut b_ack) = {
            let ((_, rx), (tx, _)) = ends.pop().ok_or_else(|| anyhow!("no receiver"))?;
            (rx, tx)
        };
        let ((mut a_data, _), (_, mut a_ack)) = ends.pop().ok_or_else(|| anyhow!("no sender"))?;
        let (a_key, b_key) = (keys[0].public_key(), keys[1].public_key());

        // Wait until a message gets through (the peers have dialled).
        let probe = IoBuf::from(vec![0u8; size]);
        let start = Instant::now();
        loop {
            let _ = a_data.send(Recipients::One(b_key.clone()), probe.clone(), false);
            let got = tokio::time::timeout(Duration::from_millis(100), b_data.recv()).await;
            if matches!(got, Ok(Ok(_))) {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(anyhow!("commonware peers did not connect within 20 s"));
            }
        }
        // Drain the probes still in flight.
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), b_data.recv()).await
        {
        }

        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let receiver = tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), b_data.recv()).await
            {
                n += 1;
                counter.store(n, Relaxed);
                if n % ack_every == 0 {
                    let _ = b_ack.send(
                        Recipients::One(a_key.clone()),
                        n.to_le_bytes().to_vec(),
                        true,
                    );
                }
            }
            n
        });

        let payload = IoBuf::from(vec![0xabu8; size]);
        let duration = Duration::from_secs_f64(secs);
        let t0 = Instant::now();
        let (mut sent, mut acked) = (0u64, 0u64);
        'run: while t0.elapsed() < duration {
            while sent - acked < window {
                let _ = a_data.send(Recipients::One(b_key.clone()), payload.clone(), false);
                sent += 1;
            }
            // Window full: wait for an acknowledgement.
            match tokio::time::timeout(Duration::from_secs(1), a_ack.recv()).await {
                Ok(Ok((_, m))) => {
                    let mut b = [0u8; 8];
                    let m = m.as_ref();
                    b[..m.len().min(8)].copy_from_slice(&m[..m.len().min(8)]);
                    acked = acked.max(u64::from_le_bytes(b));
                }
                _ => break 'run, // stalled: messages were dropped
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let got = received.load(Relaxed);
        receiver.abort();
        let msgs_per_sec = got as f64 / elapsed.max(1e-9);
        Ok(Report {
            msgs_per_sec,
            mib_per_sec: msgs_per_sec * size as f64 / (1024.0 * 1024.0),
            sent,
            received: got,
            window,
        })
    })
}
