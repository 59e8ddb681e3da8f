//! First-run preparation for `serve`: data and run directories, a passwd
//! file with a `demo` user, and a self-signed TLS pair.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use imap::auth::{add_user, PasswdEntry, PasswordScheme, StoredPassword};
use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::config::Config;

/// Name of the user created on first run.
pub const DEMO_USER: &str = "demo";

/// A random password of `len` letters and digits.
pub fn random_password(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Absolute form of `path` (relative to the current directory), without
/// resolving symlinks.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

/// Creates the passwd entry for a new user with home `<data_dir>/home/<name>`
/// owned by the current uid/gid, and adds it to the passwd file.
pub fn add_local_user(config: &Config, name: &str, password: &str, scheme: PasswordScheme) -> anyhow::Result<()> {
    PasswdEntry::check_name(name)?;
    let home = absolute(&config.homes_dir().join(name))?;
    let entry = PasswdEntry {
        name: name.to_string(),
        password: Some(StoredPassword::hash(scheme, password)?),
        uid: Some(rustix::process::getuid().as_raw()),
        gid: Some(rustix::process::getgid().as_raw()),
        home: home.to_string_lossy().into_owned(),
        extra: Vec::new(),
    };
    add_user(&config.passwd_file(), &entry)?;
    Ok(())
}

/// The configured default password scheme.
pub fn default_scheme(config: &Config) -> anyhow::Result<PasswordScheme> {
    PasswordScheme::parse(&config.users.default_scheme)
        .with_context(|| format!("unknown users.default_scheme {:?}", config.users.default_scheme))
}

/// Mode of every directory `serve` creates (whatever the umask).
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file `serve` creates (whatever the umask).
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with [`DIR_MODE`] (existing ones
/// are left as they are).
///
/// # Errors
/// The directory cannot be created.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Refuses a directory that group or others can write to: anyone who can
/// write there could replace the passwd file, the TLS key, the sockets the
/// processes talk over, or mail.
///
/// # Errors
/// The directory is group/other-writable (the message names it and its
/// mode) or cannot be inspected.
pub fn check_not_shared(dir: &Path, what: &str) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot inspect the {what} {}", dir.display()))?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "refusing to start: the {what} {} is writable by group or others (mode {mode:04o}); \
             make it private with `chmod 700 {}`",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Makes sure everything `serve` needs exists. Prints the demo user's
/// password on stdout when it creates the passwd file.
///
/// # Errors
/// A directory or file cannot be created, or the data or run directory is
/// writable by group or others.
pub fn prepare(config: &Config) -> anyhow::Result<()> {
    for dir in [config.data_dir.clone(), config.run_dir(), config.homes_dir()] {
        create_private_dir(&dir)?;
    }
    // (`serve` checked the data directory before locking it.)
    check_not_shared(&config.run_dir(), "run directory")?;
    let passwd = config.passwd_file();
    if !passwd.exists() {
        let password = random_password(16);
        add_local_user(config, DEMO_USER, &password, default_scheme(config)?)?;
        println!("dormouse: created {} with user {DEMO_USER:?}, password {password}", passwd.display());
        println!("dormouse: the password is shown only now (it is stored hashed); add users with `dormouse user add NAME`");
    }
    ensure_tls_pair(config)
}

fn ensure_tls_pair(config: &Config) -> anyhow::Result<()> {
    let (cert, key) = (config.tls_cert(), config.tls_key());
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let explicit = !config.tls.cert.as_os_str().is_empty() || !config.tls.key.as_os_str().is_empty();
    if explicit {
        bail!("TLS files {} / {} (set in [tls]) do not exist", cert.display(), key.display());
    }
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .context("cannot generate a self-signed certificate")?;
    if let Some(dir) = cert.parent() {
        create_private_dir(dir)?;
    }
    write_file(&key, pair.key_pair.serialize_pem().as_bytes())?;
    write_file(&cert, pair.cert.pem().as_bytes())?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate for localhost");
    Ok(())
}

/// Writes `path` with [`FILE_MODE`] through a temp file and a rename, so
/// that it never exists with other permissions or half written.
///
/// # Errors
/// The temp file cannot be written or renamed (it is removed then).
pub fn write_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(contents).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
