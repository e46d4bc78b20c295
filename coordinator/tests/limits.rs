//! What one client may take: addresses per node, concurrent watches per
//! credential, the size of what it sends; and what an idle or stalled
//! connection may hold.
mod common;

use common::{TestCoordinator, assert_status, hold_write_lock, join_request};
use tonic::Code;
use weave_proto::v1::*;

fn alloc(container: &str) -> AllocateRequest {
    AllocateRequest { container: container.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_past_its_quota_is_refused_until_it_releases() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.node_quota = 3).await;
    let (_, mut api) = c.join("host1", 1).await;
    for i in 0..3 {
        api.ipam.allocate(alloc(&format!("c{i}"))).await.expect("within the quota");
    }
    assert_status(api.ipam.allocate(alloc("c3")).await, Code::ResourceExhausted, "quota");
    // Asking again for an address it holds is not a new one.
    api.ipam.allocate(alloc("c0")).await.expect("idempotent re-allocation");
    // The quota is the node's, whoever asks.
    let mut admin = c.admin().await;
    let r = AllocateRequest { node: "host1".into(), ..alloc("c4") };
    assert_status(admin.ipam.allocate(r).await, Code::ResourceExhausted, "host1 already holds 3 addresses");
    // Another node has its own.
    let (_, mut other) = c.join("host2", 2).await;
    other.ipam.allocate(alloc("c3")).await.expect("another node's quota");
    api.ipam.release(ReleaseRequest { container: "c0".into(), ..Default::default() }).await.unwrap();
    api.ipam.allocate(alloc("c3")).await.expect("room again after a release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fifth_watch_of_one_credential_is_refused() {
    use weave_coordinator::api::MAX_WATCHES_PER_CREDENTIAL;
    let c = TestCoordinator::start().await;
    let (_, mut api) = c.join("host1", 1).await;
    let mut open = Vec::new();
    for _ in 0..MAX_WATCHES_PER_CREDENTIAL {
        let mut s = api
            .map
            .watch(WatchRequest { from_revision: 0, ..Default::default() })
            .await
            .expect("within the limit")
            .into_inner();
        s.message().await.unwrap().expect("a snapshot");
        open.push(s);
    }
    assert_status(
        api.map.watch(WatchRequest { from_revision: 0, ..Default::default() }).await,
        Code::ResourceExhausted,
        "watches open",
    );
    // Other credentials have their own.
    let mut admin = c.admin().await;
    admin.map.watch(WatchRequest { from_revision: 0, ..Default::default() }).await.expect("the admin's own limit");
    // Closing one frees its place (once the server has seen the stream go).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match api.map.watch(WatchRequest { from_revision: 0, ..Default::default() }).await {
            Ok(_) => break,
            Err(s) if s.code() == Code::ResourceExhausted && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(s) => panic!("a closed watch should free its place: {s}"),
        }
    }
}

