//! Addresses for an attach or expose, from the coordinator's IPAM.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weave_proto::{
    client::retry_unavailable,
    local_api::Refusal,
    v1::{AllocateRequest, Subnet},
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
}
