use tonic::{Request, Response, Status};
use weave_proto::{
    cidr::parse_subnet,
    v1::{
        AddSubnetRequest, ListSubnetsRequest, ListSubnetsResponse, RemoveSubnetRequest, RemoveSubnetResponse, Subnet,
        subnet_service_server::SubnetService,
    },
};

use super::Shared;
use crate::error::Error;

pub struct Subnets(pub Shared);

#[tonic::async_trait]
impl SubnetService for Subnets {
    #[tracing::instrument(skip_all, fields(subnet = %request.get_ref().cidr))]
    async fn add_subnet(&self, request: Request<AddSubnetRequest>) -> Result<Response<Subnet>, Status> {
        // A node may add an unnamed subnet (an agent's Docker plugin maps
        // `docker network create --subnet` onto one); naming, renaming and
        // removing stay the admin's. Overlaps are refused for everyone.
        let caller = self.0.caller(&request).await?;
        let r = request.get_ref();
        let name = Some(r.name.trim()).filter(|n| !n.is_empty());
        if name.is_some() {
            self.0.admin(&request).await?;
        }
        let net = parse_subnet(&r.cidr).map_err(Error::from)?;
        let subnet = self.0.store.add_subnet(&net, name).await?;
        tracing::info!(subnet = %subnet.cidr, vni = subnet.vni, by = ?caller, "subnet added");
        Ok(Response::new(subnet))
    }

    async fn list_subnets(
        &self,
        request: Request<ListSubnetsRequest>,
    ) -> Result<Response<ListSubnetsResponse>, Status> {
        self.0.caller(&request).await?;
        Ok(Response::new(ListSubnetsResponse { subnets: self.0.store.list_subnets().await? }))
    }

    #[tracing::instrument(skip_all, fields(subnet = %request.get_ref().subnet))]
    async fn remove_subnet(
        &self,
        request: Request<RemoveSubnetRequest>,
    ) -> Result<Response<RemoveSubnetResponse>, Status> {
        self.0.admin(&request).await?;
        let r = request.get_ref();
        if r.subnet.trim().is_empty() {
            return Err(Error::InvalidArgument("name the subnet to remove (CIDR or name)".into()).into());
        }
        let (subnet, released) = self.0.store.remove_subnet(&r.subnet, r.force).await?;
        tracing::info!(subnet = %subnet.cidr, released, "subnet removed");
        Ok(Response::new(RemoveSubnetResponse { subnet: Some(subnet), released_allocations: released }))
    }
}
