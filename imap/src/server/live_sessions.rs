//! A worker's table of the sessions it serves right now, for `dormouse
//! who` and `dormouse kick` (asked by the master over the worker channel).
//!
//! A session's driver notes its mailbox and IDLE state after each command
//! (a compare, and a lock only when it changed); an idle session costs
//! nothing until someone asks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::worker_report::{LiveSession, MAX_LISTED, MAX_LISTED_NAME};

/// The sessions of one worker.
#[derive(Debug, Default)]
pub struct LiveSessions {
    rows: Mutex<HashMap<u64, Arc<Row>>>,
}

#[derive(Debug)]
struct Row {
    user: String,
    peer: SocketAddr,
    tls: bool,
    since_ms: u64,
    view: Mutex<View>,
    kick: watch::Sender<bool>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct View {
    mailbox: Option<String>,
    idle: bool,
}

/// One session's row; dropping it removes the row.
#[derive(Debug)]
pub struct LiveRegistration {
    table: Arc<LiveSessions>,
    session_id: u64,
    row: Arc<Row>,
    /// What the driver last noted (to skip the lock when nothing changed).
    noted: View,
}

impl Drop for LiveRegistration {
    fn drop(&mut self) {
        let mut rows = self.table.rows();
        // A newer row for the same id (handed back to us again) stays.
        if rows.get(&self.session_id).is_some_and(|r| Arc::ptr_eq(r, &self.row)) {
            rows.remove(&self.session_id);
        }
    }
}

impl LiveRegistration {
    /// Notes the session's selected mailbox and IDLE state.
    pub fn note(&mut self, mailbox: Option<&str>, idle: bool) {
        if self.noted.mailbox.as_deref() == mailbox && self.noted.idle == idle {
            return;
        }
        self.noted = View { mailbox: mailbox.map(str::to_string), idle };
        *self.row.view.lock().unwrap_or_else(|e| e.into_inner()) = self.noted.clone();
    }

    /// Turns true when the administrator kicks the session.
    pub fn kicked(&self) -> watch::Receiver<bool> {
        self.row.kick.subscribe()
    }
}

fn cut(name: &str) -> String {
    let mut end = name.len().min(MAX_LISTED_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

impl LiveSessions {
    fn rows(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Row>>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session's row.
    pub fn register(self: &Arc<Self>, session_id: u64, user: &str, peer: SocketAddr, tls: bool) -> LiveRegistration {
        let since_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let row = Arc::new(Row {
            user: user.to_string(),
            peer,
            tls,
            since_ms,
            view: Mutex::new(View::default()),
            kick: watch::channel(false).0,
        });
        self.rows().insert(session_id, row.clone());
        LiveRegistration { table: self.clone(), session_id, row, noted: View::default() }
    }

    /// Up to [`MAX_LISTED`] of the sessions matching both filters, and how
    /// many match.
    pub fn list(&self, user: Option<&str>, peer: Option<IpAddr>) -> (Vec<LiveSession>, u64) {
        let rows = self.rows();
        let matching = || rows.iter().filter(|(_, r)| user.is_none_or(|u| r.user == u) && peer.is_none_or(|p| r.peer.ip() == p));
        let listed = matching()
            .take(MAX_LISTED)
            .map(|(id, r)| {
                let view = r.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
                LiveSession {
                    session_id: *id,
                    user: cut(&r.user),
                    peer: r.peer,
                    tls: r.tls,
                    idle: view.idle,
                    mailbox: view.mailbox.as_deref().map(cut),
                    since_ms: r.since_ms,
                }
            })
            .collect();
        (listed, matching().count() as u64)
    }

    /// Tells the sessions matching both filters to go; returns how many.
    pub fn kick(&self, user: Option<&str>, peer: Option<IpAddr>) -> u64 {
        let rows = self.rows();
        let mut count = 0;
        for r in rows.values() {
            if user.is_none_or(|u| r.user == u) && peer.is_none_or(|p| r.peer.ip() == p) && !*r.kick.borrow() {
                r.kick.send_replace(true);
                count += 1;
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_notes_kicks_and_forgets() {
        let table = Arc::new(LiveSessions::default());
        let mut a = table.register(1, "alice", "10.0.0.1:1000".parse().unwrap(), false);
        let b = table.register(2, "bob", "10.0.0.2:1000".parse().unwrap(), true);
        a.note(Some("INBOX"), true);
        assert_eq!(table.list(Some("bob"), None).0.len(), 1);
        assert_eq!(table.list(None, Some("10.0.0.3".parse().unwrap())).1, 0);
        let (mut rows, total) = table.list(None, None);
        rows.sort_by_key(|r| r.session_id);
        assert_eq!(total, 2);
        assert_eq!((rows[0].mailbox.as_deref(), rows[0].idle, rows[0].tls), (Some("INBOX"), true, false));
        assert_eq!((rows[1].user.as_str(), rows[1].mailbox.as_deref(), rows[1].tls), ("bob", None, true));

        let kicked = b.kicked();
        assert_eq!(table.kick(Some("bob"), Some("10.0.0.1".parse().unwrap())), 0);
        assert_eq!(table.kick(Some("bob"), None), 1);
        assert!(*kicked.borrow());
        assert_eq!(table.kick(Some("bob"), None), 0, "a kicked session is counted once");
        assert_eq!(table.kick(None, Some("10.0.0.1".parse().unwrap())), 1);
        drop(a);
        assert_eq!(table.list(None, None).1, 1);
        assert_eq!(cut(&"é".repeat(MAX_LISTED_NAME)).len(), MAX_LISTED_NAME);
    }
}
