//! Web Push (RFC 8030) with message encryption (RFC 8291) and VAPID
//! (RFC 8292): the second kind of relay registration.
//!
//! [`WebPushSender`] holds the server's VAPID key pair (a PEM file made on
//! first use) and sends one external event at a time: the JSON is
//! encrypted for the subscription's keys (`aes128gcm`, one record of at
//! most 4096 bytes), signed for the push service's origin, and POSTed with
//! `TTL`, `Urgency` (`high` for `MessageNew`, else `normal`) and
//! `Content-Encoding: aes128gcm`. [`validate_subscription`] checks a
//! browser's `PushSubscription` before it is registered.

pub mod config;
pub mod error;
pub mod sender;
pub mod subscription;
pub mod vapid;

pub use config::WebPushConfig;
pub use error::WebPushError;
pub use sender::{vapid_key_path, Urgency, WebPushSender, MAX_ENCRYPTED_BYTES, MAX_PAYLOAD_BYTES};
pub use subscription::validate_subscription;
pub use vapid::VapidSigner;
