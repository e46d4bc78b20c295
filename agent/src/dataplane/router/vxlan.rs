//! What a peer may put inside the VXLAN datagrams it sends through the
//! tunnel. Its IPv4 unicast to workloads is routed and checked by its outer
//! source; a segment's broadcast and multicast travel as VXLAN between the
//! node addresses, and the kernel's VXLAN device hands the inner frame to
//! the bridge with no idea which host sent it. So a member host could write
//! into its VXLAN device an IPv4 broadcast or multicast claiming any
//! workload's address as its source (another host's, or one of the receiving
//! host's own), and every workload of the segment would take it from there.
use std::{net::Ipv4Addr, sync::Arc};

use super::{Peer, Table};
use crate::plan::kernel::VXLAN_PORT;

const UDP: u8 = 17;
/// UDP header, then the VXLAN header.
const UDP_HEADER: usize = 8;
const VXLAN_HEADER: usize = 8;
const ETHERNET_HEADER: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
/// IPv4's flags and fragment offset: more fragments, offset.
const MORE_FRAGMENTS: u16 = 0x2000;
const OFFSET: u16 = 0x1fff;

/// Why a VXLAN datagram from a peer is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Foreign {
    /// A frame into a segment where the peer has no workload (also what a
    /// host's first attach in a subnet sends before this host has its
    /// allocation in the map), with the IPv4 source it claims, if any.
    Segment(Option<Ipv4Addr>),
    /// A frame the peer may not send there (an IPv4 source not its own in
    /// the segment), or a datagram cut where the check cannot see.
    Source,
}

