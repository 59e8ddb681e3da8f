//! Parses arbitrary bytes as a passwd file (never panics), and checks the
//! writer: for every entry read back, and for an entry built field by field
//! from the input, either `to_line` refuses it or its line parses back to
//! exactly that one entry (no smuggled second line, nothing lost).
#![no_main]

use imap::auth::{parse_passwd, PasswdEntry, StoredPassword};
use libfuzzer_sys::fuzz_target;

fn assert_round_trip(entry: &PasswdEntry) {
    if let Ok(line) = entry.to_line() {
        assert!(!line.contains('\n'), "a written line holds a newline");
        let (entries, errors) = parse_passwd(&format!("{line}\n"));
        assert!(errors.is_empty(), "written line rejected: {errors:?}");
        assert_eq!(entries.as_slice(), std::slice::from_ref(entry), "line {line:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (entries, _errors) = parse_passwd(&text);
    for entry in &entries {
        assert_round_trip(entry);
    }
    // Fields separated by 0xFF (never valid UTF-8, so never inside a field).
    let fields: Vec<String> = data.split(|&b| b == 0xff).map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
    let entry = PasswdEntry {
        name: field(0),
        password: StoredPassword::parse(&field(1)),
        uid: number(2),
        gid: number(3),
        home: field(4),
        extra: fields.iter().skip(5).cloned().collect(),
    };
    assert_round_trip(&entry);
});
