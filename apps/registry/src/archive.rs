//! Package archives: deterministic tar + zstd, named by their BLAKE3 hash,
//! and unpacked as if hostile.
//!
//! [`pack`] walks a package directory in byte order of names and writes
//! only directories and regular files, with zeroed times, owners and
//! normalised modes, so the same tree always gives the same bytes and the
//! same hash. Symlinks and special files are refused.
//!
//! [`unpack`] checks the hash first, then reads through a decompressor
//! whose output is capped ([`Limits`]), so a decompression bomb stops at
//! the cap. Only relative paths of plain components, regular files and
//! directories are accepted (no `..`, no absolute paths, no links, no
//! devices, no duplicates). Everything is written into a fresh directory
//! beside the target and renamed into place at the end; on any error that
//! directory is removed, so nothing is ever half-installed.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Bounds on what an archive may unpack to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Total bytes of file contents.
    pub max_unpacked_bytes: u64,
    pub max_files: usize,
    /// Bytes in one path.
    pub max_path_len: usize,
    /// Directories deep.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unpacked_bytes: 64 << 20,
            max_files: 10_000,
            max_path_len: 1024,
            max_depth: 32,
        }
    }
}

/// A packed package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    pub bytes: Vec<u8>,
    /// BLAKE3 of `bytes`.
    pub hash: [u8; 32],
    pub files: usize,
    pub unpacked_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: symbolic links are not allowed in a package", .0.display())]
    Symlink(PathBuf),
    #[error("{}: only regular files and directories may be packed", .0.display())]
    SpecialFile(PathBuf),
    #[error("{}: file names must be UTF-8", .0.display())]
    NotUtf8(PathBuf),
    #[error("archive hash {actual} does not match the expected {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("archive unpacks to more than {0} bytes (refused before writing them)")]
    TooLarge(u64),
    #[error("archive has more than {0} entries")]
    TooManyFiles(usize),
    #[error("archive entry {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("archive entry {path:?}: {kind} entries are not allowed")]
    ForbiddenEntry { path: String, kind: String },
    #[error("archive entry {0:?} appears twice")]
    Duplicate(String),
    #[error("{}: already exists", .0.display())]
    DestinationExists(PathBuf),
    #[error("corrupt archive: {0}")]
    Corrupt(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Hex of a hash, for messages and names.
pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Packs the package directory `dir` (skipping `.git`).
pub fn pack(dir: &Path, limits: &Limits) -> Result<Packed, ArchiveError> {
    let mut entries = Vec::new();
    walk(dir, dir, &mut entries, limits)?;
    let mut builder = tar::Builder::new(Vec::new());
    let mut unpacked = 0u64;
    for (rel, full, is_dir) in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let fail = |e: std::io::Error| ArchiveError::Io {
            path: full.clone(),
            source: e,
        };
        if *is_dir {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            builder
                .append_data(&mut h, format!("{rel}/"), std::io::empty())
                .map_err(fail)?;
        } else {
            let meta = std::fs::metadata(full).map_err(io(full))?;
            unpacked += meta.len();
            if unpacked > limits.max_unpacked_bytes {
                return Err(ArchiveError::TooLarge(limits.max_unpacked_bytes));
            }
            let exec = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if exec { 0o755 } else { 0o644 });
            h.set_size(meta.len());
            let f = std::fs::File::open(full).map_err(io(full))?;
            builder.append_data(&mut h, rel, f).map_err(fail)?;
        }
    }
    let tar = builder.into_inner().map_err(io(dir))?;
    let bytes = zstd::encode_all(&tar[..], 9).map_err(io(dir))?;
    Ok(Packed {
        hash: *blake3::hash(&bytes).as_bytes(),
        bytes,
        files: entries.iter().filter(|e| !e.2).count(),
        unpacked_bytes: unpacked,
    })
}

