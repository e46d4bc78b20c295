//! A subnet's egress (`weavectl subnet add --egress`, `subnet set --egress`):
//! its workloads reach a server outside weave (on the underlay, never
//! joined) through their own host, masqueraded to that host's address, with
//! a default route the attach gave them (exposing the host first). What it
//! must not open: a subnet without egress stays shut even for a container
//! that routes through its exposed host itself; the egress subnet reaches no
//! other subnet through its gateway, nor a peer's WireGuard endpoint; the
//! server cannot connect in; and turning egress off shuts it again.
mod common;

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
    time::Duration,
};

use common::*;

const SERVER: &str = "192.0.2.200";
const MARKER: &[u8] = b"egress-marker";
const WG_MARKER: &[u8] = b"wireguard-shaped";

/// A TCP server in `ns` at SERVER:8080 that answers each connection with
/// the address it came from; runs until the bed's namespaces go.
fn serve_peer_address(ns: &str) {
    let listener = in_netns(ns, || TcpListener::bind("0.0.0.0:8080").unwrap()).join().unwrap();
    thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let peer = c.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = c.write_all(peer.as_bytes());
        }
    });
}

/// From namespace `ns`: connects to SERVER:8080 and returns the address
/// the server saw, or None when no connection is made within 3 s.
fn seen_from(ns: &str) -> Option<String> {
    seen_at(ns, format!("{SERVER}:8080").parse().unwrap())
}

/// [`seen_from`] for a server at `to`.
fn seen_at(ns: &str, to: SocketAddr) -> Option<String> {
    in_netns(ns, move || {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut seen = String::new();
        c.read_to_string(&mut seen).ok()?;
        Some(seen)
    })
    .join()
    .unwrap()
}

/// Whether a TCP connection from `ns` to `ip`:`port` is answered at all (a
/// refusal is an answer) within 2 s.
fn answered(ns: &str, ip: Ipv4Addr, port: u16) -> bool {
    in_netns(ns, move || match TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(2)) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    })
    .join()
    .unwrap()
}

