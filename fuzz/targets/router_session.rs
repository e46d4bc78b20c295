//! The router with a real session (agent/src/dataplane/router.rs): two
//! routers with fixed keys, and a script of operations decoded from the
//! input: deliver (optionally corrupted) what one sent to the other from
//! any source, replay an earlier datagram, have either side encrypt a packet
//! with chosen inner addresses, inject raw bytes, run timers, change the
//! peer table. The handshake is the fuzzer's to complete (or not), so it
//! reaches the data path: decryption, the inner-source check, roaming.
//! Invariants: no panic; whatever a router decrypts is a packet the other
//! side's TUN handed it (never forged or corrupted bytes), from an inner source
//! that peer owns; no datagram decrypts twice (replays are dropped).

#[path = "common/router.rs"]
mod common;

use std::{collections::HashMap, net::Ipv4Addr};

use common::{Node, config, drain, ipv4, node, receive, send, source};
use weave_agent::dataplane::router::BUF_SIZE;

struct Side<'a> {
    me: &'a Node,
    other: &'a Node,
    /// Datagrams on the wire toward `other`, oldest first.
    pending: Vec<Vec<u8>>,
    /// Plaintexts `me` encrypted: what `other` may decrypt.
    plaintexts: Vec<Vec<u8>>,
}

/// The inner addresses of a packet one side sends, picked by a byte.
fn addresses(b: u8, me: &Node, other: &Node) -> (Ipv4Addr, Ipv4Addr) {
    let src = [me.addr, me.workload, other.addr, Ipv4Addr::new(10, 47, 0, 99)][(b & 3) as usize];
    let dst = [other.addr, other.workload, me.addr, Ipv4Addr::new(10, 32, 0, 99)][((b >> 2) & 3) as usize];
    (src, dst)
}

pub fn run(data: &[u8]) {
    let Some((&setup, mut script)) = data.split_first() else { return };
    let (a, b) = (node(1), node(2));
    // Who knows whose endpoint decides who initiates.
    a.router.set_peers(&[config(&b, Some(b.endpoint))], &a.wire);
    b.router.set_peers(&[config(&a, (setup & 1 == 1).then_some(a.endpoint))], &b.wire);
    let mut sides = [
        Side { me: &a, other: &b, pending: Vec::new(), plaintexts: Vec::new() },
        Side { me: &b, other: &a, pending: Vec::new(), plaintexts: Vec::new() },
    ];
    let mut history: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut decrypted: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut steps = 0;
    while let [op, arg, rest @ ..] = script {
        let (op, arg) = (*op, *arg);
        script = rest;
        steps += 1;
        if steps > 64 {
            break;
        }
        // Control messages each side sent go onto its wire.
        for s in sides.iter_mut() {
            s.pending.extend(drain(s.me).into_iter().map(|(_, d)| d));
        }
        let from = (op & 1) as usize;
        let to = 1 - from;
        let mut deliver = |datagram: Vec<u8>, src_byte: u8, sides: &mut [Side<'_>; 2]| {
            history.push((from, datagram.clone()));
            if let Some(plain) = receive(sides[to].me, source(src_byte), &datagram) {
                let sender = sides[to].other;
                let src = Ipv4Addr::new(plain[12], plain[13], plain[14], plain[15]);
                assert!(src == sender.addr || src == sender.workload, "decrypted a packet from a foreign source {src}");
                assert!(
                    sides[from].plaintexts.iter().any(|p| p.starts_with(&plain)),
                    "decrypted bytes the peer never sent"
                );
                let n = decrypted.entry(datagram).or_default();
                *n += 1;
                assert_eq!(*n, 1, "a datagram decrypted twice (replay)");
            }
        };
        match op >> 1 & 7 {
            // Deliver the oldest pending datagram, maybe with one byte changed.
            0 | 1 => {
                if sides[from].pending.is_empty() {
                    continue;
                }
                let mut d = sides[from].pending.remove(0);
                if op & 0x10 != 0 && !d.is_empty() {
                    let i = arg as usize % d.len();
                    d[i] ^= 1 << (arg % 8) | 1;
                }
                deliver(d, if op & 0x20 != 0 { arg } else { from as u8 }, &mut sides);
            }
            // Encrypt a packet with chosen inner addresses and deliver it.
            2 | 3 => {
                let len = (rest.first().copied().unwrap_or(0) as usize).min(rest.len().saturating_sub(1));
                let payload = rest.get(1..1 + len).unwrap_or_default();
                script = &rest[(1 + len).min(rest.len())..];
                let (src, dst) = addresses(arg, sides[from].me, sides[from].other);
                let packet = ipv4(src, dst, 17, payload);
                // Handed to the router, it may leave later even if not now
                // (queued during a handshake, or held until an endpoint is known).
                sides[from].plaintexts.push(packet.clone());
                if let Some((_, d)) = send(sides[from].me, &packet) {
                    deliver(d, if op & 0x20 != 0 { arg } else { from as u8 }, &mut sides);
                }
            }
            // Replay an earlier datagram (either direction) from any source.
            4 => {
                if history.is_empty() {
                    continue;
                }
                let (dir, d) = history[arg as usize % history.len()].clone();
                let target = sides[1 - dir].me;
                if let Some(plain) = receive(target, source(arg >> 2), &d) {
                    // Only a datagram that never decrypted may decrypt now (it was queued, then lost).
                    let n = decrypted.entry(d).or_default();
                    *n += 1;
                    assert_eq!(*n, 1, "a replayed datagram decrypted again");
                    let _ = plain;
                }
            }
            // Raw bytes as a datagram.
            5 => {
                let len = (arg as usize).min(rest.len());
                let d = rest[..len].to_vec();
                script = &rest[len..];
                assert!(receive(sides[to].me, source(op >> 4), &d).is_none(), "raw bytes decrypted");
            }
            // Timers.
            6 => {
                let mut buf = vec![0u8; BUF_SIZE];
                sides[from].me.router.tick(&mut buf, &sides[from].me.wire);
                if arg & 1 == 1 {
                    sides[from].me.router.reset_rate_limit();
                }
            }
            // The peer table changes: the other side's workloads move away, or come back.
            _ => {
                let me = sides[from].me;
                let mut peer = config(sides[from].other, (arg & 1 == 1).then_some(sides[from].other.endpoint));
                if arg & 2 == 2 {
                    peer.routes.clear();
                }
                me.router.set_peers(&[peer], &me.wire);
            }
        }
        let _ = (a.router.status(), b.router.status());
    }
}
