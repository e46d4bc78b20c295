//! The checks attach, detach and expose share: what a container holds on a
//! subnet, whether its interface is weave's, and how their refusals read.
use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use weave_proto::{local_api::Refusal, v1::Subnet};

use crate::{
    error::Error,
    host::netlink::{Netlink, WorkloadInterface},
    plan::{
        addr_spec::AddrSpec,
        kernel::{bridge_name, format_mac, workload_mac},
    },
};

impl super::Attacher {
    /// Waits for `subnet`'s bridge (the reconcile makes it a moment after the
    /// subnet reaches the map) and names it. A subnet that leaves the map
    /// meanwhile (`subnet rm` racing the attach) is not found, at once.
    pub(super) async fn bridge_of(&self, subnet: &Subnet) -> Result<String, Refusal> {
        let bridge = bridge_name(subnet.vni);
        if self.netlink.wait_bridge(&bridge, || self.removed(subnet)).await.map_err(failed)? {
            Ok(bridge)
        } else {
            Err(removed(subnet))
        }
    }

    /// Whether `subnet` has left the map.
    pub(super) fn removed(&self, subnet: &Subnet) -> bool {
        !self.maps.borrow().subnets.iter().any(|s| s.id == subnet.id)
    }

    /// `e`, or not found if `subnet` left the map meanwhile: a step that
    /// failed because its bridge went with the subnet is the subnet's removal.
    pub(super) fn or_removed(&self, subnet: &Subnet, e: Refusal) -> Refusal {
        if self.removed(subnet) { removed(subnet) } else { e }
    }
}

/// For a CNI runtime that names the interface and is not chaining weave
/// after another plugin's (`CNI_IFNAME` with no `prevResult`): the container's
/// interface on `subnet` is that one (a retried ADD), or there is none and
/// the name is free. The spec asks a plugin that cannot use the name to fail:
/// a runtime looks the result up by it (containerd), and chained plugins
/// (`tuning`, `bandwidth`) act on it.
pub(super) async fn exact_ifname(
    inside: &Netlink,
    container: &str,
    ifname: &str,
    before: &[WorkloadInterface],
    subnet: &Subnet,
) -> Result<(), Refusal> {
    match on_subnet(before, &subnet.cidr) {
        Some((i, _)) if i.name != ifname => Err(Refusal::conflict(format!(
            "container '{container}' already has {} on subnet {}: a second interface {ifname} on it is refused (one \
             per weave subnet per container)",
            i.name, subnet.cidr
        ))),
        Some(_) => Ok(()),
        None if inside.link_index(ifname).await.map_err(failed)?.is_some() => Err(Refusal::conflict(format!(
            "container '{container}' already has an interface {ifname}: CNI_IFNAME must name a new one (after \
             another plugin's interface, in a chain with its prevResult, weave adds an ethwe* of its own)"
        ))),
        None => Ok(()),
    }
}

fn removed(subnet: &Subnet) -> Refusal {
    Refusal::not_found(format!("subnet {} was removed while this was being applied: nothing was changed", subnet.cidr))
}

/// Not found: `who` (attached or exposed: `verb`) holds `has`, not `ip`, on `subnet` (an address names
/// that address, as attach reads it; the network address hints at `net:`).
pub(super) fn not_at(who: &str, verb: &str, ip: Ipv4Addr, has: Ipv4Addr, subnet: &Subnet) -> Refusal {
    let hint = match subnet.cidr.parse::<Ipv4Net>() {
        Ok(net) if net.network() == ip => format!(" (for the subnet: net:{net})"),
        _ => String::new(),
    };
    Refusal::not_found(format!("{who} is not {verb} at {ip}: it has {has} on subnet {}{hint}", subnet.cidr))
}

/// The address IPAM holds for a key on `subnet` (from `held`).
pub(super) fn held_address(held: &BTreeMap<u64, String>, subnet: &Subnet) -> Option<Ipv4Addr> {
    held.get(&subnet.id).and_then(|a| a.parse::<Ipv4Net>().ok()).map(|a| a.addr())
}