/// Connections that never finish TLS (idle ones, stalled handshakes) neither
/// keep others out nor stay open past the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_connections_neither_block_rpcs_nor_stay_open() {
    use std::time::{Duration, Instant};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };
    use weave_coordinator::server::TLS_HANDSHAKE_TIMEOUT;

    // All from 127.0.0.1, the admin's source too: no per-source limit here
    // (one_source_holds_a_bounded_number_of_connections has it).
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.max_connections_per_source = 0).await;
    let mut idle = Vec::new();
    for i in 0..600 {
        let mut s = TcpStream::connect(c.running.local_addr).await.unwrap();
        if i % 2 == 1 {
            // A TLS record header promising a 512-byte ClientHello that never comes.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        }
        idle.push(s);
    }
    let opened = Instant::now();
    let started = Instant::now();
    // Well under the stalled connections' TLS_HANDSHAKE_TIMEOUT (5 s): they
    // block nobody, though this test shares two cores with the others.
    let status = tokio::time::timeout(Duration::from_secs(3), async {
        let mut admin = c.admin().await;
        admin.status.get_status(GetStatusRequest {}).await
    })
    .await
    .expect("a new client answers within 3 s with 600 stalled connections open");
    status.expect("status");
    eprintln!("status took {:?} with 600 stalled connections", started.elapsed());

    let deadline = opened + TLS_HANDSHAKE_TIMEOUT + Duration::from_secs(3);
    for mut s in idle {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 64];
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(n)) => {
                // A TLS alert may come first; the close must follow.
                let rest = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), s.read(&mut buf));
                assert!(matches!(rest.await, Ok(Ok(0) | Err(_))), "closed after a {n}-byte alert");
            }
            Err(_) => {
                panic!("a connection without a finished handshake was still open after {TLS_HANDSHAKE_TIMEOUT:?}")
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_fields_are_refused_with_a_short_message() {
    use weave_coordinator::api::{MAX_DESCRIPTION_LEN, MAX_ENDPOINTS};
    let c = TestCoordinator::start().await;
    let (_, mut api) = c.join("host1", 1).await;
    let endpoints = |n: usize| (0..n).map(|i| format!("192.0.2.{}:{}", i % 250 + 1, 1024 + i % 60000)).collect();

    // Just under tonic's 4 MiB: it would have gone into the map and into a
    // watch event just over the limit every agent decodes. Now refused
    // from its header (MAX_REQUEST_BYTES), before it is read.
    let huge: Vec<String> = endpoints(200_000);
    assert!(huge.iter().map(|e| e.len() + 2).sum::<usize>() < 4 << 20);
    let r = api.nodes.update_endpoints(UpdateEndpointsRequest { node: String::new(), endpoints: huge }).await;
    assert_status(r, Code::OutOfRange, "too large");
    // Under that limit, the field's own.
    let r = api.nodes.update_endpoints(UpdateEndpointsRequest { node: String::new(), endpoints: endpoints(200) }).await;
    assert_status(r, Code::InvalidArgument, "at most 16");
    let r = api.nodes.update_endpoints(UpdateEndpointsRequest { node: String::new(), endpoints: endpoints(17) }).await;
    assert_status(r, Code::InvalidArgument, "at most 16");
    let ok = UpdateEndpointsRequest { node: String::new(), endpoints: endpoints(MAX_ENDPOINTS) };
    api.nodes.update_endpoints(ok).await.expect("16 endpoints");
    let mut join = common::join_request(&c.token(), "host2", 2);
    join.endpoints = endpoints(MAX_ENDPOINTS + 1);
    assert_status(c.admin().await.join.join(join).await, Code::InvalidArgument, "at most 16");

    let mut admin = c.admin().await;
    let long = CreateTokenRequest { description: "x".repeat(MAX_DESCRIPTION_LEN + 1), ..Default::default() };
    assert_status(admin.tokens.create_token(long).await, Code::InvalidArgument, "at most 256");

    // Names: DNS lengths (labels of 63, names of 253); a refusal never
    // echoes a megabyte back.
    let label = AllocateRequest { container: "c1".into(), dns_name: "a".repeat(64), ..Default::default() };
    assert_status(api.ipam.allocate(label).await, Code::InvalidArgument, "not a valid DNS name");
    let name = format!("{}.x", vec!["a".repeat(63); 4].join("."));
    let r = admin.dns.add_record(AddRecordRequest { name, address: "192.0.2.9".into() }).await;
    assert_status(r, Code::InvalidArgument, "too long for DNS");
    let big = AllocateRequest { container: "c".repeat(7_000), ..Default::default() };
    let refused = api.ipam.allocate(big).await.expect_err("a 7 KB container id");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().len() < 2048, "the refusal quotes {} bytes", refused.message().len());
}

/// A raw Join call whose message header declares `declared` bytes, of
/// which `sent` follow; the body then stays open, never finished.
fn join_held_open(declared: u32, sent: usize) -> http::Request<tonic::body::Body> {
    use futures::StreamExt;
    let mut first = vec![0u8];
    first.extend_from_slice(&declared.to_be_bytes());
    first.resize(5 + sent, 0);
    let frames =
        futures::stream::iter([Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(first)))])
            .chain(futures::stream::pending());
    http::Request::builder()
        .method("POST")
        .uri("/weave.v1.JoinService/Join")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(frames)))
        .unwrap()
}

/// A client that never joined declares a 4 MiB request (tonic's default
/// limit), sends 1 MiB of it and holds the rest back: without a smaller
/// limit the coordinator reserves and keeps the whole message, per stream
/// (64 per connection), until the body ends or the deadline passes. It is
/// answered OUT_OF_RANGE from the 5-byte header, while the body is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_declaring_a_huge_request_is_refused_from_its_header() {
    use tower::ServiceExt;
    use weave_coordinator::server::MAX_REQUEST_BYTES;
    let c = TestCoordinator::start().await;
    for (declared, sent) in [((4u32 << 20) - 1, 1usize << 20), (MAX_REQUEST_BYTES as u32 + 1, 1000)] {
        let request = join_held_open(declared, sent);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), c.channel().await.oneshot(request))
            .await
            .unwrap_or_else(|_| panic!("{declared} bytes declared: no answer while the body is open"))
            .expect("a response");
        let status = answer.headers().get("grpc-status").and_then(|v| v.to_str().ok());
        assert_eq!(status, Some("11"), "{declared} bytes declared: OUT_OF_RANGE, {:?}", answer.headers());
    }
    // The largest request weave defines is far below it, and still served.
    let (_, mut api) = c.join("host1", 1).await;
    api.ipam.allocate(alloc("c1")).await.expect("a normal request");
}

