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

use super::{
    ecn,
    router::{DATAGRAM_LEAD, LEAD, Router, Sink, Table, rejected::Reason},
};

/// The kernel's limits on one UDP GSO send (and GRO receive): segments, bytes.
pub use crate::plan::kernel::{UDP_GSO_BYTES as MAX_GSO_BYTES, UDP_GSO_SEGMENTS as MAX_GSO_SEGMENTS};
/// WireGuard's framing on a data packet (header 16, tag 16) plus padding to 16.
pub const WG_GROWTH: usize = crate::plan::kernel::WIREGUARD_FRAMING + 15;

/// One encrypted datagram in the send buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encrypted {
    pub dst: SocketAddr,
    pub start: usize,
    pub len: usize,
    /// The packet's ECN field, for the datagram's outer header ([`ecn`]).
    pub ecn: u8,
}

/// The room one packet of `mtu` bytes needs in the send buffer.
pub fn stride(mtu: usize) -> usize {
    (mtu + 64 + WG_GROWTH).max(148)
}

/// Encrypts `&packets[i][LEAD..LEAD + sizes[i]]` for `i < sizes.len()`
/// (read from the TUN at offset [`LEAD`]), each [`pad`]ded within `mtu`, into
/// `buf` (at least `DATAGRAM_LEAD + sizes.len() * stride` bytes), end to
/// end from `DATAGRAM_LEAD`, and lists the datagrams in `out` (cleared first;
/// with capacity for every packet it never allocates). Packets for no peer,
/// or queued behind a handshake, are left out. The AEAD reads the room in
/// front of each packet and datagram and leaves it as it was (the previous
/// datagram's tail: [`Router::encapsulate`]), so nothing is copied.
#[allow(clippy::too_many_arguments)]
pub fn encrypt<P: AsMut<[u8]>>(
    router: &Router,
    table: &Table,
    packets: &mut [P],
    sizes: &[usize],
    mtu: usize,
    buf: &mut [u8],
    stride: usize,
    out: &mut Vec<Encrypted>,
) {
    out.clear();
    let mut cursor = DATAGRAM_LEAD;
    let mut encryptor = router.encryptor(table);
    for (packet, &size) in packets.iter_mut().zip(sizes) {
        let packet = packet.as_mut();
        let ecn = ecn::of(&packet[LEAD..]);
        let padded = LEAD + pad(&mut packet[LEAD..], size, mtu);
        let room = &mut buf[cursor - DATAGRAM_LEAD..cursor + stride];
        if let Some((dst, len)) = encryptor.encapsulate(&packet[..padded], room) {
            out.push(Encrypted { dst, start: cursor, len, ecn });
            cursor += len;
        }
    }
}

/// WireGuard pads a data message's plaintext with zeros to a multiple of 16
/// bytes, never past the tunnel's MTU (the WireGuard paper, 5.4.6; boringtun
/// leaves it to its caller, and the receiver cuts the packet back to its IP
/// length). Zeroes `packet[size..]` up to that length and returns it: the
/// buffers are reused, and what an earlier packet (for another peer, perhaps)
/// left there must not ride along. No padding where `packet` has no room.
/// It hides a packet's exact length, and saves Poly1305 a ragged last block.
pub fn pad(packet: &mut [u8], size: usize, mtu: usize) -> usize {
    let padded = size.next_multiple_of(16).min(mtu).min(packet.len()).max(size);
    if let Some(tail) = packet.get_mut(size..padded) {
        tail.fill(0);
    }
    padded
}

