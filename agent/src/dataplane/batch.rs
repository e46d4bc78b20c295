//! The crypto of one batch, without I/O and without allocating: the packet
//! threads size every buffer once when they start, and a batch only fills
//! them (`agent/tests/dataplane_alloc.rs` counts the allocations).
//!
//! - [`encrypt`]: packets read from the TUN become WireGuard datagrams laid
//!   end to end in one send buffer, each recorded as an [`Encrypted`];
//!   [`group`] then cuts them into runs that one UDP GSO send carries.
//! - [`decrypt`]: the datagrams of one UDP (GRO) receive become packets in
//!   the TUN write buffers, at the offset the virtio-net header needs.
use std::net::SocketAddr;

use super::router::{Router, Sink, Table};

/// The kernel's limit on segments in one UDP GSO send (UDP_MAX_SEGMENTS),
/// and on what one UDP GRO receive coalesces.
pub const MAX_GSO_SEGMENTS: usize = 64;
/// And on the bytes in it (one IP datagram).
pub const MAX_GSO_BYTES: usize = 65_000;
/// WireGuard's framing on a data packet (header 16, tag 16) plus padding to 16.
pub const WG_GROWTH: usize = 32 + 15;

/// One encrypted datagram in the send buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encrypted {
    pub dst: SocketAddr,
    pub start: usize,
    pub len: usize,
}

/// The room one packet of `mtu` bytes needs in the send buffer.
pub fn stride(mtu: usize) -> usize {
    (mtu + 64 + WG_GROWTH).max(148)
}

/// Encrypts `&packets[i][..sizes[i]]` for `i < sizes.len()` into `buf`
/// (at least `sizes.len() * stride` bytes), end to end, and lists the
/// datagrams in `out` (cleared first; with capacity for every packet it
/// never allocates). Packets for no peer, or queued behind a handshake, are
/// left out.
pub fn encrypt<P: AsRef<[u8]>>(
    router: &Router,
    table: &Table,
    packets: &[P],
    sizes: &[usize],
    buf: &mut [u8],
    stride: usize,
    out: &mut Vec<Encrypted>,
) {
    out.clear();
    let mut cursor = 0;
    for (packet, &size) in packets.iter().zip(sizes) {
        let room = &mut buf[cursor..cursor + stride];
        if let Some((dst, len)) = router.encapsulate(table, &packet.as_ref()[..size], room) {
            out.push(Encrypted { dst, start: cursor, len });
            cursor += len;
        }
    }
}

/// Decrypts the datagrams of one receive from `src` (`segment` bytes each,
/// the last possibly shorter) into `packets[count..]`, each at `offset` and
/// at least `least` bytes of room (the buffers' capacity must hold that:
/// then nothing allocates). Returns the new count; handshake traffic is
/// answered through `sink`.
#[allow(clippy::too_many_arguments)]
pub fn decrypt(
    router: &Router,
    table: &Table,
    src: SocketAddr,
    datagrams: &[u8],
    segment: usize,
    packets: &mut [Vec<u8>],
    mut count: usize,
    offset: usize,
    least: usize,
    sink: &impl Sink,
) -> usize {
    for d in datagrams.chunks(segment.max(1)) {
        let Some(p) = packets.get_mut(count) else { break };
        p.clear();
        p.resize(offset + d.len().max(least), 0);
        if let Some(n) = router.decapsulate(table, src, d, &mut p[offset..], sink) {
            p.truncate(offset + n);
            count += 1;
        }
    }
    count
}

/// Splits a batch into runs that one GSO send can carry: same destination,
/// consecutive, all the same size but the last, within the kernel's limits.
/// Calls `run(first, count, bytes)` for each.
pub fn group(out: &[Encrypted], mut run: impl FnMut(usize, usize, usize)) {
    let mut i = 0;
    while i < out.len() {
        let (dst, segment) = (out[i].dst, out[i].len);
        let mut total = segment;
        let mut j = i + 1;
        while j < out.len()
            && out[j].dst == dst
            && out[j - 1].len == segment
            && out[j].len <= segment
            && j - i < MAX_GSO_SEGMENTS
            && total + out[j].len <= MAX_GSO_BYTES
        {
            total += out[j].len;
            j += 1;
        }
        run(i, j - i, total);
        i = j;
    }
}

