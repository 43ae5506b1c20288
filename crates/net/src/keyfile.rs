//! Key files: the 32-byte secret as 64 hex characters, readable by the
//! owner only (mode 0600 on Unix).

use std::io::Write;
use std::path::Path;

use peerlink_proto::Keypair;

use crate::NetError;

/// Writes `keypair` to `path`, creating it with mode 0600. Refuses to
/// overwrite an existing file.
pub fn save(keypair: &Keypair, path: &Path) -> Result<(), NetError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(format!("{}\n", keypair.to_hex()).as_bytes())?;
    file.sync_all()?;
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
            std::fs::create_dir_all(dir)?;
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
