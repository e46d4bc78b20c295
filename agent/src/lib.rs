// The docs are for the people working on the agent: they link private items.
#![allow(rustdoc::private_intra_doc_links)]
//! weave's host agent: joins the coordinator, keeps a watch on the network
//! map, and turns it into WireGuard tunnels and per-subnet L2 segments.
//!
//! Four layers, each a folder that imports only the ones before it
//! (`agent/tests/layers.rs` checks):
//!
//! - [`plan`]: pure values: the map, the reconcile diff, kernel object names,
//!   MTUs and MACs, the firewall ruleset, DNS answers. No I/O.
//! - [`host`]: side effects on this host: netlink, nftables, entering a
//!   namespace, the data directory and its container registry.
//! - [`dataplane`]: the [`dataplane::Transport`] trait, the WireGuard router
//!   and the TUN+UDP transport (packet I/O only).
//! - [`daemon`]: the wiring: join/run/reset, the control loops, the local API
//!   service, attach/detach, the workloads' DNS sockets, `/metrics`.
//!
//! [`error`] is shared by all of them. The local API's contract (requests,
//! answers, error kinds and the descriptor-passing framing) lives in
//! `weave_proto::local_api`, shared with weavectl and weave-cni.
//!
//! Start-up order (see [`daemon::commands::join`] and
//! [`daemon::commands::run`]): load or create the identity
//! ([`host::state`]), start the transport ([`dataplane`]), address the TUN
//! ([`host::netlink`]), install the isolation rules ([`host::firewall`]),
//! then run the control loops ([`daemon::control`]: the map watch and the
//! reconcile pass) and the local API ([`daemon::service`]).
//!
//! Exit: on SIGTERM the agent stops its tunnels (the TUN goes away with the
//! process) but by default keeps bridges, VXLAN devices and FDB entries, so
//! that workloads stay attached across restarts and upgrades; the next start
//! re-creates the TUN and resumes. `--cleanup-on-exit` removes everything on
//! SIGTERM, and `agent reset` removes every interface and file it created.
pub mod daemon;
pub mod dataplane;
pub mod error;
pub mod host;
pub mod plan;

pub use error::Error;
