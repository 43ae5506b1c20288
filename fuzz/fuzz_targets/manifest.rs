//! The package manifest parser on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_registry::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Manifest::parse(text, std::path::Path::new("fuzz/package.toml"));
    }
});