/// Which of `queues` queues a decrypted IPv4 packet is written through: a
/// hash of its addresses, protocol and (TCP/UDP, unfragmented) ports. The
/// kernel sends a flow's packets in the other direction to the TUN queue
/// that last wrote one of it (tun "automq"), so this choice also spreads the
/// outgoing flows over the queues' TUN threads, each flow on one queue.
pub fn queue_of(packet: &[u8], queues: usize) -> usize {
    if queues <= 1 || packet.len() < 20 || packet[0] >> 4 != 4 {
        return 0;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let proto = packet[9];
    let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
    let ports = match proto {
        6 | 17 if !fragment && packet.len() >= ihl + 4 => {
            u32::from_be_bytes([packet[ihl], packet[ihl + 1], packet[ihl + 2], packet[ihl + 3]])
        }
        _ => 0,
    };
    let src = u32::from_be_bytes([packet[12], packet[13], packet[14], packet[15]]);
    let dst = u32::from_be_bytes([packet[16], packet[17], packet[18], packet[19]]);
    let mut h = u64::from(src) << 32 | u64::from(dst);
    h ^= (u64::from(ports) << 8 | u64::from(proto)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    (h % queues as u64) as usize
}

/// Reorders `packets` (stably: a flow's packets keep their order) so that
/// those of each queue are together, queue 0 first; `keys[i]` is packet
/// `i`'s queue (< `counts.len()`), and `counts` returns how many each got.
/// In place: buffers are swapped, nothing is allocated.
pub fn group_by_queue<T>(packets: &mut [T], keys: &[u8], counts: &mut [usize]) {
    counts.iter_mut().for_each(|c| *c = 0);
    for &k in keys {
        counts[usize::from(k)] += 1;
    }
    // Where each queue's run starts, then each packet's final place.
    let mut next = [0usize; 256];
    let mut at = 0;
    for (q, &c) in counts.iter().enumerate() {
        next[q] = at;
        at += c;
    }
    let mut place = [0u8; 256];
    debug_assert!(packets.len() <= place.len() && keys.len() == packets.len());
    for (i, &k) in keys.iter().enumerate() {
        place[i] = next[usize::from(k)] as u8;
        next[usize::from(k)] += 1;
    }
    // Apply the permutation: move what is at `i` to `place[i]` until `i` holds its own.
    for i in 0..packets.len() {
        while usize::from(place[i]) != i {
            let j = usize::from(place[i]);
            packets.swap(i, j);
            place.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_for_gso_break_at_a_new_peer_a_short_datagram_and_the_segment_limit() {
        let a: SocketAddr = "192.0.2.1:6784".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:6784".parse().unwrap();
        let mut out = Vec::new();
        let mut start = 0;
        let mut push = |dst, len| {
            out.push(Encrypted { dst, start, len });
            start += len;
        };
        // a: 3 full + 1 short; then a again (new run: the short one ended it);
        // b: 70 full (split at 64).
        for len in [100, 100, 100, 60, 100] {
            push(a, len);
        }
        for _ in 0..70 {
            push(b, 100);
        }
        let mut runs = Vec::new();
        group(&out, |first, n, bytes| runs.push((out[first].dst, n, bytes)));
        assert_eq!(runs, vec![(a, 4, 360), (a, 1, 100), (b, 64, 6400), (b, 6, 600)]);
    }

    #[test]
    fn packets_group_by_queue_stably_in_place() {
        // (queue, sequence within the queue)
        let keys = [2u8, 0, 2, 1, 0, 2, 2, 1, 0];
        let mut seen = [0usize; 3];
        let mut packets: Vec<(u8, usize)> = keys
            .iter()
            .map(|&k| {
                seen[usize::from(k)] += 1;
                (k, seen[usize::from(k)])
            })
            .collect();
        let mut counts = [0usize; 3];
        group_by_queue(&mut packets, &keys, &mut counts);
        assert_eq!(counts, [3, 2, 4]);
        assert_eq!(packets, vec![(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (2, 4)]);
    }

    #[test]
    fn a_flow_keeps_its_queue_and_flows_spread() {
        let packet = |sport: u16, frag: bool| {
            let mut p = vec![0u8; 40];
            p[0] = 0x45;
            p[6] = if frag { 0x20 } else { 0 };
            p[9] = 6;
            p[12..16].copy_from_slice(&[10, 32, 0, 1]);
            p[16..20].copy_from_slice(&[10, 32, 0, 2]);
            p[20..22].copy_from_slice(&sport.to_be_bytes());
            p[22..24].copy_from_slice(&5201u16.to_be_bytes());
            p
        };
        assert_eq!(queue_of(&packet(40000, false), 1), 0);
        assert_eq!(queue_of(&packet(40000, false), 4), queue_of(&packet(40000, false), 4));
        let used: std::collections::BTreeSet<_> = (0..64).map(|p| queue_of(&packet(40000 + p, false), 4)).collect();
        assert_eq!(used.len(), 4, "64 flows use every queue");
        // Fragments carry no ports: all of a datagram goes one way.
        assert_eq!(queue_of(&packet(1, true), 4), queue_of(&packet(2, true), 4));
    }
}
