//! Decodes arbitrary bytes as a bus frame: must never panic, and every record
//! that decodes must re-encode into a frame that decodes to the same records.
#![no_main]

use bus::wire::{decode_frame, encode_frame, encode_record, FrameHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_frame(data) {
        let good: Vec<_> = frame.records.into_iter().filter_map(Result::ok).collect();
        let body: Vec<u8> = good.iter().flat_map(encode_record).collect();
        let header = FrameHeader { count: good.len() as u32, ..frame.header };
        let again = decode_frame(&encode_frame(&header, &body)).expect("a re-encoded frame decodes");
        assert_eq!(again.header, header);
        let again: Vec<_> = again.records.into_iter().map(|r| r.expect("a re-encoded record decodes")).collect();
        assert_eq!(again, good);
    }
});
