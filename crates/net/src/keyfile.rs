//! Key files: the 32-byte secret as 64 hex characters, readable by the
//! owner only (mode 0600 on Unix).

use std::path::Path;

use peerlink_proto::Keypair;

use crate::NetError;

/// Writes `keypair` to `path` with mode 0600, atomically: a crash leaves
/// no key or the whole key, never part of one. Refuses to overwrite an
/// existing file.
pub fn save(keypair: &Keypair, path: &Path) -> Result<(), NetError> {
    let text = format!("{}\n", keypair.to_hex());
    crate::fsutil::write_atomic(path, text.as_bytes(), false)?;
    Ok(())
}

/// Reads a key file written by [`save`]. Files larger than 1 KiB are refused
/// before reading, and a key readable by others is refused on Unix.
pub fn load(path: &Path) -> Result<Keypair, NetError> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > 1024 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a key file (too large)", path.display()),
        )
        .into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} has mode {mode:o}; a key file must be private (chmod 600)",
                    path.display()
                ),
            )
            .into());
        }
    }
    Ok(Keypair::from_hex(&std::fs::read_to_string(path)?)?)
}

/// Loads the key at `path`, or creates it if it does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair, NetError> {
    if path.exists() {
        return load(path);
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            crate::fsutil::create_private_dir(dir)?;
        }
    }
    let keypair = Keypair::generate()?;
    save(&keypair, path)?;
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let kp = Keypair::generate().unwrap();
        save(&kp, &path).unwrap();
        assert_eq!(load(&path).unwrap().peer_id(), kp.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(load(&path).is_err(), "world-readable keys are refused");
        }
        assert!(save(&kp, &path).is_err(), "never overwrites");
    }

    #[test]
    fn a_new_home_is_private_and_the_key_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let path = home.join("node.key");
        let kp = load_or_create(&path).unwrap();
        assert_eq!(load_or_create(&path).unwrap().peer_id(), kp.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&home).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "the home holds the key: 0700");
        }
        let files: Vec<_> = std::fs::read_dir(&home).unwrap().collect();
        assert_eq!(files.len(), 1, "no temporary file is left");
    }

    #[test]
    fn garbage_key_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        save(&Keypair::generate().unwrap(), &path).unwrap();
        std::fs::write(&path, "not hex at all").unwrap();
        assert!(load(&path).is_err());
        std::fs::write(&path, vec![b'a'; 5000]).unwrap();
        assert!(load(&path).is_err());
    }
}