/// A stranger's request that is not protobuf (wire type 7 does not exist,
/// then a length past the end) gets one answer, `INTERNAL` "failed to
/// decode", as the gRPC status-code table has it for a request a server
/// cannot parse (grpc-go answers the same); nothing is served or written,
/// and the coordinator goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_protobuf_is_refused_in_one_answer() {
    use tower::ServiceExt;
    let c = TestCoordinator::start().await;
    for garbage in [vec![0xffu8; 16], vec![0x0a, 0x7f, b'x']] {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(garbage.len() as u32).to_be_bytes());
        frame.extend_from_slice(&garbage);
        let body = http_body_util::Full::new(bytes::Bytes::from(frame));
        let request = http::Request::builder()
            .method("POST")
            .uri("/weave.v1.JoinService/Join")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::new(body))
            .unwrap();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), c.channel().await.oneshot(request))
            .await
            .expect("answered")
            .expect("a response");
        let header = |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(header("grpc-status").as_deref(), Some("13"), "{garbage:?}: {:?}", answer.headers());
        let message = header("grpc-message").unwrap_or_default();
        assert!(message.contains("decode"), "{garbage:?}: {message}");
    }
    let (_, mut api) = c.join("host1", 1).await;
    api.ipam.allocate(alloc("c1")).await.expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_past_its_subnet_quota_is_refused_and_the_admin_is_not_counted() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.node_subnet_quota = 2).await;
    let add = |cidr: &str| AddSubnetRequest { cidr: cidr.into(), ..Default::default() };
    let (_, mut api) = c.join("host1", 1).await;
    api.subnets.add_subnet(add("10.9.0.0/24")).await.expect("within the quota");
    api.subnets.add_subnet(add("10.9.1.0/24")).await.expect("within the quota");
    assert_status(api.subnets.add_subnet(add("10.9.2.0/24")).await, Code::ResourceExhausted, "--node-subnet-quota 2");
    // Nothing of the refused one was applied.
    let mut admin = c.admin().await;
    let cidrs = |subnets: Vec<Subnet>| subnets.into_iter().map(|s| s.cidr).collect::<Vec<_>>();
    let listed = cidrs(admin.subnets.list_subnets(ListSubnetsRequest {}).await.unwrap().into_inner().subnets);
    assert!(!listed.contains(&"10.9.2.0/24".to_string()), "{listed:?}");
    // Asking again for one it has is "already exists", as for anyone.
    assert_status(api.subnets.add_subnet(add("10.9.0.0/24")).await, Code::AlreadyExists, "already exists");
    // The admin's subnets are not counted, and another node has its own quota.
    admin.subnets.add_subnet(add("10.9.2.0/24")).await.expect("the admin has no quota");
    let (_, mut other) = c.join("host2", 2).await;
    other.subnets.add_subnet(add("10.9.3.0/24")).await.expect("another node's quota");
    // Room again once the admin removed one of host1's.
    admin.subnets.remove_subnet(RemoveSubnetRequest { subnet: "10.9.1.0/24".into(), force: false }).await.unwrap();
    api.subnets.add_subnet(add("10.9.4.0/24")).await.expect("room again after a removal");
    assert_status(api.subnets.add_subnet(add("10.9.5.0/24")).await, Code::ResourceExhausted, "quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_past_its_dns_quota_is_refused_and_nothing_of_the_refused_call_stays() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.node_dns_quota = 3).await;
    let (_, mut api) = c.join("host1", 1).await;
    let named = |container: &str, name: &str| AllocateRequest { dns_name: name.into(), ..alloc(container) };
    let ip = api.ipam.allocate(named("c0", "web")).await.unwrap().into_inner().address;
    let ip = ip.split('/').next().unwrap().to_string();
    let record = |name: &str| AddRecordRequest { name: name.into(), address: ip.clone() };
    // One address may have several names, up to the node's quota in all.
    api.dns.add_record(record("www")).await.expect("second record");
    api.dns.add_record(record("api")).await.expect("third record");
    assert_status(api.dns.add_record(record("more")).await, Code::ResourceExhausted, "--node-dns-quota 3");
    // An allocation whose name does not fit is refused whole: no address either.
    assert_status(api.ipam.allocate(named("c1", "db")).await, Code::ResourceExhausted, "--node-dns-quota 3");
    let mut admin = c.admin().await;
    let list = ListAllocationsRequest { container: "c1".into(), ..Default::default() };
    let held = admin.ipam.list_allocations(list).await.unwrap().into_inner().allocations;
    assert!(held.is_empty(), "the refused allocation was applied: {held:?}");
    // A record it already has is not a new one; another node has its own quota.
    assert_status(api.dns.add_record(record("www")).await, Code::AlreadyExists, "already resolves");
    let (_, mut other) = c.join("host2", 2).await;
    other.ipam.allocate(named("c0", "other")).await.expect("another node's quota");
    // The admin is never refused, and removing one makes room again.
    admin.dns.add_record(record("by-admin")).await.expect("the admin has no quota");
    for name in ["by-admin", "api"] {
        let remove = RemoveRecordsRequest { name: name.into(), address: String::new() };
        admin.dns.remove_records(remove).await.unwrap();
    }
    api.ipam.allocate(named("c1", "db")).await.expect("room again after a removal");
    let names: Vec<String> = admin
        .dns
        .list_records(ListRecordsRequest {})
        .await
        .unwrap()
        .into_inner()
        .records
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names.iter().filter(|n| !n.starts_with("other.")).count(), 3, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_calling_too_fast_waits_its_turn_then_is_refused_and_others_are_not() {
    // 5 calls a second: a burst of 20, then up to 5 s (25 more) spaced.
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.node_rate = 5).await;
    let (_, api) = c.join("host1", 1).await;
    let (_, mut other) = c.join("host2", 2).await;
    let mut admin = c.admin().await;
    let flood: Vec<_> = (0..100)
        .map(|i| {
            let mut api = api.clone();
            tokio::spawn(async move { api.ipam.allocate(alloc(&format!("f{i}"))).await })
        })
        .collect();
    // Meanwhile another node and the admin are served as usual.
    other.ipam.allocate(alloc("c0")).await.expect("another node's call");
    admin.map.get_map(GetMapRequest {}).await.expect("the admin is not paced");
    let mut granted = 0;
    for r in futures::future::join_all(flood).await {
        match r.unwrap() {
            Ok(_) => granted += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("--node-rate 5/s"), "{}", s.message());
            }
        }
    }
    // 45 within the budget, give or take what the seconds of the run added.
    assert!((45..=60).contains(&granted), "{granted} of 100 allocations granted");
    let list = ListAllocationsRequest { node: "host1".into(), ..Default::default() };
    let held = admin.ipam.list_allocations(list).await.unwrap().into_inner().allocations;
    assert_eq!(held.len(), granted, "exactly the granted ones were written");
    // A whole-map read costs 10 (2 s of this rate): eight at once, with the
    // budget spent, go past the 5 s a call may wait.
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let mut api = api.clone();
            tokio::spawn(async move { api.map.get_map(GetMapRequest {}).await.map(|_| ()) })
        })
        .collect();
    let refused = futures::future::join_all(reads)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().as_ref().is_err_and(|s| s.code() == Code::ResourceExhausted))
        .count();
    assert!(refused >= 2, "{refused} of 8 whole-map reads refused");
}

