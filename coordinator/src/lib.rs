// The docs are for the people working on it: they link private items.
#![allow(rustdoc::private_intra_doc_links)]
//! The weave coordinator: the one owner of the cluster's truth.
//!
//! - [`config`]: `coordinator serve` flags (each also a `WEAVE_*` variable), checked at start.
//! - [`identity`]: the TLS certificate and key, the pin, the admin credential file.
//! - [`store`]: the only SQL (SQLite through sqlx); every change one transaction
//!   plus one map event.
//! - [`ipam`]: pure address arithmetic.
//! - [`challenge`]: stateless join challenges (proof that a re-joining host holds the node's key).
//! - [`api`]: one file per gRPC service; handlers check the caller's role,
//!   convert, and call the store.
//! - [`metrics`]: `/metrics`, `/healthz`, `/readyz` (plain HTTP, own port) and the RPC timing layer.
//! - `accept`: the accept loop's back-off when the process is out of file descriptors.
//! - `unread`: at most 16 reads of one credential whose answers are not yet sent.
//! - [`server`]: start-up order and the tonic server with health and reflection.
//! - [`error`]: the error enum and its one mapping to gRPC status codes.

mod accept;
mod admin_only;
pub mod api;
pub mod challenge;
pub mod config;
mod deadline;
pub mod error;
mod health_watches;
pub mod identity;
pub mod ipam;
pub mod metrics;
pub mod server;
pub mod store;
mod unread;

pub use server::{Running, start};
