//! Join token and admin credential parsing (proto/src/token.rs): whatever
//! string a user pastes or a file holds. Invariants: no panic; whatever
//! parses prints back to a string that parses to the same value; a pin
//! prints back to itself.

use weave_proto::token::{AdminCredential, JoinToken, Pin, hash_secret};

pub fn run(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(t) = JoinToken::parse(s) {
        let again = JoinToken::parse(&t.to_string()).expect("a printed join token parses");
        assert!(again == t, "join token round trip");
        // Debug must never show the secret.
        assert!(!format!("{t:?}").contains(&t.secret), "secret in Debug");
    }
    if let Ok(c) = AdminCredential::parse(s) {
        let again = AdminCredential::parse(&c.to_string()).expect("a printed admin credential parses");
        assert!(again == c, "admin credential round trip");
        assert!(!format!("{c:?}").contains(&c.secret), "secret in Debug");
    }
    if let Some(p) = Pin::parse(s) {
        assert!(Pin::parse(&p.to_string()) == Some(p), "pin round trip");
    }
    let _ = hash_secret(s);
}
