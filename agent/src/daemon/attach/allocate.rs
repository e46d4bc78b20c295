//! Addresses for an attach or expose, from the coordinator's IPAM, and
//! what a container holds and gives back.
use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use ipnet::Ipv4Net;
use weave_proto::{
    client::retry_unavailable,
    local_api::Refusal,
    v1::{AllocateRequest, NetworkMap, ReleaseRequest, Subnet},
};

use super::Attacher;
use crate::{
    host::netlink::WorkloadInterface,
    plan::{
        addr_spec::{AddrSpec, NamesSubnet},
        kernel::workload_mac,
        netmap::allocation_address,
    },
};

impl Attacher {
    /// Allocates every spec; on any refusal, releases what this call added.
    /// With `optional_name` (a CNI runtime's pod name), a DNS name another
    /// node's container holds, or that is kept for one just released
    /// (`--dns-name-hold`), is left out instead of refusing the address: a
    /// pod whose name a member claimed first (or a node that went down still
    /// holds) must still start, and one moved to another host started only
    /// once the hold ended (podman not at all: it does not retry; found by a
    /// review, 2026-12-06). The sweep registers it once it is free
    /// ([`Attacher::register_left_out_names`]).
    pub(super) async fn allocate_all(
        &self,
        key: &str,
        dns: &str,
        optional_name: bool,
        wanted: &[(AddrSpec, Subnet)],
    ) -> Result<Vec<(Subnet, Ipv4Addr, u8)>, Refusal> {
        let held = self.held(key);
        let (mut out, mut ids) = (Vec::new(), Vec::new());
        for (spec, subnet) in wanted {
            let address = match spec {
                AddrSpec::Ip(ip, _) => ip.to_string(),
                _ => String::new(),
            };
            let req = AllocateRequest {
                container: key.to_string(),
                subnet: subnet.cidr.clone(),
                address,
                dns_name: dns.to_string(),
                ..Default::default()
            };
            let allocate = |req: AllocateRequest| {
                retry_unavailable(move || {
                    let (mut ipam, req) = (self.api.ipam.clone(), req.clone());
                    async move { ipam.allocate(req).await }
                })
            };
            let got = match allocate(req.clone()).await {
                Err(s)
                    if optional_name
                        && !dns.is_empty()
                        && s.code() == tonic::Code::AlreadyExists
                        && (s.message().contains(" is held by ") || s.message().contains("--dns-name-hold")) =>
                {
                    tracing::warn!(
                        container = key,
                        name = dns,
                        reason = s.message(),
                        "DNS name left out (registered once it is free)"
                    );
                    let got = allocate(AllocateRequest { dns_name: String::new(), ..req }).await;
                    if got.is_ok() {
                        self.names.set_left_out(key, Some(dns));
                    }
                    got
                }
                Ok(a) => {
                    if optional_name {
                        self.names.set_left_out(key, None);
                    }
                    Ok(a)
                }
                other => other,
            };
            // A refusal releases what this call allocated before it (and an
            // address it cannot use, the one just given).
            let undo = |also: Option<&Subnet>| {
                let fresh: Vec<String> = (out.iter().map(|(s, _, _)| s).chain(also))
                    .filter(|s| !held.contains_key(&s.id))
                    .map(|s| s.cidr.clone())
                    .collect();
                async move {
                    for cidr in fresh {
                        let _ = self.release(key, &cidr).await;
                    }
                }
            };
            let got = match got {
                Ok(a) => a.into_inner(),
                Err(s) => {
                    undo(None).await;
                    return Err(Refusal::status(&s));
                }
            };
            let Ok(net) = got.address.parse::<Ipv4Net>() else {
                undo(Some(subnet)).await;
                return Err(Refusal::failed(format!("the coordinator gave a bad address '{}'", got.address)));
            };
            out.push((subnet.clone(), net.addr(), net.prefix_len()));
            ids.push(got.id);
        }
        self.map_shows(key, &ids, true).await;
        Ok(out)
    }

