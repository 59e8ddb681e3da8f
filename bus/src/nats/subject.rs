//! Opaque, subject-safe per-user subject names.

use sha2::{Digest, Sha256};

/// The opaque token of `user`: 32 lowercase hex characters of SHA-256.
pub fn user_token(user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// The subject carrying the events of `user`: `<prefix>.<user_token(user)>`.
pub fn subject_for_user(prefix: &str, user: &str) -> String {
    format!("{prefix}.{}", user_token(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_safe_and_distinct() {
        let names = ["alice", "a.b", "a*", "a>", "a b", "ü@example.org", "", "a.b.>", "*"];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            let t = user_token(n);
            assert_eq!(t.len(), 32);
            assert!(t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{t}");
            assert!(seen.insert(t));
        }
        assert_eq!(user_token("alice"), user_token("alice"));
        assert_eq!(subject_for_user("p.q", "x"), format!("p.q.{}", user_token("x")));
        // SHA-256("abc") starts with ba7816bf8f01cfea414140de5dae2223.
        assert_eq!(user_token("abc"), "ba7816bf8f01cfea414140de5dae2223");
    }
}
