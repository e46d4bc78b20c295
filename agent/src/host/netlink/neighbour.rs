//! Neighbour-table entries: the VXLAN devices' FDB flood entries and the
//! bridges' permanent (pinned) and proxy-ARP entries.
use super::*;

impl Netlink {
    /// `bridge fdb append|del 00:00:00:00:00:00 dev wvvx-<vni> dst <peer>`. The
    /// stock builder always sends EXCL, so a second destination would fail.
    pub(super) async fn flood(&self, vni: u32, peer: Ipv4Addr, add: bool) -> Result<(), Error> {
        let vx = vxlan_name(vni);
        let Some(index) = self.cached_index(&vx).await? else {
            return if add { Err(Error::Netlink(format!("{vx} does not exist"))) } else { Ok(()) };
        };
        let mut msg = vxlan_remote(index, vec![0; 6], peer);
        msg.header.state = NeighbourState::Other(FDB_STATE);
        let req = if add {
            let mut r = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
            r.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
            r
        } else {
            let mut r = NetlinkMessage::from(RouteNetlinkMessage::DelNeighbour(msg));
            r.header.flags = NLM_F_REQUEST | NLM_F_ACK;
            r
        };
        let what = format!("fdb {} {vx} dst {peer}", if add { "append" } else { "del" });
        self.acked(req, &what, |code| if add { code == EEXIST } else { code == ENOENT }).await
    }

    /// Every bridge-family FDB entry: bridges', ports' and VXLAN devices'.
    pub(super) async fn dump_fdb(&self) -> Result<Vec<NeighbourMessage>, Error> {
        dump("dump fdb", || {
            let mut request = self.handle.neighbours().get();
            request.message_mut().header.family = AddressFamily::Bridge;
            request.execute()
        })
        .await
    }

