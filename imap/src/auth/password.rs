//! Password schemes of Dovecot's passwd-file: parsing `{SCHEME}hash`,
//! verifying, and hashing new passwords.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

/// A password scheme we can verify (and, for most, produce).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordScheme {
    /// Clear text (`{PLAIN}`, `{CLEARTEXT}`, `{CLEAR}`): compared in constant time.
    Plain,
    /// glibc SHA-512 crypt, `$6$...` (`{SHA512-CRYPT}`).
    Sha512Crypt,
    /// glibc SHA-256 crypt, `$5$...` (`{SHA256-CRYPT}`); verify only by default.
    Sha256Crypt,
    /// bcrypt, `$2y$...` (`{BLF-CRYPT}`).
    BlfCrypt,
    /// Argon2id in PHC format, `$argon2id$...` (`{ARGON2ID}`).
    Argon2id,
    /// Argon2i in PHC format, `$argon2i$...` (`{ARGON2I}`); verify only by default.
    Argon2i,
}

impl PasswordScheme {
    /// Parses a scheme name as written between braces (case-insensitive).
    /// `CRYPT` is not a scheme of its own: see [`StoredPassword::parse`].
    pub fn parse(name: &str) -> Option<Self> {
        let upper = name.trim().to_ascii_uppercase();
        Some(match upper.as_str() {
            "PLAIN" | "CLEARTEXT" | "CLEAR" => PasswordScheme::Plain,
            "SHA512-CRYPT" => PasswordScheme::Sha512Crypt,
            "SHA256-CRYPT" => PasswordScheme::Sha256Crypt,
            "BLF-CRYPT" => PasswordScheme::BlfCrypt,
            "ARGON2ID" => PasswordScheme::Argon2id,
            "ARGON2I" => PasswordScheme::Argon2i,
            _ => return None,
        })
    }

    /// The canonical Dovecot name, e.g. `SHA512-CRYPT`.
    pub fn name(self) -> &'static str {
        match self {
            PasswordScheme::Plain => "PLAIN",
            PasswordScheme::Sha512Crypt => "SHA512-CRYPT",
            PasswordScheme::Sha256Crypt => "SHA256-CRYPT",
            PasswordScheme::BlfCrypt => "BLF-CRYPT",
            PasswordScheme::Argon2id => "ARGON2ID",
            PasswordScheme::Argon2i => "ARGON2I",
        }
    }

    /// Detects the scheme of a bare crypt(3)-style hash by its `$id$` prefix
    /// (what Dovecot's `{CRYPT}` scheme accepts).
    pub fn detect_crypt(hash: &str) -> Option<Self> {
        if hash.starts_with("$6$") {
            Some(PasswordScheme::Sha512Crypt)
        } else if hash.starts_with("$5$") {
            Some(PasswordScheme::Sha256Crypt)
        } else if ["$2y$", "$2b$", "$2a$", "$2x$"].iter().any(|p| hash.starts_with(p)) {
            Some(PasswordScheme::BlfCrypt)
        } else if hash.starts_with("$argon2id$") {
            Some(PasswordScheme::Argon2id)
        } else if hash.starts_with("$argon2i$") {
            Some(PasswordScheme::Argon2i)
        } else {
            None
        }
    }
}

impl fmt::Display for PasswordScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors producing a password hash.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The scheme cannot produce hashes here.
    #[error("cannot produce {0} hashes")]
    Unsupported(PasswordScheme),
    /// The hashing library failed.
    #[error("{scheme} hashing failed: {message}")]
    Failed {
        /// The scheme.
        scheme: PasswordScheme,
        /// The library's message (never contains the password).
        message: String,
    },
}

/// A password as stored in the passwd file: scheme plus encoded hash.
/// `Debug` never shows the hash (a `{PLAIN}` hash is the password).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPassword {
    scheme: PasswordScheme,
    hash: String,
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredPassword({}, <redacted>)", self.scheme)
    }
}

impl StoredPassword {
    /// Parses a passwd-file password field: `{SCHEME}hash`, `{CRYPT}$6$...`,
    /// or a bare crypt hash (Dovecot's default scheme for passwd-file is CRYPT).
    /// Returns `None` for unknown schemes and unrecognized bare values
    /// (an empty field means "no password": login is impossible).
    pub fn parse(field: &str) -> Option<Self> {
        if let Some(rest) = field.strip_prefix('{') {
            let (name, hash) = rest.split_once('}')?;
            let scheme = if name.eq_ignore_ascii_case("CRYPT") {
                PasswordScheme::detect_crypt(hash)?
            } else {
                PasswordScheme::parse(name)?
            };
            return Some(StoredPassword { scheme, hash: hash.to_string() });
        }
        let scheme = PasswordScheme::detect_crypt(field)?;
        Some(StoredPassword { scheme, hash: field.to_string() })
    }

    /// The scheme.
    pub fn scheme(&self) -> PasswordScheme {
        self.scheme
    }

    /// The passwd-file field, `{SCHEME}hash`.
    pub fn to_field(&self) -> String {
        format!("{{{}}}{}", self.scheme, self.hash)
    }

