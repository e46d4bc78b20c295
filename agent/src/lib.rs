//! weave's host agent: joins the coordinator, keeps a watch on the network
//! map, and turns it into WireGuard tunnels and per-subnet L2 segments.
//!
//! Start-up order (see [`agent::join`] and [`agent::run`]): load or create
//! the identity ([`state`]), start the transport ([`dataplane`]), address the
//! TUN ([`netlink`]), then run the control loop ([`control`]): the map watch
//! and the reconcile pass ([`netmap`] applies events, [`reconcile`] diffs
//! desired against observed interfaces), plus the local API ([`local_api`]).
//!
//! Exit: on SIGTERM the agent stops its tunnels (the TUN goes away with the
//! process) but by default keeps bridges, VXLAN devices and FDB entries, so
//! that workloads stay attached across restarts and upgrades; the next start
//! re-creates the TUN and resumes. `--cleanup-on-exit` removes everything on
//! SIGTERM, and `agent reset` removes every interface and file it created.
//!
//! Modules:
//! - [`config`]: flags (`WEAVE_*` env).
//! - [`state`]: key, identity and last map on disk.
//! - [`netmap`]: pure map updates and the peer view.
//! - [`reconcile`]: pure diff of desired vs observed segments.
//! - [`netlink`]: the only module that changes interfaces.
//! - [`dataplane`]: the [`dataplane::Transport`] trait, the WireGuard router and the TUN+UDP transport.
//! - [`control`]: watch with backoff, reconcile loop.
//! - [`dns`]: the workloads' resolver at 127.0.0.11:53 in each attached namespace.
//! - [`firewall`]: the nftables table `inet weave` that isolates subnets.
//! - [`local_api`]: status over a Unix socket.
//! - [`metrics`]: `/metrics`, `/healthz`, `/readyz` (plain HTTP, 127.0.0.1:6782 by default).
//! - [`attach`]: attach/detach of containers, expose/hide of the host.
//! - [`cni`]: the CNI plugin's configuration, result and error JSON (bin `weave-cni`).
//! - [`agent`]: the commands.
pub mod agent;
pub mod attach;
pub mod cni;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod dns;
pub mod error;
pub mod firewall;
pub mod local_api;
pub mod metrics;
pub mod netlink;
pub mod netmap;
pub mod reconcile;
pub mod state;

pub use error::Error;
