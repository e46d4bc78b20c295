//! The workload side of netlink: a container's interfaces seen from inside
//! its namespace, and the veth that plugs it into a bridge (a bridge's own
//! addresses are `bridge_ip`'s).
use super::*;

/// An IPv4 address of a workload interface, as found in its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadInterface {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub mac: Vec<u8>,
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

/// What a workload port's alias starts with; the rest is its bridge.
const PORT_ALIAS: &str = "weave:";

fn port_alias(bridge: &str) -> String {
    format!("{PORT_ALIAS}{bridge}")
}

/// "02:57:0a:20:00:01" -> its six bytes.
fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16).ok()).collect::<Option<_>>()?;
    (bytes.len() == 6).then_some(bytes)
}

/// A workload port's name, its bridge, and the address and MAC pinned for it.
type PortRecord<'a> = (&'a str, &'a str, Option<(Ipv4Addr, Vec<u8>)>);

/// A workload port's record, from its alias (`weave:<bridge> [<ip> <mac>]`);
/// `None` for any other link.
fn port_record(l: &LinkMessage) -> Option<PortRecord<'_>> {
    let port = name(l)?;
    let alias = l.attributes.iter().find_map(|a| if let LinkAttribute::IfAlias(s) = a { Some(s) } else { None });
    let mut words = alias?.strip_prefix(PORT_ALIAS)?.split_whitespace();
    let bridge = words.next().filter(|b| b.starts_with(BRIDGE_PREFIX))?;
    let pin = words.next().and_then(|ip| ip.parse::<Ipv4Addr>().ok()).zip(words.next().and_then(parse_mac));
    Some((port, bridge, pin))
}

impl Netlink {
    /// Every link.
    pub(super) async fn links(&self) -> Result<Vec<LinkMessage>, Error> {
        dump("list links", || self.handle.link().get().execute()).await
    }

