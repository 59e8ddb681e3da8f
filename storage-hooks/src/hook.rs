//! Observers the store calls after a change is durable.

use std::sync::{Arc, Mutex};

use crate::MailboxEvent;

/// Error a hook may report; the store logs it and carries on; a failing
/// observer never fails the change.
#[derive(Debug, thiserror::Error)]
#[error("change hook failed: {0}")]
pub struct HookError(pub String);

/// An observer of real changes. Called after the change is durable
/// (fsynced), on the thread that made the change, so it must be quick and
/// must not block (queue the event, do not do network I/O inline).
pub trait ChangeHook: Send + Sync {
    /// Called once per event.
    ///
    /// # Errors
    /// A returned error is logged by the store and otherwise ignored.
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError>;
}

/// The set of hooks a store calls, in order.
#[derive(Clone, Default)]
pub struct Hooks {
    hooks: Vec<Arc<dyn ChangeHook>>,
    /// Whether every committing locked load publishes the outside changes
    /// it finds (see [`Hooks::with_outside_change_reporting`]).
    report_outside_changes: bool,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooks({}, outside changes: {})", self.hooks.len(), self.report_outside_changes)
    }
}

impl Hooks {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a hook.
    pub fn with(mut self, hook: Arc<dyn ChangeHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Turns publishing of outside changes on every committing locked load
    /// on or off (default off). On, a `NOOP`, `SELECT`, `STATUS` rescan or
    /// delivery that finds changes other programs made publishes them just
    /// as [`crate::UserStore::reconcile_outside_changes`] would; off (the
    /// `change_source = "hooks"` setting), only that reconcile publishes them.
    pub fn with_outside_change_reporting(mut self, on: bool) -> Self {
        self.report_outside_changes = on;
        self
    }

    /// True if committing locked loads publish the outside changes they find.
    pub fn reports_outside_changes(&self) -> bool {
        self.report_outside_changes
    }

    /// Adds a hook in place.
    pub fn push(&mut self, hook: Arc<dyn ChangeHook>) {
        self.hooks.push(hook);
    }

    /// Calls every hook with `event`; failures are logged, never returned.
    pub fn emit(&self, event: &MailboxEvent) {
        for hook in &self.hooks {
            if let Err(e) = hook.on_change(event) {
                tracing::warn!(user = %event.user, mailbox = %event.mailbox, kind = event.kind.as_str(), error = %e, "change hook failed");
            }
        }
    }
}

/// A hook that keeps every event in memory; for tests and in-process IDLE.
#[derive(Debug, Default)]
pub struct CollectingHook {
    events: Mutex<Vec<MailboxEvent>>,
}

impl CollectingHook {
    /// A new, empty collector.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Takes all events collected so far.
    pub fn take(&self) -> Vec<MailboxEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Number of events collected so far.
    pub fn len(&self) -> usize {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True if nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ChangeHook for CollectingHook {
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(event.clone());
        Ok(())
    }
}
