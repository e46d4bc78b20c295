//! The data plane: everything that moves packets. The rest of the agent sees
//! only the [`Transport`] trait, so the transport can be replaced (for example
//! by an offloading L3 fast path) without touching the control loop.
//!
//! - [`router`]: the sans-I/O WireGuard router: one boringtun `Tunn` per peer,
//!   peer chosen by destination node address, source checked on the way in,
//!   endpoint roaming (only on packets that authenticated), timers, handshake
//!   rate limiting.
//! - [`tun_udp`]: the first transport: a TUN device holding the node address
//!   and one UDP socket, driven by two blocking I/O threads and a timer thread.
pub mod router;
pub mod tun_udp;

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::plan::netmap::PeerConfig;

/// What the agent asks of a transport.
pub trait Transport: Send + Sync {
    /// Replaces the peer set: new peers get a tunnel, gone peers lose theirs,
    /// changed keys rebuild the tunnel, changed endpoints are taken over.
    fn set_peers(&self, peers: &[PeerConfig]);
    fn status(&self) -> Vec<PeerStatus>;
}

/// One peer as the local status API reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub node_id: u64,
    pub name: String,
    pub address: Ipv4Addr,
    pub endpoint: Option<SocketAddr>,
    /// Seconds since the last completed handshake; `None` before the first.
    pub handshake_age_secs: Option<f64>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Decrypted packets dropped because their inner source was not the peer's address.
    pub dropped_spoofed: u64,
}
