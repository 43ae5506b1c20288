//! Transaction gossip messages and fetch requests as peers send them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_txpool::wire::{self, TxMessage};

fuzz_target!(|data: &[u8]| {
    match TxMessage::decode(data) {
        Ok(TxMessage::Announce(items)) => assert_eq!(wire::announce(&items), data),
        Ok(TxMessage::Txs(txs)) => assert_eq!(wire::push(txs), data),
        Err(_) => {}
    }
    if let Ok(ids) = wire::decode_get(data) {
        assert_eq!(wire::encode_get(&ids), data);
    }
});