fn admin_ok(bed: &Bed, args: &[&str]) -> String {
    let out = bed.weavectl_admin(args);
    assert!(out.status.success(), "weavectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn default_route(ns: &str) -> String {
    ok_in(ns, &["ip", "-4", "route", "show", "default"]).trim().to_string()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn an_egress_subnet_leaves_through_its_own_host_and_nothing_else_does() {
    let mut bed = Bed::with_hosts(2);
    bed.wait_peers(0, 1);
    admin_ok(&bed, &["subnet", "add", "10.44.0.0/24", "--name", "out", "--egress"]);
    admin_ok(&bed, &["subnet", "add", "10.45.0.0/24", "--name", "shut"]);
    let listed = admin_ok(&bed, &["--json", "subnet", "ls"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let egress_of =
        |name: &str| listed.as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["egress"].clone();
    assert_eq!((egress_of("out"), egress_of("shut")), (true.into(), false.into()), "{listed}");
    let server = bed.add_bare_host(SERVER);
    serve_peer_address(&server);
    let (h0, h1) = (bed.hosts[0].ip.to_string(), bed.hosts[1].ip.to_string());

    // Host 1 drops what iptables' FORWARD does not accept, as Docker's hosts
    // do: the agent leaves weave's bridges to weave's own table there.
    ok_in(&bed.hosts[0].ns, &["iptables", "-w", "-P", "FORWARD", "DROP"]);
    // A container on the egress subnet: the attach exposes its host there
    // and gives it a default route through that address.
    let c1 = bed.add_container("c1");
    let out = bed.weavectl(0, &["attach", "--json", "net:out", &format!("/run/netns/{c1}")]);
    assert!(out.status.success(), "attach: {}{}", String::from_utf8_lossy(&out.stderr), bed.log(0));
    let attached: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gateway = attached[0]["gateway"].as_str().expect("a gateway on an egress subnet").to_string();
    let c1_ip: Ipv4Addr = attached[0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
    assert!(default_route(&c1).starts_with(&format!("default via {gateway} dev ethwe")), "{}", default_route(&c1));
    assert!(
        bed.allocations().iter().any(|a| a.contains(&format!("host:{}", bed.hosts[0].name)) && a.contains(&gateway)),
        "host 1 exposed at {gateway}: {:?}",
        bed.allocations()
    );
    // `agent status` says so: egress through the exposed address here, not yet there.
    let egress_of = |i: usize| {
        let status = bed.status(i).unwrap();
        status.segments.into_iter().find(|g| g.subnet == "10.44.0.0/24").unwrap().egress
    };
    assert_eq!((egress_of(0), egress_of(1)), (Some(gateway.clone()), Some(String::new())));
    let status = bed.status(0).unwrap();
    assert!(status.segments.iter().filter(|g| g.subnet != "10.44.0.0/24").all(|g| g.egress.is_none()));
    let text = weave_proto::local_api::format_status(&status);
    assert!(text.contains(&format!("egress via {gateway}")), "{text}");
    // Not while the host does not forward: the agent leaves that to the
    // admin (host-wide, it would route between the host's other networks),
    // and says so.
    assert_eq!(seen_from(&c1), None, "egress through a host with net.ipv4.ip_forward 0");
    let held = weave_proto::local_api::format_status(&bed.status(0).unwrap());
    assert!(held.contains("(held: net.ipv4.ip_forward is 0 on this host)"), "{held}");
    assert!(bed.log(0).contains("net.ipv4.ip_forward is 0"), "{}", bed.log(0));
    for host in &bed.hosts {
        ok_in(&host.ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
    // Out, as its host.
    assert_eq!(seen_from(&c1).as_deref(), Some(h0.as_str()), "c1 reaches the server as host 1");
    // Hiding the host there would take c1's way out: refused (exit 5), nothing changed.
    let hide = bed.weavectl(0, &["hide", "net:out"]);
    let why = String::from_utf8_lossy(&hide.stderr).into_owned();
    assert_eq!(hide.status.code(), Some(5), "{why}");
    assert!(why.contains("1 container(s) of this host on subnet 10.44.0.0/24 leave through this host"), "{why}");
    // Not "or turn its egress off": they keep that route, and hide is refused still.
    assert!(why.contains("detach them first (turning its egress off leaves them that route)"), "{why}");
    // A bare hide (every subnet) too, and it says how to hide the others.
    let hide = bed.weavectl(0, &["hide"]);
    let why = String::from_utf8_lossy(&hide.stderr).into_owned();
    assert_eq!(hide.status.code(), Some(5), "{why}");
    assert!(why.contains("nothing was hidden: name the other subnets"), "{why}");
    assert_eq!(seen_from(&c1).as_deref(), Some(h0.as_str()), "c1 still leaves after the refused hide");
    let forward = ok_in(&bed.hosts[0].ns, &["iptables", "-w", "-S", "FORWARD"]);
    assert!(forward.contains("-A FORWARD -i wv+ -j ACCEPT") && forward.contains("-o wv+ -j ACCEPT"), "{forward}");
    // Appended: a rule the admin puts before them (Docker's DOCKER-USER) still judges weave's traffic.
    let ns0 = bed.hosts[0].ns.clone();
    ok_in(&ns0, &["iptables", "-w", "-N", "DOCKER-USER"]);
    ok_in(&ns0, &["iptables", "-w", "-A", "DOCKER-USER", "-d", SERVER, "-p", "tcp", "--dport", "8080", "-j", "DROP"]);
    ok_in(&ns0, &["iptables", "-w", "-I", "FORWARD", "1", "-j", "DOCKER-USER"]);
    // The agent's rules taken away: put back within a check, after DOCKER-USER's jump.
    for dir in ["-i", "-o"] {
        ok_in(&ns0, &["iptables", "-w", "-D", "FORWARD", dir, "wv+", "-j", "ACCEPT"]);
    }
    wait_for("host 1's FORWARD rules for weave's devices again", Duration::from_secs(25), || {
        let forward = ok_in(&ns0, &["iptables", "-w", "-S", "FORWARD"]);
        forward.contains("-A FORWARD -o wv+ -j ACCEPT").then_some(forward)
    });
    assert_eq!(seen_from(&c1), None, "DOCKER-USER's drop was passed over");
    ok_in(&ns0, &["iptables", "-w", "-F", "DOCKER-USER"]);
    assert_eq!(seen_from(&c1).as_deref(), Some(h0.as_str()), "c1 leaves again once DOCKER-USER lets it");

    // The same subnet on the other host leaves through that host.
    let c4 = bed.add_container("c4");
    let w4 = bed.weavectl_attach(1, &c4, &["net:out", &format!("/run/netns/{c4}")])[0];
    // A Kubernetes Service as kube-proxy makes it: a DNAT on the node from a
    // cluster IP (outside weave's ranges, so routed through the gateway) to
    // a pod of the subnet on another node. The pod sees c1 itself.
    serve_peer_address(&c4);
    let backend = format!("{}:8080", bed.workloads[w4].ip);
    let node = bed.hosts[0].ns.clone();
    ok_in(&node, &["nft", "add", "table", "ip", "kp"]);
    ok_in(&node, &["nft", "add", "chain", "ip", "kp", "pre", "{ type nat hook prerouting priority dstnat; }"]);
    ok_in(
        &node,
        &["nft", "add", "rule", "ip", "kp", "pre", "ip", "daddr", "10.96.0.10", "tcp", "dport", "80"]
            .into_iter()
            .chain(["dnat", "to", &backend])
            .collect::<Vec<_>>(),
    );
    let via_service = wait_for("c1 to reach c4 through the service", Duration::from_secs(15), || {
        seen_at(&c1, "10.96.0.10:80".parse().unwrap())
    });
    assert_eq!(via_service, c1_ip.to_string(), "the service's pod sees the client pod, not its host");
    // The node itself through the Service (kube-proxy DNATs in output and
    // masquerades what is not a pod's), and an outside client through a
    // NodePort: both reach c4 on the other node from host 1's address on
    // the subnet (the TUN's own address is a node address, refused there).
    let nodeport = format!("{}:30080", h0);
    for rule in [
        vec!["add", "chain", "ip", "kp", "out", "{ type nat hook output priority -100; }"],
        vec![
            "add",
            "rule",
            "ip",
            "kp",
            "out",
            "ip",
            "daddr",
            "10.96.0.10",
            "tcp",
            "dport",
            "80",
            "dnat",
            "to",
            &backend,
        ],
        vec!["add", "rule", "ip", "kp", "pre", "ip", "daddr", &h0, "tcp", "dport", "30080", "dnat", "to", &backend],
        vec!["add", "chain", "ip", "kp", "post", "{ type nat hook postrouting priority srcnat; }"],
        vec![
            "add",
            "rule",
            "ip",
            "kp",
            "post",
            "ip",
            "daddr",
            "10.44.0.0/24",
            "ip",
            "saddr",
            "!=",
            "10.44.0.0/24",
            "masquerade",
        ],
    ] {
        ok_in(&node, &[&["nft"][..], &rule].concat());
    }
    ok_in(&node, &["ip", "route", "add", "10.96.0.0/12", "dev", "eth0"]);
    assert_eq!(seen_at(&node, "10.96.0.10:80".parse().unwrap()), Some(gateway.clone()), "the node through a service");
    assert_eq!(seen_at(&server, nodeport.parse().unwrap()), Some(gateway.clone()), "a client through a NodePort");
    // And a workload of the egress subnet reaches its own host at its
    // underlay address (a kubelet, a node-local cache), as it reaches the other host's.
    assert!(answered(&c1, h0.parse().unwrap(), 6999), "c1 reached not its own host's underlay address");

    // A CNI runtime's pod on the egress subnet: the result names the route
    // and the gateway (host 2, exposed at c4's attach), and the pod leaves.
    let pod = bed.add_container("pod");
    let socket = bed.hosts[1].socket.to_str().unwrap().to_string();
    // Kubernetes' conflist: no resolver of weave's in the pod, so cluster
    // DNS can bind port 53 in its own pods.
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-cni", "socket": socket,
        "subnet": "out", "resolver": false});
    let added = cni::plugin(&cni::weave_cni(), "ADD", &format!("/run/netns/{pod}"), "pod1", &conf, None);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stdout));
    let result = cni::json_out(&added);
    let gw = result["ips"][0]["gateway"].as_str().expect("a gateway in the CNI result").to_string();
    assert_eq!(result["routes"][0], serde_json::json!({"dst": "0.0.0.0/0", "gw": gw}), "{result}");
    assert!(default_route(&pod).starts_with(&format!("default via {gw} dev eth0")), "{}", default_route(&pod));
    assert_eq!(seen_from(&pod).as_deref(), Some(h1.as_str()), "the pod reaches the server as host 2");
    assert_eq!(result["dns"], serde_json::json!({}), "{result}");
    // CHECK looks at the default route too: there, fine; gone, failed (code 100).
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    let netns = format!("/run/netns/{pod}");
    let checked = cni::plugin(&cni::weave_cni(), "CHECK", &netns, "pod1", &check, None);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));
    ok_in(&pod, &["ip", "route", "del", "default"]);
    let checked = cni::plugin(&cni::weave_cni(), "CHECK", &netns, "pod1", &check, None);
    let e = cni::json_out(&checked);
    assert_eq!(e["code"], 100, "{e}");
    assert!(e["msg"].as_str().unwrap().contains(&format!("the default route via {gw} on eth0 is missing")), "{e}");
    ok_in(&pod, &["ip", "route", "add", "default", "via", &gw]);
    let bound = in_netns(&pod, || (UdpSocket::bind("0.0.0.0:53").is_ok(), TcpListener::bind("0.0.0.0:53").is_ok()));
    assert_eq!(bound.join().unwrap(), (true, true), "a DNS server in the pod binds port 53");
    assert_eq!(seen_from(&c4).as_deref(), Some(h1.as_str()), "c4 reaches the server as host 2");
    // Where FORWARD accepts by default, iptables is left as it was.
    let forward = in_ns(&bed.hosts[1].ns, &["iptables", "-w", "-S", "FORWARD"]);
    assert!(!String::from_utf8_lossy(&forward.stdout).contains("-A FORWARD"), "{forward:?}");
    wait_for("c1 to ping c4 on their segment", Duration::from_secs(15), || {
        ping_once(&c1, bed.workloads[w4].ip).then_some(())
    });

    // A subnet without egress: no default route; and a container that adds
    // one through its exposed host (it has NET_ADMIN) still goes nowhere.
    let c2 = bed.add_container("c2");
    let out = bed.weavectl(0, &["attach", "--json", "net:shut", &format!("/run/netns/{c2}")]);
    assert!(out.status.success(), "attach: {}", String::from_utf8_lossy(&out.stderr));
    let attached: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(attached[0].get("gateway").is_none(), "{attached}");
    assert_eq!(default_route(&c2), "", "no default route off an egress subnet");
    let c2_ip: Ipv4Addr = attached[0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
    let exposed = bed.weavectl(0, &["expose", "net:shut"]);
    assert!(exposed.status.success(), "expose: {}", String::from_utf8_lossy(&exposed.stderr));
    let shut_gw = String::from_utf8_lossy(&exposed.stdout).trim().to_string();
    ok_in(&c2, &["ip", "route", "add", "default", "via", &shut_gw]);
    assert_eq!(seen_from(&c2), None, "a subnet without egress does not leave, even routed through its host");
    assert!(!answered(&c2, h0.parse().unwrap(), 6999), "c2 reached its host's underlay address");
    // Nor through a Service of its host whose pod is on the egress subnet
    // on another host (the DNAT passes; no SNAT makes c2 one of the subnet's).
    assert_eq!(seen_at(&c2, "10.96.0.10:80".parse().unwrap()), None, "c2 reached c4 through a service");
    // Nor through a DNAT of its host to the underlay (a Service whose
    // backend is outside weave, a metadata proxy; the host masquerades what
    // leaves it) or to the host's own underlay address (the API server's
    // Service): DNATed packets passed every rule whichever way they went
    // (found by a review, 2026-12-07). c1, of the egress subnet, is the control.
    for rule in [
        format!("add rule ip kp pre ip daddr 10.96.0.11 tcp dport 80 dnat to {SERVER}:8080"),
        format!("add rule ip kp pre ip daddr 10.96.0.12 tcp dport 80 dnat to {h0}:6999"),
        "add rule ip kp post ip saddr 10.45.0.0/24 oifname \"eth0\" masquerade".to_string(),
    ] {
        ok_in(&node, &["nft", &rule]);
    }
    let (to_server, to_host) = ("10.96.0.11:80".parse().unwrap(), "10.96.0.12".parse().unwrap());
    assert_eq!(seen_at(&c1, to_server).as_deref(), Some(h0.as_str()), "the control: c1 through the DNAT");
    assert!(answered(&c1, to_host, 80), "the control: c1 to its host through the DNAT");
    assert_eq!(seen_at(&c2, to_server), None, "c2 reached the underlay through its host's DNAT");
    assert!(!answered(&c2, to_host, 80), "c2 reached its host's underlay address through a DNAT");

    // Through its gateway, the egress subnet reaches no other subnet (c2
    // on this host, c3 on the other), and the other subnet none of it.
    let c3 = bed.add_container("c3");
    let w3 = bed.weavectl_attach(1, &c3, &["net:shut", &format!("/run/netns/{c3}")])[0];
    let c3_ip = bed.workloads[w3].ip;
    for (to, port) in [(c2_ip, 22), (c3_ip, 22)] {
        assert!(!answered(&c1, to, port), "c1 reached {to} of another subnet through its gateway");
    }
    assert!(!ping_once(&c1, c2_ip) && !ping_once(&c1, c3_ip), "c1 pinged another subnet");
    assert!(!ping_once(&c2, c1_ip), "c2 pinged the egress subnet");

    // Nor a WireGuard message to a peer's endpoint (from host 1's address it
    // would spend what host 2 allows host 1), while other UDP to the same
    // address and port leaves (a member announces its endpoints itself: one
    // naming a public DNS server must not cut the egress workloads off it),
    // and so does a WireGuard-shaped datagram to a server that is no peer.
    let port: u16 = bed.hosts[1].endpoint().rsplit_once(':').unwrap().1.parse().unwrap();
    let on_peer = Capture::start(&bed.hosts[1].ns, "eth0", "udp", bed.path("peer.pcap"));
    let on_server = Capture::start(&server, "eth0", "udp", bed.path("server.pcap"));
    let h1_ip: Ipv4Addr = h1.parse().unwrap();
    let wireguard: Vec<u8> = [&[1u8, 0, 0, 0][..], WG_MARKER].concat();
    in_netns(&c1, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            let _ = s.send_to(&wireguard, (h1_ip, port));
            let _ = s.send_to(MARKER, (h1_ip, port));
            let _ = s.send_to(&wireguard, (SERVER.parse::<Ipv4Addr>().unwrap(), 9999));
            thread::sleep(Duration::from_millis(100));
        }
    })
    .join()
    .unwrap();
    thread::sleep(Duration::from_millis(500));
    let (on_peer, on_server) = (fs::read(on_peer.stop()).unwrap(), fs::read(on_server.stop()).unwrap());
    assert!(contains(&on_server, WG_MARKER), "the control: UDP to the server leaves, WireGuard-shaped or not");
    assert!(contains(&on_peer, MARKER), "other UDP to a peer's endpoint leaves");
    assert!(!contains(&on_peer, WG_MARKER), "a WireGuard message from c1 reached host 2's WireGuard port");

    // Nor a coordinator's gRPC port, directly or through a Service's DNAT (a
    // workload sending bad credentials from its host's address locked the
    // host's agent out), while the coordinator's host is reached on other
    // ports (a refusal is an answer).
    let coordinator: Ipv4Addr = COORDINATOR_IP.parse().unwrap();
    assert!(answered(&c1, coordinator, 6999), "the control: the coordinator's host answers on another port");
    assert!(!answered(&c1, coordinator, 6783), "c1 reached the coordinator's gRPC port");
    // Nor any node's address at that port (a coordinator on a node's host
    // network, as Kubernetes runs it), while other ports of it answer.
    let h1_ip: Ipv4Addr = h1.parse().unwrap();
    assert!(answered(&c1, h1_ip, 6999) && !answered(&c1, h1_ip, 6783), "c1 reached host 2 at the gRPC port");
    ok_in(
        &node,
        &["nft", "add", "rule", "ip", "kp", "pre", "ip", "daddr", "10.96.0.20", "tcp", "dport", "443"]
            .into_iter()
            .chain(["dnat", "to", "192.0.2.2:6783"])
            .collect::<Vec<_>>(),
    );
    assert!(!answered(&c1, "10.96.0.20".parse().unwrap(), 443), "c1 reached the coordinator through a service");

    // The server cannot come in through the gateway host.
    ok_in(&server, &["ip", "route", "add", "10.44.0.0/24", "via", &h0]);
    assert!(!ping_once(&server, c1_ip), "the server pinged c1 through host 1");
    assert!(!answered(&server, c1_ip, 22), "the server reached c1 through host 1");

    // Off: nothing leaves (the route stays, the host drops it); on again: it does.
    assert!(admin_ok(&bed, &["subnet", "set", "out", "--egress", "off"]).contains("egress off"));
    wait_for("egress to stop", Duration::from_secs(15), || seen_from(&c1).is_none().then_some(()));
    // c1 still routes through host 1's address: hiding it would hand that
    // address to the next container attached, and c1's outbound traffic
    // with it. Refused (exit 5) while c1 is there, also after a restart.
    bed.signal_agent(0, nix::sys::signal::Signal::SIGTERM);
    bed.start_agent(0, false);
    bed.wait_peers(0, 1);
    let hide = bed.weavectl(0, &["hide", "net:out"]);
    let why = String::from_utf8_lossy(&hide.stderr).into_owned();
    assert_eq!(hide.status.code(), Some(5), "{why}");
    assert!(
        why.contains(
            "1 container(s) of this host on subnet 10.44.0.0/24 have this host's address as their default route"
        ),
        "{why}"
    );
    assert!(bed.allocations().iter().any(|a| a.contains(&gateway)), "{:?}", bed.allocations());
    admin_ok(&bed, &["subnet", "set", "10.44.0.0/24", "--egress", "on"]);
    let back = wait_for("egress to come back", Duration::from_secs(15), || seen_from(&c1));
    assert_eq!(back, h0);

    // A FORWARD policy that turns DROP later (Docker started after the
    // agent) is met within a 10 s check: c4's way out and its segment work again.
    ok_in(&bed.hosts[1].ns, &["iptables", "-w", "-P", "FORWARD", "DROP"]);
    wait_for("host 2's FORWARD rules for weave's devices", Duration::from_secs(25), || {
        let forward = ok_in(&bed.hosts[1].ns, &["iptables", "-w", "-S", "FORWARD"]);
        forward.contains("-A FORWARD -i wv+ -j ACCEPT").then_some(())
    });
    assert_eq!(seen_from(&c4).as_deref(), Some(h1.as_str()), "c4 reaches the server again");
    assert!(ping_once(&c1, bed.workloads[w4].ip), "c1 pings c4 across hosts again");
    // With c1 gone (egress off again), host 1 may be hidden there, also
    // with a container on the subnet that was never given that route.
    admin_ok(&bed, &["subnet", "set", "out", "--egress", "off"]);
    let c5 = bed.add_container("c5");
    bed.weavectl_attach(0, &c5, &["net:out", &format!("/run/netns/{c5}")]);
    assert_eq!(default_route(&c5), "", "no route through the host with egress off");
    // c1 alone counts (it has the route), not c5.
    let hide = bed.weavectl(0, &["hide", "net:out"]);
    let why = String::from_utf8_lossy(&hide.stderr).into_owned();
    assert_eq!(hide.status.code(), Some(5), "{why}");
    assert!(why.contains("1 container(s) of this host on subnet 10.44.0.0/24 have this host's address"), "{why}");
    let detach = bed.weavectl(0, &["detach", &format!("/run/netns/{c1}")]);
    assert!(detach.status.success(), "{}", String::from_utf8_lossy(&detach.stderr));
    let hide = bed.weavectl(0, &["hide", "net:out"]);
    assert!(hide.status.success(), "{}", String::from_utf8_lossy(&hide.stderr));
    assert!(!bed.allocations().iter().any(|a| a.contains(&gateway)), "{:?}", bed.allocations());

    // Egress on again: the containers attached while it was off get their
    // way out as an attach would give it (the host exposed there again),
    // without being attached again (a pod's runtime cannot), except one
    // with a default route of its own, which stays.
    let c6 = bed.add_container("c6");
    bed.weavectl_attach(0, &c6, &["net:out", &format!("/run/netns/{c6}")]);
    ok_in(&c6, &["ip", "link", "add", "own0", "type", "veth", "peer", "name", "own1"]);
    ok_in(&c6, &["ip", "link", "set", "own0", "up"]);
    ok_in(&c6, &["ip", "link", "set", "own1", "up"]);
    ok_in(&c6, &["ip", "route", "add", "default", "dev", "own0"]);
    // And one whose own routes make the route fail (it took its subnet's
    // away): it stays without, the others are routed all the same (it
    // stopped the whole pass; found by a review, 2026-12-05).
    let c8 = bed.add_container("c8");
    bed.weavectl_attach(0, &c8, &["net:out", &format!("/run/netns/{c8}")]);
    ok_in(&c8, &["ip", "route", "del", "10.44.0.0/24"]);
    admin_ok(&bed, &["subnet", "set", "out", "--egress", "on"]);
    let route = wait_for("c5's default route once egress is on", Duration::from_secs(15), || {
        Some(default_route(&c5)).filter(|r| !r.is_empty())
    });
    let again = bed
        .allocations()
        .into_iter()
        .find(|a| a.contains(&format!("host:{}", bed.hosts[0].name)) && a.contains("10.44.0."))
        .expect("host 1 exposed on the egress subnet again");
    let gateway = route.split(' ').nth(2).unwrap().to_string();
    assert!(route.starts_with("default via ") && again.contains(&gateway), "{route} / {again}");
    assert_eq!(seen_from(&c5).as_deref(), Some(h0.as_str()), "c5 reaches the server as host 1");
    assert_eq!(default_route(&c6), "default dev own0 scope link", "c6's own default route stays alone");
    assert_eq!(default_route(&c8), "", "c8 cannot be routed");
    // And hiding the host there is refused again: c5 now routes through it.
    let hide = bed.weavectl(0, &["hide", "net:out"]);
    assert_eq!(hide.status.code(), Some(5), "{}", String::from_utf8_lossy(&hide.stderr));
    // Turned on while the agent was down: given when it starts.
    admin_ok(&bed, &["subnet", "set", "out", "--egress", "off"]);
    let c7 = bed.add_container("c7");
    bed.weavectl_attach(0, &c7, &["net:out", &format!("/run/netns/{c7}")]);
    assert_eq!(default_route(&c7), "", "no route through the host with egress off");
    bed.signal_agent(0, nix::sys::signal::Signal::SIGTERM);
    admin_ok(&bed, &["subnet", "set", "out", "--egress", "on"]);
    bed.start_agent(0, false);
    wait_for("c7's default route after the restart", Duration::from_secs(20), || {
        Some(default_route(&c7)).filter(|r| r.starts_with(&format!("default via {gateway} dev ethwe")))
    });
    assert_eq!(seen_from(&c7).as_deref(), Some(h0.as_str()), "c7 reaches the server as host 1");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn egress_is_the_admins_to_give() {
    let bed = Bed::with_hosts(1);
    bed.wait_status(0);
    admin_ok(&bed, &["subnet", "add", "10.46.0.0/24", "--name", "mine"]);
    // A member may add an unnamed subnet, but not one with egress, nor turn it on.
    let (refused_add, refused_set) = bed.member(0, |mut api| async move {
        let add = weave_proto::v1::AddSubnetRequest { cidr: "10.47.0.0/24".into(), name: String::new(), egress: true };
        let set = weave_proto::v1::UpdateSubnetRequest { subnet: "mine".into(), egress: Some(true) };
        (
            api.subnets.add_subnet(add).await.unwrap_err().code(),
            api.subnets.update_subnet(set).await.unwrap_err().code(),
        )
    });
    assert_eq!((refused_add, refused_set), (tonic::Code::PermissionDenied, tonic::Code::PermissionDenied));
    // Unknown subnets and empty changes are refused with their own codes and exit statuses.
    let out = bed.weavectl_admin(&["subnet", "set", "nosuch", "--egress", "on"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let empty = bed.admin(|mut api| async move {
        let r = weave_proto::v1::UpdateSubnetRequest { subnet: "mine".into(), egress: None };
        api.subnets.update_subnet(r).await.unwrap_err().code()
    });
    assert_eq!(empty, tonic::Code::InvalidArgument);
    let listed = admin_ok(&bed, &["subnet", "ls"]);
    assert!(listed.lines().any(|l| l.starts_with("10.46.0.0/24") && !l.contains("yes")), "{listed}");
}

/// `python3 -c SHADOW IP PORT SECS`: from UDP port PORT, sends a datagram
/// that is no WireGuard message to IP:PORT every 200 ms for SECS seconds;
/// prints how many datagrams came back.
const SHADOW: &str = r#"
import socket, sys, time
ip, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
s.settimeout(0.2)
got, end = 0, time.time() + secs
while time.time() < end:
    s.sendto(b"hello, not wireguard", (ip, port))
    try:
        s.recvfrom(4096)
        got += 1
    except socket.timeout:
        pass
print(got)
"#;

/// An egress workload sending from its host's WireGuard port to a peer's
/// endpoint, once the tunnel between them is idle (its conntrack entry
/// gone): masqueraded with the port kept, its connection's replies were
/// every datagram the peer sent to this host, delivered to the workload.
/// The peer was cut off from this host, and the workload read its
/// handshakes and data (found by a review, 2026-12-06). Now that port is
/// never an egress workload's on the way out.
#[test]
#[ignore = "needs root: network namespaces"]
fn an_egress_workload_cannot_take_its_hosts_wireguard_port() {
    let mut bed = Bed::with_hosts(2);
    bed.wait_peers(0, 1);
    admin_ok(&bed, &["subnet", "add", "10.44.0.0/24", "--name", "out", "--egress"]);
    for host in &bed.hosts {
        ok_in(&host.ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
    let attach = |bed: &mut Bed, i: usize, name: &str| {
        let ns = bed.add_container(name);
        let out = bed.weavectl(i, &["attach", "--json", "net:out", &format!("/run/netns/{ns}")]);
        assert!(out.status.success(), "attach: {}", String::from_utf8_lossy(&out.stderr));
        let attached: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (ns, attached[0]["address"].as_str().unwrap().split('/').next().unwrap().to_string())
    };
    let (c1, c1_ip) = attach(&mut bed, 0, "c1");
    let (c2, _) = attach(&mut bed, 1, "c2");
    let ping = |from: &str, to: &str| in_ns(from, &["ping", "-c", "1", "-W", "1", to]).status.success();
    wait_for("c2 to reach c1", Duration::from_secs(10), || ping(&c2, &c1_ip).then_some(()));
    // Host 1 forgets an idle UDP flow in 2 s (its own namespace's timeouts):
    // the tunnel to host 2, idle, has no entry left.
    for (key, value) in [("nf_conntrack_udp_timeout", "1"), ("nf_conntrack_udp_timeout_stream", "2")] {
        ok_in(&bed.hosts[0].ns, &["sysctl", "-qw", &format!("net.netfilter.{key}={value}")]);
    }
    std::thread::sleep(Duration::from_secs(4));
    let peer = bed.hosts[1].ip.to_string();
    let shadow = std::process::Command::new("ip")
        .args(["netns", "exec", &c1, "python3", "-c", SHADOW, &peer, "6784", "8"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // Host 2's workloads still reach host 1's: its datagrams go to the agent.
    let reached = (0..6).any(|_| ping(&c2, &c1_ip));
    let out = shadow.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(reached, "host 2 cut off from host 1 by c1's datagrams (c1 got {got} back)");
    assert_eq!(got, "0", "c1 received what host 2 sent to host 1's WireGuard port");
}

/// An attach to an egress subnet that is refused changes nothing: the host
/// it would have made the container's gateway is not left exposed there.
/// It kept the address (on its bridge and in IPAM) and masqueraded for the
/// subnet, whether the refusal was the container's address (another host's
/// container holds it), its name (another host's), or a subnet with one
/// free address, which the gateway took before the subnet was called full
/// (found by a review, 2026-12-06). Put right, the same attach works.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_refused_attach_to_an_egress_subnet_leaves_its_host_unexposed() {
    let mut bed = Bed::with_hosts(2);
    bed.wait_peers(0, 1);
    bed.wait_peers(1, 1);
    admin_ok(&bed, &["subnet", "add", "10.48.0.0/24", "--name", "out", "--egress"]);
    admin_ok(&bed, &["subnet", "add", "10.49.0.0/30", "--name", "tiny", "--egress"]);
    let e1 = bed.add_container("e1");
    bed.weavectl_attach(0, &e1, &["--name", "e1", "ip:10.48.0.2/24", &format!("/run/netns/{e1}")]);
    let host1 = bed.hosts[1].ns.clone();
    // The exposures: address and key (not the age column).
    let exposed = |bed: &Bed| -> Vec<String> {
        let listed = admin_ok(bed, &["ipam", "ls"]);
        let exposure = |l: &str| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", cols[0], cols[3])
        };
        listed.lines().filter(|l| l.contains("host:")).map(exposure).collect()
    };
    let unexposed = |bed: &Bed, before: &[String], what: &str| {
        assert_eq!(exposed(bed), before, "{what}: host 1 exposed");
        let addrs = ok_in(&host1, &["ip", "-o", "-4", "addr", "show"]);
        assert!(!addrs.contains("10.48.0.") && !addrs.contains("10.49.0."), "{what}: {addrs}");
        // The rules follow the map: the moment's exposure goes from them too.
        wait_for(&format!("{what}: host 1 to stop masquerading for the subnet"), Duration::from_secs(10), || {
            (!ok_in(&host1, &["nft", "list", "ruleset"]).contains("snat ip to 10.4")).then_some(())
        });
    };
    let c = bed.add_container("c");
    let path = format!("/run/netns/{c}");
    let refused = |bed: &Bed, args: &[&str], code: i32, says: &str| {
        let mut all = vec!["attach"];
        all.extend_from_slice(args);
        all.push(&path);
        let out = bed.weavectl(1, &all);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?}: {err}");
    };
    let before = exposed(&bed);
    refused(&bed, &["ip:10.48.0.2/24"], 5, "already held by container e1");
    unexposed(&bed, &before, "an address another host's container holds");
    refused(&bed, &["--name", "e1", "net:out"], 5, "e1.weave.local");
    unexposed(&bed, &before, "a name another host's container holds");
    // One address free in 10.49.0.0/30 (host 0, exposed there, holds the
    // other): the gateway took it, and the container found the subnet full.
    let out = bed.weavectl(0, &["expose", "net:tiny"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = exposed(&bed);
    refused(&bed, &["net:tiny"], 7, "no free address");
    unexposed(&bed, &before, "a subnet with one free address");
    // Put right, host 1 is exposed on `out` as its container's gateway.
    bed.weavectl_attach(1, &c, &["net:out", &path]);
    assert!(exposed(&bed).iter().any(|l| l.contains("10.48.0.")), "{:?}", exposed(&bed));
    assert!(default_route(&c).contains("via 10.48.0."), "{}", default_route(&c));
}

/// A host rebooted (its agent killed, its bridges gone, its data dir
/// kept): the agent makes the bridges again with this host's exposed
/// address on them in its first pass. It came back only when the
/// exposures sweep found it missing twice, 5-10 s after the start, and an
/// egress subnet's containers started meanwhile had no gateway (found by a
/// review, 2026-12-07).
#[test]
#[ignore = "needs root: network namespaces"]
fn an_exposed_address_is_on_its_bridge_again_as_soon_as_the_agent_restarts() {
    let mut bed = Bed::with_hosts(1);
    admin_ok(&bed, &["subnet", "add", "10.46.0.0/24", "--name", "out", "--egress"]);
    let c1 = bed.add_container("c1");
    bed.weavectl_attach(0, &c1, &["net:out", &format!("/run/netns/{c1}")]);
    let host = bed.hosts[0].ns.clone();
    let on_bridge = |host: &str| -> Option<String> {
        let addrs = ok_in(host, &["ip", "-o", "-4", "addr", "show"]);
        addrs.lines().find(|l| l.contains(" 10.46.0.")).map(|l| l.split_whitespace().nth(1).unwrap().to_string())
    };
    let bridge = on_bridge(&host).expect("the host exposed on its bridge");
    bed.signal_agent(0, nix::sys::signal::Signal::SIGKILL);
    ok_in(&host, &["ip", "link", "del", &bridge]);
    assert_eq!(on_bridge(&host), None);
    bed.start_agent(0, false);
    bed.wait_status(0);
    // Well inside the sweeps' 5 s.
    wait_for("the exposed address on the bridge made again", Duration::from_millis(2500), || on_bridge(&host));
}
