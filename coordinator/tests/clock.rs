//! The store's clock is the database server's: a coordinator whose own
//! clock is off writes and compares the store's times (node presence,
//! forget-after, holds, tokens) as the others do (PostgreSQL); with SQLite
//! the store's clock is the host's. Alone in its binary, its tests one at
//! a time: they move the process's clock (`LOCAL_SKEW_SECS`).
mod common;

use std::sync::atomic::Ordering::Relaxed;

use common::{TestCoordinator, postgres};
use weave_coordinator::store::{LOCAL_SKEW_SECS, now};

/// Held by each test for its length: both move the process's clock.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn real_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_clock_is_off_keeps_the_stores_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = TestCoordinator::start().await;
    let (node, _api) = c.join("n1", 1).await;
    let store = c.running.store.clone();
    store.nodes_seen(&[(node.id, true)]).await.unwrap();
    let connected = || {
        let store = store.clone();
        async move { store.presence().await.unwrap().iter().any(|p| p.node_id == node.id && p.connected) }
    };
    assert!(connected().await);
    // This host's clock jumps ten minutes ahead (another coordinator's, or
    // this one's, before NTP).
    LOCAL_SKEW_SECS.store(600, Relaxed);
    store.sync_clock().await.unwrap();
    let off = now() - real_now();
    if postgres() {
        assert!(off.abs() <= 2, "the server's clock: {off} s off");
        // Seen a moment ago on the server's clock: still connected, not due to be forgotten.
        assert!(connected().await, "a node seen now looked gone to a coordinator 10 minutes ahead");
        assert_eq!(store.forget_unseen(now(), now()).await.unwrap().map(|f| f.len()), Some(0));
    } else {
        assert!((off - 600).abs() <= 2, "SQLite's clock is this host's: {off} s off");
        assert!(!connected().await, "on this host's clock, 10 minutes after");
    }
    LOCAL_SKEW_SECS.store(0, Relaxed);
    store.sync_clock().await.unwrap();
    assert!((now() - real_now()).abs() <= 2);
}

/// The store's clock jumps forward while nodes watch (NTP stepping it, a VM
/// resumed): no node that watches is forgotten. Their last refresh looked
/// minutes old, and once a watch opened in the next 5 s (so that not every
/// node looked gone, which pauses forgetting) every node of a shorter
/// `--forget-after` was forgotten and its agent told to leave (found by a
/// review, 2026-12-07). With PostgreSQL the store's clock is the server's,
/// which this host's skew does not move: nothing jumps there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jumping_forward_forgets_no_node_that_watches() {
    let _one = ONE_AT_A_TIME.lock().await;
    use std::time::Duration;
    use tonic::Streaming;
    use weave_proto::v1::{CreateTokenRequest, ListNodesRequest, WatchEvent, WatchRequest};
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.forget_after_floor = "10s".into()).await;
    let mut admin = c.admin().await;
    let made = CreateTokenRequest { forget_after_seconds: 10, ..Default::default() };
    let token = admin.tokens.create_token(made).await.unwrap().into_inner().secret_token;
    let watching = |name: &'static str, key: u8| {
        let (c, token, mut admin) = (&c, token.clone(), admin.clone());
        async move {
            let joined = admin.join.join(common::join_request(&token, name, key)).await.unwrap().into_inner();
            let mut api = c.api_with(&joined.credential).await;
            let mut watch: Streaming<WatchEvent> = api.map.watch(WatchRequest::default()).await.unwrap().into_inner();
            watch.message().await.unwrap().expect("a snapshot");
            watch
        }
    };
    let _a = watching("a", 1).await;
    let _b = watching("b", 2).await;
    // Past a check, so that the next one measures the jump from it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    LOCAL_SKEW_SECS.store(600, Relaxed);
    // A watch opens right after the jump (an agent reconnecting).
    let _late = watching("late", 3).await;
    // Past the 10 s forget-after counted from the check that saw the jump
    // (up to 5 s after it), and the check after (5 s apart).
    tokio::time::sleep(Duration::from_secs(22)).await;
    let nodes = admin.nodes.list_nodes(ListNodesRequest {}).await.unwrap().into_inner().nodes;
    LOCAL_SKEW_SECS.store(0, Relaxed);
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "late"], "nodes watching the whole time were forgotten");
    // The clock back where it was: a node that never watches is forgotten
    // again in its time (the jump's start, ten minutes ahead now, paused
    // forgetting for those ten minutes).
    let joined = admin.join.join(common::join_request(&token, "gone", 4)).await.unwrap().into_inner();
    let gone = joined.node.unwrap().id;
    let started = std::time::Instant::now();
    loop {
        let nodes = admin.nodes.list_nodes(ListNodesRequest {}).await.unwrap().into_inner().nodes;
        if nodes.iter().all(|n| n.id != gone) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(40), "a node that never watched was kept");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
