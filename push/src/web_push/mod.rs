//! Web Push (RFC 8030) with message encryption (RFC 8291) and VAPID
//! (RFC 8292): the second kind of relay registration.

pub mod config;

pub use config::WebPushConfig;
