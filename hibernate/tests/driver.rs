//! The hibernate process end to end: a real Maildir, the UNIX-datagram bus,
//! real TCP clients, and a test acting as the worker on the seqpacket socket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{BusConfig, BusPublisher, UnixPublisher};
use hibernate::core::{HandBackReason, Settings};
use hibernate::driver::channel;
use hibernate::driver::control::{self, query, ControlReply, ControlRequest};
use hibernate::driver::{run, DriverConfig};
use hibernate::record::{ClientTransport, Extensions, HibernationRecord, SelectedView};
use storage_hooks::{AppendOptions, FlagOp, Flags, Hooks, SystemFlags, UidSet, UserStore};

struct Fixture {
    _dir: tempfile::TempDir,
    maildir: PathBuf,
    socket: PathBuf,
    store: UserStore,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    worker: OwnedFd,
    listener: TcpListener,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fixture(messages: usize) -> Fixture {
    fixture_with(messages, 0)
}

fn fixture_with(messages: usize, max_sessions: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let maildir = dir.path().join("Maildir");
    let bus_cfg = BusConfig::unix_in_run_dir(&run_dir);
    let socket = run_dir.join("hibernate-0.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = DriverConfig {
        index: 0,
        socket_path: socket.clone(),
        bus: bus_cfg.clone(),
        settings: Settings { keepalive_interval: Duration::from_secs(2), ..Settings::default() },
        max_sessions,
        store_hooks: storage_hooks::Hooks::default(),
    };
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || run(cfg, stop2).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "hibernate socket did not appear");
        std::thread::sleep(Duration::from_millis(10));
    }
    let publisher = BusPublisher::Unix(UnixPublisher::open(&bus_cfg.unix).unwrap());
    let store = UserStore::open("bob", &maildir, Hooks::new().with(Arc::new(publisher))).unwrap();
    for i in 0..messages {
        store.append("INBOX", format!("Subject: m{i}\r\n\r\nbody\r\n").as_bytes(), &AppendOptions::default()).unwrap();
    }
    let worker = channel::connect(&socket).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    Fixture { _dir: dir, maildir, socket, store, stop, thread: Some(thread), worker, listener }
}

impl Fixture {
    /// Connects a client and hibernates it as the worker would.
    fn hibernate(&self, idle: bool, qresync: bool, pending: &[u8]) -> TcpStream {
        self.hibernate_via(self.worker.as_fd(), 7, idle, qresync, pending)
    }

    /// Like [`Fixture::hibernate`], from `worker` with session id `id`.
    fn hibernate_via(&self, worker: std::os::fd::BorrowedFd<'_>, id: u64, idle: bool, qresync: bool, pending: &[u8]) -> TcpStream {
        let client = TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (server_side, peer) = self.listener.accept().unwrap();
        let status = self.store.status("INBOX").unwrap();
        let mb = self.store.open_mailbox("INBOX").unwrap();
        let record = HibernationRecord {
            session_id: id,
            user: "bob".into(),
            maildir: self.maildir.clone(),
            peer,
            local: self.listener.local_addr().unwrap(),
            transport: ClientTransport::PlainTcp,
            authenticated_at_ms: 0,
            enabled: Extensions { condstore: qresync, qresync },
            idle_tag: idle.then(|| "A1".to_string()),
            selected: Some(SelectedView {
                mailbox: "INBOX".into(),
                read_only: false,
                uidvalidity: status.uidvalidity,
                uids: mb.messages().iter().map(|m| m.uid).collect(),
                highest_modseq_seen: status.highestmodseq,
            }),
            pending_input: pending.to_vec(),
            tls: None,
            notify: None,
            deflate: None,
        };
        channel::send(worker, &record.encode().unwrap(), Some(server_side.as_fd())).unwrap();
        client
    }

