//! `--queues 4`: a multi-queue TUN with one UDP socket per queue on the
//! shared port (SO_REUSEPORT) and a thread pair each. Workloads on three
//! hosts reach each other; 16 parallel TCP flows arrive intact and in order
//! (a hash of every byte), and the TUN reads of the sending agent were spread
//! over more than one queue's thread.
mod common;

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::*;
use sha2::{Digest, Sha256};

const QUEUES: usize = 4;
const FLOWS: usize = 16;
const BYTES_PER_FLOW: usize = 2 << 20;

/// Per thread of `pid` named `prefix<N>`: the bytes its `read` calls returned
/// (`rchar` of /proc/PID/task/TID/io; TUN reads count there, socket
/// `recvmsg` does not).
fn thread_reads(pid: u32, prefix: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
        if !comm.starts_with(prefix) {
            continue;
        }
        let io = fs::read_to_string(dir.join("io")).unwrap_or_default();
        let rchar = io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        out.push((comm, rchar));
    }
    out.sort();
    out
}

/// The pattern flow `f` sends.
fn data(f: usize) -> Vec<u8> {
    let mut x = (f as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..BYTES_PER_FLOW)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn four_queues_carry_parallel_flows_intact() {
    let mut bed = Bed::new();
    bed.agent_args = vec!["--queues".into(), QUEUES.to_string()];
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
    let tun_threads = thread_reads(pid, "wg-tun");
    assert_eq!(tun_threads.len(), QUEUES, "one TUN thread per queue: {tun_threads:?}");
    assert_eq!(thread_reads(pid, "wg-udp").len(), QUEUES, "one UDP thread per queue");
    // One socket per queue, all on the WireGuard port.
    let sockets = ok_in(&bed.hosts[0].ns, &["ss", "-Hulpn", &format!("sport = :{WG_PORT}")]);
    assert_eq!(sockets.lines().count(), QUEUES, "UDP sockets on the port: {sockets}");
    let before = thread_reads(pid, "wg-tun");

    let server_addr = SocketAddr::from((bed.workloads[1].ip, 5201));
    let server = in_netns(&bed.workloads[1].ns, move || {
        let listener = TcpListener::bind(server_addr).unwrap();
        let handles: Vec<_> = (0..FLOWS)
            .map(|_| {
                let (mut s, _) = listener.accept().unwrap();
                std::thread::spawn(move || {
                    let mut first = [0u8; 1];
                    s.read_exact(&mut first).unwrap();
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).unwrap();
                    (first[0] as usize, Sha256::digest(&rest).to_vec(), rest.len())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let clients: Vec<_> = (0..FLOWS)
        .map(|f| {
            in_netns(&bed.workloads[0].ns, move || {
                let mut s = wait_for("the receiver to listen", Duration::from_secs(10), || {
                    TcpStream::connect(server_addr).ok()
                });
                s.write_all(&[f as u8]).unwrap();
                s.write_all(&data(f)).unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let received = server.join().unwrap();
    assert_eq!(received.len(), FLOWS);
    for (f, hash, len) in received {
        assert_eq!(len, BYTES_PER_FLOW, "flow {f}: every byte arrived");
        assert_eq!(hash, Sha256::digest(data(f)).to_vec(), "flow {f}: the bytes arrived in order");
    }
    let after = thread_reads(pid, "wg-tun");
    let busy: Vec<_> = after
        .iter()
        .zip(&before)
        .filter(|((_, a), (_, b))| a - b > (BYTES_PER_FLOW as u64) / 2)
        .map(|((name, _), _)| name.clone())
        .collect();
    assert!(busy.len() >= 2, "the flows were spread over the queues: {before:?} -> {after:?}");
}
