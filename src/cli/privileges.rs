//! Started as root, `serve` becomes the unprivileged system user named by
//! `[server] user` before it touches the data directory, binds a port or
//! starts a child, and keeps only `CAP_NET_BIND_SERVICE` (ambient, so its
//! children and a restarted generation keep it too) for ports below 1024:
//! what systemd's `User=` + `AmbientCapabilities=` do for the packaged unit,
//! for admins who start it from root's shell, an init script or a container.
//!
//! All mail is owned by that one user (like Dovecot's `mail_uid = vmail`
//! virtual-user setup): workers serve many users each, so the uid/gid
//! fields of passwd-file lines are not used to switch users.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use anyhow::{bail, Context};
use rustix::thread::{CapabilitySet, CapabilitySets};

/// The system account `serve` switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    /// Login name, as in `[server] user`.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl ServiceUser {
    /// Looks `name` up in the system's user database (NSS: /etc/passwd,
    /// LDAP, ...).
    ///
    /// # Errors
    /// No such user, or the lookup failed.
    pub fn lookup(name: &str) -> anyhow::Result<Self> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => Ok(ServiceUser { name: name.to_string(), uid: user.uid.as_raw(), gid: user.gid.as_raw() }),
            Ok(None) => bail!(
                "server.user {name:?} is not a user on this system (create it, e.g. `adduser --system --group {name}`)"
            ),
            Err(e) => bail!("cannot look up server.user {name:?}: {e}"),
        }
    }
}

/// What [`drop_if_root`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privileges {
    /// Not started as root: nothing to drop.
    Unprivileged,
    /// Started as root and `[server] user` is empty: still root (logged).
    StayedRoot,
    /// Now running as this user.
    Dropped(ServiceUser),
}

/// Becomes `user` (when the process is root and `user` is not empty),
/// after making sure `data_dir` (and `run_dir` if it exists elsewhere)
/// belong to it. Call it before any thread but the main one is started:
/// the new ids are set for the whole process (libc's setuid), the kept
/// capability only on the calling thread, which the runtime's threads and
/// the children are then started from.
///
/// # Errors
/// Unknown user; the data directory exists and belongs to someone else
/// (the message names it and the `chown` that fixes it); a system call
/// refused.
pub fn drop_if_root(user: &str, data_dir: &Path, run_dir: &Path) -> anyhow::Result<Privileges> {
    if !rustix::process::geteuid().is_root() {
        return Ok(Privileges::Unprivileged);
    }
    if user.is_empty() {
        // INFO, not WARN: containers and test rigs run as root on purpose,
        // and a WARN there would be noise an admin learns to ignore.
        tracing::info!("running as root: set [server] user (e.g. \"dormouse\") to serve as an unprivileged user");
        return Ok(Privileges::StayedRoot);
    }
    let account = ServiceUser::lookup(user)?;
    if account.uid == 0 {
        bail!("server.user {user:?} is root (uid 0): name an unprivileged system user");
    }
    claim_dir(data_dir, &account, "data directory")?;
    if !run_dir.starts_with(data_dir) && run_dir.exists() {
        claim_dir(run_dir, &account, "run directory")?;
    }
    become_user(&account)?;
    tracing::info!(user = %account.name, uid = account.uid, gid = account.gid, "dropped root privileges");
    Ok(Privileges::Dropped(account))
}

/// Creates `dir` for `account` (0700) when it does not exist yet; refuses
/// one that exists and belongs to someone else.
fn claim_dir(dir: &Path, account: &ServiceUser, what: &str) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.uid() == account.uid => Ok(()),
        Ok(meta) => bail!(
            "{what} {} belongs to uid {}, but serve runs as {} (uid {}): `chown -R {}: {}` (or set server.user)",
            dir.display(),
            meta.uid(),
            account.name,
            account.uid,
            account.name,
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {what} {}", dir.display()))?;
            std::os::unix::fs::chown(dir, Some(account.uid), Some(account.gid))
                .with_context(|| format!("cannot give {what} {} to {}", dir.display(), account.name))
        }
        Err(e) => Err(e).with_context(|| format!("cannot inspect {what} {}", dir.display())),
    }
}

/// setgroups/setgid/setuid to `account`, keeping `CAP_NET_BIND_SERVICE`.
fn become_user(account: &ServiceUser) -> anyhow::Result<()> {
    // Keep the permitted set across setuid (this thread only), so the one
    // capability we need can be raised again below.
    rustix::thread::set_keep_capabilities(true).context("prctl(PR_SET_KEEPCAPS)")?;
    let (uid, gid) = (nix::unistd::Uid::from_raw(account.uid), nix::unistd::Gid::from_raw(account.gid));
    // glibc applies these to every thread of the process.
    nix::unistd::setgroups(&[gid]).context("setgroups")?;
    nix::unistd::setgid(gid).with_context(|| format!("setgid({gid})"))?;
    nix::unistd::setuid(uid).with_context(|| format!("setuid({uid})"))?;
    let keep = CapabilitySet::NET_BIND_SERVICE;
    rustix::thread::set_capabilities(None, CapabilitySets { effective: keep, permitted: keep, inheritable: keep })
        .context("capset(CAP_NET_BIND_SERVICE)")?;
    rustix::thread::configure_capability_in_ambient_set(rustix::thread::CapabilitySet::NET_BIND_SERVICE, true)
        .context("prctl(PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE)")?;
    rustix::thread::set_keep_capabilities(false).context("prctl(PR_SET_KEEPCAPS, 0)")?;
    // Going back must be impossible.
    if nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
        bail!("could switch back to root after dropping privileges");
    }
    Ok(())
}