/// AddSubnet checks the new subnet against every node's underlay addresses
/// inside the store's write transaction: a node pays for it as for a
/// whole-map read, so a member asking again and again (each answer a cheap
/// refusal to it) cannot keep the writer busy (found by a review: it cost 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_adding_subnets_is_paced_as_a_map_read() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.node_rate = 5).await;
    let add = || AddSubnetRequest { cidr: "10.9.0.0/24".into(), ..Default::default() };
    c.admin().await.subnets.add_subnet(add()).await.expect("the admin's subnet");
    let (_, api) = c.join("host1", 1).await;
    let mut calls = Vec::new();
    for _ in 0..30 {
        let mut api = api.clone();
        calls.push(tokio::spawn(async move { api.subnets.add_subnet(add()).await.map(|_| ()) }));
    }
    let mut refused = 0;
    for r in futures::future::join_all(calls).await {
        let s = r.unwrap().expect_err("the subnet exists");
        match s.code() {
            Code::ResourceExhausted => refused += 1,
            code => assert_eq!(code, Code::AlreadyExists, "{s:?}"),
        }
    }
    // 20 tokens of burst and 25 of waiting hold 4 calls of 10 (45 of 1 each would hold all 30).
    assert!(refused >= 20, "{refused} of 30 AddSubnet calls refused");
    // The admin is not paced.
    let mut admin = c.admin().await;
    for _ in 0..30 {
        assert_status(admin.subnets.add_subnet(add()).await, Code::AlreadyExists, "already exists");
    }
}

/// A proven re-join needs no token, rewrites the node and sends every agent
/// the change: it is paced like the node's other calls (as a whole-map read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proven_rejoins_are_paced_too() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.node_rate = 5).await;
    let mut anon = c.admin().await;
    let first = common::proven_join_request(&mut anon, &c.token(), "h1", 21, 21).await;
    anon.join.join(first).await.expect("first join");
    let revision = |mut api: weave_proto::client::Api| async move {
        api.map.get_map(GetMapRequest {}).await.unwrap().into_inner().revision
    };
    let before = revision(c.admin().await).await;
    let mut rejoins = Vec::new();
    for _ in 0..30 {
        let req = common::proven_join_request(&mut anon, &c.token(), "h1", 21, 21).await;
        let mut api = anon.clone();
        rejoins.push(tokio::spawn(async move { api.join.join(req).await.map(|_| ()) }));
    }
    let mut refused = 0;
    for r in futures::future::join_all(rejoins).await {
        if let Err(s) = r.unwrap() {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            refused += 1;
        }
    }
    // 20 tokens of burst and 25 of waiting hold 4 re-joins (10 each), give or take a second's 5.
    assert!(refused >= 20, "{refused} of 30 re-joins refused");
    let after = revision(c.admin().await).await;
    assert!(after - before <= 10, "{} map changes from 30 re-joins", after - before);
}

