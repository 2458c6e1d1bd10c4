//! The homeserver's ed25519 signing key.
//!
//! The key pair signs every event this server creates and, later, every federation request. It is
//! kept as the PKCS#8 document ruma produces; the binary reads and writes that document to disk,
//! this type only holds it. No IO happens here.

use std::sync::Arc;

use base64::Engine as _;
use ruma::{
    OwnedServerName, ServerName,
    signatures::{Ed25519KeyPair, KeyPair as _},
};

/// The server's identity: its name and the signing key that vouches for it.
#[derive(Clone)]
pub struct ServerKey {
    server_name: OwnedServerName,
    pair: Arc<Ed25519KeyPair>,
}

/// Why a stored key document could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid signing key: {0}")]
pub struct KeyError(String);

impl ServerKey {
    /// A fresh PKCS#8 document for a new key.
    pub fn generate_pkcs8() -> Vec<u8> {
        Ed25519KeyPair::generate().to_vec()
    }

    /// Loads a key from its PKCS#8 document; `version` is the key name after `ed25519:`.
    pub fn from_pkcs8(server_name: &ServerName, document: &[u8], version: &str) -> Result<Self, KeyError> {
        let pair =
            Ed25519KeyPair::from_der(document, version.to_owned()).map_err(|e| KeyError(e.to_string()))?;
        Ok(Self { server_name: server_name.to_owned(), pair: Arc::new(pair) })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// The key id as it appears in signatures, e.g. `ed25519:a_bcDE`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// The public key, unpadded standard base64 as the key APIs publish it.
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.pair.public_key())
    }

    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// Signs raw bytes (used for JSON signing by callers that build their own canonical form).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_bytes().to_vec()
    }
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("server_name", &self.server_name)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_and_has_an_id() {
        let doc = ServerKey::generate_pkcs8();
        let name: OwnedServerName = "example.org".try_into().unwrap();
        let key = ServerKey::from_pkcs8(&name, &doc, "abc").unwrap();
        let again = ServerKey::from_pkcs8(&name, &doc, "abc").unwrap();
        assert_eq!(key.key_id(), "ed25519:abc");
        assert_eq!(key.public_key_base64(), again.public_key_base64());
        assert_eq!(key.public_key_base64().len(), 43);
    }

    #[test]
    fn garbage_is_rejected() {
        let name: OwnedServerName = "example.org".try_into().unwrap();
        assert!(ServerKey::from_pkcs8(&name, b"not a key", "x").is_err());
    }
}
