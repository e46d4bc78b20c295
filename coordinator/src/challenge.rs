//! Join challenges, without state: the ephemeral X25519 secret of a challenge
//! is derived from a per-process key and the nonce, and the nonce carries
//! its issue time. A restart invalidates outstanding challenges, which costs
//! a re-joining agent one more round trip at most.
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

/// How long a challenge may be answered.
pub const VALIDITY_SECS: i64 = 60;
/// Clock skew tolerated for a nonce "from the future" (never, in one process).
const SKEW_SECS: i64 = 5;
const NONCE_LEN: usize = 8 + 16;
const EPHEMERAL_LABEL: &[u8] = b"weave join challenge ephemeral v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChallengeError {
    #[error("the join challenge is malformed or was not issued by this coordinator")]
    Malformed,
    #[error("the join challenge has expired (older than {VALIDITY_SECS} s, or from before a coordinator restart)")]
    Stale,
    #[error("the join proof does not verify: this host does not hold the private key of that node")]
    WrongProof,
}

/// Issues and checks challenges. Holds a secret: no Debug.
pub struct Challenger {
    key: [u8; 32],
}

impl Default for Challenger {
    fn default() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }
}

impl Challenger {
    fn ephemeral(&self, nonce: &[u8]) -> StaticSecret {
        // invariant: HMAC accepts keys of any length.
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(EPHEMERAL_LABEL);
        m.update(nonce);
        let bytes: [u8; 32] = m.finalize().into_bytes().into();
        StaticSecret::from(bytes)
    }

    /// A new challenge issued at `now` (unix seconds): (nonce, ephemeral public key).
    pub fn issue(&self, now: i64) -> (Vec<u8>, [u8; 32]) {
        let mut nonce = vec![0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&now.to_be_bytes());
        rand::rng().fill_bytes(&mut nonce[8..]);
        let public = PublicKey::from(&self.ephemeral(&nonce)).to_bytes();
        (nonce, public)
    }

    /// Checks that `proof` answers challenge `nonce` for (`name`, `public_key`).
    pub fn verify(
        &self,
        now: i64,
        nonce: &[u8],
        name: &str,
        public_key: &[u8; 32],
        proof: &[u8],
    ) -> Result<(), ChallengeError> {
        if nonce.len() != NONCE_LEN {
            return Err(ChallengeError::Malformed);
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&nonce[..8]);
        let issued = i64::from_be_bytes(issued);
        if issued > now.saturating_add(SKEW_SECS) || now.saturating_sub(issued) > VALIDITY_SECS {
            return Err(ChallengeError::Stale);
        }
        let shared = self.ephemeral(nonce).diffie_hellman(&PublicKey::from(*public_key));
        // A low-order node key gives an all-zero secret anyone could compute.
        if !shared.was_contributory() {
            return Err(ChallengeError::WrongProof);
        }
        if weave_proto::proof::verify(shared.as_bytes(), nonce, name, public_key, proof) {
            Ok(())
        } else {
            Err(ChallengeError::WrongProof)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(node: &StaticSecret, nonce: &[u8], coordinator: [u8; 32], name: &str) -> [u8; 32] {
        let shared = node.diffie_hellman(&PublicKey::from(coordinator));
        weave_proto::proof::compute(shared.as_bytes(), nonce, name, PublicKey::from(node).as_bytes())
    }

    #[test]
    fn only_the_key_holder_answers_and_only_while_fresh() {
        let c = Challenger::default();
        let node = StaticSecret::from([7u8; 32]);
        let public = PublicKey::from(&node).to_bytes();
        let (nonce, eph) = c.issue(1000);
        let proof = answer(&node, &nonce, eph, "h1");
        assert_eq!(c.verify(1010, &nonce, "h1", &public, &proof), Ok(()));
        assert_eq!(c.verify(1010, &nonce, "h2", &public, &proof), Err(ChallengeError::WrongProof));
        let other = StaticSecret::from([8u8; 32]);
        let forged = answer(&other, &nonce, eph, "h1");
        assert_eq!(c.verify(1010, &nonce, "h1", &public, &forged), Err(ChallengeError::WrongProof));
        assert_eq!(c.verify(1000 + VALIDITY_SECS + 1, &nonce, "h1", &public, &proof), Err(ChallengeError::Stale));
        assert_eq!(c.verify(990, &nonce, "h1", &public, &proof), Err(ChallengeError::Stale));
        assert_eq!(c.verify(1010, &nonce[1..], "h1", &public, &proof), Err(ChallengeError::Malformed));
        // Another process (a restart) does not accept it.
        assert_eq!(Challenger::default().verify(1010, &nonce, "h1", &public, &proof), Err(ChallengeError::WrongProof));
        // A low-order public key is refused even with the "right" all-zero MAC.
        let zero = weave_proto::proof::compute(&[0; 32], &nonce, "h1", &[0; 32]);
        assert_eq!(c.verify(1010, &nonce, "h1", &[0; 32], &zero), Err(ChallengeError::WrongProof));
    }
}
