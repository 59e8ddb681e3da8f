//! The processes `serve` starts (IMAP workers, hibernate processes) stop
//! when the master is gone, and only then: they watch an inherited pipe
//! whose write end only the master holds, not a per-thread parent-death
//! signal (which fires when the master *thread* that forked them exits).

mod imap_support;

use std::time::{Duration, Instant};

use imap_support::{Conn, Server, ServerOptions};

fn server() -> Server {
    Server::start(ServerOptions {
        // The burst logs in faster than ended sessions are counted down.
        imap_extra: "max_sessions_per_user = 10000\nmax_connections_per_ip = 10000\n".into(),
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 1\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    })
}

/// Pids of every live (non-zombie) process whose command line mentions the
/// server's directory and `role` (`worker`, `hibernate`).
fn children(server: &Server, role: &str) -> Vec<u32> {
    let dir = server.dir.path().to_str().unwrap().to_string();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| alive(*p))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0).any(|a| a == role.as_bytes()) && String::from_utf8_lossy(&c).contains(&dir)
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\nhello\r\n").into_bytes()
}

/// 50 clients logging in and out for `length`, each at least 3 times (a
/// loaded machine may need longer than `length` for that).
fn login_burst(port: u16, length: Duration) -> usize {
    let end = Instant::now() + length;
    let threads: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut logins = 0;
                while Instant::now() < end || logins < 3 {
                    let mut c = Conn::open(port);
                    let lines = c.cmd("a", "LOGIN bob secret-b");
                    assert!(lines.last().unwrap().starts_with("a OK"), "{lines:?}");
                    c.cmd("b", "LOGOUT");
                    logins += 1;
                }
                logins
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

#[test]
fn hibernated_sessions_and_children_survive_a_login_burst_and_the_thread_keep_alive() {
    let server = server();
    server.deliver("alice", &message("one"));
    let mut idlers: Vec<Conn> = (0..3)
        .map(|i| {
            let mut c = Conn::open(server.imap);
            c.cmd(&format!("l{i}"), "LOGIN alice secret-a");
            c.cmd(&format!("s{i}"), "SELECT INBOX");
            c.send(format!("i{i} IDLE\r\n").as_bytes());
            assert!(c.line().starts_with("+ "));
            c
        })
        .collect();
    server.wait_held(3);
    let (workers, hibernate) = (children(&server, "worker"), children(&server, "hibernate"));
    assert_eq!((workers.len(), hibernate.len()), (2, 1), "{workers:?} {hibernate:?}");

    let logins = login_burst(server.imap, Duration::from_secs(3));
    assert!(logins >= 150, "{logins} logins");
    eprintln!("{logins} logins in the burst");
    // Past tokio's blocking-pool keep-alive (10 s): threads the burst made
    // the master start have exited by now.
    std::thread::sleep(Duration::from_secs(13));

    assert_eq!(children(&server, "worker"), workers, "worker restarted; log:\n{}", server.log_text());
    assert_eq!(children(&server, "hibernate"), hibernate, "hibernate restarted; log:\n{}", server.log_text());
    assert_eq!(server.stat("sessions held"), 3, "log:\n{}", server.log_text());
    server.deliver("alice", &message("two"));
    for c in &mut idlers {
        assert_eq!(c.line().trim_end(), "* 2 EXISTS");
    }
    let log = server.log_text();
    assert!(!log.contains("hibernate process died") && !log.contains("IMAP worker exited"), "{log}");
}

#[test]
fn children_exit_soon_after_the_master_is_killed() {
    let server = server();
    let (workers, hibernate) = (children(&server, "worker"), children(&server, "hibernate"));
    assert_eq!((workers.len(), hibernate.len()), (2, 1), "{workers:?} {hibernate:?}");
    let status = std::process::Command::new("kill").args(["-KILL", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(5);
    let all: Vec<u32> = workers.iter().chain(&hibernate).copied().collect();
    while all.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "children still running 5 s after the master died: {:?}", {
            all.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("children gone {:?} after the master's SIGKILL", killed.elapsed());
}

/// `dormouse hibernate` started from a thread that exits at once, with a
/// pipe as its lifeline (as `serve` starts it): it keeps running while the
/// write end is open, and stops by itself when the write end closes.
#[test]
fn a_hibernate_process_outlives_the_thread_that_forked_it_but_not_its_lifeline() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = imap_support::write_one_worker_config(dir.path(), "");
    std::fs::create_dir_all(dir.path().join("data/run")).unwrap();
    std::fs::write(dir.path().join("data/passwd"), "").unwrap();
    let (read, write) = std::io::pipe().unwrap();
    let log = dir.path().join("hibernate.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let socket = dir.path().join("data/run/hibernate-0.sock");
    let log_path = log.clone();
    // The forking thread lives until the process is ready (has set up its
    // parent watch), then exits.
    let mut child = std::thread::spawn(move || {
        let mut child = std::process::Command::new(imap_support::dormouse())
            .args(["--config", config.to_str().unwrap(), "hibernate", "--index", "0"])
            .stdin(read)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            let log = std::fs::read_to_string(&log_path).unwrap();
            assert!(child.try_wait().unwrap().is_none(), "exited early: {log}");
            assert!(Instant::now() < deadline, "no socket: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "died with its forking thread: {}", std::fs::read_to_string(&log).unwrap());

    drop(write);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 5 s after its lifeline closed");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("master process is gone"), "{log}");
}
