//! Sealed-frame decoding of arbitrary bytes: must never panic or allocate
//! beyond the declared limit.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use peerlink_proto::{CipherState, CipherSuite, FrameDecoder, Records};

fuzz_target!(|data: &[u8]| {
    let mut dec = FrameDecoder::new(CipherState::new(CipherSuite::Aes256Gcm, &[3; 32]), 1 << 16);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(plain)) = dec.decode(&mut buf) {
        for r in Records::new(plain) {
            if r.is_err() {
                break;
            }
        }
    }
});