/// One source (here 127.0.0.1) holds at most --max-connections-per-source
/// connections to the gRPC port (here 3): past it a connection is closed as
/// it arrives, not after the 5 s TLS handshake timeout (anyone who can reach
/// the port could otherwise hold every file descriptor with idle
/// connections, and agents, weavectl and the database's own connections
/// would fail; found by a review). One closed lets the next in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holds_a_bounded_number_of_connections() {
    use tokio::io::AsyncReadExt;
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.max_connections_per_source = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut api = c.admin().await;
        api.subnets.list_subnets(ListSubnetsRequest {}).await.expect("within the limit");
        held.push(api);
    }
    let pin = c.running.admin.pin;
    assert!(weave_proto::client::connect(&c.addr(), pin).await.is_err(), "a fourth connection was served");
    let mut raw = tokio::net::TcpStream::connect(c.addr()).await.unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), raw.read(&mut [0u8; 1])).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "an idle fourth connection was kept: {read:?}");
    drop(held.pop());
    let mut freed = false;
    for _ in 0..50 {
        if let Ok(channel) = weave_proto::client::connect(&c.addr(), pin).await {
            let mut api = weave_proto::client::Api::new(channel, &c.running.admin.secret).unwrap();
            if api.subnets.list_subnets(ListSubnetsRequest {}).await.is_ok() {
                freed = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(freed, "a closed connection did not make room");
    drop(held);
}

/// With every slot held by one source (a member's authenticated
/// connections from one address, or a few), a newcomer from a source that
/// holds fewer gets in: the oldest connection of the source holding the
/// most is closed for it. One that would hold as many as the biggest holder
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_holding_every_slot_makes_room_for_another() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.max_connections = 3).await;
    let hog = || c.admin_from("127.0.0.2");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut api = hog().await.expect("the hog's first three");
        api.subnets.list_subnets(ListSubnetsRequest {}).await.expect("the hog's calls");
        held.push(api);
    }
    let mut admin = c.admin().await;
    admin.subnets.list_subnets(ListSubnetsRequest {}).await.expect("a source holding none is let in");
    // The hog, now at 2 of 3 with the admin at 1, does not get a third back.
    let refused = match hog().await {
        Err(_) => true,
        Ok(mut api) => api.subnets.list_subnets(ListSubnetsRequest {}).await.is_err(),
    };
    assert!(refused, "the hog took the admin's room");
    admin.subnets.list_subnets(ListSubnetsRequest {}).await.expect("the admin's connection stays");
    drop(held);
}

/// The local ports of the established TCP connections from `ip` to `port`
/// (this host's `/proc/net/tcp`, the client's side).
fn established(ip: std::net::Ipv4Addr, port: u16) -> Vec<u16> {
    let hex = |s: &str| u32::from_str_radix(s, 16).unwrap();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote) = (f[1].split_once(':')?, f[2].split_once(':')?);
            let from = std::net::Ipv4Addr::from(hex(local.0).swap_bytes());
            (from == ip && hex(remote.1) == u32::from(port) && f[3] == "01").then(|| hex(local.1) as u16)
        })
        .collect()
}

/// A connection that finishes TLS but makes no call proving a credential
/// or a join token (none, or only unauthenticated ones: health, a failed
/// credential) is closed after `--authenticate-within` (2 s here); one that made a call
/// with a credential stays, idle as long as it likes. Before, anyone who
/// could reach the port held a TLS-finished connection (~40 KiB of buffers
/// each) as long as they answered HTTP/2 pings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_prove_nothing_are_closed_and_members_stay() {
    use std::time::{Duration, Instant};

    const WITHIN: Duration = Duration::from_secs(2);
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.authenticate_within = "2s".into()).await;
    let port = c.running.local_addr.port();
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    let connect_from = |from: &'static str| async { c.channel_from(from).await.unwrap() };
    let opened = Instant::now();
    let silent = connect_from("127.0.0.3").await;
    let health = connect_from("127.0.0.4").await;
    tonic_health::pb::health_client::HealthClient::new(health.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers without a credential");
    let mut wrong = weave_proto::client::Api::new(connect_from("127.0.0.5").await, "not-a-credential").unwrap();
    assert_status(wrong.subnets.list_subnets(ListSubnetsRequest {}).await, Code::Unauthenticated, "credential");
    let mut member = c.admin_from("127.0.0.6").await.unwrap();
    member.subnets.list_subnets(ListSubnetsRequest {}).await.unwrap();
    let member_port = established(ip("127.0.0.6"), port);
    assert_eq!(member_port.len(), 1);
    // Connected (one each; a CI run under load, 2026-12-06, once saw three
    // established from 127.0.0.5, the failed credential's source, cause not
    // found: what is tested is that none of them stays, below).
    for from in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        assert!(!established(ip(from), port).is_empty(), "{from} connected");
    }

    let deadline = opened + WITHIN + Duration::from_secs(4);
    let mut left = ["127.0.0.3", "127.0.0.4", "127.0.0.5"].to_vec();
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left.retain(|from| !established(ip(from), port).is_empty());
    }
    assert!(left.is_empty(), "still open {:?} after {WITHIN:?}: {left:?}", opened.elapsed());
    assert_eq!(established(ip("127.0.0.6"), port), member_port, "the member's connection was closed");
    member.subnets.list_subnets(ListSubnetsRequest {}).await.unwrap();
    assert_eq!(established(ip("127.0.0.6"), port), member_port, "the member reconnected");
    drop((silent, health));
}

