//! Delivery of one message to one user: the logic LMTP and `dormouse deliver`
//! share (recipient resolution, size limit, trace headers, mailbox fallback,
//! error classification).
//!
//! A delivery returns only after the store has fsynced the message file, its
//! directory and the uidlist ([`storage_hooks::UserStore::append`]), and the
//! store's hooks have seen exactly one `MessageNew` event.
//!
//! An unknown or invalid target mailbox falls back to INBOX, like
//! `dovecot-lda -m` without `lda_mailbox_autocreate`: mail is never refused
//! because of a filing preference.

use std::sync::Arc;

use storage_hooks::{AppendKind, AppendOptions, AppendResult, Hooks, IncomingMessage, StoreError, UserStore};

use crate::auth::{UserDb, UserRecord};

/// The mailbox deliveries go to unless told otherwise.
pub const INBOX: &str = "INBOX";

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the message.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The message is empty or otherwise unacceptable to the store.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The store failed; the message was not stored. Retrying later is safe.
    #[error("storage failure: {0}")]
    Storage(#[source] StoreError),
}

impl DeliveryError {
    /// True if the sender should retry later (4xx / EX_TEMPFAIL). Every
    /// storage failure except a refused message counts as temporary, so a
    /// broken disk or a corrupt index delays mail instead of bouncing it.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DeliveryError::Storage(_))
    }
}

/// Information for the `Received:` trace header an LMTP delivery adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedFrom {
    /// The name the client gave in LHLO.
    pub helo: String,
    /// The client's address (IP or `unix`).
    pub peer: String,
    /// The protocol, e.g. `LMTP`.
    pub protocol: &'static str,
    /// Our host name.
    pub by: String,
    /// A transaction id for cross-referencing logs.
    pub id: String,
}

/// Envelope data turned into trace headers at the top of the stored message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    /// Envelope sender: `Some("")` for the null sender `<>`; `None` adds no
    /// `Return-Path:`.
    pub return_path: Option<String>,
    /// Envelope recipient for `Delivered-To:`; `None` adds none.
    pub delivered_to: Option<String>,
    /// `Received:` header data; `None` adds none.
    pub received: Option<ReceivedFrom>,
}

/// Replaces characters that could break or inject header lines.
fn header_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

impl TraceHeaders {
    /// The header block (CRLF line endings), possibly empty.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(rp) = &self.return_path {
            out.push_str(&format!("Return-Path: <{}>\r\n", header_safe(rp)));
        }
        if let Some(to) = &self.delivered_to {
            out.push_str(&format!("Delivered-To: {}\r\n", header_safe(to)));
        }
        if let Some(r) = &self.received {
            out.push_str(&format!(
                "Received: from {} ({})\r\n\tby {} (dormouse) with {} id {}",
                header_safe(&r.helo),
                header_safe(&r.peer),
                header_safe(&r.by),
                r.protocol,
                header_safe(&r.id)
            ));
            if let Some(to) = &self.delivered_to {
                out.push_str(&format!("\r\n\tfor <{}>", header_safe(to)));
            }
            out.push_str(&format!("; {}\r\n", chrono::Local::now().to_rfc2822()));
        }
        out
    }
}

/// Where a message ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The mailbox it was stored in.
    pub mailbox: String,
    /// True if the requested mailbox did not exist and INBOX was used.
    pub fell_back_to_inbox: bool,
    /// The mailbox's UIDVALIDITY.
    pub uidvalidity: u32,
    /// The message's UID.
    pub uid: u32,
}

/// Delivers messages into users' Maildirs. Cheap to clone; shareable
/// between threads.
#[derive(Debug, Clone)]
pub struct Deliverer {
    users: Arc<UserDb>,
    hooks: Hooks,
    max_message_size: u64,
}

impl Deliverer {
    /// A deliverer over `users`, calling `hooks` after each delivery, refusing
    /// messages above `max_message_size` bytes.
    pub fn new(users: Arc<UserDb>, hooks: Hooks, max_message_size: u64) -> Self {
        Deliverer { users, hooks, max_message_size }
    }

    /// The user database.
    pub fn users(&self) -> &UserDb {
        &self.users
    }

