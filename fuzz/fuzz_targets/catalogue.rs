//! The catalogue reader (a user-supplied TSV) and its package synthesis.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_registry::catalogue::Catalogue;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cat) = Catalogue::parse(text) {
            for i in 0..cat.len().min(8) {
                let m = cat.manifest(i).expect("an entry has a manifest");
                m.check().expect("synthesised manifests are valid");
            }
        }
    }
});