    /// Deletes the host side of every workload port this agent made (the
    /// container's end goes with it): a `wv<hex>` veth with a `weave:` port
    /// record, nothing else of that name. Best effort, each on its own: one
    /// that fails is logged and the rest go on (a removed node's agent must
    /// still take its tunnel down). How many went.
    pub async fn remove_ports(&self) -> Result<usize, Error> {
        let mut removed = 0;
        for l in self.links().await? {
            let Some((port, _, _)) = port_record(&l).filter(|(port, _, _)| is_host_port(port)) else {
                continue;
            };
            match self.delete_link(port).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(port, error = %e, "could not remove a workload port"),
            }
        }
        Ok(removed)
    }

    /// A netlink connection inside the namespace of `netns` (a `/run/netns/x`
    /// or `/proc/<pid>/ns/net` file). The socket is opened by a short-lived
    /// thread that entered the namespace (a socket stays in the namespace it
    /// was created in); the connection then runs on the caller's runtime.
    pub async fn in_netns(netns: &std::fs::File) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::current();
        let opened = crate::host::netns::run_in(netns, "a container", move || {
            // The socket registers with the runtime's reactor when created.
            let _guard = runtime.enter();
            rtnetlink::new_connection().map_err(|e| Error::Netlink(format!("netlink socket in namespace: {e}")))
        })?;
        let (conn, handle, _) = opened;
        tokio::spawn(conn);
        Ok(Self { handle, indexes: Default::default() })
    }

    /// The `ethwe*` interfaces of this namespace (and `extra`, a name the
    /// CNI runtime chose) with their IPv4 addresses.
    pub async fn workload_interfaces(&self, extra: Option<&str>) -> Result<Vec<WorkloadInterface>, Error> {
        let mut out: Vec<WorkloadInterface> = self
            .links()
            .await?
            .iter()
            .filter_map(|l| {
                let n = name(l)?;
                (is_workload_if(n) || Some(n) == extra).then(|| WorkloadInterface {
                    name: n.to_string(),
                    index: l.header.index,
                    mtu: mtu(l).unwrap_or(0),
                    mac: mac(l).unwrap_or_default(),
                    addresses: Vec::new(),
                })
            })
            .collect();
        let addrs = dump("list addresses", || self.handle.address().get().execute()).await?;
        for a in addrs {
            let Some(i) = out.iter_mut().find(|i| i.index == a.header.index) else { continue };
            for attr in &a.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                    i.addresses.push((*ip, a.header.prefix_len));
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates a veth pair in this (the host's) namespace: `host_if` goes into
    /// `bridge`, its peer (MAC `mac`) moves into `netns` and is renamed
    /// `ifname` in the same message. Nothing is left behind if a step fails.
    pub async fn plug_veth(
        &self,
        host_if: &str,
        bridge: &str,
        netns: &std::fs::File,
        (ifname, mac): (&str, &[u8]),
        mtu: u32,
    ) -> Result<(), Error> {
        use std::os::fd::AsRawFd;
        let peer = format!("{host_if}p");
        // Down until the caller has locked and guarded the port (attach).
        self.veth_on_bridge(host_if, &peer, bridge, mtu, Some(mac), false).await?;
        let moved = async {
            let peer_index = self.link_index(&peer).await?.ok_or_else(|| Error::Netlink(format!("{peer} vanished")))?;
            let msg = LinkUnspec::new_with_index(peer_index).setns_by_fd(netns.as_raw_fd()).name(ifname).build();
            self.handle
                .link()
                .set(msg)
                .execute()
                .await
                .map_err(|e| nl(format!("move {peer} into the container as {ifname}"), e))
        }
        .await;
        if moved.is_err() {
            let _ = self.delete_link(host_if).await;
        }
        moved
    }

    /// A veth pair whose `host_if` end is in `bridge` (up if `up`) and whose
    /// `peer` (MTU `mtu`, MAC `mac` if given) stays down in this namespace,
    /// for a runtime to move into a container (Docker's Join). Nothing is
    /// left behind if a step fails.
    pub async fn veth_on_bridge(
        &self,
        host_if: &str,
        peer: &str,
        bridge: &str,
        mtu: u32,
        mac: Option<&[u8]>,
        up: bool,
    ) -> Result<(), Error> {
        let bridge_index =
            self.link_index(bridge).await?.ok_or_else(|| Error::Netlink(format!("bridge {bridge} does not exist")))?;
        // Not `create`: an existing pair of that name must not pass for ours.
        self.handle
            .link()
            .add(rtnetlink::LinkVeth::new(host_if, peer).mtu(mtu).build())
            .execute()
            .await
            .map_err(|e| nl(format!("create veth pair {host_if} / {peer}"), e))?;
        let result = async {
            let peer_index = self.link_index(peer).await?.ok_or_else(|| Error::Netlink(format!("{peer} vanished")))?;
            let set = |msg| self.handle.link().set(msg).execute();
            // The workload's TSO super-packets no larger than one UDP GSO
            // send carries once encrypted (`workload_gso_segments`).
            let segments = LinkAttribute::GsoMaxSegs(crate::plan::kernel::workload_gso_segments(mtu));
            set(LinkUnspec::new_with_index(peer_index).mtu(mtu).append_extra_attribute(segments).build())
                .await
                .map_err(|e| nl(format!("set mtu and gso_max_segs of {peer}"), e))?;
            if let Some(mac) = mac {
                set(LinkUnspec::new_with_index(peer_index).address(mac.to_vec()).build())
                    .await
                    .map_err(|e| nl(format!("set the MAC of {peer}"), e))?;
            }
            let host_index =
                self.link_index(host_if).await?.ok_or_else(|| Error::Netlink(format!("{host_if} vanished")))?;
            // The alias names the bridge, so a port left without one (the
            // bridge was deleted and made again) is put back: `replug_ports`.
            set(LinkUnspec::new_with_index(host_index).controller(bridge_index).alias(port_alias(bridge)).build())
                .await
                .map_err(|e| nl(format!("put {host_if} into {bridge}"), e))?;
            if !up {
                return Ok(());
            }
            set(LinkUnspec::new_with_index(host_index).up().build())
                .await
                .map_err(|e| nl(format!("set {host_if} up"), e))
        }
        .await;
        if result.is_err() {
            let _ = self.delete_link(host_if).await;
        }
        result
    }

    /// Records on `port` (its alias) the workload address and MAC pinned on
    /// `bridge`, so [`Self::replug_ports`] can pin them again.
    pub async fn remember_pin(&self, port: &str, bridge: &str, ip: Ipv4Addr, mac: &[u8]) -> Result<(), Error> {
        let Some(index) = self.link_index(port).await? else { return Ok(()) };
        let alias = format!("{} {ip} {}", port_alias(bridge), crate::plan::kernel::format_mac(mac));
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).alias(alias).build())
            .execute()
            .await
            .map_err(|e| nl(format!("alias of {port}"), e))
    }

    /// Puts every workload port back into its bridge (by the alias it was
    /// given, [`port_alias`]) when it is not there: a bridge deleted (by
    /// hand, or while its subnet was left out) and made again comes back
    /// empty, and its workloads would stay cut off. Not one whose address is
    /// no longer `held` by this host (released behind its container's back:
    /// `subnet rm --force`, then the subnet added again): locked to that
    /// address's MAC, it made every attach of the address on this host fail,
    /// and answered for it (found by a review, 2026-12-05). Returns the ports moved.
    ///
    /// A port in its bridge whose address is no longer pinned there is
    /// pinned again: removing a bridge's last IPv4 address (`weavectl hide`,
    /// `ip addr flush`) flushes its neighbour table, permanent entries too,
    /// and the host then ARPed for its own workloads from its underlay
    /// address, which a workload with reverse-path filtering ignores, until
    /// the container was attached again (found by a review, 2026-12-05).
    pub async fn replug_ports(&self, held: impl Fn(Ipv4Addr) -> bool) -> Result<Vec<String>, Error> {
        let links = self.links().await?;
        let index_of = |n: &str| links.iter().find(|l| name(l) == Some(n)).map(|l| l.header.index);
        let pinned: std::collections::BTreeSet<(u32, Ipv4Addr)> =
            self.permanent_neighbours().await?.into_iter().collect();
        let mut moved = Vec::new();
        for l in &links {
            let Some((port, bridge, pin)) = port_record(l) else { continue };
            let Some(bridge_index) = index_of(bridge) else { continue };
            if pin.as_ref().is_some_and(|(ip, _)| !held(*ip)) {
                continue;
            }
            let controller =
                l.attributes.iter().find_map(|a| if let LinkAttribute::Controller(c) = a { Some(*c) } else { None });
            if controller == Some(bridge_index) {
                if let Some((ip, mac)) = pin.as_ref().filter(|(ip, _)| !pinned.contains(&(bridge_index, *ip))) {
                    self.pin_neighbour(bridge, *ip, mac).await?;
                    moved.push(format!("{port} (its address pinned again)"));
                }
                continue;
            }
            let set = |msg| self.handle.link().set(msg).execute();
            set(LinkUnspec::new_with_index(l.header.index).controller(bridge_index).build())
                .await
                .map_err(|e| nl(format!("put {port} back into {bridge}"), e))?;
            // The bridge's neighbour and FDB entries went with it: pin the
            // workload's address and lock its port to its MAC again, before
            // it comes up. If that fails it leaves the bridge again, so the
            // next pass tries it whole (in the bridge, it would be skipped,
            // up and unlocked).
            if let Some((ip, mac)) = pin {
                let locked = async {
                    self.pin_neighbour(bridge, ip, &mac).await?;
                    self.lock_port(port, &mac).await
                };
                if let Err(e) = locked.await {
                    let _ = set(LinkUnspec::new_with_index(l.header.index).nocontroller().build()).await;
                    return Err(e);
                }
            }
            set(LinkUnspec::new_with_index(l.header.index).up().build())
                .await
                .map_err(|e| nl(format!("set {port} up"), e))?;
            moved.push(format!("{port} -> {bridge}"));
        }
        Ok(moved)
    }

    /// Sets up every workload port that has its full record (address and
    /// MAC: locked and pinned; the caller has guarded them) and is down: an
    /// attach the agent did not finish (it stopped between plugging the
    /// port, down, and bringing it up) leaves one so. Returns those ports.
    pub async fn raise_recorded_ports(&self) -> Result<Vec<String>, Error> {
        let links = self.links().await?;
        let mut raised = Vec::new();
        for l in &links {
            let Some((port, _, Some(_))) = port_record(l) else { continue };
            if l.header.flags.contains(netlink_packet_route::link::LinkFlags::Up) {
                continue;
            }
            self.set_up(port).await?;
            raised.push(port.to_string());
        }
        Ok(raised)
    }

    /// Whether workload port `port` is one an attach began and never
    /// finished (its agent was killed): down, and without the address and MAC
    /// an attach records on it just before it sets it up. `false` if there is
    /// no such link.
    pub async fn unfinished_port(&self, port: &str) -> Result<bool, Error> {
        let links = self.links().await?;
        Ok(links.iter().find(|l| name(l) == Some(port)).is_some_and(|l| {
            !l.header.flags.contains(netlink_packet_route::link::LinkFlags::Up)
                && port_record(l).is_none_or(|(_, _, pin)| pin.is_none())
        }))
    }

    /// Every workload port with the address and MAC recorded on it
    /// ([`Self::remember_pin`]): what the source guard holds each port to.
    pub async fn pinned_ports(&self) -> Result<Vec<(String, Ipv4Addr, Vec<u8>)>, Error> {
        let links = self.links().await?;
        Ok(links
            .iter()
            .filter_map(port_record)
            .filter_map(|(port, _, pin)| pin.map(|(ip, mac)| (port.to_string(), ip, mac)))
            .collect())
    }

    /// Deletes every workload port but `keep` pinned to `ip`: a
    /// container's whose address was released behind its back (`subnet rm
    /// --force`, `ipam release`) and that IPAM has just given to another
    /// (attach, Docker's Join). Left, it kept sending as the new holder, its
    /// pin not the map's word once the address was held here again.
    pub async fn remove_ports_pinned_to(&self, ip: Ipv4Addr, keep: &str) -> Result<(), Error> {
        for (port, ..) in self.pinned_ports().await?.into_iter().filter(|p| p.1 == ip && p.0 != keep) {
            self.delete_link(&port).await?;
            tracing::info!(port, %ip, "removed the port of a container whose address was released");
        }
        Ok(())
    }

    /// Inside a workload's namespace: `ifname` up with `address`, plus the
    /// multicast route (224.0.0.0/4) through it unless one exists. Idempotent.
    pub async fn configure_workload(
        &self,
        ifname: &str,
        address: Ipv4Addr,
        prefix: u8,
        multicast: bool,
    ) -> Result<(), Error> {
        let index = self.link_index(ifname).await?.ok_or_else(|| Error::Netlink(format!("{ifname} does not exist")))?;
        if let Some(lo) = self.link_index("lo").await? {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(|e| nl("lo up", e))?;
        }
        match self.handle.address().add(index, address.into(), prefix).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl(format!("add {address}/{prefix} to {ifname}"), e)),
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| nl(format!("set {ifname} up"), e))?;
        if multicast {
            let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(Ipv4Addr::new(224, 0, 0, 0), 4)
                .output_interface(index)
                .scope(netlink_packet_route::route::RouteScope::Link)
                .build();
            match self.handle.route().add(route).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl(format!("multicast route via {ifname}"), e)),
            }
        }
        Ok(())
    }
}

