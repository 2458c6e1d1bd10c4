//! Identifier helpers: random opaque strings and the hashing of secrets.
//!
//! Access tokens are 256-bit random strings; only their SHA-256 is stored, so a database dump does
//! not leak usable credentials. A fast hash is right here because the input already has full
//! entropy (unlike passwords, which use argon2 in the client API).

use rand::{Rng, distr::Alphanumeric};
use sha2::{Digest, Sha256};

/// A random alphanumeric string of `len` characters from the OS-seeded CSPRNG.
pub fn random_string(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// A random decimal number of `len` digits, the first not zero (guest accounts' localparts).
pub fn random_digits(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|i| char::from(b'0' + rng.random_range(if i == 0 { 1..10 } else { 0..10 }))).collect()
}

/// Hex SHA-256 of a high-entropy secret (access tokens), the form stored in the database.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_differ_and_have_the_requested_length() {
        let a = random_string(32);
        let b = random_string(32);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn token_hash_is_stable_hex() {
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
