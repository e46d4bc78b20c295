//! `expose` and `hide`: this host's own address on a subnet's bridge
//! (container `host:<node>` in IPAM), as `weave expose` gave it.
use std::{net::Ipv4Addr, time::Duration};

use ipnet::Ipv4Net;
use weave_proto::{
    local_api::{Attached, Refusal},
    v1::Subnet,
};

use super::{Attacher, failed, held_address, not_at};
use crate::plan::{addr_spec::AddrSpec, kernel::bridge_name};

/// Subnet id to this host's address there, a container's default gateway.
pub(super) type Gateways = std::collections::BTreeMap<u64, Ipv4Addr>;
/// The subnets an attach exposed this host on, with the address it got.
pub(super) type Exposed = Vec<(Subnet, Ipv4Addr)>;

impl Attacher {
    /// `expose`: an address on each subnet's bridge for this host (container
    /// `host:<node>` in IPAM).
    pub async fn expose(&self, addrs: &[String]) -> Result<Vec<Attached>, Refusal> {
        let specs = AddrSpec::parse_all(addrs)?;
        let one = self.lock.lock().await;
        let wanted = self.subnets(&specs).await?;
        let result = self.expose_on(&wanted).await?;
        drop(one); // Not held while the firewall catches up: other attaches go on.
        let ips = result.iter().filter_map(|a| a.address.parse::<Ipv4Net>().ok()).map(|n| n.addr());
        crate::host::firewall::wait_open(ips, Duration::from_secs(5)).await;
        Ok(result)
    }

    /// This host's address on `subnet`, an egress subnet a container is
    /// being attached to: its default gateway. Exposes the host there first
    /// if it is not (the attach lock held), and waits for the rules that
    /// let the subnet out through it. The exposure stays after the
    /// container goes (`weavectl hide` takes it away).
    pub(super) async fn gateway(&self, subnet: &Subnet) -> Result<Ipv4Addr, Refusal> {
        let key = crate::plan::reconcile::host_key(&self.node_name);
        if let Some(held) = held_address(&self.held(&key), subnet) {
            return Ok(held);
        }
        let cidr = subnet.cidr.parse::<Ipv4Net>().map_err(|e| Refusal::failed(e.to_string()))?;
        let exposed = self.expose_on(&[(AddrSpec::Net(cidr), subnet.clone())]).await?;
        let ip = exposed
            .first()
            .and_then(|a| a.address.parse::<Ipv4Net>().ok())
            .map(|n| n.addr())
            .ok_or_else(|| Refusal::failed(format!("exposing this host on {} gave no address", subnet.cidr)))?;
        tracing::info!(subnet = %subnet.cidr, %ip, "exposed this host as the egress gateway of its containers");
        crate::host::firewall::wait_open([ip], Duration::from_secs(5)).await;
        Ok(ip)
    }

    /// The default gateways ([`Self::gateway`]) of the egress subnets in
    /// `wanted`, and the exposures this call made for them: an attach
    /// refused after this takes those back ([`Self::unexpose`]). A refused
    /// attach left the host exposed there, masquerading for the subnet, its
    /// address taken (and "no free address" said of a subnet that had one
    /// when the attach began; found by a review, 2026-12-06).
    pub(super) async fn gateways(&self, wanted: &[(AddrSpec, Subnet)]) -> Result<(Gateways, Exposed), Refusal> {
        let key = crate::plan::reconcile::host_key(&self.node_name);
        let (mut gateways, mut exposed) = (Gateways::new(), Vec::new());
        for (_, subnet) in wanted.iter().filter(|(_, s)| s.egress) {
            let new = held_address(&self.held(&key), subnet).is_none();
            match self.gateway(subnet).await {
                Ok(ip) => {
                    gateways.insert(subnet.id, ip);
                    if new {
                        exposed.push((subnet.clone(), ip));
                    }
                }
                Err(e) => {
                    self.unexpose(&exposed).await;
                    return Err(self.or_removed(subnet, e));
                }
            }
        }
        Ok((gateways, exposed))
    }

    /// Takes back what [`Self::gateways`] exposed: the coordinator first,
    /// as `hide` does (an address it still holds for the host stays on the
    /// bridge, where the next attach's gateway expects it).
    pub(super) async fn unexpose(&self, exposed: &Exposed) {
        let key = crate::plan::reconcile::host_key(&self.node_name);
        // Not from under a container of this host that stays there (one
        // attached before, given the route now): `hide` refuses the same.
        for (subnet, ip) in exposed.iter().filter(|(s, _)| self.egress_users(s) == 0 && self.routed_users(s) == 0) {
            let len = subnet.cidr.parse::<Ipv4Net>().map_or(32, |n| n.prefix_len());
            if self.release(&key, &subnet.cidr).await.is_ok() {
                let _ = self.netlink.set_address(&bridge_name(subnet.vni), *ip, len, false).await;
            }
        }
    }

    /// The egress gateway (see `gateway`) for a runtime that makes its own
    /// interfaces (Docker's Join) of its container at `address`, which is
    /// remembered as routed through it: takes the attach lock first.
    pub async fn egress_gateway(&self, subnet: &Subnet, address: Ipv4Addr) -> Result<Ipv4Addr, Refusal> {
        let _one = self.lock.lock().await;
        let gateway = self.gateway(subnet).await.map_err(|e| self.or_removed(subnet, e))?;
        self.names.gave_gateway(subnet.id, address);
        Ok(gateway)
    }

