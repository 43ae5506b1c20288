//! Release metadata and package records as peers send them (gossip
//! announcements, DHT values), and peers' search answers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_registry::{PackageRecord, SignedRelease};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SignedRelease::decode(data) {
        // Whatever decodes re-encodes to the same bytes.
        assert_eq!(r.encode(), data);
    }
    let _ = PackageRecord::decode(data);
    let _ = peerlink_registry::index::decode_hits(data, 10);
});
