use tonic::{Request, Response, Status};
use weave_proto::{
    cidr::parse_address,
    v1::{
        AllocateRequest, Allocation, ListAddressHoldsRequest, ListAddressHoldsResponse, ListAllocationsRequest,
        ListAllocationsResponse, ReleaseRequest, ReleaseResponse, ipam_service_server::IpamService,
    },
};

use super::Shared;
use crate::{
    error::Error,
    store::{AllocationFilter, Caller},
};

pub struct Ipam(pub Shared);

fn opt(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

impl Ipam {
    /// A listing's node filter: the id of the node named (name or id), if any.
    async fn node_filter(&self, node: &str) -> Result<Option<u64>, Status> {
        Ok(match opt(node) {
            Some(n) => Some(self.0.store.node(n).await?.id),
            None => None,
        })
    }
}

#[tonic::async_trait]
impl IpamService for Ipam {
    #[tracing::instrument(skip_all, fields(container = ?request.get_ref().container, subnet = ?request.get_ref().subnet))]
    async fn allocate(&self, request: Request<AllocateRequest>) -> Result<Response<Allocation>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.get_ref();
        let node = self.0.target_node(&caller, &r.node).await?;
        // `host:<name>` is a node's own exposed address (its agent's
        // expose): no node's key for another (a member allocating
        // `host:h1` on itself listed a second `host:h1`, and its own agent
        // took that for its exposed address; found by a review, 2026-12-06).
        if let Some(named) = r.container.trim().strip_prefix("host:") {
            let own = self.0.store.with_map(|m| m.nodes.iter().find(|n| n.id == node).map(|n| n.name.clone()));
            if own.as_deref() != Some(named) {
                return Err(Error::InvalidArgument(format!(
                    "'host:{named}' is another node's exposed-address key: a node's is host:<its name> (`weavectl \
                     expose` on it)"
                ))
                .into());
            }
        }
        let explicit = match opt(&r.address) {
            Some(a) => Some(parse_address(a).ok_or_else(|| {
                Error::InvalidArgument(format!("'{a}' is not an address (like 10.2.3.7 or 10.2.3.7/24)"))
            })?),
            None => None,
        };
        let allocation =
            self.0.store.allocate(&caller, node, &r.container, &r.subnet, explicit, opt(&r.dns_name)).await?;
        Ok(Response::new(allocation))
    }

    #[tracing::instrument(skip_all, fields(container = ?request.get_ref().container, subnet = ?request.get_ref().subnet))]
    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<ReleaseResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.get_ref();
        let node = self.0.target_node(&caller, &r.node).await?;
        let (released, records) = match self.0.store.release(node, r.container.trim(), opt(&r.subnet)).await {
            // Nothing allocated: the admin ends what is kept for it (a
            // node's repeated release stays "already released").
            Err(Error::NotFound(why)) if matches!(caller, Caller::Admin) => {
                let freed = self.0.store.end_holds(node, r.container.trim(), opt(&r.subnet)).await?;
                if freed.is_empty() {
                    return Err(Error::NotFound(format!("{why}, and none is kept for it")).into());
                }
                return Ok(Response::new(ReleaseResponse { freed_holds: freed, ..Default::default() }));
            }
            other => other?,
        };
        Ok(Response::new(ReleaseResponse { released, removed_dns_records: records, freed_holds: Vec::new() }))
    }

    async fn list_allocations(
        &self,
        request: Request<ListAllocationsRequest>,
    ) -> Result<Response<ListAllocationsResponse>, Status> {
        self.0.map_reader(&request).await?;
        let r = request.get_ref();
        let node_id = self.node_filter(&r.node).await?;
        let filter = AllocationFilter {
            node_id,
            subnet: opt(&r.subnet).map(str::to_string),
            container: opt(&r.container).map(str::to_string),
        };
        Ok(Response::new(ListAllocationsResponse { allocations: self.0.store.list_allocations(&filter).await? }))
    }

    async fn list_address_holds(
        &self,
        request: Request<ListAddressHoldsRequest>,
    ) -> Result<Response<ListAddressHoldsResponse>, Status> {
        self.0.map_reader(&request).await?;
        let r = request.get_ref();
        let node_id = self.node_filter(&r.node).await?;
        Ok(Response::new(ListAddressHoldsResponse { holds: self.0.store.list_holds(node_id, opt(&r.subnet)).await? }))
    }
}
