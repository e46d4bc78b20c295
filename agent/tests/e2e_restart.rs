//! Agent restarts: SIGKILL keeps the identity and traffic resumes within 3 s;
//! SIGTERM keeps the segments by default; `agent reset` removes everything.
mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

#[test]
#[ignore = "needs root: network namespaces"]
fn sigkilled_agent_restarts_with_its_identity_and_traffic_resumes_within_3s() {
    let mut bed = Bed::with_hosts(2);
    bed.add_workload(0, "default");
    bed.add_workload(1, "default");
    bed.wait_ping(0, 1, Duration::from_secs(10));
    let before = bed.status(1).unwrap();

    bed.signal_agent(1, Signal::SIGKILL);
    assert!(!ping_once(&bed.workloads[0].ns, bed.workloads[1].ip), "traffic flows without host 2's agent");
    let restarted = Instant::now();
    bed.start_agent(1, false);
    let (from, to) = (&bed.workloads[0].ns, bed.workloads[1].ip);
    assert!(ping_within(from, to, 3), "traffic did not resume within 3 s");
    // (ping's own -w bounds it: a reply at 2.9 s, read after ping exited,
    // failed a second check of the clock.)
    eprintln!("traffic resumed {:?} after the restart", restarted.elapsed());
    let after = bed.wait_status(1);
    assert_eq!((after.node_id, after.address, &after.name), (before.node_id, before.address, &before.name));
    // `agent join` again (with the token) is also a restart, not a new node.
    bed.signal_agent(1, Signal::SIGKILL);
    bed.start_agent(1, true);
    bed.wait_ping(1, 0, Duration::from_secs(10));
    assert_eq!(bed.wait_status(1).node_id, before.node_id);
    let nodes = bed.admin(|mut api| async move {
        api.nodes.list_nodes(weave_proto::v1::ListNodesRequest {}).await.unwrap().into_inner().nodes
    });
    assert_eq!(nodes.len(), 2, "no duplicate node");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn sigterm_keeps_segments_and_reset_removes_everything() {
    let mut bed = Bed::with_hosts(2);
    bed.add_workload(0, "default");
    let bridge = bed.status(0).unwrap().segments[0].bridge.clone();
    let ns = bed.hosts[0].ns.clone();
    bed.signal_agent(0, Signal::SIGTERM);
    let links = ok_in(&ns, &["ip", "-o", "link", "show"]);
    assert!(links.contains(&bridge), "the bridge stays for the next start: {links}");
    assert!(!links.contains("wvtun0"), "the TUN goes with the process: {links}");
    assert!(!bed.hosts[0].socket.exists(), "the socket is removed");
    let rules = ok_in(&ns, &["nft", "list", "tables"]);
    assert!(rules.contains("inet weave"), "the isolation table stays with the bridges: {rules}");

    let out = bed.reset_agent(0);
    assert!(out.status.success(), "reset: {}", String::from_utf8_lossy(&out.stderr));
    // It says what it leaves: the node, which the coordinator still lists.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("node 'h1'") && said.contains("weavectl node rm h1"), "{said}");
    let links = ok_in(&ns, &["ip", "-o", "link", "show"]);
    assert!(!links.contains("wvbr-") && !links.contains("wvvx-"), "reset leaves interfaces: {links}");
    let rules = ok_in(&ns, &["nft", "list", "tables"]);
    assert!(!rules.contains("inet weave"), "reset leaves the isolation table: {rules}");
    assert!(!rules.contains("weave_guard"), "reset leaves the source guard: {rules}");
    let h = &bed.hosts[0];
    assert!(!h.data_dir.exists(), "reset leaves {:?}", files_under(&h.data_dir));
    // The container's DNS rule goes with its interface.
    assert!(!in_ns(&ns, &["nft", "list", "table", "ip", "weave_dns"]).status.success(), "the DNS rule stays");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn cleanup_on_exit_removes_everything_on_sigterm() {
    let mut bed = Bed::with_hosts(2);
    bed.add_workload(0, "default");
    bed.add_workload(1, "default");
    // Restart both agents with the flag (from the environment, as systemd would set it).
    for i in 0..2 {
        bed.signal_agent(i, Signal::SIGKILL);
        let log = std::fs::OpenOptions::new().append(true).open(&bed.hosts[i].log).unwrap();
        let child = bed
            .agent_command(i, false)
            .env("WEAVE_CLEANUP_ON_EXIT", "true")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        bed.hosts[i].agent = Some(child);
    }
    bed.wait_peers(0, 1);
    bed.wait_peers(1, 1);
    // SIGTERM; and SIGHUP (a terminal closed under an agent started with
    // `&`), which killed it by the default action, cleaning nothing (found
    // by a review, 2026-12-07).
    for (i, signal) in [(0, Signal::SIGTERM), (1, Signal::SIGHUP)] {
        let mut agent = bed.hosts[i].agent.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), signal).unwrap();
        assert!(agent.wait().unwrap().success(), "{signal}: {}", bed.log(i));
        let links = ok_in(&bed.hosts[i].ns, &["ip", "-o", "link", "show"]);
        assert!(!links.contains("wvbr-") && !links.contains("wvvx-") && !links.contains("wvtun0"), "left: {links}");
        assert!(bed.hosts[i].data_dir.exists(), "the identity stays for the next start");
        assert!(!bed.hosts[i].socket.exists(), "{signal} left the socket");
        assert!(bed.log(i).contains(&format!("shutting down signal=\"{signal}\"")), "{}", bed.log(i));
    }
}

