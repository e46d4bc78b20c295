//! What one client may take: addresses per node, concurrent watches per
//! credential, the size of what it sends; and what an idle or stalled
//! connection may hold.
mod common;

use common::{TestCoordinator, assert_status};
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
