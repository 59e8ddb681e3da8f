//! The interest file a subscriber keeps next to its socket, and the
//! subscriber's side of it ([`InterestFile`]).
//!
//! # Layout (version 1)
//!
//! `<socket name>.interest`, exactly [`HEADER_LEN`] + 2^`log2_bits` / 8 bytes:
//!
//! ```text
//! 0..8   magic  b"DMBUSINT"
//! 8      format version (1)
//! 9      flags: bit 0 = wildcard (the subscriber wants every event)
//! 10     log2_bits: the bitmap has 2^log2_bits bits (16 here; 3..=24 accepted)
//! 11     user hash: 1 = the first 8 bytes of SHA-256(user name), little endian
//! 12..16 reserved, zero
//! 16..   bitmap: bit b is bit (b % 8) of byte 16 + b / 8; user U maps to
//!        bit hash(U) mod 2^log2_bits
//! ```
//!
//! A set bit means "some subscribed user of this subscriber maps here": a
//! publisher sends an event of user U to the socket only if U's bit is set.
//! Collisions only cost a wasted datagram (the subscriber still filters by
//! user name). While the wildcard flag is on, every bit is set too, so a
//! publisher never needs more than the one byte holding the user's bit.
//!
//! The subscriber writes the whole file under a temporary name and renames
//! it into place *before* binding its socket, then changes single bytes
//! with `pwrite` before `subscribe` returns (setting) or after the last
//! session of a user left (clearing). A bit is never clear while a
//! subscribed user maps to it, so a publisher that reads the byte after
//! `subscribe` returned sees the interest; concurrent reads see either the
//! old or the new byte, and both have the bits of still-subscribed users.
//! If a write fails the subscriber truncates the file to zero length, which
//! every publisher (including those holding it open) takes as "send
//! everything".

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Suffix appended to a socket's file name to name its interest file.
pub const INTEREST_SUFFIX: &str = ".interest";

/// Magic bytes at the start of an interest file.
pub const MAGIC: &[u8; 8] = b"DMBUSINT";

/// The interest-file format version written and understood here.
pub const INTEREST_VERSION: u8 = 1;

/// Length of the header before the bitmap.
pub const HEADER_LEN: usize = 16;

/// Header flag: the subscriber wants every event.
pub const FLAG_WILDCARD: u8 = 1;

/// User hash id 1: the first 8 bytes of SHA-256 of the user name, little endian.
pub const HASH_SHA256_LE64: u8 = 1;

/// Bitmap size written by this version: 2^16 bits (8 KiB).
pub const LOG2_BITS: u8 = 16;

/// The hash of a user name that selects its bit (see the module docs).
pub fn user_hash(user: &str) -> u64 {
    let digest = Sha256::digest(user.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Why a publisher cannot use an interest file (it then sends that receiver everything).
#[derive(Debug, thiserror::Error)]
pub enum InterestError {
    /// Reading or writing the file failed.
    #[error("interest file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The header is not one this version understands.
    #[error("interest file {path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The layout announced by a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterestLayout {
    /// The bitmap has 2^log2_bits bits.
    pub log2_bits: u8,
    /// The wildcard flag was set when the header was read.
    pub wildcard: bool,
}

impl InterestLayout {
    /// Total file length for this layout.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN as u64 + (1u64 << self.log2_bits) / 8
    }

    /// The bit a user hash maps to.
    pub fn bit(&self, hash: u64) -> u64 {
        hash & ((1u64 << self.log2_bits) - 1)
    }
}

/// Checks a header and the file length against each other.
///
/// # Errors
/// A description of the first problem found (short, bad magic, unknown
/// version or hash, wrong length).
pub fn parse_header(header: &[u8], file_len: u64) -> Result<InterestLayout, String> {
    if header.len() < HEADER_LEN {
        return Err(format!("header is {} bytes, expected {HEADER_LEN}", header.len()));
    }
    if &header[..8] != MAGIC {
        return Err("bad magic".into());
    }
    if header[8] != INTEREST_VERSION {
        return Err(format!("unsupported format version {}", header[8]));
    }
    let log2_bits = header[10];
    if !(3..=24).contains(&log2_bits) {
        return Err(format!("unsupported bitmap size 2^{log2_bits}"));
    }
    if header[11] != HASH_SHA256_LE64 {
        return Err(format!("unsupported user hash {}", header[11]));
    }
    let layout = InterestLayout { log2_bits, wildcard: header[9] & FLAG_WILDCARD != 0 };
    if file_len != layout.file_len() {
        return Err(format!("file is {file_len} bytes, expected {}", layout.file_len()));
    }
    Ok(layout)
}

/// The path of the interest file of the socket at `socket`.
pub fn interest_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(INTEREST_SUFFIX);
    PathBuf::from(name)
}