/// An outsider holding every slot from as many addresses (one connection
/// each, TLS finished, no credential) does not keep a member out: a
/// newcomer closes the oldest connection that proved nothing, whatever its
/// source. Before, with every group at one connection, every newcomer was
/// refused. A member's connection is not the one closed for the outsider's
/// next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_with_a_source_per_slot_does_not_keep_members_out() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.max_connections = 3).await;
    let port = c.running.local_addr.port();
    let outsider = |from: &'static str| c.channel_from(from);
    let mut held = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        held.push(outsider(from).await.expect("the outsider's first three"));
    }
    let mut member = c.admin_from("127.0.0.6").await.expect("connect");
    member.subnets.list_subnets(ListSubnetsRequest {}).await.expect("the member is let in");
    let member_port = established("127.0.0.6".parse().unwrap(), port);
    assert_eq!(member_port.len(), 1);
    // The server closes the evicted socket after waking its task: wait for it.
    let mut evicted = false;
    for _ in 0..50 {
        if established("127.0.0.2".parse().unwrap(), port).is_empty() {
            evicted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(evicted, "the oldest outsider's was closed");
    held.push(outsider("127.0.0.5").await.expect("an outsider replaces an outsider"));
    member.subnets.list_subnets(ListSubnetsRequest {}).await.expect("the member's connection stays");
    assert_eq!(established("127.0.0.6".parse().unwrap(), port), member_port, "the member's was closed");
    drop(held);
}

/// Connections that proved nothing are bounded on their own
/// (`--max-unauthenticated-connections`, 3 here), whatever their sources:
/// past it a newcomer closes the oldest of them from the source holding the
/// most, so an outsider's many
/// connections (each up to 64 half-sent requests in memory, some 2.1 MB:
/// from four addresses a review grew a coordinator to 2.3 GB, 2026-12-06)
/// stay at that many, and a member still gets in and keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_proved_nothing_are_bounded_on_their_own() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.max_unauthenticated_connections = 3).await;
    let port = c.running.local_addr.port();
    let outsiders = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let held_now = || outsiders.iter().map(|a| established(a.parse().unwrap(), port).len()).sum::<usize>();
    let mut held = Vec::new();
    // A newcomer from elsewhere, before any call: one source's connections
    // past the bound close that source's own, not it (the oldest of all
    // were closed, and an outsider reopening its own from one address kept
    // every newcomer from its first call; a review, 2026-12-06).
    let lone = c.channel_from("127.0.0.9").await.expect("a newcomer's connection");
    for _ in 0..6 {
        held.push(c.channel_from(outsiders[0]).await.expect("an outsider's connection"));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(established("127.0.0.9".parse().unwrap(), port).len(), 1, "the newcomer's was closed");
    drop(lone);
    // One source, then three: never more than 3 held at once.
    for n in 0..6 {
        held.push(c.channel_from(outsiders[n % 3]).await.expect("an outsider's connection"));
    }
    let mut bounded = false;
    for _ in 0..50 {
        if held_now() <= 3 {
            bounded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(bounded, "{} connections that proved nothing held, past 3", held_now());
    let mut member = c.admin_from("127.0.0.6").await.expect("connect");
    member.subnets.list_subnets(ListSubnetsRequest {}).await.expect("the member is let in");
    let member_port = established("127.0.0.6".parse().unwrap(), port);
    assert_eq!(member_port.len(), 1);
    for from in outsiders {
        held.push(c.channel_from(from).await.expect("an outsider replaces an outsider"));
    }
    member.subnets.list_subnets(ListSubnetsRequest {}).await.expect("the member's connection stays");
    assert_eq!(established("127.0.0.6".parse().unwrap(), port), member_port, "the member's was closed");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(held_now() <= 3, "{} held", held_now());
    drop(held);
}

/// A join that waits on a busy store (the write lock held elsewhere) past
/// `--authenticate-within` (2 s here) is answered, not cut off with its
/// connection: a connection with a call in flight stays open until the
/// answer (a review found joins cut after they committed, their token use
/// spent and the credential lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_waiting_on_a_busy_store_past_the_deadline_is_answered() {
    use std::time::Duration;
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.authenticate_within = "2s".into()).await;
    let lock = hold_write_lock(&c).await;
    let mut api = weave_proto::client::Api::new(c.channel_from("127.0.0.7").await.unwrap(), "").unwrap();
    let request = join_request(&c.token(), "late", 41);
    let join = tokio::spawn(async move { api.join.join(request).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    if join.is_finished() {
        // Cut off with its connection (or it never waited: the test is void).
        panic!("the join ended while the write lock was held: {:?}", join.await.unwrap());
    }
    drop(lock);
    let answer = tokio::time::timeout(Duration::from_secs(20), join).await.expect("answered").unwrap();
    let node = answer.expect("the join was answered, not cut off").into_inner().node.expect("a node");
    assert_eq!(node.name, "late");
}

/// A call whose request never finishes arriving (a Join's message header
/// declaring 100 bytes, 10 sent, the body held open) does not hold its
/// connection open past `--authenticate-within` (2 s here): only a handler
/// waiting on the store does, once the whole request is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_half_sent_does_not_keep_its_connection() {
    use std::time::{Duration, Instant};

    use tower::ServiceExt;
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.authenticate_within = "2s".into()).await;
    let port = c.running.local_addr.port();
    let request = join_held_open(100, 10);
    let opened = Instant::now();
    let channel = c.channel_from("127.0.0.8").await.unwrap();
    let call = tokio::spawn(channel.oneshot(request));
    let from = "127.0.0.8".parse().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(established(from, port).len(), 1, "connected, the call open");
    let deadline = opened + Duration::from_secs(2 + 4);
    while !established(from, port).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(established(from, port).is_empty(), "a half-sent request kept its connection open");
    let _ = tokio::time::timeout(Duration::from_secs(5), call).await.expect("the call ended with its connection");
}

/// A request a client never finishes sending, on a connection proven by a
/// credential (which `--authenticate-within` does not cut), is cut off at
/// the deadline as the client's, not the store's: any member could set off
/// the "store not answering" alert at will (found by a review, 2026-12-07).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_finished_is_not_the_stores_fault() {
    use tower::ServiceExt;
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.rpc_deadline = "6s".into()).await;
    let channel = c.channel().await;
    let mut admin = weave_proto::client::Api::new(channel.clone(), &c.running.admin.secret).unwrap();
    admin.subnets.list_subnets(ListSubnetsRequest {}).await.expect("a call that proves the connection");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(15), channel.oneshot(join_held_open(100, 10)))
        .await
        .expect("an answer at the deadline")
        .expect("an HTTP answer");
    let header = |name: &str| answer.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert_eq!(header("grpc-status"), (tonic::Code::DeadlineExceeded as i32).to_string());
    let message = header("grpc-message");
    assert!(message.contains("did%20not%20arrive%20whole") && !message.contains("database"), "{message}");
}

