//! Attaches that do not end with a detach.
//!
//! An agent killed (SIGKILL) in the middle of an attach, after it made the
//! container's veth pair and before it finished: once it runs again, the
//! same attach goes through at the address IPAM gave the container, and a
//! detach by the name it was given takes everything back. Before, the retry
//! was refused ("already has an interface on subnet") and the name was not
//! known, so the address stayed held (found by a review, 2026-12-04).
//!
//! A container whose namespace goes away without a detach (`ip netns del`,
//! its process ended): the agent gives back its addresses, name, port and
//! neighbour entry within seconds, also when it was not running then.
//! Before, the agent's own DNS sockets kept the namespace alive, answering at
//! its address, and nothing was given back (found by a review, 2026-12-05).
mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::*;
use nix::{sys::signal::Signal, unistd::Pid};

/// The workload ports (`wv` and 8 hex digits) of host namespace `ns`, each
/// with whether it is up.
fn ports(ns: &str) -> Vec<(String, bool)> {
    let out = ok_in(ns, &["ip", "-o", "link", "show"]);
    out.lines()
        .filter_map(|l| {
            let name = l.split(':').nth(1)?.trim().split('@').next()?.to_string();
            let port = name.len() == 10 && name.starts_with("wv") && name[2..].bytes().all(|b| b.is_ascii_hexdigit());
            port.then(|| (name, l.contains(",UP")))
        })
        .collect()
}

/// Attaches container `ns` as `name` on host 0 and kills its agent with
/// SIGKILL as soon as the container's port appears; then starts the agent
/// again. Tries until the kill lands before the port came up (the window this
/// test is about), and returns the port left down.
fn crash_mid_attach(bed: &mut Bed, ns: &str, name: &str) -> String {
    let host = bed.hosts[0].ns.clone();
    for _ in 0..8 {
        let pid = Pid::from_raw(bed.hosts[0].agent.as_ref().expect("agent runs").id() as i32);
        let mut monitor = Command::new("ip")
            .args(["-n", &host, "monitor", "link"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip monitor");
        let lines = BufReader::new(monitor.stdout.take().unwrap());
        let killer = thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let port =
                    |w: &str| w.len() > 10 && w.starts_with("wv") && w[2..10].bytes().all(|b| b.is_ascii_hexdigit());
                if line.split_whitespace().any(port) {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    return true;
                }
            }
            false
        });
        // Give the monitor time to subscribe before the attach starts.
        thread::sleep(Duration::from_millis(300));
        let out = bed.weavectl(0, &["attach", "--name", name, &format!("/run/netns/{ns}")]);
        let _ = monitor.kill();
        let _ = monitor.wait();
        let killed = killer.join().unwrap();
        bed.signal_agent(0, Signal::SIGKILL);
        bed.start_agent(0, false);
        bed.wait_status(0);
        assert!(killed, "the port never appeared: {}", String::from_utf8_lossy(&out.stderr));
        if let Some((port, _)) = ports(&host).into_iter().find(|(_, up)| !up) {
            assert!(!out.status.success(), "an attach whose agent was killed succeeded");
            return port;
        }
        // The kill came too late (the attach finished): start over.
        let out = bed.weavectl(0, &["detach", name]);
        assert!(out.status.success(), "detach: {}", String::from_utf8_lossy(&out.stderr));
    }
    panic!("the kill never landed inside the attach");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn an_attach_cut_short_by_a_killed_agent_can_be_retried_or_detached() {
    let mut bed = Bed::with_hosts(2);
    let far = bed.add_workload(1, "default");
    let host = bed.hosts[0].ns.clone();

    // Detached by its name: the address goes back, nothing is left.
    let first = bed.add_container("first");
    crash_mid_attach(&mut bed, &first, "first");
    assert!(
        bed.allocations().iter().any(|a| a.contains(" first ")),
        "the attach allocated before it was cut short: {:?}",
        bed.allocations()
    );
    let out = bed.weavectl(0, &["detach", "first"]);
    assert!(out.status.success(), "detach by name: {}{}", String::from_utf8_lossy(&out.stderr), bed.log(0));
    assert!(!bed.allocations().iter().any(|a| a.contains(" first ")), "{:?}", bed.allocations());
    assert!(ports(&host).is_empty(), "ports left: {:?}", ports(&host));
    assert!(interfaces(&first).is_empty(), "interfaces left in the container: {:?}", interfaces(&first));
    // Nor its resolver, which the restarted agent served (recorded before the
    // attach, with its name: the detach by name finds it).
    let answered = |ns: &str| in_ns(ns, &["dig", "+time=1", "+tries=1", "@127.0.0.11", "nothing.weave.local"]);
    assert!(!answered(&first).status.success(), "a resolver is left in the detached container");

    // Attached again, the same way: it gets the address held for it and works.
    let second = bed.add_container("second");
    let half = crash_mid_attach(&mut bed, &second, "second");
    // Its resolver was recorded before the attach, so the restarted agent
    // serves it (a named container killed so had none for good; a crash
    // review, 2026-12-07): answered, if only NXDOMAIN.
    wait_for("the cut-short container's resolver to answer", Duration::from_secs(10), || {
        in_ns(&second, &["dig", "+time=1", "+tries=1", "@127.0.0.11", "nothing.weave.local"])
            .status
            .success()
            .then_some(())
    });
    let held: Vec<String> = bed.allocations().into_iter().filter(|a| a.contains(" second ")).collect();
    assert_eq!(held.len(), 1, "{held:?}");
    let w = bed.weavectl_attach(0, &second, &["--name", "second", &format!("/run/netns/{second}")])[0];
    let address = bed.workloads[w].ip;
    assert!(held[0].contains(&format!(" {address}/")), "attached at {address}, held {held:?}");
    assert_eq!(
        interfaces(&second),
        vec!["ethwe".to_string(), format!("ethwe {address}/{}", bed.workloads[w].prefix)],
        "one interface, named as a first one is"
    );
    let now = ports(&host);
    assert_eq!(now.len(), 1, "one port: {now:?}");
    assert!(now[0].1, "the port is up: {now:?}");
    assert_eq!(now[0].0, half, "the port keeps its name (it is named after the container)");
    bed.wait_ping(w, far, Duration::from_secs(10));
}

