//! The data plane: everything that moves packets. The rest of the agent sees
//! only the [`Transport`] trait, so the transport can be replaced (for example
//! by an offloading L3 fast path) without touching the control loop.
//!
//! - [`router`]: the sans-I/O WireGuard router: one boringtun `Tunn` per peer,
//!   peer chosen by destination node address, source checked on the way in,
//!   endpoint roaming (only on packets that authenticated), timers, handshake
//!   rate limiting.
//! - [`batch`]: the crypto of one batch of packets, without I/O or allocation.
//! - [`cpu_latency`]: the CPU-latency request held while packets move (idle
//!   CPUs poll instead of halting).
//! - [`spin`]: adaptive waiting: the packet threads poll for a short window
//!   after a packet moved, then sleep.
//! - [`tun_udp`]: the first transport: a TUN device holding the node address
//!   and one UDP socket, driven by two I/O threads and a timer thread.
//! - [`udp`]: that socket, dual-stack: IPv4 and IPv6 endpoints alike.
//! - `workers`: the two packet threads of each queue.
pub mod batch;
pub mod cpu_latency;
pub mod ecn;
pub mod router;
pub mod spin;
pub mod tun_udp;
pub mod udp;
mod workers;

pub use weave_proto::local_api::PeerStatus;

use crate::plan::netmap::PeerConfig;

/// What the agent asks of a transport.
pub trait Transport: Send + Sync {
    /// Replaces the peer set: new peers get a tunnel, gone peers lose theirs,
    /// changed keys rebuild the tunnel, changed endpoints are taken over.
    fn set_peers(&self, peers: &[PeerConfig]);
    /// Whether this host is behind NAT (the coordinator saw it at an address
    /// it does not advertise): only then keepalives go to every peer, to
    /// keep the NAT's mapping (and so the path in) open.
    fn set_behind_nat(&self, behind: bool);
    fn status(&self) -> Vec<PeerStatus>;
    /// Datagrams no peer's tunnel took since the start, by reason (label).
    fn rejected(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The CPU-latency request this transport holds while packets move.
    fn cpu_latency(&self) -> cpu_latency::HoldStatus {
        cpu_latency::HoldStatus::default()
    }
}
