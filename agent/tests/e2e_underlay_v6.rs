//! An IPv6-only underlay (hosts with only 2001:db8::N/64, the coordinator at
//! [2001:db8::2]:6783): three hosts join and handshake over IPv6, containers
//! attached with names ping and resolve each other across all three, a TCP
//! transfer runs, and a capture of the underlay (everything but the
//! coordinator's TLS) holds only WireGuard over IPv6: no IPv4 at all, no
//! fragment, nothing but the underlay's own neighbour discovery besides.
mod common;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use common::{underlay::*, *};

/// `/etc/netns/<ns>/resolv.conf` pointing at the agent's resolver, removed on drop.
struct ResolvConf(PathBuf);

impl ResolvConf {
    fn write(ns: &str) -> Self {
        let dir = PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.11\noptions timeout:1 attempts:2\n").unwrap();
        ResolvConf(dir)
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dig(ns: &str, name: &str) -> Vec<String> {
    let out = in_ns(ns, &["dig", "+short", "+time=1", "+tries=2", name]);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn three_hosts_on_an_ipv6_only_underlay_ping_resolve_and_carry_only_wireguard() {
    let mut bed = Bed::with_hosts_on(Underlay::V6, 3);
    // Nothing IPv4 on the underlay: the hosts have no such address.
    let v4 = ok_in(&bed.hosts[0].ns, &["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(!v4.contains("inet "), "host 1 has an IPv4 underlay address: {v4}");
    for i in 0..3 {
        let status = bed.status(i).unwrap();
        for p in &status.peers {
            let endpoint: SocketAddr = p.endpoint.expect("a peer with an endpoint");
            assert!(endpoint.is_ipv6(), "host {} reaches {} at {endpoint}", i + 1, p.name);
        }
    }

    let mut names = Vec::new();
    let mut resolv = Vec::new();
    let mut workloads = Vec::new();
    for i in 0..3 {
        let name = format!("v6c{}", i + 1);
        let ns = bed.add_container(&name);
        resolv.push(ResolvConf::write(&ns));
        workloads.push(bed.weavectl_attach(i, &ns, &["--name", &name, &format!("/run/netns/{ns}")])[0]);
        names.push(name);
    }
    let capture = Capture::start(&bed.underlay, "br0", "not host 2001:db8::2", bed.path("underlay.pcap"));
    for (a, &wa) in workloads.iter().enumerate() {
        for (b, &wb) in workloads.iter().enumerate().filter(|(b, _)| *b != a) {
            bed.wait_ping(wa, wb, Duration::from_secs(15));
            let ns = bed.workloads[wa].ns.clone();
            let want = bed.workloads[wb].ip.to_string();
            wait_for(&format!("{} to resolve {}", names[a], names[b]), Duration::from_secs(15), || {
                (dig(&ns, &names[b]) == [want.clone()]).then_some(())
            });
        }
    }
    // The libc resolver in a container goes the same way: ping by name.
    let out = in_ns(&bed.workloads[workloads[0]].ns, &["ping", "-c1", "-W2", &names[2]]);
    assert!(out.status.success(), "ping by name: {out:?}");
    const TOTAL: usize = 20 << 20;
    let (from, to) = (&bed.workloads[workloads[0]], &bed.workloads[workloads[1]]);
    let took = tcp_transfer(&from.ns, &to.ns, to.ip, 5201, TOTAL, Duration::from_secs(30));
    eprintln!("20 MB over the IPv6 underlay: {:.0} Mbit/s", TOTAL as f64 * 8.0 / took.as_secs_f64() / 1e6);

    let file = capture.stop();
    let (packets, not_v6) = read_pcap6(&file);
    assert_eq!(not_v6, 0, "frames other than IPv6 on an IPv6-only underlay");
    let carried = assert_only_wireguard6(&packets);
    // tcpdump may drop some of a fast transfer on a loaded machine: most of it is enough.
    assert!(carried > TOTAL / 2, "the capture saw the transfer ({carried} bytes in {} packets)", packets.len());
    drop(resolv);
}

/// A node pinned by its IPv6 address alone, as the DaemonSet's
/// `WEAVE_ENDPOINT=$(HOST_IP)` gives it: the agent adds its listen port
/// (`$(HOST_IP):6784` was refused as no address; found by a review of the
/// manifests, 2026-12-06).
#[test]
#[ignore = "needs root: network namespaces"]
fn hosts_pinned_by_their_ipv6_address_alone_advertise_it_with_the_listen_port() {
    let mut bed = Bed::with_underlay(Underlay::V6);
    bed.bare_endpoints = true;
    for _ in 0..2 {
        bed.add_host();
    }
    bed.wait_peers(0, 1);
    let want = bed.hosts[1].endpoint6();
    let status = bed.status(0).unwrap();
    assert_eq!(status.peers[0].endpoint.map(|e| e.to_string()), Some(want.clone()), "{status:?}");
    let nodes = bed.admin(|mut api| async move {
        api.nodes.list_nodes(weave_proto::v1::ListNodesRequest {}).await.unwrap().into_inner().nodes
    });
    let h2 = nodes.iter().find(|n| n.name == bed.hosts[1].name).unwrap();
    assert_eq!(h2.endpoints, [want], "{nodes:?}");
    // Pinned, not found by the agent (which would advertise the same here).
    let identity = std::fs::read_to_string(bed.hosts[1].data_dir.join("identity.json")).unwrap();
    let identity: serde_json::Value = serde_json::from_str(&identity).unwrap();
    assert_eq!(identity["endpoints_pinned"], true, "{identity}");
    let (a, b) = (bed.add_workload(0, "default"), bed.add_workload(1, "default"));
    bed.wait_ping(a, b, Duration::from_secs(15));
}

/// `--endpoint 2001:db8::15:6784` (an address and port, no brackets) also
/// reads as the address `2001:db8::15:6784`: on the host whose address is
/// 2001:db8::15 it is refused with the bracketed form (it was taken, and
/// peers were sent to an address that does not exist; found by a review,
/// 2026-12-07).
#[test]
#[ignore = "needs root: network namespaces"]
fn an_ipv6_endpoint_and_port_without_brackets_is_refused() {
    let mut bed = Bed::with_underlay(Underlay::V6);
    let ns = bed.add_bare_host("192.0.2.15");
    let ip6 = v6_of("192.0.2.15".parse().unwrap());
    let dir = bed.path("bare-agent");
    let (agent, dir, given) = (agent_bin(), dir.to_str().unwrap().to_string(), format!("{ip6}:6784"));
    let socket = format!("{dir}.sock");
    // The bed's own paths, should a join that must fail succeed.
    let join = [
        agent.to_str().unwrap(),
        "join",
        "--token",
        &bed.token,
        "--endpoint",
        &given,
        "--data-dir",
        &dir,
        "--socket",
        &socket,
        "--docker-plugin",
        "off",
    ];
    let out = in_ns(&ns, &join);
    assert!(!std::path::Path::new(&dir).join("identity.json").exists(), "nothing joined");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("write an IPv6 address and its port in brackets, as [{ip6}]:6784")), "{stderr}");
}