/// An attach cut short and never tried again (the agent killed between its
/// allocation and its port's record). The address, its DNS record and the
/// name stayed held, answered by nothing, for ever (found by a crash
/// review, 2026-12-07). Now they are held through the grace a retry has
/// (30 s, `attach::unplugged::GRACE`), then given back, and the container
/// attaches again. Only such an attach's: an address `agent allocate` gave
/// under an attached container's name (plugged by hand, so no port of the
/// agent's carries it) stays (the first version gave it back; a review).
#[test]
#[ignore = "needs root: network namespaces"]
fn an_address_an_attach_cut_short_left_is_given_back_after_a_grace() {
    let mut bed = Bed::with_hosts(2);
    let far = bed.add_workload(1, "default");
    let kept_ns = bed.add_container("kept");
    let kept = bed.weavectl_attach(0, &kept_ns, &["--name", "kept", &format!("/run/netns/{kept_ns}")])[0];
    let out = bed.weavectl_admin(&["subnet", "add", "10.40.0.0/24", "--name", "hand"]);
    assert!(out.status.success(), "subnet add: {}", String::from_utf8_lossy(&out.stderr));
    let socket = bed.hosts[0].socket.to_str().unwrap().to_string();
    let agent = agent_bin();
    let by_hand = wait_for("agent allocate on the new subnet", Duration::from_secs(15), || {
        let out =
            run(&[agent.to_str().unwrap(), "allocate", "--socket", &socket, "--container", "kept", "--subnet", "hand"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).split('/').next().unwrap().to_string())
    });
    let by_hand: std::net::Ipv4Addr = by_hand.parse().unwrap();

    let cut_ns = bed.add_container("cut");
    crash_mid_attach(&mut bed, &cut_ns, "cut");
    let held: Vec<String> = bed.allocations().into_iter().filter(|a| a.contains(" cut ")).collect();
    assert_eq!(held.len(), 1, "the cut-short attach holds its address: {held:?}");
    let lookup = |bed: &Bed| bed.weavectl(1, &["dns", "lookup", "cut"]);
    assert!(lookup(&bed).status.success(), "and its DNS record");
    // Held through the grace: a retry would get it.
    thread::sleep(sweep_time() * 3);
    assert_eq!(bed.allocations().into_iter().filter(|a| a.contains(" cut ")).count(), 1, "given back before the grace");
    wait_for("the cut-short attach's address to be given back", Duration::from_secs(60), || {
        (!bed.allocations().iter().any(|a| a.contains(" cut "))).then_some(())
    });
    // (Said after the release it tells of.)
    wait_for("the agent to say so", Duration::from_secs(10), || {
        bed.log(0).contains("held addresses no port of this host carries").then_some(())
    });
    wait_for("cut's DNS record to go", Duration::from_secs(10), || {
        (lookup(&bed).status.code() == Some(4)).then_some(())
    });
    assert!(
        ports(&bed.hosts[0].ns).iter().all(|(_, up)| *up),
        "the port left down went: {:?}",
        ports(&bed.hosts[0].ns)
    );
    // The one attached in full keeps its address and its path, and what
    // `agent allocate` gave under its name stays.
    assert!(holds(&bed, bed.workloads[kept].ip), "{:?}", bed.allocations());
    assert!(holds(&bed, by_hand), "the address agent allocate gave was given back: {:?}", bed.allocations());
    bed.wait_ping(kept, far, Duration::from_secs(10));
    // And the one cut short attaches again, under its name.
    let again = bed.weavectl_attach(0, &cut_ns, &["--name", "cut", &format!("/run/netns/{cut_ns}")])[0];
    bed.wait_ping(again, far, Duration::from_secs(10));
}

