//! Parses arbitrary bytes as the header of a UNIX-bus interest file (written
//! by another process): never panics, and a header that parses describes a
//! bitmap whose every bit index stays inside the file.
#![no_main]

use bus::unix_dgram::interest::{parse_header, user_hash, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len_bytes, header) = data.split_at(8);
    let file_len = u64::from_le_bytes(len_bytes.try_into().unwrap()) % (1 << 26);
    if let Ok(layout) = parse_header(header, file_len) {
        assert_eq!(layout.file_len(), file_len);
        for user in ["alice", "bob", "", "ü"] {
            assert!(HEADER_LEN as u64 + layout.bit(user_hash(user)) / 8 < file_len, "bit outside the file");
        }
    }
});
