//! This host's own LAN as the agent's namespace shows it: the networks it
//! reaches directly (a route without a gateway through an interface that is
//! not weave's: `/proc/net/route`, `/proc/net/ipv6_route`), every other
//! route it has (for a member's subnets), and the addresses it depends on
//! (the routes' gateways; the name servers of `/etc/resolv.conf`, of
//! systemd-resolved and `--dns-upstream`, wherever they are). A subnet over
//! them would route part of the LAN, or the host's DNS, into the overlay,
//! so the agent leaves it out ([`crate::plan::netmap::HostLan`]).
//! Not the ARP neighbours: any machine on the underlay can become one (an
//! ARP request from an address of its choosing), and would then take a
//! subnet with live workloads off the host.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::plan::{
    kernel::{BRIDGE_PREFIX, TUN_NAME, VXLAN_PREFIX},
    netmap::HostLan,
};

mod changes;

/// RTF_UP.
const UP: u32 = 0x1;
/// RTF_GATEWAY.
const GATEWAY: u32 = 0x2;
/// RTF_REJECT: blackhole, unreachable, prohibit (no interface of its own).
const REJECT: u32 = 0x200;

/// The servers the agent's DNS server forwards to (`--dns-upstream`, or
/// resolv.conf's as read at start; set once): addresses it depends on
/// wherever they are, like the name servers of resolv.conf now.
static DNS_UPSTREAMS: std::sync::OnceLock<Vec<IpAddr>> = std::sync::OnceLock::new();

/// Records the DNS server's upstreams for [`lan`] (the first call counts).
pub fn set_dns_upstreams(upstreams: &[std::net::SocketAddr]) {
    let _ = DNS_UPSTREAMS.set(upstreams.iter().map(|u| u.ip().to_canonical()).collect());
}

/// What the route tables say: connected networks, every other route, and
/// the gateways.
#[derive(Clone)]
struct Tables {
    networks: Vec<(IpNet, String)>,
    routes: Vec<(IpNet, String)>,
    gateways: Vec<IpAddr>,
}

/// The tables as last read, read again only when something not weave's
/// changed since ([`changes`]) or after [`TABLES_MAX_AGE`] (a notification
/// this misread costs that much at most).
static TABLES: std::sync::Mutex<Option<(changes::Changes, Option<Read>)>> = std::sync::Mutex::new(None);

/// When the tables were read, and what they said.
type Read = (std::time::Instant, Tables);

const TABLES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

fn tables() -> Tables {
    let mut kept = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let (changes, last) = kept.get_or_insert_with(|| (changes::Changes::new(), None));
    // Drained before the read: a change made during it is seen next time.
    let changed = changes.since_last();
    match last {
        Some((at, t)) if !changed && at.elapsed() < TABLES_MAX_AGE => t.clone(),
        _ => {
            let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
            let (v4, v6) = (read("/proc/net/route"), read("/proc/net/ipv6_route"));
            let mut gateways = gateways_v4(&v4);
            gateways.extend(gateways_v6(&v6));
            let t = Tables { networks: connected_networks_in(&v4, &v6), routes: routes_in(&v4, &v6), gateways };
            *last = Some((std::time::Instant::now(), t.clone()));
            t
        }
    }
}

/// This host's LAN, now. Unreadable files give nothing (the check then only
/// protects announced endpoints and the coordinator's address, as before).
/// `own_node`: this host's node id (its workloads' subnets are kept).
pub fn lan(own_node: u64) -> HostLan {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let Tables { networks, routes, gateways: mut known } = tables();
    known.extend(nameservers(&read("/etc/resolv.conf")));
    // systemd-resolved: /etc/resolv.conf names only its stub (127.0.0.53);
    // the servers it asks are here.
    known.extend(nameservers(&read("/run/systemd/resolve/resolv.conf")));
    known.extend(DNS_UPSTREAMS.get().into_iter().flatten());
    known.sort();
    known.dedup();
    HostLan { networks, routes, known, own_node }
}

/// Every route of this host but weave's own and the default ones: connected,
/// through a gateway, host routes (a Calico pod's /32, a VPN peer's). Routes
/// shorter than /8 (IPv4) or /16 (IPv6) count as default routes: a VPN's
/// `0.0.0.0/1` and `128.0.0.0/1` (OpenVPN's `redirect-gateway def1`) would
/// otherwise hold every member's subnet. The main table only for IPv4
/// (`/proc/net/route`); IPv6's file lists every table.
fn routes_in(v4: &str, v6: &str) -> Vec<(IpNet, String)> {
    let mut out = parse_v4_all(v4, false);
    out.extend(parse_v6_all(v6, false));
    out.retain(|(net, dev)| !weave_or_loopback(dev) && net.prefix_len() >= if net.addr().is_ipv4() { 8 } else { 16 });
    out.sort();
    out.dedup();
    out
}

/// The addresses of the coordinators this agent talks to (from its join
/// token, kept in its identity: one host:port or several separated by
/// commas), host names resolved now: a subnet holding one of them would
/// route the agent's own control connection into an overlay bridge, so it
/// is never installed here, whatever the coordinator accepted (a member
/// adds subnets too).
pub fn coordinator_ips(list: &str) -> Vec<IpAddr> {
    let (ips, unresolved) = weave_proto::client::resolve(list);
    for addr in unresolved {
        tracing::warn!("coordinator {addr} does not resolve now: a subnet holding its address is not kept out here");
    }
    ips
}

/// This host's directly connected networks with their interface.
fn connected_networks_in(v4: &str, v6: &str) -> Vec<(IpNet, String)> {
    let mut out = parse_v4(v4);
    out.extend(parse_v6(v6));
    out.retain(|(_, dev)| !weave_or_loopback(dev));
    out.sort();
    out.dedup();
    out
}

