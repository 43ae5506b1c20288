//! Archives: determinism, round trips, and every hostile shape refused
//! with nothing left behind.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn package(dir: &Path) {
    std::fs::create_dir_all(dir.join("src/inner")).unwrap();
    std::fs::write(dir.join("package.toml"), "[package]\nname = \"a\"\n").unwrap();
    std::fs::write(dir.join("src/lib.txt"), b"hello").unwrap();
    std::fs::write(dir.join("src/inner/data.bin"), vec![7u8; 100_000]).unwrap();
    std::fs::write(dir.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// Nothing but `dest`'s parent's original entries remain.
fn nothing_left(parent: &Path) {
    let left: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn packing_is_deterministic_and_round_trips() {
    let t = tempfile::tempdir().unwrap();
    package(&t.path().join("one"));
    package(&t.path().join("two"));
    // Different times on the second copy change nothing.
    let f = std::fs::File::options()
        .write(true)
        .open(t.path().join("two/src/lib.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(99))
        .unwrap();
    let a = pack(&t.path().join("one"), &Limits::default()).unwrap();
    let b = pack(&t.path().join("two"), &Limits::default()).unwrap();
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.bytes, b.bytes);
    assert_eq!((a.files, a.unpacked_bytes), (4, 100_000 + 5 + 10 + 21));
    assert!(a.bytes.len() < 2000, "compressed: {}", a.bytes.len());

    let dest = t.path().join("out/a-1.0.0");
    let r = unpack(&a.bytes, &a.hash, &dest, &Limits::default()).unwrap();
    assert_eq!((r.files, r.bytes), (4, a.unpacked_bytes));
    assert_eq!(std::fs::read(dest.join("src/lib.txt")).unwrap(), b"hello");
    assert_eq!(
        std::fs::read(dest.join("src/inner/data.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    let mode = std::fs::metadata(dest.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // Unpacking again over it is refused.
    assert!(matches!(
        unpack(&a.bytes, &a.hash, &dest, &Limits::default()),
        Err(ArchiveError::DestinationExists(_))
    ));
}

#[test]
fn a_wrong_hash_is_refused_before_anything_is_written() {
    let t = tempfile::tempdir().unwrap();
    package(&t.path().join("p"));
    let mut a = pack(&t.path().join("p"), &Limits::default()).unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let last = a.bytes.len() - 1;
    a.bytes[last] ^= 1;
    let e = unpack(&a.bytes, &a.hash, &out.join("x"), &Limits::default()).unwrap_err();
    assert!(matches!(e, ArchiveError::HashMismatch { .. }), "{e}");
    assert!(e.to_string().contains("does not match"));
    nothing_left(&out);
}

#[test]
fn links_and_special_files_are_not_packed() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("p");
    package(&p);
    std::os::unix::fs::symlink("/etc/passwd", p.join("src/passwd")).unwrap();
    let e = pack(&p, &Limits::default()).unwrap_err();
    assert!(matches!(e, ArchiveError::Symlink(_)), "{e}");
}

/// One raw tar entry with `name` written into the header as given (the
/// tar crate's own setters refuse hostile names, which is the point).
fn raw_entry(tar: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
}

fn sealed(tar: &mut Vec<u8>) -> (Vec<u8>, [u8; 32]) {
    tar.extend_from_slice(&[0u8; 1024]);
    let z = zstd::encode_all(&tar[..], 3).unwrap();
    let h = *blake3::hash(&z).as_bytes();
    (z, h)
}

/// Name, kind, contents, link target.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    use tar::EntryType::*;
    let cases: Vec<(Vec<RawEntry>, &str)> = vec![
        (
            vec![(b"../evil", Regular, b"x", b"")],
            "`..` leaves the package",
        ),
        (
            vec![(b"a/../../evil", Regular, b"x", b"")],
            "`..` leaves the package",
        ),
        (vec![(b"/tmp/evil", Regular, b"x", b"")], "absolute paths"),
        (
            vec![(b"link", Symlink, b"", b"/etc/passwd")],
            "symlink entries are not allowed",
        ),
        (
            vec![(b"hard", Link, b"", b"../x")],
            "link entries are not allowed",
        ),
        (
            vec![(b"dev", Char, b"", b"")],
            "char entries are not allowed",
        ),
        (
            vec![(b"a", Regular, b"1", b""), (b"a", Regular, b"2", b"")],
            "appears twice",
        ),
        (vec![(b"", Regular, b"x", b"")], "empty path"),
    ];
    for (entries, want) in cases {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut tar = Vec::new();
        for (name, kind, data, link) in entries {
            raw_entry(&mut tar, name, kind, data, link);
        }
        let (z, h) = sealed(&mut tar);
        let e = unpack(&z, &h, &out.join("pkg"), &Limits::default()).unwrap_err();
        assert!(e.to_string().contains(want), "{want}: {e}");
        nothing_left(&out);
        assert!(!t.path().join("evil").exists());
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_cap() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        ..Limits::default()
    };
    // 8 MiB of zeros compresses to a few hundred bytes.
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        b"zeros",
        tar::EntryType::Regular,
        &vec![0u8; 8 << 20],
        b"",
    );
    let (z, h) = sealed(&mut tar);
    assert!(z.len() < 4096);
    let e = unpack(&z, &h, &out.join("pkg"), &limits).unwrap_err();
    assert!(matches!(e, ArchiveError::TooLarge(_)), "{e}");
    nothing_left(&out);
    // Garbage that is not zstd at all.
    let junk = b"definitely not an archive".to_vec();
    let h = *blake3::hash(&junk).as_bytes();
    let e = unpack(&junk, &h, &out.join("pkg"), &limits).unwrap_err();
    assert!(matches!(e, ArchiveError::Corrupt(_)), "{e}");
    nothing_left(&out);
}

#[test]
fn a_write_failure_half_way_leaves_nothing_installed() {
    // "a" is written as a file, then "a/b" needs it to be a directory:
    // the filesystem refuses half way through the archive.
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut tar = Vec::new();
    raw_entry(&mut tar, b"first", tar::EntryType::Regular, b"written", b"");
    raw_entry(&mut tar, b"a", tar::EntryType::Regular, b"file", b"");
    raw_entry(&mut tar, b"a/b", tar::EntryType::Regular, b"x", b"");
    let (z, h) = sealed(&mut tar);
    let e = unpack(&z, &h, &out.join("pkg"), &Limits::default()).unwrap_err();
    assert!(matches!(e, ArchiveError::Io { .. }), "{e}");
    nothing_left(&out);
}

#[test]
fn a_truncated_archive_is_refused_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    package(&t.path().join("p"));
    let a = pack(&t.path().join("p"), &Limits::default()).unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for cut in [1, a.bytes.len() / 2, a.bytes.len() - 1] {
        // Its own hash, so the check reaches the decompressor and tar reader.
        let bytes = &a.bytes[..cut];
        let h = *blake3::hash(bytes).as_bytes();
        let e = unpack(bytes, &h, &out.join("pkg"), &Limits::default()).unwrap_err();
        assert!(matches!(e, ArchiveError::Corrupt(_)), "cut at {cut}: {e}");
        nothing_left(&out);
    }
}
