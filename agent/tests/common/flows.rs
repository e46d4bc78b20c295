//! Parallel TCP flows between two workloads, each checked byte for byte.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use sha2::{Digest, Sha256};

use super::{Bed, in_netns, wait_for};

/// The pattern flow `f` sends (`len` bytes of xorshift).
pub fn pattern(f: usize, len: usize) -> Vec<u8> {
    let mut x = (f as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `flows` parallel TCP flows of `bytes` each from workload `from` to
/// workload `to` (port 5201), each arriving whole and in order (a hash of
/// every byte).
pub fn tcp_flows_arrive_intact(bed: &Bed, from: usize, to: usize, flows: usize, bytes: usize) {
    let server_addr = SocketAddr::from((bed.workloads[to].ip, 5201));
    let server = in_netns(&bed.workloads[to].ns, move || {
        let listener = TcpListener::bind(server_addr).unwrap();
        let handles: Vec<_> = (0..flows)
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
    let clients: Vec<_> = (0..flows)
        .map(|f| {
            in_netns(&bed.workloads[from].ns, move || {
                let mut s = wait_for("the receiver to listen", Duration::from_secs(10), || {
                    TcpStream::connect(server_addr).ok()
                });
                s.write_all(&[f as u8]).unwrap();
                s.write_all(&pattern(f, bytes)).unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let received = server.join().unwrap();
    assert_eq!(received.len(), flows);
    for (f, hash, len) in received {
        assert_eq!(len, bytes, "flow {f}: every byte arrived");
        assert_eq!(hash, Sha256::digest(pattern(f, bytes)).to_vec(), "flow {f}: the bytes arrived in order");
    }
}
