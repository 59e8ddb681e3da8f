//! UIDVALIDITY allocation through the root's `dovecot-uidvalidity` file
//! (the last value handed out, in hex, as Dovecot keeps it): a new value is
//! `max(now, last + 1)`, so a mailbox deleted and re-created, or re-created
//! after a corrupt uidlist, never reuses an old UIDVALIDITY.

use std::path::Path;

use crate::dotlock::{DotLock, DotLockOptions};
use crate::durable::{self, Sync};
use crate::StoreError;

/// File name at the Maildir root.
pub const UIDVALIDITY_FILE: &str = "dovecot-uidvalidity";

/// Allocates a fresh UIDVALIDITY for a mailbox of the Maildir at `root`.
///
/// # Errors
/// I/O, `LockTimeout`.
pub fn allocate(root: &Path) -> Result<u32, StoreError> {
    let path = root.join(UIDVALIDITY_FILE);
    let _lock = DotLock::acquire(&path, DotLockOptions::default())?;
    let last = durable::read_optional(&path)?
        .and_then(|d| u32::from_str_radix(String::from_utf8_lossy(&d).trim(), 16).ok())
        .unwrap_or(0);
    let now = (durable::now_ms() / 1000).min(u64::from(u32::MAX)) as u32;
    let next = now.max(last.wrapping_add(1)).max(1);
    durable::replace_file(&path, format!("{next:08x}").as_bytes(), Sync::Data)?;
    durable::fsync_dir(root)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_dovecot_compatible() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(UIDVALIDITY_FILE), "6b06ca88").unwrap();
        let a = allocate(dir.path()).unwrap();
        assert!(a >= 0x6b06ca89);
        let b = allocate(dir.path()).unwrap();
        assert!(b > a);
        assert_eq!(std::fs::read_to_string(dir.path().join(UIDVALIDITY_FILE)).unwrap(), format!("{b:08x}"));
    }
}
