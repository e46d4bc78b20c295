//! Explicit Congestion Notification through the tunnel (RFC 6040, normal
//! mode), as the kernel's tunnels and WireGuard carry it.
//!
//! - Sending: each datagram's outer ECN field is its packet's (Not-ECT,
//!   ECT(0), ECT(1), CE), set per send (`IP_TOS` / `IPV6_TCLASS`); runs of
//!   one GSO send share one field ([`super::batch::group`]). Nothing else of
//!   the packet's traffic class leaves: the outer DSCP stays 0, so the
//!   underlay learns no more than it needs to mark congestion.
//! - Receiving: the outer field (`IP_RECVTOS` / `IPV6_RECVTCLASS`; one GRO
//!   receive shares one, as the kernel coalesces only equal headers) is
//!   folded into the decrypted packet by [`combine`]: a router on the
//!   underlay that marked the datagram CE marks the packet CE, and the
//!   workload's TCP slows down instead of losing a packet. A CE mark on a
//!   packet whose sender does not do ECN is a drop, as RFC 6040 says
//!   (`weave_tunnel_rejected_total{reason="ecn_not_ect"}`).
//!
//! Without it (until 2026-12-08) every datagram left Not-ECT: routers on
//! the underlay could only drop, and a DCTCP or L4S sender in a workload
//! never saw a mark.
//!
//! The outer header is not authenticated (WireGuard's AEAD covers the
//! payload): a router on the path can mark or drop the datagrams it
//! carries, as it could drop them; nobody off the path can.

pub const NOT_ECT: u8 = 0b00;
pub const ECT1: u8 = 0b01;
pub const ECT0: u8 = 0b10;
pub const CE: u8 = 0b11;

/// The ECN field of an IPv4 packet; Not-ECT for anything else (the overlay
/// carries IPv4 only).
pub fn of(packet: &[u8]) -> u8 {
    match packet {
        [first, tos, ..] if first >> 4 == 4 => tos & 0b11,
        _ => NOT_ECT,
    }
}

/// RFC 6040's decapsulation (its figure 4): the inner field given the
/// inner and outer ones; `None`: drop the packet.
pub fn combine(inner: u8, outer: u8) -> Option<u8> {
    match (inner & 0b11, outer & 0b11) {
        (NOT_ECT, CE) => None,
        (NOT_ECT, _) => Some(NOT_ECT),
        (_, CE) => Some(CE),
        (ECT0, ECT1) => Some(ECT1),
        (inner, _) => Some(inner),
    }
}

/// Folds the outer ECN field into a decrypted IPv4 `packet` ([`combine`]),
/// mending its header checksum; false: it is to be dropped. Anything that is
/// not an IPv4 packet with a whole header is left as it is.
pub fn decapsulate(packet: &mut [u8], outer: u8) -> bool {
    if outer & 0b11 == NOT_ECT {
        return true;
    }
    let header = match packet.first() {
        Some(first) if first >> 4 == 4 => usize::from(first & 0x0f) * 4,
        _ => return true,
    };
    if header < 20 || packet.len() < header {
        return true;
    }
    let inner = packet[1] & 0b11;
    let Some(new) = combine(inner, outer) else { return false };
    if new != inner {
        let old_word = u16::from_be_bytes([packet[0], packet[1]]);
        packet[1] = (packet[1] & !0b11) | new;
        let new_word = u16::from_be_bytes([packet[0], packet[1]]);
        // RFC 1624: HC' = ~(~HC + ~m + m').
        let checksum = u16::from_be_bytes([packet[10], packet[11]]);
        let mut sum = u32::from(!checksum) + u32::from(!old_word) + u32::from(new_word);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        packet[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 header checksum computed whole.
    fn checksum(header: &[u8]) -> u16 {
        let mut sum: u32 = header
            .chunks(2)
            .enumerate()
            .filter(|(i, _)| *i != 5)
            .map(|(_, w)| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn packet(tos: u8, options: usize) -> Vec<u8> {
        let header = 20 + options;
        let mut p = vec![0u8; header + 8];
        p[0] = 0x40 | (header / 4) as u8;
        p[1] = tos;
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 32, 0, 1]);
        p[16..20].copy_from_slice(&[10, 32, 0, 2]);
        for (i, b) in p[20..header].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        let c = checksum(&p[..header]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn rfc_6040_figure_4() {
        // Rows: inner Not-ECT, ECT(0), ECT(1), CE; columns: outer the same.
        let want = [
            [Some(NOT_ECT), Some(NOT_ECT), Some(NOT_ECT), None],
            [Some(ECT0), Some(ECT0), Some(ECT1), Some(CE)],
            [Some(ECT1), Some(ECT1), Some(ECT1), Some(CE)],
            [Some(CE), Some(CE), Some(CE), Some(CE)],
        ];
        let order = [NOT_ECT, ECT0, ECT1, CE];
        for (i, inner) in order.iter().enumerate() {
            for (o, outer) in order.iter().enumerate() {
                assert_eq!(combine(*inner, *outer), want[i][o], "inner {inner:02b} outer {outer:02b}");
            }
        }
    }

    #[test]
    fn a_mark_keeps_the_dscp_and_a_valid_checksum() {
        for dscp in [0u8, 0xb8, 0x28, 0xfc] {
            for options in [0, 4, 40] {
                for (inner, outer) in [(ECT0, CE), (ECT1, CE), (ECT0, ECT1), (CE, CE), (ECT0, ECT0)] {
                    let mut p = packet(dscp | inner, options);
                    let before = p.clone();
                    assert!(decapsulate(&mut p, outer));
                    let header = 20 + options;
                    assert_eq!(p[1], dscp | combine(inner, outer).unwrap(), "{dscp:x} {inner} {outer}");
                    assert_eq!(u16::from_be_bytes([p[10], p[11]]), checksum(&p[..header]), "{dscp:x} {options}");
                    assert_eq!((&p[..1], &p[2..10], &p[12..]), (&before[..1], &before[2..10], &before[12..]));
                    assert_eq!(of(&p), p[1] & 3);
                }
            }
        }
    }

    #[test]
    fn congestion_on_a_packet_without_ecn_drops_it_and_nothing_else_is_touched() {
        let mut p = packet(0xb8, 0);
        assert!(!decapsulate(&mut p, CE));
        for outer in [NOT_ECT, ECT0, ECT1] {
            let before = p.clone();
            assert!(decapsulate(&mut p, outer));
            assert_eq!(p, before);
        }
        // Not IPv4, or a header cut short: untouched, not dropped.
        for mut other in [vec![0x60, 0x03, 0, 0], vec![0x45, 0x02, 0, 0], vec![0x4f, 0x02, 0, 0, 0, 0], vec![]] {
            let before = other.clone();
            assert!(decapsulate(&mut other, CE));
            assert_eq!(other, before);
        }
        assert_eq!(of(&[0x60, 0x03]), NOT_ECT);
        assert_eq!(of(&[0x45]), NOT_ECT);
    }
}