fn holds(bed: &Bed, ip: std::net::Ipv4Addr) -> bool {
    bed.allocations().iter().any(|a| a.contains(&format!(" {ip}/")))
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_container_gone_without_a_detach_gives_back_what_it_held() {
    let mut bed = Bed::with_hosts(2);
    let far = bed.add_workload(1, "default");
    let host = bed.hosts[0].ns.clone();
    let named = bed.add_container("named");
    let a = bed.weavectl_attach(0, &named, &["--name", "web", &format!("/run/netns/{named}")])[0];
    let unnamed = bed.add_container("unnamed");
    let b = bed.weavectl_attach(0, &unnamed, &[&format!("/run/netns/{unnamed}")])[0];
    bed.wait_ping(far, a, Duration::from_secs(10));
    bed.wait_ping(far, b, Duration::from_secs(10));
    let (ia, ib) = (bed.workloads[a].ip, bed.workloads[b].ip);
    assert!(holds(&bed, ia) && holds(&bed, ib));

    for ns in [&named, &unnamed] {
        ok(&["ip", "netns", "del", ns]);
    }
    // The addresses go back to the coordinator first, then the DNS
    // servers are stopped and forgotten: wait for both.
    let registry = |bed: &Bed| std::fs::read_to_string(bed.hosts[0].data_dir.join("containers.json")).unwrap();
    wait_for("the addresses to be given back and their DNS servers forgotten", Duration::from_secs(20), || {
        (!holds(&bed, ia) && !holds(&bed, ib) && !registry(&bed).contains("netns:")).then_some(())
    });
    let from = bed.workloads[far].ns.clone();
    assert!(!ping_within(&from, ia, 1) && !ping_within(&from, ib, 1), "a namespace gone still answers");
    assert!(ports(&host).is_empty(), "ports left: {:?}", ports(&host));
    for ip in [ia, ib] {
        let neigh = ok_in(&host, &["ip", "neigh", "show", &ip.to_string()]);
        assert!(!neigh.contains("PERMANENT"), "{ip} still pinned: {neigh}");
    }
    // The name is free for another container.
    let again = bed.add_container("again");
    bed.weavectl_attach(0, &again, &["--name", "web", &format!("/run/netns/{again}")]);

    // Gone while the agent was not running (attached without a name: only
    // its DNS registration says it was there): given back once it runs again.
    let late = bed.add_container("late");
    let c = bed.weavectl_attach(0, &late, &[&format!("/run/netns/{late}")])[0];
    let ic = bed.workloads[c].ip;
    bed.signal_agent(0, Signal::SIGKILL);
    ok(&["ip", "netns", "del", &late]);
    bed.start_agent(0, false);
    bed.wait_status(0);
    let late_path = format!("/run/netns/{late}\"");
    wait_for(
        "the address to be given back and the namespace forgotten after a restart",
        Duration::from_secs(20),
        || (!holds(&bed, ic) && !registry(&bed).contains(&late_path)).then_some(()),
    );
}

/// The port of a container whose address was released behind its back
/// (`subnet rm --force` and the subnet added again; `ipam release`) goes,
/// and blocks no attach of that address on its host. The re-added subnet's bridge took
/// the old port back, locked to the address's MAC, and every attach there
/// was refused ("MAC … is locked to another workload's port", exit 1), a
/// retrying script for ever (found by a review, 2026-12-05).
#[test]
#[ignore = "needs root: network namespaces"]
fn a_port_whose_address_was_released_behind_it_blocks_no_attach() {
    let mut bed = Bed::with_hosts_and_coordinator_args(2, &["--address-hold", "0s"]);
    let host = bed.hosts[0].ns.clone();
    let admin = |bed: &Bed, args: &[&str]| {
        let out = bed.weavectl_admin(args);
        assert!(out.status.success(), "weavectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    admin(&bed, &["subnet", "add", "10.89.0.0/29", "--name", "t2"]);
    let old = bed.add_container("old");
    let o = bed.weavectl_attach(0, &old, &["net:t2", &format!("/run/netns/{old}")])[0];
    let (old_ip, old_port) = (bed.workloads[o].ip, ports(&host)[0].0.clone());
    admin(&bed, &["subnet", "rm", "t2", "--force"]);
    admin(&bed, &["subnet", "add", "10.89.0.0/29", "--name", "t2"]);
    // Its port goes: the address is no longer this host's.
    wait_for("the released container's port to go", Duration::from_secs(20), || {
        (!ports(&host).iter().any(|(p, _)| *p == old_port)).then_some(())
    });
    assert!(interfaces(&old).is_empty(), "{:?}", interfaces(&old));
    let new = bed.add_container("new");
    let n = bed.weavectl_attach(0, &new, &["net:t2", &format!("/run/netns/{new}")])[0];
    assert_eq!(bed.workloads[n].ip, old_ip, "the released address went elsewhere: the test is void");
    let far = bed.add_container("far");
    let f = bed.weavectl_attach(1, &far, &["net:t2", &format!("/run/netns/{far}")])[0];
    bed.wait_ping(n, f, Duration::from_secs(10));

    // Released by the admin while its container runs: the next attach of the
    // address on the host, at once, takes the port away.
    let held = bed.add_container("held");
    let h = bed.weavectl_attach(0, &held, &["--name", "held", &format!("/run/netns/{held}")])[0];
    let held_ip = bed.workloads[h].ip;
    admin(&bed, &["ipam", "release", "held", "--node", "h1"]);
    let next = bed.add_container("next");
    let address = format!("{held_ip}/{}", bed.workloads[h].prefix);
    let x = bed.weavectl_attach(0, &next, &[&address, &format!("/run/netns/{next}")])[0];
    let other = bed.add_workload(1, "default");
    bed.wait_ping(x, other, Duration::from_secs(10));
    assert!(interfaces(&held).is_empty(), "the released container kept its interface: {:?}", interfaces(&held));
}

/// An agent restarted with a saved map from before an attach (killed before
/// it saved the allocation) while the coordinator is unreachable does not
/// take that map's word over the container's port: ports are looked at only
/// while the map watch is open.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_stale_saved_map_without_the_coordinator_removes_no_port() {
    let mut bed = Bed::with_hosts(1);
    let host = bed.hosts[0].ns.clone();
    let saved = bed.hosts[0].data_dir.join("map.pb");
    let before = std::fs::read(&saved).unwrap();
    let c = bed.add_container("c");
    let w = bed.weavectl_attach(0, &c, &[&format!("/run/netns/{c}")])[0];
    let ip = bed.workloads[w].ip;
    bed.signal_agent(0, Signal::SIGKILL);
    bed.kill_coordinator();
    std::fs::write(&saved, before).unwrap();
    bed.start_agent(0, false);
    bed.wait_status(0);
    thread::sleep(sweep_time() * 3);
    assert_eq!(ports(&host).len(), 1, "the port went on the word of a stale map");
    assert!(interfaces(&c).iter().any(|i| i.starts_with(&format!("ethwe {ip}/"))), "{:?}", interfaces(&c));
    // With the coordinator back, the map has the allocation and the port stays.
    bed.start_coordinator();
    wait_for("the watch", Duration::from_secs(20), || bed.status(0).filter(|s| s.coordinator_connected));
    thread::sleep(sweep_time() * 3);
    assert_eq!(ports(&host).len(), 1, "the port went with the coordinator back");
}

/// The agent's sweep period (`attach::sweep::SWEEP`).
fn sweep_time() -> Duration {
    Duration::from_secs(5)
}

/// A namespace attached by a process's path (`/proc/<pid>/ns/net`) that
/// outlives the process (mounted, or another process in it: a pod's other
/// containers) is not gone: the sweep leaves it attached.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_namespace_that_outlives_the_process_it_was_attached_by_stays() {
    let mut bed = Bed::with_hosts(1);
    let pod = bed.add_container("pod");
    let mut app = spawn_in(&pod, &["sleep", "600"]);
    let w = bed.weavectl_attach(0, &pod, &["--name", "app", &app.id().to_string()])[0];
    let ip = bed.workloads[w].ip;
    let _ = app.kill();
    let _ = app.wait();
    thread::sleep(sweep_time() * 3);
    assert!(interfaces(&pod).iter().any(|i| i.starts_with(&format!("ethwe {ip}/"))), "{:?}", interfaces(&pod));
    assert!(holds(&bed, ip), "{:?}", bed.allocations());
    // Held by a process whose main thread has ended while another thread
    // goes on (its /proc/<pid>/ns/net cannot be read): still in use.
    let mut held = Killed(
        Command::new("ip")
            .args(["netns", "exec", &pod, "python3", "-c", PTHREAD_EXIT])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(held.stdout.as_mut().unwrap()), &mut line).unwrap();
    ok(&["ip", "netns", "del", &pod]);
    thread::sleep(sweep_time() * 3);
    assert!(holds(&bed, ip), "given back while a thread of a process is in it: {:?}", bed.allocations());
    // Once no one uses it, it is given back.
    let _ = held.kill();
    let _ = held.wait();
    wait_for("the address to be given back", Duration::from_secs(20), || (!holds(&bed, ip)).then_some(()));
}

/// A named container's namespace path deleted while a process still runs
/// in it, and made again for the next container: the name stays the running
/// one's (exit 5) and so does its interface. The attach cut it off and said
/// the namespace was gone (found by a review, 2026-12-06). Once the process
/// ends, the name is free.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_reused_path_does_not_take_a_live_containers_name() {
    let mut bed = Bed::with_hosts(1);
    let ns = bed.add_container("t1");
    let mut app = spawn_in(&ns, &["sleep", "600"]);
    let w = bed.weavectl_attach(0, &ns, &["--name", "t1", &format!("/run/netns/{ns}")])[0];
    let ip = bed.workloads[w].ip;
    ok(&["ip", "netns", "del", &ns]);
    ok(&["ip", "netns", "add", &ns]);
    let pid = app.id().to_string();
    let inside = |pid: &str| ok(&["nsenter", "-t", pid, "-n", "ip", "-o", "-4", "addr", "show"]);
    let out = bed.weavectl(0, &["attach", "--name", "t1", &format!("/run/netns/{ns}")]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(said.contains("lives on"), "{said}");
    assert!(inside(&pid).contains(&format!("{ip}/")), "the running container lost its address: {}", inside(&pid));
    assert!(interfaces(&ns).is_empty(), "{:?}", interfaces(&ns));
    let _ = app.kill();
    let _ = app.wait();
    wait_for("the name to be free once the process ended", Duration::from_secs(20), || {
        bed.weavectl(0, &["attach", "--name", "t1", &format!("/run/netns/{ns}")]).status.success().then_some(())
    });
}

/// A process whose main thread ends (`pthread_exit`) while a second thread
/// sleeps; it says so on stdout first.
const PTHREAD_EXIT: &str = "import ctypes, threading, time, sys
threading.Thread(target=lambda: time.sleep(600)).start()
print('up', flush=True)
time.sleep(0.5)
ctypes.CDLL(None).pthread_exit(None)";

/// An attach racing `subnet rm --force` of its subnet either goes through
/// (and the container's port then goes with the subnet) or is refused as
/// not found (exit 4), at once and with nothing left behind. Before, about
/// a third of such attaches failed with exit 1 and whatever step met the
/// subnet's end ("bridge … did not appear" after 10 s, "sticky fdb entry …
/// Operation not supported", "put … into wvbr-…: Invalid argument"; found
/// by a review, 2026-12-05).
#[test]
#[ignore = "needs root: network namespaces"]
fn an_attach_racing_the_removal_of_its_subnet_is_not_found_or_undone() {
    let mut bed = Bed::with_hosts(1);
    let host = bed.hosts[0].ns.clone();
    let socket = bed.hosts[0].socket.clone();
    let admin = |bed: &Bed, args: &[&str]| {
        let out = bed.weavectl_admin(args);
        assert!(out.status.success(), "weavectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let mut containers = Vec::new();
    let mut outcomes = Vec::new();
    for k in 0..12u32 {
        let cidr = format!("10.77.{k}.0/28");
        let c = bed.add_container(&format!("race{k}"));
        admin(&bed, &["subnet", "add", &cidr]);
        let attach = Command::new(weavectl_bin())
            .arg("--socket")
            .arg(&socket)
            .args(["attach", &format!("net:{cidr}"), &format!("/run/netns/{c}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Across the attach's steps: allocation, the bridge, the port.
        thread::sleep(Duration::from_millis(u64::from(k % 6) * 15));
        admin(&bed, &["subnet", "rm", "--force", &cidr]);
        let out = attach.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        match out.status.code() {
            Some(0) => {}
            Some(4) => assert!(
                stderr.contains("was removed while") || stderr.contains("is not defined"),
                "round {k}: {stderr}"
            ),
            code => panic!("round {k}: attach exited {code:?}: {stderr}{}", bed.log(0)),
        }
        outcomes.push(out.status.code());
        containers.push(c);
    }
    eprintln!("exit codes: {outcomes:?}");
    // Whatever went through goes with its subnet: no interface, no port.
    wait_for("every raced container's interface to go", Duration::from_secs(30), || {
        containers.iter().all(|c| interfaces(c).is_empty()).then_some(())
    });
    wait_for("every raced container's port to go", Duration::from_secs(30), || ports(&host).is_empty().then_some(()));
    assert!(bed.allocations().iter().all(|a| !a.contains("10.77.")), "{:?}", bed.allocations());
}

/// A live container whose interface was deleted behind the agent's back (its
/// host-side port removed) is said once after the sweeps' grace, counted in
/// `weave_workload_ports_missing`, and an attach again plugs it: it was left
/// with no network and nothing noticed (found by a review, 2026-12-07).
#[test]
#[ignore = "needs root: network namespaces"]
fn a_container_whose_interface_was_deleted_is_said() {
    let mut bed = Bed::with_hosts(1);
    let c = bed.add_container("cut");
    let w = bed.weavectl_attach(0, &c, &["--name", "cut", &format!("/run/netns/{c}")])[0];
    let host = bed.hosts[0].ns.clone();
    let seg = bed.wait_status(0).segments.into_iter().find(|s| s.subnet == bed.workloads[w].subnet).unwrap();
    let gauge = |host: &str| {
        let page = scrape(host);
        page.lines().find_map(|l| l.strip_prefix("weave_workload_ports_missing ")?.parse::<f64>().ok())
    };
    // And an address `agent allocate` gave under its name, which no port of
    // weave's ever carried (a veth plugged by hand, or none): not said.
    let out = bed.weavectl_admin(&["subnet", "add", "10.40.0.0/24", "--name", "hand"]);
    assert!(out.status.success(), "subnet add: {}", String::from_utf8_lossy(&out.stderr));
    let (socket, agent) = (bed.hosts[0].socket.to_str().unwrap().to_string(), agent_bin());
    wait_for("agent allocate on the new subnet", Duration::from_secs(15), || {
        let out =
            run(&[agent.to_str().unwrap(), "allocate", "--socket", &socket, "--container", "cut", "--subnet", "hand"]);
        out.status.success().then_some(())
    });
    // A sweep (every 5 s) sees the port carry its address before it goes.
    thread::sleep(sweep_time() * 2);
    assert_eq!(gauge(&host), Some(0.0));
    ok_in(&host, &["ip", "link", "del", &workload_port(&host, &seg.bridge)]);
    let said = "a container's interface on weave is gone";
    wait_for("the agent to say cut's interface is gone", Duration::from_secs(60), || {
        bed.log(0).contains(said).then_some(())
    });
    assert_eq!(gauge(&host), Some(1.0), "one address: not agent allocate's");
    thread::sleep(Duration::from_secs(11));
    assert_eq!(bed.log(0).matches(said).count(), 1, "said again, or agent allocate's: {}", bed.log(0));
    bed.weavectl_attach(0, &c, &["--name", "cut", &format!("/run/netns/{c}")]);
    wait_for("the gauge back to 0", Duration::from_secs(15), || (gauge(&host) == Some(0.0)).then_some(()));
}