    /// Forgets the MACs each VXLAN device learned behind a peer it no longer
    /// floods to (`gone`: the VNI and peer of each flood entry a pass
    /// removed: the peer left the segment, or the cluster). Else unicast to
    /// them would go on to that peer until the entries age out (300 s), the
    /// entries a member taught by forging source MACs among them. One FDB
    /// dump per pass, however many peers went. Best effort, as the control
    /// loop calls it: the flood entries are gone already, and the next pass
    /// would not find these again (what is left ages out).
    pub async fn forget_learned(&self, gone: &[(u32, Ipv4Addr)]) -> Result<usize, Error> {
        if gone.is_empty() {
            return Ok(0);
        }
        let mut devices = HashMap::new();
        for (vni, _) in gone {
            if let Some(index) = self.cached_index(&vxlan_name(*vni)).await? {
                devices.insert(index, *vni);
            }
        }
        let mut forgotten = 0;
        for (index, peer, mac) in self.dump_fdb().await?.iter().filter_map(learned_remote) {
            if !devices.get(&index).is_some_and(|vni| gone.contains(&(*vni, peer))) {
                continue;
            }
            let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelNeighbour(vxlan_remote(index, mac, peer)));
            req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
            // Gone meanwhile (aged out, or the device removed): nothing to forget.
            self.acked(req, &format!("fdb del (learned) dst {peer}"), |code| code == ENOENT || code == ENODEV).await?;
            forgotten += 1;
        }
        Ok(forgotten)
    }

    /// Sends `req` (flags set) and waits for the kernel's answers: an error
    /// whose errno `benign` does not accept fails, as `what: <error>`.
    async fn acked(
        &self,
        mut req: NetlinkMessage<RouteNetlinkMessage>,
        what: &str,
        benign: impl Fn(i32) -> bool,
    ) -> Result<(), Error> {
        req.finalize();
        let mut handle = self.handle.clone();
        let mut response = handle.request(req).map_err(|e| nl(what.to_string(), e))?;
        while let Some(message) = response.next().await {
            if let NetlinkPayload::Error(err) = message.payload
                && err.raw_code() != 0
                && !benign(-err.raw_code())
            {
                return Err(Error::Netlink(format!("{what}: {}", err.to_io())));
            }
        }
        Ok(())
    }

    /// Sets the cap on MACs bridge `br` (`index`) learns, on a bridge made
    /// without it (by an older agent): RTM_NEWLINK on the existing link
    /// (the stock builders send RTM_SETLINK, which leaves a bridge's own
    /// attributes alone, or NLM_F_EXCL/REPLACE, which the kernel refuses).
    pub(super) async fn cap_bridge_learning(&self, br: &str, index: u32) -> Result<(), Error> {
        let mut msg = LinkBridge::new(br).fdb_max_learned(SEGMENT_LEARNED_MACS).build();
        msg.header.index = index;
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        self.acked(req, &format!("cap learning on {br}"), |_| false).await
    }

    /// Multicast snooping off on bridge `br` (`index`), also on one an older
    /// agent made. Snooping steers nothing on a segment without a querier
    /// (none: no weave bridge is one, and queries from weave ports are
    /// dropped), so the bridge floods multicast either way; all it did was
    /// keep a table of the groups workloads joined, which one container's
    /// 4,096 IGMP reports filled on every host of its segment (they flood over
    /// VXLAN), and a full table switched snooping off for good (found by a
    /// review, 2026-12-04).
    pub(super) async fn no_snooping(&self, br: &str, index: u32) -> Result<(), Error> {
        let mut msg = LinkBridge::new(br).append_info_data(InfoBridge::MulticastSnooping(false)).build();
        msg.header.index = index;
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        self.acked(req, &format!("multicast snooping off on {br}"), |_| false).await
    }

    /// Every permanent IPv4 neighbour entry (pinned workloads), by the
    /// interface index it is on.
    pub(super) async fn permanent_neighbours(&self) -> Result<Vec<(u32, Ipv4Addr)>, Error> {
        let all = dump("dump neighbours", || {
            let mut request = self.handle.neighbours().get();
            request.message_mut().header.family = AddressFamily::Inet;
            request.execute()
        })
        .await?;
        let permanent = all.iter().filter(|n| n.header.state == NeighbourState::Permanent);
        Ok(permanent.filter_map(|n| Some((n.header.ifindex, super::neighbour_ip(n)?))).collect())
    }

    /// A permanent neighbour entry for a local workload on its bridge. The
    /// host then never has to ARP for it: its ARP would come from an address
    /// outside the subnet, which a workload with reverse-path filtering (and
    /// no route back to that address) ignores.
    pub async fn pin_neighbour(&self, bridge: &str, ip: Ipv4Addr, mac: &[u8]) -> Result<(), Error> {
        let index = self.link_index(bridge).await?.ok_or_else(|| Error::Netlink(format!("no bridge {bridge}")))?;
        let request = self.handle.neighbours().add(index, IpAddr::V4(ip)).link_layer_address(mac);
        request.replace().execute().await.map_err(|e| nl(format!("neighbour {ip} on {bridge}"), e))
    }

    /// Removes what [`Self::pin_neighbour`] added; fine if absent.
    pub async fn unpin_neighbour(&self, bridge: &str, ip: Ipv4Addr) -> Result<(), Error> {
        self.del_neighbour(bridge, ip, NeighbourFlags::empty()).await
    }

    /// Deletes a neighbour entry (`flags`: `Proxy` for a proxy-ARP entry) on a bridge; fine if absent.
    pub(super) async fn del_neighbour(&self, bridge: &str, ip: Ipv4Addr, flags: NeighbourFlags) -> Result<(), Error> {
        let Some(index) = self.cached_index(bridge).await? else { return Ok(()) };
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.header.flags = flags;
        msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENOENT)) => Ok(()),
            Err(e) => Err(nl(format!("remove neighbour entry {ip} on {bridge}"), e)),
        }
    }

    /// Locks a workload's bridge port to its MAC: a sticky static FDB entry
    /// for `mac` on `port` (no frame with that source, from VXLAN or another
    /// port, moves it), then the port locked (a frame it brings in whose
    /// source MAC has no entry on it is dropped). A container spoofing
    /// another's MAC would otherwise move that MAC to itself in every host's
    /// FDB. Idempotent.
    pub async fn lock_port(&self, port: &str, mac: &[u8]) -> Result<(), Error> {
        // One at a time in the agent (attach, Docker's Join and the replug
        // after a restart each have their own connection): two ports locking
        // one MAC at once both passed the check below, and the second add
        // moved the first's entry (found by a review).
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = ONE_AT_A_TIME.lock().await;
        let index = self.link_index(port).await?.ok_or_else(|| Error::Netlink(format!("{port} does not exist")))?;
        // A MAC another workload's port is locked to stays there: a container
        // that took a neighbour's MAC and is attached again (the attach reads
        // the container's MAC) would otherwise move the neighbour's sticky
        // entry to itself and cut the neighbour off (found by a review).
        let fdb = self.dump_fdb().await?;
        // Nor may it take a MAC the bridge holds as its own or its ports'
        // (local entries: the bridge's MAC, which proxy ARP gives every
        // workload for remote addresses; the VXLAN device's; the host ends
        // of the veths) or one pinned statically: the replacing add below
        // would move that entry to this port, with every frame to it (found
        // by a review: the bridge's MAC took the neighbours' routed traffic).
        // A MAC only learned (a remote workload's, over VXLAN) may move.
        let other = |e: &&NeighbourMessage| {
            e.header.ifindex != index
                && e.attributes.iter().any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(m) if m == mac))
        };
        let mac_text = crate::plan::kernel::format_mac(mac);
        if fdb.iter().filter(other).any(|e| e.header.flags.contains(NeighbourFlags::Sticky)) {
            return Err(Error::Netlink(format!(
                "MAC {mac_text} is locked to another workload's port: a container may not take another's MAC"
            )));
        }
        if fdb.iter().filter(other).any(|e| matches!(e.header.state, NeighbourState::Permanent | NeighbourState::Noarp))
        {
            return Err(Error::Netlink(format!(
                "MAC {mac_text} is the bridge's or a port's own: a container may not take it"
            )));
        }
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Noarp;
        msg.header.flags = NeighbourFlags::Controller | NeighbourFlags::Sticky;
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        self.acked(req, &format!("sticky fdb entry on {port}"), |_| false).await?;
        // Learning off too: a locked port still learns the source MAC of
        // link-local frames (01:80:c2:00:00:0X, e.g. LLDP) before the lock is
        // checked, so one such frame would open the lock for any MAC (found
        // by a review). The sticky entry above is all the port needs. And no
        // unicast to a MAC the bridge does not know: the workload's own is
        // always known (that entry), so such a frame was only a copy (of a
        // member's or a neighbour's flood) for a workload that drops it.
        use netlink_packet_route::link::InfoBridgePort;
        let lock = rtnetlink::LinkBridgePort::new(index)
            .append_info_data(InfoBridgePort::Locked(true))
            .append_info_data(InfoBridgePort::Learning(false))
            .append_info_data(InfoBridgePort::UnicastFlood(false))
            .build();
        self.handle.link().set_port(lock).execute().await.map_err(|e| nl(format!("lock bridge port {port}"), e))
    }
}

