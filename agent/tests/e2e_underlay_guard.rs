//! The malicious member's (or mistaken admin's) subnet over the underlay:
//! the coordinator refuses one holding a known host's address, but a host
//! that joins later inside an existing subnet is protected only by its
//! agent, which must not route its own underlay into an overlay bridge.
mod common;

use std::time::Duration;

use common::*;

#[test]
#[ignore = "needs root: network namespaces"]
fn a_subnet_over_the_underlay_is_not_installed_and_hosts_still_reach_each_other() {
    let mut bed = Bed::new();
    // 192.0.2.8/29 holds the hosts' underlay addresses (192.0.2.11 and .12)
    // but not the coordinator's (192.0.2.2): accepted while no host is there.
    let trap = bed.admin(|mut api| async move {
        let r = weave_proto::v1::AddSubnetRequest { cidr: "192.0.2.8/29".into(), name: String::new() };
        api.subnets.add_subnet(r).await.expect("no node holds an address in it yet").into_inner()
    });
    bed.add_host();
    bed.add_host();
    // Installed, its route would send host-to-host WireGuard into a bridge.
    bed.wait_peers(0, 1);
    bed.wait_peers(1, 1);
    bed.add_workload(0, "default");
    bed.add_workload(1, "default");
    bed.wait_ping(0, 1, Duration::from_secs(10));
    bed.wait_ping(1, 0, Duration::from_secs(10));
    for i in 0..2 {
        let st = bed.wait_status(i);
        let seg = st.segments.iter().find(|s| s.subnet == trap.cidr).expect("the subnet is in the map");
        let why = seg.skipped.as_deref().expect("shown as not installed in agent status");
        assert_eq!(why, "subnet 192.0.2.8/29 skipped: it holds the underlay address 192.0.2.11 of node h1");
        let routes = ok_in(&bed.hosts[i].ns, &["ip", "route", "show", "192.0.2.8/29"]);
        assert!(routes.trim().is_empty(), "host {} routes it: {routes}", i + 1);
        let bridge = in_ns(&bed.hosts[i].ns, &["ip", "link", "show", &seg.bridge]);
        assert!(!bridge.status.success(), "host {} made its bridge {}", i + 1, seg.bridge);
        let log = bed.log(i);
        assert_eq!(log.matches("192.0.2.8/29 skipped").count(), 1, "one log line, not one per pass: {log}");
        let status = String::from_utf8_lossy(
            &std::process::Command::new(agent_bin())
                .args(["status", "--socket"])
                .arg(&bed.hosts[i].socket)
                .output()
                .unwrap()
                .stdout,
        )
        .to_string();
        assert!(status.contains("segment 192.0.2.8/29 vni"), "{status}");
        assert!(status.contains("NOT INSTALLED: subnet 192.0.2.8/29 skipped"), "{status}");
    }
}
