use tonic::{Request, Response, Status};
use weave_proto::v1::{
    ListNodesRequest, ListNodesResponse, Node, RemoveNodeRequest, RemoveNodeResponse, UpdateEndpointsRequest,
    node_service_server::NodeService,
};

use super::{
    Shared,
    join::{check_endpoints, observed_endpoint},
};
use crate::{error::Error, store::Caller};

pub struct Nodes(pub Shared);

#[tonic::async_trait]
impl NodeService for Nodes {
    async fn list_nodes(&self, request: Request<ListNodesRequest>) -> Result<Response<ListNodesResponse>, Status> {
        self.0.map_reader(&request).await?;
        let nodes = self.0.store.list_nodes().await?;
        Ok(Response::new(ListNodesResponse { nodes, presence: self.0.store.presence().await? }))
    }

    #[tracing::instrument(skip_all, fields(node = ?request.get_ref().node))]
    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Result<Response<RemoveNodeResponse>, Status> {
        self.0.admin(&request).await?;
        let (node, allocations, records) = self.0.store.remove_node(&request.get_ref().node).await?;
        tracing::info!(node = %node.name, allocations, records, "node removed");
        Ok(Response::new(RemoveNodeResponse {
            node: Some(node),
            released_allocations: allocations,
            removed_dns_records: records,
        }))
    }

    async fn update_endpoints(&self, request: Request<UpdateEndpointsRequest>) -> Result<Response<Node>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.get_ref();
        let node = self.0.target_node(&caller, &r.node).await?;
        // None would leave the node unreachable for every peer that has not
        // heard from it, and no agent sends none (it announces only what it
        // has): an admin's empty list was taken, and stayed (found by a
        // review, 2026-12-05).
        if r.endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "no endpoints: a node needs at least one ip:port where its peers reach it".into(),
            )
            .into());
        }
        let endpoints = check_endpoints(&r.endpoints)?;
        self.0.store.with_map(|map| crate::store::check_outside_overlay(&endpoints, map))?;
        // Only the node's own call says where it is; an admin's keeps what was seen.
        let observed = match caller {
            Caller::Node { .. } => Some(observed_endpoint(request.remote_addr(), &endpoints)),
            Caller::Admin => None,
        };
        Ok(Response::new(self.0.store.update_endpoints(node, &endpoints, observed.as_deref()).await?))
    }
}
