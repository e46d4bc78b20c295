//! `--queues 4`: a multi-queue TUN with one UDP socket per queue on the
//! shared port (SO_REUSEPORT) and a packet thread each (or a pair, with
//! `--queue-threads 2`). Workloads on three
//! hosts reach each other; 16 parallel TCP flows to each of two peers
//! arrive intact and in order (a hash of every byte), and the sending
//! agent's TUN reads for one peer's flows all happened on one queue's thread
//! (a peer's traffic stays on the queue whose socket receives it). The TUN's transmit queue holds a
//! burst the agent is too busy to read (issue 15's UDP loss). A ping's round
//! trip costs the two agents' packet threads few TUN reads (no read that
//! `poll` already said would find nothing).
mod common;

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use common::{flows::tcp_flows_arrive_intact, *};

const QUEUES: usize = 4;
const FLOWS: usize = 16;
const BYTES_PER_FLOW: usize = 2 << 20;

/// Per thread of `pid` named `prefix<N>`: the bytes its `read` calls returned
/// (`rchar` of /proc/PID/task/TID/io; TUN reads count there, socket
/// `recvmsg` does not).
fn thread_reads(pid: u32, prefix: &str) -> Vec<(String, u64)> {
    thread_io(pid, prefix, "rchar")
}

/// Per thread of `pid` whose name starts with `prefix`: `field` of its
/// /proc/PID/task/TID/io, sorted by thread name.
fn thread_io(pid: u32, prefix: &str, field: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
        if !comm.starts_with(prefix) {
            continue;
        }
        let io = fs::read_to_string(dir.join("io")).unwrap_or_default();
        let value = io
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(": "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.push((comm, value));
    }
    out.sort();
    out
}

#[test]
#[ignore = "needs root: network namespaces"]
fn four_queues_carry_parallel_flows_intact() {
    parallel_flows_over_four_queues(1);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn four_queues_of_two_threads_carry_parallel_flows_intact() {
    parallel_flows_over_four_queues(2);
}

/// With `--queue-threads 1` (the default) each queue has one thread,
/// `wg-q<N>`, that moves packets both ways; with 2, `wg-tun<N>` and `wg-udp<N>`.
fn parallel_flows_over_four_queues(queue_threads: usize) {
    let mut bed = Bed::new();
    bed.agent_args = vec!["--queues".into(), QUEUES.to_string(), "--queue-threads".into(), queue_threads.to_string()];
    for _ in 0..3 {
        bed.add_host();
    }
    for i in 0..3 {
        bed.wait_peers(i, 2);
        bed.add_workload(i, "default");
    }
    for a in 0..3 {
        for b in 0..3 {
            if a != b {
                bed.wait_ping(a, b, Duration::from_secs(15));
            }
        }
    }
    let pid = bed.hosts[0].agent.as_ref().unwrap().id();
    // The threads that read the TUN.
    let readers = if queue_threads == 1 { "wg-q" } else { "wg-tun" };
    let tun_threads = thread_reads(pid, readers);
    assert_eq!(tun_threads.len(), QUEUES, "one TUN thread per queue: {tun_threads:?}");
    let (udp_threads, other) = if queue_threads == 1 { (0, "wg-tun") } else { (QUEUES, "wg-q") };
    assert_eq!(thread_reads(pid, "wg-udp").len(), udp_threads, "UDP threads of their own");
    assert!(thread_reads(pid, other).is_empty(), "no {other} threads");
    // One socket per queue, all on the WireGuard port.
    let sockets = ok_in(&bed.hosts[0].ns, &["ss", "-Hulpn", &format!("sport = :{WG_PORT}")]);
    assert_eq!(sockets.lines().count(), QUEUES, "UDP sockets on the port: {sockets}");
    // To each peer in turn: all its flows' TUN reads on one queue (the
    // peer's traffic stays on the queue whose socket receives it).
    for to in [1, 2] {
        let before = thread_reads(pid, readers);
        tcp_flows_arrive_intact(&bed, 0, to, FLOWS, BYTES_PER_FLOW);
        let after = thread_reads(pid, readers);
        let moved: Vec<u64> = after.iter().zip(&before).map(|((_, a), (_, b))| a - b).collect();
        assert!(moved.iter().sum::<u64>() >= (FLOWS * BYTES_PER_FLOW) as u64, "the TUN reads were counted: {moved:?}");
        let busy = moved.iter().filter(|&&m| m > (BYTES_PER_FLOW as u64) / 2).count();
        assert_eq!(busy, 1, "host {to}'s flows stayed on one queue: {before:?} -> {after:?}");
    }
}

/// Two hosts with a workload each on the default subnet, the first pinging the second.
fn two_hosts_that_ping() -> Bed {
    let mut bed = Bed::with_hosts(2);
    for i in 0..2 {
        bed.wait_peers(i, 1);
        bed.add_workload(i, "default");
    }
    bed.wait_ping(0, 1, Duration::from_secs(15));
    bed
}

/// The `read` system calls (`syscr` of /proc/PID/task/TID/io) of the thread
/// of `pid` named `comm`: its TUN reads (socket `recvmsg` do not count).
fn read_calls(pid: u32, comm: &str) -> u64 {
    match thread_io(pid, comm, "syscr").as_slice() {
        [(name, calls)] if name == comm => *calls,
        other => panic!("one thread {comm} in {pid}: {other:?}"),
    }
}

/// One ping's round trip through two agents (one queue, one thread each:
/// `wg-q0`) reads the TUN five times: on the request's host the request
/// and the read that finds the TUN empty, and the read right after writing
/// the answer (what a workload answers inside a TUN write is read without a
/// wait; here nothing); on the other host the request's write is followed
/// by the read of the answer and the one that finds the TUN empty. A loop
/// that read both descriptors again after every turn, or read the TUN when
/// `poll` had woken it for the socket, made seven or eight. The least of three
/// windows of 40 pings (the hosts' own IPv6 chatter on `wvtun0` adds reads).
#[test]
#[ignore = "needs root: network namespaces"]
fn a_ping_costs_the_packet_threads_no_needless_tun_reads() {
    const PINGS: u64 = 40;
    let bed = two_hosts_that_ping();
    for w in 0..2 {
        ok_in(&bed.workloads[w].ns, &["sysctl", "-qw", "net.ipv6.conf.ethwe.disable_ipv6=1"]);
    }
    let pids: Vec<u32> = (0..2).map(|i| bed.hosts[i].agent.as_ref().unwrap().id()).collect();
    let reads = || pids.iter().map(|&pid| read_calls(pid, "wg-q0")).sum::<u64>();
    let target = bed.workloads[1].ip.to_string();
    let mut per_ping = Vec::new();
    for _ in 0..3 {
        let before = reads();
        let out = in_ns(&bed.workloads[0].ns, &["ping", "-n", "-q", "-c", &PINGS.to_string(), "-i", "0.02", &target]);
        let after = reads();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("{PINGS} received")), "every ping answered: {text}");
        per_ping.push((after - before) as f64 / PINGS as f64);
    }
    let least = per_ping.iter().copied().fold(f64::MAX, f64::min);
    eprintln!("TUN reads per round trip through both agents: {per_ping:?}");
    assert!(least >= 2.0, "the TUN reads were counted (two packets per round trip): {per_ping:?}");
    assert!(least <= 6.0, "TUN reads per round trip through both agents: {per_ping:?} (5 expected)");
}

