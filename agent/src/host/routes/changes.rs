//! Whether this host's own routes, links or addresses may have changed since
//! [`super::lan`] last read them: a netlink socket in the route, link and
//! address groups, drained (without waiting) at each read. Reading the
//! tables costs time linear in every route of the host, and a weave host has
//! one /32 per remote workload: two reads on every map change of the
//! cluster took each agent 13.6 ms a change at 3,139 workloads, 63 % of its
//! time under churn (found by a scale review, 2026-12-07). weave's own route
//! changes (its protocol) do not count, nor the links it makes; anything
//! else does, and so does a lost notification (a full socket buffer): then
//! the tables are read again. The kernel queues a notification before the
//! call that changed the table returns, so a change made before a read is
//! always seen by it.
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{RouteNetlinkMessage, link::LinkAttribute, route::RouteAttribute};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::plan::kernel::{ROUTE_PROTOCOL, TUN_NAME, is_host_port};

/// RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_ROUTE.
const GROUPS: [u32; 5] = [1, 5, 7, 9, 11];

pub(super) struct Changes(Option<Socket>);

impl Changes {
    /// Listening from now on; without a socket every call says "changed".
    pub(super) fn new() -> Self {
        let socket = || -> std::io::Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind(&SocketAddr::new(0, 0))?;
            s.set_rx_buf_sz(1 << 20)?;
            for g in GROUPS {
                s.add_membership(g)?;
            }
            s.set_non_blocking(true)?;
            Ok(s)
        };
        match socket() {
            Ok(s) => Self(Some(s)),
            Err(e) => {
                tracing::debug!(error = %e, "route notifications unavailable: the routes are read on every pass");
                Self(None)
            }
        }
    }

    /// Whether anything but weave's own routes and links changed since the
    /// last call (reads every queued notification).
    pub(super) fn since_last(&mut self) -> bool {
        let Some(socket) = &self.0 else { return true };
        let mut changed = false;
        let mut buf = Vec::with_capacity(1 << 16);
        // weave's per-workload routes go through its TUN.
        let tun = nix::net::if_::if_nametoindex(TUN_NAME).ok();
        loop {
            buf.clear();
            match socket.recv(&mut buf, 0) {
                Ok(0) => return true,
                Ok(_) => changed |= any_relevant(&buf, tun),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return changed,
                // ENOBUFS: notifications were lost.
                Err(_) => changed = true,
            }
        }
    }
}

/// Whether a datagram of notifications holds one that is not weave's own
/// (`tun`: the TUN's interface index, if it has one).
fn any_relevant(mut bytes: &[u8], tun: Option<u32>) -> bool {
    while !bytes.is_empty() {
        let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) else { return true };
        let len = message.header.length as usize;
        if relevant(&message.payload, tun) {
            return true;
        }
        if len == 0 {
            return false;
        }
        bytes = bytes.get((len + 3) & !3usize..).unwrap_or_default();
    }
    false
}

/// weave's own: a route of its protocol through its TUN (weave's protocol
/// number alone is anyone's to use: a host route tagged 87 on a LAN
/// interface went unseen for 30 s, and a member's subnet over it was
/// installed meanwhile; found by a review, 2026-12-07), and its links.
fn relevant(payload: &NetlinkPayload<RouteNetlinkMessage>, tun: Option<u32>) -> bool {
    let NetlinkPayload::InnerMessage(m) = payload else { return matches!(payload, NetlinkPayload::Overrun(_)) };
    match m {
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
            let oif = r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
            u8::from(r.header.protocol) != ROUTE_PROTOCOL || tun.is_none() || oif != tun
        }
        RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l) => {
            let name = l.attributes.iter().find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n) } else { None });
            !name.is_some_and(|n| super::weaves(n) || is_host_port(n))
        }
        RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::{
        link::LinkMessage,
        route::{RouteMessage, RouteProtocol},
    };

    use super::*;

    fn bytes(messages: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            let mut m = NetlinkMessage::from(m);
            m.finalize();
            let mut b = vec![0; m.buffer_len()];
            m.serialize(&mut b);
            out.extend_from_slice(&b);
        }
        out
    }

    const TUN: u32 = 7;

    fn route(protocol: u8, oif: u32) -> RouteNetlinkMessage {
        let mut r = RouteMessage::default();
        r.header.protocol = RouteProtocol::from(protocol);
        r.attributes.push(RouteAttribute::Oif(oif));
        RouteNetlinkMessage::NewRoute(r)
    }

    fn link(name: &str) -> RouteNetlinkMessage {
        let mut l = LinkMessage::default();
        l.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::DelLink(l)
    }

    #[test]
    fn weaves_own_routes_and_links_are_not_changes_of_the_host() {
        let ours = vec![route(ROUTE_PROTOCOL, TUN), link("wvtun0"), link("wvbr-5"), link("wvvx-5"), link("wv0a1b2c3d")];
        assert!(!any_relevant(&bytes(ours.clone()), Some(TUN)), "weave's own");
        // Anything else in the same datagram, wherever it is, is a change:
        // weave's protocol number on another interface too.
        for other in [route(2, TUN), route(4, 3), route(ROUTE_PROTOCOL, 3), link("eth1"), link("docker0")] {
            let mut all = ours.clone();
            all.insert(2, other.clone());
            assert!(any_relevant(&bytes(all), Some(TUN)), "{other:?}");
        }
        assert!(any_relevant(&bytes(ours), None), "no TUN: no route is known to be weave's");
        assert!(any_relevant(&[1, 2, 3], Some(TUN)), "what cannot be read counts as a change");
        assert!(!any_relevant(&[], Some(TUN)));
    }
}
