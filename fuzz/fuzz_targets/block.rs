//! Blocks as peers send them: the framing of the header and the
//! transactions is parsed before the producer's signature is checked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_txpool::Block;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Block::decode(data) {
        assert_eq!(b.encoded(), data);
    }
});
