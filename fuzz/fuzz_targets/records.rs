//! Record parsing of an opened frame's plaintext (what a peer controls once
//! it holds the session keys).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peerlink_proto::Records;

fuzz_target!(|data: &[u8]| {
    for r in Records::new(Bytes::copy_from_slice(data)) {
        if let Ok(r) = r {
            assert!(r.payload.len() <= data.len());
        }
    }
});