/// Whether `packet` (an IPv4 packet a peer sent from its node address: the
/// only source the host's firewall lets reach its VXLAN port) must be
/// dropped as a VXLAN datagram with a frame the peer may not send, and why:
/// `member(vni)` says whether the peer may put a frame into segment `vni`
/// (only where it hosts a workload), `may_use(vni, src)` whether an IPv4
/// frame from `src` there (its workload addresses in that segment, the
/// exposed one among them; not its node address, which lives on the TUN and
/// never speaks on a segment). An IPv4 frame from 0.0.0.0 (a host without an
/// address yet) and every other frame need membership only. So a node can put nothing
/// (ARP, IPv6, any ethertype) into a segment it has no workload in: each
/// host floods a segment's broadcast only to the peers with workloads in it
/// (`plan::reconcile`), and takes it only from them.
/// A datagram too short for the VXLAN header goes too (the kernel would
/// drop it), and so does the first fragment of a UDP datagram to the VXLAN
/// port (weave's VXLAN devices leave room in the MTU and never fragment; the
/// inner frame would otherwise hide in later fragments, past this check),
/// and a first fragment too short to hold a UDP header (whose port it would
/// hide). Other fragments carry no UDP header and pass: without their first,
/// the kernel never reassembles them.
pub(super) fn foreign_frame(
    packet: &[u8],
    member: impl Fn(u32) -> bool,
    may_use: impl Fn(u32, Ipv4Addr) -> bool,
) -> Option<Foreign> {
    if packet.len() < super::IPV4_HEADER || packet[9] != UDP {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let flags = u16::from_be_bytes([packet[6], packet[7]]);
    if flags & OFFSET != 0 {
        return None;
    }
    let Some(udp) = packet.get(ihl..ihl + UDP_HEADER) else {
        // A first fragment that cuts the UDP header; an unfragmented one
        // this short is no datagram the kernel takes.
        return (flags & MORE_FRAGMENTS != 0).then_some(Foreign::Source);
    };
    if u16::from_be_bytes([udp[2], udp[3]]) != VXLAN_PORT {
        return None;
    }
    if flags & MORE_FRAGMENTS != 0 {
        return Some(Foreign::Source);
    }
    let Some(header) = packet.get(ihl + UDP_HEADER..ihl + UDP_HEADER + VXLAN_HEADER) else {
        return Some(Foreign::Source);
    };
    let vni = u32::from_be_bytes([0, header[4], header[5], header[6]]);
    let frame = ihl + UDP_HEADER + VXLAN_HEADER;
    let at = frame + ETHERNET_HEADER + 12;
    let ipv4 = packet.get(frame + 12..frame + ETHERNET_HEADER) == Some(&ETHERTYPE_IPV4[..]);
    let src = match packet.get(at..at + 4) {
        Some(&[a, b, c, d]) if ipv4 => Some(Ipv4Addr::new(a, b, c, d)),
        _ => None,
    };
    let src = src.filter(|ip| !ip.is_unspecified());
    if !member(vni) {
        Some(Foreign::Segment(src))
    } else if src.is_some_and(|ip| !may_use(vni, ip)) {
        Some(Foreign::Source)
    } else {
        None
    }
}

impl Table {
    /// Why a decrypted IPv4 packet from `peer` (from `inner_src`) must be
    /// dropped as a VXLAN frame the peer may not send, if it must. Only a
    /// datagram from the peer's node address (the only source the host's
    /// firewall lets reach its VXLAN port) is such a frame; a workload's own
    /// VXLAN (a nested overlay) is the workload's business. A frame into a
    /// segment the peer has no workload in counts apart (a host's first
    /// attach in a subnet sends some before this host has the allocation),
    /// unless it claims another peer's address: that is forged, whatever
    /// segment it was sent into.
    pub(super) fn frame_verdict(&self, peer: &Arc<Peer>, packet: &[u8], inner_src: Ipv4Addr) -> Option<Foreign> {
        if inner_src != peer.config.address {
            return None;
        }
        let member = |vni| self.members.contains(&(vni, peer.index));
        // Only from one of its workloads in that segment.
        let may_use =
            |vni, ip| ip != peer.config.address && self.may_use(peer, ip) && self.vni_of.get(&ip) == Some(&vni);
        match foreign_frame(packet, member, may_use)? {
            Foreign::Segment(Some(ip)) if self.by_address.get(&ip).is_some_and(|p| !Arc::ptr_eq(p, peer)) => {
                Some(Foreign::Source)
            }
            verdict => Some(verdict),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 packet 10.47.0.1 -> 10.47.0.2 carrying UDP to `dport` with
    /// `payload`, fragment field `frag`.
    fn udp(dport: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 1];
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, UDP, 0, 0, 10, 47, 0, 1, 10, 47, 0, 2]);
        p.extend_from_slice(&[0x9c, 0x40]);
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// A VXLAN payload: the header, then a broadcast frame of `ethertype`
    /// carrying an IPv4 header from `src`.
    fn vxlan(ethertype: [u8; 2], src: [u8; 4]) -> Vec<u8> {
        let mut v = vec![0x08, 0, 0, 0, 0, 0, 0x2a, 0];
        v.extend_from_slice(&[0xff; 6]);
        v.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        v.extend_from_slice(&ethertype);
        v.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, UDP, 0, 0]);
        v.extend_from_slice(&src);
        v.extend_from_slice(&[255, 255, 255, 255]);
        v
    }

    /// The peer of the tests below: a member of segment 42 only, with its
    /// workload 10.32.0.1 there.
    fn check(packet: &[u8]) -> Option<Foreign> {
        foreign_frame(packet, |vni| vni == 42, |vni, ip| vni == 42 && ip == Ipv4Addr::new(10, 32, 0, 1))
    }

    #[test]
    fn a_vxlan_frame_may_carry_ipv4_only_from_the_peers_addresses() {
        let foreign = |p: &[u8]| check(p).is_some();
        assert!(!foreign(&udp(VXLAN_PORT, 0, &vxlan(ETHERTYPE_IPV4, [10, 32, 0, 1]))), "its own workload");
        assert!(!foreign(&udp(VXLAN_PORT, 0, &vxlan(ETHERTYPE_IPV4, [0, 0, 0, 0]))), "no address yet");
        assert!(foreign(&udp(VXLAN_PORT, 0, &vxlan(ETHERTYPE_IPV4, [10, 32, 0, 2]))), "another's workload");
        assert!(foreign(&udp(VXLAN_PORT, 0x4000, &vxlan(ETHERTYPE_IPV4, [10, 32, 0, 2]))), "with DF set");
        // Not IPv4 inside (ARP and tags are the bridge's rules), not VXLAN: no source to check.
        assert!(!foreign(&udp(VXLAN_PORT, 0, &vxlan([0x08, 0x06], [10, 32, 0, 2]))));
        assert!(!foreign(&udp(4790, 0, &vxlan(ETHERTYPE_IPV4, [10, 32, 0, 2]))));
        let cut = udp(VXLAN_PORT, 0, &vxlan(ETHERTYPE_IPV4, [10, 32, 0, 2]));
        assert!(!foreign(&cut[..cut.len() - 8]), "an IPv4 frame cut before its source");
        // Options in the outer header move everything.
        let mut options = udp(VXLAN_PORT, 0, &vxlan(ETHERTYPE_IPV4, [10, 32, 0, 2]));
        options[0] = 0x46;
        options.splice(20..20, [1, 1, 1, 1]);
        assert!(foreign(&options));
        let mut tcp = udp(VXLAN_PORT, 0, &vxlan(ETHERTYPE_IPV4, [10, 32, 0, 2]));
        tcp[9] = 6;
        assert!(!foreign(&tcp));
    }

    #[test]
    fn a_vxlan_frame_goes_only_into_a_segment_where_the_peer_has_a_workload() {
        let foreign = |p: &[u8]| check(p).is_some();
        let into = |vni: u32, ethertype: [u8; 2], src: [u8; 4]| {
            let mut v = vxlan(ethertype, src);
            v[4..7].copy_from_slice(&vni.to_be_bytes()[1..]);
            udp(VXLAN_PORT, 0, &v)
        };
        assert!(!foreign(&into(42, ETHERTYPE_IPV4, [10, 32, 0, 1])));
        assert!(foreign(&into(43, ETHERTYPE_IPV4, [10, 32, 0, 1])), "its own workload, in another segment");
        assert!(foreign(&into(43, ETHERTYPE_IPV4, [0, 0, 0, 0])), "from 0.0.0.0, in another segment");
        assert!(foreign(&into(0x2a_0000, ETHERTYPE_IPV4, [10, 32, 0, 1])), "the VNI's high byte counts");
        for other in [[0x86, 0xdd], [0x08, 0x06], [0x88, 0xb5]] {
            assert!(!foreign(&into(42, other, [0; 4])), "{other:x?} where it has a workload");
            assert!(foreign(&into(43, other, [0; 4])), "{other:x?} where it has none");
        }
        let whole = into(43, [0x86, 0xdd], [0; 4]);
        assert!(foreign(&whole[..20 + UDP_HEADER + 4]), "a VXLAN header cut short");
        assert!(foreign(&whole[..20 + UDP_HEADER + VXLAN_HEADER]), "a header and no frame, in another segment");
        assert!(!foreign(&into(42, [0x86, 0xdd], [0; 4])[..20 + UDP_HEADER + VXLAN_HEADER]));
        // Counted apart: not a member, against a source it may not use.
        let claimed = Some(Ipv4Addr::new(10, 32, 0, 2));
        assert_eq!(check(&into(43, ETHERTYPE_IPV4, [10, 32, 0, 2])), Some(Foreign::Segment(claimed)));
        assert_eq!(check(&into(43, [0x86, 0xdd], [10, 32, 0, 2])), Some(Foreign::Segment(None)));
        assert_eq!(check(&into(42, ETHERTYPE_IPV4, [10, 32, 0, 2])), Some(Foreign::Source));
    }

    #[test]
    fn a_first_fragment_to_the_vxlan_port_or_too_short_for_a_port_is_dropped() {
        let foreign = |p: &[u8]| foreign_frame(p, |_| true, |_, _| false).is_some();
        let frame = vxlan(ETHERTYPE_IPV4, [0, 0, 0, 0]);
        assert!(foreign(&udp(VXLAN_PORT, MORE_FRAGMENTS, &frame)), "even from 0.0.0.0: the rest is unseen");
        assert!(!foreign(&udp(53, MORE_FRAGMENTS, &frame)), "other ports' fragments pass");
        let head = udp(VXLAN_PORT, MORE_FRAGMENTS, &frame);
        assert!(foreign(&head[..24]), "a first fragment with half a UDP header");
        assert!(!foreign(&head[..24].iter().enumerate().map(|(i, b)| if i == 6 { 0 } else { *b }).collect::<Vec<_>>()));
        assert!(!foreign(&udp(VXLAN_PORT, 185, &frame)), "a later fragment has no port to read");
    }
}
