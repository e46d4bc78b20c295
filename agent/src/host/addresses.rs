//! This host's own underlay addresses: which to advertise as endpoints, and
//! a stream of "they may have changed" from the kernel (rtnetlink address
//! events, IPv4 and IPv6).
use std::{net::IpAddr, time::Duration};

use futures::StreamExt;
use rtnetlink::MulticastGroup;
use tokio::sync::mpsc;

use crate::{
    error::Error,
    plan::kernel::{BRIDGE_PREFIX, TUN_NAME, VXLAN_PREFIX},
};

/// Whether an interface is one the agent made (its addresses are overlay ones).
fn is_ours(name: &str) -> bool {
    name == TUN_NAME || name.starts_with(BRIDGE_PREFIX) || name.starts_with(VXLAN_PREFIX)
}

/// The addresses to advertise: the first IPv4 address and the first IPv6
/// address that is neither link-local nor loopback, outside the agent's own
/// interfaces (the coordinator refuses those as endpoints). Empty when the
/// host has neither.
pub fn advertised() -> Result<Vec<IpAddr>, Error> {
    let addrs = if_addrs::get_if_addrs().map_err(|e| Error::Io("list addresses".into(), e))?;
    let ips: Vec<IpAddr> =
        addrs.iter().filter(|i| !is_ours(&i.name)).map(|i| i.ip()).filter(|ip| !ip.is_loopback()).collect();
    let v4 = ips.iter().find(|ip| matches!(ip, IpAddr::V4(v4) if !v4.is_link_local()));
    let v6 = ips.iter().find(|ip| matches!(ip, IpAddr::V6(v6) if !v6.is_unicast_link_local()));
    Ok(v4.into_iter().chain(v6).copied().collect())
}

/// Every address of this host outside the agent's own interfaces.
pub fn all() -> Result<Vec<IpAddr>, Error> {
    let addrs = if_addrs::get_if_addrs().map_err(|e| Error::Io("list addresses".into(), e))?;
    Ok(addrs.iter().filter(|i| !is_ours(&i.name)).map(|i| i.ip()).collect())
}

/// Sends `()` on `tx` once the host's addresses changed and then stayed
/// put for `quiet` (a burst of events, such as an address replaced by
/// another, is one change). Runs until `tx` is closed.
pub async fn watch(tx: mpsc::Sender<()>, quiet: Duration) -> Result<(), Error> {
    let (conn, _handle, mut events) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr])
            .map_err(|e| Error::Io("watch the host's addresses (rtnetlink)".into(), e))?;
    let conn = tokio::spawn(conn);
    while events.next().await.is_some() {
        // Debounce: wait until the events stop.
        while let Ok(Some(_)) = tokio::time::timeout(quiet, events.next()).await {}
        if tx.send(()).await.is_err() {
            break;
        }
    }
    conn.abort();
    Ok(())
}
