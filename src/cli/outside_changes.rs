//! Announces mail changed by other programs (procmail, Postfix, mutt) for
//! the users that have sessions in this process: a [`MaildirWatcher`]
//! (one inotify instance per process, one watch per directory per user)
//! publishes through the same store hooks (the bus publisher) as our own
//! writes. Enabled by `storage.change_source = "both"` (the default).

use std::sync::Arc;
use std::time::Duration;

use imap::auth::UserDb;
use imap::server::wakeup::UserSubscriptionListener;
use storage_hooks::watcher::{MaildirWatcher, WatcherConfig};
use storage_hooks::{Hooks, UserStore};

use crate::config::{ChangeSource, Config};

/// Starts the process's watcher if the configuration asks for one.
pub fn start_watcher(config: &Config) -> Option<Arc<MaildirWatcher>> {
    if config.storage.change_source == ChangeSource::Hooks {
        return None;
    }
    let watcher_config = WatcherConfig {
        poll_interval: Duration::from_secs(config.storage.poll_interval_secs),
        ..WatcherConfig::default()
    };
    match MaildirWatcher::start(watcher_config) {
        Ok(w) => Some(Arc::new(w)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the Maildir watcher: changes by other programs are not announced");
            None
        }
    }
}

/// Watches a user's Maildir while they have sessions here, and passes the
/// notifications on to the next listener (the bus subscriber).
pub struct WatchingListener {
    watcher: Arc<MaildirWatcher>,
    users: Arc<UserDb>,
    hooks: Hooks,
    next: Option<Arc<dyn UserSubscriptionListener>>,
}

impl WatchingListener {
    /// A listener watching users of `users`, publishing through `hooks`.
    pub fn new(
        watcher: Arc<MaildirWatcher>,
        users: Arc<UserDb>,
        hooks: Hooks,
        next: Option<Arc<dyn UserSubscriptionListener>>,
    ) -> Self {
        WatchingListener { watcher, users, hooks, next }
    }
}

impl UserSubscriptionListener for WatchingListener {
    fn user_added(&self, user: &str) {
        if let Some(next) = &self.next {
            next.user_added(user);
        }
        let Some(record) = self.users.lookup(user) else { return };
        match UserStore::open(user, &record.maildir, self.hooks.clone()) {
            Ok(store) => self.watcher.watch_user(&store),
            Err(e) => tracing::warn!(user, error = %e, "cannot watch the user's Maildir"),
        }
    }

    fn user_removed(&self, user: &str) {
        if let Some(next) = &self.next {
            next.user_removed(user);
        }
        self.watcher.unwatch_user(user);
    }
}
