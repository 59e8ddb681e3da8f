//! LMTP (RFC 2033) for delivery from an MTA such as Postfix: a sans-I/O
//! session state machine ([`LmtpSession`]) and a thin tokio driver
//! ([`LmtpServer`]) on TCP and UNIX sockets.
//!
//! Extensions: PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES, SIZE. After the
//! final dot the server answers once per accepted recipient, each only after
//! that recipient's copy is fsynced.

mod command;
mod server;
mod session;
#[cfg(test)]
mod session_tests;

pub use command::{Command, MailFrom, SyntaxError};
pub use server::{LmtpCountsSnapshot, LmtpServer, LmtpSettings};
pub use session::{
    AcceptedRecipient, BareLineEndings, DataSink, DeliveryStatus, LmtpLimits, LmtpSession, RcptVerdict, RecipientResolver,
    Transaction,
};
