//! Files that survive a crash: a file is written to a temporary name in
//! its directory, synced, renamed into place and the directory synced,
//! so a reader finds the old content or the new, never part of it.
//! Directories holding keys and data are created private (0700).

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically, with mode 0600. With
/// `overwrite` false an existing `path` is an `AlreadyExists` error and
/// is left untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".peerlink-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    if overwrite {
        tmp.persist(path).map_err(|e| e.error)?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
    }
    sync_dir(dir)
}

/// Makes a rename or create in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents with mode 0700 (on Unix); an
/// existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files_and_noclobber_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("a/b");
        create_private_dir(&home).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&home).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let f = home.join("f");
        write_atomic(&f, b"one", false).unwrap();
        let e = write_atomic(&f, b"two", false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&f).unwrap(), b"one");
        write_atomic(&f, b"three", true).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"three");
        let left: Vec<_> = std::fs::read_dir(&home).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}
