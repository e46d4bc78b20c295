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
    // Out, as its host.
    assert_eq!(seen_from(&c1).as_deref(), Some(h0.as_str()), "c1 reaches the server as host 1");
    let forward = ok_in(&bed.hosts[0].ns, &["iptables", "-w", "-S", "FORWARD"]);
    assert!(forward.contains("-A FORWARD -i wvbr-+ -j ACCEPT") && forward.contains("-o wvbr-+ -j ACCEPT"), "{forward}");

    // The same subnet on the other host leaves through that host.
    let c4 = bed.add_container("c4");
    let w4 = bed.weavectl_attach(1, &c4, &["net:out", &format!("/run/netns/{c4}")])[0];
    // A Kubernetes Service as kube-proxy makes it: a DNAT on the node from a
    // cluster IP (outside weave's ranges, so routed through the gateway) to
    // a pod of the subnet on another node. The pod sees c1 itself.
    serve_peer_address(&c4);
    let backend = format!("{}:8080", bed.workloads[w4].ip);
    let node = &bed.hosts[0].ns;
    ok_in(node, &["nft", "add", "table", "ip", "kp"]);
    ok_in(node, &["nft", "add", "chain", "ip", "kp", "pre", "{ type nat hook prerouting priority dstnat; }"]);
    ok_in(
        node,
        &["nft", "add", "rule", "ip", "kp", "pre", "ip", "daddr", "10.96.0.10", "tcp", "dport", "80"]
            .into_iter()
            .chain(["dnat", "to", &backend])
            .collect::<Vec<_>>(),
    );
    let via_service = wait_for("c1 to reach c4 through the service", Duration::from_secs(15), || {
        seen_at(&c1, "10.96.0.10:80".parse().unwrap())
    });
    assert_eq!(via_service, c1_ip.to_string(), "the service's pod sees the client pod, not its host");

    // A CNI runtime's pod on the egress subnet: the result names the route
    // and the gateway (host 2, exposed at c4's attach), and the pod leaves.
    let pod = bed.add_container("pod");
    let socket = bed.hosts[1].socket.to_str().unwrap().to_string();
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-cni", "socket": socket, "subnet": "out"});
    let added = cni::plugin(&cni::weave_cni(), "ADD", &format!("/run/netns/{pod}"), "pod1", &conf, None);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stdout));
    let result = cni::json_out(&added);
    let gw = result["ips"][0]["gateway"].as_str().expect("a gateway in the CNI result").to_string();
    assert_eq!(result["routes"][0], serde_json::json!({"dst": "0.0.0.0/0", "gw": gw}), "{result}");
    assert!(default_route(&pod).starts_with(&format!("default via {gw} dev eth0")), "{}", default_route(&pod));
    assert_eq!(seen_from(&pod).as_deref(), Some(h1.as_str()), "the pod reaches the server as host 2");
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

    // Nor a peer's WireGuard endpoint (UDP from host 1's address and port
    // range would spend what host 2 allows host 1), while UDP elsewhere
    // leaves: the control that the datagrams were sent at all.
    let port: u16 = bed.hosts[1].endpoint().rsplit_once(':').unwrap().1.parse().unwrap();
    let on_peer = Capture::start(&bed.hosts[1].ns, "eth0", "udp", bed.path("peer.pcap"));
    let on_server = Capture::start(&server, "eth0", "udp", bed.path("server.pcap"));
    let h1_ip: Ipv4Addr = h1.parse().unwrap();
    in_netns(&c1, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            let _ = s.send_to(MARKER, (h1_ip, port));
            let _ = s.send_to(MARKER, (SERVER.parse::<Ipv4Addr>().unwrap(), 9999));
            thread::sleep(Duration::from_millis(100));
        }
    })
    .join()
    .unwrap();
    thread::sleep(Duration::from_millis(500));
    let (on_peer, on_server) = (on_peer.stop(), on_server.stop());
    assert!(contains(&fs::read(&on_server).unwrap(), MARKER), "the control: UDP to the server leaves");
    assert!(!contains(&fs::read(&on_peer).unwrap(), MARKER), "UDP from c1 reached host 2's WireGuard port");

    // The server cannot come in through the gateway host.
    ok_in(&server, &["ip", "route", "add", "10.44.0.0/24", "via", &h0]);
    assert!(!ping_once(&server, c1_ip), "the server pinged c1 through host 1");
    assert!(!answered(&server, c1_ip, 22), "the server reached c1 through host 1");

    // Off: nothing leaves (the route stays, the host drops it); on again: it does.
    assert!(admin_ok(&bed, &["subnet", "set", "out", "--egress", "off"]).contains("egress off"));
    wait_for("egress to stop", Duration::from_secs(15), || seen_from(&c1).is_none().then_some(()));
    admin_ok(&bed, &["subnet", "set", "10.44.0.0/24", "--egress", "on"]);
    let back = wait_for("egress to come back", Duration::from_secs(15), || seen_from(&c1));
    assert_eq!(back, h0);
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
