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

/// Upper bounds on the cost parameters a stored hash may ask for. A hash
/// over a bound is never verified (the login fails as with a wrong
/// password): its cost is chosen by whoever wrote the passwd file, and an
/// Argon2 `m=4194304` would make every LOGIN attempt allocate 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostLimits {
    /// Largest Argon2 memory cost (`m=`), in KiB.
    pub argon2_max_memory_kib: u32,
    /// Largest Argon2 time cost (`t=`, passes).
    pub argon2_max_time_cost: u32,
    /// Largest Argon2 parallelism (`p=`, lanes).
    pub argon2_max_parallelism: u32,
    /// Largest bcrypt cost (log2 of the rounds).
    pub bcrypt_max_cost: u32,
    /// Largest SHA-crypt `rounds=`.
    pub sha_crypt_max_rounds: u32,
}

impl Default for CostLimits {
    /// 256 MiB / 10 passes / 16 lanes for Argon2, bcrypt cost 14, 1,000,000
    /// SHA-crypt rounds: several times what `doveadm pw` and `dormouse user
    /// hash` produce, well under what would stall the master.
    fn default() -> Self {
        CostLimits {
            argon2_max_memory_kib: 256 * 1024,
            argon2_max_time_cost: 10,
            argon2_max_parallelism: 16,
            bcrypt_max_cost: 14,
            sha_crypt_max_rounds: 1_000_000,
        }
    }
}

/// A stored hash asks for more work than [`CostLimits`] allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{scheme} hash parameter {parameter}={value} is over the limit {limit}")]
pub struct CostExceeded {
    /// The scheme.
    pub scheme: PasswordScheme,
    /// The parameter (`m`, `t`, `p`, `cost`, `rounds`).
    pub parameter: &'static str,
    /// Its value in the hash.
    pub value: u64,
    /// The configured limit.
    pub limit: u64,
}

/// The work parameters of a stored hash: two hashes with the same key cost
/// the same to verify. Used to build a dummy hash for unknown users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CostKey {
    /// `{PLAIN}`: a comparison.
    Plain,
    /// SHA-crypt with this many rounds (`true` for SHA-512).
    ShaCrypt {
        /// SHA-512 (else SHA-256).
        sha512: bool,
        /// Rounds.
        rounds: u32,
    },
    /// bcrypt with this cost.
    Bcrypt(u32),
    /// Argon2 with these parameters (`true` for Argon2id).
    Argon2 {
        /// Argon2id (else Argon2i).
        id: bool,
        /// Memory, KiB.
        m: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
}

impl CostKey {
    /// Rough verification work, in units of about one SHA-512-crypt round,
    /// to compare the cost of different schemes (which hash the dummy check
    /// for unknown users must match). Only the order matters.
    pub fn work_estimate(&self) -> u64 {
        match *self {
            CostKey::Plain => 0,
            CostKey::ShaCrypt { sha512: true, rounds } => u64::from(rounds),
            // A SHA-256 round costs about two thirds of a SHA-512 one.
            CostKey::ShaCrypt { sha512: false, rounds } => u64::from(rounds) * 2 / 3,
            // bcrypt cost 10 is about 40 times SHA-512-crypt's default 5,000 rounds.
            CostKey::Bcrypt(cost) => 200u64.saturating_mul(1u64 << cost.min(40)),
            // Argon2: one 1 KiB block per KiB and pass, ~ three rounds' worth each.
            CostKey::Argon2 { m, t, .. } => u64::from(m).saturating_mul(u64::from(t)).saturating_mul(3),
        }
    }
}

/// Default SHA-crypt rounds (no `rounds=` in the hash).
const SHA_CRYPT_DEFAULT_ROUNDS: u32 = 5000;