/// `agent reset` after `attach --name` removes the data dir: the container
/// registry is one of the agent's files (it was left behind as names.json).
#[test]
#[ignore = "needs root: network namespaces"]
fn reset_after_attach_by_name_removes_the_data_dir() {
    let mut bed = Bed::with_hosts(1);
    let ns = bed.add_container("rn");
    bed.weavectl_attach(0, &ns, &["--name", "reset-web", &format!("/run/netns/{ns}")]);
    bed.signal_agent(0, Signal::SIGTERM);
    let out = bed.reset_agent(0);
    assert!(out.status.success(), "reset: {}", String::from_utf8_lossy(&out.stderr));
    // It says what it leaves: the node, which the coordinator still lists.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("node 'h1'") && said.contains("weavectl node rm h1"), "{said}");
    let h = &bed.hosts[0];
    assert!(!h.data_dir.exists(), "reset leaves {:?}", files_under(&h.data_dir));
    // The container's DNS rule goes with its interface.
    assert!(!in_ns(&ns, &["nft", "list", "table", "ip", "weave_dns"]).status.success(), "the DNS rule stays");
}

/// An agent restarted without its saved map (lost, or a fresh data dir
/// restored from a backup of the key and identity) starts from an empty map,
/// which unplugs its workloads' ports from the segments it does not yet
/// know; when the coordinator's map arrives, the segments come back and so
/// do the ports, at once. Before, the ports waited for the next full pass,
/// and the workloads were cut off for 30 s (found by a review, 2026-12-04).
#[test]
#[ignore = "needs root: network namespaces"]
fn an_agent_restarted_without_its_map_plugs_its_workloads_back_at_once() {
    let mut bed = Bed::with_hosts(2);
    // Attached by the agents (their ports carry the record a pass puts back).
    let mut w = Vec::new();
    for h in 0..2 {
        let ns = bed.add_container(&format!("nomap{h}"));
        w.extend(bed.weavectl_attach(h, &ns, &[&format!("/run/netns/{ns}")]));
    }
    bed.wait_ping(w[0], w[1], Duration::from_secs(10));
    bed.signal_agent(1, Signal::SIGTERM);
    std::fs::remove_file(bed.hosts[1].data_dir.join("map.pb")).unwrap();
    // On a jumbo underlay: the cluster's segment MTU all the same, asked of
    // the coordinator, not one derived from this host's underlay (bridges
    // of 8,870 bytes in a cluster of 1,370; found by a review, 2026-12-06).
    ok_in(&bed.hosts[1].ns, &["ip", "link", "set", "eth0", "mtu", "9000"]);
    let restarted = Instant::now();
    bed.start_agent(1, false);
    bed.wait_status(1);
    let mtus = |ns: &str| ok_in(ns, &["ip", "-o", "link", "show", "type", "bridge"]);
    let (here, there) = (mtus(&bed.hosts[1].ns), mtus(&bed.hosts[0].ns));
    let mtu = |l: &str| l.split_whitespace().skip_while(|w| *w != "mtu").nth(1).map(str::to_string);
    let (here, there): (Vec<_>, Vec<_>) =
        (here.lines().filter_map(mtu).collect(), there.lines().filter_map(mtu).collect());
    assert!(
        !here.is_empty() && here.iter().all(|m| Some(m) == there.first()),
        "bridges {here:?}, the cluster's {there:?}"
    );
    let (from, to) = (&bed.workloads[w[0]].ns, bed.workloads[w[1]].ip);
    assert!(ping_within(from, to, 10), "traffic did not resume within 10 s (a full pass is 30 s away): {}", bed.log(1));
    eprintln!("traffic resumed {:?} after the restart", restarted.elapsed());

    // A damaged map (a cache of the coordinator's) is set aside, not the
    // end of the agent (it exited 1 at every start of its unit); and while
    // the coordinator does not answer, the empty map in its place takes
    // nothing down (it removed every bridge, cutting the host's workloads
    // off each other; found by a review, 2026-12-05).
    let before = bed.wait_status(1);
    let ns = bed.add_container("nomap-local");
    let local = bed.weavectl_attach(1, &ns, &[&format!("/run/netns/{ns}")])[0];
    bed.signal_agent(1, Signal::SIGTERM);
    let dir = bed.hosts[1].data_dir.clone();
    let map = std::fs::read(dir.join("map.pb")).unwrap();
    std::fs::write(dir.join("map.pb"), &map[..map.len() / 2]).unwrap();
    bed.kill_coordinator();
    bed.start_agent(1, false);
    bed.wait_status(1);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let bridges = ok_in(&bed.hosts[1].ns, &["ip", "-br", "link", "show", "type", "bridge"]);
    assert!(bridges.contains("wvbr-"), "the bridges went with the map: {bridges}");
    let (from, to) = (&bed.workloads[w[1]].ns, bed.workloads[local].ip);
    assert!(ping_within(from, to, 3), "workloads of one host cut off each other: {}", bed.log(1));
    bed.start_coordinator();
    let (from, to) = (&bed.workloads[w[0]].ns, bed.workloads[w[1]].ip);
    assert!(ping_within(from, to, 15), "traffic did not resume with a damaged map: {}", bed.log(1));
    assert!(dir.join("map.pb.unreadable").exists() && bed.log(1).contains("the saved network map is unreadable"));

    // A damaged identity: `agent run` says what to do, and `agent join`
    // with the token does it (the same node, its containers kept).
    bed.signal_agent(1, Signal::SIGTERM);
    let identity = std::fs::read(dir.join("identity.json")).unwrap();
    std::fs::write(dir.join("identity.json"), &identity[..40]).unwrap();
    let run = bed.agent_command(1, false).output().unwrap();
    let why = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(!run.status.success(), "agent run with a damaged identity: {why}");
    assert!(why.contains("identity.json is unreadable") && why.contains("run `agent join` with a new token"), "{why}");
    // Without `--name`, as the message says it: the name comes from the
    // saved map (the host name was refused: the key is node h2's).
    bed.name_on_join = false;
    bed.start_agent(1, true);
    let after = bed.wait_status(1);
    assert_eq!((after.node_id, after.address), (before.node_id, before.address), "{}", bed.log(1));
    let (from, to) = (&bed.workloads[w[0]].ns, bed.workloads[w[1]].ip);
    assert!(ping_within(from, to, 10), "traffic did not resume after the join: {}", bed.log(1));
    assert!(dir.join("identity.json.unreadable").exists());
    assert_eq!(after.name, "h2");
}

