//! Keeps this node's endpoints in the coordinator up to date with the
//! host's addresses (unless `--endpoint` pinned them): a host that moves
//! (DHCP renewal, a laptop on another network, a VM migrated) is found by
//! peers that speak first, not only by those it speaks to.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use weave_proto::{
    client::{Api, connect_lazy},
    token::Pin,
    v1::{NetworkMap, UpdateEndpointsRequest},
};

use crate::host::{addresses, netlink::Netlink, state::Identity};

/// How long the addresses must stay put before they are announced.
const QUIET: Duration = Duration::from_millis(500);
/// Between attempts while the coordinator cannot be reached.
const RETRY: Duration = Duration::from_secs(2);
/// One attempt's limit.
const CALL: Duration = Duration::from_secs(5);

/// The endpoints to announce now: each advertised address with `port`.
fn wanted(port: u16) -> Vec<String> {
    match addresses::advertised() {
        Ok(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, port).to_string()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this host's addresses");
            Vec::new()
        }
    }
}

/// `--endpoint` pinned this node's endpoints: never changed by the agent,
/// but a pinned address that was this host's and went away is said (WARN,
/// once each time): peers that speak first reach the host only once it
/// speaks from its new address, and lose it again when one restarts. It
/// went without a word (found by a review, 2026-12-06). An address never
/// on the host (a NAT's, forwarded to it) is not watched.
pub async fn warn_pinned_gone(node_id: u64, maps: watch::Receiver<NetworkMap>) {
    let (tx, mut changed) = mpsc::channel(1);
    let watcher = tokio::spawn(async move {
        if let Err(e) = addresses::watch(tx, QUIET).await {
            tracing::debug!(error = %e, "not watching this host's addresses");
        }
    });
    let pinned = || {
        let map = maps.borrow();
        let node = map.nodes.iter().find(|n| n.id == node_id);
        node.map(|n| n.endpoints.iter().filter_map(|e| e.parse::<SocketAddr>().ok()).map(|e| e.ip()).collect())
            .unwrap_or_else(Vec::new)
    };
    let here = || addresses::all().unwrap_or_default();
    let mut was_here: Vec<IpAddr> = pinned().into_iter().filter(|ip| here().contains(ip)).collect();
    while changed.recv().await.is_some() {
        let now = here();
        for gone in was_here.iter().filter(|ip| !now.contains(ip)) {
            tracing::warn!(
                endpoint = %gone,
                "a pinned endpoint is no longer an address of this host: peers reach it only once it speaks to them; \
                 pin the new one with `agent join --endpoint <address>`, or join without --endpoint to follow the \
                 host's addresses"
            );
        }
        was_here = pinned().into_iter().filter(|ip| now.contains(ip)).collect();
    }
    watcher.abort();
}

/// Tells the coordinator this node's endpoints are `endpoints`, within 5 s,
/// over a connection of its own made now: the agent's long-lived one may be
/// bound to an address that just went away (its TCP dead until HTTP/2
/// keepalive notices, tens of seconds later). Also `agent join --endpoint`
/// on a host that joined before.
pub async fn announce(identity: &Identity, pin: Pin, endpoints: &[String]) -> Result<(), String> {
    let request = UpdateEndpointsRequest { node: String::new(), endpoints: endpoints.to_vec() };
    let call = async {
        let channel = connect_lazy(&identity.coordinator, pin).map_err(|e| e.to_string())?;
        let api = Api::new(channel, &identity.credential).map_err(|e| e.to_string())?;
        api.nodes.clone().update_endpoints(request).await.map_err(|s| s.message().to_string())
    };
    tokio::time::timeout(CALL, call).await.unwrap_or_else(|_| Err("timed out".into())).map(drop)
}

/// Runs until aborted: announces the host's endpoints whenever they differ
/// from the last ones announced (at start: from the map's).
pub async fn keep(identity: Identity, pin: Pin, maps: watch::Receiver<NetworkMap>) {
    let (node_id, port) = (identity.node_id, identity.listen_port);
    let (tx, mut changed) = mpsc::channel(1);
    let watcher = tokio::spawn(async move {
        if let Err(e) = addresses::watch(tx, QUIET).await {
            tracing::warn!(error = %e, "not watching this host's addresses: endpoints stay as they are");
        }
    });
    let mut announced: Vec<String> =
        maps.borrow().nodes.iter().find(|n| n.id == node_id).map(|n| n.endpoints.clone()).unwrap_or_default();
    loop {
        let want = wanted(port);
        // No address at all (between a removal and an add): nothing to announce.
        if !want.is_empty() && !announced.starts_with(&want) {
            match announce(&identity, pin, &want).await {
                Ok(_) => {
                    tracing::info!(endpoints = ?want, "this host's addresses changed: endpoints updated");
                    announced = want;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot update this node's endpoints; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        if changed.recv().await.is_none() {
            break;
        }
    }
    watcher.abort();
}

/// Every 10 s, the MTU of the underlay link (the one holding `ip`), which
/// was read at start only: a link lowered at runtime lost every large
/// frame between hosts without a word (found by a review, 2026-12-07). A
/// change is said, with what it means for the cluster's segment MTU
/// (`cluster`, 0 for none); nothing is rebuilt (every host's segments keep
/// the cluster's MTU).
pub async fn watch_underlay_mtu(netlink: Netlink, ip: IpAddr, mut underlay: u32, cluster: u32) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Ok(Some(now)) = netlink.mtu_of_address(ip).await else { continue };
        if now == underlay {
            continue;
        }
        match crate::plan::kernel::mtu_warning(now, cluster) {
            Some(why) => {
                tracing::warn!(from = underlay, to = now, segment_mtu = cluster, "the underlay's MTU changed: {why}")
            }
            None => tracing::info!(
                from = underlay,
                to = now,
                "the underlay's MTU changed; it fits the cluster's segment MTU"
            ),
        }
        underlay = now;
    }
}
