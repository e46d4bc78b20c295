//! `IpamDriver.*`: Docker's pools are weave subnets and its addresses are
//! the coordinator's allocations, so an address is unique across hosts,
//! `--ip` is the coordinator's to grant, and a release frees it everywhere.
use serde_json::{Value, json};
use weave_proto::{
    client::retry_unavailable,
    v1::{AddSubnetRequest, AllocateRequest, ListAllocationsRequest, ListSubnetsRequest, RemoveSubnetRequest},
};

use super::{Refused, driver::Plugin};
use crate::plan::docker::{
    self as wire, ADDRESS_SPACE, ENDPOINT_KEY_PREFIX, GATEWAY_KEY, PoolRef, RequestAddress, RequestPool,
};

impl Plugin {
    pub(super) async fn ipam(&self, method: &str, body: &[u8]) -> Result<Value, Refused> {
        match method {
            "GetCapabilities" => Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})),
            "GetDefaultAddressSpaces" => {
                Ok(json!({"LocalDefaultAddressSpace": ADDRESS_SPACE, "GlobalDefaultAddressSpace": ADDRESS_SPACE}))
            }
            "RequestPool" => self.request_pool(&parse(body)?).await,
            "ReleasePool" => self.release_pool(&parse(body)?).await,
            "RequestAddress" => self.request_address(&parse(body)?).await,
            "ReleaseAddress" => self.release_address(&parse(body)?).await,
            _ => Err(Refused::not_found(format!("unknown IPAM method {method}"))),
        }
    }

    /// `--subnet` given: that weave subnet, added if missing (the
    /// coordinator refuses one that overlaps another); none: the default.
    async fn request_pool(&self, req: &RequestPool) -> Result<Value, Refused> {
        wire::check_pool(req).map_err(Refused::bad)?;
        if req.pool.trim().is_empty() {
            // Docker takes a pool it did not ask for by name as in use when
            // this host routes it (every weave subnet is routed here) and asks
            // again, for ever, with dockerd spinning a core (found by a
            // review, 2026-12-04): so the subnet must be named.
            let map = self.attacher.maps.borrow();
            let default = map.subnets.iter().find(|s| s.is_default).map_or("<CIDR>", |s| s.cidr.as_str());
            // Also what an IPv6-only `--subnet` gets (Docker asks for an
            // IPv4 pool with none named): say IPv4 (a review, 2026-12-07).
            return Err(Refused::bad(format!(
                "weave networks need an IPv4 --subnet: --subnet {default} for the default subnet, or an IPv4 \
                 subnet of your own (weave serves no IPv6 pools)"
            )));
        }
        let cidr = wire::pool_cidr(&req.pool).map_err(Refused::bad)?.to_string();
        if self.ensure_subnet(&cidr).await? {
            self.state.add_pool(&cidr);
        }
        Ok(json!({"PoolID": cidr, "Pool": cidr, "Data": {}}))
    }

    /// The weave subnet stays (other hosts' networks may use it; removing
    /// one is the admin's, `weavectl subnet rm`), unless this host added it
    /// for this pool and Docker releases the pool before any network used
    /// it: a `docker network create` refused after its pool was made
    /// (`--ipv6`, a driver option refused, `--internal` on egress) left the
    /// subnet it added, a bridge and a VXLAN device on every host (found by
    /// a review, 2026-12-05). The coordinator removes it only while it is
    /// empty and as this node added it.
    ///
    /// Nothing held on the pool is released here: Docker gives up a create
    /// whose `--aux-address` failed with this call alone, so its gateway
    /// address stays held (the next create of that subnet on this host takes
    /// it again), but the pool's id is its subnet, which another create on
    /// this host may be using at the same moment, and weave's IPAM may serve
    /// another driver's network, which this plugin never sees: releasing
    /// what this host held there took their addresses (a review,
    /// 2026-12-07).
    async fn release_pool(&self, req: &PoolRef) -> Result<Value, Refused> {
        let Ok(cidr) = wire::pool_cidr(&req.pool_id).map(|c| c.to_string()) else { return Ok(json!({})) };
        if self.state.networks_on(&cidr) > 0 || !self.state.take_pool(&cidr) {
            return Ok(json!({}));
        }
        let req = RemoveSubnetRequest { subnet: cidr.clone(), force: false };
        let removed = retry_unavailable(|| {
            let (mut subnets, req) = (self.attacher.api.subnets.clone(), req.clone());
            async move { subnets.remove_subnet(req).await }
        })
        .await;
        match removed {
            Ok(_) => tracing::info!(subnet = cidr, "took back the weave subnet of a Docker network never made"),
            // Another host's network holds an address there by now: it stays.
            Err(s) => tracing::info!(subnet = cidr, reason = s.message(), "the weave subnet of a Docker pool stays"),
        }
        Ok(json!({}))
    }

    /// Subnet `cidr` in the cluster: true if this call added it.
    async fn ensure_subnet(&self, cidr: &str) -> Result<bool, Refused> {
        if self.attacher.maps.borrow().subnets.iter().any(|s| s.cidr == cidr) {
            return Ok(false);
        }
        // Retried on UNAVAILABLE like every coordinator call here (a
        // balanced channel may send it to a coordinator that just died); a
        // repeat of one that was applied is refused and settled below.
        let req = AddSubnetRequest { cidr: cidr.into(), name: String::new(), egress: false };
        let added = retry_unavailable(|| {
            let (mut subnets, req) = (self.attacher.api.subnets.clone(), req.clone());
            async move { subnets.add_subnet(req).await }
        })
        .await;
        match added {
            Ok(s) => {
                tracing::info!(subnet = %s.into_inner().cidr, "added a weave subnet for a Docker network");
                Ok(true)
            }
            Err(s) => {
                // Another host's `docker network create` may just have added
                // it: its write can still be in the coordinator's open batch,
                // which a read does not see for a moment (the refusal did:
                // one of two hosts running the same create at once failed;
                // found by a review, 2026-12-05). Looked for a few times.
                let settles = s.code() == tonic::Code::AlreadyExists;
                for attempt in 0..if settles { 10 } else { 1 } {
                    if attempt > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    let list = retry_unavailable(|| {
                        let mut subnets = self.attacher.api.subnets.clone();
                        async move { subnets.list_subnets(ListSubnetsRequest {}).await }
                    })
                    .await?;
                    if list.into_inner().subnets.iter().any(|x| x.cidr == cidr) {
                        return Ok(false);
                    }
                }
                Err(s.into())
            }
        }
    }

    /// An endpoint's address (`docker:<random>` in IPAM until its container
    /// is known) or this host's gateway address on the subnet.
    async fn request_address(&self, req: &RequestAddress) -> Result<Value, Refused> {
        let cidr = wire::pool_cidr(&req.pool_id).map_err(Refused::bad)?.to_string();
        let wanted = wire::wanted_address(&req.address).map_err(Refused::bad)?;
        // Its record (the endpoint's, in docker.json) must be savable: an
        // address held under a key nothing on disk names is held for good.
        self.state.on_disk().map_err(|(_, why)| Refused::bad(format!("{why}: no address was allocated")))?;
        let key = if req.is_gateway() {
            GATEWAY_KEY.to_string()
        } else {
            format!("{ENDPOINT_KEY_PREFIX}{:016x}", rand::random::<u64>())
        };
        let allocate = AllocateRequest {
            container: key,
            subnet: cidr,
            address: wanted.map(|a| a.to_string()).unwrap_or_default(),
            ..Default::default()
        };
        // Idempotent per (node, key, subnet): the key is drawn once, above.
        let got = retry_unavailable(|| {
            let (mut ipam, req) = (self.attacher.api.ipam.clone(), allocate.clone());
            async move { ipam.allocate(req).await }
        })
        .await;
        let got = match (got, wanted.filter(|_| req.is_gateway())) {
            (Ok(got), _) => got.into_inner(),
            // `--gateway` (Compose's `ipam.config.gateway`) the same on
            // every host: the second host's was refused with no word on why
            // (found by a review, 2026-12-05).
            (Err(s), Some(gateway))
                if s.code() == tonic::Code::AlreadyExists && !held_here(s.message(), &self.attacher.node_name) =>
            {
                return Err(Refused::bad(format!(
                    "--gateway {gateway}: {}; each host's Docker network reserves a gateway address of its own (no \
                     traffic goes through it): leave out --gateway, or give each host another one",
                    s.message()
                )));
            }
            (Err(s), _) => return Err(s.into()),
        };
        Ok(json!({"Address": got.address, "Data": {}}))
    }

    /// Finds the allocation by address (Docker names only that), among the
    /// keys this plugin made ([`wire::is_docker_key`]), and releases it.
    pub(super) async fn release_address(&self, req: &RequestAddress) -> Result<Value, Refused> {
        let cidr = wire::pool_cidr(&req.pool_id).map_err(Refused::bad)?.to_string();
        let Some(ip) = wire::wanted_address(&req.address).map_err(Refused::bad)? else {
            return Err(Refused::bad("ReleaseAddress without an address"));
        };
        let held = self
            .docker_allocations(&cidr)
            .await?
            .into_iter()
            .find(|a| a.address.split('/').next() == Some(ip.to_string().as_str()));
        let Some(held) = held else { return Ok(json!({})) };
        // Another Docker network on this subnet still has this gateway.
        if held.container == GATEWAY_KEY && self.state.networks_on(&cidr) > 0 {
            return Ok(json!({}));
        }
        self.attacher.release(&held.container, &cidr).await.map_err(|r| Refused::bad(r.message))?;
        Ok(json!({}))
    }
}

