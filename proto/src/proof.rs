//! The join proof: how a host shows, when it joins again, that it holds the
//! private key of the node it claims to be, without sending the key.
//!
//! The coordinator hands out a challenge: a nonce and an ephemeral X25519
//! public key made for that nonce. Both sides can then compute the same
//! X25519 shared secret (node private key with the coordinator's ephemeral
//! public key, or the ephemeral secret with the node's public key), and the
//! host answers with an HMAC keyed by it over the nonce, its name and its
//! public key. Anyone who only read the map (names and public keys are in it)
//! cannot compute the HMAC.
//!
//! This module holds only the HMAC part, so that both ends build exactly the
//! same message; each end does its X25519 with the key type it already has.
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Domain separation: this MAC means "join proof, version 1" and nothing else.
pub const LABEL: &[u8] = b"weave join proof v1";

type HmacSha256 = Hmac<Sha256>;

fn mac(shared: &[u8; 32], nonce: &[u8], name: &str, public_key: &[u8; 32]) -> HmacSha256 {
    // invariant: HMAC accepts keys of any length.
    let mut m = HmacSha256::new_from_slice(shared).expect("HMAC takes any key length");
    m.update(LABEL);
    // Lengths first, so that no (nonce, name) pair can read as another.
    m.update(&(nonce.len() as u32).to_be_bytes());
    m.update(nonce);
    m.update(&(name.len() as u32).to_be_bytes());
    m.update(name.as_bytes());
    m.update(public_key);
    m
}

/// The proof a host sends: HMAC-SHA256 keyed by the X25519 shared secret.
pub fn compute(shared: &[u8; 32], nonce: &[u8], name: &str, public_key: &[u8; 32]) -> [u8; 32] {
    mac(shared, nonce, name, public_key).finalize().into_bytes().into()
}

/// Checks a proof in constant time.
pub fn verify(shared: &[u8; 32], nonce: &[u8], name: &str, public_key: &[u8; 32], proof: &[u8]) -> bool {
    mac(shared, nonce, name, public_key).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_secret_nonce_name_and_key() {
        let (s, n, k) = ([1u8; 32], [2u8; 24], [3u8; 32]);
        let p = compute(&s, &n, "h1", &k);
        assert!(verify(&s, &n, "h1", &k, &p));
        assert!(!verify(&[9; 32], &n, "h1", &k, &p), "another shared secret");
        assert!(!verify(&s, &[4; 24], "h1", &k, &p), "another nonce");
        assert!(!verify(&s, &n, "h2", &k, &p), "another name");
        assert!(!verify(&s, &n, "h1", &[5; 32], &p), "another key");
        assert!(!verify(&s, &n, "h1", &k, &p[..31]), "a cut proof");
    }
}
