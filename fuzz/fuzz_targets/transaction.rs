//! Transactions as peers send them (gossip, fetch answers, inside blocks).
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_txpool::tx::{Transaction, MAX_ENCODED};

fuzz_target!(|data: &[u8]| {
    // Everything but the signature, so the fuzzer gets past it.
    if let Ok(t) = Transaction::decode_unverified(data) {
        assert_eq!(&t.encoded()[..], data);
        assert!(t.size() <= MAX_ENCODED && t.payload.len() <= t.size());
    }
    let _ = Transaction::decode(data);
});
