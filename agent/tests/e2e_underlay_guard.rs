//! The malicious member's (or mistaken admin's) subnet over the underlay,
//! and the other way round, a host whose underlay address lies inside an
//! existing subnet: agents leave out a subnet that holds a node's underlay
//! address (routing it into a bridge would cut that node off), so one node
//! announcing such an address would take the subnet off every host. The
//! coordinator refuses both: a subnet over a node's endpoint
//! (`coordinator/tests/grpc.rs`), and a join or endpoint update inside a
//! subnet (here end to end: the host is refused, the subnet stays).
mod common;

use std::{process::Command, time::Duration};

use common::*;

#[test]
#[ignore = "needs root: network namespaces"]
fn a_host_inside_a_subnet_is_refused_at_join_and_the_subnet_stays_installed() {
    let mut bed = Bed::new();
    bed.add_host();
    bed.add_host();
    // Beside the hosts (192.0.2.11, .12) and the coordinator (192.0.2.2).
    let trap = bed.admin(|mut api| async move {
        let r = weave_proto::v1::AddSubnetRequest { cidr: "192.0.2.40/29".into(), name: String::new() };
        api.subnets.add_subnet(r).await.expect("no node holds an address in it").into_inner()
    });
    bed.wait_peers(0, 1);
    bed.wait_peers(1, 1);
    bed.add_workload(0, &trap.cidr);
    bed.add_workload(1, &trap.cidr);
    bed.wait_ping(0, 1, Duration::from_secs(10));

    // A host whose underlay address is inside it tries to join.
    let host = bed.add_bare_host("192.0.2.42");
    let dir = bed.path("h3");
    let out = Command::new("ip")
        .args(["netns", "exec", &host])
        .arg(agent_bin())
        .args(["join", "--token", &bed.token, "--name", "h3", "--endpoint", "192.0.2.42:6784", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--socket")
        .arg(dir.join("agent.sock"))
        .env("WEAVE_DOCKER_PLUGIN", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the join was accepted: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("192.0.2.42:6784 lies inside subnet 192.0.2.40/29"), "{stderr}");
    eprintln!("refused: {}", lines[0]);

    // Nothing of it reached the map: both hosts keep the subnet installed.
    for i in 0..2 {
        let st = bed.wait_status(i);
        assert_eq!(st.peers.len(), 1, "host {} sees one peer", i + 1);
        let seg = st.segments.iter().find(|s| s.subnet == trap.cidr).expect("the subnet is in the map");
        assert_eq!(seg.skipped, None, "host {} left the subnet out", i + 1);
        let bridge = in_ns(&bed.hosts[i].ns, &["ip", "link", "show", &seg.bridge]);
        assert!(bridge.status.success(), "host {} has no bridge {}", i + 1, seg.bridge);
    }
    bed.wait_ping(0, 1, Duration::from_secs(10));
    bed.wait_ping(1, 0, Duration::from_secs(10));
}
