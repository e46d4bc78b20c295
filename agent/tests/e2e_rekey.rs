//! `agent rekey`: a node's WireGuard key replaced on its host, with the
//! agent stopped. The node keeps its id, address and workloads; its peers
//! take the new key from the map (the ping between the hosts needs a
//! handshake with it); the old key is refused. Before, rekeying meant
//! `node rm` and a join as a new node, its addresses released (found by a
//! lifecycle review, 2026-12-07).
mod common;

use std::{fs, os::unix::fs::PermissionsExt, time::Duration};

use common::*;
use nix::sys::signal::Signal;

fn rekey(bed: &Bed, i: usize) -> std::process::Output {
    bed.agent_on_files(i, "rekey")
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_rekeyed_node_keeps_its_address_and_its_peers_take_the_new_key() {
    let mut bed = Bed::with_hosts(2);
    let a = bed.add_workload(0, "default");
    let b = bed.add_workload(1, "default");
    bed.wait_ping(a, b, Duration::from_secs(10));
    let before = bed.wait_status(0);
    let key_file = bed.hosts[0].data_dir.join("private.key");
    let old = fs::read_to_string(&key_file).unwrap();
    let node_key = |bed: &Bed| {
        let id = before.node_id;
        bed.admin(move |mut api| async move {
            let nodes = api.nodes.list_nodes(weave_proto::v1::ListNodesRequest {}).await.unwrap().into_inner().nodes;
            nodes.into_iter().find(|n| n.id == id).unwrap().public_key
        })
    };
    let known = node_key(&bed);

    // Not under a running agent, which holds the key in memory.
    let out = rekey(&bed, 0);
    assert!(!out.status.success(), "rekeyed under a running agent");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop it first"), "{out:?}");

    bed.signal_agent(0, Signal::SIGTERM);
    let out = rekey(&bed, 0);
    assert!(out.status.success(), "rekey: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("now has the WireGuard key"), "{out:?}");
    let new = fs::read_to_string(&key_file).unwrap();
    assert_ne!(new, old, "the key file is the new key");
    assert_eq!(fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!bed.hosts[0].data_dir.join("private.key.new").exists(), "the pending key is gone");
    assert_ne!(node_key(&bed), known, "the coordinator has the new key");

    bed.start_agent(0, false);
    let after = wait_for("the rekeyed agent to connect", Duration::from_secs(20), || {
        bed.status(0).filter(|s| s.coordinator_connected)
    });
    assert_eq!((after.node_id, after.address), (before.node_id, before.address), "the same node");
    // Both ways across the hosts: a handshake each way with the new key.
    bed.wait_ping(a, b, Duration::from_secs(15));
    bed.wait_ping(b, a, Duration::from_secs(15));

    // A rekey cut short after the coordinator took the new key (here: the
    // files as they were then put back): the agent does not start with the
    // old key, cut off; a rekey run again finishes with the key it sent.
    bed.signal_agent(0, Signal::SIGTERM);
    let dir = bed.hosts[0].data_dir.clone();
    let map_now = fs::read(dir.join("map.pb")).unwrap();
    let out = rekey(&bed, 0);
    assert!(out.status.success(), "second rekey: {}", String::from_utf8_lossy(&out.stderr));
    let newer = fs::read_to_string(&key_file).unwrap();
    fs::write(dir.join("private.key.new"), &newer).unwrap();
    fs::write(&key_file, &new).unwrap();
    fs::write(dir.join("map.pb"), &map_now).unwrap();
    let out = bed.agent_command(0, false).output().unwrap();
    assert!(!out.status.success(), "started with the key the coordinator no longer has");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not finish"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rekey(&bed, 0);
    assert!(out.status.success(), "the rekey run again: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read_to_string(&key_file).unwrap(), newer, "finished with the key the coordinator took");
    bed.start_agent(0, false);
    bed.wait_ping(a, b, Duration::from_secs(15));
    let new = newer;

    // The old key back in its place: refused at start, saying what happened.
    bed.signal_agent(0, Signal::SIGTERM);
    fs::write(&key_file, &old).unwrap();
    let out = bed.agent_command(0, false).output().unwrap();
    assert!(!out.status.success(), "started with the old key");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not node"), "{}", String::from_utf8_lossy(&out.stderr));
    // And a rekey from it is refused too: the coordinator knows another key.
    assert!(!rekey(&bed, 0).status.success(), "rekeyed from the old key");
    fs::write(&key_file, &new).unwrap();
    let _ = fs::remove_file(bed.hosts[0].data_dir.join("private.key.new"));
    bed.start_agent(0, false);
    bed.wait_ping(a, b, Duration::from_secs(15));
}