/// Errors producing a password hash.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The password cannot be stored in this scheme (a `{PLAIN}` password
    /// is the field itself, so it cannot hold `:` or control characters,
    /// and an empty one would be "no password").
    #[error("a {scheme} password cannot {reason}; choose another password or a hashing scheme")]
    Unrepresentable {
        /// The scheme.
        scheme: PasswordScheme,
        /// What is wrong.
        reason: &'static str,
    },
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
            PasswordScheme::Plain => {
                let unrepresentable = |reason| HashError::Unrepresentable { scheme, reason };
                if password.is_empty() {
                    return Err(unrepresentable("be empty"));
                }
                if password.contains(':') {
                    return Err(unrepresentable("contain ':'"));
                }
                if password.chars().any(char::is_control) {
                    return Err(unrepresentable("contain control characters (CR, LF, NUL, ...)"));
                }
                password.to_string()
            }
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

    /// The work parameters of this hash; `None` if they cannot be read
    /// (a malformed hash, which never matches anyway).
    pub fn cost(&self) -> Option<CostKey> {
        match self.scheme {
            PasswordScheme::Plain => Some(CostKey::Plain),
            PasswordScheme::Sha512Crypt | PasswordScheme::Sha256Crypt => {
                let rest = self.hash.get(3..)?;
                let rounds = match rest.strip_prefix("rounds=") {
                    Some(r) => r.split('$').next()?.parse().ok()?,
                    None => SHA_CRYPT_DEFAULT_ROUNDS,
                };
                Some(CostKey::ShaCrypt { sha512: self.scheme == PasswordScheme::Sha512Crypt, rounds })
            }
            PasswordScheme::BlfCrypt => Some(CostKey::Bcrypt(self.hash.get(4..6)?.parse().ok()?)),
            PasswordScheme::Argon2id | PasswordScheme::Argon2i => {
                let parsed = PasswordHash::new(&self.hash).ok()?;
                let params = argon2::Params::try_from(&parsed).ok()?;
                Some(CostKey::Argon2 {
                    id: self.scheme == PasswordScheme::Argon2id,
                    m: params.m_cost(),
                    t: params.t_cost(),
                    p: params.p_cost(),
                })
            }
        }
    }

    /// Checks the hash's cost parameters against `limits`. A hash whose
    /// parameters cannot be read passes (it fails verification cheaply).
    ///
    /// # Errors
    /// [`CostExceeded`] naming the first parameter over its limit.
    pub fn check_cost(&self, limits: &CostLimits) -> Result<(), CostExceeded> {
        let over = |parameter, value: u32, limit: u32| {
            if value > limit {
                Err(CostExceeded { scheme: self.scheme, parameter, value: value.into(), limit: limit.into() })
            } else {
                Ok(())
            }
        };
        match self.cost() {
            None | Some(CostKey::Plain) => Ok(()),
            Some(CostKey::ShaCrypt { rounds, .. }) => over("rounds", rounds, limits.sha_crypt_max_rounds),
            Some(CostKey::Bcrypt(cost)) => over("cost", cost, limits.bcrypt_max_cost),
            Some(CostKey::Argon2 { m, t, p, .. }) => {
                over("m", m, limits.argon2_max_memory_kib)?;
                over("t", t, limits.argon2_max_time_cost)?;
                over("p", p, limits.argon2_max_parallelism)
            }
        }
    }

    /// A hash of a fixed throw-away password with the same work parameters
    /// as `key`: verifying against it costs what verifying against a real
    /// hash of that key costs. `None` if the library refuses the parameters.
    pub fn dummy_for(key: CostKey) -> Option<Self> {
        const PASSWORD: &str = "dormouse-dummy-password";
        let (scheme, hash) = match key {
            CostKey::Plain => (PasswordScheme::Plain, PASSWORD.to_string()),
            CostKey::ShaCrypt { sha512: true, rounds } => (
                PasswordScheme::Sha512Crypt,
                sha_crypt::sha512_simple(PASSWORD, &sha_crypt::Sha512Params::new(rounds as usize).ok()?).ok()?,
            ),
            CostKey::ShaCrypt { sha512: false, rounds } => (
                PasswordScheme::Sha256Crypt,
                sha_crypt::sha256_simple(PASSWORD, &sha_crypt::Sha256Params::new(rounds as usize).ok()?).ok()?,
            ),
            CostKey::Bcrypt(cost) => (
                PasswordScheme::BlfCrypt,
                bcrypt::hash_with_result(PASSWORD, cost).ok()?.format_for_version(bcrypt::Version::TwoY),
            ),
            CostKey::Argon2 { id, m, t, p } => {
                let algorithm = if id { argon2::Algorithm::Argon2id } else { argon2::Algorithm::Argon2i };
                let params = argon2::Params::new(m, t, p, None).ok()?;
                let mut salt = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut salt);
                let salt = SaltString::encode_b64(&salt).ok()?;
                let hash = argon2::Argon2::new(algorithm, argon2::Version::V0x13, params)
                    .hash_password(PASSWORD.as_bytes(), &salt)
                    .ok()?
                    .to_string();
                (if id { PasswordScheme::Argon2id } else { PasswordScheme::Argon2i }, hash)
            }
        };
        Some(StoredPassword { scheme, hash })
    }

    /// True if `password` matches. Constant-time for `PLAIN`; the other
    /// schemes compare derived hashes. A malformed stored hash never matches,
    /// nor does an empty one (`{PLAIN}` with nothing after it is "no
    /// password", not "the empty password"). Does not check the cost
    /// parameters: call [`StoredPassword::check_cost`] first.
    /// The crypt schemes take seconds-scale CPU by design: call from a
    /// blocking context (`spawn_blocking`), not on an async executor thread.
    pub fn verify(&self, password: &[u8]) -> bool {
        if self.hash.is_empty() {
            // Spend the comparison anyway: the time must not depend on it.
            let _ = constant_time_eq(b"-", password);
            return false;
        }
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

    #[test]
    fn empty_hash_never_matches() {
        for field in ["{PLAIN}", "{CLEARTEXT}", "{SHA512-CRYPT}", "{ARGON2ID}"] {
            let p = StoredPassword::parse(field).unwrap();
            assert!(!p.verify(b""), "{field}");
            assert!(!p.verify(b"x"), "{field}");
        }
    }

    #[test]
    fn cost_limits_refuse_expensive_hashes() {
        let limits = CostLimits::default();
        let over = [
            ("{ARGON2ID}$argon2id$v=19$m=1048576,t=3,p=1$uDc+6bJ9UTsDgdNNiCvE9g$za6gCLTRrcbMEf62QV0CjpAhy13EYx3WZl7kTjMM1z4", "m"),
            ("{ARGON2ID}$argon2id$v=19$m=65536,t=50,p=1$uDc+6bJ9UTsDgdNNiCvE9g$za6gCLTRrcbMEf62QV0CjpAhy13EYx3WZl7kTjMM1z4", "t"),
            ("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=64$uDc+6bJ9UTsDgdNNiCvE9g$za6gCLTRrcbMEf62QV0CjpAhy13EYx3WZl7kTjMM1z4", "p"),
            ("{BLF-CRYPT}$2y$31$EFYJHMDrFJWogJlXBEMqY.Q8YbOdPS.ZcOzGDMfFSRFdjAzUH9/he", "cost"),
            ("{SHA512-CRYPT}$6$rounds=999999999$E4i3fyJIcy9jurAC$myIZNW45nBRDuRvhA21/Zgqqojmsw6vEdFirqM04IU9/hb071hMx/.t76kqhK5.OtAJWrrh.h9GNw8J6mcgxC0", "rounds"),
        ];
        for (field, parameter) in over {
            let p = StoredPassword::parse(field).unwrap();
            assert_eq!(p.check_cost(&limits).unwrap_err().parameter, parameter, "{field}");
        }
        let tight = CostLimits { argon2_max_memory_kib: 1024, ..limits };
        let doveadm = StoredPassword::parse("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$uDc+6bJ9UTsDgdNNiCvE9g$za6gCLTRrcbMEf62QV0CjpAhy13EYx3WZl7kTjMM1z4").unwrap();
        assert!(doveadm.check_cost(&limits).is_ok());
        assert!(doveadm.check_cost(&tight).is_err());
        for scheme in [PasswordScheme::Plain, PasswordScheme::Sha512Crypt, PasswordScheme::BlfCrypt, PasswordScheme::Argon2id] {
            assert!(StoredPassword::hash(scheme, "pw").unwrap().check_cost(&limits).is_ok(), "{scheme}");
        }
    }

    #[test]
    fn dummy_has_the_same_cost_key() {
        for scheme in [PasswordScheme::Plain, PasswordScheme::Sha512Crypt, PasswordScheme::Sha256Crypt, PasswordScheme::BlfCrypt, PasswordScheme::Argon2id] {
            let real = StoredPassword::hash(scheme, "pw").unwrap();
            let key = real.cost().unwrap();
            let dummy = StoredPassword::dummy_for(key).unwrap();
            assert_eq!(dummy.cost(), Some(key), "{scheme}");
            assert_eq!(dummy.scheme(), scheme);
        }
        let key = CostKey::Argon2 { id: true, m: 4096, t: 4, p: 2 };
        assert_eq!(StoredPassword::dummy_for(key).unwrap().cost(), Some(key));
        let key = CostKey::ShaCrypt { sha512: true, rounds: 12_345 };
        assert_eq!(StoredPassword::dummy_for(key).unwrap().cost(), Some(key));
    }
}
