//! Endpoint fallback for peers with several endpoints (a dual-stack host
//! advertises one per family), or one it roamed away from: when data has
//! gone out to a peer and nothing authenticated came back for [`AFTER_MS`],
//! the router moves the peer to its next endpoint from the map (from a
//! roamed one, the first, only after [`ROAMED_AFTER_MS`]) and starts a
//! handshake there. A working path answers
//! data at once (replies) or within WireGuard's passive keepalive (10 s);
//! so a quiet but healthy path can cost one needless switch to another
//! endpoint of the same peer, and one handshake, never the tunnel. An
//! endpoint this host has no route to (a family it has no address in: an
//! IPv4-only host and a dual-stack peer) is never moved to: a one-way
//! stream lost 3 s of every 6 there (found by a review, 2026-12-07).
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Unanswered for this long (ms), the path is taken for broken.
pub(super) const AFTER_MS: u64 = 3_000;
/// The same for a peer that roamed to an endpoint the map does not name:
/// longer than WireGuard's passive keepalive (10 s) and the rekey wait after
/// it, so a healthy path that only receives (a one-way stream to a peer
/// behind a port-mapping NAT, one endpoint per family or not) is never left
/// for one that may not work.
pub(super) const ROAMED_AFTER_MS: u64 = 15_000;

#[derive(Default)]
pub(super) struct Fallback {
    /// The peer's endpoints from the map, in its order.
    candidates: Mutex<Vec<SocketAddr>>,
    /// When the oldest data since the last authenticated packet went out
    /// (ms on the router's clock, never 0); 0: nothing unanswered.
    unanswered_since: AtomicU64,
}

impl Fallback {
    pub(super) fn new(candidates: Vec<SocketAddr>) -> Self {
        Self { candidates: Mutex::new(candidates), unanswered_since: AtomicU64::new(0) }
    }

    pub(super) fn set_candidates(&self, candidates: &[SocketAddr]) {
        let mut c = self.candidates.lock().unwrap_or_else(|e| e.into_inner());
        if c.as_slice() != candidates {
            *c = candidates.to_vec();
        }
    }

    /// Data went out at `now` (ms, > 0).
    #[cfg(test)]
    pub(super) fn sent(&self, now: u64) {
        self.sent_at(|| now);
    }

