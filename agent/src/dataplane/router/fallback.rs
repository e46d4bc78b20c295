//! Endpoint fallback for peers with several endpoints (a dual-stack host
//! advertises one per family), or one it roamed away from: when data has
//! gone out to a peer and nothing authenticated came back for [`AFTER_MS`],
//! the router moves the peer to its next endpoint from the map (from a
//! roamed one, the first, only after [`ROAMED_AFTER_MS`]) and starts a
//! handshake there. A working path answers
//! data at once (replies) or within WireGuard's passive keepalive (10 s);
//! so a quiet but healthy path can cost one needless switch to another
//! endpoint of the same peer, and one handshake, never the tunnel.
use std::{
    net::SocketAddr,
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

    /// At `now`: the endpoint to move to from `current`, if the path has been
    /// unanswered too long and the peer has another endpoint. Restarts the
    /// wait, so the next one is tried only after as long again.
    pub(super) fn due(&self, now: u64, current: Option<SocketAddr>) -> Option<SocketAddr> {
        let since = self.unanswered_since.load(Ordering::Relaxed);
        if since == 0 || now.saturating_sub(since) < AFTER_MS {
            return None;
        }
        let c = self.candidates.lock().unwrap_or_else(|e| e.into_inner());
        // The one after the current; a roamed endpoint (not a candidate)
        // falls back to the first, also for a peer with one endpoint (the
        // address it roamed from may be its own again: it stayed cut off
        // until it spoke first; found by a review, 2026-12-05).
        let next = match current.and_then(|e| c.iter().position(|x| *x == e)) {
            Some(_) if c.len() < 2 => return None,
            Some(i) => c[(i + 1) % c.len()],
            None if now.saturating_sub(since) < ROAMED_AFTER_MS => return None,
            None => *c.first()?,
        };
        self.unanswered_since.store(now, Ordering::Relaxed);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanswered_data_moves_to_the_next_endpoint_in_turn() {
        let (v4, v6): (SocketAddr, SocketAddr) =
            ("192.0.2.11:6784".parse().unwrap(), "[2001:db8::11]:6784".parse().unwrap());
        let f = Fallback::new(vec![v4, v6]);
        assert_eq!(f.due(10_000, Some(v4)), None, "nothing sent");
        f.sent(1_000);
        f.sent(2_000);
        assert_eq!(f.due(3_999, Some(v4)), None, "not long enough");
        assert_eq!(f.due(4_000, Some(v4)), Some(v6));
        assert_eq!(f.due(5_000, Some(v6)), None, "the wait starts again");
        assert_eq!(f.due(7_000, Some(v6)), Some(v4));
        f.answered();
        assert_eq!(f.due(20_000, Some(v4)), None, "answered");
        f.sent(21_000);
        let roamed: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        assert_eq!(f.due(25_000, Some(roamed)), None, "a roamed path is kept past a passive keepalive");
        assert_eq!(f.due(21_000 + ROAMED_AFTER_MS, Some(roamed)), Some(v4));
        let single = Fallback::new(vec![v4]);
        single.sent(1);
        assert_eq!(single.due(100_000, Some(v4)), None, "one endpoint: nowhere to go");
        assert_eq!(single.due(100_000, Some(roamed)), Some(v4), "roamed away from its one endpoint: back to it");
        assert_eq!(single.due(200_000, Some(v4)), None, "and there it stays");
        // Only past the passive keepalive and a rekey's wait (a one-way
        // stream is answered every 10 s on a healthy path).
        let single = Fallback::new(vec![v4]);
        single.sent(1_000);
        assert_eq!(single.due(1_000 + ROAMED_AFTER_MS - 1, Some(roamed)), None);
        assert_eq!(single.due(1_000 + ROAMED_AFTER_MS, Some(roamed)), Some(v4));
        let none = Fallback::new(vec![]);
        none.sent(1);
        assert_eq!(none.due(100_000, Some(roamed)), None, "no endpoint in the map: the roamed one stays");
    }
}
