//! The store's clock is the database server's: a coordinator whose own
//! clock is off writes and compares the store's times (node presence,
//! forget-after, holds, tokens) as the others do (PostgreSQL); with SQLite
//! the store's clock is the host's. Alone in its binary: it moves the
//! process's clock (`LOCAL_SKEW_SECS`) under any test beside it.
mod common;

use std::sync::atomic::Ordering::Relaxed;

use common::{TestCoordinator, postgres};
use weave_coordinator::store::{LOCAL_SKEW_SECS, now};

fn real_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_clock_is_off_keeps_the_stores_time() {
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
