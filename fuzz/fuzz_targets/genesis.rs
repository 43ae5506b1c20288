//! The txpool genesis file a node is started with (`--genesis`): any
//! text reads or is refused by name; what reads writes back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_txpool::Genesis;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(g) = Genesis::from_toml(text) {
        let again = Genesis::from_toml(&g.to_toml()).expect("a written genesis reads");
        assert_eq!(again.hash(), g.hash());
        assert_eq!(again.producers, g.producers);
    }
});
