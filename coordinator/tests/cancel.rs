//! A write whose caller goes away (client deadline, Ctrl-C) at any moment is
//! either wholly done (on disk, in the in-memory map, in the event ring) or
//! not at all: the map served from memory always equals the database's, and
//! watchers see consecutive revisions.
mod common;

use std::time::Duration;

use weave_coordinator::store::{Caller, ClusterSettings, Events, Store};

fn settings() -> ClusterSettings {
    ClusterSettings {
        range: "10.32.0.0/12".parse().unwrap(),
        node_range: "10.47.0.0/16".parse().unwrap(),
        default_subnet: "10.32.0.0/16".parse().unwrap(),
        dns_domain: "weave.local.".into(),
        segment_mtu: None,
    }
}

/// xorshift: reproducible delays without a dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn revisions(events: Events) -> Vec<u64> {
    match events {
        Events::Changes(c) => c.into_iter().map(|(r, _)| r).collect(),
        Events::NeedSnapshot => panic!("the events are kept"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_dropped_at_random_moments_leave_memory_equal_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator.db");
    let store = Store::connect(&common::store_at(&path)).await.unwrap();
    store.init_cluster(&settings()).await.unwrap();
    let base = *store.revisions().borrow();

    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let (mut done, mut dropped) = (0, 0);
    for i in 0..200u32 {
        // Up to ~4 ms: around the time one fsync'd commit takes, so some
        // callers go away before, some during and some after COMMIT. Every
        // eighth waits a second, so some are done however slow the disk.
        let delay = if i % 8 == 0 { Duration::from_secs(1) } else { Duration::from_micros(next(&mut rng) % 4000) };
        let net = format!("10.33.{}.0/24", i % 250).parse().unwrap();
        let r = tokio::time::timeout(delay, store.add_subnet(&net, None, &[], false)).await;
        if r.is_ok() {
            done += 1
        } else {
            dropped += 1
        }
        let delay = Duration::from_micros(next(&mut rng) % 4000);
        let name = format!("n{i}");
        let r = tokio::time::timeout(delay, store.add_record(&Caller::Admin, &name, "192.0.2.7")).await;
        if r.is_ok() { done += 1 } else { dropped += 1 }
    }
    assert!(dropped > 0 && done > 0, "the delays should cut some writes and not others ({done} done, {dropped} cut)");
    // One write that is not cut: it queues behind anything still committing.
    store.add_subnet(&"10.34.0.0/24".parse().unwrap(), None, &[], false).await.unwrap();

    let memory = store.snapshot().await.unwrap();
    let remembered = revisions(store.events_after(base, 10_000).await.unwrap());
    let reopened = Store::connect(&common::store_at(&path)).await.unwrap();
    let mut disk = reopened.snapshot().await.unwrap();
    disk.history = memory.history; // each store begins its own
    assert_eq!(memory.revision, disk.revision, "the in-memory map is at the database's revision");
    assert!(memory == disk, "the in-memory map equals the database's");
    assert_eq!(remembered, (base + 1..=disk.revision).collect::<Vec<_>>(), "watchers see every revision, in order");
    assert_eq!(revisions(reopened.events_after(base, 10_000).await.unwrap()), remembered);
}

/// The same through the API: RPCs with short grpc-timeouts (the server drops
/// their handlers when the deadline passes), a watcher open throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_past_their_deadline_leave_get_map_equal_to_the_database_and_watchers_whole() {
    use weave_proto::v1::{AllocateRequest, GetMapRequest, ReleaseRequest, WatchRequest, watch_event::Event};

    let c = common::TestCoordinator::start().await;
    let (_, mut api) = c.join("host1", 1).await;
    let mut admin = c.admin().await;
    let mut watch =
        admin.map.watch(WatchRequest { from_revision: 0, ..Default::default() }).await.unwrap().into_inner();
    let Some(Event::Snapshot(first)) = watch.message().await.unwrap().unwrap().event else { panic!("snapshot first") };

    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..150 {
        let mut r = tonic::Request::new(AllocateRequest { container: format!("c{i}"), ..Default::default() });
        r.set_timeout(Duration::from_micros(500 + next(&mut rng) % 4000));
        let _ = api.ipam.allocate(r).await;
        if i % 3 == 0 {
            let mut r = tonic::Request::new(ReleaseRequest { container: format!("c{}", i / 2), ..Default::default() });
            r.set_timeout(Duration::from_micros(500 + next(&mut rng) % 4000));
            let _ = api.ipam.release(r).await;
        }
    }
    // An uncut write: it queues behind any commit still being published.
    api.ipam.allocate(AllocateRequest { container: "last".into(), ..Default::default() }).await.unwrap();
    let served = admin.map.get_map(GetMapRequest {}).await.unwrap().into_inner();

    let mut revision = first.revision;
    while revision < served.revision {
        let e = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .unwrap_or_else(|_| panic!("the watcher stopped at {revision} of {}", served.revision))
            .unwrap()
            .unwrap();
        assert_eq!(e.revision, revision + 1, "consecutive revisions");
        revision = e.revision;
    }
    drop((watch, admin, api));
    let dir = c.stop().await;
    let mut disk = Store::connect(&common::store_at(&dir.path().join("data/coordinator.db")))
        .await
        .unwrap()
        .snapshot()
        .await
        .unwrap();
    disk.history = served.history; // each store begins its own
    assert_eq!(served.revision, disk.revision, "GetMap is at the database's revision");
    assert!(served == disk, "GetMap equals the database's map");
}
