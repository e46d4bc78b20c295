//! ECN across the underlay (RFC 6040): a datagram carries its packet's ECN
//! field outside (and nothing else of its traffic class), and a router on
//! the underlay that marks it CE marks the packet CE, which the receiving
//! workload's TCP echoes to its sender. A CE mark on a packet whose sender
//! does not do ECN drops it. Until 2026-12-08 every datagram left Not-ECT:
//! the underlay could only drop, and a workload never saw a mark.
//!
//! The "router" is an nftables rule on the receiving host's underlay
//! interface, ahead of everything else (`ip ecn set ce`).
mod common;

use std::{io::BufRead, time::Duration};

use common::{underlay::tcp_transfer, *};

/// One counter of `/proc/net/netstat` in `ns` (`group` "IpExt:", "TcpExt:").
fn netstat(ns: &str, group: &str, name: &str) -> u64 {
    proc_counter(ns, "netstat", group, name)
}

/// Receives UDP on port 5300 until 2 s pass without a datagram; prints
/// "ready" once bound, then each datagram's TOS byte.
const RECEIVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
s.bind(("0.0.0.0", 5300))
print("ready", flush=True)
s.settimeout(5)
got = []
try:
    while True:
        _, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(4))
        got += [c[2][0] for c in anc if (c[0], c[1]) == (socket.IPPROTO_IP, socket.IP_TOS)] or [-1]
        s.settimeout(2)
except socket.timeout:
    pass
print(" ".join(map(str, got)), flush=True)
"#;

/// `python3 -c SENDER IP TOS`: 20 datagrams of 100 bytes to IP:5300 with TOS.
const SENDER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, int(sys.argv[2]))
for _ in range(20):
    s.sendto(b"x" * 100, (sys.argv[1], 5300))
    time.sleep(0.005)
"#;

/// The TOS bytes w2's receiver got of 20 datagrams w1 sent with `tos`.
fn udp_tos(bed: &Bed, w1: usize, w2: usize, tos: u8) -> Vec<i64> {
    let (from, to) = (&bed.workloads[w1], &bed.workloads[w2]);
    let mut receiver = Killed(
        std::process::Command::new("ip")
            .args(["netns", "exec", &to.ns, "python3", "-c", RECEIVER])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(receiver.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    ok_in(&from.ns, &["python3", "-c", SENDER, &to.ip.to_string(), &tos.to_string()]);
    line.clear();
    out.read_line(&mut line).unwrap();
    line.split_whitespace().map(|t| t.parse().unwrap()).collect()
}

/// The packets counted by named counter `name` of the test's nft table in `ns`.
fn counted(ns: &str, name: &str) -> u64 {
    let out = ok_in(ns, &["nft", "list", "counter", "inet", "wvecn", name]);
    let packets = out.split_whitespace().skip_while(|w| *w != "packets").nth(1);
    packets.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("counter {name}: {out}"))
}

#[test]
#[ignore = "needs root: network namespaces"]
fn congestion_marked_on_an_ipv4_underlay_reaches_the_workloads_tcp() {
    congestion_marked_on_the_underlay_reaches_the_workloads_tcp(Underlay::V4);
}

/// The same with IPv6 datagrams (`IPV6_TCLASS`, on the dual-stack socket).
#[test]
#[ignore = "needs root: network namespaces"]
fn congestion_marked_on_an_ipv6_underlay_reaches_the_workloads_tcp() {
    congestion_marked_on_the_underlay_reaches_the_workloads_tcp(Underlay::V6);
}

fn congestion_marked_on_the_underlay_reaches_the_workloads_tcp(family: Underlay) {
    let mut bed = Bed::with_hosts_on(family, 2);
    let ip = if family == Underlay::V6 { "ip6" } else { "ip" };
    let w1 = bed.add_workload(0, "default");
    let w2 = bed.add_workload(1, "default");
    bed.wait_ping(w1, w2, Duration::from_secs(15));
    for w in [w1, w2] {
        ok_in(&bed.workloads[w].ns, &["sysctl", "-qw", "net.ipv4.tcp_ecn=1"]);
    }
    let host = bed.hosts[1].ns.clone();
    let wg = WG_PORT.to_string();
    // What arrives on host 2's underlay interface from the tunnel, counted
    // before anything else sees it.
    let rules = format!(
        "table inet wvecn {{
            counter ect0 {{}}
            counter dscp {{}}
            chain pre {{
                type filter hook prerouting priority -400; policy accept;
                iifname \"eth0\" udp dport {wg} {ip} ecn ect0 counter name ect0
                iifname \"eth0\" udp dport {wg} {ip} dscp != cs0 counter name dscp
            }}
        }}"
    );
    ok_in(&host, &["nft", &rules]);

    // ECT(0) with DSCP EF: outside, ECT(0) and DSCP 0; inside, as sent.
    let before = counted(&host, "ect0");
    let got = udp_tos(&bed, w1, w2, 0xb8 | 0b10);
    assert_eq!(got, vec![0xba; 20], "the TOS bytes received");
    assert!(counted(&host, "ect0") >= before + 20, "the datagrams were not ECT(0) outside");
    assert_eq!(counted(&host, "dscp"), 0, "the packets' DSCP leaked onto the underlay");
    // Not-ECT stays Not-ECT.
    assert_eq!(udp_tos(&bed, w1, w2, 0xb8), vec![0xb8; 20]);

    // The underlay marks every ECN-capable datagram: the packets arrive CE,
    // and w1's TCP hears of it from w2's acknowledgements.
    ok_in(
        &host,
        &[
            "nft", "add", "rule", "inet", "wvecn", "pre", "iifname", "eth0", "udp", "dport", &wg, ip, "ecn", "ect0",
            ip, "ecn", "set", "ce",
        ],
    );
    assert_eq!(udp_tos(&bed, w1, w2, 0xb8 | 0b10), vec![0xbb; 20], "CE did not reach the workload");
    let (a, b) = (bed.workloads[w1].ns.clone(), bed.workloads[w2].ns.clone());
    let (ce, echoed) = (netstat(&b, "IpExt:", "InCEPkts"), netstat(&a, "TcpExt:", "TCPDeliveredCE"));
    tcp_transfer(&a, &b, bed.workloads[w2].ip, 5201, 4 << 20, Duration::from_secs(30));
    let (ce, echoed) = (netstat(&b, "IpExt:", "InCEPkts") - ce, netstat(&a, "TcpExt:", "TCPDeliveredCE") - echoed);
    eprintln!("4 MB over TCP with ECN: {ce} packets arrived CE, {echoed} acknowledged as CE");
    assert!(ce >= 100, "only {ce} TCP segments arrived CE");
    assert!(echoed > 0, "the sender's TCP never heard of the marks");

    // CE on a packet that is not ECN-capable: dropped, and counted.
    ok_in(
        &host,
        &[
            "nft", "add", "rule", "inet", "wvecn", "pre", "iifname", "eth0", "udp", "dport", &wg, ip, "ecn", "not-ect",
            ip, "ecn", "set", "ce",
        ],
    );
    let rejected = || total(&scrape(&host), "weave_tunnel_rejected_total{reason=\"ecn_not_ect\"}");
    let dropped = rejected();
    assert_eq!(udp_tos(&bed, w1, w2, 0), Vec::<i64>::new(), "CE on Not-ECT was delivered");
    assert!(rejected() >= dropped + 20.0, "not counted: {} -> {}", dropped, rejected());
}
