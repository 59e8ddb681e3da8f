//! STARTTLS, LOGIN and AUTHENTICATE PLAIN (with SASL-IR).

use std::time::Instant;

use crate::session::machine::Phase;
use crate::session::{AuthFailure, AuthenticatedUser, HandOver, LoginRequest, Session, SessionEvent};

impl Session {
    /// STARTTLS: answer OK, drop buffered plaintext, ask the driver for TLS.
    pub(crate) fn op_starttls(&mut self, tag: &str) {
        if self.options.tls_active {
            self.bad(tag, "TLS is already active.");
        } else if !self.options.starttls_available {
            self.bad(tag, "STARTTLS is not available.");
        } else {
            self.ok(tag, "Begin TLS negotiation now.");
            // Anything pipelined after STARTTLS was sent in plaintext and
            // must not be executed after the handshake (CVE-2011-0411 class).
            self.framer.discard_all();
            self.after.push_back(SessionEvent::StartTls);
        }
    }

    /// LOGIN user password.
    pub(crate) fn op_login(&mut self, tag: &str, user: &[u8], pass: &[u8], now: Instant) {
        if !self.plaintext_ok() {
            self.no(tag, "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.");
            return;
        }
        self.check_credentials(tag, user, pass, now);
    }

    /// AUTHENTICATE mechanism [initial-response].
    pub(crate) fn op_authenticate(&mut self, tag: &str, mechanism: &str, ir: Option<Vec<u8>>, now: Instant) {
        if !mechanism.eq_ignore_ascii_case("PLAIN") {
            self.no(tag, "Unsupported authentication mechanism.");
            return;
        }
        if !self.plaintext_ok() {
            self.no(tag, "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.");
            return;
        }
        match ir {
            Some(data) => self.finish_plain_at(tag, &data, now),
            None => {
                self.out.extend_from_slice(b"+ \r\n");
                self.phase = Phase::SaslResponse(tag.to_string());
                self.framer.set_line_only(true);
            }
        }
    }

    /// Completes PLAIN with the decoded client response (continuation path).
    pub(crate) fn finish_plain(&mut self, tag: &str, data: &[u8]) {
        let now = self.last_activity;
        self.finish_plain_at(tag, data, now);
    }

    fn finish_plain_at(&mut self, tag: &str, data: &[u8], now: Instant) {
        // RFC 4616: [authzid] NUL authcid NUL passwd
        let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
        if parts.len() != 3 || parts[1].is_empty() {
            self.bad(tag, "Invalid SASL PLAIN response.");
            return;
        }
        if !parts[0].is_empty() && parts[0] != parts[1] {
            self.no(tag, "[AUTHORIZATIONFAILED] Authorization as another user is not supported.");
            return;
        }
        self.check_credentials(tag, parts[1], parts[2], now);
    }

    fn check_credentials(&mut self, tag: &str, user: &[u8], pass: &[u8], _now: Instant) {
        let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass)) else {
            self.auth_failed(tag, &AuthFailure::InvalidCredentials);
            return;
        };
        if self.options.defer_auth {
            self.phase = Phase::Verifying(tag.to_string());
            self.after.push_back(SessionEvent::VerifyLogin(LoginRequest { user: user.to_string(), password: pass.to_string() }));
            return;
        }
        let result = self.authenticator.verify(user, pass);
        self.finish_credentials(tag, result);
    }

    /// The driver's answer to [`SessionEvent::VerifyLogin`]: completes the
    /// login command that asked for it. Ignored if no login is pending.
    pub fn login_verified(&mut self, result: Result<AuthenticatedUser, AuthFailure>) {
        let Phase::Verifying(tag) = self.phase.clone() else {
            tracing::error!("login_verified without a pending login");
            return;
        };
        self.phase = Phase::NotAuthenticated;
        self.finish_credentials(&tag, result);
    }

    fn finish_credentials(&mut self, tag: &str, result: Result<AuthenticatedUser, AuthFailure>) {
        match result {
            Ok(au) => {
                tracing::debug!(user = %au.name, "credentials accepted");
                if self.options.hand_over_on_auth {
                    self.phase = Phase::Authenticated;
                    let caps = self.capabilities();
                    self.ok(tag, &format!("[CAPABILITY {caps}] Logged in"));
                    let pending_input = self.framer.take_unprocessed();
                    let h = HandOver {
                        user: au.name,
                        maildir: au.maildir,
                        enabled: self.enabled,
                        tls_active: self.options.tls_active,
                        pending_input,
                    };
                    self.phase = Phase::HandedOver;
                    self.after.push_back(SessionEvent::Authenticated(Box::new(h)));
                    return;
                }
                match crate::session::machine::open_user_store(&self.options, &au.name, au.maildir, self.hooks.clone()) {
                    Ok(store) => {
                        self.store = Some(store);
                        self.phase = Phase::Authenticated;
                        let caps = self.capabilities();
                        self.ok(tag, &format!("[CAPABILITY {caps}] Logged in"));
                    }
                    Err(e) => {
                        tracing::error!(user = %au.name, error = %e, "cannot open mail store");
                        self.no(tag, "[UNAVAILABLE] Mail store unavailable; try again later.");
                    }
                }
            }
            Err(f) => self.auth_failed(tag, &f),
        }
    }

    fn auth_failed(&mut self, tag: &str, f: &AuthFailure) {
        match f {
            AuthFailure::InvalidCredentials => {
                self.auth_failures += 1;
                self.no(tag, "[AUTHENTICATIONFAILED] Authentication failed.");
                if self.auth_failures >= self.options.limits.max_auth_failures {
                    self.out.extend_from_slice(b"* BYE Too many invalid authentication attempts.\r\n");
                    self.close();
                }
            }
            AuthFailure::Limit(text) => {
                let text = crate::session::machine::sanitize(text);
                self.no(tag, &format!("[LIMIT] {text}"));
            }
            AuthFailure::Temporary(reason) => {
                tracing::warn!(reason = %reason, "authentication backend unavailable");
                self.no(tag, "[UNAVAILABLE] Temporary authentication failure.");
            }
        }
    }
}
