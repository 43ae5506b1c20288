//! The handshake state machine fed arbitrary bytes, as listener and as
//! dialler after a genuine first message.
#![no_main]
use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use peerlink_proto::{CipherSuite, Handshake, Keypair, NoiseIdentity};

fn identity() -> &'static NoiseIdentity {
    static ID: OnceLock<NoiseIdentity> = OnceLock::new();
    ID.get_or_init(|| NoiseIdentity::new(&Keypair::from_secret([9; 32])).expect("identity"))
}

fn other() -> peerlink_proto::PeerId {
    static ID: OnceLock<peerlink_proto::PeerId> = OnceLock::new();
    *ID.get_or_init(|| Keypair::from_secret([5; 32]).peer_id())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = Handshake::responder(identity()) {
        let _ = r.read(&mut BytesMut::from(data));
    }
    if let Ok(mut i) = Handshake::initiator(identity(), other(), CipherSuite::default()) {
        let _ = i.take_output();
        let _ = i.read(&mut BytesMut::from(data));
    }
});
