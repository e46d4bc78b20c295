//! The only module that changes interfaces: TUN addressing, bridges, VXLAN
//! devices and their FDB flood entries, the fast path's routes and proxy-ARP
//! entries, all through rtnetlink (no `ip`), plus the few sysctls they need.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
};

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoBridge, InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope},
};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::{
    error::Error,
    plan::{
        kernel::{
            BRIDGE_PREFIX, ROUTE_PROTOCOL, SEGMENT_LEARNED_MACS, SUBNET_ROUTE_METRIC, TUN_NAME, TUN_READ_ROOM,
            TUN_TX_QUEUE_LEN, VXLAN_PORT, VXLAN_PREFIX, bridge_mac, bridge_name, is_host_port, is_workload_if,
            vxlan_name,
        },
        reconcile::{Change, Observed, ObservedSegment, ObservedVxlan},
    },
};

mod announce;
mod bridge_ip;
mod dump;
mod neighbour;
mod route;
mod workload;
use dump::{bridge_learned_max, bridge_snoops, dump, vxlan_learned_max};
pub use workload::{WorkloadInterface, harden_workload};

/// NUD_NOARP | NUD_PERMANENT, as `bridge fdb append` sets them.
const FDB_STATE: u16 = 0xC0;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const ESRCH: i32 = 3;
const EINVAL: i32 = 22;
const EADDRNOTAVAIL: i32 = 99;
/// How [`Netlink::apply`] recognises a route whose source address the kernel refused.
const NO_SOURCE: &str = "source address not on this host";

/// Writes a sysctl of the calling thread's network namespace.
pub fn sysctl(path: &str, value: &str) -> Result<(), Error> {
    std::fs::write(format!("/proc/sys/{path}"), value).map_err(|e| Error::Io(format!("sysctl {path}={value}"), e))
}

fn nl(what: impl std::fmt::Display, e: rtnetlink::Error) -> Error {
    Error::Netlink(format!("{what}: {e}"))
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// A netlink connection in the calling task's network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// Interface indexes of the TUN and the bridges by name, filled by
    /// [`Self::observe`] and on first use, so a change does not look its
    /// interface up again; emptied when a link is deleted or a change fails.
    indexes: Arc<Mutex<HashMap<String, u32>>>,
}

