use tonic::{Request, Response, Status};
use weave_proto::v1::{
    AddRecordRequest, DnsRecord, ListRecordsRequest, ListRecordsResponse, LookupRequest, LookupResponse,
    RemoveRecordsRequest, RemoveRecordsResponse, ShareNameRequest, ShareNameResponse, dns_service_server::DnsService,
};

use super::Shared;

pub struct Dns(pub Shared);

#[tonic::async_trait]
impl DnsService for Dns {
    #[tracing::instrument(skip_all, fields(name = ?request.get_ref().name))]
    async fn add_record(&self, request: Request<AddRecordRequest>) -> Result<Response<DnsRecord>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.get_ref();
        Ok(Response::new(self.0.store.add_record(&caller, &r.name, &r.address).await?))
    }

    #[tracing::instrument(skip_all, fields(name = ?request.get_ref().name))]
    async fn remove_records(
        &self,
        request: Request<RemoveRecordsRequest>,
    ) -> Result<Response<RemoveRecordsResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.get_ref();
        let address = Some(r.address.trim()).filter(|a| !a.is_empty());
        let (removed, freed_hold) = self.0.store.remove_records(&caller, &r.name, address).await?;
        Ok(Response::new(RemoveRecordsResponse { removed, freed_hold }))
    }

    async fn lookup(&self, request: Request<LookupRequest>) -> Result<Response<LookupResponse>, Status> {
        self.0.caller(&request).await?;
        let (name, addresses) = self.0.store.lookup(&request.get_ref().name, &self.0.cluster.dns_domain).await?;
        Ok(Response::new(LookupResponse { name, addresses }))
    }

    async fn list_records(
        &self,
        request: Request<ListRecordsRequest>,
    ) -> Result<Response<ListRecordsResponse>, Status> {
        self.0.map_reader(&request).await?;
        let records = self.0.store.list_records().await?;
        Ok(Response::new(ListRecordsResponse { records, shared_names: self.0.store.shared_names().await? }))
    }

    #[tracing::instrument(skip_all, fields(name = ?request.get_ref().name, shared = request.get_ref().shared))]
    async fn share_name(&self, request: Request<ShareNameRequest>) -> Result<Response<ShareNameResponse>, Status> {
        self.0.admin(&request).await?;
        let r = request.get_ref();
        let (name, changed, removed) = self.0.store.share_name(&r.name, r.shared).await?;
        if changed {
            tracing::info!(%name, shared = r.shared, removed, "DNS name sharing changed");
        }
        Ok(Response::new(ShareNameResponse { name, shared: r.shared, changed, removed }))
    }
}
