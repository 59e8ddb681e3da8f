//! The session state machine: framing, decoding, dispatch, timeouts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use imap_codec::decode::Decoder;
use imap_codec::{AuthenticateDataCodec, CommandCodec, IdleDoneCodec};
use imap_types::command::{Command, CommandBody};
use storage_hooks::{Hooks, IncomingMessage, MailboxEvent, StoreError, UserStore};

use super::framer::{Frame, Framer};
use super::selected::Selected;
use super::{Authenticator, EnabledExtensions, HandOver, SessionEvent, SessionOptions};

/// Errors creating a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The user's store could not be opened.
    #[error("cannot open mail store: {0}")]
    Store(#[from] StoreError),
}

/// Protocol phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before LOGIN / AUTHENTICATE.
    NotAuthenticated,
    /// Waiting for the client's SASL PLAIN response line (tag kept).
    SaslResponse(String),
    /// Logged in (a mailbox may be selected, see `Session::selected`).
    Authenticated,
    /// Inside IDLE (tag kept); input is expected to be `DONE`.
    Idle(String),
    /// Logged out or closed; nothing more is processed.
    Closed,
    /// Master mode: handed over to a worker; nothing more is processed.
    HandedOver,
    /// Deferred login (tag kept): the driver is checking the credentials;
    /// input waits until [`Session::login_verified`].
    Verifying(String),
}

/// One IMAP connection's protocol state (see the module docs).
pub struct Session {
    pub(crate) options: SessionOptions,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) hooks: Hooks,
    pub(crate) framer: Framer,
    pub(crate) phase: Phase,
    pub(crate) store: Option<UserStore>,
    pub(crate) selected: Option<Selected>,
    pub(crate) enabled: EnabledExtensions,
    /// Bytes to output at the next `next` call.
    pub(crate) out: Vec<u8>,
    /// Events to return after `out` is flushed.
    pub(crate) after: VecDeque<SessionEvent>,
    /// A change event arrived for the selected mailbox since the last sync.
    pub(crate) changes_pending: bool,
    pub(crate) last_activity: Instant,
    pub(crate) idle_since: Instant,
    pub(crate) auth_failures: u32,
    /// ESEARCH options of the command being executed (`SEARCH RETURN`).
    pub(crate) search_return: Option<crate::op::esearch::ReturnOptions>,
    /// The sort program or thread algorithm of the SORT / THREAD being
    /// executed (decoded as a SEARCH).
    pub(crate) ordering: Option<crate::op::sort_syntax::Ordering>,
    /// A FETCH whose responses are produced over several `next` calls.
    pub(crate) fetch_job: Option<Box<crate::op::fetch::FetchJob>>,
    /// The message literals of the APPEND being read, one entry per message
    /// in order (MULTIAPPEND sends several): a literal written to the
    /// user's INBOX `tmp/` as it arrived (or why that failed), or `None`
    /// for one read into memory (empty, or not logged in). Taken by
    /// `op_append`; dropped (files removed) after any other command.
    pub(crate) append_bodies: Vec<Option<Result<IncomingMessage, StoreError>>>,
    /// The wall-clock time at the session's creation instant: wall time is
    /// derived from the driver's `now` (see `Session::wall_now`).
    pub(crate) wall_anchor: (Instant, std::time::SystemTime),
    /// The NOTIFY state (RFC 5465), while NOTIFY SET is in effect.
    pub(crate) notify: Option<hibernate::notify::NotifySpec>,
    /// NOTIFY responses for other mailboxes, written between commands.
    pub(crate) notify_out: Vec<u8>,
    /// COMPRESS DEFLATE is active on the connection.
    pub(crate) compressed: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("phase", &self.phase)
            .field("user", &self.user())
            .field("selected", &self.selected_mailbox())
            .finish_non_exhaustive()
    }
}

/// Command names we know, for a clearer BAD text on syntax errors.
const KNOWN_COMMANDS: &[&str] = &[
    "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN", "SELECT", "EXAMINE", "CREATE", "DELETE",
    "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE", "EXPUNGE", "SEARCH",
    "FETCH", "STORE", "COPY", "MOVE", "UID", "IDLE", "ENABLE", "NAMESPACE", "ID", "UNSELECT", "SORT", "THREAD", "COMPRESS",
];

