use tonic::{Request, Response, Status};
use weave_proto::v1::{
    AddRecordRequest, DnsRecord, ListRecordsRequest, ListRecordsResponse, LookupRequest, LookupResponse,
    RemoveRecordsRequest, RemoveRecordsResponse, dns_service_server::DnsService,
};

use super::Shared;

pub struct Dns(pub Shared);

#[tonic::async_trait]
impl DnsService for Dns {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn add_record(&self, request: Request<AddRecordRequest>) -> Result<Response<DnsRecord>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.get_ref();
        Ok(Response::new(self.0.store.add_record(&caller, &r.name, &r.address).await?))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn remove_records(
        &self,
        request: Request<RemoveRecordsRequest>,
    ) -> Result<Response<RemoveRecordsResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.get_ref();
        let address = Some(r.address.trim()).filter(|a| !a.is_empty());
        let removed = self.0.store.remove_records(&caller, &r.name, address).await?;
        Ok(Response::new(RemoveRecordsResponse { removed }))
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
        Ok(Response::new(ListRecordsResponse { records: self.0.store.list_records().await? }))
    }
}
