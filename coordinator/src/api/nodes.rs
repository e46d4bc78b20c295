use tonic::{Request, Response, Status};
use weave_proto::v1::{
    ListNodesRequest, ListNodesResponse, Node, RemoveNodeRequest, RemoveNodeResponse, RotateKeyRequest,
    UpdateEndpointsRequest, node_service_server::NodeService,
};

use super::{
    Shared,
    join::{check_endpoints, check_key, observed_endpoint},
};
use crate::{
    error::Error,
    store::{Caller, now},
};
use weave_proto::key::WgPublicKey;

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

    #[tracing::instrument(skip_all)]
    async fn rotate_key(&self, request: Request<RotateKeyRequest>) -> Result<Response<Node>, Status> {
        let Caller::Node { id, name } = self.0.caller(&request).await? else {
            return Err(Status::permission_denied(
                "only the node itself rotates its key (`agent rekey` on its host): its private key never leaves it",
            ));
        };
        let r = request.get_ref();
        let current: [u8; 32] = self
            .0
            .store
            .with_map(|m| m.nodes.iter().find(|n| n.id == id).map(|n| n.public_key.clone()))
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| Error::NotFound(format!("no node {id} in the map")))?;
        let new = WgPublicKey::from_bytes(&r.public_key).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        check_key(&new)?;
        // Proofs for a name no join takes (names hold no space): neither
        // proof can stand in for a join's.
        let purpose = format!("rotate {name}");
        for (key, proof, whose) in [(&current, &r.proof, "current"), (new.as_bytes(), &r.new_proof, "new")] {
            self.0
                .challenger
                .verify(now(), &r.challenge, &purpose, key, proof)
                .map_err(|e| Error::Unauthenticated(format!("the proof by the {whose} key: {e}")))?;
        }
        let node = self.0.store.rotate_key(id, new.as_bytes(), &current).await?;
        tracing::info!(node = %name, "WireGuard key rotated");
        Ok(Response::new(node))
    }
}