/// A member asking for the map again and again without reading the answers
/// (its connection's stream window at zero: nothing can be sent) used to pile
/// them up in the coordinator's memory without bound (found by a review).
/// Now a credential has at most 16 calls whose answers are not yet sent:
/// the next waits 5 s and is refused, another member is not touched, and
/// once the stalled connection closes the member is answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_leaving_answers_unread_gets_no_more_and_others_do() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.node_rate = 0).await;
    let mut admin = c.admin().await;
    let credential = admin.join.join(join_request(&c.token(), "host1", 1)).await.unwrap().into_inner().credential;
    let (_, mut other) = c.join("host2", 2).await;
    let endpoint = weave_proto::client::endpoint(&c.addr(), c.pin()).expect("endpoint").initial_stream_window_size(0);
    let stalled = weave_proto::client::Api::new(endpoint.connect().await.expect("connect"), &credential).unwrap();
    let mut unread = Vec::new();
    for _ in 0..16 {
        let mut api = stalled.clone();
        unread.push(tokio::spawn(async move { api.map.get_map(GetMapRequest {}).await.map(|_| ()) }));
    }
    drop(stalled);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(unread.iter().all(|t| !t.is_finished()), "an answer got through a zero window");

    let mut member = c.api_with(&credential).await;
    assert_status(member.map.get_map(GetMapRequest {}).await, Code::ResourceExhausted, "still being answered or sent");
    other.map.get_map(GetMapRequest {}).await.expect("another member is answered");
    admin.map.get_map(GetMapRequest {}).await.expect("the admin is answered");

    // The stalled connection closed: its answers are dropped, and the room with them.
    for t in &unread {
        t.abort();
    }
    let answered = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            match member.map.get_map(GetMapRequest {}).await {
                Ok(_) => return,
                Err(s) => assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}"),
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "the member was not answered again after its stalled connection closed");
}

