//! `weavectl` against a coordinator older than itself, which drops the
//! request fields it does not know: a subnet asked for with `--egress`
//! came back without it, a token asked for with `--forget-after` too, and
//! weavectl said it had made them (exit 0; found by a review of upgrades,
//! 2026-12-07). Now it takes the change back and says why.
use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};
use weave_proto::{
    client::Api,
    v1::{
        subnet_service_server::{SubnetService, SubnetServiceServer},
        token_service_server::{TokenService, TokenServiceServer},
        *,
    },
};

use super::Output;
use crate::{
    cli::{SubnetCommand, TokenCommand, Uses},
    failure::Exit,
};

/// A coordinator that knows neither egress nor forget-after; what it was
/// asked to take back.
#[derive(Clone, Default)]
struct Older(Arc<Mutex<Vec<String>>>);

#[tonic::async_trait]
impl SubnetService for Older {
    async fn add_subnet(&self, r: Request<AddSubnetRequest>) -> Result<Response<Subnet>, Status> {
        Ok(Response::new(Subnet { cidr: r.into_inner().cidr, vni: 7, ..Default::default() }))
    }
    async fn list_subnets(&self, _: Request<ListSubnetsRequest>) -> Result<Response<ListSubnetsResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn remove_subnet(&self, r: Request<RemoveSubnetRequest>) -> Result<Response<RemoveSubnetResponse>, Status> {
        self.0.lock().unwrap().push(format!("remove {}", r.into_inner().subnet));
        Ok(Response::new(RemoveSubnetResponse::default()))
    }
    async fn update_subnet(&self, _: Request<UpdateSubnetRequest>) -> Result<Response<Subnet>, Status> {
        Err(Status::unimplemented(""))
    }
}

#[tonic::async_trait]
impl TokenService for Older {
    async fn create_token(&self, _: Request<CreateTokenRequest>) -> Result<Response<CreateTokenResponse>, Status> {
        let token = Token { id: "0123456789abcdef".into(), uses: 1, ..Default::default() };
        Ok(Response::new(CreateTokenResponse { secret_token: "wvt1.x".into(), token: Some(token) }))
    }
    async fn list_tokens(&self, _: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn revoke_token(&self, r: Request<RevokeTokenRequest>) -> Result<Response<Token>, Status> {
        self.0.lock().unwrap().push(format!("revoke {}", r.into_inner().id));
        Ok(Response::new(Token::default()))
    }
}

#[tokio::test]
async fn options_an_older_coordinator_drops_are_taken_back_and_said() {
    let older = Older::default();
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(SubnetServiceServer::new(older.clone()))
        .add_service(TokenServiceServer::new(older.clone()))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut api = Api::new(channel, "wva1.x").unwrap();
    let out = Output { json: true };

    let add = SubnetCommand::Add { cidr: "10.9.0.0/24".into(), name: None, egress: true };
    let failed = super::subnets::run(&mut api, &out, add).await.unwrap_err();
    assert_eq!(failed.exit, Exit::Other);
    assert!(failed.to_string().contains("the coordinator does not know --egress"), "{failed}");
    assert!(failed.to_string().contains("the subnet was removed again"), "{failed}");
    // Without the option, nothing to take back.
    let plain = SubnetCommand::Add { cidr: "10.9.1.0/24".into(), name: None, egress: false };
    super::subnets::run(&mut api, &out, plain).await.unwrap();

    let create =
        TokenCommand::Create { ttl: None, uses: Uses::Limited(1), description: None, forget_after: Some("1h".into()) };
    let checked = super::tokens::check(create).unwrap();
    let failed = super::tokens::run(&mut api, &out, checked).await.unwrap_err();
    assert!(failed.to_string().contains("the coordinator does not know --forget-after"), "{failed}");
    assert!(failed.to_string().contains("the token was revoked"), "{failed}");
    assert_eq!(*older.0.lock().unwrap(), ["remove 10.9.0.0/24", "revoke 0123456789abcdef"]);
}
