//! WireGuard (X25519) public keys as the API carries them: 32 raw bytes,
//! shown in `wg`'s base64 form and, in logs, as a short fingerprint.
use base64::{Engine as _, engine::general_purpose::STANDARD};

/// A WireGuard public key. Private keys never get a type here: they never
/// leave the agent's host.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WgPublicKey([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a WireGuard public key is 32 bytes, got {0}")]
pub struct KeyLengthError(pub usize);

impl WgPublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        <[u8; 32]>::try_from(bytes).map(Self).map_err(|_| KeyLengthError(bytes.len()))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The `wg` base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Option<Self> {
        STANDARD.decode(s.trim()).ok().and_then(|b| Self::from_bytes(&b).ok())
    }
}

impl std::fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgPublicKey({})", fingerprint(&self.0))
    }
}

impl std::fmt::Display for WgPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// First 8 characters of the base64 form: enough to tell keys apart in logs.
pub fn fingerprint(key: &[u8]) -> String {
    let mut s = STANDARD.encode(key);
    s.truncate(8);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_base64_and_checks_length() {
        let k = WgPublicKey::from_bytes(&[7u8; 32]).unwrap();
        assert_eq!(WgPublicKey::from_base64(&k.to_base64()), Some(k));
        assert_eq!(WgPublicKey::from_bytes(&[1, 2, 3]), Err(KeyLengthError(3)));
        assert_eq!(WgPublicKey::from_base64("not base64!"), None);
        assert_eq!(format!("{k:?}").len(), "WgPublicKey()".len() + 8);
    }
}
