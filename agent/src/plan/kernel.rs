//! Names and sizes of the kernel objects the agent owns: the TUN, one bridge
//! and one VXLAN device per segment, the workload veths; their MTUs and MACs.
//! Pure: the host layer creates what these name.
use std::net::Ipv4Addr;

/// The TUN device that holds the node address.
pub const TUN_NAME: &str = "wvtun0";

/// The most segments of one TUN super-packet (the TUN's GSO limit, set by
/// the host layer): the data plane keeps this much room in a read batch.
pub const TUN_READ_ROOM: usize = 128;

/// The kernel's limits on one UDP GSO send (`UDP_MAX_SEGMENTS`; the bytes of
/// one IP datagram), which are also what one UDP GRO receive coalesces.
pub const UDP_GSO_SEGMENTS: usize = 64;
pub const UDP_GSO_BYTES: usize = 65_000;
/// WireGuard's framing of a data message: a 16-byte header, a 16-byte tag.
pub const WIREGUARD_FRAMING: usize = 32;

/// TSO segments per super-packet for a workload interface of `mtu`: as many
/// as still leave the host in one UDP GSO send once each is encrypted
/// (padded to 16 bytes, framed). At the default 1,370 that is 46; a TCP
/// stream's 64 KB super-packets of 48 segments took two sends, two GRO
/// receives and 1.4 TUN writes each on the way (bench/ROUNDS.md, "Round fifteen").
pub fn workload_gso_segments(mtu: u32) -> u32 {
    let datagram = (mtu as usize).next_multiple_of(16) + WIREGUARD_FRAMING;
    (UDP_GSO_BYTES / datagram).clamp(1, UDP_GSO_SEGMENTS) as u32
}

/// The TUN's transmit queue (`txqueuelen`: the packets the kernel holds for
/// the agent's reader, per queue; the kernel's default is 500). Packets that
/// find it full are dropped (`tx_dropped`). UDP at 500 Mbit/s is ~46,000
/// packets/s: 500 is 11 ms of a reader that is not scheduled, which a loaded
/// 2-core host exceeds often; 4,096 is ~90 ms (bench/ROUNDS.md, "Where the UDP loss is").
/// TCP is bounded far below it by its own small-queue limit.
pub const TUN_TX_QUEUE_LEN: u32 = 4096;

pub const BRIDGE_PREFIX: &str = "wvbr-";
/// Every device weave makes, as an nftables interface-name pattern: the TUN,
/// bridges, VXLAN devices, workload ports (`wv` + 8 hex digits, Docker's
/// `wvd` + id). Names starting with `wv` are weave's on a host running the agent.
pub const WEAVE_DEVICES: &str = "wv*";
pub const VXLAN_PREFIX: &str = "wvvx-";
pub const VXLAN_PORT: u16 = 4789;
/// MACs a segment's VXLAN device and its bridge learn at most (from frames
/// that crossed the tunnel). A member host writing frames with ever new
/// source MACs into its VXLAN device made every other host learn each one,
/// twice, for 300 s: kernel memory without bound on every host. Past the
/// limit a new MAC is not learned and frames to it are flooded to every peer
/// (most of a segment's traffic, IPv4 unicast, is routed and never crosses
/// VXLAN). Workload ports' MACs are pinned entries and do not count. Every
/// host builds every subnet's segment, so a host holds at most this times
/// two per subnet (at the default quota of 32 subnets per member, ~260,000
/// entries, some 40 MB of kernel memory). The bridge's cap needs Linux 6.8;
/// the VXLAN device's works on every kernel.
pub const SEGMENT_LEARNED_MACS: u32 = 4096;
/// IPv4 + UDP + VXLAN + inner Ethernet.
pub const VXLAN_OVERHEAD: u32 = 50;
/// WireGuard over IPv6 (the larger of the two underlays): 40 + 8 + 32.
pub const WIREGUARD_OVERHEAD: u32 = 80;

/// The `proto` of the routes this agent owns (`ip route show proto 87`).
pub const ROUTE_PROTOCOL: u8 = 87;
/// Metric of the subnet route on a bridge: the kernel's own route for an
/// exposed address (metric 0) is preferred while it exists.
pub const SUBNET_ROUTE_METRIC: u32 = 1000;

