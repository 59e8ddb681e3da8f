//! Announces mail changed by other programs (procmail, Postfix, mutt) for
//! the users that have sessions in this process: a [`MaildirWatcher`]
//! (one inotify instance per process, one watch per directory per user)
//! publishes through the same store hooks (the bus publisher) as our own
//! writes. Enabled by `storage.change_source = "both"` (the default).
//!
//! Workers watch users while they have sessions there; a hibernate process
//! watches only the mailboxes its hibernated sessions have selected
//! ([`hibernate_watch_hook`]): a hibernated session hears nothing of other
//! folders, and each watch pins kernel memory. Its STATUS of any other
//! mailbox then reads the store (`UnselectedStatus::ReadEachTime`). Two processes watching one user publish
//! each change once: the reconcile runs under the mailbox's uidlist lock,
//! so the second one finds nothing left to announce.

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

/// The hibernate process's watcher: follows the users subscribed on the
/// bus (those with hibernated sessions) and publishes on the bus, so the
/// process hears the changes through its own subscription like any other.
pub struct HibernateWatchHook {
    listener: WatchingListener,
    /// Runs the publisher's background task (NATS).
    _runtime: tokio::runtime::Runtime,
}

/// The hook to give the hibernate driver, if the configuration asks for a
/// watcher and it could be started.
pub fn hibernate_watch_hook(config: &Config) -> Option<HibernateWatch> {
    let watcher = start_watcher(config)?;
    let users = match imap::auth::MailLocation::parse(&config.users.mail_location)
        .map_err(anyhow::Error::from)
        .and_then(|location| Ok(UserDb::open(config.passwd_file(), location)?))
    {
        Ok(users) => Arc::new(users),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the users: hibernated sessions do not see changes by other programs");
            return None;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hibernate-publisher")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the publisher runtime: hibernated sessions do not see changes by other programs");
            return None;
        }
    };
    let hooks = runtime.block_on(super::serve::store_hooks(config));
    Some(HibernateWatch {
        store_hooks: hooks.clone(),
        hook: Arc::new(HibernateWatchHook { listener: WatchingListener::new(watcher, users, hooks, None), _runtime: runtime }),
    })
}

/// What the hibernate process needs to follow outside changes: the hook that
/// watches its users, and the hooks (publishing on the bus, reporting outside
/// changes) for the stores it reads.
pub struct HibernateWatch {
    /// Follows the users with hibernated sessions.
    pub hook: Arc<dyn hibernate::driver::bus_bridge::SubscriptionHook>,
    /// Hooks for the process's own store reads.
    pub store_hooks: storage_hooks::Hooks,
}

impl hibernate::driver::bus_bridge::SubscriptionHook for HibernateWatchHook {
    // Users are followed through their selected mailboxes alone.
    fn user_subscribed(&self, _user: &str) {}

    fn user_unsubscribed(&self, _user: &str) {}

    fn mailbox_selected(&self, user: &str, mailbox: &str) {
        self.listener.mailbox_added(user, mailbox);
    }

    fn mailbox_released(&self, user: &str, mailbox: &str) {
        self.listener.mailbox_removed(user, mailbox);
    }
}

impl WatchingListener {
    /// Watches `mailbox` of `user` for one more session that selected it.
    fn mailbox_added(&self, user: &str, mailbox: &str) {
        let Some(record) = self.users.lookup(user) else { return };
        match UserStore::open(user, &record.maildir, self.hooks.clone()) {
            Ok(store) => self.watcher.watch_mailbox(&store, mailbox),
            Err(e) => tracing::warn!(user, error = %e, "cannot watch the user's Maildir"),
        }
    }

    /// One session fewer with `mailbox` of `user` selected.
    fn mailbox_removed(&self, user: &str, mailbox: &str) {
        self.watcher.unwatch_mailbox(user, mailbox);
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
