//! Egress turned on for a subnet that has containers on this host already:
//! they get the default route an attach gives (through this host's address
//! there, exposing it first), as if attached again, unless they have a
//! default route of their own (another network's: it stays). Kubernetes pods
//! and podman containers cannot be attached again by their runtime, and a
//! workload that had no way out kept none until recreated. Looked at when
//! the agent starts and whenever a subnet's egress turns on; Docker's
//! containers are left to Docker (its Join gives the gateway).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt,
    sync::Arc,
    time::Duration,
};

use weave_proto::{local_api::Refusal, v1::Subnet};

use super::{Attacher, failed};
use crate::{
    host::{netlink::Netlink, netns::every_namespace},
    plan::{docker::is_docker_key, kernel::host_ifname, netmap::allocation_address},
};

/// How soon a subnet whose containers could not all be routed (the
/// coordinator away while the host is exposed) is tried again.
const RETRY: Duration = Duration::from_secs(30);

impl Attacher {
    /// Routes, for as long as the agent runs, the containers of each subnet
    /// whose egress is on (at start, then each time one turns on).
    pub async fn route_on_egress(self: Arc<Self>) {
        let mut maps = self.maps.clone();
        let mut done: BTreeSet<u64> = BTreeSet::new();
        loop {
            let egress: Vec<Subnet> = {
                let map = maps.borrow_and_update();
                match map.revision {
                    0 => Vec::new(),
                    _ => map.subnets.iter().filter(|s| s.egress).cloned().collect(),
                }
            };
            done.retain(|id| egress.iter().any(|s| s.id == *id));
            for subnet in &egress {
                if done.contains(&subnet.id) {
                    continue;
                }
                match self.route_existing(subnet).await {
                    Ok(true) => {
                        done.insert(subnet.id);
                    }
                    // A container that could not be routed now: again later.
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        subnet = %subnet.cidr, error = %e.message,
                        "cannot give this host's containers their way out yet (egress)"
                    ),
                }
            }
            let pending = egress.len() > done.len();
            tokio::select! {
                changed = maps.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(RETRY), if pending => {}
            }
        }
    }

    /// Gives each container of this host on `subnet` that holds an address
    /// there not yet routed through this host, and has no default route,
    /// this host's address as its default route. False when one of them
    /// could not be routed now (tried again in [`RETRY`]).
    async fn route_existing(&self, subnet: &Subnet) -> Result<bool, Refusal> {
        let _one = self.lock.lock().await;
        let routed = self.names.gateway_given(subnet.id);
        let host = crate::plan::reconcile::host_key(&self.node_name);
        let wanting: BTreeSet<Ipv4Addr> = {
            let map = self.maps.borrow();
            if !map.subnets.iter().any(|s| s.id == subnet.id && s.egress) {
                return Ok(true);
            }
            map.allocations
                .iter()
                .filter(|a| a.node_id == self.node_id && a.subnet_id == subnet.id)
                .filter(|a| a.container != host && !is_docker_key(&a.container))
                .filter_map(|a| allocation_address(&a.address))
                .filter(|ip| !routed.contains(ip))
                .collect()
        };
        if wanting.is_empty() {
            return Ok(true);
        }
        // Each such address's port, by the name an attach gave it (the
        // namespace's inode and the subnet's VNI): its namespace is the one
        // whose inode names it.
        let ports: BTreeMap<String, Ipv4Addr> = self
            .netlink
            .pinned_ports()
            .await
            .map_err(failed)?
            .into_iter()
            .filter(|(_, ip, _)| wanting.contains(ip))
            .map(|(port, ip, _)| (port, ip))
            .collect();
        if ports.is_empty() {
            return Ok(true);
        }
        let (mut gateway, mut complete) = (None, true);
        for (inode, path) in every_namespace() {
            let Some(ip) = ports.get(&host_ifname(inode, subnet.vni)) else { continue };
            // Opened, then checked: the path may lead elsewhere by now.
            let Ok(netns) = File::open(&path) else { continue };
            if netns.metadata().map(|m| m.ino()).ok() != Some(inode) {
                continue;
            }
            let inside = match Netlink::in_netns(&netns).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(container = %ip, error = %e, "egress on: cannot enter a container's namespace");
                    complete = false;
                    continue;
                }
            };
            let ifname = match inside.holder_of(*ip).await {
                Ok(Some((ifname, false))) => ifname,
                Ok(_) => continue,
                Err(_) => {
                    complete = false;
                    continue;
                }
            };
            let gw = match gateway {
                Some(gw) => gw,
                None => *gateway.insert(self.gateway(subnet).await.map_err(|e| self.or_removed(subnet, e))?),
            };
            // One container's own doing (its routes changed) is its alone:
            // the others are routed still (it stopped the whole pass; found
            // by a review, 2026-12-05).
            match inside.default_route(&ifname, gw).await {
                Ok(true) => {
                    self.names.gave_gateway(subnet.id, *ip);
                    tracing::info!(subnet = %subnet.cidr, container = %ip, gateway = %gw, "egress on: gave a container its way out");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(container = %ip, error = %e, "egress on: cannot give a container its way out");
                    complete = false;
                }
            }
        }
        Ok(complete)
    }
}
