//! `dormouse push-relay`: turns external events into HTTP webhooks and Web
//! Push messages, per registration, without ever slowing the IMAP side.

pub mod attempt;
pub mod config;

pub use attempt::AttemptOutcome;
pub use config::{GlobalEndpoint, RelayConfig, RelaySource};
