//! The certificate reader that names a QUIC peer: any bytes, no panic;
//! whatever it accepts names a valid ed25519 key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_proto::tlscert::peer_id_of;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = peer_id_of(data) {
        assert!(peerlink_proto::PeerId::from_bytes(*id.as_bytes()).is_ok());
    }
});
