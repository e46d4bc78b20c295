//! The strings people copy between hosts.
//!
//! - A join token `wv1.<address>.<pin>.<id>.<secret>` lets `agent join` find
//!   the coordinator, trust exactly its identity (the pin) and prove it may join,
//!   with nothing else to copy (kubeadm's discovery hash, in one string).
//! - An admin credential `wva1.<address>.<pin>.<secret>` does the same for weavectl.
//!
//! `<address>` and `<pin>` are base64url without padding (an address has dots
//! and colons); `<id>` is hex; `<secret>` is base64url. The coordinator stores
//! only SHA-256 hashes of secrets.
use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// SHA-256 of the coordinator certificate's SubjectPublicKeyInfo (DER).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// Parses `sha256:<64 hex>` or bare hex.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.trim().strip_prefix("sha256:").unwrap_or(s.trim());
        let bytes = hex::decode(hex).ok()?;
        <[u8; 32]>::try_from(bytes.as_slice()).ok().map(Self)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a weave {kind}: it should start with '{prefix}'")]
    Prefix { kind: &'static str, prefix: &'static str },
    #[error("malformed {kind}: {what}")]
    Malformed { kind: &'static str, what: &'static str },
}

/// A join token: where the coordinator is, who it is, and a one-time-ish secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub coordinator: String,
    pub pin: Pin,
    pub id: String,
    pub secret: String,
}

/// What weavectl needs to act as admin from any host.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminCredential {
    pub coordinator: String,
    pub pin: Pin,
    pub secret: String,
}

const JOIN_PREFIX: &str = "wv1";

/// Whether `id` has a token id's form: 16 hex digits.
pub fn is_token_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
const ADMIN_PREFIX: &str = "wva1";

impl JoinToken {
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let kind = "join token";
        let parts = split(s, kind, JOIN_PREFIX, 4)?;
        let (coordinator, pin) = locate(kind, parts[0], parts[1])?;
        let id = parts[2];
        if !is_token_id(id) {
            return Err(TokenError::Malformed { kind, what: "the token id is not 16 hex digits" });
        }
        let secret = check_secret(kind, parts[3])?;
        Ok(Self { coordinator, pin, id: id.to_ascii_lowercase(), secret })
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, p) = (URL_SAFE_NO_PAD.encode(&self.coordinator), URL_SAFE_NO_PAD.encode(self.pin.0));
        write!(f, "{JOIN_PREFIX}.{a}.{p}.{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("coordinator", &self.coordinator)
            .field("pin", &self.pin)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AdminCredential {
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let kind = "admin credential";
        let parts = split(s, kind, ADMIN_PREFIX, 3)?;
        let (coordinator, pin) = locate(kind, parts[0], parts[1])?;
        let secret = check_secret(kind, parts[2])?;
        Ok(Self { coordinator, pin, secret })
    }
}

impl fmt::Display for AdminCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, p) = (URL_SAFE_NO_PAD.encode(&self.coordinator), URL_SAFE_NO_PAD.encode(self.pin.0));
        write!(f, "{ADMIN_PREFIX}.{a}.{p}.{}", self.secret)
    }
}

impl fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminCredential")
            .field("coordinator", &self.coordinator)
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a secret, hex: the only form in which the coordinator keeps one.
/// Secrets are 256 random bits, so a fast hash is enough (nothing to brute-force).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn split<'a>(s: &'a str, kind: &'static str, prefix: &'static str, parts: usize) -> Result<Vec<&'a str>, TokenError> {
    let s = s.trim();
    let rest = s.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')).ok_or(TokenError::Prefix { kind, prefix })?;
    let v: Vec<&str> = rest.split('.').collect();
    if v.len() != parts || v.iter().any(|p| p.is_empty()) {
        return Err(TokenError::Malformed { kind, what: "wrong number of parts (was it cut when copied?)" });
    }
    Ok(v)
}

fn locate(kind: &'static str, addr: &str, pin: &str) -> Result<(String, Pin), TokenError> {
    let bad_addr = TokenError::Malformed { kind, what: "the coordinator address does not decode" };
    let addr = URL_SAFE_NO_PAD.decode(addr).map_err(|_| bad_addr.clone())?;
    let addr = String::from_utf8(addr).map_err(|_| bad_addr.clone())?;
    if addr.is_empty() || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad_addr);
    }
    let pin = URL_SAFE_NO_PAD
        .decode(pin)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or(TokenError::Malformed { kind, what: "the coordinator pin is not 32 bytes" })?;
    Ok((addr, Pin(pin)))
}

fn check_secret(kind: &'static str, secret: &str) -> Result<String, TokenError> {
    match URL_SAFE_NO_PAD.decode(secret) {
        // Every secret weave makes is 32 bytes: anything else was cut or mistyped.
        Ok(b) if b.len() == 32 => Ok(secret.to_string()),
        _ => Err(TokenError::Malformed {
            kind,
            what: "the secret is not 32 bytes of base64url (was it cut when copied?)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken {
            coordinator: "192.0.2.1:6783".into(),
            pin: Pin([9; 32]),
            id: "0123456789abcdef".into(),
            secret: URL_SAFE_NO_PAD.encode([5u8; 32]),
        }
    }

    #[test]
    fn join_token_round_trips() {
        let t = token();
        let s = t.to_string();
        assert!(s.starts_with("wv1."));
        assert_eq!(JoinToken::parse(&s).unwrap(), t);
        assert_eq!(JoinToken::parse(&format!("  {s}\n")).unwrap(), t);
    }

    #[test]
    fn admin_credential_round_trips_with_ipv6_address() {
        let c = AdminCredential { coordinator: "[2001:db8::1]:6783".into(), pin: Pin([1; 32]), secret: token().secret };
        assert_eq!(AdminCredential::parse(&c.to_string()).unwrap(), c);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(
            JoinToken::parse("hello").unwrap_err().to_string(),
            "not a weave join token: it should start with 'wv1'"
        );
        let s = token().to_string();
        let cut = &s[..s.len() - 20];
        assert!(JoinToken::parse(cut).is_err());
        let parts: Vec<&str> = s.split('.').collect();
        assert!(matches!(JoinToken::parse(&parts[..4].join(".")), Err(TokenError::Malformed { .. })));
        let bad_pin = format!("wv1.{}.AAAA.{}.{}", parts[1], parts[3], parts[4]);
        assert_eq!(
            JoinToken::parse(&bad_pin).unwrap_err().to_string(),
            "malformed join token: the coordinator pin is not 32 bytes"
        );
        assert!(AdminCredential::parse(&s).is_err(), "a join token is not an admin credential");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = token();
        assert!(!format!("{t:?}").contains(&t.secret));
    }

    #[test]
    fn pin_parses_its_display() {
        let p = Pin([0xab; 32]);
        assert_eq!(Pin::parse(&p.to_string()), Some(p));
        assert_eq!(Pin::parse("sha256:00"), None);
    }
}
