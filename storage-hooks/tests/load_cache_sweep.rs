//! The load cache (and SEARCH's header cache) give their memory back on
//! their own: an entry nobody uses any more is dropped by the background
//! sweep, without any further call into the store. (Its own test binary: it changes the process's limits.)

use std::time::{Duration, Instant};

use storage_hooks::load_cache::{self, Limits};
use storage_hooks::{AppendOptions, Hooks, UserStore};

#[test]
fn an_idle_entry_is_dropped_without_further_calls_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let store = UserStore::open("alice", dir.path().join("Maildir"), Hooks::new()).unwrap();
    for i in 0..3 {
        store.append("INBOX", format!("Subject: {i}\r\n\r\nbody\r\n").as_bytes(), &AppendOptions::default()).unwrap();
    }
    load_cache::configure(Limits { idle: Duration::from_secs(1), ..Limits::default() });
    let inbox = store.mailbox_path("INBOX").unwrap();
    let mut mailbox = store.open_mailbox("INBOX").unwrap();
    assert!(load_cache::is_cached(&inbox), "a load leaves its state cached");
    mailbox.cache_headers(1, vec![("subject".to_string(), "0".to_string())].into());
    assert!(mailbox.cached_headers(1).is_some());
    // No call into the store from here on: only the sweep thread can drop it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while load_cache::is_cached(&inbox) {
        assert!(Instant::now() < deadline, "an idle entry stayed cached");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(mailbox.cached_headers(1).is_none(), "SEARCH's header cache went with it");
    // Gone from memory, the mailbox reads the same from disk.
    mailbox.sync().unwrap();
    let again = store.open_mailbox("INBOX").unwrap();
    let uids = |m: &storage_hooks::Mailbox| m.messages().iter().map(|m| m.uid).collect::<Vec<_>>();
    assert_eq!(uids(&again), [1, 2, 3]);
    assert_eq!(uids(&mailbox), [1, 2, 3]);
    assert_eq!(store.status("INBOX").unwrap().messages, 3);
}