/// The FDB entry "`mac` is behind `peer`" in VXLAN device `index`'s own
/// table (`self`: not the bridge's), without a state.
fn vxlan_remote(index: u32, mac: Vec<u8>, peer: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac));
    msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(peer)));
    msg
}

/// A VXLAN FDB entry's device, remote and MAC, if the device learned it: a
/// non-zero MAC (the all-zero ones are flood entries) in a state with
/// neither `NUD_PERMANENT` nor `NUD_NOARP` (weave's flood entries and what
/// `bridge fdb add … permanent|static` makes), as the kernel's own VXLAN
/// ageing tells them apart.
fn learned_remote(entry: &NeighbourMessage) -> Option<(u32, Ipv4Addr, Vec<u8>)> {
    const NUD_NOARP: u16 = 0x40;
    const NUD_PERMANENT: u16 = 0x80;
    if u16::from(entry.header.state) & (NUD_PERMANENT | NUD_NOARP) != 0 {
        return None;
    }
    let mac = entry.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) if m.iter().any(|b| *b != 0) => Some(m.clone()),
        _ => None,
    })?;
    Some((entry.header.ifindex, neighbour_ip(entry)?, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: u16, mac: [u8; 6], dst: Option<Ipv4Addr>) -> NeighbourMessage {
        let mut e = NeighbourMessage::default();
        e.header.family = AddressFamily::Bridge;
        e.header.ifindex = 7;
        e.header.state = NeighbourState::from(state);
        e.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        if let Some(dst) = dst {
            e.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        }
        e
    }

    #[test]
    fn only_what_a_vxlan_device_learned_is_forgotten() {
        let remote = Ipv4Addr::new(10, 47, 0, 2);
        let (peer, mac) = (Some(remote), [2, 0, 0, 0, 0, 1]);
        let got = learned_remote(&entry(0x02, mac, peer));
        assert_eq!(got, Some((7, remote, mac.to_vec())), "learned (reachable)");
        assert!(learned_remote(&entry(0x04, mac, peer)).is_some(), "learned (stale)");
        assert!(learned_remote(&entry(FDB_STATE, [0; 6], peer)).is_none(), "a flood entry");
        assert!(learned_remote(&entry(0x02, [0; 6], peer)).is_none(), "an all-zero MAC");
        assert!(learned_remote(&entry(0xc0, mac, peer)).is_none(), "permanent and noarp (bridge fdb add … permanent)");
        assert!(learned_remote(&entry(0x42, mac, peer)).is_none(), "noarp (bridge fdb add … static)");
        assert!(learned_remote(&entry(0x80, mac, peer)).is_none(), "permanent");
        assert!(learned_remote(&entry(0x02, mac, None)).is_none(), "no remote: the bridge's own entry");
    }
}
