//! Nodes that leave without a `node rm` (autoscaled hosts): a token made
//! with `forget_after_seconds` gives its nodes that much time out of touch
//! (no map watch), after which the coordinator removes them with everything
//! they held, and tells their agent it may join again. A node that keeps its
//! watch, a node of another token, and a node last seen before this
//! coordinator started (it was down: nobody could watch) are kept.
mod common;

use std::time::{Duration, Instant};

use common::{TestCoordinator, assert_status, execute_sql, join_request};
use tonic::Code;
use weave_proto::v1::{
    AllocateRequest, CreateTokenRequest, ListAllocationsRequest, ListNodesRequest, ListRecordsRequest, Node,
    WatchRequest, map_change::Change, watch_event::Event,
};

/// A coordinator that allows `forget_after` down to 10 s (the default
/// floor is 5 minutes).
async fn with_floor_of_10s() -> TestCoordinator {
    TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.forget_after_floor = "10s".into()).await
}

async fn nodes(c: &TestCoordinator) -> Vec<Node> {
    c.admin().await.nodes.list_nodes(ListNodesRequest {}).await.unwrap().into_inner().nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_out_of_touch_for_its_tokens_forget_after_is_forgotten_and_may_join_again() {
    let c = with_floor_of_10s().await;
    let started = Instant::now();
    let mut admin = c.admin().await;
    let create = |forget_after_seconds| CreateTokenRequest { forget_after_seconds, ..Default::default() };
    // Bounds: less than 10 s would forget a node in an agent's restart.
    for bad in [1, 9, 3650 * 86_400 + 1] {
        let r = admin.tokens.create_token(create(bad)).await;
        assert_status(r, Code::InvalidArgument, "between 10s and 3650 days");
    }
    let made = admin.tokens.create_token(create(10)).await.unwrap().into_inner();
    assert_eq!(made.token.as_ref().unwrap().forget_after_seconds, 10);
    let token = made.secret_token;

    // `keep` watches the whole time; `gone` holds an address and a name and
    // never watches; `old` was last seen long before this coordinator
    // started; `plain` joined with a token without forget_after.
    let join = |name: &'static str, key: u8, token: String| {
        let c = &c;
        async move {
            let r = c.admin().await.join.join(join_request(&token, name, key)).await.unwrap().into_inner();
            (r.node.unwrap(), c.api_with(&r.credential).await)
        }
    };
    let (_, mut keep) = join("keep", 1, token.clone()).await;
    let (gone, mut gone_api) = join("gone", 2, token.clone()).await;
    let (old, _) = join("old", 3, token.clone()).await;
    let (plain, _) = join("plain", 4, c.token()).await;
    execute_sql(&c, &format!("UPDATE nodes SET joined_at = joined_at - 1000 WHERE id = {}", old.id)).await;
    execute_sql(
        &c,
        &format!(
            "INSERT INTO node_presence (node_id, watching, seen_at) VALUES ({}, FALSE, {})",
            old.id,
            weave_coordinator::store::now() - 1000
        ),
    )
    .await;
    let listed = nodes(&c).await;
    let forget = |name: &str| listed.iter().find(|n| n.name == name).unwrap().forget_after_seconds;
    assert_eq!((forget("keep"), forget("gone"), forget("plain")), (10, 10, 0));
    let held = AllocateRequest { container: "c1".into(), dns_name: "web".into(), ..Default::default() };
    let address = gone_api.ipam.allocate(held).await.unwrap().into_inner().address;
    let mut watch = keep.map.watch(WatchRequest::default()).await.unwrap().into_inner();
    assert!(matches!(watch.message().await.unwrap().unwrap().event, Some(Event::Snapshot(_))));

    // Past one check (every 5 s), and before its 10 s: all still there,
    // `old` too (its time counts from this coordinator's start).
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(started.elapsed())).await;
    let names: Vec<String> = nodes(&c).await.into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["keep", "gone", "old", "plain"], "forgotten before 10 s out of touch");

    // Then `gone` and `old` go, with what they held; the others stay.
    let deadline = Instant::now() + Duration::from_secs(20);
    let names = loop {
        let names: Vec<String> = nodes(&c).await.into_iter().map(|n| n.name).collect();
        if names.len() == 2 || Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(names, ["keep", "plain"]);
    assert!(started.elapsed() >= Duration::from_secs(10), "forgotten after {:?}", started.elapsed());
    let allocations = admin.ipam.list_allocations(ListAllocationsRequest::default()).await.unwrap().into_inner();
    assert!(allocations.allocations.iter().all(|a| a.address != address), "{allocations:?}");
    let records = admin.dns.list_records(ListRecordsRequest::default()).await.unwrap().into_inner();
    assert!(records.records.iter().all(|r| r.name != "web"), "{records:?}");
    // The watcher heard of both removals.
    let mut removed = Vec::new();
    while removed.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
        if let Some(Event::Change(c)) = event.event
            && let Some(Change::NodeRemoved(id)) = c.change
        {
            removed.push(id);
        }
    }
    removed.sort();
    assert_eq!(removed, [gone.id, old.id]);

    // Its agent is told so, marked "forgotten" (not "removed": it may join again) ...
    let told = gone_api.nodes.list_nodes(ListNodesRequest {}).await.unwrap_err();
    assert_eq!(told.code(), Code::Unauthenticated);
    assert!(told.message().contains("node 'gone' was forgotten"), "{told:?}");
    assert_eq!(told.metadata().get("weave-membership").map(|v| v.to_str().unwrap()), Some("forgotten"));
    // ... and does, as a new node under its name.
    let (again, _) = join("gone", 2, token).await;
    assert!(again.id > old.id && again.forget_after_seconds == 10, "{again:?}");
    assert!(nodes(&c).await.iter().any(|n| n.id == plain.id), "the plain token's node stays");
    c.stop().await;
}

