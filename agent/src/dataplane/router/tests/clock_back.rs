//! A peer whose initiations are older than one taken before (its clock set back).
use super::*;

/// `a` restarted with its clock set back: its initiation is older than one
/// `b` took before, and `b` drops it (WireGuard's replay rule). `b` starts a
/// handshake of its own, to `a`'s endpoint, and once only within 5 s; the
/// two have a session again. `b` answered nothing, and `a` (a host that
/// only initiates) stayed cut off until its clock passed the old stamp.
#[test]
fn a_stale_initiation_is_answered_with_a_handshake_from_this_side() {
    let b = node(2);
    // `a` as it started with its clock set back: its initiation, not yet delivered.
    let old = node(1);
    old.router.set_peers(&[config(&b, Some(b.endpoint))], &old.wire);
    let stale = old.wire.net.borrow_mut().pop().expect("an initiation").1;
    // TAI64N is kept to ~16 ms: the next one is later.
    std::thread::sleep(std::time::Duration::from_millis(50));
    // `a` as it ran before (its clock ahead): `b` takes its initiation.
    let a = node(1);
    a.router.set_peers(&[config(&b, Some(b.endpoint))], &a.wire);
    b.router.set_peers(&[config(&a, Some(a.endpoint))], &b.wire);
    for _ in 0..4 {
        deliver(&a, &b, a.endpoint);
        deliver(&b, &a, b.endpoint);
    }
    assert!(b.router.status()[0].handshake_age_secs.is_some(), "a session");

    // Then the stale one arrives (from wherever: `b` answers at `a`'s
    // endpoint), past the 20 ms between initiations boringtun takes.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let elsewhere: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    b.receive(elsewhere, &stale);
    let sent: Vec<_> = b.wire.net.borrow_mut().drain(..).collect();
    assert_eq!(sent.len(), 1, "one initiation from b: {sent:?}");
    assert_eq!((sent[0].0, sent[0].1[0]), (a.endpoint, HANDSHAKE_INITIATION));
    std::thread::sleep(std::time::Duration::from_millis(30));
    b.receive(elsewhere, &stale);
    assert!(b.wire.net.borrow().is_empty(), "not again within 5 s");
    // It completes with `a`.
    a.receive(b.endpoint, &sent[0].1);
    deliver(&a, &b, a.endpoint);
    let packet = ipv4(b.addr, a.addr, b"after the clock went back");
    b.send(&packet);
    deliver(&b, &a, b.endpoint);
    assert_eq!(a.wire.tun.borrow().last(), Some(&packet));
    // Nor once the 5 s passed (as if never answered), the handshake done:
    // each initiation is answered once, so a replayed one does not start a
    // handshake every 5 s.
    b.router.table().by_key[&a.public].stale_answered_at.store(0, std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(30));
    b.receive(elsewhere, &stale);
    assert!(b.wire.net.borrow().is_empty(), "the same initiation answered again");
}