    /// How many of this host's containers hold an address on `subnet` (not
    /// the host itself, nor Docker's gateway reservation).
    fn egress_users(&self, subnet: &Subnet) -> usize {
        let host = crate::plan::reconcile::host_key(&self.node_name);
        let map = self.maps.borrow();
        map.allocations
            .iter()
            .filter(|a| a.node_id == self.node_id && a.subnet_id == subnet.id)
            .filter(|a| a.container != host && a.container != crate::plan::docker::GATEWAY_KEY)
            .count()
    }

    /// How many of this host's containers on `subnet` hold an address that
    /// was given this host's address as its default route (remembered
    /// across restarts, until the host is hidden there).
    fn routed_users(&self, subnet: &Subnet) -> usize {
        let routed = self.names.gateway_given(subnet.id);
        if routed.is_empty() {
            return 0;
        }
        let map = self.maps.borrow();
        map.allocations
            .iter()
            .filter(|a| a.node_id == self.node_id && a.subnet_id == subnet.id)
            .filter_map(|a| crate::plan::netmap::allocation_address(&a.address))
            .filter(|ip| routed.contains(ip))
            .count()
    }

    /// `expose` with the attach lock held.
    async fn expose_on(&self, wanted: &[(AddrSpec, Subnet)]) -> Result<Vec<Attached>, Refusal> {
        let key = crate::plan::reconcile::host_key(&self.node_name);
        let previously = self.held(&key);
        let allocated = self.allocate_all(&key, "", false, wanted).await?;
        let mut result = Vec::new();
        for (subnet, ip, len) in &allocated {
            let bridge = bridge_name(subnet.vni);
            // A subnet just added: its bridge may be a pass of the reconcile
            // away, as attach waits (it failed "does not exist", exit 1;
            // found by a review, 2026-12-05).
            let set = async {
                self.bridge_of(subnet).await?;
                self.netlink.set_address(&bridge, *ip, *len, true).await.map_err(failed)
            };
            if let Err(e) = set.await {
                for (s, ip, len) in &allocated {
                    if !previously.contains_key(&s.id) {
                        let _ = self.netlink.set_address(&bridge_name(s.vni), *ip, *len, false).await;
                        let _ = self.release(&key, &s.cidr).await;
                    }
                }
                return Err(self.or_removed(subnet, e));
            }
            result.push(Attached {
                address: format!("{ip}/{len}"),
                subnet: subnet.cidr.clone(),
                interface: bridge.clone(),
                bridge,
                mtu: self.mtu,
                mac: String::new(),
                gateway: None,
                host_interface: String::new(),
                host_mac: String::new(),
            });
        }
        Ok(result)
    }

    /// `hide`: removes this host's address from the given subnets (all if none).
    pub async fn hide(&self, addrs: &[String]) -> Result<Vec<String>, Refusal> {
        let _one = self.lock.lock().await;
        let key = crate::plan::reconcile::host_key(&self.node_name);
        let held = self.held(&key);
        let subnets: Vec<Subnet> = if addrs.is_empty() {
            self.maps.borrow().subnets.iter().filter(|s| held.contains_key(&s.id)).cloned().collect()
        } else {
            let specs = AddrSpec::parse_all(addrs)?;
            let wanted = self.subnets(&specs).await?;
            for (spec, s) in &wanted {
                let Some(has) = held_address(&held, s) else {
                    return Err(Refusal::not_found(format!("this host is not exposed on subnet {}", s.cidr)));
                };
                if let AddrSpec::Ip(ip, _) = spec
                    && *ip != has
                {
                    return Err(not_at("this host", "exposed", *ip, has, s));
                }
            }
            wanted.into_iter().map(|(_, s)| s).collect()
        };
        // The way out of this host's containers of an egress subnet: not
        // taken from under them (found by a review, 2026-12-05), before
        // anything changes. Nor once egress is off while containers given
        // that route remain: the freed address would go to the next
        // container, and their outbound traffic with it, past the L2 guard
        // (found by a review, 2026-12-05).
        // A bare `hide` too (nothing hidden then, as for any refusal).
        let others = if addrs.is_empty() { "; nothing was hidden: name the other subnets to hide those" } else { "" };
        for s in &subnets {
            let using = self.egress_users(s);
            if using > 0 && s.egress {
                return Err(Refusal::conflict(format!(
                    "{using} container(s) of this host on subnet {} leave through this host (egress): detach them \
                     first (turning its egress off leaves them that route){others}",
                    s.cidr
                )));
            }
            let routed = self.routed_users(s);
            if routed > 0 {
                return Err(Refusal::conflict(format!(
                    "{routed} container(s) of this host on subnet {} have this host's address as their default \
                     route (given while egress was on): detach them first{others}",
                    s.cidr
                )));
            }
        }
        // The coordinator first, as for detach: a hide it cannot record
        // (the coordinator down) leaves the address on the bridge; taking
        // it off first cut the host off its workloads and then answered "try
        // again", the address kept in IPAM (found by a chaos review,
        // 2026-12-06).
        let mut released = Vec::new();
        for s in &subnets {
            released.extend(self.release(&key, &s.cidr).await?);
            if let Some(addr) = held.get(&s.id).and_then(|a| a.parse::<Ipv4Net>().ok()) {
                self.netlink
                    .set_address(&bridge_name(s.vni), addr.addr(), addr.prefix_len(), false)
                    .await
                    .map_err(failed)?;
            }
            self.names.gateway_gone(s.id);
        }
        // The bridge's last address gone, the kernel flushed its neighbour
        // table: the workloads' pins go back at once (the control loop's full
        // pass would, within 30 s).
        let held = crate::plan::netmap::held_by(&self.maps.borrow(), self.node_id);
        if let Err(e) = self.netlink.replug_ports(|ip| held.contains(&ip)).await {
            tracing::warn!(error = %e, "pinning this host's workloads again after hide");
        }
        Ok(released)
    }
}
