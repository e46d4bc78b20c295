//! Proxy-ARP entries, announced: an address that becomes remote (its holder
//! left this host, or a new holder elsewhere took an address a container
//! here once reached locally) is answered by the bridge from now on, but
//! the containers on this host that knew it at the old holder's MAC go on
//! sending there (that MAC is `0a:58:<ip>` on every host: a moved address
//! keeps it) until their entry ages out. Nothing carries those frames: no
//! port has the MAC any more, and IPv4 unicast never crosses over VXLAN. An
//! address that left this host was unreachable from its old neighbours for
//! 9-50 s (found by a review, 2026-12-07). So each proxy entry added is
//! announced once on its bridge, as a switch port learns from a gratuitous
//! ARP: an ARP request from the bridge's MAC for the address itself, which
//! updates the entries that exist and creates none. It stays on this host
//! (`bridge weave` drops ARP towards VXLAN devices).
use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily as Family, LinkAddr, MsgFlags, SockFlag, SockType, sendto, socket};

use super::*;

impl Netlink {
    /// `ip neigh replace proxy <addr> dev wvbr-<vni>`.
    pub(super) async fn add_proxy(&self, vni: u32, addr: Ipv4Addr) -> Result<(), Error> {
        let br = self.bridge(vni).await?;
        let request = self.handle.neighbours().add(br, IpAddr::V4(addr)).flags(NeighbourFlags::Proxy);
        request.replace().execute().await.map_err(|e| nl(format!("proxy entry {addr}"), e))
    }

    /// Announces the proxy-ARP entries a pass added (`added`: each one's
    /// VNI and address): a gratuitous ARP for each from its bridge's MAC, on
    /// that bridge. One interface listing and one socket for them all (a
    /// first start adds one per remote workload). Returns how many were sent;
    /// best effort, as the control loop calls it: the entries answer anyway.
    pub fn announce_proxies(&self, added: &[(u32, Ipv4Addr)]) -> std::io::Result<usize> {
        if added.is_empty() {
            return Ok(0);
        }
        // Each bridge's link address as the system lists it (no hand-built socket address).
        let links: HashMap<String, LinkAddr> = nix::ifaddrs::getifaddrs()?
            .filter(|a| a.interface_name.starts_with(BRIDGE_PREFIX))
            .filter_map(|a| Some((a.interface_name, *a.address?.as_link_addr()?)))
            .collect();
        let fd = socket(Family::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None)?;
        let mut sent = 0;
        for &(vni, addr) in added {
            let Some(link) = links.get(&bridge_name(vni)) else { continue };
            let Some(mac) = link.addr().filter(|m| link.halen() == 6 && m.iter().any(|b| *b != 0)) else { continue };
            let frame = garp(mac, addr);
            if sendto(fd.as_raw_fd(), &frame, link, MsgFlags::empty())? == frame.len() {
                sent += 1;
            }
        }
        Ok(sent)
    }
}

/// An Ethernet broadcast ARP request for `addr` from `addr` at `mac`, padded
/// to Ethernet's 60 bytes.
fn garp(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]);
    // Ethernet, IPv4, 6- and 4-byte addresses, a request.
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&addr.octets());
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
        let f = garp([2, 0x57, 10, 47, 0, 1], Ipv4Addr::new(10, 32, 0, 50));
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..14], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0x57, 10, 47, 0, 1, 0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1], "Ethernet/IPv4 request");
        assert_eq!(&f[22..28], &[2, 0x57, 10, 47, 0, 1], "sender MAC: the bridge's");
        assert_eq!((&f[28..32], &f[38..42]), (&[10, 32, 0, 50][..], &[10, 32, 0, 50][..]), "sender = target");
        assert_eq!(&f[32..38], &[0; 6]);
    }
}
