//! Unpacking arbitrary bytes as a package archive (the hash is the
//! input's own, so every input reaches the decompressor and tar reader).
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_registry::archive::{unpack, Limits};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let hash = *blake3::hash(data).as_bytes();
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        max_files: 64,
        ..Limits::default()
    };
    let dest = dir.path().join("pkg");
    if unpack(data, &hash, &dest, &limits).is_err() {
        // Nothing half-installed.
        assert!(!dest.exists());
    }
});
