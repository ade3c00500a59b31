//! Identifiers and secrets: random ids with a readable prefix, and hashing of write keys and tokens
//! so that the stores never hold a secret in clear.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A random identifier such as `src_5kq3...`: `prefix`, an underscore, 16 random bytes in URL-safe base64.
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_secret(12))
}

/// `bytes` random bytes, URL-safe base64 without padding.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of a write key, hex. Write keys are looked up on every request, so a fast hash is used:
/// they are long random strings, not passwords.
pub fn write_key_hash(write_key: &str) -> String {
    let digest = Sha256::digest(write_key.as_bytes());
    hex(&digest)
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = random_id("src");
        assert!(a.starts_with("src_"));
        assert_ne!(a, random_id("src"));
    }

    #[test]
    fn hash_is_stable_hex() {
        assert_eq!(
            write_key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
