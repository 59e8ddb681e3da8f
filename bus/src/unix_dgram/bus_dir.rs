//! Creating and checking the private bus folder.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::BusError;

/// Creates the bus folder with mode 0700 if missing, and checks that it is a
/// directory owned by us and closed to everyone else (tightening the mode
/// if it is ours but too open).
///
/// # Errors
/// [`BusError::BusDir`] if it cannot be created or belongs to another user.
pub fn ensure_bus_dir(dir: &Path) -> Result<(), BusError> {
    let fail = |reason: String| BusError::BusDir { path: dir.to_owned(), reason };
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent).map_err(|e| fail(format!("creating parent: {e}")))?;
        }
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(format!("creating: {e}"))),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| fail(format!("stat: {e}")))?;
    if !meta.is_dir() {
        return Err(fail("exists but is not a directory".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(fail(format!("owned by uid {}, not by us (uid {me})", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(path = %dir.display(), mode = format!("{:o}", meta.mode() & 0o777), "bus folder was open to others; setting mode 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| fail(format!("chmod 0700: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_folder_and_tightens_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/bus");
        ensure_bus_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_bus_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(ensure_bus_dir(&file).is_err());
    }
}