impl Netlink {
    /// Must be called inside a tokio runtime (the connection runs as a task).
    pub fn connect() -> Result<Self, Error> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| Error::Netlink(e.to_string()))?;
        tokio::spawn(conn);
        Ok(Self { handle, indexes: Default::default() })
    }

    /// [`Self::link_index`] through the cache (for the TUN and the bridges).
    async fn cached_index(&self, name: &str) -> Result<Option<u32>, Error> {
        if let Some(i) = self.index_cache().get(name) {
            return Ok(Some(*i));
        }
        let found = self.link_index(name).await?;
        if let Some(i) = found {
            self.index_cache().insert(name.to_string(), i);
        }
        Ok(found)
    }

    fn index_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.indexes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, Error> {
        Ok(self.link(name).await?.map(|l| l.header.index))
    }

    /// The MAC of the interface `name` (a workload's host port, for a CNI result).
    pub async fn link_mac(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.link(name).await?.as_ref().and_then(mac))
    }

    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, Error> {
        let mut stream = self.handle.link().get().match_name(name.to_string()).execute();
        match stream.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if matches!(errno(&e), Some(ENODEV)) => Ok(None),
            Err(e) => Err(nl(format!("find {name}"), e)),
        }
    }

    /// Waits (at most 10 s) for the reconcile to make `bridge`: a subnet this
    /// host left out (a member's, inside its LAN) gets one only once this
    /// host's first allocation in it comes back in the map. False, at once,
    /// when `gone` says the bridge will not come (its subnet was removed).
    pub async fn wait_bridge(&self, bridge: &str, gone: impl Fn() -> bool) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.link_index(bridge).await?.is_none() {
            if gone() {
                return Ok(false);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Dataplane(format!("bridge {bridge} did not appear (is the agent connected?)")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(true)
    }

    /// MTU of the interface that holds `ip` (the underlay), if any does.
    pub async fn mtu_of_address(&self, ip: IpAddr) -> Result<Option<u32>, Error> {
        let addrs = dump("list addresses", || self.handle.address().get().execute()).await?;
        let Some(index) = addrs.iter().find_map(|a| {
            a.attributes
                .iter()
                .any(|attr| matches!(attr, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip))
                .then_some(a.header.index)
        }) else {
            return Ok(None);
        };
        Ok(self.links().await?.iter().find(|l| l.header.index == index).and_then(mtu))
    }

    /// Gives the TUN its node address (the whole node block routes through
    /// it), sets its MTU and brings it up. Idempotent.
    pub async fn setup_tun(&self, name: &str, address: Ipv4Addr, prefix: u8, mtu: u32) -> Result<(), Error> {
        let index = self.link_index(name).await?.ok_or_else(|| Error::Netlink(format!("{name} does not exist")))?;
        let mut msg = LinkUnspec::new_with_index(index).mtu(mtu).up().build();
        // No super-packet with more segments than a batch has room for
        // (larger ones the kernel segments before the TUN).
        msg.attributes.push(LinkAttribute::GsoMaxSegs(TUN_READ_ROOM as u32));
        // Room for the reader to fall behind while it is not scheduled (the kernel resizes every queue's ring).
        msg.attributes.push(LinkAttribute::TxQueueLen(TUN_TX_QUEUE_LEN));
        self.handle.link().set(msg).execute().await.map_err(|e| nl(format!("set {name} up"), e))?;
        match self.handle.address().add(index, address.into(), prefix).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(nl(format!("add {address}/{prefix} to {name}"), e)),
        }
    }

    /// The segments (bridges, VXLANs, flood entries) this agent owns, by name prefix.
    pub async fn observe(&self) -> Result<Observed, Error> {
        let links = self.links().await?;
        let mut segments: BTreeMap<u32, ObservedSegment> = BTreeMap::new();
        let mut bridge_index = BTreeMap::new();
        let mut vxlan_index = BTreeMap::new();
        for l in &links {
            let Some(name) = name(l) else { continue };
            if let Some(vni) = name.strip_prefix(BRIDGE_PREFIX).and_then(|v| v.parse::<u32>().ok()) {
                let seg = segments.entry(vni).or_default();
                seg.bridge_mtu = mtu(l);
                seg.bridge_mac = mac(l);
                seg.bridge_uncapped = bridge_learned_max(l).is_some_and(|n| n != SEGMENT_LEARNED_MACS);
                seg.bridge_snooping = bridge_snoops(l);
                bridge_index.insert(vni, l.header.index);
            }
        }
        for l in &links {
            let Some(name) = name(l) else { continue };
            if let Some(vni) = name.strip_prefix(VXLAN_PREFIX).and_then(|v| v.parse::<u32>().ok()) {
                let controller = l
                    .attributes
                    .iter()
                    .find_map(|a| if let LinkAttribute::Controller(c) = a { Some(*c) } else { None });
                segments.entry(vni).or_default().vxlan = Some(ObservedVxlan {
                    local: vxlan_local(l),
                    mtu: mtu(l).unwrap_or(0),
                    in_bridge: controller.is_some() && controller == bridge_index.get(&vni).copied(),
                    learned_max: vxlan_learned_max(l),
                });
                vxlan_index.insert(l.header.index, vni);
            }
        }
        for entry in self.dump_fdb().await? {
            let Some(vni) = vxlan_index.get(&entry.header.ifindex) else { continue };
            let zero_mac = entry
                .attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(m) if m.iter().all(|b| *b == 0)));
            let dst = neighbour_ip(&entry);
            if let (true, Some(dst)) = (zero_mac, dst) {
                segments.entry(*vni).or_default().flood.insert(dst);
            }
        }
        let bridge_vni: BTreeMap<u32, u32> = bridge_index.iter().map(|(vni, index)| (*index, *vni)).collect();
        let mut observed = Observed { segments, ..Default::default() };
        let tun = links.iter().find(|l| name(l) == Some(TUN_NAME)).map(|l| l.header.index);
        {
            let mut cache = self.index_cache();
            cache.clear();
            cache.extend(bridge_index.iter().map(|(vni, i)| (bridge_name(*vni), *i)));
            cache.extend(tun.map(|i| (TUN_NAME.to_string(), i)));
        }
        let routes: Vec<RouteMessage> =
            dump("dump routes", || self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute())
                .await?;
        for r in routes.iter().filter(|r| u8::from(r.header.protocol) == ROUTE_PROTOCOL) {
            let (mut dst, mut oif, mut src, mut mtu) = (None, None, None, None);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => src = Some(*ip),
                    RouteAttribute::Metrics(m) => {
                        mtu = m.iter().find_map(|m| if let RouteMetric::Mtu(v) = m { Some(*v) } else { None })
                    }
                    _ => {}
                }
            }
            let (Some(dst), Some(oif)) = (dst, oif) else { continue };
            let len = r.header.destination_prefix_length;
            if Some(oif) == tun && len == 32 {
                observed.routes.insert(dst, src);
                observed.route_mtus.extend(mtu.map(|m| (dst, m)));
            } else if let (Some(vni), Ok(net)) = (bridge_vni.get(&oif), Ipv4Net::new(dst, len)) {
                observed.subnets.insert((*vni, net));
            }
        }
        for (index, ip) in self.permanent_neighbours().await? {
            if let Some(vni) = bridge_vni.get(&index) {
                observed.pinned.entry(*vni).or_default().insert(ip);
            }
        }
        let proxies: Vec<NeighbourMessage> = dump("dump proxy entries", || {
            let mut request = self.handle.neighbours().get().proxies();
            request.message_mut().header.family = AddressFamily::Inet;
            request.execute()
        })
        .await?;
        for p in &proxies {
            if let (Some(vni), Some(ip)) = (bridge_vni.get(&p.header.ifindex), neighbour_ip(p)) {
                observed.proxies.entry(*vni).or_default().insert(ip);
            }
        }
        Ok(observed)
    }

    /// Carries out `change`; returns what the kernel now holds, which is
    /// `change` itself except for a route whose source address was refused
    /// (it is then installed without one).
    pub async fn apply(&self, change: &Change) -> Result<Change, Error> {
        let result = match *change {
            Change::AddRoute { dst, src: Some(_), mtu } => match self.apply_one(change).await {
                Err(Error::Netlink(e)) if e.contains(NO_SOURCE) => self
                    .apply_one(&Change::AddRoute { dst, src: None, mtu })
                    .await
                    .map(|()| Change::AddRoute { dst, src: None, mtu }),
                other => other.map(|()| change.clone()),
            },
            _ => self.apply_one(change).await.map(|()| change.clone()),
        };
        if result.is_err() {
            self.index_cache().clear();
        }
        result
    }

    async fn apply_one(&self, change: &Change) -> Result<(), Error> {
        match *change {
            Change::RemoveFlood { vni, peer } => self.flood(vni, peer, false).await,
            Change::RemoveSegment { vni } => {
                self.delete_link(&vxlan_name(vni)).await?;
                self.delete_link(&bridge_name(vni)).await
            }
            Change::RemoveVxlan { vni } => self.delete_link(&vxlan_name(vni)).await,
            Change::EnsureSegment { vni, local, mtu } => self.ensure_segment(vni, local, mtu).await,
            Change::AddFlood { vni, peer } => self.flood(vni, peer, true).await,
            Change::RemoveRoute { dst } => {
                let Some(tun) = self.cached_index(TUN_NAME).await? else { return Ok(()) };
                self.del_route(route(Ipv4Net::from(dst), tun, None, None), format!("route {dst}")).await
            }
            Change::AddRoute { dst, src, mtu } => {
                let tun = self.cached_index(TUN_NAME).await?.ok_or_else(|| Error::Netlink(format!("no {TUN_NAME}")))?;
                let mut message = route(Ipv4Net::from(dst), tun, src, None);
                message.attributes.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
                let add = self.handle.route().add(message).replace().execute();
                match add.await {
                    // The exposed address is not on the bridge yet (or no more):
                    // `apply` routes without it now; the pass after the expose fixes it.
                    Err(e) if src.is_some() && errno(&e) == Some(EINVAL) => {
                        Err(Error::Netlink(format!("route {dst} via {TUN_NAME}: {NO_SOURCE}")))
                    }
                    other => other.map_err(|e| nl(format!("route {dst} via {TUN_NAME}"), e)),
                }
            }
            Change::RemoveSubnetRoute { vni, net } => {
                let Some(br) = self.cached_index(&bridge_name(vni)).await? else { return Ok(()) };
                self.del_route(route(net, br, None, Some(SUBNET_ROUTE_METRIC)), format!("route {net}")).await
            }
            Change::AddSubnetRoute { vni, net } => {
                let br = self.bridge(vni).await?;
                let msg = route(net, br, None, Some(SUBNET_ROUTE_METRIC));
                self.handle.route().add(msg).replace().execute().await.map_err(|e| nl(format!("route {net}"), e))
            }
            Change::AddProxy { vni, addr } => self.add_proxy(vni, addr).await,
            Change::Unpin { vni, addr } => self.unpin_neighbour(&bridge_name(vni), addr).await,
            Change::RemoveProxy { vni, addr } => {
                self.del_neighbour(&bridge_name(vni), addr, NeighbourFlags::Proxy).await
            }
        }
    }

    async fn bridge(&self, vni: u32) -> Result<u32, Error> {
        let br = bridge_name(vni);
        self.cached_index(&br).await?.ok_or_else(|| Error::Netlink(format!("{br} does not exist")))
    }

    async fn del_route(&self, msg: RouteMessage, what: String) -> Result<(), Error> {
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ESRCH | ENOENT)) => Ok(()),
            Err(e) => Err(nl(format!("remove {what}"), e)),
        }
    }

    async fn ensure_segment(&self, vni: u32, local: Ipv4Addr, mtu: u32) -> Result<(), Error> {
        let (br, vx) = (bridge_name(vni), vxlan_name(vni));
        let bridge = match self.link_index(&br).await? {
            Some(i) => {
                // A kernel that refuses the cap must not keep the segment from being completed.
                if let Err(e) = self.cap_bridge_learning(&br, i).await {
                    tracing::warn!(bridge = %br, error = %e, "could not cap the MACs the bridge learns");
                }
                i
            }
            None => {
                let msg =
                    LinkBridge::new(&br).mtu(mtu).address(bridge_mac(local)).fdb_max_learned(SEGMENT_LEARNED_MACS);
                self.create(msg.up().build(), &br).await?;
                self.link_index(&br).await?.ok_or_else(|| Error::Netlink(format!("{br} vanished")))?
            }
        };
        workload::bridge_sysctls(&br)?;
        // Also on a bridge made now (the builder has no attribute for it): a
        // kernel that refuses must not keep the segment from being completed.
        if let Err(e) = self.no_snooping(&br, bridge).await {
            tracing::warn!(bridge = %br, error = %e, "could not turn multicast snooping off");
        }
        let vxlan = match self.link_index(&vx).await? {
            Some(i) => i,
            None => {
                // Learning stays on: IPv6 and other unicast then goes to the one
                // peer that holds the MAC instead of being flooded to all. It
                // learns only from what the firewall lets in: VXLAN from the
                // TUN by a peer's node address (an outsider's plain VXLAN is
                // dropped before the kernel's socket, which listens on every
                // address), and at most SEGMENT_LEARNED_MACS of it.
                let msg = LinkVxlan::new(&vx, vni)
                    .local(local)
                    .port(VXLAN_PORT)
                    .learning(true)
                    .limit(SEGMENT_LEARNED_MACS)
                    .mtu(mtu)
                    .build();
                self.create(msg, &vx).await?;
                self.link_index(&vx).await?.ok_or_else(|| Error::Netlink(format!("{vx} vanished")))?
            }
        };
        workload::no_ipv6(&vx);
        let set = |msg| self.handle.link().set(msg).execute();
        set(LinkUnspec::new_with_index(vxlan).mtu(mtu).controller(bridge).build())
            .await
            .map_err(|e| nl(format!("put {vx} into {br}"), e))?;
        set(LinkUnspec::new_with_index(vxlan).up().build()).await.map_err(|e| nl(format!("set {vx} up"), e))?;
        set(LinkUnspec::new_with_index(bridge).mtu(mtu).address(bridge_mac(local)).up().build())
            .await
            .map_err(|e| nl(format!("set {br} up"), e))
    }

    async fn create(&self, msg: LinkMessage, name: &str) -> Result<(), Error> {
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(nl(format!("create {name}"), e)),
        }
    }

    /// Sets link `name` up (e.g. `lo` in a fresh container namespace).
    pub async fn set_up(&self, name: &str) -> Result<(), Error> {
        let index = self.link_index(name).await?.ok_or_else(|| Error::Netlink(format!("no link {name}")))?;
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle.link().set(msg).execute().await.map_err(|e| nl(format!("set {name} up"), e))
    }

    pub async fn delete_link(&self, name: &str) -> Result<(), Error> {
        self.index_cache().clear();
        let Some(index) = self.link_index(name).await? else { return Ok(()) };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENODEV)) => Ok(()),
            Err(e) => Err(nl(format!("delete {name}"), e)),
        }
    }

    /// Deletes every segment this agent owns, the TUN, and with `ports` the workloads' veths.
    pub async fn remove_all(&self, tun: &str, ports: bool) -> Result<(), Error> {
        if ports {
            self.remove_ports().await?;
        }
        for l in self.links().await? {
            if let Some(name) = name(&l)
                && (name.starts_with(VXLAN_PREFIX) || name.starts_with(BRIDGE_PREFIX))
            {
                self.delete_link(name).await?;
            }
        }
        self.delete_link(tun).await
    }
}