impl Plugin {
    /// Releases what this node holds in subnet `cidr` under the plugin's
    /// keys ([`wire::is_docker_key`]: its gateway address, endpoints',
    /// `--aux-address` reservations), for the sweep's take-down of the last
    /// network of this host on it, removed while the agent was down (no
    /// network on its subnet being made: `take_down_network`'s `replaced`):
    /// its `--aux-address` reservations stayed held for good, recorded
    /// nowhere (found by a review, 2026-12-07). Docker's own `network rm`
    /// releases them itself. Returns how many went.
    pub(super) async fn release_leftovers(&self, cidr: &str) -> Result<usize, Refused> {
        let mine = self.docker_allocations(cidr).await?;
        for a in &mine {
            self.attacher.release(&a.container, cidr).await.map_err(|r| Refused::bad(r.message))?;
            tracing::info!(
                subnet = cidr,
                key = a.container,
                address = a.address,
                "released a Docker address of a subnet no Docker network of this host is on"
            );
        }
        Ok(mine.len())
    }

    /// This node's allocations in subnet `cidr` under the plugin's keys.
    async fn docker_allocations(&self, cidr: &str) -> Result<Vec<weave_proto::v1::Allocation>, Refused> {
        let list = ListAllocationsRequest { subnet: cidr.to_string(), ..Default::default() };
        let all = retry_unavailable(|| {
            let (mut ipam, req) = (self.attacher.api.ipam.clone(), list.clone());
            async move { ipam.list_allocations(req).await }
        })
        .await?
        .into_inner()
        .allocations;
        Ok(all
            .into_iter()
            .filter(|a| a.node_id == self.attacher.node_id && wire::is_docker_key(&a.container))
            .collect())
    }
}

/// Whether the coordinator's "… is already held by container X on node N"
/// names this node: another network of this host then holds the address,
/// and the advice for another host's does not apply.
fn held_here(message: &str, node: &str) -> bool {
    message.split_once(" on node ").is_some_and(|(_, rest)| {
        rest.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':').next() == Some(node)
    })
}

pub(super) fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Refused> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Refused::bad(format!("bad request: {e}")))
}
