//! The running agent: the wiring of everything below it. The commands
//! ([`commands`]: run, reset, status; [`join`]), the control loops
//! ([`control`]: the map watch, reconcile, DNS records), the local API
//! service ([`service`]), attach/detach ([`attach`]), the workloads' DNS
//! sockets ([`dns`]), Docker's network and IPAM plugin ([`docker`]) and the `/metrics` probe ([`metrics`]).
pub mod attach;
pub mod commands;
pub mod config;
pub mod control;
pub mod dns;
pub mod docker;
pub mod endpoints;
pub mod join;
pub mod metrics;
pub mod rekey;
pub mod service;
