//! Parking a quiet session in the hibernate process and resuming it later.
//!
//! [`Session::hibernation_state`] captures what a hibernated connection needs
//! (user, enabled extensions, IDLE tag, the selected mailbox's view as a UID
//! set, unread input); [`Session::resume_hibernated`] rebuilds a session from
//! it so that the client cannot tell: no greeting, no extra output, and the
//! changes that happened meanwhile are reported with the next sync, exactly
//! as if the session had stayed.
//!
//! Documented loss: `\Recent` is not carried, so a resumed session reports
//! no RECENT for messages it had claimed before hibernating.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use storage_hooks::{Hooks, StoreError, UidRange, UidSet, UserStore};

use super::machine::Phase;
use super::selected::{Selected, ViewEntry};
use super::shared_mailbox;
use super::{Authenticator, EnabledExtensions, Session, SessionError, SessionOptions};

/// The selected mailbox as the client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HibernatedView {
    /// Mailbox name (UTF-8).
    pub mailbox: String,
    /// Opened with EXAMINE.
    pub read_only: bool,
    /// UIDVALIDITY the client knows.
    pub uidvalidity: u32,
    /// UIDs of the client's view (sequence number = rank).
    pub uids: UidSet,
    /// Every flag change with a MODSEQ up to this was reported to the client.
    pub highest_modseq_seen: u64,
}

/// What a parked session needs to be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HibernationState {
    /// Login name.
    pub user: String,
    /// Maildir root.
    pub maildir: PathBuf,
    /// Enabled extensions.
    pub enabled: EnabledExtensions,
    /// TLS-protected connection.
    pub tls_active: bool,
    /// Tag of the IDLE command in progress, if idling.
    pub idle_tag: Option<String>,
    /// The selected mailbox, if any.
    pub selected: Option<HibernatedView>,
    /// Input received but not processed yet (a partial command line).
    pub pending_input: Vec<u8>,
    /// The NOTIFY state (RFC 5465), if NOTIFY SET is in effect.
    pub notify: Option<hibernate::notify::NotifySpec>,
    /// COMPRESS DEFLATE is active (the streams' state is the driver's).
    pub compressed: bool,
}

/// Why a session cannot be parked right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotHibernatable {
    /// Not logged in (or in the middle of AUTHENTICATE).
    #[error("not authenticated")]
    NotAuthenticated,
    /// Output or driver events are waiting to be taken with `next`.
    #[error("pending output")]
    PendingOutput,
    /// The view holds expunges not yet reported to the client.
    #[error("pending expunges")]
    PendingExpunges,
    /// A literal (or skipped data) is being read.
    #[error("literal in progress")]
    LiteralInProgress,
    /// A change event has not been synced yet.
    #[error("changes pending")]
    ChangesPending,
    /// A SEARCHRES result (`$`) is saved; the hibernate process does not carry it.
    #[error("saved search result")]
    SavedSearch,
    /// The session is closed or was handed over.
    #[error("session closed")]
    Closed,
    /// NOTIFY asks for fetch attributes of new messages in the selected
    /// mailbox, which only a worker renders.
    #[error("NOTIFY fetch attributes")]
    NotifyFetch,
}

