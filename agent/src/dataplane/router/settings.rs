//! The router's settings from the command line and what the host learns
//! about itself: keepalives behind NAT (`--nat-keepalive`), and the storm
//! meters' limit (`--broadcast-limit`, [`super::storm`]).
use std::sync::atomic::Ordering;

use boringtun::noise::TunnResult;

use super::{Peer, Router, Sink, lock};

impl Router {
    /// The broadcast and multicast frames a second each workload port of a
    /// peer may put into a segment (`--broadcast-limit`; 0: no limit): what
    /// the peer's group frames there are metered at, once per workload it
    /// hosts there and once for its bridge ([`super::storm`]).
    pub fn set_broadcast_limit(&self, per_second: u32) {
        self.broadcast_limit.store(per_second, Ordering::Relaxed);
    }

    /// Seconds between keepalives while behind NAT (0: none).
    pub fn set_nat_keepalive(&self, secs: u16) {
        self.nat_keepalive_ms.store(u64::from(secs) * 1000, Ordering::Relaxed);
    }

    /// Behind NAT or not. Turning it on sends every peer a keepalive (a
    /// handshake where there is no session) at once: that opens the NAT's
    /// mapping before any peer speaks, and tells each peer where this host
    /// is (roaming); the ticks then repeat it every `--nat-keepalive`.
    pub fn set_behind_nat(&self, behind: bool, sink: &impl Sink) {
        let was = self.behind_nat.swap(behind, Ordering::Relaxed);
        if behind && !was && self.nat_keepalive_ms.load(Ordering::Relaxed) > 0 {
            let mut buf = vec![0u8; 256];
            let now = self.now_ms();
            for peer in self.table().by_index.values() {
                self.keepalive(peer, now, &mut buf, sink);
            }
        }
    }

    pub(super) fn keepalive(&self, peer: &Peer, now: u64, buf: &mut [u8], sink: &impl Sink) {
        peer.last_keepalive.store(now, Ordering::Relaxed);
        let Some(endpoint) = peer.endpoint() else { return };
        if let TunnResult::WriteToNetwork(out) = lock(&peer.tunn).encapsulate(&[], buf) {
            sink.to_network(endpoint, out);
        }
    }
}
