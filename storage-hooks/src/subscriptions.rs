//! Dovecot's `subscriptions` file at the Maildir root (Dovecot 2.3 format):
//! the header line `V\t2`, an empty line, then one mailbox per line with
//! hierarchy levels separated by TAB and each level in modified UTF-7, e.g.
//! `Archive\t2024`, in the order they were subscribed (as Dovecot keeps
//! them). A level holding `.`, `\\` or a leading `~` is escaped as in the
//! directory names (`v1\\2e2` for `v1.2`), which is what Dovecot with its
//! listescape plugin writes and reads. Files without the header (older
//! Dovecot) hold one modified-UTF-7 name per line with `/` as separator.

use std::path::Path;

use crate::dotlock::{DotLock, DotLockOptions};
use crate::durable::{self, Sync};
use crate::mailbox_name::{decode_level, encode_level};
use crate::{mutf7, StoreError};

/// File name at the Maildir root.
pub const SUBSCRIPTIONS_FILE: &str = "subscriptions";

/// Parses the file into UTF-8 `/`-separated names in file order, without
/// duplicates; undecodable lines are skipped.
pub fn parse(text: &str) -> Vec<String> {
    let mut lines = text.split('\n').peekable();
    let v2 = lines.peek() == Some(&"V\t2");
    if v2 {
        lines.next();
    }
    let mut out: Vec<String> = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let parts: Option<Vec<String>> = if v2 {
            line.split('\t').map(decode_level).collect()
        } else {
            mutf7::decode(line).map(|n| vec![n])
        };
        match parts {
            Some(p) => {
                let name = p.join("/");
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            None => tracing::warn!(line, "skipping undecodable subscriptions line"),
        }
    }
    out
}

/// Serializes in Dovecot 2.3's format.
pub fn serialize(names: &[String]) -> String {
    let encoded = names.iter().map(|n| n.split('/').map(encode_level).collect::<Vec<_>>().join("\t"));
    let mut s = String::from("V\t2\n\n");
    for e in encoded {
        s.push_str(&e);
        s.push('\n');
    }
    s
}

/// Reads the subscriptions of the Maildir at `root` (empty if no file).
///
/// # Errors
/// I/O errors other than a missing file.
pub fn read(root: &Path) -> Result<Vec<String>, StoreError> {
    let data = durable::read_optional(&root.join(SUBSCRIPTIONS_FILE))?;
    Ok(data.map(|d| parse(&String::from_utf8_lossy(&d))).unwrap_or_default())
}

/// Adds (`subscribe == true`) or removes `name`; returns true if the file
/// changed. Durable (fsynced) before returning.
///
/// # Errors
/// I/O, `LockTimeout`.
pub fn update(root: &Path, name: &str, subscribe: bool) -> Result<bool, StoreError> {
    let path = root.join(SUBSCRIPTIONS_FILE);
    let _lock = DotLock::acquire(&path, DotLockOptions::default())?;
    let mut names = read(root)?;
    let present = names.iter().any(|n| n == name);
    let changed = present != subscribe;
    if subscribe && !present {
        names.push(name.to_string());
    } else if !subscribe && present {
        names.retain(|n| n != name);
    }
    if changed {
        durable::replace_file(&path, serialize(&names).as_bytes(), Sync::Data)?;
        durable::fsync_dir(root)?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dovecot_file() {
        let text = "V\t2\n\nArchive\t2024\n&ANw-n&AO8-code&-Co\nINBOX\n";
        let names = parse(text);
        assert_eq!(names, ["Archive/2024", "Ünïcode&Co", "INBOX"]);
        assert_eq!(serialize(&names), text);
    }

    #[test]
    fn update_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        assert!(update(dir.path(), "A/b", true).unwrap());
        assert!(!update(dir.path(), "A/b", true).unwrap());
        assert!(update(dir.path(), "Ü", true).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("subscriptions")).unwrap(), "V\t2\n\nA\tb\n&ANw-\n");
        assert!(update(dir.path(), "A/b", false).unwrap());
        assert!(!update(dir.path(), "A/b", false).unwrap());
        assert_eq!(read(dir.path()).unwrap().len(), 1);
        assert_eq!(parse("Old/Name\nOld/Name\n"), ["Old/Name"]);
    }

    #[test]
    fn dotted_names_are_escaped_like_dovecot_listescape() {
        // What Dovecot 2.3 with `mail_plugins = listescape` wrote after
        // SUBSCRIBE "v1.2", "a\\b", "h.i/j.k", "x/y.z".
        let text = "V\t2\n\nv1\\2e2\na\\5cb\nh\\2ei\tj\\2ek\nx\ty\\2ez\n";
        let names = parse(text);
        assert_eq!(names, ["v1.2", "a\\b", "h.i/j.k", "x/y.z"]);
        assert_eq!(serialize(&names), text);
    }
}