/// Decrypts the datagrams of one receive from `src`, `received[DATAGRAM_LEAD..]`
/// (`segment` bytes each, the last possibly shorter, their outer headers'
/// ECN field `outer`: [`ecn::decapsulate`]), into
/// `packets[count..]`, each at [`LEAD`] (which must hold the TUN's
/// virtio-net header) with at least `least` bytes of room after it (the
/// buffers' capacity must hold that: then nothing allocates). Returns the
/// new count; handshake traffic is answered through `sink`. The AEAD reads
/// the room in front of each datagram (the previous one's tail) and packet,
/// and leaves it as it was: nothing is copied ([`Router::decapsulate`]).
#[allow(clippy::too_many_arguments)]
pub fn decrypt(
    router: &Router,
    table: &Table,
    src: SocketAddr,
    outer: u8,
    received: &[u8],
    segment: usize,
    packets: &mut [Vec<u8>],
    mut count: usize,
    least: usize,
    sink: &impl Sink,
) -> usize {
    let segment = segment.max(1);
    let mut start = DATAGRAM_LEAD;
    while start < received.len() {
        let end = (start + segment).min(received.len());
        let Some(p) = packets.get_mut(count) else { break };
        // Room without zeroing what is already there (a packet's worth of
        // memset each, 0.8 % of a TCP stream's CPU): the decrypted packet
        // overwrites it, and the length is cut to that packet below.
        let room = LEAD + (end - start).max(least);
        if p.len() < room {
            p.resize(room, 0);
        } else {
            p.truncate(room);
        }
        if let Some(n) = router.decapsulate(table, src, &received[start - DATAGRAM_LEAD..end], p, sink) {
            if ecn::decapsulate(&mut p[LEAD..LEAD + n], outer) {
                p.truncate(LEAD + n);
                count += 1;
            } else {
                router.rejected.drop::<()>(Reason::EcnNotEct);
            }
        }
        start = end;
    }
    count
}

/// Splits a batch into runs that one GSO send can carry: same destination
/// and ECN field, consecutive, all the same size but the last, within the
/// kernel's limits.
/// Calls `run(first, count, bytes)` for each.
pub fn group(out: &[Encrypted], mut run: impl FnMut(usize, usize, usize)) {
    let mut i = 0;
    while i < out.len() {
        let (dst, segment, ecn) = (out[i].dst, out[i].len, out[i].ecn);
        let mut total = segment;
        let mut j = i + 1;
        while j < out.len()
            && out[j].dst == dst
            && out[j].ecn == ecn
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_zeroes_up_to_a_multiple_of_16_within_the_mtu_and_the_buffer() {
        let fresh = || vec![0xaa_u8; 1500];
        // (size, mtu) -> padded length
        for (size, mtu, want) in [
            (1370, 1420, 1376),
            (1376, 1420, 1376),
            (1415, 1420, 1420), // capped at the MTU, not 1424
            (1420, 1420, 1420),
            (1, 1420, 16),
            (0, 1420, 0),
            (1430, 1420, 1430), // longer than the MTU: left alone
        ] {
            let mut p = fresh();
            assert_eq!(pad(&mut p, size, mtu), want, "size {size} mtu {mtu}");
            assert!(p[size.min(want)..want].iter().all(|&b| b == 0), "pad bytes zeroed ({size})");
            assert!(p[want..].iter().all(|&b| b == 0xaa), "nothing past the pad touched ({size})");
            assert!(p[..size].iter().all(|&b| b == 0xaa), "the packet itself untouched ({size})");
        }
        // A buffer without room for the pad: as long as the buffer.
        let mut short = vec![0xaa_u8; 1372];
        assert_eq!(pad(&mut short, 1370, 1420), 1372);
        assert_eq!(&short[1370..], &[0, 0]);
    }

    #[test]
    fn runs_for_gso_break_at_a_new_peer_a_short_datagram_and_the_segment_limit() {
        let a: SocketAddr = "192.0.2.1:6784".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:6784".parse().unwrap();
        let mut out = Vec::new();
        let mut start = 0;
        let mut push = |dst, len, ecn| {
            out.push(Encrypted { dst, start, len, ecn });
            start += len;
        };
        // a: 3 full + 1 short; then a again (new run: the short one ended it);
        // b: 70 full (split at 64); then b's ECT(0) packets (a run of their own).
        for len in [100, 100, 100, 60, 100] {
            push(a, len, ecn::NOT_ECT);
        }
        for _ in 0..70 {
            push(b, 100, ecn::NOT_ECT);
        }
        for e in [ecn::ECT0, ecn::ECT0, ecn::CE, ecn::ECT0] {
            push(b, 100, e);
        }
        let mut runs = Vec::new();
        group(&out, |first, n, bytes| runs.push((out[first].dst, n, bytes, out[first].ecn)));
        let (not, ect0, ce) = (ecn::NOT_ECT, ecn::ECT0, ecn::CE);
        let want = [(a, 4, 360, not), (a, 1, 100, not), (b, 64, 6400, not), (b, 6, 600, not)];
        let want = [&want[..], &[(b, 2, 200, ect0), (b, 1, 100, ce), (b, 1, 100, ect0)]].concat();
        assert_eq!(runs, want);
    }
}
