//! What `agent status` says of a peer.
use super::*;

/// An idle peer's sessions expire after 540 s (boringtun then reports no
/// handshake at all); `agent status` still shows when the last one was, not
/// `never` (found by a review).
#[test]
fn a_peer_whose_sessions_expired_keeps_its_last_handshake_time() {
    let (a, b) = pair();
    let mut buf = vec![0u8; 2048];
    let never = node(9);
    a.router.set_peers(&[config(&b, Some(b.endpoint)), config(&never, Some(never.endpoint))], &a.wire);
    a.router.tick(&mut buf, &a.wire);
    let table = a.router.table();
    let peer = table.by_index.values().find(|p| p.config.public_key == b.public).unwrap();
    // What boringtun's expiry leaves: a tunnel without sessions.
    let fresh = a.router.new_peer(peer.config.clone());
    *lock(&peer.tunn) = fresh.tunn.into_inner().unwrap();
    assert!(lock(&peer.tunn).time_since_last_handshake().is_none());
    drop(table);
    let st = a.router.status();
    let (b_st, never_st) =
        (st.iter().find(|p| p.address == b.addr).unwrap(), st.iter().find(|p| p.address == never.addr).unwrap());
    assert!(b_st.handshake_age_secs.is_some_and(|age| age < 5.0), "{:?}", b_st.handshake_age_secs);
    assert_eq!(never_st.handshake_age_secs, None, "a peer never reached stays never");
    // Another tick with the sessions gone keeps the time it recorded.
    a.router.tick(&mut buf, &a.wire);
    assert!(a.router.status().iter().find(|p| p.address == b.addr).unwrap().handshake_age_secs.is_some());
}