/// The subscriber's interest file: per-bit counts of subscribed users in
/// memory, the bitmap on disk.
#[derive(Debug)]
pub struct InterestFile {
    path: PathBuf,
    file: File,
    /// Subscribed users per bit.
    counts: Vec<u32>,
    /// The bitmap as written to the file.
    bitmap: Vec<u8>,
    wildcard: bool,
    /// A write failed and the file was truncated: publishers send everything.
    failed: bool,
}

impl InterestFile {
    /// Writes an empty interest file for the socket at `socket` (under a
    /// temporary name, then renamed into place, so nobody sees a partial one).
    ///
    /// # Errors
    /// The I/O error if it cannot be written.
    pub fn create(socket: &Path) -> std::io::Result<Self> {
        let path = interest_path(socket);
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        let bits = 1usize << LOG2_BITS;
        let bitmap = vec![0u8; bits / 8];
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = INTEREST_VERSION;
        header[10] = LOG2_BITS;
        header[11] = HASH_SHA256_LE64;
        let written = file.write_all(&header).and_then(|()| file.write_all(&bitmap));
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Self { path, file, counts: vec![0; bits], bitmap, wildcard: false, failed: false })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts one more subscribed user mapping to `user`'s bit and sets the
    /// bit in the file if it was clear. Returns once the file says so.
    pub fn add(&mut self, user: &str) {
        let bit = self.bit_of(user);
        self.counts[bit] = self.counts[bit].saturating_add(1);
        self.set_bit(bit, true);
    }

    /// Counts one subscribed user less for `user`'s bit; clears the bit
    /// when no subscribed user maps to it any more (and no wildcard).
    pub fn remove(&mut self, user: &str) {
        let bit = self.bit_of(user);
        self.counts[bit] = self.counts[bit].saturating_sub(1);
        if self.counts[bit] == 0 && !self.wildcard {
            self.set_bit(bit, false);
        }
    }

    /// Turns the wildcard on (every bit set, then the flag) or off (the
    /// flag cleared, then the bitmap rewritten from the counts).
    pub fn set_wildcard(&mut self, on: bool) {
        if self.wildcard == on {
            return;
        }
        self.wildcard = on;
        let flag = [if on { FLAG_WILDCARD } else { 0 }];
        let mut bitmap = self.bitmap.clone();
        if on {
            bitmap.fill(0xff);
        } else {
            for (i, byte) in bitmap.iter_mut().enumerate() {
                *byte = (0..8).filter(|b| self.counts[i * 8 + b] > 0).fold(0u8, |acc, b| acc | (1 << b));
            }
        }
        // Setting: bits before the flag; clearing: flag before bits. Either
        // way no reader sees fewer bits than there are subscribed users.
        let result = if on {
            self.file.write_all_at(&bitmap, HEADER_LEN as u64).and_then(|()| self.file.write_all_at(&flag, 9))
        } else {
            self.file.write_all_at(&flag, 9).and_then(|()| self.file.write_all_at(&bitmap, HEADER_LEN as u64))
        };
        self.bitmap = bitmap;
        if let Err(e) = result {
            self.give_up(&e);
        }
    }

    /// True while the wildcard is on.
    pub fn wildcard(&self) -> bool {
        self.wildcard
    }

    fn bit_of(&self, user: &str) -> usize {
        (user_hash(user) & ((1u64 << LOG2_BITS) - 1)) as usize
    }

    fn set_bit(&mut self, bit: usize, on: bool) {
        let (index, mask) = (bit / 8, 1u8 << (bit % 8));
        let old = self.bitmap[index];
        let new = if on { old | mask } else { old & !mask };
        if new == old || self.failed {
            return;
        }
        self.bitmap[index] = new;
        if let Err(e) = self.file.write_all_at(&[new], (HEADER_LEN + index) as u64) {
            self.give_up(&e);
        }
    }