/// An outsider sending bad credentials and bad join tokens from one address
/// is refused with RESOURCE_EXHAUSTED, before any lookup, once that address
/// failed 50 times faster than 5 a second (each failure cost the store three
/// lookups: ~3,000 a second from one address made members' calls ~85 times
/// slower; found by a review, 2026-12-04). Callers at other addresses are
/// served meanwhile, and the address gets its turn back with time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_failing_to_authenticate_is_refused_before_any_lookup() {
    use weave_coordinator::api::pace::{FAILURES_BURST, FAILURES_PER_SECOND};
    let c = TestCoordinator::start().await;
    let from = "127.0.0.9";
    let channel = c.channel_from(from).await.unwrap();
    let mut bogus = weave_proto::client::Api::new(channel.clone(), "not-a-credential").unwrap();
    // A node whose agent calls from that address before (its credential
    // proved there): a container masqueraded to the same address must not
    // lock it out.
    let mut admin = c.admin().await;
    let joined = admin.join.join(join_request(&c.token(), "host9", 9)).await.unwrap().into_inner();
    let mut node_there =
        weave_proto::client::Api::new(c.channel_from(from).await.unwrap(), &joined.credential).unwrap();
    node_there.status.get_status(GetStatusRequest {}).await.expect("the node's first call");
    // Once refusals begin, a failure gets through only as the rate gives
    // one back (5 a second): a CI run under load took long enough between
    // call 50 and call 97 for one (2026-12-06).
    let (mut refused, mut late, mut began) = (0, 0, None::<std::time::Instant>);
    for i in 0..3 * FAILURES_BURST {
        let r = if i % 2 == 0 {
            bogus.status.get_status(GetStatusRequest {}).await.map(drop)
        } else {
            let mut token = weave_proto::token::JoinToken::parse(&c.token()).unwrap();
            // The same shape, another secret.
            let first = if token.secret.starts_with('A') { "B" } else { "A" };
            token.secret = format!("{first}{}", &token.secret[1..]);
            bogus.join.join(join_request(&token.to_string(), "evil", 9)).await.map(drop)
        };
        let e = r.unwrap_err();
        match e.code() {
            Code::Unauthenticated if refused > 0 => late += 1,
            Code::Unauthenticated => {}
            Code::ResourceExhausted => {
                refused += 1;
                began.get_or_insert_with(std::time::Instant::now);
            }
            other => panic!("call {i}: {other:?} {}", e.message()),
        }
    }
    let given_back = began.map_or(0.0, |b| b.elapsed().as_secs_f64()) * f64::from(FAILURES_PER_SECOND);
    assert!(
        f64::from(late) <= given_back + 1.0,
        "{late} failures after the refusals began, in {given_back:.1} refills"
    );
    // A burst of 50 (and what came back while it was spent).
    assert!((FAILURES_BURST..=3 * FAILURES_BURST - FAILURES_BURST).contains(&refused), "{refused} refused");
    // A valid credential never proved from that address, and not valid when
    // the coordinator started (a node joined since), is refused too, before
    // its lookup ...
    let later = admin.join.join(join_request(&c.token(), "host10", 10)).await.unwrap().into_inner();
    let mut later_there =
        weave_proto::client::Api::new(c.channel_from(from).await.unwrap(), &later.credential).unwrap();
    assert_status(later_there.status.get_status(GetStatusRequest {}).await, Code::ResourceExhausted, "failed");
    // ... while one valid since the start (the admin's) is let through: what
    // presents a valid 256-bit secret is its holder.
    let mut admin_there = c.admin_from(from).await.unwrap();
    admin_there.status.get_status(GetStatusRequest {}).await.expect("a credential valid at the start");
    // ... but the node's, proved there before, is served, on a new connection too.
    node_there.status.get_status(GetStatusRequest {}).await.expect("the node is served meanwhile");
    let mut reconnected =
        weave_proto::client::Api::new(c.channel_from(from).await.unwrap(), &joined.credential).unwrap();
    reconnected.status.get_status(GetStatusRequest {}).await.expect("the node is served on a new connection");
    // ... while one from another address is served.
    let mut admin = c.admin_from("127.0.0.10").await.unwrap();
    admin.status.get_status(GetStatusRequest {}).await.expect("another address is served");
    // Time gives the address its turn back.
    tokio::time::sleep(std::time::Duration::from_millis(2 * 1000 / u64::from(FAILURES_PER_SECOND) + 100)).await;
    later_there.status.get_status(GetStatusRequest {}).await.expect("served again");

    // A restarted coordinator has forgotten where each credential proved
    // itself: the nodes' credentials (valid at its start) still get past an
    // address that fails meanwhile (an outsider sharing the hosts' IPv6 /64
    // kept every agent from watching again; found by a review, 2026-12-05).
    let c = TestCoordinator::start_in(c.stop().await, |_| {}).await;
    let mut bogus = weave_proto::client::Api::new(c.channel_from(from).await.unwrap(), "not-a-credential").unwrap();
    let mut refusals = 0;
    while refusals == 0 {
        let e = bogus.status.get_status(GetStatusRequest {}).await.unwrap_err();
        refusals += u32::from(e.code() == Code::ResourceExhausted);
    }
    for credential in [&joined.credential, &later.credential] {
        let mut node = weave_proto::client::Api::new(c.channel_from(from).await.unwrap(), credential).unwrap();
        node.status.get_status(GetStatusRequest {}).await.expect("a node's credential after the restart");
    }
}
