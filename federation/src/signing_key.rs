//! The signing key file: one line, `ed25519 <version> <unpadded base64 seed>`, the format Synapse
//! and Dendrite use, so keys can be moved between servers.

use std::{io::Write, path::Path};

use base64::Engine as _;
use homeserver_core::{ids::random_string, keys::ServerKey};
use rand::RngCore;
use ruma::ServerName;

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read signing key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write signing key {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("signing key {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
}

/// DER prefix of a PKCS#8 (v1) Ed25519 private key; the 32-byte seed follows it.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

fn pkcs8_from_seed(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}

/// Parses the key file's text.
pub fn parse(server_name: &ServerName, text: &str, path: &str) -> Result<ServerKey, SigningKeyError> {
    let malformed =
        |reason: &str| SigningKeyError::Malformed { path: path.to_owned(), reason: reason.to_owned() };
    let line = text.lines().find(|l| !l.trim().is_empty()).ok_or_else(|| malformed("the file is empty"))?;
    let mut parts = line.split_whitespace();
    let (Some(algorithm), Some(version), Some(seed)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("expected `ed25519 <version> <base64 seed>`"));
    };
    if algorithm != "ed25519" {
        return Err(malformed("only ed25519 keys are supported"));
    }
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(seed.trim_end_matches('='))
        .map_err(|_| malformed("the seed is not base64"))?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| malformed("the seed must be 32 bytes"))?;
    ServerKey::from_pkcs8(server_name, &pkcs8_from_seed(&seed), version)
        .map_err(|e| malformed(&e.to_string()))
}

/// Loads the key at `path`, creating a fresh one (mode 0600) if the file does not exist.
pub fn load_or_create(server_name: &ServerName, path: &Path) -> Result<(ServerKey, bool), SigningKeyError> {
    let display = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((parse(server_name, &text, &display)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            let version = format!("a_{}", random_string(4));
            let line = format!(
                "ed25519 {version} {}\n",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed)
            );
            let write_err = |source| SigningKeyError::Write { path: display.clone(), source };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(write_err)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(write_err)?;
            file.write_all(line.as_bytes()).map_err(write_err)?;
            file.sync_all().map_err(write_err)?;
            Ok((parse(server_name, &line, &display)?, true))
        }
        Err(source) => Err(SigningKeyError::Read { path: display, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_is_reloaded_identically() {
        let dir = std::env::temp_dir().join(format!("lattice-key-{}", random_string(8)));
        let path = dir.join("signing.key");
        let name: &ServerName = "example.org".try_into().unwrap();
        let (created, fresh) = load_or_create(name, &path).unwrap();
        assert!(fresh);
        let (loaded, fresh) = load_or_create(name, &path).unwrap();
        assert!(!fresh);
        assert_eq!(created.public_key_base64(), loaded.public_key_base64());
        assert_eq!(created.key_id(), loaded.key_id());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_files_are_reported() {
        let name: &ServerName = "example.org".try_into().unwrap();
        for text in ["", "rsa a_1 AAAA", "ed25519 a_1 !!!", "ed25519 a_1 AAAA"] {
            assert!(matches!(parse(name, text, "k"), Err(SigningKeyError::Malformed { .. })), "{text}");
        }
    }

    #[test]
    fn synapse_format_keys_are_accepted() {
        // A key in Synapse's format (seed of 32 zero bytes).
        let name: &ServerName = "example.org".try_into().unwrap();
        let key = parse(name, "ed25519 a_abcd AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", "k").unwrap();
        assert_eq!(key.key_id(), "ed25519:a_abcd");
        // The public key of the all-zero Ed25519 seed (RFC 8032 derivation).
        assert_eq!(key.public_key_base64(), "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik");
    }
}