    /// Data went out at `now()` (ms, > 0), read only when this send starts
    /// the wait for an answer (not once per packet of a stream).
    pub(super) fn sent_at(&self, now: impl FnOnce() -> u64) {
        if self.unanswered_since.load(Ordering::Relaxed) == 0 {
            let _ = self.unanswered_since.compare_exchange(0, now(), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Something authenticated came from the peer.
    pub(super) fn answered(&self) {
        if self.unanswered_since.load(Ordering::Relaxed) != 0 {
            self.unanswered_since.store(0, Ordering::Relaxed);
        }
    }

    /// The peer's endpoints from the map.
    pub(super) fn candidates(&self) -> Vec<SocketAddr> {
        self.candidates.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// At `now`: the endpoint to move to from `current`, if the path has been
    /// unanswered too long and the peer has another endpoint that is
    /// `routable`. Restarts the wait, so the next one is tried only after as
    /// long again.
    pub(super) fn due(
        &self,
        now: u64,
        current: Option<SocketAddr>,
        routable: impl Fn(SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        let since = self.unanswered_since.load(Ordering::Relaxed);
        if since == 0 || now.saturating_sub(since) < AFTER_MS {
            return None;
        }
        let c = self.candidates.lock().unwrap_or_else(|e| e.into_inner());
        // The next routable one after the current; a roamed endpoint (not a
        // candidate) falls back to the first routable one, also for a peer
        // with one endpoint (the address it roamed from may be its own
        // again: it stayed cut off until it spoke first; found by a review,
        // 2026-12-05).
        let next = match current.and_then(|e| c.iter().position(|x| *x == e)) {
            Some(_) if c.len() < 2 => return None,
            Some(i) => (1..c.len()).map(|k| c[(i + k) % c.len()]).find(|e| routable(*e)),
            None if now.saturating_sub(since) < ROAMED_AFTER_MS => return None,
            None => c.iter().copied().find(|e| routable(*e)),
        };
        self.unanswered_since.store(now, Ordering::Relaxed);
        next
    }
}

/// The first of `candidates` this host has a route to, else the first (no
/// route lookup for a peer with one endpoint: most of them, and this runs
/// under the peer table's write lock).
pub(super) fn first_routable(candidates: &[SocketAddr]) -> Option<SocketAddr> {
    if candidates.len() < 2 {
        return candidates.first().copied();
    }
    candidates.iter().copied().find(|e| routable(*e)).or_else(|| candidates.first().copied())
}

/// Whether this host has a route to `to`: a UDP socket of its family
/// connects (the kernel's route lookup; nothing is sent). A host without
/// IPv6 (or with it turned off) has none to an IPv6 endpoint.
pub(super) fn routable(to: SocketAddr) -> bool {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    std::net::UdpSocket::bind(any).and_then(|s| s.connect(to)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Fallback {
        /// [`Fallback::due`] with every endpoint routable.
        fn due_all(&self, now: u64, current: Option<SocketAddr>) -> Option<SocketAddr> {
            self.due(now, current, |_| true)
        }
    }

    #[test]
    fn unanswered_data_moves_to_the_next_endpoint_in_turn() {
        let (v4, v6): (SocketAddr, SocketAddr) =
            ("192.0.2.11:6784".parse().unwrap(), "[2001:db8::11]:6784".parse().unwrap());
        let f = Fallback::new(vec![v4, v6]);
        assert_eq!(f.due_all(10_000, Some(v4)), None, "nothing sent");
        f.sent(1_000);
        f.sent(2_000);
        assert_eq!(f.due_all(3_999, Some(v4)), None, "not long enough");
        assert_eq!(f.due_all(4_000, Some(v4)), Some(v6));
        assert_eq!(f.due_all(5_000, Some(v6)), None, "the wait starts again");
        assert_eq!(f.due_all(7_000, Some(v6)), Some(v4));
        f.answered();
        assert_eq!(f.due_all(20_000, Some(v4)), None, "answered");
        f.sent(21_000);
        let roamed: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        assert_eq!(f.due_all(25_000, Some(roamed)), None, "a roamed path is kept past a passive keepalive");
        assert_eq!(f.due_all(21_000 + ROAMED_AFTER_MS, Some(roamed)), Some(v4));
        let single = Fallback::new(vec![v4]);
        single.sent(1);
        assert_eq!(single.due_all(100_000, Some(v4)), None, "one endpoint: nowhere to go");
        assert_eq!(single.due_all(100_000, Some(roamed)), Some(v4), "roamed away from its one endpoint: back to it");
        assert_eq!(single.due_all(200_000, Some(v4)), None, "and there it stays");
        // Only past the passive keepalive and a rekey's wait (a one-way
        // stream is answered every 10 s on a healthy path).
        let single = Fallback::new(vec![v4]);
        single.sent(1_000);
        assert_eq!(single.due_all(1_000 + ROAMED_AFTER_MS - 1, Some(roamed)), None);
        assert_eq!(single.due_all(1_000 + ROAMED_AFTER_MS, Some(roamed)), Some(v4));
        let none = Fallback::new(vec![]);
        none.sent(1);
        assert_eq!(none.due_all(100_000, Some(roamed)), None, "no endpoint in the map: the roamed one stays");
    }

    #[test]
    fn an_endpoint_without_a_route_is_never_moved_to() {
        let (v4, v6, v4b): (SocketAddr, SocketAddr, SocketAddr) = (
            "192.0.2.11:6784".parse().unwrap(),
            "[2001:db8::11]:6784".parse().unwrap(),
            "198.51.100.11:6784".parse().unwrap(),
        );
        let only_v4 = |e: SocketAddr| e.is_ipv4();
        let f = Fallback::new(vec![v4, v6]);
        f.sent(1_000);
        assert_eq!(f.due(4_000, Some(v4), only_v4), None, "an IPv4-only host stays on the IPv4 endpoint");
        assert_eq!(f.due(5_000, Some(v4), only_v4), None, "and waits as long again before looking");
        assert_eq!(f.due(7_000, Some(v6), only_v4), Some(v4), "from the other family, back to one it can reach");
        let f = Fallback::new(vec![v4, v6, v4b]);
        f.sent(1_000);
        assert_eq!(f.due(4_000, Some(v4), only_v4), Some(v4b), "the next it can reach");
        let f = Fallback::new(vec![v6, v4]);
        f.sent(1_000);
        let roamed: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        assert_eq!(f.due(1_000 + ROAMED_AFTER_MS, Some(roamed), only_v4), Some(v4), "the first it can reach");
    }

    #[test]
    fn routes_are_read_from_the_kernel() {
        assert!(routable("127.0.0.1:6784".parse().unwrap()), "loopback");
        // A broadcast address takes SO_BROADCAST to connect to: refused.
        assert!(!routable("255.255.255.255:6784".parse().unwrap()));
        let (a, b): (SocketAddr, SocketAddr) = ("255.255.255.255:1".parse().unwrap(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(first_routable(&[a, b]), Some(b));
        assert_eq!(first_routable(&[a]), Some(a), "none: the first");
    }
}
