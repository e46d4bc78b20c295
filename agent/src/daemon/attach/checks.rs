//! The checks attach, detach and expose share: what a container holds on a
//! subnet, whether its interface is weave's, and how their refusals read.
use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use weave_proto::{local_api::Refusal, v1::Subnet};

use crate::{
    error::Error,
    host::netlink::WorkloadInterface,
    plan::{
        addr_spec::AddrSpec,
        kernel::{format_mac, workload_mac},
    },
};

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
