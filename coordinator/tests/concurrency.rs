//! 500 concurrent allocations from 50 clients give 500 distinct addresses,
//! and a watcher sees each one once, in consecutive revisions.
mod common;

use std::{collections::HashSet, time::Duration};

use common::TestCoordinator;
use weave_proto::v1::{map_change::Change, watch_event::Event, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_allocations_from_fifty_clients_are_distinct() {
    let c = TestCoordinator::start().await;
    let mut admin = c.admin().await;
    let mut clients = Vec::new();
    for i in 0..50u8 {
        clients.push(c.join(&format!("host{i}"), i + 1).await.1);
    }
    let mut watch =
        admin.map.watch(WatchRequest { from_revision: 0, ..Default::default() }).await.unwrap().into_inner();
    let Some(Event::Snapshot(map)) = watch.message().await.unwrap().unwrap().event else { panic!("snapshot first") };

    let mut tasks = Vec::new();
    for (i, api) in clients.iter().enumerate() {
        for j in 0..10 {
            let mut api = api.clone();
            tasks.push(tokio::spawn(async move {
                let r = AllocateRequest { container: format!("c{i}-{j}"), ..Default::default() };
                api.ipam.allocate(r).await.map(|a| a.into_inner().address)
            }));
        }
    }
    let mut addresses = HashSet::new();
    for t in tasks {
        let address = t.await.unwrap().expect("allocation succeeds");
        assert!(addresses.insert(address.clone()), "duplicate address {address}");
    }
    assert_eq!(addresses.len(), 500);
    let listed = admin.ipam.list_allocations(ListAllocationsRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.allocations.len(), 500);

    let mut seen = HashSet::new();
    let mut revision = map.revision;
    while seen.len() < 500 {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(e.revision, revision + 1, "no gaps, no reordering");
        revision = e.revision;
        let Some(Event::Change(MapChange { change: Some(Change::AllocationAdded(a)) })) = e.event else {
            panic!("only allocations happened")
        };
        assert!(seen.insert(a.address));
    }
    assert_eq!(seen, addresses);
}
