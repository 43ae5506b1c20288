//! Unpacking arbitrary bytes as a package archive (the hash is the
//! input's own, so every input reaches the decompressor and tar reader).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use peerlink_registry::archive::{unpack, Limits};

/// One directory for the whole run (a fresh one per input would cost more
/// than most inputs do); each input's package is removed after it.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let hash = *blake3::hash(data).as_bytes();
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        max_files: 64,
        ..Limits::default()
    };
    let dest = dir.path().join("pkg");
    if unpack(data, &hash, &dest, &limits).is_err() {
        // Nothing half-installed, not even a staging directory.
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).map(Iterator::count).ok(), Some(0));
    } else {
        std::fs::remove_dir_all(&dest).expect("remove the unpacked package");
    }
});