impl Session {
    /// The state to park this session, if it is quiescent.
    ///
    /// # Errors
    /// [`NotHibernatable`] says why not (for per-reason counters).
    pub fn hibernation_state(&self) -> Result<HibernationState, NotHibernatable> {
        let idle_tag = match &self.phase {
            Phase::Authenticated => None,
            Phase::Idle(tag) => Some(tag.clone()),
            Phase::NotAuthenticated | Phase::SaslResponse(_) | Phase::Verifying(_) => {
                return Err(NotHibernatable::NotAuthenticated)
            }
            Phase::Closed | Phase::HandedOver => return Err(NotHibernatable::Closed),
        };
        if !self.out.is_empty() || !self.after.is_empty() || self.fetch_job.is_some() {
            return Err(NotHibernatable::PendingOutput);
        }
        if !self.notify_out.is_empty() {
            return Err(NotHibernatable::PendingOutput);
        }
        if self.changes_pending {
            return Err(NotHibernatable::ChangesPending);
        }
        if self.selected.is_some() && self.notify_fetch_att().is_some() {
            return Err(NotHibernatable::NotifyFetch);
        }
        let store = self.store.as_ref().ok_or(NotHibernatable::NotAuthenticated)?;
        let pending_input = self.framer.pending_copy().ok_or(NotHibernatable::LiteralInProgress)?;
        let selected = match &self.selected {
            None => None,
            Some(sel) => {
                if sel.has_pending_expunges() {
                    return Err(NotHibernatable::PendingExpunges);
                }
                if !sel.saved_result.is_empty() {
                    return Err(NotHibernatable::SavedSearch);
                }
                Some(HibernatedView {
                    mailbox: sel.name().to_string(),
                    read_only: sel.read_only,
                    uidvalidity: sel.status.uidvalidity,
                    uids: UidSet::from_ranges(sel.view.iter().map(|e| UidRange { first: e.uid, last: e.uid })),
                    highest_modseq_seen: sel.view.iter().map(|e| e.modseq).max().unwrap_or(0),
                })
            }
        };
        Ok(HibernationState {
            user: store.user().to_string(),
            maildir: store.root().to_path_buf(),
            enabled: self.enabled,
            tls_active: self.options.tls_active,
            idle_tag,
            selected,
            pending_input,
            notify: self.notify.clone(),
            compressed: self.compressed,
        })
    }

    /// Rebuilds a parked session. Changes made while it was parked are
    /// reported by the first `next` call (while idling) or with the next
    /// command; a mailbox that vanished or changed UIDVALIDITY ends the
    /// session with `* BYE`, as a live session would.
    ///
    /// # Errors
    /// [`SessionError::Store`] if the user's Maildir cannot be opened.
    pub fn resume_hibernated(
        mut options: SessionOptions,
        state: HibernationState,
        authenticator: Arc<dyn Authenticator>,
        hooks: Hooks,
        now: Instant,
    ) -> Result<Session, SessionError> {
        options.tls_active = state.tls_active;
        options.hand_over_on_auth = false;
        let store = UserStore::open(&state.user, state.maildir, hooks.clone())?;
        let mut s = Session::new(options, authenticator, hooks, now);
        s.enabled = state.enabled;
        s.compressed = state.compressed;
        s.phase = Phase::Authenticated;
        if let Some(view) = state.selected {
            match rebuild_view(&store, &view) {
                Ok(Some(sel)) => s.selected = Some(sel),
                Ok(None) | Err(StoreError::NoSuchMailbox(_)) => {
                    s.out.extend_from_slice(b"* BYE Selected mailbox was deleted or its UIDVALIDITY changed.\r\n");
                    s.close();
                }
                Err(e) => return Err(e.into()),
            }
        }
        s.store = Some(store);
        s.notify = state.notify;
        if let Some(tag) = state.idle_tag {
            s.phase = Phase::Idle(tag);
            s.framer.set_line_only(true);
        }
        s.changes_pending = s.selected.is_some();
        s.framer.enqueue(&state.pending_input);
        Ok(s)
    }
}

/// The client's view over the current mailbox; `None` if UIDVALIDITY changed.
fn rebuild_view(store: &UserStore, view: &HibernatedView) -> Result<Option<Selected>, StoreError> {
    let shared = shared_mailbox::open(store, &view.mailbox)?;
    let entries = {
        let mut guard = shared_mailbox::lock(&shared);
        let g = &mut *guard;
        if g.mailbox.uidvalidity() != view.uidvalidity {
            return Ok(None);
        }
        let current = g.mailbox.messages();
        let entries: Vec<ViewEntry> = view
            .uids
            .iter()
            .map(|uid| match current.binary_search_by_key(&uid, |m| m.uid) {
                Ok(i) => {
                    let mut entry = ViewEntry::of(&current[i], &mut g.keyword_sets);
                    if entry.modseq > view.highest_modseq_seen {
                        // Unknown to the client: a MODSEQ no message has makes
                        // the next sync report this message's flags.
                        entry.modseq = 0;
                    }
                    entry
                }
                Err(_) => ViewEntry::gone(uid),
            })
            .collect();
        entries
    };
    Ok(Some(Selected::from_view(shared, view.read_only, entries)))
}