    fn stats(&self) -> hibernate::core::Counters {
        match query(&self.socket, ControlRequest::Stats).unwrap() {
            ControlReply::Stats { counters, .. } => counters,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn wait_held(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.stats().held != n {
            assert!(Instant::now() < deadline, "held never became {n}: {:?}", self.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a hand-back on the worker channel.
    fn hand_back(&self) -> (HibernationRecord, OwnedFd) {
        channel::set_nonblocking(&self.worker, false).unwrap();
        let mut buf = vec![0u8; channel::MAX_MESSAGE];
        let m = channel::recv(self.worker.as_fd(), &mut buf).unwrap();
        (HibernationRecord::decode(&buf[..m.len]).unwrap(), m.fd.expect("descriptor"))
    }
}

/// Reads until `want` has arrived (or fails after the read timeout).
fn read_until(client: &mut TcpStream, want: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let keepalive = "* OK Still here\r\n";
    let text = |got: &[u8]| {
        let t = String::from_utf8_lossy(got).into_owned();
        if want.contains("Still here") { t } else { t.replace(keepalive, "") }
    };
    while !text(&got).contains(want) {
        let n = client.read(&mut buf).unwrap_or_else(|e| panic!("waiting for {want:?}, got {:?}: {e}", text(&got)));
        assert!(n > 0, "EOF waiting for {want:?}, got {:?}", text(&got));
        got.extend_from_slice(&buf[..n]);
    }
    text(&got)
}

fn open_inbox(maildir: &Path) -> storage_hooks::Mailbox {
    UserStore::open("bob", maildir, Hooks::default()).unwrap().open_mailbox("INBOX").unwrap()
}

#[test]
fn delivery_expunge_and_flags_reach_a_hibernated_idle_client() {
    let f = fixture(3);
    let mut client = f.hibernate(true, false, b"");
    f.wait_held(1);
    f.store.append("INBOX", b"Subject: new\r\n\r\nhi\r\n", &AppendOptions::default()).unwrap();
    assert_eq!(read_until(&mut client, "EXISTS\r\n"), "* 4 EXISTS\r\n");
    // Another session (with the bus hook) expunges UID 2 and flags UID 3.
    let mut mb = f.store.open_mailbox("INBOX").unwrap();
    mb.store_flags(&UidSet::from_range(3, 3), FlagOp::Add, &Flags::system(SystemFlags::FLAGGED), None).unwrap();
    assert_eq!(read_until(&mut client, "\r\n"), "* 3 FETCH (UID 3 FLAGS (\\Flagged))\r\n");
    mb.store_flags(&UidSet::from_range(2, 2), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None).unwrap();
    assert_eq!(read_until(&mut client, "\r\n"), "* 2 FETCH (UID 2 FLAGS (\\Deleted))\r\n");
    assert_eq!(mb.expunge(Some(&UidSet::from_range(2, 2))).unwrap(), vec![2]);
    assert_eq!(read_until(&mut client, "\r\n"), "* 2 EXPUNGE\r\n");
    let before = f.stats();
    // STATUS needs no hand-back; the DONE + FETCH in one packet does.
    client.write_all(b"DONE\r\nA2 STATUS INBOX (MESSAGES UIDNEXT)\r\nA3 UID FETCH 1:* (FLAGS)\r\n").unwrap();
    let text = read_until(&mut client, "A2 OK");
    assert!(text.starts_with("A1 OK Idle completed.\r\n* STATUS \"INBOX\" (MESSAGES 3 UIDNEXT 5)\r\nA2 OK Status completed."), "{text}");
    let (record, _fd) = f.hand_back();
    assert_eq!(record.pending_input, b"A3 UID FETCH 1:* (FLAGS)\r\n");
    assert_eq!(record.selected.as_ref().unwrap().uids.to_imap_string(), "1,3:4");
    assert_eq!(record.idle_tag, None);
    let after = f.stats();
    assert_eq!(after.held, 0);
    assert_eq!(after.hand_backs_for(HandBackReason::Command), before.hand_backs_for(HandBackReason::Command) + 1);
    assert_eq!(after.status_from_cache, before.status_from_cache + 1);
    assert!(after.notifications >= 3);
    let _ = open_inbox(&f.maildir);
}

#[test]
fn noop_status_logout_without_a_worker_and_keepalive() {
    let f = fixture(2);
    let mut client = f.hibernate(false, false, b"");
    f.wait_held(1);
    client.write_all(b"a1 NOOP\r\n").unwrap();
    assert_eq!(read_until(&mut client, "a1 OK"), "a1 OK NOOP completed.\r\n");
    f.store.append("INBOX", b"Subject: new\r\n\r\nhi\r\n", &AppendOptions::default()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    client.write_all(b"a2 IDLE\r\n").unwrap();
    assert_eq!(read_until(&mut client, "idling\r\n"), "* 3 EXISTS\r\n+ idling\r\n");
    assert_eq!(read_until(&mut client, "Still here\r\n"), "* OK Still here\r\n");
    client.write_all(b"DONE\r\na3 LOGOUT\r\n").unwrap();
    let text = read_until(&mut client, "a3 OK");
    assert_eq!(text, "a2 OK Idle completed.\r\n* BYE Logging out.\r\na3 OK Logout completed.\r\n");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    f.wait_held(0);
    assert_eq!(f.stats().hand_backs_total(), 0);
}

#[test]
fn many_sessions_hibernate_and_are_released_when_clients_leave() {
    let f = fixture(5);
    let clients: Vec<TcpStream> = (0..300).map(|i| f.hibernate(i % 2 == 0, i % 3 == 0, b"")).collect();
    f.wait_held(300);
    match query(&f.socket, ControlRequest::Who).unwrap() {
        ControlReply::Who { total, sessions } => {
            assert_eq!(total, 300);
            assert!(sessions.iter().all(|s| s.user == "bob" && s.mailbox.as_deref() == Some("INBOX")));
        }
        other => panic!("{other:?}"),
    }
    let matching = |user: &str, peer: &str| {
        let request = ControlRequest::WhoMatching { user: Some(user.into()), peer: Some(peer.parse().unwrap()) };
        match query(&f.socket, request).unwrap() {
            ControlReply::Who { total, sessions } => (total, sessions.len()),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(matching("bob", "127.0.0.1"), (300, 300));
    assert_eq!(matching("alice", "127.0.0.1"), (0, 0));
    assert_eq!(matching("bob", "192.0.2.1"), (0, 0));
    drop(clients);
    f.wait_held(0);
    assert_eq!(f.stats().ended, 300);
}

#[test]
fn client_gone_while_being_handed_back_is_not_lost_input() {
    let f = fixture(1);
    let mut client = f.hibernate(true, false, b"DONE\r\nA2 UID FETCH 1:* (FLAGS)\r\n");
    let (record, fd) = f.hand_back();
    assert_eq!(record.pending_input, b"A2 UID FETCH 1:* (FLAGS)\r\n");
    assert_eq!(read_until(&mut client, "A1 OK"), "A1 OK Idle completed.\r\n");
    drop(client);
    // The worker sees the EOF on the descriptor it got back.
    let mut s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
}

#[test]
fn a_full_process_sends_sessions_straight_back() {
    let f = fixture_with(1, 1);
    let _first = f.hibernate(true, false, b"");
    f.wait_held(1);
    let _second = f.hibernate(false, false, b"A7 NOOP\r\n");
    // First the notice that this process is full, then the session itself.
    channel::set_nonblocking(&f.worker, false).unwrap();
    let mut buf = vec![0u8; channel::MAX_MESSAGE];
    let m = channel::recv(f.worker.as_fd(), &mut buf).unwrap();
    assert!(m.fd.is_none());
    assert_eq!(control::decode::<ControlReply>(&buf[..m.len]).unwrap(), ControlReply::Full { index: 0 });
    let (record, _fd) = f.hand_back();
    assert_eq!(record.pending_input, b"A7 NOOP\r\n", "returned unchanged");
    assert_eq!(record.idle_tag, None);
    let stats = f.stats();
    assert_eq!((stats.held, stats.refused_full), (1, 1));
}

/// The next control message on `link` (an observer's), within 20 s.
fn next_notice(link: &OwnedFd) -> ControlReply {
    let mut buf = vec![0u8; channel::MAX_MESSAGE];
    let m = channel::recv(link.as_fd(), &mut buf).expect("a notice within the timeout");
    assert!(m.fd.is_none(), "an observer was handed a session");
    control::decode(&buf[..m.len]).unwrap()
}

#[test]
fn an_observer_hears_of_ended_sessions_kick_says_bye_and_hand_backs_skip_the_observer() {
    let mut f = fixture(1);
    let timeout = Some(Duration::from_secs(20));
    let observer = channel::connect(&f.socket).unwrap();
    rustix::net::sockopt::set_socket_timeout(&observer, rustix::net::sockopt::Timeout::Recv, timeout).unwrap();
    channel::send(observer.as_fd(), &control::encode(&ControlRequest::Observe), None).unwrap();
    // The fixture's worker moves behind the observer (connection slot 2;
    // slot 0 is free again for the worker that goes away below).
    let worker = channel::connect(&f.socket).unwrap();
    rustix::net::sockopt::set_socket_timeout(&worker, rustix::net::sockopt::Timeout::Recv, timeout).unwrap();
    drop(std::mem::replace(&mut f.worker, worker));
    std::thread::sleep(Duration::from_millis(100));

    let mut a = f.hibernate_via(f.worker.as_fd(), 1, false, false, b"");
    f.wait_held(1);
    a.write_all(b"a1 LOGOUT\r\n").unwrap();
    read_until(&mut a, "a1 OK");
    assert_eq!(next_notice(&observer), ControlReply::Ended { session_ids: vec![1] });

    let mut b = f.hibernate_via(f.worker.as_fd(), 2, true, false, b"");
    let mut c = f.hibernate_via(f.worker.as_fd(), 3, false, false, b"");
    f.wait_held(2);
    let kick = |user: &str, peer: Option<&str>| {
        let request = ControlRequest::Kick { user: Some(user.into()), peer: peer.map(|p| p.parse().unwrap()) };
        match query(&f.socket, request).unwrap() {
            ControlReply::Kicked { count } => count,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(kick("alice", None), 0);
    assert_eq!(kick("bob", Some("192.0.2.1")), 0);
    assert_eq!(kick("bob", Some("127.0.0.1")), 2);
    for client in [&mut b, &mut c] {
        let mut text = String::new();
        client.read_to_string(&mut text).unwrap();
        assert_eq!(text, String::from_utf8_lossy(control::KICK_BYE));
    }
    let ControlReply::Ended { mut session_ids } = next_notice(&observer) else { panic!("not an Ended notice") };
    session_ids.sort_unstable();
    assert_eq!(session_ids, vec![2, 3]);
    f.wait_held(0);

    // The session's own worker is gone: the hand-back goes to the other
    // worker, never to the observer (tried before it).
    let other = channel::connect(&f.socket).unwrap();
    let mut d = f.hibernate_via(other.as_fd(), 4, false, false, b"");
    f.wait_held(1);
    drop(other);
    std::thread::sleep(Duration::from_millis(100));
    d.write_all(b"a2 UID FETCH 1:* (FLAGS)\r\n").unwrap();
    let (record, _fd) = f.hand_back();
    assert_eq!(record.session_id, 4);
    match query(&f.socket, ControlRequest::Stats).unwrap() {
        // The fixture's worker and this query's own connection; not the observer.
        ControlReply::Stats { workers, .. } => assert_eq!(workers, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hand_backs_go_only_to_registered_workers_never_to_a_control_client() {
    let mut f = fixture(1);
    // A control client (as `dormouse stats` is) connected before the
    // worker and idle: it takes connection slot 1.
    let control_client = channel::connect(&f.socket).unwrap();
    // The fixture's worker moves to slot 2 and says it is one.
    let worker = channel::connect(&f.socket).unwrap();
    channel::send(worker.as_fd(), &control::encode(&ControlRequest::Register), None).unwrap();
    drop(std::mem::replace(&mut f.worker, worker));
    std::thread::sleep(Duration::from_millis(100));
    // Parked by a worker that then goes away (slot 0).
    let gone = channel::connect(&f.socket).unwrap();
    let mut client = f.hibernate_via(gone.as_fd(), 9, false, false, b"");
    f.wait_held(1);
    drop(gone);
    std::thread::sleep(Duration::from_millis(100));
    client.write_all(b"a1 UID FETCH 1:* (FLAGS)\r\n").unwrap();
    // Tried in slot order after the session's own: the control client is skipped.
    let (record, _fd) = f.hand_back();
    assert_eq!(record.session_id, 9);
    channel::set_nonblocking(&control_client, true).unwrap();
    let mut buf = vec![0u8; channel::MAX_MESSAGE];
    assert!(channel::recv(control_client.as_fd(), &mut buf).is_err(), "the control client got a message");
}