/// A coordinator restored from a backup taken before a host joined does not
/// know that host's credential: `agent join` with a token of the cluster
/// joins it again (with its key; the same name), where the token was
/// ignored and the agent waited for ever, its address free to be given to
/// the next host (found by a review, 2026-12-05). A restart without the
/// token still waits, and says why.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_host_the_restored_coordinator_forgot_joins_again_with_a_token() {
    let mut bed = Bed::with_hosts(1);
    bed.add_workload(0, "default");
    // The backup: the coordinator stopped, its database copied whole.
    bed.kill_coordinator();
    let backup = bed.path("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let db_files = ["coordinator.db", "coordinator.db-wal", "coordinator.db-shm"];
    for f in db_files {
        let _ = std::fs::copy(bed.coordinator_dir.join(f), backup.join(f));
    }
    bed.start_coordinator();
    let h2 = bed.add_host();
    bed.add_workload(h2, "default");
    bed.wait_ping(0, 1, Duration::from_secs(15));
    let before = bed.wait_status(h2);
    // Restored.
    bed.kill_coordinator();
    for f in db_files {
        let _ = std::fs::remove_file(bed.coordinator_dir.join(f));
        if backup.join(f).exists() {
            std::fs::copy(backup.join(f), bed.coordinator_dir.join(f)).unwrap();
        }
    }
    bed.start_coordinator();
    bed.signal_agent(h2, Signal::SIGTERM);
    bed.start_agent(h2, false);
    wait_for("the forgotten host to say so", Duration::from_secs(30), || {
        // With what to do (a review, 2026-12-06).
        bed.log(h2)
            .contains("restored from a backup taken before it joined: run `agent join --token-file")
            .then_some(())
    });
    // Its status says so too: "unreachable" before (the same review). (The
    // log is the host's, and the agent stopped above may have said it
    // first: the restarted one's socket may not answer yet.)
    let status = wait_for("the restarted agent's status to say it", Duration::from_secs(30), || {
        bed.status(h2).filter(|s| s.coordinator_refused.is_some())
    });
    assert!(!status.coordinator_connected);
    let why = status.coordinator_refused.clone().unwrap_or_default();
    assert!(why.contains("agent join --token-file"), "{status:?}");
    assert!(weave_proto::local_api::format_status(&status).contains("refuses this node (using the saved map)"));
    // The token again: a new node for the coordinator, the same host.
    bed.signal_agent(h2, Signal::SIGTERM);
    bed.start_agent(h2, true);
    wait_for("the forgotten host to join again", Duration::from_secs(30), || {
        bed.log(h2).contains("joining again with the token").then_some(())
    });
    // (The log line comes before the join's request; the status socket
    // opens after its answer.)
    let after = bed.wait_status(h2);
    assert_eq!(after.name, before.name);
    let nodes = bed.admin(|mut api| async move {
        api.nodes.list_nodes(weave_proto::v1::ListNodesRequest {}).await.unwrap().into_inner().nodes
    });
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["h1", "h2"], "{nodes:?}");
    // Its workload attached again (the restored coordinator released its
    // address with the node), and traffic flows.
    let w = bed.add_workload(h2, "default");
    bed.wait_ping(0, w, Duration::from_secs(15));
}
