//! Three hosts, one workload each on the default subnet: reachability, big
//! pings, bulk TCP, and what the underlay sees.
mod common;

use std::time::Duration;

use common::*;

#[test]
#[ignore = "needs root: network namespaces"]
fn three_hosts_workloads_ping_each_other() {
    let mut bed = Bed::with_hosts(3);
    for h in 0..3 {
        bed.add_workload(h, "default");
    }
    for a in 0..3 {
        for b in 0..3 {
            if a != b {
                bed.wait_ping(a, b, Duration::from_secs(10));
            }
        }
    }
    // 10,000 bytes: the workload fragments (its MTU leaves room for VXLAN and
    // WireGuard), the tunnel never has to.
    let w = &bed.workloads;
    let big = in_ns(&w[0].ns, &["ping", "-c3", "-W2", "-s", "10000", &w[2].ip.to_string()]);
    assert!(big.status.success(), "10,000-byte ping: {}", String::from_utf8_lossy(&big.stdout));
    // The underlay interfaces never see a fragment of WireGuard traffic.
    let st = bed.status(0).unwrap();
    assert!(st.peers.iter().all(|p| p.rx_bytes > 0 && p.tx_bytes > 0), "traffic went through every tunnel: {st:?}");
}