/// The interface of `ifaces` with an address inside `cidr`, and that address.
pub(super) fn on_subnet<'i>(ifaces: &'i [WorkloadInterface], cidr: &str) -> Option<(&'i WorkloadInterface, Ipv4Addr)> {
    let net: Ipv4Net = cidr.parse().ok()?;
    ifaces.iter().find_map(|i| {
        i.addresses.iter().find(|(ip, len)| net.contains(ip) && *len == net.prefix_len()).map(|(ip, _)| (i, *ip))
    })
}

/// Refuses weave interface `name` (address `ip`) unless its MAC is the one weave gives `ip`: other
/// hosts take its frames by that alone, and its port would be locked to any other (a remote
/// workload's). One an older agent made is refused too.
pub(super) fn own_mac(name: &str, mac: &[u8], ip: Ipv4Addr) -> Result<(), Refusal> {
    let (have, want) = (format_mac(mac), format_mac(&workload_mac(ip)));
    (have == want).then_some(()).ok_or_else(|| {
        Refusal::invalid(format!(
            "{name} in the container has MAC {have}, not {want}, the MAC weave gives {ip}: \
             detach it and attach again (a weave interface's MAC must not change)"
        ))
    })
}

/// A kernel call that failed: no kind of its own.
/// Published ports (`needs`: a CNI runtime's `portMappings`) on a subnet
/// without egress: the DNAT works and the replies have no way back to the
/// client (the container has no default route), so `podman run -p` timed
/// out without a word (found by a review, 2026-12-05). Refused, saying how.
/// The host forwards them only with `net.ipv4.ip_forward` on.
pub(super) fn egress_for_ports(wanted: &[(AddrSpec, Subnet)], needs: bool) -> Result<(), Refusal> {
    match wanted.iter().find(|(_, s)| needs && !s.egress) {
        Some((_, s)) => Err(Refusal::conflict(format!(
            "published ports need a way back out: subnet {} has no egress (`weavectl subnet set {} --egress on`), \
             and without it their replies cannot reach the client",
            s.cidr,
            if s.name.is_empty() { &s.cidr } else { &s.name }
        ))),
        None if needs && !crate::host::firewall::forwarding_on() => Err(Refusal::conflict(
            "published ports need this host to forward: net.ipv4.ip_forward is 0 (sysctl -w net.ipv4.ip_forward=1)",
        )),
        None => Ok(()),
    }
}

pub(super) fn failed(e: Error) -> Refusal {
    Refusal::failed(e.to_string())
}

/// Refuses two `ADDR`s naming one subnet (`net:default 10.32.0.0/12`, or
/// two addresses in it): a container (or the host, exposed) has one
/// interface and one address per subnet, and the second would fail half-way
/// on the first's interface.
pub(super) fn once_each(found: Vec<(AddrSpec, Subnet)>) -> Result<Vec<(AddrSpec, Subnet)>, Refusal> {
    for (i, (spec, subnet)) in found.iter().enumerate() {
        if let Some((first, _)) = found[..i].iter().find(|(_, s)| s.id == subnet.id) {
            return Err(Refusal::invalid(format!(
                "{first} and {spec} both name subnet {}: name each subnet once (one address per subnet)",
                subnet.cidr
            )));
        }
    }
    Ok(found)
}

/// `wanted` with its one subnet's spec made `address` there (CNI_ARGS `IP=`:
/// `podman run --ip`, a `podman network reload` giving each container its
/// own address back): refused unless there is one subnet and it holds the
/// address. The coordinator then grants it or names its holder.
pub(super) fn fixed_address(
    mut wanted: Vec<(AddrSpec, Subnet)>,
    address: Option<&str>,
) -> Result<Vec<(AddrSpec, Subnet)>, Refusal> {
    let Some(address) = address else { return Ok(wanted) };
    let ip: Ipv4Addr = address.parse().map_err(|_| Refusal::invalid(format!("'{address}' is not an IPv4 address")))?;
    let [(spec, subnet)] = &mut wanted[..] else {
        return Err(Refusal::invalid(format!("a requested address ({ip}) is for one subnet")));
    };
    let net: Ipv4Net = subnet.cidr.parse().map_err(|_| Refusal::failed(format!("subnet '{}'", subnet.cidr)))?;
    if !net.contains(&ip) {
        return Err(Refusal::invalid(format!("the requested address {ip} is not in {net}, this network's subnet")));
    }
    *spec = AddrSpec::Ip(ip, net.prefix_len());
    Ok(wanted)
}
