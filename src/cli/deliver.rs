//! `dormouse deliver`: a local delivery agent like `dovecot-lda`.
//!
//! Reads one message from stdin and stores it durably in the user's
//! mailbox. Exit codes follow `sysexits.h` so an MTA (Postfix
//! `mailbox_command`, procmail, fetchmail `--mda`) knows whether to retry:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | delivered (fsynced) |
//! | 64 | usage error |
//! | 65 | bad input: empty message, or larger than `lmtp.max_message_size` |
//! | 67 | unknown user |
//! | 75 | temporary failure (storage, I/O): retry later |
//! | 78 | configuration error (bad config, unreadable passwd file) |
//!
//! A `--mailbox` that does not exist falls back to INBOX (like dovecot-lda
//! without mailbox auto-creation); stderr says so. A successful delivery
//! publishes one `MessageNew` event on the configured bus (a bus that cannot
//! be opened is logged and does not fail the delivery).

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use imap::auth::{MailLocation, UserDb};
use imap::delivery::{Deliverer, DeliveryError, TraceHeaders, INBOX};

use super::event_hooks::EventHooks;
use super::exit;
use crate::config::Config;

/// Arguments of `dormouse deliver`.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// The user to deliver to (as in the passwd file).
    #[arg(long, short = 'd', value_name = "USER")]
    pub user: String,
    /// Target mailbox; falls back to INBOX if it does not exist.
    #[arg(long, short = 'm', value_name = "NAME", default_value = INBOX)]
    pub mailbox: String,
    /// Envelope sender: adds a `Return-Path:` header ("" for the null sender).
    #[arg(long, short = 'f', value_name = "ADDRESS")]
    pub from: Option<String>,
    /// Envelope recipient: adds a `Delivered-To:` header.
    #[arg(long, short = 'a', value_name = "ADDRESS")]
    pub recipient: Option<String>,
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("dormouse deliver: {message}");
    ExitCode::from(code)
}

/// Runs the delivery and maps the outcome to an exit code.
pub fn run(config: &Config, args: &DeliverArgs) -> ExitCode {
    let location = match MailLocation::parse(&config.users.mail_location) {
        Ok(l) => l,
        Err(e) => return fail(exit::CONFIG, e),
    };
    let users = match UserDb::open(config.passwd_file(), location) {
        Ok(db) => Arc::new(db),
        Err(e) => return fail(exit::CONFIG, e),
    };
    let Some(user) = users.lookup(&args.user) else {
        return fail(exit::NOUSER, format_args!("unknown user {:?}", args.user));
    };
    let limit = config.lmtp.max_message_size;
    let mut message = Vec::new();
    // Read one byte past the limit to detect oversize without unbounded memory.
    if let Err(e) = std::io::stdin().lock().take(limit.saturating_add(1)).read_to_end(&mut message) {
        return fail(exit::TEMPFAIL, format_args!("cannot read the message from stdin: {e}"));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(exit::TEMPFAIL, format_args!("cannot start the async runtime: {e}")),
    };
    let events = runtime.block_on(EventHooks::open(config));
    let deliverer = Deliverer::new(users, events.hooks.clone(), limit);
    let trace = TraceHeaders { return_path: args.from.clone(), delivered_to: args.recipient.clone(), received: None };
    let outcome = deliverer.deliver(&user, &args.mailbox, &message, &trace);
    // The MessageNew event leaves before the process does.
    runtime.block_on(events.flush());
    match outcome {
        Ok(d) => {
            if d.fell_back_to_inbox {
                eprintln!("dormouse deliver: mailbox {:?} does not exist; delivered to INBOX", args.mailbox);
            }
            tracing::info!(user = %user.name, mailbox = %d.mailbox, uid = d.uid, uidvalidity = d.uidvalidity, "delivered");
            ExitCode::SUCCESS
        }
        Err(DeliveryError::TooLarge { limit, .. }) => {
            fail(exit::DATAERR, format_args!("message larger than lmtp.max_message_size ({limit} bytes); not delivered"))
        }
        Err(e @ DeliveryError::InvalidMessage(_)) => fail(exit::DATAERR, e),
        Err(e) => fail(exit::TEMPFAIL, format_args!("temporary failure, message not delivered: {e}")),
    }
}