/// `wvtun0`'s `txqlen` and `tx_dropped` in namespace `ns`.
fn tun_queue(ns: &str) -> (u64, u64) {
    let out = ok_in(ns, &["ip", "-s", "-j", "link", "show", "wvtun0"]);
    let link = &serde_json::from_str::<serde_json::Value>(&out).unwrap()[0];
    let stats = if link["stats64"].is_null() { &link["stats"] } else { &link["stats64"] };
    (link["txqlen"].as_u64().unwrap(), stats["tx"]["dropped"].as_u64().unwrap())
}

/// The packets the kernel holds for a TUN reader that is not running (the
/// agent stopped, as a loaded host deschedules it) are its `txqueuelen`,
/// 500 by default: the agent sets 4,096, and a burst of 2,000 datagrams sent
/// while it is stopped all arrive once it runs again, none dropped at the TUN.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_burst_waits_in_the_tun_queue_while_the_agent_is_stopped() {
    const BURST: usize = 2000;
    let bed = two_hosts_that_ping();
    let ns = bed.hosts[0].ns.clone();
    let (txqlen, dropped_before) = tun_queue(&ns);
    assert_eq!(txqlen, 4096, "the agent sets the TUN's transmit queue");

    let to = SocketAddr::from((bed.workloads[1].ip, 5301));
    // Bound before anything is sent.
    let sock = in_netns(&bed.workloads[1].ns, move || UdpSocket::bind(to).unwrap()).join().unwrap();
    // The receiving workload's own buffer is not what this test is about.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20)).unwrap();
    let receiver = std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while got < BURST && sock.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    // Not Bed::signal_agent: that waits for the agent to exit.
    let agent = nix::unistd::Pid::from_raw(bed.hosts[0].agent.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGSTOP).unwrap();
    in_netns(&bed.workloads[0].ns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..BURST {
            sock.send_to(&[i as u8; 200], to).unwrap();
        }
    })
    .join()
    .unwrap();
    let (_, dropped_stopped) = tun_queue(&ns);
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGCONT).unwrap();
    let got = receiver.join().unwrap();
    assert_eq!(dropped_stopped - dropped_before, 0, "nothing dropped at the TUN while the agent was stopped");
    assert_eq!(got, BURST, "every datagram of the burst arrived");
}