    /// Addresses this node holds for `key`, by subnet id, from the map (see
    /// [`Self::map_shows`] for how it is kept in step with IPAM's answers).
    pub(super) fn held(&self, key: &str) -> BTreeMap<u64, String> {
        let map = self.maps.borrow();
        map.allocations
            .iter()
            .filter(|a| a.node_id == self.node_id && a.container == key)
            .map(|a| (a.subnet_id, a.address.clone()))
            .collect()
    }

    /// Waits (at most 2 s) until the map agrees with what IPAM just
    /// answered: allocations `ids` of `key` in it (`present`) or gone from
    /// it. What a container holds is read from the map, and the next
    /// request could come faster than the map: two CNI DELs back to back
    /// (a runtime removing a container on two networks), or a DEL right
    /// after an ADD, each holding the attach lock while it waits.
    pub(super) async fn map_shows(&self, key: &str, ids: &[u64], present: bool) {
        let mut maps = self.maps.clone();
        let agrees = |m: &NetworkMap| {
            ids.iter().all(|id| m.allocations.iter().any(|a| a.id == *id && a.container == key) == present)
        };
        let waited = tokio::time::timeout(Duration::from_secs(2), async {
            while !agrees(&maps.borrow_and_update()) {
                if maps.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(container = key, ?ids, present, "the network map did not show IPAM's answer within 2 s");
        }
    }

    /// The subnets a CNI DEL (by `id`, the namespace still there) detaches,
    /// first found first: the subnets of the previous result's addresses on
    /// its interface, where the container holds that very address; else the
    /// subnet of its interface `CNI_IFNAME` (whether or not the map shows the
    /// allocation yet: a release frees only this id's own); else the
    /// configured subnet, where the container holds it. The configuration
    /// comes last: edited since the ADD, it may name the subnet of the
    /// container's other network. None: nothing of this network is left (a
    /// repeated DEL, a subnet removed with `--force`), which is what DEL
    /// asks; a refusal would leave the runtime retrying a DEL that can never
    /// do more.
    ///
    /// Never a subnet another of the container's interfaces (`inode`'s) is
    /// plugged into under a name not looked at here: a second network on
    /// the same subnet, whose ADD was refused; its DEL took the first one's
    /// address, interface and name (found by a review, 2026-12-04).
    pub(super) async fn del_subnets(
        &self,
        inode: u64,
        held: &BTreeMap<u64, String>,
        before: &[WorkloadInterface],
        ifname: Option<&str>,
        addrs: &[String],
    ) -> Result<Vec<String>, Refusal> {
        // One borrow of the map at a time (del_candidates takes its own): a
        // second read while a new map waits to be written would deadlock.
        let candidates = self.del_candidates(held, before, ifname, addrs);
        let found: Vec<(String, Option<u32>, bool)> = {
            let map = self.maps.borrow();
            candidates
                .into_iter()
                .map(|c| {
                    let subnet = map.subnets.iter().find(|s| s.cidr == c);
                    // An interface looked at with the MAC weave gave the held
                    // address is that address's, even with the address gone:
                    // a container that flushed it kept it (and its name) for
                    // good, its DEL taken for another network's (a review).
                    let held = subnet.and_then(|s| super::held_address(held, s));
                    let by_mac = held.is_some_and(|ip| before.iter().any(|i| i.mac == workload_mac(ip)));
                    (c, subnet.map(|s| s.vni), by_mac)
                })
                .collect()
        };
        let mut mine = Vec::new();
        for (cidr, vni, by_mac) in found {
            let elsewhere = match vni {
                Some(vni) if super::on_subnet(before, &cidr).is_none() && !by_mac => {
                    self.plugged_on(inode, vni).await?
                }
                _ => false,
            };
            if !elsewhere {
                mine.push(cidr);
            }
        }
        Ok(mine)
    }

    fn del_candidates(
        &self,
        held: &BTreeMap<u64, String>,
        before: &[WorkloadInterface],
        ifname: Option<&str>,
        addrs: &[String],
    ) -> Vec<String> {
        let map = self.maps.borrow();
        let holds = |s: &Subnet, ip: Option<Ipv4Addr>| {
            super::held_address(held, s).is_some_and(|has| ip.is_none_or(|ip| ip == has))
        };
        let specs: Vec<AddrSpec> = addrs.iter().filter_map(|a| AddrSpec::parse(a).ok()).collect();
        let subnets_of = |exact: bool| {
            let mut out: Vec<String> = Vec::new();
            for spec in &specs {
                let ip = match spec {
                    AddrSpec::Ip(ip, _) => Some(*ip),
                    _ => None,
                };
                if let Ok(s) = spec.subnet(&map)
                    && ip.is_some() == exact
                    && holds(s, ip)
                    && !out.contains(&s.cidr)
                {
                    out.push(s.cidr.clone());
                }
            }
            out
        };
        let own: Vec<WorkloadInterface> =
            before.iter().filter(|i| ifname.is_some_and(|n| n == i.name)).cloned().collect();
        // The interface of that name is this id's only where the id holds
        // an address on its subnet, or nobody holds the interface's: a DEL
        // after a refused ADD (its id holds nothing) took the interface of
        // another id in the namespace, whose address then stayed held for
        // good (found by a review, 2026-12-07).
        let another_holds = |s: &Subnet, ip: Ipv4Addr| {
            super::held_address(held, s).is_none()
                && map.allocations.iter().any(|a| a.subnet_id == s.id && allocation_address(&a.address) == Some(ip))
        };
        let of_interface: Vec<String> = map
            .subnets
            .iter()
            .filter(|s| super::on_subnet(&own, &s.cidr).is_some_and(|(_, ip)| !another_holds(s, ip)))
            .map(|s| s.cidr.clone())
            .collect();
        [subnets_of(true), of_interface, subnets_of(false)].into_iter().find(|s| !s.is_empty()).unwrap_or_default()
    }

    /// Releases `key`'s address on `subnet` (every subnet if empty).
    pub(crate) async fn release(&self, key: &str, subnet: &str) -> Result<Vec<String>, Refusal> {
        let req = ReleaseRequest { container: key.to_string(), subnet: subnet.to_string(), ..Default::default() };
        match retry_unavailable(|| {
            let (mut ipam, req) = (self.api.ipam.clone(), req.clone());
            async move { ipam.release(req).await }
        })
        .await
        {
            Ok(r) => {
                let released = r.into_inner().released;
                for a in &released {
                    if let Some(ip) = crate::plan::netmap::allocation_address(&a.address) {
                        self.names.route_gone(a.subnet_id, ip);
                    }
                }
                let ids: Vec<u64> = released.iter().map(|a| a.id).collect();
                self.map_shows(key, &ids, false).await;
                Ok(released.into_iter().map(|a| a.address).collect())
            }
            // Nothing held under that key: already released (a repeated
            // detach or CNI DEL), which is what was asked.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(Vec::new()),
            // A key no allocation can have (a CNI id the coordinator refuses
            // to allocate for): nothing held either, so a DEL after the
            // refused ADD succeeds, as the spec asks.
            Err(s) if s.code() == tonic::Code::InvalidArgument && s.message().contains("is not a container id") => {
                Ok(Vec::new())
            }
            Err(s) => Err(Refusal::status(&s)),
        }
    }

    /// Whether `key` holds nothing on this node but what is on `cidrs` (a
    /// detach of those leaves the container off the overlay: its DNS goes).
    pub(super) fn holds_only(&self, key: &str, cidrs: &[String]) -> bool {
        let leaving: Vec<u64> =
            self.maps.borrow().subnets.iter().filter(|s| cidrs.contains(&s.cidr)).map(|s| s.id).collect();
        self.held(key).keys().all(|id| leaving.contains(id))
    }
}
