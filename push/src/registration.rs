//! Push registrations: who wants which events where, and how a new one is
//! checked before it is stored.

use serde::{Deserialize, Serialize};

use crate::registration_store::RegistrationError;
use crate::ExternalEventKind;

/// One registration: a user's events (optionally filtered by type) go to
/// one target. Stored durably by the relay's registration store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Stable id (`r-` and 16 hex digits), used to remove it.
    pub id: String,
    /// The user whose events are delivered.
    pub user: String,
    /// Event types to deliver; empty means all.
    pub events: Vec<ExternalEventKind>,
    /// Where to deliver.
    pub target: Target,
    /// Creation time, milliseconds since the UNIX epoch.
    pub created_ms: u64,
}

impl Registration {
    /// True if events of `kind` go to this registration.
    pub fn wants(&self, kind: ExternalEventKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }

    /// A new registration with a fresh id; `events` are RFC 5423 names
    /// (empty = all). Checks the event names and, for webhooks, the URL and
    /// secret; the caller checks that the user exists (the store does it in
    /// [`crate::registration_store::RegistrationStore::add`]).
    ///
    /// # Errors
    /// [`RegistrationError::UnknownEvent`], [`RegistrationError::InvalidUrl`],
    /// [`RegistrationError::InvalidSecret`], [`RegistrationError::InvalidSubscription`].
    pub fn new(user: &str, events: &[String], target: Target) -> Result<Registration, RegistrationError> {
        if user.is_empty() {
            return Err(RegistrationError::UnknownUser(String::new()));
        }
        let mut kinds = Vec::new();
        for name in events {
            let kind = ExternalEventKind::parse(name.trim()).map_err(RegistrationError::UnknownEvent)?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        match &target {
            Target::Webhook { url, secret } => {
                parse_webhook_url(url)?;
                check_secret(secret)?;
            }
            Target::Webpush { endpoint, p256dh, auth } => {
                crate::web_push::validate_subscription(endpoint, p256dh, auth).map_err(RegistrationError::InvalidSubscription)?;
            }
        }
        Ok(Registration {
            id: format!("r-{:016x}", rand::random::<u64>()),
            user: user.to_owned(),
            events: kinds,
            target,
            created_ms: storage_hooks::durable::now_ms(),
        })
    }
}

/// A delivery target.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Target {
    /// An HTTP(S) webhook, signed with HMAC-SHA256.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// HMAC key for the signature header.
        secret: String,
    },
    /// A Web Push subscription (the browser's `PushSubscription`).
    Webpush {
        /// The push service URL.
        endpoint: String,
        /// The user agent's P-256 public key, base64url (65 bytes uncompressed).
        p256dh: String,
        /// The 16-byte authentication secret, base64url.
        auth: String,
    },
}

impl Target {
    /// The target's URL without user name or password, for logs, `list`
    /// and the dead-letter log.
    pub fn display_url(&self) -> String {
        match self {
            Target::Webhook { url, .. } => display_url(url),
            Target::Webpush { endpoint, .. } => display_url(endpoint),
        }
    }

    /// `"webhook"` or `"webpush"`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "webhook",
            Target::Webpush { .. } => "webpush",
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets, URL credentials and subscription keys never reach logs.
        match self {
            Target::Webhook { url, .. } => {
                f.debug_struct("Webhook").field("url", &display_url(url)).finish_non_exhaustive()
            }
            Target::Webpush { endpoint, .. } => {
                f.debug_struct("Webpush").field("endpoint", &display_url(endpoint)).finish_non_exhaustive()
            }
        }
    }
}

/// Shortest HMAC key accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest HMAC key accepted.
pub const MAX_SECRET_LEN: usize = 512;

/// Parses and checks a webhook URL: absolute, `http` or `https`, with a host.
///
/// # Errors
/// [`RegistrationError::InvalidUrl`] saying what is wrong (the message
/// never repeats a password from the URL).
pub fn parse_webhook_url(text: &str) -> Result<url::Url, RegistrationError> {
    let bad = |reason: String| RegistrationError::InvalidUrl { url: display_url(text), reason };
    let url = url::Url::parse(text).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!("scheme {:?} is not http or https", url.scheme())));
    }
    match url.host_str() {
        None | Some("") => return Err(bad("no host".into())),
        Some(_) => {}
    }
    if url.fragment().is_some() {
        return Err(bad("a fragment (#...) is never sent to the server".into()));
    }
    Ok(url)
}

/// Checks an HMAC key: 16 to 512 printable ASCII characters without spaces.
///
/// # Errors
/// [`RegistrationError::InvalidSecret`] (never echoing the secret).
pub fn check_secret(secret: &str) -> Result<(), RegistrationError> {
    if secret.len() < MIN_SECRET_LEN || secret.len() > MAX_SECRET_LEN {
        return Err(RegistrationError::InvalidSecret(format!(
            "must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters long (got {})",
            secret.len()
        )));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RegistrationError::InvalidSecret("only printable ASCII without spaces is allowed".into()));
    }
    Ok(())
}

/// A fresh random HMAC key: 32 random bytes as 64 hex digits.
pub fn generate_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// `text` with any user name and password removed (URLs that do not parse
/// are cut before an `@` that might follow credentials).
pub fn display_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if !url.username().is_empty() || url.password().is_some() {
                let _ = url.set_username("");
                let _ = url.set_password(None);
            }
            url.to_string()
        }
        Err(_) => match text.rsplit_once('@') {
            Some((_, host)) => format!("<credentials removed>@{host}"),
            None => text.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str, secret: &str) -> Target {
        Target::Webhook { url: url.into(), secret: secret.into() }
    }

    #[test]
    fn urls_are_checked() {
        let secret = generate_secret();
        assert!(Registration::new("a", &[], hook("https://example.org/x", &secret)).is_ok());
        for bad in ["example.org/x", "ftp://example.org/", "http://", "https://h/#frag", "not a url", "file:///etc/passwd"] {
            let err = Registration::new("a", &[], hook(bad, &secret)).unwrap_err();
            assert!(matches!(err, RegistrationError::InvalidUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_never_shown() {
        let t = hook("https://joe:hunter2@example.org/hook", "0123456789abcdef");
        assert_eq!(t.display_url(), "https://example.org/hook");
        assert!(!format!("{t:?}").contains("hunter2"));
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        let err = parse_webhook_url("gopher://joe:hunter2@example.org/").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn events_and_secrets_are_checked() {
        let err = Registration::new("a", &["MessageNew".into(), "Bogus".into()], hook("http://h/", &generate_secret()))
            .unwrap_err();
        assert!(err.to_string().contains("Bogus") && err.to_string().contains("MessageNew"), "{err}");
        let r = Registration::new("a", &["FlagsSet".into(), "FlagsSet".into()], hook("http://h/", &generate_secret()))
            .unwrap();
        assert_eq!(r.events, [ExternalEventKind::FlagsSet]);
        assert!(r.wants(ExternalEventKind::FlagsSet) && !r.wants(ExternalEventKind::MessageNew));
        assert!(matches!(Registration::new("a", &[], hook("http://h/", "short")), Err(RegistrationError::InvalidSecret(_))));
        assert!(matches!(
            Registration::new("a", &[], hook("http://h/", "with a space in it!")),
            Err(RegistrationError::InvalidSecret(_))
        ));
        assert_eq!(generate_secret().len(), 64);
        assert!(r.id.starts_with("r-") && r.id.len() == 18);
    }
}
