//! grpcurl-style discovery: reflection lists every service; health answers.
mod common;

use common::TestCoordinator;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use weave_proto::client::{AuthChannel, Bearer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_every_service_and_health_is_serving() {
    let c = TestCoordinator::start().await;
    let list_services = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    // Without a credential: nothing but UNAUTHENTICATED.
    let mut outsider = ServerReflectionClient::new(c.channel().await);
    let refused = outsider.server_reflection_info(tokio_stream::iter([list_services()])).await;
    assert_eq!(refused.map(|_| ()).unwrap_err().code(), tonic::Code::Unauthenticated);
    let mut reflection = ServerReflectionClient::new(admin_channel(&c).await);
    let mut responses =
        reflection.server_reflection_info(tokio_stream::iter([list_services()])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {:?}", response.message_response)
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "weave.v1.AdminService",
        "weave.v1.DnsService",
        "weave.v1.IpamService",
        "weave.v1.JoinService",
        "weave.v1.MapService",
        "weave.v1.NodeService",
        "weave.v1.StatusService",
        "weave.v1.SubnetService",
        "weave.v1.TokenService",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }

    // A client can fetch the descriptor of a service to build calls, as grpcurl does.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("weave.v1.SubnetService".into())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().expect("a response");
    assert!(
        matches!(response.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty())
    );

    let mut health = HealthClient::new(c.channel().await);
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
    // Each weave service by name too (`grpc_health_probe -service`); others
    // are NOT_FOUND, as the health protocol says.
    for service in names.iter().filter(|n| n.starts_with("weave.v1.")) {
        let status = health.check(HealthCheckRequest { service: service.clone() }).await.unwrap().into_inner();
        assert_eq!(status.status(), ServingStatus::Serving, "{service}");
    }
    let unknown = health.check(HealthCheckRequest { service: "weave.v1.Nothing".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

/// A probe watching health sees NOT_SERVING when the coordinator begins to
/// stop, before its connections go; then its watch ends (`UNAVAILABLE`) and
/// the coordinator stops. One held open on a connection that proved a
/// credential (a member's, a load balancer's health checking) kept a
/// stopped coordinator up, its lock held, for as long as it was held (found
/// by a review, 2026-12-07; `stop` fails after 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_when_a_stop_begins() {
    use weave_proto::v1::ListSubnetsRequest;
    let c = TestCoordinator::start().await;
    let channel = c.channel().await;
    let mut admin = weave_proto::client::Api::new(channel.clone(), &c.running.admin.secret).unwrap();
    admin.subnets.list_subnets(ListSubnetsRequest {}).await.expect("a call that proves the connection");
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest { service: "weave.v1.IpamService".into() };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    let stopping = tokio::spawn(c.stop());
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message()).await.expect("an update");
    assert_eq!(next.unwrap().map(|m| m.status()), Some(ServingStatus::NotServing));
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message()).await.expect("the end");
    assert_eq!(end.map(|_| ()).unwrap_err().code(), tonic::Code::Unavailable);
    stopping.await.unwrap();
    drop((watch, health, admin));
}

/// A client that never reads its answer (a zero receive window: the end of
/// its watch cannot be sent) holds a stop no longer than the drain's bound.
/// It held a stopped coordinator, its lock and its unfolded log, as long as
/// it liked (found by a review, 2026-12-07).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_holds_a_stop_for_a_bounded_time() {
    let c = TestCoordinator::start().await;
    let endpoint = weave_proto::client::endpoint(&c.addr(), c.pin()).expect("endpoint");
    let channel = endpoint.initial_stream_window_size(0u32).connect().await.expect("connect");
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest { service: String::new() };
    let watch = tokio::time::timeout(std::time::Duration::from_secs(10), health.watch(request))
        .await
        .expect("the watch's headers")
        .expect("a watch");
    let started = std::time::Instant::now();
    c.stop().await;
    let took = started.elapsed();
    assert!(took < weave_coordinator::server::DRAIN_WITHIN + std::time::Duration::from_secs(8), "stopped in {took:?}");
    drop((watch, health));
}

