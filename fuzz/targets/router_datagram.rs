//! A UDP datagram into the router (agent/src/dataplane/router.rs
//! `Router::decapsulate`), from any source: a router with two peers, fed
//! records of `[source byte][length byte][datagram]`. Without keys the
//! fuzzer reaches the message parsing, the rate limiter and MAC checks, and
//! (from the seed corpus, made by `examples/seeds.rs` with the fixed keys) a
//! real handshake initiation and its mutations. Invariants: no panic;
//! nothing decrypts; everything the router sends is a WireGuard message.

#[path = "common/router.rs"]
mod common;

use common::{config, node, receive, source};

pub fn run(data: &[u8]) {
    let (a, b, c) = (node(1), node(2), node(3));
    b.router.set_peers(&[config(&a, Some(a.endpoint)), config(&c, None)], &b.wire);
    b.wire.net.borrow_mut().clear();
    let mut rest = data;
    while let [src, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (datagram, after) = tail.split_at(len);
        rest = after;
        // Without a session, nothing the fuzzer makes can decrypt.
        assert!(receive(&b, source(*src), datagram).is_none(), "a datagram decrypted without a session");
        for (_, sent) in b.wire.net.borrow_mut().drain(..) {
            assert!((1..=4).contains(&sent[0]), "the router sent something that is not WireGuard");
        }
    }
}
