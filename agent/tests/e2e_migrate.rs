//! `coordinator migrate` on a live cluster: three hosts with workloads run
//! on a SQLite coordinator; it is stopped, its database is copied into a
//! PostgreSQL database (a throwaway server the test starts, on a Unix
//! socket), and the coordinator comes back on PostgreSQL at the same address
//! with the same data dir (TLS identity). The agents, never restarted,
//! resume their watches with the credentials they hold (no re-join: the same
//! node ids, keys and addresses), workloads keep their addresses and ping
//! throughout, and a change made afterwards reaches every host.
mod common;
#[path = "../../coordinator/tests/common/pg.rs"]
mod pg;

use std::{process::Command, time::Duration};

use common::*;

fn nodes(bed: &Bed) -> Vec<String> {
    let mut out: Vec<String> = bed
        .admin(|mut api| async move {
            api.nodes.list_nodes(weave_proto::v1::ListNodesRequest::default()).await.unwrap().into_inner().nodes
        })
        .iter()
        .map(|n| format!("{} {} {} {} {}", n.id, n.name, hex(&n.public_key), n.address, n.joined_at))
        .collect();
    out.sort();
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
#[ignore = "needs root: network namespaces, PostgreSQL as the postgres user"]
fn a_live_cluster_moves_from_sqlite_to_postgres_and_no_agent_rejoins() {
    let mut bed = Bed::with_hosts(3);
    for h in 0..3 {
        bed.add_workload(h, "default");
    }
    bed.wait_ping(0, 1, Duration::from_secs(10));
    bed.wait_ping(0, 2, Duration::from_secs(10));
    let nodes_before = nodes(&bed);
    let allocations_before = bed.allocations();
    let identities: Vec<Vec<u8>> =
        (0..3).map(|h| std::fs::read(bed.hosts[h].data_dir.join("identity.json")).expect("identity")).collect();

    // A ping for the whole switch: none may be lost.
    let (ns, to) = (bed.workloads[0].ns.clone(), bed.workloads[2].ip.to_string());
    let pinger = std::thread::spawn(move || in_ns(&ns, &["ping", "-q", "-i", "0.1", "-c", "100", "-W", "2", &to]));

    bed.kill_coordinator();
    let server = pg::OwnedPg::start();
    let url = server.0.create_database();
    let db = bed.coordinator_dir.join("coordinator.db");
    let out = Command::new(coordinator_bin())
        .args(["migrate", "--from", &format!("sqlite://{}", db.display()), "--to", &url])
        .output()
        .expect("coordinator migrate runs");
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    bed.coordinator_args = vec!["--store".into(), url];
    bed.start_coordinator();

    for h in 0..3 {
        wait_for(&format!("agent {} to watch the PostgreSQL coordinator", h + 1), Duration::from_secs(30), || {
            bed.status(h).filter(|s| s.coordinator_connected).map(|_| ())
        });
    }
    assert_eq!(nodes(&bed), nodes_before, "same nodes, ids, keys and addresses: nobody re-joined");
    assert_eq!(bed.allocations(), allocations_before, "workloads keep their addresses");
    for (h, before) in identities.iter().enumerate() {
        let now = std::fs::read(bed.hosts[h].data_dir.join("identity.json")).unwrap_or_default();
        assert_eq!(&now, before, "host {} changed its identity", h + 1);
        assert!(!bed.log(h).contains("removed from the cluster"), "{}", bed.log(h));
    }

    // A change after the switch reaches the hosts through the new store.
    let w = bed.add_workload(1, "default");
    bed.wait_ping(0, w, Duration::from_secs(15));
    bed.wait_ping(2, w, Duration::from_secs(15));

    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("100 packets transmitted, 100 received"), "loss:\n{text}");
    drop(bed);
    drop(server);
}
