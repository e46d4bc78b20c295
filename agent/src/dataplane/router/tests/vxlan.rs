//! VXLAN frames from a peer: only from its own workloads' addresses and
//! MACs, and its group frames metered at what its ports let through.
use super::*;

/// A broadcast frame in a VXLAN datagram (`from` -> `to`, port 4789)
/// carrying IPv4 from `src`.
fn vxlan_broadcast(from: Ipv4Addr, to: Ipv4Addr, src: Ipv4Addr) -> Vec<u8> {
    vxlan_broadcast_at(from, to, src, &crate::plan::kernel::workload_mac(src))
}

/// The same, the frame from source MAC `mac`.
fn vxlan_broadcast_at(from: Ipv4Addr, to: Ipv4Addr, src: Ipv4Addr, mac: &[u8]) -> Vec<u8> {
    let mut udp = vec![0x9c, 0x40, 0x12, 0xb5, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0x2a, 0];
    udp.extend_from_slice(&[0xff; 6]);
    udp.extend_from_slice(mac);
    udp.extend_from_slice(&[0x08, 0x00]);
    udp.extend_from_slice(&ipv4(src, Ipv4Addr::BROADCAST, b"in a segment"));
    ipv4(from, to, &udp)
}

#[test]
fn a_vxlan_frame_with_another_hosts_source_is_dropped() {
    let (a, b) = pair();
    assert_eq!(crate::plan::kernel::VXLAN_PORT, 0x12b5);
    let own = vxlan_broadcast(a.addr, b.addr, workload(&a));
    a.send(&own);
    deliver(&a, &b, a.endpoint);
    assert_eq!(b.wire.tun.borrow_mut().drain(..).collect::<Vec<_>>(), vec![own], "a's own workload");
    // b's own workload's address, from a: the outer source is a's, the frame's is not.
    a.send(&vxlan_broadcast(a.addr, b.addr, workload(&b)));
    deliver(&a, &b, a.endpoint);
    assert!(b.wire.tun.borrow().is_empty());
    assert_eq!(b.router.status()[0].dropped_spoofed, 1);
    // Nor a's node address: it never speaks on a segment (a frame from it
    // could carry a first fragment the tunnel then completes; a review).
    a.send(&vxlan_broadcast(a.addr, b.addr, a.addr));
    deliver(&a, &b, a.endpoint);
    assert!(b.wire.tun.borrow().is_empty());
    assert_eq!(b.router.status()[0].dropped_spoofed, 2);
    // Nor from b's workload's MAC (b's bridge would learn it behind a), even
    // with a's workload's address inside.
    let theirs = crate::plan::kernel::workload_mac(workload(&b));
    a.send(&vxlan_broadcast_at(a.addr, b.addr, workload(&a), &theirs));
    deliver(&a, &b, a.endpoint);
    assert!(b.wire.tun.borrow().is_empty());
    assert_eq!(b.router.status()[0].dropped_spoofed, 3);
    // A workload's own VXLAN to another workload (a nested overlay) carries
    // whatever its frames hold: not weave's segment (b's firewall lets only
    // peers' node addresses reach its VXLAN port).
    let nested = vxlan_broadcast(workload(&a), workload(&b), Ipv4Addr::new(10, 244, 1, 7));
    a.send(&nested);
    deliver(&a, &b, a.endpoint);
    assert_eq!(b.wire.tun.borrow_mut().drain(..).collect::<Vec<_>>(), vec![nested], "a nested overlay's");
    assert_eq!(b.router.status()[0].dropped_spoofed, 3);
}

#[test]
fn a_peers_vxlan_frames_are_metered_at_what_its_ports_let_through() {
    let (a, b) = pair();
    // a hosts one workload there: with its bridge, two ports' worth (200
    // a second), of which a fifth passes at once (and what the meter
    // refills while the loop runs: it reads the real clock).
    b.router.set_broadcast_limit(100);
    let frame = vxlan_broadcast(a.addr, b.addr, workload(&a));
    let flood = |n: usize| {
        for _ in 0..n {
            a.send(&frame);
            deliver(&a, &b, a.endpoint);
        }
        b.wire.tun.borrow_mut().drain(..).count()
    };
    let started = std::time::Instant::now();
    let passed = flood(100);
    let most = 40 + (200.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!((40..=most).contains(&passed), "{passed} of 100 at once (at most {most})");
    assert_eq!(b.router.status()[0].dropped_storm, 100 - passed as u64);
    assert_eq!(b.router.status()[0].dropped_spoofed, 0, "counted apart");
    // Unicast frames and other packets from a are not metered.
    let mut unicast = frame.clone();
    unicast[20 + 16..20 + 22].copy_from_slice(&crate::plan::kernel::workload_mac(workload(&b)));
    for _ in 0..100 {
        a.send(&unicast);
        deliver(&a, &b, a.endpoint);
    }
    assert_eq!(b.wire.tun.borrow_mut().drain(..).count(), 100, "unicast");
    let plain = ipv4(a.addr, b.addr, b"not a frame");
    for _ in 0..100 {
        a.send(&plain);
        deliver(&a, &b, a.endpoint);
    }
    assert_eq!(b.wire.tun.borrow_mut().drain(..).count(), 100);
    // No limit: all of it.
    b.router.set_broadcast_limit(0);
    assert_eq!(flood(100), 100);
}
