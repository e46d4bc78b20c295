//! The pure layer: the network map and what follows from it, as values.
//! Nothing here does I/O (no tokio, rtnetlink, nix, `std::fs`,
//! `std::process`; `agent/tests/layers.rs` checks), so all of it is tested
//! without root or a kernel.
//!
//! - [`netmap`]: map updates from watch events, the peer view.
//! - [`reconcile`]: the ordered diff of desired against observed segments.
//! - [`kernel`]: names, MACs and MTUs of the kernel objects the agent owns.
//! - [`firewall`]: the nftables ruleset that isolates subnets, as text.
//! - [`flows`]: the table that limits tracked connections per source address.
//! - [`dns`]: the workloads' DNS answers from the map's records.
//! - [`rate`]: the token bucket of the agent's rate limits.
//! - [`addr_spec`]: the `net:default` / `ip:10.2.3.4/24` address requests of attach.
//! - [`cni`]: the CNI plugin's configuration, result and error JSON.
//! - [`docker`]: Docker's plugin protocol (JSON) and a Docker network as a weave subnet.
pub mod addr_spec;
pub mod cni;
pub mod dns;
pub mod docker;
pub mod firewall;
pub mod flows;
pub mod kernel;
pub mod l2;
pub mod netmap;
pub mod rate;
pub mod reconcile;
