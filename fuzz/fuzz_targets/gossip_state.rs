//! The gossip state machine fed length-prefixed messages from three
//! peers, with time moving on, verdicts alternating and ticks between.
#![no_main]
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peerlink_proto::gossip::{Action, Gossip, GossipConfig, Validation};
use peerlink_proto::PeerId;

fuzz_target!(|data: &[u8]| {
    let peers: Vec<PeerId> = (1..=3u8).map(|i| PeerId::unverified([i; 32])).collect();
    let mut now = Instant::now();
    let mut g = Gossip::new(GossipConfig::default(), PeerId::unverified([9; 32]), now, 1);
    for p in &peers {
        g.add_peer(*p);
    }
    let _ = g.subscribe(now, "t");
    let mut rest = data;
    let mut i = 0usize;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (msg, tail) = tail.split_at(n);
        rest = tail;
        g.on_message(now, peers[i % 3], &Bytes::copy_from_slice(msg));
        i += 1;
        now += Duration::from_millis(u64::from(len) * 4);
        g.tick(now);
        while let Some(a) = g.poll_action() {
            if let Action::Validate { id, .. } = a {
                g.validated(id, if len % 2 == 0 { Validation::Accept } else { Validation::Reject });
            }
        }
    }
});