/// Opens `user`'s store at login and creates the configured auto mailboxes
/// that are missing. Failing to create them is logged, not fatal: the user
/// can still read mail.
pub(crate) fn open_user_store(
    options: &SessionOptions,
    user: &str,
    maildir: std::path::PathBuf,
    hooks: Hooks,
) -> Result<UserStore, storage_hooks::StoreError> {
    let store = UserStore::open(user, maildir, hooks)?;
    if !options.auto_mailboxes.is_empty() {
        match store.ensure_mailboxes(&options.auto_mailboxes) {
            Ok(created) if !created.is_empty() => tracing::info!(%user, created = %created.join(","), "created auto mailboxes"),
            Ok(_) => {}
            Err(e) => tracing::warn!(%user, error = %e, "cannot create auto mailboxes"),
        }
    }
    Ok(store)
}

impl Session {
    /// A new, not yet authenticated session. `hooks` are given to the
    /// user's store once logged in (the bus publisher, for example).
    pub fn new(options: SessionOptions, authenticator: Arc<dyn Authenticator>, hooks: Hooks, now: Instant) -> Self {
        let framer = Framer::new(options.limits.max_line);
        Session {
            options,
            authenticator,
            hooks,
            framer,
            phase: Phase::NotAuthenticated,
            store: None,
            selected: None,
            enabled: EnabledExtensions::default(),
            out: Vec::new(),
            after: VecDeque::new(),
            changes_pending: false,
            last_activity: now,
            idle_since: now,
            auth_failures: 0,
            search_return: None,
            ordering: None,
            fetch_job: None,
            append_bodies: Vec::new(),
            wall_anchor: (now, std::time::SystemTime::now()),
            notify: None,
            notify_out: Vec::new(),
            compressed: false,
        }
    }

    /// An authenticated session continuing a connection handed over by the
    /// pre-login stage: opens the user's store and queues the pending input.
    /// Sends no greeting.
    ///
    /// # Errors
    /// [`SessionError::Store`] if the Maildir cannot be opened.
    pub fn resume(
        mut options: SessionOptions,
        handover: HandOver,
        authenticator: Arc<dyn Authenticator>,
        hooks: Hooks,
        now: Instant,
    ) -> Result<Self, SessionError> {
        options.tls_active = handover.tls_active;
        options.hand_over_on_auth = false;
        let store = open_user_store(&options, &handover.user, handover.maildir, hooks.clone())?;
        let mut s = Session::new(options, authenticator, hooks, now);
        s.store = Some(store);
        s.phase = Phase::Authenticated;
        s.enabled = handover.enabled;
        s.framer.enqueue(&handover.pending_input);
        Ok(s)
    }

    /// The greeting line to send first: `* OK [CAPABILITY ...] <name> ready.`
    pub fn greeting(&self) -> Vec<u8> {
        format!("* OK [CAPABILITY {}] {} ready.\r\n", self.capabilities(), self.options.server_name).into_bytes()
    }

    /// Adds bytes received from the client.
    pub fn enqueue_input(&mut self, bytes: &[u8]) {
        self.framer.enqueue(bytes);
    }

    /// The driver finished the TLS handshake after [`SessionEvent::StartTls`].
    pub fn tls_started(&mut self) {
        self.options.tls_active = true;
    }

    /// Tells the session about a change in the user's store (from the bus or
    /// a [`storage_hooks::CollectingHook`]). Changes to the selected mailbox
    /// are reported at once while idling, otherwise with the next command.
    pub fn on_mailbox_event(&mut self, event: &MailboxEvent) {
        self.notify_on_event(event);
        let Some(sel) = &self.selected else { return };
        let mine = self.store.as_ref().is_some_and(|s| s.user() == event.user);
        if mine && (event.mailbox == sel.name() || event.old_mailbox.as_deref() == Some(sel.name())) {
            use storage_hooks::EventKind::{FlagsClear, FlagsSet, MessageAppend, MessageExpunge, MessageNew};
            let message_level = matches!(event.kind, MessageNew | MessageAppend | MessageExpunge | FlagsSet | FlagsClear);
            // Our own writes come back through the bus: a message-level
            // event that is not newer than what we synced needs no resync.
            let already_seen = message_level
                && event.uidvalidity == sel.status.uidvalidity
                && event.modseq_after <= sel.status.highestmodseq;
            if !already_seen {
                self.changes_pending = true;
            }
        }
    }