pub fn bridge_name(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// MTUs of the TUN (node addresses) and of every segment: the cluster's
/// segment MTU (the map's `segment_mtu`), with a TUN that carries it in
/// VXLAN (on an underlay too small for that, the datagrams to peers are
/// fragmented: IPv4 ones leave without DF); none (0, a cluster from before
/// it had one): both from this host's underlay, as before.
pub fn mtus(underlay: u32, cluster_segment: u32) -> (u32, u32) {
    let tun = underlay.saturating_sub(WIREGUARD_OVERHEAD).max(1280);
    match cluster_segment {
        0 => (tun, tun - VXLAN_OVERHEAD),
        segment => (tun.max(segment + VXLAN_OVERHEAD), segment),
    }
}

/// What is wrong with [`mtus`]' choice, if anything.
pub fn mtu_warning(underlay: u32, cluster_segment: u32) -> Option<&'static str> {
    let (tun, _) = mtus(underlay, cluster_segment);
    if cluster_segment == 0 {
        Some(
            "the cluster has no segment MTU (its coordinator is older, or was never given --mtu): this host derives \
             its own from its underlay, and frames between hosts whose underlays differ are lost",
        )
    } else if tun + WIREGUARD_OVERHEAD > underlay {
        Some(
            "this host's underlay is too small for the cluster's segment MTU: datagrams to peers leave in \
             fragments, and peers' full-size ones reach this host only where a router on the way fragments \
             them (across one LAN they are lost): give the cluster an --mtu 130 below this link's, or this \
             link a larger MTU",
        )
    } else {
        None
    }
}

/// The fixed MAC of this node's bridges (02:57 + the node address): a bridge
/// without one takes its lowest port's MAC and changes it as ports come and
/// go, which would strand the proxy-ARP answers workloads have cached.
pub fn bridge_mac(local: Ipv4Addr) -> Vec<u8> {
    let o = local.octets();
    vec![0x02, 0x57, o[0], o[1], o[2], o[3]]
}

