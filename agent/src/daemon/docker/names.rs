//! The names of a Docker container in the cluster's domain: its own, and
//! its aliases on the network (`--network-alias`, `docker network connect
//! --alias`, Compose's service names), each `<name>.<domain>` for the
//! endpoint's address and owned by its allocation (released with it).
//! Docker's resolver answers aliases for the containers of its own host
//! only; a container on another host asked weave DNS and got NXDOMAIN
//! (found by a review, 2026-12-05).
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weave_proto::{client::retry_unavailable, v1::AddRecordRequest};

use super::{Plugin, driver::NAME_WAIT, engine};
use crate::{host::docker::Endpoint, plan::docker::container_name};

impl Plugin {
    /// After a Join: the container's name, then its aliases (remembered on
    /// the endpoint, so the sweep can register them again).
    pub(super) async fn register_names(&self, network_id: String, endpoint_id: String, ip: Ipv4Addr) {
        let (id, name) = match engine::container(&self.docker_host, &network_id, &endpoint_id, NAME_WAIT).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(endpoint = endpoint_id, docker = %self.docker_host.display(), error = e,
                    "no DNS name for a Docker container: its name is unknown");
                return;
            }
        };
        self.register(&name, ip, false).await;
        let aliases = match engine::aliases_of(&self.docker_host, (&id, &name), &network_id).await {
            Ok(aliases) => aliases,
            Err(e) => {
                tracing::warn!(container = name, error = e, "cannot read a Docker container's aliases: not registered");
                return;
            }
        };
        if aliases.is_empty() {
            return;
        }
        {
            let _one = self.lock.lock().await;
            match self.state.endpoint(&endpoint_id) {
                Some(mut ep) => {
                    ep.aliases = aliases.clone();
                    self.state.set_endpoint(&endpoint_id, ep);
                }
                // Left already: its address is not this container's now.
                None => return,
            }
        }
        for alias in &aliases {
            self.register(alias, ip, false).await;
        }
    }

    /// `name` for `ip`; a refusal is a warning, or (`again`: the sweep's
    /// retries, every 10 s while another host's container holds the name)
    /// only a debug line.
    pub(super) async fn register(&self, name: &str, ip: Ipv4Addr, again: bool) {
        let req = AddRecordRequest { name: name.to_string(), address: ip.to_string() };
        // A repeat of one that was applied answers "already resolves", as below.
        let added = retry_unavailable(|| {
            let (mut dns, req) = (self.attacher.api.dns.clone(), req.clone());
            async move { dns.add_record(req).await }
        })
        .await;
        match added {
            Ok(r) => tracing::info!(name = r.into_inner().name, %ip, "registered a Docker container's name"),
            Err(s) if s.code() == tonic::Code::AlreadyExists && s.message().contains("already resolves") => {}
            Err(s) if again => tracing::debug!(name, %ip, error = s.message(), "still cannot register a name"),
            Err(s) => {
                tracing::warn!(name, %ip, error = s.message(), "cannot register a Docker container's name (tried again every 10 s)")
            }
        }
    }

    /// Each joined endpoint of `shown` (a network as Docker shows it) whose
    /// container's name or one of its aliases does not resolve to its
    /// address: registered again. At its Join the name may have been another
    /// host's container's (a node may not take a name another holds), and
    /// once that one had gone it stayed unregistered for good (found by a
    /// review, 2026-12-05).
    pub(super) async fn name_again<'e>(
        &self,
        shown: &serde_json::Value,
        joined: impl Iterator<Item = &'e (String, Endpoint)>,
    ) {
        for (id, ep) in joined.filter(|(_, e)| !e.sandbox.is_empty()) {
            let (Some(name), Ok(address)) = (container_name(shown, id), ep.address.parse::<Ipv4Net>()) else {
                continue;
            };
            let ip = address.addr().to_string();
            for name in std::iter::once(&name).chain(&ep.aliases) {
                // A name that is no DNS name is never registered: not asked again.
                let resolves = {
                    let map = self.attacher.maps.borrow();
                    match weave_proto::dns_name::qualify(name, &map.dns_domain) {
                        Ok(fqdn) => map.dns_records.iter().any(|r| r.name == fqdn && r.address == ip),
                        Err(_) => true,
                    }
                };
                if !resolves {
                    self.register(name, address.addr(), true).await;
                }
            }
        }
    }
}