    /// Marks the selected mailbox as changed without an event (e.g. the
    /// driver's watcher noticed something); same effect as a matching event.
    pub fn poke_changes(&mut self) {
        if self.selected.is_some() {
            self.changes_pending = true;
        }
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.store.as_ref().map(UserStore::user)
    }

    /// The selected mailbox name (UTF-8), if any.
    pub fn selected_mailbox(&self) -> Option<&str> {
        self.selected.as_ref().map(Selected::name)
    }

    /// True if the client has sent part of a command (a partial line, or a
    /// literal not yet complete): a stopping server lets it finish.
    pub fn command_in_progress(&self) -> bool {
        self.framer.mid_command()
    }

    /// True while in IDLE.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle(_))
    }

    /// Extensions enabled so far.
    pub fn enabled(&self) -> EnabledExtensions {
        self.enabled
    }

    /// Advances the session; see [`SessionEvent`] for what to do with the result.
    pub fn next(&mut self, now: Instant) -> SessionEvent {
        loop {
            if !self.out.is_empty() {
                return SessionEvent::Output(std::mem::take(&mut self.out));
            }
            if let Some(ev) = self.after.pop_front() {
                return ev;
            }
            match self.phase {
                Phase::Closed | Phase::HandedOver => return SessionEvent::Close,
                Phase::Verifying(_) => return SessionEvent::NeedMoreInput { deadline: self.deadline() },
                _ => {}
            }
            if self.fetch_job.is_some() {
                self.continue_fetch();
                continue;
            }
            if now >= self.deadline() {
                self.out.extend_from_slice(b"* BYE Disconnected for inactivity.\r\n");
                self.close();
                continue;
            }
            if let Phase::Idle(_) = self.phase {
                if self.changes_pending {
                    self.sync_selected(true);
                    if !self.out.is_empty() {
                        continue;
                    }
                }
            }
            let between_commands = matches!(self.phase, Phase::Authenticated | Phase::Idle(_)) && !self.framer.mid_command();
            if self.notify.is_some() && between_commands && self.notify_flush() {
                continue;
            }
            let Some(frame) = self.framer.poll() else {
                // Waiting for the client: hand back buffer space a long
                // command or a big response left behind.
                self.framer.release_consumed();
                self.out = Vec::new();
                if let Some(sel) = self.selected.as_mut() {
                    sel.release_spare_capacity();
                }
                return SessionEvent::NeedMoreInput { deadline: self.deadline() };
            };
            self.last_activity = now;
            self.handle_frame(frame, now);
        }
    }

    /// When `next` must be called even without input.
    fn deadline(&self) -> Instant {
        let l = &self.options.limits;
        match self.phase {
            Phase::Idle(_) => self.idle_since + l.idle_timeout,
            Phase::NotAuthenticated | Phase::SaslResponse(_) | Phase::Verifying(_) => {
                self.last_activity + l.preauth_timeout
            }
            _ => self.last_activity + l.autologout,
        }
    }

    pub(crate) fn close(&mut self) {
        self.phase = Phase::Closed;
        self.selected = None;
        self.after.push_back(SessionEvent::Close);
    }

    fn handle_frame(&mut self, frame: Frame, now: Instant) {
        match frame {
            Frame::LineTooLong(head) => {
                self.append_bodies.clear();
                let tag = tag_of(&head);
                let text = format!("Command line too long (max {} bytes).", self.options.limits.max_line);
                self.respond_bad(tag.as_deref(), &text);
            }
            Frame::Literal { length, non_sync, head } => self.decide_literal(length, non_sync, &head),
            Frame::LiteralData(bytes) => {
                if let Some(slot) = self.append_bodies.last_mut() {
                    if let Some(Ok(message)) = slot {
                        if let Err(e) = message.write(&bytes) {
                            // Reported when the command completes; the rest
                            // of the literal is still read (and dropped).
                            *slot = Some(Err(e));
                        }
                    }
                }
            }
            Frame::Complete(bytes) => match self.phase.clone() {
                Phase::SaslResponse(tag) => self.sasl_response(&tag, &bytes),
                Phase::Idle(tag) => self.idle_input(&tag, &bytes),
                _ => {
                    self.command_bytes(&bytes, now);
                    // Not taken by APPEND (a syntax error, say): the files go.
                    self.append_bodies.clear();
                }
            },
        }
    }

    fn decide_literal(&mut self, length: u32, non_sync: bool, head: &[u8]) {
        let tag = tag_of(head);
        let is_append = command_name_of(head).is_some_and(|c| c.eq_ignore_ascii_case("APPEND"));
        let limits = self.options.limits;
        let max = if is_append { limits.max_append_literal } else { limits.max_other_literal };
        // The whole command (all its literals) is bounded too, so many small
        // literals cannot add up to unbounded memory.
        let total_cap = u64::from(max) + limits.max_line as u64 * 4;
        let over_total = self.framer.message_len() as u64 + u64::from(length) > total_cap;
        if length > max || over_total {
            self.framer.reject_literal();
            self.append_bodies.clear();
            if is_append {
                let text = format!("[TOOBIG] Message too large (max {max} bytes).");
                self.respond(tag.as_deref(), "NO", &text);
            } else {
                self.respond_bad(tag.as_deref(), &format!("Literal too large (max {max} bytes)."));
            }
            return;
        }
        // Only a message literal is streamed to a file; a mailbox name sent
        // as a literal (`APPEND {5}`) is an ordinary in-memory literal.
        let message_literal = is_append && append_literal_is_message(head);
        if message_literal && self.append_bodies.len() >= crate::op::MULTIAPPEND_MAX_MESSAGES {
            // Each message being received holds a file and up to 64 KiB.
            self.framer.reject_literal();
            self.append_bodies.clear();
            let text = format!(
                "[LIMIT] At most {} messages in one APPEND; send them in smaller batches.",
                crate::op::MULTIAPPEND_MAX_MESSAGES
            );
            return match tag {
                Some(tag) => self.no(&tag, &text),
                None => self.respond_bad(None, &text),
            };
        }
        let stream_it = message_literal && length > 0;
        match self.store.as_ref().filter(|_| stream_it).map(|store| IncomingMessage::create(store, "INBOX")) {
            Some(Ok(message)) => {
                self.append_bodies.push(Some(Ok(message)));
                self.framer.accept_literal_streamed();
            }
            Some(Err(e)) => {
                self.framer.reject_literal();
                self.append_bodies.clear();
                tracing::warn!(error = %e, "cannot receive an APPEND message");
                return match tag {
                    Some(tag) => self.no_store(&tag, &e),
                    None => self.respond_bad(None, "Cannot receive the message."),
                };
            }
            None => {
                if message_literal {
                    self.append_bodies.push(None);
                }
                self.framer.accept_literal();
            }
        }
        if !non_sync {
            self.out.extend_from_slice(b"+ OK\r\n");
        }
    }

    fn command_bytes(&mut self, bytes: &[u8], now: Instant) {
        let line = trim_crlf(bytes);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            // Dovecot ignores empty lines too; nothing to answer.
            return;
        }
        use crate::op::esearch::{split_search_return, SearchReturn};
        // For error texts: the command as the client wrote it.
        let original = bytes;
        let unquoted;
        // 8-bit quoted strings: search text in the command's charset, or a
        // raw UTF-8 mailbox name, which then gets NO [CANNOT] (as in
        // Dovecot) instead of a syntax error.
        let rewrite_8bit = search_like_command(bytes) || mailbox_command(bytes);
        let bytes = match rewrite_8bit.then(|| crate::op::quoted8::quoted_8bit_to_literals(bytes)).flatten() {
            Some(b) => {
                unquoted = b;
                &unquoted
            }
            None => bytes,
        };
        if let Some(tag) = crate::op::unauthenticate::parse(bytes, &self.options) {
            return self.op_unauthenticate(&tag);
        }
        let with_saved;
        let bytes = match self.substitute_saved_result(bytes) {
            Some(b) => {
                with_saved = b;
                &with_saved
            }
            None => bytes,
        };
        if let Some(cmd) = crate::op::create_special_use::split(bytes) {
            if self.op_create_special_use(&cmd) {
                return;
            }
        }
        if self.phase == Phase::Authenticated {
            if let Some(commands) = crate::op::multiappend_split(bytes) {
                return self.op_multiappend(bytes, &commands);
            }
            use crate::op::notify_syntax::NotifySyntax;
            match crate::op::notify_syntax::parse(bytes) {
                NotifySyntax::NotNotify => {}
                NotifySyntax::Command(tag, cmd) => return self.op_notify(&tag, cmd),
                NotifySyntax::Invalid(tag, text) => return self.bad(&tag, &text),
                NotifySyntax::BadEvent(tag, text) => return self.no(&tag, &text),
            }
            use crate::op::list_syntax::{parse, ListSyntax};
            match parse(bytes) {
                ListSyntax::Plain => {}
                ListSyntax::Extended(cmd) => return self.op_list_extended(&cmd),
                ListSyntax::Invalid(tag, text) => return self.bad(&tag, &text),
            }
        }
        use crate::op::sort_syntax::{split_sort_thread, Split};
        let as_search;
        self.ordering = None;
        let bytes = match split_sort_thread(bytes) {
            Split::None => bytes,
            Split::Found(b, ordering) => {
                self.ordering = Some(ordering);
                as_search = b;
                &as_search
            }
            Split::Invalid(reason) => {
                let tag = tag_of(bytes);
                return self.respond_bad(tag.as_deref(), reason);
            }
        };
        let rewritten;
        let bytes = match split_search_return(bytes) {
            SearchReturn::None => {
                self.search_return = None;
                bytes
            }
            SearchReturn::Found(b, opts) => {
                self.search_return = Some(opts);
                rewritten = b;
                &rewritten
            }
            SearchReturn::Invalid => {
                let tag = tag_of(bytes);
                return self.respond_bad(tag.as_deref(), "Invalid SEARCH RETURN options.");
            }
        };
        match CommandCodec::default().decode(bytes) {
            Ok((b"", cmd)) => {
                let tag = cmd.tag.inner().to_string();
                self.dispatch(&tag, cmd, now);
            }
            Ok((_, cmd)) => {
                let tag = cmd.tag.inner().to_string();
                self.respond_bad(Some(&tag), "Unexpected characters after the command.");
            }
            Err(_) => {
                let tag = tag_of(original);
                let text = match (&tag, command_name_of(original)) {
                    (None, _) => "Invalid tag or command syntax.".to_string(),
                    (Some(_), None) => "Missing command.".to_string(),
                    (Some(_), Some(name)) => {
                        if KNOWN_COMMANDS.iter().any(|c| c.eq_ignore_ascii_case(&name)) {
                            format!("Error in IMAP command {}: invalid arguments.", name.to_ascii_uppercase())
                        } else {
                            "Unknown command.".to_string()
                        }
                    }
                };
                self.respond_bad(tag.as_deref(), &text);
            }
        }
    }

    fn dispatch(&mut self, tag: &str, cmd: Command<'_>, now: Instant) {
        let body = cmd.body;
        match (&self.phase, body) {
            (_, CommandBody::Capability) => {
                let caps = self.capabilities();
                self.untagged(&format!("CAPABILITY {caps}"));
                self.ok(tag, "Capability completed.");
            }
            (_, CommandBody::Noop) => self.op_noop(tag, "NOOP"),
            (_, CommandBody::Logout) => {
                self.out.extend_from_slice(b"* BYE Logging out.\r\n");
                self.ok(tag, "Logout completed.");
                self.close();
            }
            (_, CommandBody::Id { .. }) => {
                self.out.extend_from_slice(b"* ID (\"name\" \"dormouse\")\r\n");
                self.ok(tag, "ID completed.");
            }
            (Phase::NotAuthenticated, CommandBody::StartTLS) => self.op_starttls(tag),
            (Phase::NotAuthenticated, CommandBody::Login { username, password }) => {
                let user = username.as_ref().to_vec();
                let pass = password.declassify().as_ref().to_vec();
                self.op_login(tag, &user, &pass, now);
            }
            (Phase::NotAuthenticated, CommandBody::Authenticate { mechanism, initial_response }) => {
                let ir = initial_response.map(|s| s.declassify().to_vec());
                self.op_authenticate(tag, mechanism.as_ref(), ir, now);
            }
            // RFC 9051 6: a command in the wrong state is a protocol error (BAD), as in Dovecot.
            (Phase::NotAuthenticated, _) => self.bad(tag, "Please log in first."),
            (_, CommandBody::StartTLS) => self.bad(tag, "STARTTLS is only allowed before login."),
            (_, CommandBody::Login { .. } | CommandBody::Authenticate { .. }) => self.bad(tag, "Already logged in."),
            (_, body) => self.dispatch_authenticated(tag, body, now),
        }
    }

    fn dispatch_authenticated(&mut self, tag: &str, body: CommandBody<'_>, now: Instant) {
        match body {
            CommandBody::Select { mailbox, parameters } => self.op_select(tag, &mailbox, &parameters, false),
            CommandBody::Examine { mailbox, parameters } => self.op_select(tag, &mailbox, &parameters, true),
            CommandBody::Create { mailbox } => self.op_create(tag, &mailbox),
            CommandBody::Delete { mailbox } => self.op_delete(tag, &mailbox),
            CommandBody::Rename { from, to } => self.op_rename(tag, &from, &to),
            CommandBody::Subscribe { mailbox } => self.op_subscribe(tag, &mailbox, true),
            CommandBody::Unsubscribe { mailbox } => self.op_subscribe(tag, &mailbox, false),
            CommandBody::List { reference, mailbox_wildcard } => {
                self.op_list(tag, &reference, &mailbox_wildcard, false)
            }
            CommandBody::Lsub { reference, mailbox_wildcard } => {
                self.op_list(tag, &reference, &mailbox_wildcard, true)
            }
            CommandBody::Namespace => {
                self.out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                self.ok(tag, "Namespace completed.");
            }
            CommandBody::Status { mailbox, item_names } => self.op_status(tag, &mailbox, &item_names),
            CommandBody::Append { mailbox, flags, date, message } => {
                self.op_append(tag, &mailbox, &flags, date.as_ref(), &message)
            }
            CommandBody::Enable { capabilities } => self.op_enable(tag, capabilities.as_ref()),
            CommandBody::Idle => self.op_idle(tag, now),
            CommandBody::Compress { algorithm } => self.op_compress(tag, algorithm),
            body if self.selected.is_none() => {
                let name = match &self.ordering {
                    Some(crate::op::sort_syntax::Ordering::Sort { .. }) => "SORT",
                    Some(crate::op::sort_syntax::Ordering::Thread(_)) => "THREAD",
                    None => body.name(),
                };
                self.bad(tag, &format!("{name} needs a selected mailbox."));
            }
            CommandBody::Check => self.op_noop(tag, "CHECK"),
            CommandBody::Close => self.op_close(tag),
            CommandBody::Unselect => {
                self.selected = None;
                self.ok(tag, "Unselect completed.");
            }
            CommandBody::Expunge => self.op_expunge(tag, None),
            CommandBody::ExpungeUid { sequence_set } => self.op_expunge(tag, Some(&sequence_set)),
            CommandBody::Search { charset, criteria, uid } => {
                use crate::op::sort_syntax::Ordering;
                match self.ordering.take() {
                    None => self.op_search(tag, charset.as_ref(), criteria.as_ref(), uid),
                    Some(Ordering::Sort { criteria: program, ret }) => {
                        self.op_sort(tag, &program, ret, charset.as_ref(), criteria.as_ref(), uid)
                    }
                    Some(Ordering::Thread(alg)) => self.op_thread(tag, alg, charset.as_ref(), criteria.as_ref(), uid),
                }
            }
            CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
                self.op_fetch(tag, &sequence_set, &macro_or_item_names, uid, &modifiers)
            }
            CommandBody::Store { sequence_set, kind, response, flags, uid, modifiers } => {
                self.op_store(tag, &sequence_set, &kind, &response, &flags, uid, &modifiers)
            }
            CommandBody::Copy { sequence_set, mailbox, uid } => self.op_copy_move(tag, &sequence_set, &mailbox, uid, false),
            CommandBody::Move { sequence_set, mailbox, uid } => self.op_copy_move(tag, &sequence_set, &mailbox, uid, true),
            other => {
                let name = other.name();
                self.bad(tag, &format!("Command {name} is not supported."));
            }
        }
    }

    /// The capability list for the current phase and connection.
    pub(crate) fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE");
        let authed = !matches!(self.phase, Phase::NotAuthenticated | Phase::SaslResponse(_) | Phase::Verifying(_));
        if authed {
            caps.push_str(
                " NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE CONDSTORE QRESYNC ESEARCH \
                 SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES LIST-EXTENDED LIST-STATUS MULTIAPPEND NOTIFY COMPRESS=DEFLATE",
            );
            caps.push_str(&crate::op::capabilities::authenticated_extra(&self.options));
        } else {
            if self.options.starttls_available && !self.options.tls_active {
                caps.push_str(" STARTTLS");
            }
            if self.plaintext_ok() {
                caps.push_str(" AUTH=PLAIN");
            } else {
                caps.push_str(" LOGINDISABLED");
            }
        }
        caps
    }

    pub(crate) fn plaintext_ok(&self) -> bool {
        self.options.tls_active || self.options.allow_plaintext_auth
    }

    /// Writes `* <text>`.
    pub(crate) fn untagged(&mut self, text: &str) {
        self.out.extend_from_slice(b"* ");
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes `<tag> <status> <text>` (or `* ...` without a tag).
    pub(crate) fn respond(&mut self, tag: Option<&str>, status: &str, text: &str) {
        let line = format!("{} {status} {text}\r\n", tag.unwrap_or("*"));
        self.out.extend_from_slice(line.as_bytes());
    }

    fn respond_bad(&mut self, tag: Option<&str>, text: &str) {
        self.respond(tag, "BAD", text);
    }

    /// Tagged OK.
    pub(crate) fn ok(&mut self, tag: &str, text: &str) {
        self.respond(Some(tag), "OK", text);
    }

    /// Tagged NO.
    pub(crate) fn no(&mut self, tag: &str, text: &str) {
        self.respond(Some(tag), "NO", text);
    }

    /// Tagged BAD.
    pub(crate) fn bad(&mut self, tag: &str, text: &str) {
        self.respond(Some(tag), "BAD", text);
    }

    /// Enables CONDSTORE because a command used it (RFC 7162 §3.1): the first
    /// time that happens with a mailbox selected, the client is told the
    /// mailbox's HIGHESTMODSEQ before the command's own responses.
    pub(crate) fn enable_condstore_implicitly(&mut self) {
        if self.enabled.condstore {
            return;
        }
        self.enabled.condstore = true;
        if let Some(sel) = self.selected.as_ref() {
            self.out.extend_from_slice(format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", sel.status.highestmodseq).as_bytes());
        }
    }

    /// Tagged NO for a storage error, with a response code where one fits.
    pub(crate) fn no_store(&mut self, tag: &str, err: &StoreError) {
        if err.is_storage_full() {
            // Not a bug of ours: the client may retry once space is freed
            // (Dovecot answers a full disk the same way).
            tracing::warn!(error = %err, "storage full");
            return self.no(tag, "[OVERQUOTA] Not enough disk space; try again later.");
        }
        let code = match err {
            StoreError::NoSuchMailbox(_) => "[NONEXISTENT] ",
            StoreError::MailboxExists(_) => "[ALREADYEXISTS] ",
            StoreError::InvalidMailboxName { .. } | StoreError::NotAllowed(_) => "[CANNOT] ",
            StoreError::LockTimeout(_) => "[INUSE] ",
            StoreError::Io { .. } | StoreError::Corrupt { .. } => "[SERVERBUG] ",
            StoreError::InvalidMessage(_) | StoreError::NoSuchMessage(_) => "",
        };
        // Client-caused refusals (no such mailbox, exists, bad name) are the
        // client's business: debug. Failures of ours stay warnings.
        match err {
            StoreError::Io { .. } | StoreError::Corrupt { .. } | StoreError::LockTimeout(_) => {
                tracing::warn!(error = %err, "storage error")
            }
            _ => tracing::debug!(error = %err, "command refused"),
        }
        let text = match err {
            // Paths are internal; do not show them to the client.
            StoreError::Io { .. } | StoreError::Corrupt { .. } => "Internal error; try again later.".to_string(),
            other => sanitize(&other.to_string()),
        };
        self.no(tag, &format!("{code}{text}"));
    }

    /// Syncs the selected mailbox and writes the untagged updates. EXPUNGE /
    /// VANISHED are only written when `allow_expunge`.
    pub(crate) fn sync_selected(&mut self, allow_expunge: bool) {
        self.changes_pending = false;
        let enabled = self.enabled;
        let Some(sel) = self.selected.as_mut() else { return };
        let known = sel.view.last().map_or(0, |e| e.uid);
        match sel.sync(allow_expunge, enabled, &mut self.out) {
            Ok(true) => self.notify_fetch_new(known),
            Ok(false) => {
                // UIDVALIDITY changed or the mailbox vanished: the client's
                // view is void; Dovecot disconnects the same way.
                self.out.extend_from_slice(b"* BYE Selected mailbox was deleted or its UIDVALIDITY changed.\r\n");
                self.close();
            }
            Err(e) => tracing::warn!(error = %e, "mailbox sync failed"),
        }
    }
}

/// A line without its CRLF / LF.
pub(crate) fn trim_crlf(bytes: &[u8]) -> &[u8] {
    let b = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Best-effort tag of a (possibly malformed) command, for error responses.
pub(crate) fn tag_of(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == b' ')?;
    let tag = &bytes[..end];
    let valid = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+'));
    valid.then(|| String::from_utf8_lossy(tag).into_owned())
}

/// True for `[UID] SEARCH`, `SORT` and `THREAD`: the commands whose quoted
/// strings may hold 8-bit text in the command's charset.
fn search_like_command(bytes: &[u8]) -> bool {
    let line = trim_crlf(bytes);
    let mut words = line.split(|&b| b == b' ').skip(1);
    let mut name = words.next().unwrap_or_default();
    if name.eq_ignore_ascii_case(b"UID") {
        name = words.next().unwrap_or_default();
    }
    [&b"SEARCH"[..], b"SORT", b"THREAD"].iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// True for the commands whose quoted strings are mailbox names (their
/// 8-bit names are refused with a NO, see `Session::mailbox_name`).
fn mailbox_command(bytes: &[u8]) -> bool {
    let line = trim_crlf(bytes);
    let mut words = line.split(|&b| b == b' ').skip(1);
    let mut name = words.next().unwrap_or_default();
    if name.eq_ignore_ascii_case(b"UID") {
        name = words.next().unwrap_or_default();
    }
    const NAMES: &[&[u8]] =
        &[b"CREATE", b"DELETE", b"RENAME", b"SELECT", b"EXAMINE", b"SUBSCRIBE", b"UNSUBSCRIBE", b"STATUS", b"APPEND", b"COPY", b"MOVE"];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// True when the literal announced at the end of `head` (an APPEND command
/// read so far) is a message: anything stands between `APPEND ` and its
/// `{`, so the mailbox argument came before it. A literal right after
/// `APPEND ` is the mailbox name.
fn append_literal_is_message(head: &[u8]) -> bool {
    let line = trim_crlf(head);
    let Some(sp) = line.iter().position(|&b| b == b' ') else { return false };
    let Some(args) = line[sp + 1..].get("APPEND ".len()..) else { return false };
    args.iter().rposition(|&b| b == b'{').is_some_and(|open| open > 0)
}

/// Best-effort command name (second word).
pub(crate) fn command_name_of(bytes: &[u8]) -> Option<String> {
    let line = trim_crlf(bytes);
    let start = line.iter().position(|&b| b == b' ')? + 1;
    let rest = &line[start..];
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let name = &rest[..end];
    (!name.is_empty() && name.len() <= 32 && name.iter().all(u8::is_ascii_alphabetic))
        .then(|| String::from_utf8_lossy(name).into_owned())
}

/// Response text must be one line of printable characters.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

impl Session {
    /// Input while in IDLE: `DONE` ends it; anything else is a BAD.
    fn idle_input(&mut self, tag: &str, bytes: &[u8]) {
        match IdleDoneCodec::default().decode(bytes) {
            Ok(_) => {
                self.phase = Phase::Authenticated;
                self.framer.set_line_only(false);
                self.sync_selected(true);
                self.ok(tag, "Idle completed.");
            }
            Err(_) => {
                self.phase = Phase::Authenticated;
                self.framer.set_line_only(false);
                self.bad(tag, "Expected DONE.");
            }
        }
    }

    /// The client's answer to our `+ ` during AUTHENTICATE PLAIN.
    fn sasl_response(&mut self, tag: &str, bytes: &[u8]) {
        self.framer.set_line_only(false);
        self.phase = Phase::NotAuthenticated;
        match AuthenticateDataCodec::default().decode(bytes) {
            Ok((_, imap_types::auth::AuthenticateData::Continue(data))) => {
                let data = data.declassify().to_vec();
                self.finish_plain(tag, &data);
            }
            Ok((_, imap_types::auth::AuthenticateData::Cancel)) => self.bad(tag, "Authentication aborted by client."),
            Err(_) => self.bad(tag, "Invalid base64 in SASL response."),
        }
    }
}
