//! Addresses for an attach or expose, from the coordinator's IPAM, and
//! what a container holds and gives back.
use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use weave_proto::{
    client::retry_unavailable,
    local_api::Refusal,
    v1::{AllocateRequest, ReleaseRequest, Subnet},
};

use super::Attacher;
use crate::plan::addr_spec::AddrSpec;

impl Attacher {
    /// Allocates every spec; on any refusal, releases what this call added.
    /// With `optional_name` (a CNI runtime's pod name), a DNS name another
    /// node's container holds is left out instead of refusing the address: a
    /// pod whose name a member claimed first (or a node that went down still
    /// holds) must still start. A name kept for a container that was just
    /// released (`--dns-name-hold`) still refuses: the runtime retries, and
    /// gets the name once the hold ends.
    pub(super) async fn allocate_all(
        &self,
        key: &str,
        dns: &str,
        optional_name: bool,
        wanted: &[(AddrSpec, Subnet)],
    ) -> Result<Vec<(Subnet, Ipv4Addr, u8)>, Refusal> {
        let held = self.held(key);
        let mut out = Vec::new();
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
                        && s.message().contains(" is held by ") =>
                {
                    tracing::warn!(container = key, name = dns, reason = s.message(), "DNS name left out");
                    allocate(AllocateRequest { dns_name: String::new(), ..req }).await
                }
                other => other,
            };
            let got = match got {
                Ok(a) => a.into_inner(),
                Err(s) => {
                    for (sub, _, _) in &out {
                        let sub: &Subnet = sub;
                        if !held.contains_key(&sub.id) {
                            let _ = self.release(key, &sub.cidr).await;
                        }
                    }
                    return Err(Refusal::status(&s));
                }
            };
            let net: Ipv4Net = got
                .address
                .parse()
                .map_err(|_| Refusal::failed(format!("the coordinator gave a bad address '{}'", got.address)))?;
            out.push((subnet.clone(), net.addr(), net.prefix_len()));
        }
        Ok(out)
    }

    /// Addresses this node holds for `key`, by subnet id, from the map,
    /// less the allocations released here lately: the map may still show
    /// them for a while (two DELs back to back, a runtime removing a
    /// container on two networks, come faster than the map).
    pub(super) fn held(&self, key: &str) -> BTreeMap<u64, String> {
        let map = self.maps.borrow();
        let gone = self.released.lock().unwrap_or_else(|e| e.into_inner());
        map.allocations
            .iter()
            .filter(|a| a.node_id == self.node_id && a.container == key && !gone.contains(&a.id))
            .map(|a| (a.subnet_id, a.address.clone()))
            .collect()
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
                let mut gone = self.released.lock().unwrap_or_else(|e| e.into_inner());
                gone.extend(released.iter().map(|a| a.id));
                let extra = gone.len().saturating_sub(1024);
                gone.drain(..extra);
                Ok(released.into_iter().map(|a| a.address).collect())
            }
            // Nothing held under that key: already released (a repeated
            // detach or CNI DEL), which is what was asked.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(Vec::new()),
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
