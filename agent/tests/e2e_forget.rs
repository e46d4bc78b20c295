//! A host that goes away for good without a `weavectl node rm` (an
//! autoscaled cloud node), joined with a `token create --forget-after`
//! token: once its agent has been out of touch that long the coordinator
//! forgets it, its addresses go back and its peers drop it; if it comes back,
//! its agent tears down and, started again with its token, joins as a new
//! node. The host that stayed is kept.
mod common;

use std::time::{Duration, Instant};

use common::*;

fn node_names(bed: &Bed) -> Vec<String> {
    let out = bed.weavectl_admin(&["--json", "node", "ls"]);
    assert!(out.status.success(), "node ls: {}", String::from_utf8_lossy(&out.stderr));
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    nodes.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_host_out_of_touch_for_its_forget_after_is_forgotten_and_joins_again_with_its_token() {
    // Durations down to 10 s (the default floor is 5 minutes).
    let mut bed = Bed::with_hosts_and_coordinator_args(0, &["--forget-after-floor", "10s"]);
    let made = bed.weavectl_admin(&["token", "create", "--uses", "unlimited", "--forget-after", "10s"]);
    assert!(made.status.success(), "token create: {}", String::from_utf8_lossy(&made.stderr));
    let said = String::from_utf8_lossy(&made.stderr);
    // Default lifetime (24 h): said to limit when a forgotten host can come back.
    assert!(said.contains("forgotten after 10s") && said.contains("only while it has uses left"), "{said}");
    bed.token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    bed.add_host();
    bed.add_host();
    bed.wait_peers(0, 1);
    bed.wait_peers(1, 1);
    bed.add_workload(0, "default");
    let listed = bed.weavectl_admin(&["node", "ls"]);
    assert!(String::from_utf8_lossy(&listed.stdout).lines().all(|l| l.contains("FORGET") || l.contains("10s")));
    // A container attached on h2 the way a user does (the agent makes its interface).
    let (c2, c2_ip) = attached_at(&mut bed, 1, "c2");
    assert!(ping_within(&bed.workloads[0].ns, c2_ip, 10), "h1's workload did not reach c2 at {c2_ip}");
    let node2 = bed.status(1).unwrap().address;

    // h2 goes away (its agent killed, as when the VM is deleted): 10 s on,
    // within a check (5 s), it is forgotten; h1, watching, stays.
    bed.signal_agent(1, nix::sys::signal::Signal::SIGKILL);
    let gone = Instant::now();
    wait_for("h2 to be forgotten", Duration::from_secs(30), || (node_names(&bed) == ["h1"]).then_some(()));
    assert!(gone.elapsed() >= Duration::from_secs(10), "forgotten {:?} after its agent stopped", gone.elapsed());
    wait_for("h1 to drop h2 as a peer", Duration::from_secs(5), || {
        bed.status(0).filter(|s| s.peers.iter().all(|p| p.address != node2)).map(|_| ())
    });
    assert!(!bed.allocations().iter().any(|a| a.contains(&format!(" {c2_ip}/"))), "{:?}", bed.allocations());
    let log = std::fs::read_to_string(bed.dir.path().join("coordinator.log")).unwrap();
    assert!(log.contains("node forgotten") && log.contains("h2"), "{log}");

    // It comes back (a service manager or the kubelet restarts it): its
    // agent learns it was forgotten, takes its network down and exits 1,
    // which supervisors restart ...
    bed.start_agent(1, true);
    let agent2 = bed.hosts[1].agent.as_mut().unwrap();
    let status = wait_for("h2's agent to exit", Duration::from_secs(20), || agent2.try_wait().unwrap());
    let said = bed.log(1);
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("was forgotten") && said.contains("joins again as a new node"), "{said}");
    assert!(!interfaces(&c2).iter().any(|i| i.starts_with("ethwe")), "c2 kept {:?}", interfaces(&c2));
    assert!(!interfaces(&bed.hosts[1].ns).iter().any(|i| i.starts_with("wv")), "{:?}", interfaces(&bed.hosts[1].ns));
    let data = &bed.hosts[1].data_dir;
    assert!(
        data.join("forgotten").exists() && !data.join("removed").exists() && !data.join("containers.json").exists()
    );
    // ... `agent run` (no token) says how to come back, with the exit a unit does not restart ...
    let rerun = bed.agent_command(1, false).output().unwrap();
    assert_eq!(rerun.status.code(), Some(3), "{}", String::from_utf8_lossy(&rerun.stderr));
    assert!(String::from_utf8_lossy(&rerun.stderr).contains("agent join --token-file"), "{rerun:?}");
    // ... and `agent join` with its token makes it a new node, reachable again.
    bed.start_agent(1, true);
    let back = bed.wait_status(1);
    bed.wait_peers(0, 1);
    assert_eq!(node_names(&bed), ["h1", "h2"]);
    let w2 = bed.add_workload(1, "default");
    bed.wait_ping(0, w2, Duration::from_secs(10));
    assert!(bed.status(0).unwrap().peers.iter().any(|p| p.address == back.address));
    // c2's old address is not taken back behind the new node's back.
    assert!(!interfaces(&c2).iter().any(|i| i.starts_with("ethwe")), "c2 came back as {:?}", interfaces(&c2));
    assert!(!bed.hosts[1].data_dir.join("forgotten").exists(), "the join left the forgotten mark");

    // An agent out of touch for half of its --forget-after says what is coming.
    let warning = "half of this node's --forget-after";
    assert!(!bed.log(0).contains(warning), "h1 warned while connected");
    bed.kill_coordinator();
    wait_for("h1 to warn it is out of touch", Duration::from_secs(15), || bed.log(0).contains(warning).then_some(()));
}
