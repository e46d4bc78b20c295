//! This host's own networks: the destinations it reaches directly (a route
//! without a gateway) through an interface that is not weave's, read from
//! `/proc/net/route` and `/proc/net/ipv6_route` of the agent's namespace.
//! A subnet overlapping one would route part of the host's LAN (its gateway,
//! its DNS server, the hosts beside it) into an overlay bridge, so the agent
//! leaves such a subnet out ([`crate::plan::netmap::underlay_conflicts`]).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::plan::kernel::{BRIDGE_PREFIX, TUN_NAME, VXLAN_PREFIX};

/// RTF_UP.
const UP: u32 = 0x1;
/// RTF_GATEWAY.
const GATEWAY: u32 = 0x2;

/// This host's directly connected networks with their interface, now.
/// Unreadable files give none (the check then only protects announced
/// endpoints and the coordinator's address, as before).
pub fn connected_networks() -> Vec<(IpNet, String)> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    let mut out = parse_v4(&v4);
    out.extend(parse_v6(&v6));
    out.retain(|(_, dev)| !weave_or_loopback(dev));
    out.sort();
    out.dedup();
    out
}

fn weave_or_loopback(dev: &str) -> bool {
    dev == "lo" || dev == TUN_NAME || dev.starts_with(BRIDGE_PREFIX) || dev.starts_with(VXLAN_PREFIX)
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask …`, addresses as
/// little-endian hex.
fn parse_v4(text: &str) -> Vec<(IpNet, String)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| u32::from_str_radix(f.get(i)?, 16).ok();
            let (dest, flags, mask) = (hex(1)?, hex(3)?, hex(7)?);
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            let connected = flags & UP != 0 && flags & GATEWAY == 0 && prefix > 0;
            let net = IpNet::new(IpAddr::V4(Ipv4Addr::from(u32::from_be(dest))), prefix).ok()?;
            connected.then(|| (net.trunc(), f[0].to_string()))
        })
        .collect()
}

/// `dest prefix src srcprefix nexthop metric refcnt use flags iface`, hex.
fn parse_v6(text: &str) -> Vec<(IpNet, String)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = Ipv6Addr::from(u128::from_str_radix(f.first()?, 16).ok()?);
            let prefix = u8::from_str_radix(f.get(1)?, 16).ok()?;
            let flags = u32::from_str_radix(f.get(8)?, 16).ok()?;
            let dev = f.get(9)?;
            let special = dest.is_multicast() || dest.is_unicast_link_local() || dest.is_loopback();
            let connected = flags & UP != 0 && flags & GATEWAY == 0 && prefix > 0 && !special;
            let net = IpNet::new(IpAddr::V6(dest), prefix).ok()?;
            connected.then(|| (net.trunc(), dev.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_routes_only() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  eth0\t0000000A\t010200C0\t0003\t0\t0\t0\t000000FF\t0\t0\t0\n\
                  wvbr-5\t0000200A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let nets = parse_v4(v4);
        assert_eq!(
            nets,
            [("192.0.2.0/24".parse().unwrap(), "eth0".into()), ("10.32.0.0/16".parse().unwrap(), "wvbr-5".into())],
            "the default route and one through a gateway are not connected"
        );
        let v6 = "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                  fe800000000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  20010db8000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";
        assert_eq!(parse_v6(v6), [("2001:db8::/64".parse().unwrap(), "eth0".to_string())]);
        assert!(weave_or_loopback("wvbr-5") && weave_or_loopback("wvtun0") && !weave_or_loopback("docker0"));
    }
}