/// Python's grpcio-reflection, Postman and older tools speak only v1alpha.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_is_served_too() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let c = TestCoordinator::start().await;
    let request = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut outsider = ServerReflectionClient::new(c.channel().await);
    let refused = outsider.server_reflection_info(tokio_stream::iter([request()])).await;
    assert_eq!(refused.map(|_| ()).unwrap_err().code(), tonic::Code::Unauthenticated);
    // Nor with a node's credential: agents never need it, and a member's
    // unread streams would cost the coordinator as an outsider's did.
    let joined = c.admin().await.join.join(common::join_request(&c.token(), "h1", 1)).await.unwrap().into_inner();
    let node = Bearer::new(&joined.credential).unwrap();
    let mut member =
        ServerReflectionClient::new(tonic::service::interceptor::InterceptedService::new(c.channel().await, node));
    let refused = member.server_reflection_info(tokio_stream::iter([request()])).await;
    assert_eq!(refused.map(|_| ()).unwrap_err().code(), tonic::Code::PermissionDenied);
    let mut reflection = ServerReflectionClient::new(admin_channel(&c).await);
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request()])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {:?}", response.message_response)
    };
    assert!(list.service.iter().any(|s| s.name == "weave.v1.SubnetService"), "{:?}", list.service);
}

/// A reflection stream lives as long as its client likes: one opened with
/// the admin credential ends, UNAUTHENTICATED, when that credential is
/// rotated (it went on answering the old one; found by a review,
/// 2026-12-07), as an admin's map watch does. One opened with the new
/// credential is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflection_stream_ends_when_its_admin_credential_is_rotated() {
    use weave_proto::v1::RotateAdminCredentialRequest;
    let c = TestCoordinator::start().await;
    let request = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("weave.v1.TokenService".into())),
    };
    let mut reflection = ServerReflectionClient::new(admin_channel(&c).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses =
        reflection.server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(request()).await.unwrap();
    assert!(responses.message().await.unwrap().is_some(), "answered before the rotation");
    let rotated = c.admin().await.admin.rotate_admin_credential(RotateAdminCredentialRequest {}).await.unwrap();
    let rotated = weave_proto::token::AdminCredential::parse(&rotated.into_inner().credential).unwrap();
    // Asked again after the rotation: the stream ends instead of answering.
    let _ = tx.send(request()).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the stream ends once its credential is rotated");
    assert_eq!(ended.code(), tonic::Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("replaced"), "{ended:?}");
    // The new credential's stream answers.
    let channel =
        tonic::service::interceptor::InterceptedService::new(c.channel().await, Bearer::new(&rotated.secret).unwrap());
    let mut fresh = ServerReflectionClient::new(channel);
    let mut answers = fresh.server_reflection_info(tokio_stream::iter([request()])).await.unwrap().into_inner();
    assert!(answers.message().await.unwrap().is_some());
}

/// A channel that sends the admin credential with every call.
async fn admin_channel(c: &TestCoordinator) -> AuthChannel {
    let secret = c.running.admin.secret.clone();
    tonic::service::interceptor::InterceptedService::new(c.channel().await, Bearer::new(&secret).unwrap())
}

/// At most 4 health `Watch` streams are open from one address, and 256 on
/// a coordinator: a member's connections (authenticated, so never closed)
/// held thousands, 5.6 KB of the coordinator's memory each (found by a
/// review, 2026-12-06). The next is refused at once, saying what to do;
/// `Check` still answers; a closed watch makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watches_are_bounded() {
    // 65 connections that prove nothing: past --max-unauthenticated-connections.
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.max_unauthenticated_connections = 0).await;
    let request = || HealthCheckRequest { service: String::new() };
    let watch = |mut client: HealthClient<tonic::transport::Channel>| async move {
        let mut w = client.watch(request()).await?.into_inner();
        assert_eq!(w.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
        Ok::<_, tonic::Status>(w)
    };
    // 64 addresses with 4 each: the coordinator's 256.
    let mut open = Vec::new();
    for i in 0..64 {
        let client = HealthClient::new(c.channel_from(&format!("127.0.1.{}", i + 1)).await.unwrap());
        for _ in 0..4 {
            open.push(watch(client.clone()).await.expect("a watch within the bounds"));
        }
        if i == 0 {
            let fifth = watch(client.clone()).await.map(|_| ()).unwrap_err();
            assert_eq!(fifth.code(), tonic::Code::ResourceExhausted, "{fifth:?}");
            assert!(fifth.message().contains("from this address"), "{}", fifth.message());
        }
    }
    let mut other = HealthClient::new(c.channel_from("127.0.2.1").await.unwrap());
    let refused = watch(other.clone()).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("poll grpc.health.v1.Health/Check"), "{}", refused.message());
    let status = other.check(request()).await.expect("Check answers").into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
    drop(open.pop());
    let again = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match watch(other.clone()).await {
                Ok(w) => return w,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    });
    again.await.expect("room again once a watch closed");
}