    /// Hashes `password` with `scheme` (fresh random salt; library default costs,
    /// bcrypt cost 10 like Dovecot's `doveadm pw`).
    ///
    /// # Errors
    /// [`HashError`] if the scheme cannot hash here or the library fails.
    pub fn hash(scheme: PasswordScheme, password: &str) -> Result<Self, HashError> {
        let failed = |message: String| HashError::Failed { scheme, message };
        let hash = match scheme {
            PasswordScheme::Plain => password.to_string(),
            PasswordScheme::Sha512Crypt => {
                sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default())
                    .map_err(|e| failed(format!("{e:?}")))?
            }
            PasswordScheme::Sha256Crypt => {
                sha_crypt::sha256_simple(password, &sha_crypt::Sha256Params::default())
                    .map_err(|e| failed(format!("{e:?}")))?
            }
            PasswordScheme::BlfCrypt => bcrypt::hash_with_result(password, 10)
                .map_err(|e| failed(e.to_string()))?
                .format_for_version(bcrypt::Version::TwoY),
            PasswordScheme::Argon2id => {
                let mut salt = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut salt);
                let salt = SaltString::encode_b64(&salt).map_err(|e| failed(e.to_string()))?;
                argon2::Argon2::default()
                    .hash_password(password.as_bytes(), &salt)
                    .map_err(|e| failed(e.to_string()))?
                    .to_string()
            }
            PasswordScheme::Argon2i => return Err(HashError::Unsupported(scheme)),
        };
        Ok(StoredPassword { scheme, hash })
    }

    /// True if `password` matches. Constant-time for `PLAIN`; the other
    /// schemes compare derived hashes. A malformed stored hash never matches.
    /// The crypt schemes take seconds-scale CPU by design: call from a
    /// blocking context (`spawn_blocking`), not on an async executor thread.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self.scheme {
            PasswordScheme::Plain => constant_time_eq(self.hash.as_bytes(), password),
            PasswordScheme::Sha512Crypt => std::str::from_utf8(password)
                .map(|p| sha_crypt::sha512_check(p, &self.hash).is_ok())
                .unwrap_or(false),
            PasswordScheme::Sha256Crypt => std::str::from_utf8(password)
                .map(|p| sha_crypt::sha256_check(p, &self.hash).is_ok())
                .unwrap_or(false),
            PasswordScheme::BlfCrypt => bcrypt::verify(password, &self.hash).unwrap_or(false),
            PasswordScheme::Argon2id | PasswordScheme::Argon2i => match PasswordHash::new(&self.hash) {
                Ok(parsed) => argon2::Argon2::default().verify_password(password, &parsed).is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths
/// (and not on where they differ).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    let len = a.len().max(b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(std::hint::black_box(x ^ y));
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_variants() {
        let p = StoredPassword::parse("{PLAIN}secret").unwrap();
        assert!(p.verify(b"secret"));
        assert!(!p.verify(b"secreT"));
        assert!(!p.verify(b"secret2"));
        assert!(!p.verify(b""));
        assert!(StoredPassword::parse("{cleartext}x").unwrap().verify(b"x"));
        assert!(format!("{p:?}").contains("redacted"));
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab\xff", b"ab"));
    }

    /// Hashes made by Dovecot 2.3's `doveadm pw` on this machine.
    #[test]
    fn dovecot_made_hashes_verify() {
        let cases = [
            "{SHA512-CRYPT}$6$E4i3fyJIcy9jurAC$myIZNW45nBRDuRvhA21/Zgqqojmsw6vEdFirqM04IU9/hb071hMx/.t76kqhK5.OtAJWrrh.h9GNw8J6mcgxC0",
            "{BLF-CRYPT}$2y$05$EFYJHMDrFJWogJlXBEMqY.Q8YbOdPS.ZcOzGDMfFSRFdjAzUH9/he",
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$uDc+6bJ9UTsDgdNNiCvE9g$za6gCLTRrcbMEf62QV0CjpAhy13EYx3WZl7kTjMM1z4",
        ];
        for field in cases {
            let p = StoredPassword::parse(field).unwrap_or_else(|| panic!("parse {field}"));
            assert!(p.verify(b"pass"), "{field}");
            assert!(!p.verify(b"Pass"), "{field}");
        }
    }

    #[test]
    fn crypt_detection() {
        let made = StoredPassword::hash(PasswordScheme::Sha512Crypt, "pw").unwrap();
        let bare = made.to_field().trim_start_matches("{SHA512-CRYPT}").to_string();
        for field in [format!("{{CRYPT}}{bare}"), bare] {
            let p = StoredPassword::parse(&field).unwrap();
            assert_eq!(p.scheme(), PasswordScheme::Sha512Crypt);
            assert!(p.verify(b"pw"));
        }
        assert!(StoredPassword::parse("{MD5}abc").is_none());
        assert!(StoredPassword::parse("{CRYPT}xyz").is_none());
        assert!(StoredPassword::parse("nothing").is_none());
        assert!(StoredPassword::parse("").is_none());
    }

    #[test]
    fn round_trip_every_hashing_scheme() {
        for scheme in [
            PasswordScheme::Plain,
            PasswordScheme::Sha512Crypt,
            PasswordScheme::Sha256Crypt,
            PasswordScheme::BlfCrypt,
            PasswordScheme::Argon2id,
        ] {
            let p = StoredPassword::hash(scheme, "hunter2 ü").unwrap();
            let reparsed = StoredPassword::parse(&p.to_field()).unwrap();
            assert_eq!(reparsed.scheme(), scheme);
            assert!(reparsed.verify("hunter2 ü".as_bytes()), "{scheme}");
            assert!(!reparsed.verify(b"hunter2"), "{scheme}");
        }
        assert!(matches!(
            StoredPassword::hash(PasswordScheme::Argon2i, "x"),
            Err(HashError::Unsupported(PasswordScheme::Argon2i))
        ));
    }

    #[test]
    fn malformed_hashes_never_match() {
        for field in ["{SHA512-CRYPT}$6$broken", "{BLF-CRYPT}$2y$99$x", "{ARGON2ID}$argon2id$v=19$garbage"] {
            let p = StoredPassword::parse(field).unwrap();
            assert!(!p.verify(b"pass"));
            assert!(!p.verify(b""));
        }
    }
}