/// The MAC of every workload interface weave makes: `0a:58` + the
/// interface's IPv4 address (the scheme Kubernetes' bridge plugin uses), so
/// every host can tell from a frame's source MAC whose workload it claims to
/// be. A member host could otherwise send frames over VXLAN from another
/// host's workload's MAC: every other host's bridge and VXLAN device would
/// learn it behind the member, and the segment's non-IPv4 unicast to that
/// workload (IPv6) would go to the member. The receiving agent takes a frame
/// from a peer only with the MAC of one of the peer's own workloads in that
/// segment, or its bridges' (`dataplane/router/vxlan.rs`).
pub fn workload_mac(ip: Ipv4Addr) -> Vec<u8> {
    let o = ip.octets();
    vec![0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// What `agent allocate` prints: `address bridge mtu mac`, the MAC the
/// workload's interface must have ([`workload_mac`]).
pub fn allocated_line(address: &str, bridge: &str, mtu: u32) -> Result<String, String> {
    let ip: ipnet::Ipv4Net = address.parse().map_err(|_| format!("the agent answered a bad address '{address}'"))?;
    Ok(format!("{address} {bridge} {mtu} {}\n", format_mac(&workload_mac(ip.addr()))))
}

/// The IPv4 address a [`workload_mac`] is made from (none for any other MAC).
pub fn workload_of_mac(mac: &[u8]) -> Option<Ipv4Addr> {
    match *mac {
        [0x0a, 0x58, a, b, c, d] => Some(Ipv4Addr::new(a, b, c, d)),
        _ => None,
    }
}

/// The IPv6 link-local address the kernel gives an interface with MAC `mac`
/// (modified EUI-64: `fe80::`, the MAC with `ff:fe` in its middle and the
/// universal/local bit flipped), which attach asks for (`addr_gen_mode` 0):
/// the one IPv6 source a workload has on its segment.
pub fn link_local(mac: &[u8]) -> std::net::Ipv6Addr {
    let m: [u8; 6] = mac.try_into().unwrap_or_default();
    let id = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
    std::net::Ipv6Addr::from(u128::from(0xfe80u16) << 112 | u128::from(u64::from_be_bytes(id)))
}

/// Workload interfaces are named `ethwe`, `ethwe1`, `ethwe2`, … (one per subnet).
pub const WORKLOAD_IF: &str = "ethwe";

pub fn is_workload_if(name: &str) -> bool {
    name.strip_prefix(WORKLOAD_IF).is_some_and(|n| n.is_empty() || n.parse::<u32>().is_ok())
}

/// `02:42:0a:…`: lower-case hex pairs, as Go's `net.ParseMAC` reads them.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `ethwe`, then `ethwe1`, `ethwe2`, … : the first name not in `used`.
pub fn next_ifname(used: &[String]) -> String {
    (0..)
        .map(|n| if n == 0 { WORKLOAD_IF.to_string() } else { format!("{WORKLOAD_IF}{n}") })
        .find(|n| !used.contains(n))
        .unwrap_or_else(|| WORKLOAD_IF.to_string())
}

/// A workload port's host side, as this agent names them: `wv` and 8
/// (attach, CNI: [`host_ifname`]) or 11 (Docker's endpoints: `wvd` and 10)
/// lower-case hex digits; never a bridge (`wvbr-`), VXLAN device (`wvvx-`)
/// or the TUN.
pub fn is_host_port(name: &str) -> bool {
    name.strip_prefix("wv").is_some_and(|h| {
        matches!(h.len(), 8 | 11) && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The host side of a container's veth: `wv` + 8 hex digits of (netns, vni)
/// (IFNAMSIZ leaves 15 characters; its temporary peer adds one).
pub fn host_ifname(inode: u64, vni: u32) -> String {
    let mut x = inode ^ (u64::from(vni) << 32) ^ u64::from(vni);
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("wv{:08x}", (x >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_are_told_from_the_agents_other_interfaces() {
        assert!(is_host_port(&host_ifname(12345, 7)));
        let docker = crate::plan::docker::host_ifname("dec81aa991b0c2c4d5e6f7a8b9c0d1e2").unwrap();
        assert!(is_host_port(&docker), "a Docker endpoint's: {docker}");
        for other in [TUN_NAME.to_string(), bridge_name(5), vxlan_name(5), format!("{}0", host_ifname(12345, 7))] {
            assert!(!is_host_port(&other), "{other}");
        }
        for other in ["wv1234567", "wvDEADBEEF", "wv0123456789ab", "eth0", "wvzz00ff11"] {
            assert!(!is_host_port(other), "{other}");
        }
    }

    #[test]
    fn interface_names() {
        assert_eq!(next_ifname(&[]), "ethwe");
        assert_eq!(next_ifname(&["ethwe".into()]), "ethwe1");
        assert_eq!(next_ifname(&["ethwe1".into()]), "ethwe");
        assert_eq!(next_ifname(&["ethwe".into(), "ethwe1".into()]), "ethwe2");
        let h = host_ifname(4026532000, 7);
        assert!(h.len() <= 14 && h.starts_with("wv"), "{h}");
        assert_ne!(h, host_ifname(4026532000, 8));
        assert_ne!(h, host_ifname(4026532001, 7));
        assert_eq!(format_mac(&[0x02, 0x42, 0x0a, 0, 0xff, 1]), "02:42:0a:00:ff:01");
    }

    #[test]
    fn a_workload_mac_names_its_address_and_no_bridge_has_one() {
        let ip = Ipv4Addr::new(10, 32, 0, 5);
        assert_eq!(format_mac(&workload_mac(ip)), "0a:58:0a:20:00:05");
        assert_eq!(workload_of_mac(&workload_mac(ip)), Some(ip));
        // Unicast, locally administered.
        assert_eq!(workload_mac(ip)[0] & 0x03, 0x02);
        assert_eq!(workload_of_mac(&bridge_mac(ip)), None);
        assert_eq!(workload_of_mac(&[0x0a, 0x58, 10, 32, 0]), None);
        assert_eq!(
            allocated_line("10.32.0.5/12", "wvbr-1", 1370).unwrap(),
            "10.32.0.5/12 wvbr-1 1370 0a:58:0a:20:00:05\n"
        );
        assert!(allocated_line("nonsense", "wvbr-1", 1370).is_err());
    }

    #[test]
    fn a_link_local_address_is_the_kernels_eui64() {
        // As `ip -6 addr` shows them on such interfaces.
        assert_eq!(link_local(&workload_mac(Ipv4Addr::new(10, 32, 0, 5))).to_string(), "fe80::858:aff:fe20:5");
        assert_eq!(link_local(&[0x02, 0x57, 10, 40, 0, 1]).to_string(), "fe80::57:aff:fe28:1");
    }

    #[test]
    fn mtus_leave_room_for_wireguard_and_vxlan() {
        assert_eq!(mtus(1500, 0), (1420, 1370));
        assert_eq!(mtus(9000, 0), (8920, 8870));
        // The cluster's segment MTU, whatever the underlay: a smaller one
        // gets a TUN large enough for it (its datagrams are fragmented).
        assert_eq!(mtus(1500, 1370), (1420, 1370));
        assert_eq!(mtus(1400, 1370), (1420, 1370));
        assert_eq!(mtus(9000, 1370), (8920, 1370));
        assert_eq!(mtus(1500, 8870), (8920, 8870));
        assert!(mtu_warning(1500, 0).is_some_and(|w| w.contains("no segment MTU")));
        assert!(mtu_warning(1400, 1370).is_some_and(|w| w.contains("fragments")));
        assert_eq!((mtu_warning(1500, 1370), mtu_warning(9000, 1370)), (None, None));
        assert_eq!(bridge_name(16_777_215).len(), 13);
    }

    #[test]
    fn a_workload_super_packet_leaves_in_one_udp_gso_send() {
        for underlay in [1280, 1300, 1450, 1500, 4000, 9000] {
            let (_, mtu) = mtus(underlay, 0);
            let n = workload_gso_segments(mtu) as usize;
            let datagram = (mtu as usize).next_multiple_of(16) + WIREGUARD_FRAMING;
            assert!(n * datagram <= UDP_GSO_BYTES && n <= UDP_GSO_SEGMENTS, "{mtu}: {n} segments fit");
            assert!(n == UDP_GSO_SEGMENTS || (n + 1) * datagram > UDP_GSO_BYTES, "{mtu}: {n} is the most that fit");
        }
        assert_eq!(workload_gso_segments(1370), 46);
        assert_eq!(workload_gso_segments(8870), 7);
    }
}
