//! The names of a Docker container in the cluster's domain: its own
//! (`<name>.<domain>`), its host name if that is in the domain (`docker run
//! -h web.weave.local`, as Weave Net's proxy registered it), and its aliases on a network (`--network-alias`,
//! `docker network connect --alias`, Compose's service names) under that
//! network's scope, `<alias>.<scope>.<domain>` (`plan::dns::scope_of` of
//! its weave subnet), each for the endpoint's address and owned by its
//! allocation (released with it). The network's containers ask `<alias>`
//! and get the scoped record first (the resolver in each Docker sandbox
//! knows its networks' scopes): aliases are the network's own, as Docker
//! has them, so two Compose projects each with a `db` on their own network
//! each get theirs. Docker's resolver answers aliases for the containers of
//! its own host only; a container on another host asked weave DNS and got
//! NXDOMAIN (found by a review, 2026-12-05).
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weave_proto::{
    client::retry_unavailable,
    v1::{AddRecordRequest, RemoveRecordsRequest},
};

use super::{Plugin, driver::NAME_WAIT, engine};
use crate::{
    host::docker::Endpoint,
    plan::{dns::scope_of, docker::container_of},
};

impl Plugin {
    /// After a Join: the container's name, then its aliases.
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
        self.named(&endpoint_id, &name).await;
        self.register_aliases(&network_id, &endpoint_id, (&id, &name), ip).await;
    }

    /// Remembers `name` as endpoint `endpoint_id`'s container's name.
    async fn named(&self, endpoint_id: &str, name: &str) {
        let _one = self.lock.lock().await;
        if let Some(mut ep) = self.state.endpoint(endpoint_id) {
            ep.name = name.to_string();
            self.state.set_endpoint(endpoint_id, ep);
        }
    }

    /// After `docker rename`: the old name's record for `ip` goes (it kept
    /// answering with this container, beside or instead of a new container
    /// given the old name, and kept another host's container of that name
    /// from it for good; found by a review, 2026-12-05).
    async fn renamed(&self, endpoint_id: &str, old: &str, new: &str, ip: Ipv4Addr) {
        let req = RemoveRecordsRequest { name: old.to_string(), address: ip.to_string() };
        let removed = retry_unavailable(|| {
            let (mut dns, req) = (self.attacher.api.dns.clone(), req.clone());
            async move { dns.remove_records(req).await }
        })
        .await;
        match removed {
            Ok(_) => tracing::info!(old, new, %ip, "a renamed Docker container's old name removed"),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                tracing::warn!(old, %ip, error = s.message(), "cannot remove a renamed Docker container's old name");
                return;
            }
        }
        self.named(endpoint_id, new).await;
    }

    /// Reads the container's aliases on the network and registers them,
    /// remembered on the endpoint (the sweep registers them again, and reads
    /// them again until it has: Docker busy at the Join left them unread,
    /// and unregistered for good; found by a review, 2026-12-05).
    async fn register_aliases(&self, network_id: &str, endpoint_id: &str, container: (&str, &str), ip: Ipv4Addr) {
        let domain = self.attacher.maps.borrow().dns_domain.clone();
        let (aliases, in_domain) = match engine::aliases_of(&self.docker_host, container, network_id, &domain).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(
                    container = container.1,
                    error = e,
                    "cannot read a Docker container's aliases now (tried again every 10 s)"
                );
                return;
            }
        };
        let cidr = {
            let _one = self.lock.lock().await;
            let (Some(mut ep), Some(network)) = (self.state.endpoint(endpoint_id), self.state.network(network_id))
            else {
                // Left already: its address is not this container's now.
                return;
            };
            ep.aliases = aliases.clone();
            ep.in_domain = in_domain.clone();
            ep.in_domain_read = true;
            ep.aliases_read = true;
            self.state.set_endpoint(endpoint_id, ep);
            network.cidr
        };
        for name in aliases.iter().map(|a| alias_name(a, &cidr)).chain(in_domain) {
            self.register(&name, ip, false).await;
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

    /// The scopes sandbox `key`'s lookups try first: those of the subnets
    /// of the networks it joined. After each Join and Leave.
    pub(super) fn rescope(&self, key: &str) {
        self.dns.set_scopes(key, self.state.subnets_of_sandbox(key).iter().map(|c| scope_of(c)).collect());
    }

    /// Every joined sandbox's scopes, once each, from what is saved (Docker
    /// need not answer): at start and every sweep.
    pub(super) fn rescope_all(&self) {
        let sandboxes: std::collections::BTreeSet<String> =
            self.state.endpoints().into_iter().map(|(_, e)| e.sandbox).filter(|s| !s.is_empty()).collect();
        for key in &sandboxes {
            self.rescope(key);
        }
    }

    /// Each joined endpoint of `shown` (a network as Docker shows it) whose
    /// container's name or one of its aliases does not resolve to its
    /// address: registered again; aliases not read yet are read. At its
    /// Join the name may have been another host's container's (a node may
    /// not take a name another holds), and once that one had gone it stayed
    /// unregistered for good (found by a review, 2026-12-05).
    pub(super) async fn name_again<'e>(
        &self,
        shown: &serde_json::Value,
        joined: impl Iterator<Item = &'e (String, Endpoint)>,
    ) {
        for (id, ep) in joined.filter(|(_, e)| !e.sandbox.is_empty()) {
            let (Some((container, name)), Ok(address)) = (container_of(shown, id), ep.address.parse::<Ipv4Net>())
            else {
                continue;
            };
            match ep.name.as_str() {
                "" => self.named(id, &name).await,
                old if old != name => self.renamed(id, old, &name, address.addr()).await,
                _ => {}
            }
            if !ep.aliases_read || !ep.in_domain_read {
                self.register_aliases(&ep.network, id, (&container, &name), address.addr()).await;
            }
            let cidr = self.state.network(&ep.network).map(|n| n.cidr).unwrap_or_default();
            let scoped = ep.aliases.iter().map(|a| alias_name(a, &cidr));
            let in_domain = ep.in_domain.iter().cloned();
            for name in std::iter::once(name.clone()).chain(scoped).chain(in_domain) {
                if !self.resolves(&name, address.addr()) {
                    self.register(&name, address.addr(), true).await;
                }
            }
        }
    }

    /// Whether `name` resolves to `ip` in this host's map; a name that is no
    /// DNS name counts as resolving (it is never registered: not asked again).
    fn resolves(&self, name: &str, ip: Ipv4Addr) -> bool {
        let map = self.attacher.maps.borrow();
        match weave_proto::dns_name::qualify(name, &map.dns_domain) {
            Ok(fqdn) => map.dns_records.iter().any(|r| r.name == fqdn && r.address == ip.to_string()),
            Err(_) => true,
        }
    }
}

/// The record name of alias `alias` on a network of weave subnet `cidr`:
/// `<alias>.<scope>`.
fn alias_name(alias: &str, cidr: &str) -> String {
    format!("{alias}.{}", scope_of(cidr))
}
