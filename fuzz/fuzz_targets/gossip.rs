//! The gossip codec: whatever decodes re-encodes to the same bytes.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peerlink_proto::gossip::Wire;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(m) = Wire::decode(&bytes) {
        assert_eq!(m.encode(), bytes);
    }
});
