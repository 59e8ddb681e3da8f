//! `dormouse user`: add and remove users, set passwords, hash passwords, list users.

use std::io::BufRead;

use anyhow::Context;
use clap::{Args, Subcommand};
use imap::auth::{remove_user, set_password, MailLocation, PasswordScheme, StoredPassword, UserDb};

use super::first_run::{add_local_user, default_scheme, random_password};
use crate::config::Config;

/// Arguments of `dormouse user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: UserAction,
}

/// `user` actions.
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user to the passwd file (home: <data_dir>/home/NAME). The running
    /// server picks it up without restart.
    Add {
        /// Login name.
        name: String,
        /// Password; without it a random one is generated and printed once.
        #[arg(long)]
        password: Option<String>,
        /// Hash scheme (default: users.default_scheme).
        #[arg(long)]
        scheme: Option<String>,
    },
    /// Remove a user from the passwd file. The mail stays where it is (the
    /// path is printed); new logins fail at once, open sessions run on until
    /// they end or are kicked.
    #[command(alias = "delete", alias = "remove")]
    Del {
        /// Login name.
        name: String,
    },
    /// Set a user's password, keeping the rest of the passwd line.
    Passwd {
        /// Login name.
        name: String,
        /// New password; without it a random one is generated and printed once.
        #[arg(long)]
        password: Option<String>,
        /// Hash scheme (default: users.default_scheme).
        #[arg(long)]
        scheme: Option<String>,
    },
    /// Print a passwd-file hash of a password (argument, else one line of stdin).
    Hash {
        /// The password.
        password: Option<String>,
        /// Hash scheme: ARGON2ID, SHA512-CRYPT, BLF-CRYPT, PLAIN (default: users.default_scheme).
        #[arg(long)]
        scheme: Option<String>,
    },
    /// List the users of the passwd file.
    List,
}

fn scheme(config: &Config, name: Option<&str>) -> anyhow::Result<PasswordScheme> {
    match name {
        Some(n) => PasswordScheme::parse(n)
            .with_context(|| format!("unknown scheme {n:?} (ARGON2ID, SHA512-CRYPT, BLF-CRYPT, PLAIN)")),
        None => default_scheme(config),
    }
}

/// The password given, or a random one (then `true`: print it once).
fn given_or_random(password: Option<String>) -> (String, bool) {
    match password {
        Some(p) => (p, false),
        None => (random_password(16), true),
    }
}

/// Runs a `user` action.
pub fn run(config: &Config, args: UserArgs) -> anyhow::Result<()> {
    match args.action {
        UserAction::Add { name, password, scheme: s } => {
            let scheme = scheme(config, s.as_deref())?;
            let (password, generated) = given_or_random(password);
            add_local_user(config, &name, &password, scheme)?;
            println!("added user {name} to {}", config.passwd_file().display());
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
        UserAction::Del { name } => {
            let removed = remove_user(&config.passwd_file(), &name)?;
            println!("removed user {name} from {}", config.passwd_file().display());
            if !removed.home.is_empty() {
                println!("their mail is kept in {}", removed.home);
            }
            Ok(())
        }
        UserAction::Passwd { name, password, scheme: s } => {
            let scheme = scheme(config, s.as_deref())?;
            let (password, generated) = given_or_random(password);
            set_password(&config.passwd_file(), &name, StoredPassword::hash(scheme, &password)?)?;
            println!("changed the password of {name} in {}", config.passwd_file().display());
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
        UserAction::Hash { password, scheme: s } => {
            let scheme = scheme(config, s.as_deref())?;
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            println!("{}", StoredPassword::hash(scheme, &password)?.to_field());
            Ok(())
        }
        UserAction::List => {
            let location = MailLocation::parse(&config.users.mail_location)?;
            let db = UserDb::open(config.passwd_file(), location)?;
            for name in db.names() {
                if let Some(u) = db.lookup(&name) {
                    println!("{name}\t{}", u.maildir.display());
                }
            }
            Ok(())
        }
    }
}
