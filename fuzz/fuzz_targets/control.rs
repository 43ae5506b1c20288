//! Control and request/response message decoders.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peerlink_proto::control::{Control, RrMessage};

fuzz_target!(|data: &[u8]| {
    let _ = Control::decode(data);
    if let Ok(m) = RrMessage::decode(&Bytes::copy_from_slice(data)) {
        // Whatever decodes must encode back to something that decodes the same.
        assert_eq!(RrMessage::decode(&m.encode()).ok(), Some(m));
    }
});
