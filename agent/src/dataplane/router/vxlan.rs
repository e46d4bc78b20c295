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
use crate::plan::kernel::{VXLAN_PORT, bridge_mac, link_local, workload_of_mac};

const UDP: u8 = 17;
/// UDP header, then the VXLAN header.
const UDP_HEADER: usize = 8;
const VXLAN_HEADER: usize = 8;
const ETHERNET_HEADER: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
const IPV6_HEADER: usize = 40;
/// IPv6 next headers: the extension headers a packet may put before its
/// ICMPv6 (`(length + 1) * 8` bytes each, an authentication header's
/// `(length + 2) * 4`, a fragment header's 8; the kernel skips them all).
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTHENTICATION: u8 = 51;
const DESTINATION: u8 = 60;
const ICMPV6: u8 = 58;
/// ICMPv6 types: MLD reports and done, neighbour discovery.
const MLD_REPORT: u8 = 131;
const MLD_DONE: u8 = 132;
const MLD2_REPORT: u8 = 143;
const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Extension headers walked at most; a packet with more goes.
const IPV6_CHAINED_HEADERS: usize = 8;
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
    /// A frame past the peer's storm meter (`storm.rs`).
    Storm,
}

/// Whether `packet` (an IPv4 packet a peer sent from its node address: the
/// only source the host's firewall lets reach its VXLAN port) must be
/// dropped as a VXLAN datagram with a frame the peer may not send, and why
/// (`Err`); else, for a VXLAN datagram, its segment and its frame's
/// destination MAC (`Ok(Some)`, for the storm meter), or `Ok(None)`:
/// `member(vni)` says whether the peer may put a frame into segment `vni`
/// (only where it hosts a workload), `may_use(vni, src)` whether an IPv4
/// frame from `src` there (its workload addresses in that segment, the
/// exposed one among them; not its node address, which lives on the TUN and
/// never speaks on a segment). Every frame's source MAC must be the peer's
/// too: one of its workloads' there (`kernel::workload_mac` of an address
/// `may_use` allows), or its bridges' (a frame cut before its source MAC
/// goes). An IPv4 frame from 0.0.0.0 (a host without an address yet) and
/// every other frame need no more. So a node can put nothing
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
) -> Result<Option<(u32, &[u8])>, Foreign> {
    if packet.len() < super::IPV4_HEADER || packet[9] != UDP {
        return Ok(None);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let flags = u16::from_be_bytes([packet[6], packet[7]]);
    if flags & OFFSET != 0 {
        return Ok(None);
    }
    let Some(udp) = packet.get(ihl..ihl + UDP_HEADER) else {
        // A first fragment that cuts the UDP header; an unfragmented one
        // this short is no datagram the kernel takes.
        return if flags & MORE_FRAGMENTS != 0 { Err(Foreign::Source) } else { Ok(None) };
    };
    if u16::from_be_bytes([udp[2], udp[3]]) != VXLAN_PORT {
        return Ok(None);
    }
    if flags & MORE_FRAGMENTS != 0 {
        return Err(Foreign::Source);
    }
    let Some(header) = packet.get(ihl + UDP_HEADER..ihl + UDP_HEADER + VXLAN_HEADER) else {
        return Err(Foreign::Source);
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
        return Err(Foreign::Segment(src));
    }
    // The frame's source MAC: one of the peer's workloads' there (made from
    // its address, `kernel::workload_mac`) or its bridges' (made from its
    // node address, the datagram's source). Any other would be learned
    // behind the peer by this host's bridge and VXLAN device, and the
    // segment's frames to that MAC (a workload of another host) sent to it.
    let node = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let Some(mac) = packet.get(frame + 6..frame + 12) else { return Err(Foreign::Source) };
    let own_mac = mac == bridge_mac(node).as_slice() || workload_of_mac(mac).is_some_and(|ip| may_use(vni, ip));
    let ipv6 = packet.get(frame + 12..frame + ETHERNET_HEADER) == Some(&ETHERTYPE_IPV6[..]);
    if !own_mac || src.is_some_and(|ip| !may_use(vni, ip)) || (ipv6 && !ipv6_own(&packet[frame..], mac)) {
        Err(Foreign::Source)
    } else {
        Ok(Some((vni, &packet[frame..frame + 6])))
    }
}

/// Whether the IPv6 packet in Ethernet `frame` speaks only for the link-local
/// address of its source MAC `mac` (`kernel::link_local`, the one IPv6
/// address a workload has on its segment): its source that address, and a
/// neighbour advertisement only for it as its target. From `::` only what a
/// host sends before it has an address: a neighbour solicitation for its own
/// (duplicate address detection) and MLD reports. Else a member could tell
/// a segment's workloads that another's address is at its own workload's
/// MAC (the neighbour discovery twin of a forged ARP reply), or answer a new
/// workload's detection probe for its address. The ICMPv6 header is found
/// past hop-by-hop, routing, destination and authentication headers and a
/// first fragment's header, as the kernel finds it; a later fragment has
/// none to check. A packet cut before what must be checked is not its own.
fn ipv6_own(frame: &[u8], mac: &[u8]) -> bool {
    let Some(header) = frame.get(ETHERNET_HEADER..ETHERNET_HEADER + IPV6_HEADER) else { return false };
    let own = link_local(mac).octets();
    let unspecified = header[8..24] == [0; 16];
    if header[8..24] != own && !unspecified {
        return false;
    }
    let (mut next, mut at) = (header[6], ETHERNET_HEADER + IPV6_HEADER);
    for _ in 0..IPV6_CHAINED_HEADERS {
        if !matches!(next, HOP_BY_HOP | ROUTING | DESTINATION | AUTHENTICATION | FRAGMENT) {
            break;
        }
        let Some(&[following, length, offset_high, offset_low]) = frame.get(at..at + 4) else { return false };
        let length = usize::from(length);
        at += match next {
            AUTHENTICATION => (length + 2) * 4,
            // A later fragment: no header of its own to check.
            FRAGMENT if u16::from_be_bytes([offset_high, offset_low]) & !7 != 0 => return !unspecified,
            FRAGMENT => 8,
            _ => (length + 1) * 8,
        };
        next = following;
    }
    let target = |at: usize| frame.get(at + 8..at + 24) == Some(&own[..]);
    match (next, frame.get(at)) {
        (HOP_BY_HOP | ROUTING | DESTINATION | AUTHENTICATION | FRAGMENT, _) => false,
        (ICMPV6, Some(&NEIGHBOUR_ADVERTISEMENT)) => !unspecified && target(at),
        (ICMPV6, Some(&NEIGHBOUR_SOLICITATION)) if unspecified => target(at),
        (ICMPV6, Some(&(MLD_REPORT | MLD_DONE | MLD2_REPORT))) => true,
        (ICMPV6, None) => false,
        _ => !unspecified,
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
    /// A frame it may send is metered (`limit`: `--broadcast-limit`).
    pub(super) fn frame_verdict(
        &self,
        peer: &Arc<Peer>,
        packet: &[u8],
        inner_src: Ipv4Addr,
        limit: u32,
    ) -> Option<Foreign> {
        if inner_src != peer.config.address {
            return None;
        }
        let member = |vni| self.members.contains(&(vni, peer.index));
        // Only from one of its workloads in that segment.
        let may_use =
            |vni, ip| ip != peer.config.address && self.may_use(peer, ip) && self.vni_of.get(&ip) == Some(&vni);
        match foreign_frame(packet, member, may_use) {
            Err(Foreign::Segment(Some(ip))) if self.by_address.get(&ip).is_some_and(|p| !Arc::ptr_eq(p, peer)) => {
                Some(Foreign::Source)
            }
            Err(verdict) => Some(verdict),
            Ok(None) => None,
            Ok(Some((vni, dst))) => {
                let workloads = self.workloads.get(&(vni, peer.index)).copied().unwrap_or(0);
                (!peer.storm.admit(vni, dst, workloads, limit, std::time::Instant::now())).then_some(Foreign::Storm)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::kernel::workload_mac;

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
    /// from the MAC of the peer's workload 10.32.0.1, carrying an IPv4
    /// header from `src`.
    fn vxlan(ethertype: [u8; 2], src: [u8; 4]) -> Vec<u8> {
        vxlan_from(&workload_mac(Ipv4Addr::new(10, 32, 0, 1)), ethertype, src)
    }

    /// The same from source MAC `mac`.
    fn vxlan_from(mac: &[u8], ethertype: [u8; 2], src: [u8; 4]) -> Vec<u8> {
        let mut v = vec![0x08, 0, 0, 0, 0, 0, 0x2a, 0];
        v.extend_from_slice(&[0xff; 6]);
        v.extend_from_slice(mac);
        v.extend_from_slice(&ethertype);
        if ethertype == ETHERTYPE_IPV6 {
            // From the MAC's link-local address, to all nodes, a UDP header.
            v.extend_from_slice(&ipv6(link_local(mac).octets(), UDP, &[0; 8]));
            return v;
        }
        v.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, UDP, 0, 0]);
        v.extend_from_slice(&src);
        v.extend_from_slice(&[255, 255, 255, 255]);
        v
    }

    /// An IPv6 packet from `src` to ff02::1 with next header `next`.
    fn ipv6(src: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 255]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&"ff02::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(payload);
        p
    }

    /// The peer of the tests below: a member of segment 42 only, with its
    /// workload 10.32.0.1 there.
    fn check(packet: &[u8]) -> Option<Foreign> {
        foreign_frame(packet, |vni| vni == 42, |vni, ip| vni == 42 && ip == Ipv4Addr::new(10, 32, 0, 1)).err()
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
        let own = into(42, [0x88, 0xb5], [0; 4]);
        assert!(foreign(&own[..20 + UDP_HEADER + VXLAN_HEADER]), "a header and no frame");
        assert!(foreign(&own[..20 + UDP_HEADER + VXLAN_HEADER + 11]), "a frame cut in its source MAC");
        assert!(!foreign(&own[..20 + UDP_HEADER + VXLAN_HEADER + 12]), "a frame cut after it");
        // Counted apart: not a member, against a source it may not use.
        let claimed = Some(Ipv4Addr::new(10, 32, 0, 2));
        assert_eq!(check(&into(43, ETHERTYPE_IPV4, [10, 32, 0, 2])), Some(Foreign::Segment(claimed)));
        assert_eq!(check(&into(43, [0x86, 0xdd], [10, 32, 0, 2])), Some(Foreign::Segment(None)));
        assert_eq!(check(&into(42, ETHERTYPE_IPV4, [10, 32, 0, 2])), Some(Foreign::Source));
    }

    #[test]
    fn a_vxlan_frame_comes_only_from_the_peers_own_macs() {
        // The peer's node address is the datagram's source (`udp`).
        let node = Ipv4Addr::new(10, 47, 0, 1);
        let from =
            |mac: &[u8], ethertype: [u8; 2], src: [u8; 4]| check(&udp(VXLAN_PORT, 0, &vxlan_from(mac, ethertype, src)));
        let ipv6 = [0x86, 0xdd];
        let own = workload_mac(Ipv4Addr::new(10, 32, 0, 1));
        for ethertype in [ipv6, ETHERTYPE_IPV4, [0x88, 0xb5]] {
            assert_eq!(from(&own, ethertype, [10, 32, 0, 1]), None, "its workload's MAC");
            assert_eq!(from(&bridge_mac(node), ethertype, [0; 4]), None, "its bridges' MAC");
            let theirs = workload_mac(Ipv4Addr::new(10, 32, 0, 2));
            assert_eq!(from(&theirs, ethertype, [0; 4]), Some(Foreign::Source), "another's workload's MAC");
            let other_bridge = bridge_mac(Ipv4Addr::new(10, 47, 0, 2));
            assert_eq!(from(&other_bridge, ethertype, [0; 4]), Some(Foreign::Source), "another host's bridges' MAC");
            assert_eq!(
                from(&[0x02, 0, 0, 0, 0, 1], ethertype, [0; 4]),
                Some(Foreign::Source),
                "a MAC weave never made"
            );
            assert_eq!(
                from(&workload_mac(node), ethertype, [0; 4]),
                Some(Foreign::Source),
                "made from its node address"
            );
        }
        // Its own MAC does not make another's address its own, nor the other way.
        assert_eq!(from(&own, ETHERTYPE_IPV4, [10, 32, 0, 2]), Some(Foreign::Source));
        let theirs = workload_mac(Ipv4Addr::new(10, 32, 0, 2));
        assert_eq!(from(&theirs, ETHERTYPE_IPV4, [10, 32, 0, 1]), Some(Foreign::Source));
        // A workload MAC of the peer's from another segment does not pass here.
        let elsewhere = |vni, ip| {
            (vni == 42 && ip == Ipv4Addr::new(10, 32, 0, 1)) || (vni == 43 && ip == Ipv4Addr::new(10, 33, 0, 1))
        };
        let other_segment = udp(VXLAN_PORT, 0, &vxlan_from(&workload_mac(Ipv4Addr::new(10, 33, 0, 1)), ipv6, [0; 4]));
        assert_eq!(foreign_frame(&other_segment, |_| true, elsewhere).err(), Some(Foreign::Source));
    }

    #[test]
    fn ipv6_from_a_peer_speaks_only_for_its_macs_link_local_address() {
        let node = Ipv4Addr::new(10, 47, 0, 1);
        let (own, bridge) = (workload_mac(Ipv4Addr::new(10, 32, 0, 1)), bridge_mac(node));
        let theirs = link_local(&workload_mac(Ipv4Addr::new(10, 32, 0, 2))).octets();
        // A frame from `mac` carrying `packet`, through `check`.
        let sent = |mac: &[u8], packet: Vec<u8>| {
            let mut v = vxlan_from(mac, [0x88, 0xb5], [0; 4]);
            v.truncate(VXLAN_HEADER + 12);
            v.extend_from_slice(&ETHERTYPE_IPV6);
            v.extend_from_slice(&packet);
            check(&udp(VXLAN_PORT, 0, &v))
        };
        let ll = |mac: &[u8]| link_local(mac).octets();
        let advert = |target: [u8; 16]| [&[NEIGHBOUR_ADVERTISEMENT, 0, 0, 0, 0x20, 0, 0, 0][..], &target].concat();
        for mac in [&own, &bridge] {
            assert_eq!(sent(mac, ipv6(ll(mac), UDP, &[0; 8])), None, "from its link-local address");
            let solicit = |target: [u8; 16]| [&[NEIGHBOUR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0][..], &target].concat();
            assert_eq!(sent(mac, ipv6([0; 16], ICMPV6, &solicit(ll(mac)))), None, "from :: (DAD)");
            assert_eq!(sent(mac, ipv6([0; 16], ICMPV6, &solicit(theirs))), Some(Foreign::Source), "DAD for another");
            assert_eq!(sent(mac, ipv6([0; 16], ICMPV6, &[MLD2_REPORT, 0, 0, 0])), None, "an MLD report from ::");
            assert_eq!(sent(mac, ipv6([0; 16], UDP, &[0; 8])), Some(Foreign::Source), "UDP from ::");
            assert_eq!(sent(mac, ipv6([0; 16], ICMPV6, &[128, 0, 0, 0])), Some(Foreign::Source), "a ping from ::");
            let from_nothing = ipv6([0; 16], ICMPV6, &advert(ll(mac)));
            assert_eq!(sent(mac, from_nothing), Some(Foreign::Source), "an advertisement from ::");
            assert_eq!(sent(mac, ipv6(theirs, UDP, &[0; 8])), Some(Foreign::Source), "from another's");
            assert_eq!(sent(mac, ipv6(ll(mac), ICMPV6, &advert(ll(mac)))), None, "advertising itself");
            assert_eq!(sent(mac, ipv6(ll(mac), ICMPV6, &advert(theirs))), Some(Foreign::Source), "another");
        }
        // Behind extension headers the kernel walks.
        let behind = |first: u8, then: u8, body: &[u8]| {
            ipv6(ll(&own), first, &[&[then, 0, 0, 0, 0, 0, 0, 0][..], body].concat())
        };
        for first in [HOP_BY_HOP, DESTINATION, ROUTING] {
            assert_eq!(sent(&own, behind(first, ICMPV6, &advert(ll(&own)))), None, "{first}: itself");
            assert_eq!(sent(&own, behind(first, ICMPV6, &advert(theirs))), Some(Foreign::Source), "{first}: another");
            assert_eq!(sent(&own, behind(first, ICMPV6, &advert(theirs)[..20])), Some(Foreign::Source), "{first}: cut");
        }
        let longer = ipv6(ll(&own), HOP_BY_HOP, &[&[ICMPV6, 1][..], &[0; 14], &advert(theirs)].concat());
        assert_eq!(sent(&own, longer), Some(Foreign::Source), "past a 16-byte hop-by-hop header");
        // `n` destination headers, the last before ICMPv6.
        let chained = |n: usize, target: [u8; 16]| {
            let mut chain = [&[ICMPV6, 0, 0, 0, 0, 0, 0, 0][..], &advert(target)].concat();
            for _ in 1..n {
                chain = [&[DESTINATION, 0, 0, 0, 0, 0, 0, 0][..], &chain].concat();
            }
            ipv6(ll(&own), DESTINATION, &chain)
        };
        assert_eq!(sent(&own, chained(IPV6_CHAINED_HEADERS, ll(&own))), None, "as many headers as are walked");
        assert_eq!(sent(&own, chained(IPV6_CHAINED_HEADERS, theirs)), Some(Foreign::Source));
        let too_many = chained(IPV6_CHAINED_HEADERS + 1, ll(&own));
        assert_eq!(sent(&own, too_many), Some(Foreign::Source), "too many headers");
        // A first fragment carries the header; a later one has none.
        assert_eq!(sent(&own, behind(FRAGMENT, ICMPV6, &advert(theirs))), Some(Foreign::Source), "first fragment");
        assert_eq!(sent(&own, behind(FRAGMENT, ICMPV6, &advert(ll(&own)))), None);
        let later = ipv6(ll(&own), FRAGMENT, &[&[ICMPV6, 0, 0, 0x08, 0, 0, 0, 1][..], &advert(theirs)].concat());
        assert_eq!(sent(&own, later), None, "a later fragment");
        // Past an authentication header (length in 4-byte words, less 2: 12 bytes here).
        let ah = |target| [&[ICMPV6, 1][..], &[0; 10], &advert(target)].concat();
        assert_eq!(sent(&own, ipv6(ll(&own), AUTHENTICATION, &ah(theirs))), Some(Foreign::Source), "behind AH");
        assert_eq!(sent(&own, ipv6(ll(&own), AUTHENTICATION, &ah(ll(&own)))), None);
        assert_eq!(sent(&own, ipv6(ll(&own), UDP, &[0; 8])[..39].to_vec()), Some(Foreign::Source), "a cut header");
        assert_eq!(sent(&own, ipv6(ll(&own), ICMPV6, &[])), Some(Foreign::Source), "no ICMPv6 type");
    }

    #[test]
    fn a_first_fragment_to_the_vxlan_port_or_too_short_for_a_port_is_dropped() {
        let foreign = |p: &[u8]| foreign_frame(p, |_| true, |_, _| false).is_err();
        let frame = vxlan(ETHERTYPE_IPV4, [0, 0, 0, 0]);
        assert!(foreign(&udp(VXLAN_PORT, MORE_FRAGMENTS, &frame)), "even from 0.0.0.0: the rest is unseen");
        assert!(!foreign(&udp(53, MORE_FRAGMENTS, &frame)), "other ports' fragments pass");
        let head = udp(VXLAN_PORT, MORE_FRAGMENTS, &frame);
        assert!(foreign(&head[..24]), "a first fragment with half a UDP header");
        assert!(!foreign(&head[..24].iter().enumerate().map(|(i, b)| if i == 6 { 0 } else { *b }).collect::<Vec<_>>()));
        assert!(!foreign(&udp(VXLAN_PORT, 185, &frame)), "a later fragment has no port to read");
    }
}