/// The sysctls of a workload interface, set from inside its namespace:
/// `(path under /proc/sys/net, value, IPv6)`. IPv4 or IPv6 unicast in an L2
/// broadcast or multicast frame is dropped (a forged source flooded to the
/// whole segment). No router advertisement configures it (no default route,
/// address or DNS server from another workload), nor does a redirect.
/// Its link-local address is the EUI-64 one of its MAC (`addr_gen_mode` 0,
/// whatever the container's defaults say): the one IPv6 source its port
/// lets through (`plan::l2::guard_ruleset`) and other hosts take from it.
/// No duplicate address detection: the address is unique by construction
/// (IPAM's, in the MAC), and a neighbour answering the detection's probe
/// would leave the workload without IPv6.
/// IPv6 entries are skipped when the container has no IPv6.
const WORKLOAD_SYSCTLS: &[(&str, &str, bool)] = &[
    ("ipv4/conf/{}/drop_unicast_in_l2_multicast", "1", false),
    ("ipv6/conf/{}/drop_unicast_in_l2_multicast", "1", true),
    ("ipv6/conf/{}/accept_ra", "0", true),
    ("ipv6/conf/{}/autoconf", "0", true),
    ("ipv6/conf/{}/accept_redirects", "0", true),
    ("ipv6/conf/{}/addr_gen_mode", "0", true),
    ("ipv6/conf/{}/accept_dad", "0", true),
];