/// A coordinator that sees no node watching at all (its own network down,
/// every agent cut off from it) forgets nobody: their time counts from when
/// a watch returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_is_forgotten_while_none_holds_a_watch() {
    let c = with_floor_of_10s().await;
    let started = Instant::now();
    let mut admin = c.admin().await;
    let made = CreateTokenRequest { forget_after_seconds: 10, ..Default::default() };
    let token = admin.tokens.create_token(made).await.unwrap().into_inner().secret_token;
    let mut joined = Vec::new();
    for (name, key) in [("a", 1), ("b", 2)] {
        let r = admin.join.join(join_request(&token, name, key)).await.unwrap().into_inner();
        joined.push(c.api_with(&r.credential).await);
    }
    // Three checks past their 10 s: both kept.
    tokio::time::sleep(Duration::from_secs(16).saturating_sub(started.elapsed())).await;
    let names = |nodes: Vec<Node>| nodes.into_iter().map(|n| n.name).collect::<Vec<_>>();
    assert_eq!(names(nodes(&c).await), ["a", "b"], "forgotten while no node watched");
    // b comes back: a's time starts (from the last check that saw no one).
    let back = Instant::now();
    let mut watch = joined[1].map.watch(WatchRequest::default()).await.unwrap().into_inner();
    watch.message().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(names(nodes(&c).await), ["a", "b"], "a forgotten {:?} after a watch came back", back.elapsed());
    let deadline = Instant::now() + Duration::from_secs(20);
    while names(nodes(&c).await) != ["b"] {
        assert!(Instant::now() < deadline, "a was not forgotten once b watched again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.stop().await;
}

/// A stopping coordinator ends every watch it counted open, even one whose
/// end it was not told of (a stream opened while it drained, or dropped
/// with the runtime): the node is not shown `connected`, nor kept from being
/// forgotten, for two presence refreshes after it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_trackers_watches_count_as_ended() {
    let c = TestCoordinator::start().await;
    // The default floor: five minutes.
    let short = CreateTokenRequest { forget_after_seconds: 299, ..Default::default() };
    let r = c.admin().await.tokens.create_token(short).await;
    assert_status(r, Code::InvalidArgument, "between 5m and 3650 days");
    let (node, _) = c.join("h1", 1).await;
    let store = c.running.store.clone();
    let (presence, run) = weave_coordinator::api::presence::Presence::new(store.clone());
    tokio::spawn(run);
    let connected =
        || async { store.presence().await.unwrap().iter().find(|p| p.node_id == node.id).map(|p| p.connected) };
    presence.watch(node.id, "h1", true);
    let deadline = Instant::now() + Duration::from_secs(5);
    while connected().await != Some(true) {
        assert!(Instant::now() < deadline, "the watch was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    presence.stop().await;
    assert_eq!(connected().await, Some(false));
    c.stop().await;
}