fn weave_or_loopback(dev: &str) -> bool {
    dev == "lo" || weaves(dev)
}

/// The TUN, a bridge or a VXLAN device.
fn weaves(dev: &str) -> bool {
    dev == TUN_NAME || dev.starts_with(BRIDGE_PREFIX) || dev.starts_with(VXLAN_PREFIX)
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask …`, addresses as
/// little-endian hex.
fn parse_v4(text: &str) -> Vec<(IpNet, String)> {
    parse_v4_all(text, true)
}

/// Routes with an interface and a prefix (not the default route); only the
/// connected ones (no gateway) if `connected_only`.
fn parse_v4_all(text: &str, connected_only: bool) -> Vec<(IpNet, String)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| u32::from_str_radix(f.get(i)?, 16).ok();
            let (dest, flags, mask) = (hex(1)?, hex(3)?, hex(7)?);
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            let via = if connected_only { GATEWAY | REJECT } else { REJECT };
            let connected = flags & UP != 0 && flags & via == 0 && prefix > 0 && f[0] != "*";
            let net = IpNet::new(IpAddr::V4(Ipv4Addr::from(u32::from_be(dest))), prefix).ok()?;
            connected.then(|| (net.trunc(), f[0].to_string()))
        })
        .collect()
}

/// `dest prefix src srcprefix nexthop metric refcnt use flags iface`, hex.
fn parse_v6(text: &str) -> Vec<(IpNet, String)> {
    parse_v6_all(text, true)
}

/// As [`parse_v4_all`], for `/proc/net/ipv6_route`.
fn parse_v6_all(text: &str, connected_only: bool) -> Vec<(IpNet, String)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = Ipv6Addr::from(u128::from_str_radix(f.first()?, 16).ok()?);
            let prefix = u8::from_str_radix(f.get(1)?, 16).ok()?;
            let flags = u32::from_str_radix(f.get(8)?, 16).ok()?;
            let dev = f.get(9)?;
            let special = dest.is_multicast() || dest.is_unicast_link_local() || dest.is_loopback();
            let via = if connected_only { GATEWAY | REJECT } else { REJECT };
            let connected = flags & UP != 0 && flags & via == 0 && prefix > 0 && !special;
            let net = IpNet::new(IpAddr::V6(dest), prefix).ok()?;
            connected.then(|| (net.trunc(), dev.to_string()))
        })
        .collect()
}

/// The gateways of the IPv4 routes not through weave's devices.
fn gateways_v4(text: &str) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let gw = u32::from_str_radix(f.get(2)?, 16).ok()?;
            (gw != 0 && !weave_or_loopback(f[0])).then(|| IpAddr::V4(Ipv4Addr::from(u32::from_be(gw))))
        })
        .collect()
}

/// The next hops of the IPv6 routes not through weave's devices.
fn gateways_v6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hop = Ipv6Addr::from(u128::from_str_radix(f.get(4)?, 16).ok()?);
            (!hop.is_unspecified() && !weave_or_loopback(f.get(9)?)).then_some(IpAddr::V6(hop))
        })
        .collect()
}

fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver")?.split_whitespace().next()?.split('%').next()?.parse().ok())
        .map(|ip: IpAddr| ip.to_canonical())
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
        // Blackhole and unreachable routes ('*', RTF_REJECT) are not networks.
        let reject = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                      *\t0000200A\t00000000\t0001\t0\t0\t0\t0000F0FF\n\
                      eth0\t0000200A\t00000000\t0201\t0\t0\t0\t0000F0FF\n";
        assert!(parse_v4(reject).is_empty());
        // Every route (but the default and weave's), for a member's subnets:
        // through a gateway, and host routes (a Calico pod, a VPN peer).
        let host = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    cali1\t0501F40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\n";
        assert_eq!(
            routes_in(&format!("{v4}{}", &host[host.find('\n').unwrap() + 1..]), v6),
            [
                ("10.0.0.0/8".parse().unwrap(), "eth0".to_string()),
                ("10.244.1.5/32".parse().unwrap(), "cali1".into()),
                ("192.0.2.0/24".parse().unwrap(), "eth0".into()),
                ("2001:db8::/64".parse().unwrap(), "eth0".into()),
            ]
        );
        assert!(routes_in(reject, "").is_empty());
        // A VPN's two halves of the default route are not routes to keep clear.
        let def1 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    tun0\t00000000\t0100080A\t0003\t0\t0\t0\t00000080\n\
                    tun0\t00000080\t0100080A\t0003\t0\t0\t0\t00000080\n\
                    tun0\t0000080A\t00000000\t0001\t0\t0\t0\t0000FFFF\n";
        assert_eq!(routes_in(def1, ""), [("10.8.0.0/16".parse().unwrap(), "tun0".to_string())]);
        assert_eq!(gateways_v4(v4), ["192.0.2.1".parse::<IpAddr>().unwrap(); 2]);
        assert_eq!(gateways_v6(v6), ["2001:db8::1".parse::<IpAddr>().unwrap()]);
        let resolv = "# generated\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch example\n";
        assert_eq!(nameservers(resolv), ["192.0.2.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
    }

    #[test]
    fn every_coordinator_of_the_list_is_an_address_to_keep_clear() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ips = coordinator_ips("192.0.2.2:6783, 192.0.2.1:6783,[2001:db8::9]:6783,[::ffff:198.51.100.3]:6783");
        assert_eq!(ips, [ip("192.0.2.1"), ip("192.0.2.2"), ip("198.51.100.3"), ip("2001:db8::9")]);
        assert!(coordinator_ips("localhost:6783").contains(&ip("127.0.0.1")), "a host name is resolved");
        assert_eq!(coordinator_ips(""), Vec::<IpAddr>::new());
    }
}