    /// The size limit in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    /// Maps an envelope recipient to a user: `local+detail@domain` is looked
    /// up as `local@domain`, then (if `domains` is empty or contains the
    /// domain, case-insensitively) as `local`; each name is tried as given
    /// and then in lower case. A bare `local` (no `@`) is looked up directly.
    pub fn resolve_recipient(&self, address: &str, domains: &[String]) -> Option<UserRecord> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = match address.rsplit_once('@') {
            Some((l, d)) => (l, Some(d)),
            None => (address, None),
        };
        let local = local.split_once('+').map_or(local, |(user, _detail)| user);
        if local.is_empty() {
            return None;
        }
        let mut candidates = Vec::with_capacity(4);
        if let Some(domain) = domain {
            candidates.push(format!("{local}@{domain}"));
            if !domains.is_empty() && !domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
                return self.lookup_any(&candidates);
            }
        }
        candidates.push(local.to_string());
        self.lookup_any(&candidates)
    }

    fn lookup_any(&self, names: &[String]) -> Option<UserRecord> {
        names.iter().find_map(|n| {
            self.users.lookup(n).or_else(|| {
                let lower = n.to_lowercase();
                (lower != *n).then(|| self.users.lookup(&lower)).flatten()
            })
        })
    }

    /// Stores `message` (with `trace` headers prepended) in `mailbox` of
    /// `user`, falling back to INBOX if that mailbox does not exist. Returns
    /// after the message is durable. Blocking: call from a blocking thread.
    ///
    /// # Errors
    /// [`DeliveryError::TooLarge`], [`DeliveryError::InvalidMessage`] (empty),
    /// [`DeliveryError::Storage`] (temporary).
    pub fn deliver(
        &self,
        user: &UserRecord,
        mailbox: &str,
        message: &[u8],
        trace: &TraceHeaders,
    ) -> Result<Delivered, DeliveryError> {
        let size = message.len() as u64;
        if size > self.max_message_size {
            return Err(DeliveryError::TooLarge { size, limit: self.max_message_size });
        }
        if message.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(DeliveryError::InvalidMessage("empty message".into()));
        }
        let headers = trace.render();
        let mut full;
        let raw = if headers.is_empty() {
            message
        } else {
            full = Vec::with_capacity(headers.len() + message.len());
            full.extend_from_slice(headers.as_bytes());
            full.extend_from_slice(message);
            &full[..]
        };
        let store = self.open_store(user).map_err(classify)?;
        let opts = AppendOptions { kind: AppendKind::Delivery, ..AppendOptions::default() };
        self.with_inbox_fallback(user, mailbox, |target| store.append(target, raw, &opts))
    }

    /// Opens `user`'s store with this deliverer's hooks (e.g. to create an
    /// [`IncomingMessage`] for [`Deliverer::deliver_incoming`]).
    ///
    /// # Errors
    /// I/O errors creating the Maildir.
    pub fn open_store(&self, user: &UserRecord) -> Result<UserStore, StoreError> {
        UserStore::open(&user.name, &user.maildir, self.hooks.clone())
    }

    /// Like [`Deliverer::deliver`] for a message already written to disk
    /// while it arrived (trace headers included, before its
    /// [`IncomingMessage::mark_body_start`]); the size limit and the empty
    /// check apply to the body. Blocking: call from a blocking thread.
    ///
    /// # Errors
    /// As [`Deliverer::deliver`].
    pub fn deliver_incoming(
        &self,
        user: &UserRecord,
        mailbox: &str,
        message: &mut IncomingMessage,
    ) -> Result<Delivered, DeliveryError> {
        let size = message.body_size();
        if size > self.max_message_size {
            return Err(DeliveryError::TooLarge { size, limit: self.max_message_size });
        }
        if message.body_is_blank() {
            return Err(DeliveryError::InvalidMessage("empty message".into()));
        }
        let store = self.open_store(user).map_err(classify)?;
        let opts = AppendOptions { kind: AppendKind::Delivery, ..AppendOptions::default() };
        self.with_inbox_fallback(user, mailbox, |target| store.append_incoming(target, message, &opts))
    }

    /// Runs `append` on `mailbox`, and on INBOX if that mailbox does not exist.
    fn with_inbox_fallback(
        &self,
        user: &UserRecord,
        mailbox: &str,
        mut append: impl FnMut(&str) -> Result<AppendResult, StoreError>,
    ) -> Result<Delivered, DeliveryError> {
        let target = if mailbox.is_empty() { INBOX } else { mailbox };
        match append(target) {
            Ok(r) => Ok(Delivered {
                mailbox: target.to_string(),
                fell_back_to_inbox: false,
                uidvalidity: r.uidvalidity,
                uid: r.uid,
            }),
            Err(StoreError::NoSuchMailbox(_) | StoreError::InvalidMailboxName { .. })
                if !target.eq_ignore_ascii_case(INBOX) =>
            {
                tracing::info!(user = %user.name, mailbox = %target, "mailbox does not exist; delivering to INBOX");
                let r = append(INBOX).map_err(classify)?;
                Ok(Delivered { mailbox: INBOX.into(), fell_back_to_inbox: true, uidvalidity: r.uidvalidity, uid: r.uid })
            }
            Err(e) => Err(classify(e)),
        }
    }
}

