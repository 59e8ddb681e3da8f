//! VAPID (RFC 8292): the server's P-256 key pair, kept in a PEM file, and
//! the signed JWTs that identify this server to push services.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use p256::SecretKey;
use storage_hooks::durable;

use crate::web_push::WebPushError;

/// Lifetime of a VAPID JWT. RFC 8292 §2 caps `exp` at 24 hours; 12 hours
/// leaves room for clock skew between us and the push service.
pub const VAPID_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A cached token is signed anew once less than this is left of it, so no
/// request ever carries a token about to expire.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(6 * 3600);

/// Most audiences (push service origins) whose tokens are cached; there are
/// a handful in practice (FCM, Mozilla, Apple, Microsoft), the bound only
/// stops odd registrations from growing the cache without end.
const TOKEN_CACHE_MAX: usize = 256;

/// The VAPID key pair and the JWTs signed with it.
pub struct VapidSigner {
    key: SigningKey,
    /// Uncompressed public point, base64url without padding.
    public_key: String,
    /// The `sub` claim.
    subject: String,
    /// Signed tokens per audience, with their `exp` (UNIX seconds): one
    /// ECDSA signature per origin and 6 hours instead of one per message.
    tokens: Mutex<HashMap<String, (String, u64)>>,
}

impl std::fmt::Debug for VapidSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key never reaches logs.
        f.debug_struct("VapidSigner").field("public_key", &self.public_key).field("subject", &self.subject).finish_non_exhaustive()
    }
}

impl VapidSigner {
    /// Loads the key pair from `path`, creating the file (mode 0600,
    /// written under a temp name and linked into place, so two processes
    /// starting at once end up with the same key) when it does not exist.
    ///
    /// # Errors
    /// [`WebPushError::ReadKey`], [`WebPushError::InvalidKey`],
    /// [`WebPushError::WriteKey`], [`WebPushError::InvalidSubject`].
    pub fn load_or_create(path: &Path, subject: &str) -> Result<VapidSigner, WebPushError> {
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err(WebPushError::InvalidSubject(subject.to_owned()));
        }
        let secret = match std::fs::read(path) {
            Ok(bytes) => parse_key(path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(path)?,
            Err(source) => return Err(WebPushError::ReadKey { path: path.to_owned(), source }),
        };
        let key = SigningKey::from(&secret);
        let public_key = URL_SAFE_NO_PAD.encode(secret.public_key().to_sec1_bytes());
        Ok(VapidSigner { key, public_key, subject: subject.to_owned(), tokens: Mutex::new(HashMap::new()) })
    }

    /// The public key as a browser's `applicationServerKey` wants it:
    /// the 65-byte uncompressed P-256 point, base64url without padding.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header value for a push service at `audience`
    /// (an origin such as `https://fcm.googleapis.com`):
    /// `vapid t=<JWT>, k=<public key>`.
    pub fn authorization(&self, audience: &str) -> String {
        let now = unix_secs(SystemTime::now());
        let mut tokens = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let token = match tokens.get(audience) {
            Some((token, exp)) if *exp > now + TOKEN_REFRESH_MARGIN.as_secs() => token.clone(),
            _ => {
                let exp = now + VAPID_TOKEN_LIFETIME.as_secs();
                let token = self.sign_token(audience, exp);
                if tokens.len() >= TOKEN_CACHE_MAX {
                    tokens.clear();
                }
                tokens.insert(audience.to_owned(), (token.clone(), exp));
                token
            }
        };
        format!("vapid t={token}, k={}", self.public_key)
    }

    /// A JWT (RFC 7519, ES256) with the claims RFC 8292 §2 asks for.
    fn sign_token(&self, audience: &str, exp: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": audience, "exp": exp, "sub": self.subject });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        // ES256 (RFC 7518 §3.4): ECDSA P-256 over SHA-256, the signature as
        // the 64-byte R || S, which is what `Signature::to_bytes` gives.
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, what we write) or
/// SEC1 (`BEGIN EC PRIVATE KEY`, what `openssl ecparam -genkey` and most
/// Web Push tools write).
fn parse_key(path: &Path, bytes: &[u8]) -> Result<SecretKey, WebPushError> {
    let invalid = |reason: String| WebPushError::InvalidKey { path: path.to_owned(), reason };
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("not a text (PEM) file".into()))?;
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        SecretKey::from_sec1_pem(text.trim()).map_err(|e| invalid(format!("bad SEC1 EC key: {e}")))
    } else if text.contains("-----BEGIN PRIVATE KEY-----") {
        SecretKey::from_pkcs8_pem(text.trim()).map_err(|e| invalid(format!("bad PKCS#8 key (or not a P-256 key): {e}")))
    } else {
        Err(invalid("no PEM private key block found".into()))
    }
    .inspect(|_| warn_if_readable_by_others(path))
}

/// Makes a new key, stores it at `path`, and returns whichever key ends up
/// there (another process may have been first).
fn create_key(path: &Path) -> Result<SecretKey, WebPushError> {
    let write_err = |path: &Path, source| WebPushError::WriteKey { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    durable::create_dir_all_private(&dir).map_err(|e| write_err(&dir, e))?;
    let secret = SecretKey::generate();
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| write_err(path, std::io::Error::other(format!("PEM encoding: {e}"))))?;
    let tmp = durable::temp_path(path);
    let written = (|| {
        let mut f = durable::create_new_private(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        // A hard link never replaces an existing file: if another process
        // created the key meanwhile, we use its key instead of ours.
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            let _ = durable::fsync_dir(&dir);
            tracing::info!(path = %path.display(), "created a new VAPID key pair");
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(path).map_err(|source| WebPushError::ReadKey { path: path.to_owned(), source })?;
            parse_key(path, &bytes)
        }
        Err(e) => Err(write_err(path, e)),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "VAPID private key file is readable by group or others; chmod 600 it");
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::VerifyingKey;

    #[test]
    fn token_verifies_and_carries_claims() {
        let dir = tempfile::tempdir().unwrap();
        let signer = VapidSigner::load_or_create(&dir.path().join("k.pem"), "mailto:ops@example.org").unwrap();
        let header = signer.authorization("https://push.example.net");
        let (t, k) = header.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
        assert_eq!(k, signer.public_key());
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net");
        assert_eq!(claims["sub"], "mailto:ops@example.org");
        let exp = claims["exp"].as_u64().unwrap();
        let now = unix_secs(SystemTime::now());
        assert!(exp > now && exp <= now + 24 * 3600, "exp {exp} now {now}");
        let vk = VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap()).unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        vk.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).unwrap();
        // Cached per audience, distinct across audiences.
        assert_eq!(signer.authorization("https://push.example.net"), header);
        assert_ne!(signer.authorization("https://other.example.net"), header);
    }

    #[test]
    fn sec1_pem_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sec1.pem");
        let secret = SecretKey::generate();
        std::fs::write(&path, secret.to_sec1_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        let signer = VapidSigner::load_or_create(&path, "https://example.org/contact").unwrap();
        assert_eq!(signer.public_key(), URL_SAFE_NO_PAD.encode(secret.public_key().to_sec1_bytes()));
    }

    #[test]
    fn bad_subject_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = VapidSigner::load_or_create(&dir.path().join("k.pem"), "ops@example.org").unwrap_err();
        assert!(err.to_string().contains("mailto:"), "{err}");
    }
}