    /// A write failed: truncating the file makes every publisher send
    /// everything (a wasted datagram is harmless, a lost event is not).
    fn give_up(&mut self, e: &std::io::Error) {
        self.failed = true;
        match self.file.set_len(0) {
            Ok(()) => tracing::error!(path = %self.path.display(), error = %e,
                "bus: cannot update the interest file; truncated it, publishers now send every event here"),
            Err(e2) => tracing::error!(path = %self.path.display(), error = %e, truncate_error = %e2,
                "bus: cannot update or truncate the interest file; events may be missed (resync the subscriber)"),
        }
    }
}

impl Drop for InterestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(f: &InterestFile) -> Vec<u8> {
        std::fs::read(f.path()).unwrap()
    }

    fn bit_is_set(bytes: &[u8], user: &str) -> bool {
        let layout = parse_header(bytes, bytes.len() as u64).unwrap();
        let bit = layout.bit(user_hash(user)) as usize;
        bytes[HEADER_LEN + bit / 8] & (1 << (bit % 8)) != 0
    }

    /// Two user names mapping to the same bit of a 2^16 bitmap.
    fn colliding_users() -> (String, String) {
        let mut seen = std::collections::HashMap::new();
        for i in 0u32.. {
            let u = format!("user{i}");
            let bit = user_hash(&u) & 0xffff;
            if let Some(other) = seen.insert(bit, u.clone()) {
                return (other, u);
            }
        }
        unreachable!()
    }

    #[test]
    fn counts_users_per_bit_and_clears_only_the_last() {
        let tmp = tempfile::tempdir().unwrap();
        let mut f = InterestFile::create(&tmp.path().join("1-2.sock")).unwrap();
        assert_eq!(f.path(), tmp.path().join("1-2.sock.interest"));
        let bytes = read(&f);
        assert_eq!(parse_header(&bytes, bytes.len() as u64).unwrap(), InterestLayout { log2_bits: 16, wildcard: false });
        assert!(!tmp.path().join("1-2.sock.interest.tmp").exists());
        let (a, b) = colliding_users();
        f.add(&a);
        f.add(&b);
        assert!(bit_is_set(&read(&f), &a));
        f.remove(&a);
        assert!(bit_is_set(&read(&f), &b), "the colliding user keeps the bit");
        f.remove(&b);
        assert!(!bit_is_set(&read(&f), &b));
        f.add("carol");
        f.set_wildcard(true);
        let bytes = read(&f);
        assert!(parse_header(&bytes, bytes.len() as u64).unwrap().wildcard);
        assert!(bytes[HEADER_LEN..].iter().all(|&b| b == 0xff));
        f.set_wildcard(false);
        let bytes = read(&f);
        assert!(!parse_header(&bytes, bytes.len() as u64).unwrap().wildcard);
        assert!(bit_is_set(&bytes, "carol"));
        assert_eq!(bytes[HEADER_LEN..].iter().map(|b| b.count_ones()).sum::<u32>(), 1);
        let path = f.path().to_owned();
        drop(f);
        assert!(!path.exists());
    }

    #[test]
    fn rejects_bad_headers() {
        let mut good = [0u8; HEADER_LEN];
        good[..8].copy_from_slice(MAGIC);
        good[8] = 1;
        good[10] = 16;
        good[11] = 1;
        let len = HEADER_LEN as u64 + 8192;
        assert!(parse_header(&good, len).is_ok());
        assert!(parse_header(&good[..10], len).unwrap_err().contains("header is 10 bytes"));
        assert!(parse_header(&good, len - 1).unwrap_err().contains("expected"));
        let mut v = good;
        v[8] = 2;
        assert!(parse_header(&v, len).unwrap_err().contains("version 2"));
        let mut v = good;
        v[0] = b'X';
        assert_eq!(parse_header(&v, len).unwrap_err(), "bad magic");
        let mut v = good;
        v[11] = 9;
        assert!(parse_header(&v, len).unwrap_err().contains("hash 9"));
        let mut v = good;
        v[10] = 40;
        assert!(parse_header(&v, len).unwrap_err().contains("2^40"));
    }
}
