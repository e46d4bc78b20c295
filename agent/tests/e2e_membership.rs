//! Hosts coming and going: a late join is reachable within 5 s, a removed
//! node is unreachable within 5 s and its agent stops with one clear line.
mod common;

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use common::*;

#[test]
#[ignore = "needs root: network namespaces"]
fn a_late_host_is_reachable_within_5s_of_join() {
    let mut bed = Bed::with_hosts(2);
    bed.add_workload(0, "default");
    bed.add_workload(1, "default");
    bed.wait_ping(0, 1, Duration::from_secs(10));

    // From the moment `agent join` is done (its agent answers status); the
    // namespace and process start before it are the test bed's.
    let h3 = bed.add_host();
    let joined = Instant::now();
    let address = bed.wait_status(h3).address;
    for h in 0..2 {
        let ns = bed.hosts[h].ns.clone();
        assert!(ping_within(&ns, address, 5), "host {} did not reach the new node {address} in 5 s", h + 1);
    }
    let took = joined.elapsed();
    assert!(took <= Duration::from_secs(5), "the new host became reachable only after {took:?}");
    // Its workloads are on the same L2 segment as everyone else's.
    bed.add_workload(h3, "default");
    bed.wait_ping(0, 2, Duration::from_secs(10));
    bed.wait_ping(2, 1, Duration::from_secs(10));
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_removed_node_is_unreachable_within_5s() {
    let mut bed = Bed::with_hosts(3);
    for h in 0..3 {
        bed.add_workload(h, "default");
    }
    bed.wait_ping(0, 2, Duration::from_secs(10));
    bed.wait_ping(1, 2, Duration::from_secs(10));
    let node3: Ipv4Addr = bed.status(2).unwrap().address;
    // A container attached as a user attaches one (the agent makes its interface).
    let c3 = bed.add_container("c3");
    let attached = bed.weavectl(2, &["attach", &format!("/run/netns/{c3}")]);
    assert!(attached.status.success(), "attach: {}", String::from_utf8_lossy(&attached.stderr));
    assert!(interfaces(&c3).iter().any(|i| i.starts_with("ethwe")), "attached: {:?}", interfaces(&c3));
    assert!(in_ns(&c3, &["nft", "list", "table", "ip", "weave_dns"]).status.success(), "c3's DNS rule");

    // The way an operator does it: `weavectl node rm` on the coordinator host.
    let removed = bed.weavectl_admin(&["node", "rm", "h3"]);
    let since = Instant::now();
    let said = String::from_utf8_lossy(&removed.stdout);
    assert!(removed.status.success(), "weavectl node rm: {}", String::from_utf8_lossy(&removed.stderr));
    assert!(said.contains("h3"), "weavectl node rm says what it removed: {said}");
    let w3 = bed.workloads[2].ip;
    // Timed: both hosts dropping node 3 as a peer (its tunnel, routes and
    // allowed sources go with it). Then, untimed (each failed probe waits
    // its whole 1 s), that nothing of node 3 answers any more.
    for h in 0..2 {
        wait_for(&format!("host {} to drop node 3 as a peer", h + 1), Duration::from_secs(5), || {
            bed.status(h).filter(|s| s.peers.iter().all(|p| p.address != node3)).map(|_| ())
        });
    }
    let took = since.elapsed();
    assert!(took <= Duration::from_secs(5), "node 3 stayed a peer for {took:?}");
    for h in 0..2 {
        let (host_ns, wl_ns) = (bed.hosts[h].ns.clone(), bed.workloads[h].ns.clone());
        wait_for(&format!("host {} to lose node 3", h + 1), Duration::from_secs(5), || {
            (!ping_once(&wl_ns, w3) && !ping_once(&host_ns, node3)).then_some(())
        });
    }
    // The removed host's agent notices, takes its tunnel down and exits
    // with a distinct code and one clear line (not retrying forever).
    let agent3 = bed.hosts[2].agent.as_mut().expect("agent 3 was started");
    let status = wait_for("the removed host's agent to exit", Duration::from_secs(5), || agent3.try_wait().unwrap());
    assert_eq!(status.code(), Some(3), "exit status {status:?}; log: {}", bed.log(2));
    let log = bed.log(2);
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(
        last.starts_with("agent: this node is no longer a member")
            && last.contains("node 'h3' was removed from the cluster"),
        "last line: {last}"
    );
    assert!(!interfaces(&bed.hosts[2].ns).iter().any(|i| i.starts_with("wvtun0")), "the removed host kept its tunnel");
    // Its containers' interfaces go too: their addresses are back in the pool.
    assert!(!interfaces(&c3).iter().any(|i| i.starts_with("ethwe")), "c3 kept {:?}", interfaces(&c3));
    // And its DNS rule, which led 127.0.0.11:53 to a port no one listens on.
    assert!(!in_ns(&c3, &["nft", "list", "table", "ip", "weave_dns"]).status.success(), "c3 kept its DNS rule");
    assert!(!interfaces(&bed.hosts[2].ns).iter().any(|i| i.starts_with("wv")), "{:?}", interfaces(&bed.hosts[2].ns));
    // It stays unreachable, and the others still reach each other.
    for _ in 0..3 {
        assert!(!ping_once(&bed.workloads[0].ns, w3), "node 3's workload answered after removal");
    }
    bed.wait_ping(0, 1, Duration::from_secs(5));

    // A supervisor restarting it with its old (still valid) token does not
    // bring it back behind the admin's back; `agent reset` then a join does.
    let rejoin = bed.agent_command(2, true).output().unwrap();
    assert_eq!(rejoin.status.code(), Some(3), "{}", String::from_utf8_lossy(&rejoin.stderr));
    let said = String::from_utf8_lossy(&rejoin.stderr);
    assert!(said.contains("removed from the cluster earlier") && said.contains("agent reset"), "{said}");
    // So does `agent run` (the systemd unit's command), with the same exit 3,
    // which the unit does not restart (it said "run agent join first", exit 1).
    let rerun = bed.agent_command(2, false).output().unwrap();
    assert_eq!(rerun.status.code(), Some(3), "{}", String::from_utf8_lossy(&rerun.stderr));
    assert!(String::from_utf8_lossy(&rerun.stderr).contains("removed from the cluster earlier"));
    assert!(!String::from_utf8_lossy(&bed.weavectl_admin(&["node", "ls"]).stdout).contains("h3"));
    let reset = bed.reset_agent(2);
    assert!(reset.status.success(), "agent reset: {}", String::from_utf8_lossy(&reset.stderr));
    bed.start_agent(2, true);
    bed.wait_peers(2, 2);
}
