//! The server's ed25519 signing key: generated on first start, stored in the Synapse format
//! (`ed25519 <version> <unpadded-base64 seed>`), so operators can move keys between servers.

use std::path::Path;

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use rand::RngCore;
use ruma::{
    CanonicalJsonObject,
    signatures::{Ed25519KeyPair, KeyPair},
};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// PKCS#8 v1 prefix for an ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

pub struct ServerSigningKey {
    /// `ed25519:<version>`
    pub key_id: String,
    pub version: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for ServerSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ServerSigningKey {
    /// Loads the key at `path`, or generates and writes one (mode 0600) when the file is missing.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        let err = |reason: String| KeyError::File {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(err),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::generate_into(path),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Generates a fresh key with a new version and writes it to `path` (mode 0600), replacing
    /// what was there (the write goes through a temporary file and a rename).
    pub fn generate_into(path: &Path) -> Result<Self, KeyError> {
        let err = |reason: String| KeyError::File {
            path: path.display().to_string(),
            reason,
        };
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let mut version_bytes = [0u8; 4];
        rand::rng().fill_bytes(&mut version_bytes);
        let version = format!(
            "a_{}",
            STANDARD_NO_PAD
                .encode(version_bytes)
                .replace(['+', '/'], "x")
        );
        let text = format!("ed25519 {version} {}\n", STANDARD_NO_PAD.encode(seed));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = path.with_extension("new");
        write_private(&tmp, &text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
        Self::from_seed(&seed, version).map_err(err)
    }

    /// Rotates the key at `path`: the current key's public half is appended to `old_keys_path`
    /// (as `ed25519:<version> <public key> <expired_ts>`, kept to verify what it signed) and a new
    /// key replaces it. Returns the new key.
    pub fn rotate(path: &Path, old_keys_path: &Path, now_ms: u64) -> Result<Self, KeyError> {
        let current = Self::load_or_generate(path)?;
        let err = |reason: String| KeyError::File {
            path: old_keys_path.display().to_string(),
            reason,
        };
        let mut old = match std::fs::read_to_string(old_keys_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        if !old.is_empty() && !old.ends_with('\n') {
            old.push('\n');
        }
        old.push_str(&format!(
            "{} {} {now_ms}\n",
            current.key_id,
            current.public_key_base64()
        ));
        let tmp = old_keys_path.with_extension("new");
        std::fs::write(&tmp, old).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, old_keys_path).map_err(|e| err(e.to_string()))?;
        Self::generate_into(path)
    }

    /// Parses `ed25519 <version> <seed>` (the first line is the current key).
    pub fn parse(text: &str) -> Result<Self, String> {
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .ok_or("empty key file")?;
        let mut parts = line.split_whitespace();
        let (Some("ed25519"), Some(version), Some(seed)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err("expected `ed25519 <version> <base64 seed>`".into());
        };
        let seed = STANDARD_NO_PAD
            .decode(seed.trim_end_matches('='))
            .map_err(|e| format!("seed is not base64: {e}"))?;
        Self::from_seed(&seed, version.to_owned())
    }

    fn from_seed(seed: &[u8], version: String) -> Result<Self, String> {
        if seed.len() != 32 {
            return Err(format!("seed must be 32 bytes, got {}", seed.len()));
        }
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(seed);
        let pair = Ed25519KeyPair::from_der(&der, version.clone()).map_err(|e| e.to_string())?;
        Ok(Self {
            key_id: format!("ed25519:{version}"),
            version,
            pair,
        })
    }

    /// The public key, unpadded base64.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.pair.public_key())
    }

    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// Signs a JSON object in place (adds `signatures.<server>.<key_id>`).
    pub fn sign_json(
        &self,
        server_name: &str,
        object: &mut CanonicalJsonObject,
    ) -> Result<(), KeyError> {
        ruma::signatures::sign_json(server_name, &self.pair, object)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// Raw signature over bytes (for callers that build their own canonical form).
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_bytes().to_vec()
    }
}

/// A previous key of ours: `(key id, public key, expired_ts)`.
pub type OldKey = (String, String, u64);

/// Reads the old keys written by [`ServerSigningKey::rotate`]; a missing file means none.
pub fn load_old_keys(path: &Path) -> Result<Vec<OldKey>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(KeyError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            });
        }
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(id), Some(key), Some(ts)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::File {
                path: path.display().to_string(),
                reason: format!(
                    "line {}: expected `<key id> <public key> <expired_ts>`",
                    n + 1
                ),
            });
        };
        let ts: u64 = ts.parse().map_err(|_| KeyError::File {
            path: path.display().to_string(),
            reason: format!("line {}: expired_ts is not a number", n + 1),
        })?;
        out.push((id.to_owned(), key.to_owned(), ts));
    }
    Ok(out)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_reload_gives_same_key() {
        let dir = std::env::temp_dir().join(format!("ganglion-key-{}", std::process::id()));
        let path = dir.join("signing.key");
        let _ = std::fs::remove_file(&path);
        let a = ServerSigningKey::load_or_generate(&path).expect("generate");
        let b = ServerSigningKey::load_or_generate(&path).expect("reload");
        assert_eq!(a.public_key_base64(), b.public_key_base64());
        assert_eq!(a.key_id, b.key_id);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotation_keeps_the_old_public_key() {
        let dir = std::env::temp_dir().join(format!("ganglion-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("signing.key");
        let old_path = dir.join("old_signing_keys");
        let first = ServerSigningKey::load_or_generate(&path).expect("generate");
        let second = ServerSigningKey::rotate(&path, &old_path, 1234).expect("rotate");
        assert_ne!(first.key_id, second.key_id);
        let reloaded = ServerSigningKey::load_or_generate(&path).expect("reload");
        assert_eq!(reloaded.key_id, second.key_id);
        let old = load_old_keys(&old_path).expect("old keys");
        assert_eq!(
            old,
            vec![(first.key_id.clone(), first.public_key_base64(), 1234)]
        );
        ServerSigningKey::rotate(&path, &old_path, 5678).expect("rotate again");
        assert_eq!(load_old_keys(&old_path).expect("old keys").len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rejects_garbage() {
        assert!(ServerSigningKey::parse("nonsense").is_err());
        assert!(ServerSigningKey::parse("ed25519 a_x AAAA").is_err());
    }
}
