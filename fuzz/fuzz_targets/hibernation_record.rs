//! Decodes arbitrary bytes as a hibernation record: must never panic, and
//! whatever decodes must re-encode to something that decodes to the same.
#![no_main]

use hibernate::record::HibernationRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = HibernationRecord::decode(data) {
        let bytes = record.encode().expect("a decoded record re-encodes");
        let again = HibernationRecord::decode(&bytes).expect("a re-encoded record decodes");
        assert_eq!(again, record);
    }
});
