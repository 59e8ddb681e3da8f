//! One delivery endpoint: a user's registration or a global endpoint from
//! the configuration, ready to send to.

use crate::relay::GlobalEndpoint;
use crate::{ExternalEventKind, Registration, Target};

/// Where and how an endpoint's deliveries are sent.
#[derive(Clone)]
pub enum EndpointTarget {
    /// A signed webhook.
    Webhook {
        /// The parsed URL (may carry basic-auth credentials).
        url: url::Url,
        /// The HMAC key.
        secret: Vec<u8>,
    },
    /// A Web Push subscription.
    Webpush {
        /// The push service URL.
        endpoint: String,
        /// The subscription's P-256 key (base64url).
        p256dh: String,
        /// The subscription's auth secret (base64url).
        auth: String,
    },
}

impl std::fmt::Debug for EndpointTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointTarget::Webhook { url, .. } => f
                .debug_struct("Webhook")
                .field("url", &crate::registration::display_url(url.as_str()))
                .finish_non_exhaustive(),
            EndpointTarget::Webpush { endpoint, .. } => f
                .debug_struct("Webpush")
                .field("endpoint", &crate::registration::display_url(endpoint))
                .finish_non_exhaustive(),
        }
    }
}

/// An endpoint with its filter.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The registration id, or `global-<n>` for the n-th configured endpoint.
    pub key: String,
    /// The user whose events it gets; `None` for a global endpoint (everyone's).
    pub user: Option<String>,
    /// Event types it gets; empty means all.
    pub events: Vec<ExternalEventKind>,
    /// Where deliveries go.
    pub target: EndpointTarget,
    /// The URL without credentials, for logs and dead letters.
    pub display_url: String,
}

impl Endpoint {
    /// The endpoint of a stored registration.
    ///
    /// # Errors
    /// A stored URL or subscription that no longer passes the checks.
    pub fn from_registration(reg: &Registration) -> Result<Endpoint, String> {
        match &reg.target {
            Target::Webhook { url, secret } => {
                let parsed = crate::registration::parse_webhook_url(url).map_err(|e| e.to_string())?;
                Ok(Endpoint {
                    key: reg.id.clone(),
                    user: Some(reg.user.clone()),
                    events: reg.events.clone(),
                    display_url: reg.target.display_url(),
                    target: EndpointTarget::Webhook { url: parsed, secret: secret.clone().into_bytes() },
                })
            }
            Target::Webpush { endpoint, p256dh, auth } => {
                crate::web_push::validate_subscription(endpoint, p256dh, auth)?;
                Ok(Endpoint {
                    key: reg.id.clone(),
                    user: Some(reg.user.clone()),
                    events: reg.events.clone(),
                    display_url: reg.target.display_url(),
                    target: EndpointTarget::Webpush { endpoint: endpoint.clone(), p256dh: p256dh.clone(), auth: auth.clone() },
                })
            }
        }
    }

    /// The `index`-th global endpoint of the configuration.
    ///
    /// # Errors
    /// A bad URL, secret or event name.
    pub fn from_global(index: usize, ep: &GlobalEndpoint) -> Result<Endpoint, String> {
        let url = crate::registration::parse_webhook_url(&ep.url).map_err(|e| e.to_string())?;
        crate::registration::check_secret(&ep.secret).map_err(|e| e.to_string())?;
        let events = ep.events.iter().map(|n| ExternalEventKind::parse(n)).collect::<Result<Vec<_>, _>>()?;
        Ok(Endpoint {
            key: format!("global-{index}"),
            user: None,
            events,
            display_url: crate::registration::display_url(&ep.url),
            target: EndpointTarget::Webhook { url, secret: ep.secret.clone().into_bytes() },
        })
    }

    /// True if events of `kind` go here.
    pub fn wants(&self, kind: ExternalEventKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}
