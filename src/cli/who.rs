//! `dormouse who` and `dormouse kick`: every session of the running server,
//! from the master's control socket (pre-login, live in a worker) and the
//! hibernate processes' sockets (hibernated).

use std::net::IpAddr;

use anyhow::Context;
use clap::Args;
use hibernate::driver::control::{query, ControlReply, ControlRequest};
use imap::server::admin::{self, AdminReply, AdminRequest, SessionFilter};

use crate::config::Config;

/// Arguments of `dormouse who`.
#[derive(Debug, Args)]
pub struct WhoArgs {
    /// Only this user's sessions.
    #[arg(long)]
    pub user: Option<String>,
    /// Only sessions from this client address.
    #[arg(long)]
    pub peer: Option<IpAddr>,
}

/// Arguments of `dormouse kick`.
#[derive(Debug, Args)]
pub struct KickArgs {
    /// Disconnect this user's sessions.
    #[arg(required_unless_present = "peer")]
    pub user: Option<String>,
    /// Only sessions from this client address (alone: also pre-login ones).
    #[arg(long)]
    pub peer: Option<IpAddr>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct Line {
    user: String,
    peer: String,
    tls: bool,
    state: &'static str,
    mailbox: String,
    since_ms: u64,
    process: String,
}

fn print_lines(lines: &[Line]) {
    let now = now_ms();
    println!("{:<24} {:<22} {:<3} {:<11} {:<20} {:<9} process", "user", "peer", "tls", "state", "mailbox", "since");
    for l in lines {
        let since = format!("{}s ago", now.saturating_sub(l.since_ms) / 1000);
        let tls = if l.tls { "yes" } else { "no" };
        println!("{:<24} {:<22} {:<3} {:<11} {:<20} {since:<9} {}", l.user, l.peer, tls, l.state, l.mailbox, l.process);
    }
}

/// Hibernate sockets with the process's index and pid (from its stats).
fn hibernate_processes(config: &Config) -> Vec<(std::path::PathBuf, String)> {
    super::hibernate::sockets(&config.run_dir())
        .into_iter()
        .filter_map(|path| match query(&path, ControlRequest::Stats) {
            Ok(ControlReply::Stats { pid, index, .. }) => Some((path, format!("hibernate {index} (pid {pid})"))),
            _ => None,
        })
        .collect()
}

fn ask_master(config: &Config, request: &AdminRequest) -> anyhow::Result<AdminReply> {
    let path = config.run_dir().join(admin::ADMIN_SOCKET);
    admin::query(&path, request).with_context(|| format!("the IMAP master does not answer on {}", path.display()))
}

fn warn_silent(silent_workers: u32) {
    if silent_workers > 0 {
        eprintln!("dormouse: {silent_workers} IMAP worker(s) did not answer in time; their sessions are missing");
    }
}

/// `dormouse who`: every session (pre-login, live, hibernated) with its
/// user, peer, TLS, state, mailbox, since when and the process holding it.
///
/// # Errors
/// Neither the master nor any hibernate process answered.
pub fn who(config: &Config, args: &WhoArgs) -> anyhow::Result<()> {
    let filter = SessionFilter { user: args.user.clone(), peer: args.peer };
    let mut lines = Vec::new();
    let mut more = 0;
    let master = ask_master(config, &AdminRequest::Who(filter.clone()));
    match &master {
        Ok(AdminReply::Sessions { sessions, more: m, silent_workers }) => {
            more += m;
            warn_silent(*silent_workers);
            lines.extend(sessions.iter().map(|s| Line {
                user: s.user.clone().unwrap_or_else(|| "-".into()),
                peer: s.peer.to_string(),
                tls: s.tls,
                state: s.state.as_str(),
                mailbox: s.mailbox.clone().unwrap_or_else(|| "-".into()),
                since_ms: s.since_ms,
                process: if s.pid == 0 { "master".into() } else { format!("worker (pid {})", s.pid) },
            }));
        }
        Ok(other) => anyhow::bail!("unexpected answer from the IMAP master: {other:?}"),
        Err(e) => eprintln!("dormouse: {e:#}"),
    }
    let processes = hibernate_processes(config);
    for (path, process) in &processes {
        let request = ControlRequest::WhoMatching { user: filter.user.clone(), peer: filter.peer };
        let Ok(ControlReply::Who { sessions, total }) = query(path, request) else { continue };
        more += total.saturating_sub(sessions.len() as u64);
        lines.extend(sessions.into_iter().filter(|s| filter.matches(Some(&s.user), s.peer.ip())).map(|s| Line {
            user: s.user,
            peer: s.peer.to_string(),
            tls: s.tls,
            state: if s.idle { "hibernated" } else { "hib-noidle" },
            mailbox: s.mailbox.unwrap_or_else(|| "-".into()),
            since_ms: s.since_ms,
            process: process.clone(),
        }));
    }
    anyhow::ensure!(
        master.is_ok() || !processes.is_empty(),
        "no dormouse server is running (nothing answers in {})",
        config.run_dir().display()
    );
    print_lines(&lines);
    if more > 0 {
        println!("... and up to {more} more (over the listing caps; use --user or --peer)");
    }
    Ok(())
}

/// `dormouse kick USER [--peer IP]`: disconnects the matching sessions in
/// the master, the workers (after the command in progress) and the
/// hibernate processes; prints how many.
///
/// # Errors
/// Neither the master nor any hibernate process answered.
pub fn kick(config: &Config, args: &KickArgs) -> anyhow::Result<()> {
    let filter = SessionFilter { user: args.user.clone(), peer: args.peer };
    let mut count = 0;
    let mut answered = false;
    // Hibernated sessions first: one woken meanwhile lands in a worker,
    // which the master's kick reaches next.
    for path in super::hibernate::sockets(&config.run_dir()) {
        let request = ControlRequest::Kick { user: filter.user.clone(), peer: filter.peer };
        if let Ok(ControlReply::Kicked { count: n }) = query(&path, request) {
            count += n;
            answered = true;
        }
    }
    match ask_master(config, &AdminRequest::Kick(filter.clone())) {
        Ok(AdminReply::Kicked { count: n, silent_workers }) => {
            warn_silent(silent_workers);
            count += n;
            answered = true;
        }
        Ok(other) => anyhow::bail!("unexpected answer from the IMAP master: {other:?}"),
        Err(e) => eprintln!("dormouse: {e:#}"),
    }
    anyhow::ensure!(answered, "no dormouse server is running (nothing answers in {})", config.run_dir().display());
    let who = match (&filter.user, filter.peer) {
        (Some(u), Some(p)) => format!("{u} from {p}"),
        (Some(u), None) => u.clone(),
        (None, Some(p)) => format!("from {p}"),
        (None, None) => "everyone".into(),
    };
    println!("kicked {count} session(s) ({who})");
    Ok(())
}