/// The sysctls of a segment's bridge `br`, in this (the host's) namespace,
/// right after it is made: proxy ARP answers at once (the default delays
/// answers up to 0.8 s), and needs forwarding on the bridge, as does
/// routing from it to the TUN; ARP answered only for the bridge's own
/// address, the exposed one (`arp_ignore` 1; proxy ARP is not affected): with
/// the default a workload learned the host's underlay and node addresses
/// (found by a review, 2026-12-03); and no IPv6 of its own ([`no_ipv6`]).
pub(super) fn bridge_sysctls(br: &str) -> Result<(), Error> {
    sysctl(&format!("net/ipv4/neigh/{br}/proxy_delay"), "0")?;
    sysctl(&format!("net/ipv4/conf/{br}/forwarding"), "1")?;
    sysctl(&format!("net/ipv4/conf/{br}/arp_ignore"), "1")?;
    no_ipv6(br);
    Ok(())
}

/// IPv6 off on a segment's bridge or VXLAN device (before the VXLAN device
/// comes up): the host never speaks on a segment over IPv6, and a VXLAN
/// device's neighbour discovery and MLD, from its random MAC, were frames
/// every other host dropped as forged (only a workload's or the bridges'
/// MAC and link-local address pass, `dataplane/router/vxlan.rs`). A kernel
/// without IPv6 needs nothing; any other failure is only a warning.
pub(super) fn no_ipv6(dev: &str) {
    match sysctl(&format!("net/ipv6/conf/{dev}/disable_ipv6"), "1") {
        Err(Error::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(device = dev, error = %e, "could not turn IPv6 off"),
        Ok(()) => {}
    }
}

/// Sets [`WORKLOAD_SYSCTLS`] on `ifname` inside the namespace `netns`.
pub fn harden_workload(netns: &std::fs::File, ifname: &str) -> Result<(), Error> {
    let ifname = ifname.to_string();
    crate::host::netns::run_in(netns, "a container", move || {
        for (path, value, v6) in WORKLOAD_SYSCTLS {
            let path = format!("net/{}", path.replace("{}", &ifname));
            match sysctl(&path, value) {
                Err(Error::Io(_, e)) if *v6 && e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    })
}
