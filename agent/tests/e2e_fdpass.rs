//! The agent in a mount namespace of its own (as in a DaemonSet pod) where
//! the caller's `/run/netns` mounts do not exist: `weavectl attach/detach`
//! and weave-cni pass the namespace as an open descriptor, so the agent
//! attaches, serves DNS in and detaches containers it cannot see by path.
//! An old-style request (the path only) is refused by that agent.
mod common;

use std::{process::Command, time::Duration};

use common::{cni::*, *};
use serde_json::json;
use weave_proto::local_api::{self, Request, Response};

/// Restarts host `i`'s agent (`agent run`) inside `unshare -m` with a private
/// empty tmpfs over /run/netns: no container namespace of the bed is
/// visible to it by path. Same pid as `ip netns exec` (every step execs).
fn restart_with_hidden_netns(bed: &mut Bed, i: usize) {
    bed.signal_agent(i, nix::sys::signal::Signal::SIGTERM);
    let plain = bed.agent_command(i, false);
    let args: Vec<_> = plain.get_args().map(|a| a.to_os_string()).collect();
    // ip netns exec <ns> <agent> run …
    let (enter, agent) = args.split_at(3);
    let mut cmd = Command::new("ip");
    cmd.args(enter)
        .args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs weave-hidden /run/netns && exec \"$@\"")
        .arg("sh")
        .args(agent)
        // The bed's environment too: WEAVE_DOCKER_PLUGIN=off above all (the
        // machine's /run/docker/plugins is this agent's /run).
        .envs(plain.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&bed.hosts[i].log).unwrap();
    let child = cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start the agent");
    bed.hosts[i].agent = Some(child);
    bed.wait_status(i);
    // The agent really cannot see the bed's namespaces.
    let pid = bed.hosts[i].agent.as_ref().unwrap().id();
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(mounts.contains("weave-hidden"), "the agent runs with the hidden /run/netns");
    let seen = std::fs::read_dir(format!("/proc/{pid}/root/run/netns")).unwrap().count();
    assert_eq!(seen, 0, "the agent sees no namespace under /run/netns");
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn an_agent_that_cannot_see_the_namespaces_attaches_them_by_descriptor() {
    let mut bed = Bed::with_hosts(2);
    restart_with_hidden_netns(&mut bed, 0);
    bed.wait_peers(0, 1);

    // Without a descriptor (an old client: the path only) it is refused.
    let hidden = bed.add_container("hidden");
    let path = format!("/run/netns/{hidden}");
    let socket = bed.hosts[0].socket.clone();
    let old = Request::Attach {
        container: path.clone(),
        netns_fd: false,
        netns: None,
        name: None,
        id: None,
        ifname: None,
        addrs: vec![],
        no_multicast: false,
        exact_ifname: false,
        no_dns: false,
        network: None,
        needs_egress: false,
        address: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Response::Error(e) = rt.block_on(local_api::request(&socket, &old)).unwrap() else {
        panic!("the agent attached a path it cannot see")
    };
    assert!(e.kind == local_api::ErrorKind::UnknownContainer && e.message.contains("unknown container"), "{e}");
    assert!(interfaces(&hidden).is_empty(), "{:?}", interfaces(&hidden));

    // weavectl passes the descriptor: attached, with a name.
    let web = bed.weavectl_attach(0, &hidden, &["--name", "fdweb", &path])[0];
    let peer = bed.add_container("peer");
    let p = bed.weavectl_attach(1, &peer, &["--name", "fdpeer", &format!("/run/netns/{peer}")])[0];
    bed.wait_ping(web, p, Duration::from_secs(15));
    bed.wait_ping(p, web, Duration::from_secs(5));
    // The agent's DNS answers inside the namespace it got by descriptor.
    let peer_ip = bed.workloads[p].ip.to_string();
    wait_for("DNS inside the passed namespace", Duration::from_secs(10), || {
        let out = in_ns(&hidden, &["dig", "+short", "+time=1", "+tries=1", "@127.0.0.11", "fdpeer.weave.local"]);
        (String::from_utf8_lossy(&out.stdout).trim() == peer_ip).then_some(())
    });

    // The name stays with the live namespace the agent cannot open by path:
    // another container cannot take it (nor its addresses).
    let other = bed.add_container("other");
    let out = bed.weavectl(0, &["attach", "--name", "fdweb", &format!("/run/netns/{other}")]);
    assert!(!out.status.success(), "took a live container's name");
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));
    assert!(interfaces(&other).is_empty(), "{:?}", interfaces(&other));
    bed.wait_ping(p, web, Duration::from_secs(5));

    // weave-cni passes it too: ADD, a MAC in the result, DEL.
    let cni_ns = bed.add_container("cni");
    let cni_path = format!("/run/netns/{cni_ns}");
    let conf = json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-cni",
        "socket": socket.to_str().unwrap()});
    let id = format!("{}-fd", bed.prefix);
    let out = plugin(&weave_cni(), "ADD", &cni_path, &id, &conf, None);
    assert!(out.status.success(), "ADD: {}{}", String::from_utf8_lossy(&out.stdout), bed.log(0));
    let result = json_out(&out);
    let (ip, _) = validate_add_result(&result, &cni_path)[0];
    let link = ok_in(&cni_ns, &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains(result["interfaces"][0]["mac"].as_str().unwrap()), "{link} vs {result}");
    wait_for("the CNI container to be reachable", Duration::from_secs(10), || ping_once(&peer, ip).then_some(()));
    let out = plugin(&weave_cni(), "DEL", &cni_path, &id, &conf, None);
    assert!(out.status.success(), "DEL: {}", String::from_utf8_lossy(&out.stdout));
    assert!(interfaces(&cni_ns).is_empty(), "{:?}", interfaces(&cni_ns));
    assert!(!bed.allocations().iter().any(|a| a.contains(&format!(" {ip}/"))), "{:?}", bed.allocations());

    // weavectl detach by path: the interface goes, the address is released.
    let web_ip = bed.workloads[web].ip;
    let out = bed.weavectl(0, &["detach", &path]);
    assert!(out.status.success(), "detach: {}", stderr(&out));
    assert!(interfaces(&hidden).is_empty(), "{:?}", interfaces(&hidden));
    assert!(!bed.allocations().iter().any(|a| a.contains(&format!(" {web_ip}/"))), "{:?}", bed.allocations());
}
