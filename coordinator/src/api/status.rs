use std::sync::atomic::Ordering;

use tonic::{Request, Response, Status};
use weave_proto::v1::{ClusterStatus, GetStatusRequest, status_service_server::StatusService};

use super::Shared;

pub struct StatusApi(pub Shared);

#[tonic::async_trait]
impl StatusService for StatusApi {
    async fn get_status(&self, request: Request<GetStatusRequest>) -> Result<Response<ClusterStatus>, Status> {
        self.0.caller(&request).await?;
        let c = self.0.store.counts().await?;
        Ok(Response::new(ClusterStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: c.revision,
            range: self.0.cluster.range.to_string(),
            node_range: self.0.cluster.node_range.to_string(),
            default_subnet: c.default_subnet,
            dns_domain: self.0.cluster.dns_domain.clone(),
            nodes: c.nodes,
            subnets: c.subnets,
            allocations: c.allocations,
            dns_records: c.dns_records,
            active_tokens: c.active_tokens,
            started_at: self.0.started_at,
            watchers: self.0.watchers.load(Ordering::Relaxed),
            answered_at: request.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        }))
    }
}