fn classify(e: StoreError) -> DeliveryError {
    match e {
        StoreError::InvalidMessage(why) => DeliveryError::InvalidMessage(why.to_string()),
        other => DeliveryError::Storage(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::MailLocation;
    use storage_hooks::{CollectingHook, EventKind};

    fn setup(passwd: &str) -> (tempfile::TempDir, Deliverer, Arc<CollectingHook>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, passwd.replace("$D", dir.path().to_str().unwrap())).unwrap();
        let users = Arc::new(UserDb::open(&path, MailLocation::parse("%h/Maildir").unwrap()).unwrap());
        let hook = CollectingHook::new();
        let d = Deliverer::new(users, Hooks::new().with(hook.clone()), 1000);
        (dir, d, hook)
    }

    const PASSWD: &str = "alice:{PLAIN}x::::$D/alice::\nbob@ex.org:{PLAIN}x::::$D/bob::\nalice:{PLAIN}x::::$D/alice::\n";

    #[test]
    fn resolves_recipients() {
        let (_dir, d, _) = setup(PASSWD);
        let none: &[String] = &[];
        let name = |a: &str, doms: &[String]| d.resolve_recipient(a, doms).map(|u| u.name);
        assert_eq!(name("alice", none).as_deref(), Some("alice"));
        assert_eq!(name("<Alice+lists@any.where>", none).as_deref(), Some("alice"));
        assert_eq!(name("bob@ex.org", none).as_deref(), Some("bob@ex.org"));
        assert_eq!(name("bob+x@EX.org", none).as_deref(), Some("bob@ex.org"));
        assert_eq!(name("bob@ex.org", &["other.org".into()]).as_deref(), Some("bob@ex.org"));
        assert_eq!(name("alice@other.org", &["ex.org".into()]), None);
        assert_eq!(name("alice@EX.ORG", &["ex.org".into()]).as_deref(), Some("alice"));
        assert_eq!(name("carol@ex.org", none), None);
        assert_eq!(name("+x@ex.org", none), None);
        assert_eq!(name("", none), None);
    }

    #[test]
    fn trace_headers_are_sanitized() {
        let t = TraceHeaders {
            return_path: Some("a@b\r\nX-Evil: 1".into()),
            delivered_to: Some("c@d".into()),
            received: Some(ReceivedFrom {
                helo: "mx".into(),
                peer: "127.0.0.1".into(),
                protocol: "LMTP",
                by: "host".into(),
                id: "abc".into(),
            }),
        };
        let h = t.render();
        assert!(h.starts_with("Return-Path: <a@b??X-Evil: 1>\r\nDelivered-To: c@d\r\nReceived: from mx (127.0.0.1)\r\n\tby host (dormouse) with LMTP id abc\r\n\tfor <c@d>; "));
        assert!(h.ends_with("\r\n"));
        assert_eq!(h.matches("\r\n").count(), 5);
        assert_eq!(TraceHeaders::default().render(), "");
    }

    #[test]
    fn refuses_oversized_and_empty_messages_without_storing() {
        let (_dir, d, hook) = setup(PASSWD);
        let alice = d.users().lookup("alice").unwrap();
        let big = vec![b'a'; 1001];
        assert!(matches!(
            d.deliver(&alice, INBOX, &big, &TraceHeaders::default()),
            Err(DeliveryError::TooLarge { size: 1001, limit: 1000 })
        ));
        let e = d.deliver(&alice, INBOX, b"\r\n \n", &TraceHeaders::default()).unwrap_err();
        assert!(matches!(e, DeliveryError::InvalidMessage(_)) && !e.is_temporary());
        assert!(hook.is_empty());
    }

    #[test]
    fn delivers_once_with_one_event_and_falls_back_to_inbox() {
        let (_dir, d, hook) = setup(PASSWD);
        let alice = d.users().lookup("alice").unwrap();
        let trace = TraceHeaders { return_path: Some("s@x".into()), delivered_to: Some("alice@y".into()), received: None };
        let first = d.deliver(&alice, INBOX, b"Subject: hi\n\nbody\n", &trace).unwrap();
        assert_eq!((first.mailbox.as_str(), first.fell_back_to_inbox), (INBOX, false));
        let events = hook.take();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::MessageNew);
        assert_eq!(events[0].user, "alice");
        assert!(events[0].uids.contains(first.uid));

        let second = d.deliver(&alice, "No/Such", b"Subject: 2\r\n\r\nx\r\n", &TraceHeaders::default()).unwrap();
        assert!(second.fell_back_to_inbox);
        assert_eq!(second.mailbox, INBOX);
        assert!(second.uid > first.uid);
        assert_eq!(hook.take().len(), 1);

        let store = UserStore::open("alice", &alice.maildir, Hooks::new()).unwrap();
        let mbox = store.open_mailbox(INBOX).unwrap();
        let raw = mbox.read_message(first.uid).unwrap();
        assert_eq!(raw, b"Return-Path: <s@x>\r\nDelivered-To: alice@y\r\nSubject: hi\r\n\r\nbody\r\n");
    }
}