/// The IPv4 destination of a neighbour or FDB entry (FDB dumps may carry it raw).
fn neighbour_ip(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) if raw.len() == 4 => {
            Some(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
        }
        _ => None,
    })
}

/// A route of ours: `net dev <oif> scope link proto 87 [src] [metric]`.
fn route(net: Ipv4Net, oif: u32, src: Option<Ipv4Addr>, metric: Option<u32>) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(net.addr(), net.prefix_len())
        .output_interface(oif)
        .scope(RouteScope::Link)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
    if let Some(src) = src {
        b = b.pref_source(src);
    }
    if let Some(metric) = metric {
        b = b.priority(metric);
    }
    b.build()
}

fn name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.as_str()) } else { None })
}

fn mac(l: &LinkMessage) -> Option<Vec<u8>> {
    l.attributes.iter().find_map(|a| if let LinkAttribute::Address(m) = a { Some(m.clone()) } else { None })
}

fn mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| if let LinkAttribute::Mtu(m) = a { Some(*m) } else { None })
}

/// What `pick` finds in a link's kind-specific data.
fn info_data<T>(l: &LinkMessage, pick: impl Fn(&InfoData) -> Option<T>) -> Option<T> {
    let infos = l.attributes.iter().find_map(|a| if let LinkAttribute::LinkInfo(i) = a { Some(i) } else { None })?;
    infos.iter().find_map(|i| if let LinkInfo::Data(data) = i { pick(data) } else { None })
}

fn vxlan_local(l: &LinkMessage) -> Option<Ipv4Addr> {
    info_data(l, |d| match d {
        InfoData::Vxlan(v) => v.iter().find_map(|a| if let InfoVxlan::Local(ip) = a { Some(*ip) } else { None }),
        _ => None,
    })
}
