//! Datagrams on the WireGuard port that no peer's tunnel took (and one
//! kind it took and dropped: [`Reason::EcnNotEct`]), counted by reason
//! (`weave_tunnel_rejected_total{reason}`): an outsider scanning or
//! replaying, a removed member still sending, a host under a handshake
//! flood. Nothing per datagram but one relaxed add, on the rejecting path.
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a datagram was dropped before any peer's tunnel took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not a WireGuard message (type or length).
    Malformed,
    /// A handshake message whose mac1 is not for this host's key.
    BadMac,
    /// Under load: past its source's share, or a repeat within the second.
    UnderLoad,
    /// No peer of the map: an initiation from an unknown key, or a message
    /// for a receiver index no peer has.
    UnknownPeer,
    /// A known peer's index, but it did not authenticate or was stale (a
    /// forged or replayed data message, an old initiation, too many
    /// initiations).
    Failed,
    /// A packet whose sender does not do ECN, in a datagram a router on
    /// the underlay marked CE (congestion): RFC 6040 drops it ([`crate::dataplane::ecn`]).
    EcnNotEct,
}

impl Reason {
    pub const ALL: [Reason; 6] =
        [Reason::Malformed, Reason::BadMac, Reason::UnderLoad, Reason::UnknownPeer, Reason::Failed, Reason::EcnNotEct];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::BadMac => "bad_mac",
            Reason::UnderLoad => "under_load",
            Reason::UnknownPeer => "unknown_peer",
            Reason::Failed => "failed",
            Reason::EcnNotEct => "ecn_not_ect",
        }
    }
}

#[derive(Default)]
pub struct Rejected([AtomicU64; Reason::ALL.len()]);

impl Rejected {
    /// Counts one datagram dropped for `reason`; always `None` (what the
    /// dropping path returns).
    pub fn drop<T>(&self, reason: Reason) -> Option<T> {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Every reason with its count since the start.
    pub fn counts(&self) -> Vec<(Reason, u64)> {
        Reason::ALL.iter().map(|r| (*r, self.0[*r as usize].load(Ordering::Relaxed))).collect()
    }
}