/// Collects (relative path, full path, is directory) under `dir`, sorted.
fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, PathBuf, bool)>,
    limits: &Limits,
) -> Result<(), ArchiveError> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    names.sort();
    for path in names {
        if path.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let rel = path
            .strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| ArchiveError::NotUtf8(path.clone()))?
            .to_string();
        if out.len() >= limits.max_files {
            return Err(ArchiveError::TooManyFiles(limits.max_files));
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(ArchiveError::Symlink(path));
        } else if ft.is_dir() {
            out.push((rel, path.clone(), true));
            walk(root, &path, out, limits)?;
        } else if ft.is_file() {
            out.push((rel, path, false));
        } else {
            return Err(ArchiveError::SpecialFile(path));
        }
    }
    Ok(())
}

/// What an unpack wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unpacked {
    pub files: usize,
    pub bytes: u64,
}

/// Checks `bytes` against `expected` (BLAKE3) and unpacks them into `dest`,
/// which must not exist yet. On any error nothing is left at `dest`.
pub fn unpack(
    bytes: &[u8],
    expected: &[u8; 32],
    dest: &Path,
    limits: &Limits,
) -> Result<Unpacked, ArchiveError> {
    let actual = *blake3::hash(bytes).as_bytes();
    if &actual != expected {
        return Err(ArchiveError::HashMismatch {
            expected: hex(expected),
            actual: hex(&actual),
        });
    }
    if dest.exists() {
        return Err(ArchiveError::DestinationExists(dest.to_path_buf()));
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    let report = unpack_into(bytes, staging.path(), limits)?;
    // Atomic on one filesystem: the package appears whole or not at all.
    let staged = staging.keep();
    std::fs::rename(&staged, dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        ArchiveError::Io {
            path: dest.to_path_buf(),
            source: e,
        }
    })?;
    Ok(report)
}

fn unpack_into(bytes: &[u8], root: &Path, limits: &Limits) -> Result<Unpacked, ArchiveError> {
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt(e.to_string());
    let decoder = zstd::stream::read::Decoder::new(bytes).map_err(corrupt)?;
    // Headers add at most a few blocks per entry; the cap stops a bomb
    // long before the disk fills.
    let cap = limits
        .max_unpacked_bytes
        .saturating_add((limits.max_files as u64 + 2) * 3 * 512);
    let mut archive = tar::Archive::new(decoder.take(cap));
    let mut seen = HashSet::new();
    let mut report = Unpacked { files: 0, bytes: 0 };
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if seen.len() >= limits.max_files {
            return Err(ArchiveError::TooManyFiles(limits.max_files));
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = check_path(&raw, &name, limits)?;
        if !seen.insert(rel.clone()) {
            return Err(ArchiveError::Duplicate(name));
        }
        let target = root.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).map_err(io(&target))?;
            }
            tar::EntryType::Regular => {
                let size = entry.header().size().map_err(corrupt)?;
                if report.bytes.saturating_add(size) > limits.max_unpacked_bytes {
                    return Err(ArchiveError::TooLarge(limits.max_unpacked_bytes));
                }
                if let Some(dir) = target.parent() {
                    std::fs::create_dir_all(dir).map_err(io(dir))?;
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut out = std::fs::File::create_new(&target).map_err(io(&target))?;
                let copied =
                    std::io::copy(&mut (&mut entry).take(size), &mut out).map_err(io(&target))?;
                if copied != size {
                    return Err(ArchiveError::Corrupt(format!("{name:?} is truncated")));
                }
                out.flush().map_err(io(&target))?;
                let exec = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                std::fs::set_permissions(
                    &target,
                    std::os::unix::fs::PermissionsExt::from_mode(exec),
                )
                .map_err(io(&target))?;
                report.bytes += size;
                report.files += 1;
            }
            other => {
                return Err(ArchiveError::ForbiddenEntry {
                    path: name,
                    kind: format!("{other:?}").to_lowercase(),
                })
            }
        }
    }
    Ok(report)
}

/// A relative path of plain components only.
fn check_path(raw: &[u8], name: &str, limits: &Limits) -> Result<PathBuf, ArchiveError> {
    let bad = |reason| ArchiveError::BadPath {
        path: name.to_string(),
        reason,
    };
    if raw.len() > limits.max_path_len {
        return Err(bad("path too long"));
    }
    let text = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    let path = Path::new(text.trim_end_matches('/'));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("`..` leaves the package")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("absolute paths are not allowed"))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(bad("empty path"));
    }
    if out.components().count() > limits.max_depth {
        return Err(bad("too deep"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
