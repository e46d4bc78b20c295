//! The control loop: a watch on the coordinator's network map (resumed from
//! the last revision, retried with backoff, saved once no event is waiting) and
//! the reconcile pass that turns the current map into peers and segments.
use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;
use weave_proto::{
    client::Api,
    v1::{NetworkMap, WatchEvent, WatchRequest},
};

use super::dns::DnsServer;
use crate::{
    dataplane::Transport,
    error::Error,
    host::{netlink::Netlink, state::StateDir},
    plan::{
        kernel::bridge_name,
        netmap::{self, PeerConfig},
        reconcile::{self, Change, Desired, Observed},
    },
};

use retry::{BACKOFF_MIN, QUICK_RETRIES};
pub use retry::{membership_ended, membership_error, next_backoff, warn_out_of_touch};

mod retry;

/// A full reconcile pass (the kernel read again, not the state the agent
/// last applied) runs at least this often, to repair interfaces, routes and
/// entries someone else changed.
const RESYNC: Duration = Duration::from_secs(30);
/// A watch that stays busy (an event always waiting) saves the map at the
/// latest this long after its first unsaved change.
const SAVE_WITHIN: Duration = Duration::from_secs(2);
/// Passes after map changes start at least this far apart: the changes of a
/// burst that arrive meanwhile are applied together.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Holds the watch until this node stops being a member. Publishes every
/// applied event on `maps` and saves the map to disk (once no further event
/// is waiting, [`follow`]); while the coordinator is unreachable the last
/// map stays in force. `connected` tells the status API whether a watch is
/// open, and `refused` why the coordinator turns the credential away while
/// it does (a coordinator restored from an older backup: the status said
/// "unreachable"; found by a review, 2026-12-06). Returns only when the
/// coordinator said this node is no longer a member, with its reason.
pub async fn watch_map(
    mut api: Api,
    state: StateDir,
    maps: watch::Sender<NetworkMap>,
    connected: Arc<AtomicBool>,
    refused: Arc<std::sync::Mutex<Option<String>>>,
) -> Error {
    let refuse = |why: Option<String>| *refused.lock().unwrap_or_else(|e| e.into_inner()) = why;
    // The next retry's delay, and how many quick retries were made since
    // the last event (`follow` resets both on an event, not on a watch that
    // is accepted and then ends: that one backs off).
    let mut retry = (BACKOFF_MIN, 0u32);
    let mut outage = retry::Outage::default();
    loop {
        // The last attempt did not reach a coordinator (see `wait_or_answered`).
        let mut cut_off = false;
        // A map without the cluster's segment MTU (saved from a coordinator
        // that had none yet, or none saved) asks for a whole snapshot: a
        // resumed watch sends only changes, and the MTU is in no change.
        let (from, history) = match &*maps.borrow() {
            m if m.segment_mtu == 0 => (0, 0),
            m => (m.revision, m.history),
        };
        match api.map.watch(WatchRequest { from_revision: from, from_history: history }).await {
            Ok(response) => {
                if !outage.ongoing() {
                    tracing::info!(from_revision = from, "watching the network map");
                }
                refuse(None);
                connected.store(true, Ordering::Relaxed);
                let watch = (response.into_inner(), from);
                if let Err(removed) = follow(watch, &state, &maps, &mut retry, &mut outage).await {
                    connected.store(false, Ordering::Relaxed);
                    return removed;
                }
            }
            Err(status) if membership_ended(&status) => return membership_error(&status),
            Err(status) => {
                cut_off = weave_proto::client::cut_off(&status);
                // The causes under tonic's "tcp connect error" (No route to
                // host, Connection refused: a review, 2026-12-06).
                let cause =
                    std::error::Error::source(&status).map(weave_proto::client::error_chain).unwrap_or_default();
                // What answers is not the pinned coordinator: the status says
                // so (it said "unreachable", as for an outage; a review, 2026-12-07).
                refuse(match status.code() {
                    tonic::Code::Unauthenticated => Some(status.message().to_string()),
                    _ if cause.contains(weave_proto::client::PIN_MISMATCH) => Some(cause.clone()),
                    _ => None,
                });
                let (code, message) = (status.code(), status.message());
                match outage.failed(&format!("{code:?} {message} {cause}")) {
                    true => tracing::warn!(?code, message, cause, "cannot watch the network map; retrying"),
                    false => tracing::debug!(?code, message, cause, "cannot watch the network map; retrying"),
                }
            }
        }
        connected.store(false, Ordering::Relaxed);
        // The balanced channel picks a dead coordinator again a few times
        // before it leaves it out (a refused connect costs nothing): the
        // first retries come at once, then they slow down (a survivor held
        // the watches ~4 s after a SIGKILL; found by a review, 2026-12-05).
        if retry.1 < QUICK_RETRIES {
            retry.1 += 1;
            // With jitter, as the backoff: not every agent at once.
            tokio::time::sleep(BACKOFF_MIN.mul_f64(1.0 + rand::random::<f64>() * 0.5)).await;
            continue;
        }
        match cut_off {
            true => retry::wait_or_answered(&mut api.status, retry.0).await,
            false => tokio::time::sleep(retry.0).await,
        }
        retry.0 = next_backoff(retry.0);
    }
}

/// Applies the events of one watch stream until it ends (`Ok`: closed or
/// broken, to be resumed) or says this node is no longer a member (`Err`).
///
/// The map is saved as soon as no further event is waiting in the stream:
/// a burst that arrives together is one write, but a change is never left
/// unsaved while the agent waits for the next one. (Saving only after a
/// quiet period lost the last changes to a SIGKILL within it: a restart
/// without the coordinator then served a map without them.) While a save
/// runs, later events queue up and are all applied before the next write:
/// the writes of a long burst are bounded by how long one write takes.
async fn follow<S>(
    (mut stream, from): (S, u64),
    state: &StateDir,
    maps: &watch::Sender<NetworkMap>,
    retry: &mut (Duration, u32),
    outage: &mut retry::Outage,
) -> Result<(), Error>
where
    S: futures::Stream<Item = Result<WatchEvent, tonic::Status>> + Unpin,
{
    use futures::{FutureExt, StreamExt};
    let mut unsaved = false;
    let mut first_unsaved = tokio::time::Instant::now();
    let holds_at = tokio::time::Instant::now() + retry::HOLDS_AFTER;
    let ended = loop {
        let next = match unsaved {
            true if tokio::time::Instant::now() >= first_unsaved + SAVE_WITHIN => {
                save(state, maps, &mut unsaved);
                continue;
            }
            true => match stream.next().now_or_never() {
                Some(next) => next,
                None => {
                    save(state, maps, &mut unsaved);
                    continue;
                }
            },
            false if outage.ongoing() => match tokio::time::timeout_at(holds_at, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    outage.resumed(from);
                    continue;
                }
            },
            false => stream.next().await,
        };
        match next {
            Some(Ok(event)) => {
                outage.resumed(from);
                *retry = (BACKOFF_MIN, 0);
                let revision = event.revision;
                // In place: no copy of the whole map per change.
                let mut applied = Ok(());
                maps.send_if_modified(|map| {
                    applied = netmap::apply(map, event);
                    applied.is_ok()
                });
                match applied {
                    Ok(()) => {
                        if !unsaved {
                            first_unsaved = tokio::time::Instant::now();
                        }
                        unsaved = true;
                        tracing::debug!(revision, "map updated");
                    }
                    Err(e) => tracing::warn!(revision, error = %e, "ignoring a watch event"),
                }
            }
            None => {
                if outage.failed("closed") {
                    tracing::warn!("the coordinator closed the watch");
                }
                break Ok(());
            }
            Some(Err(status)) if membership_ended(&status) => break Err(membership_error(&status)),
            Some(Err(status)) => {
                let (code, message) = (status.code(), status.message());
                if outage.failed(&format!("broke {code:?} {message}")) {
                    tracing::warn!(?code, message, "watch broke");
                }
                break Ok(());
            }
        }
    };
    save(state, maps, &mut unsaved);
    ended
}

/// The last save of the map failed: said once until one succeeds (with the
/// data dir full it was said on every change, four lines for one attach).
static MAP_UNSAVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn save(state: &StateDir, maps: &watch::Sender<NetworkMap>, unsaved: &mut bool) {
    if !std::mem::take(unsaved) {
        return;
    }
    let failed = state.save_map(&maps.borrow()).err();
    let was = MAP_UNSAVED.swap(failed.is_some(), std::sync::atomic::Ordering::Relaxed);
    match failed {
        Some(e) if !was => tracing::warn!(error = %e, "cannot save the network map (said again once it is saved)"),
        Some(e) => tracing::debug!(error = %e, "cannot save the network map"),
        None if was => tracing::info!("saved the network map again"),
        None => {}
    }
}

/// Applies the current map whenever it changes (a burst of changes, one
/// pass per [`DEBOUNCE`] at most), when `now` is notified, and every [`RESYNC`].
///
/// A pass after a map change diffs against the kernel state the previous
/// pass left (kept in memory, [`Observed::record`]), so it costs only the
/// changes. The kernel is read again (a full pass) at start, when `now` is
/// notified (expose and hide change the bridges themselves), after any
/// failed change, and every [`RESYNC`] (repairs what someone else changed).
#[allow(clippy::too_many_arguments)]
pub async fn reconcile_loop(
    netlink: Netlink,
    transport: Arc<dyn Transport>,
    own_node: u64,
    local: Ipv4Addr,
    segment_mtu: u32,
    coordinator: Vec<std::net::IpAddr>,
    mut maps: watch::Receiver<NetworkMap>,
    now: Arc<tokio::sync::Notify>,
) {
    let mut applied: Option<Observed> = None;
    let mut peers_set: Option<Vec<PeerConfig>> = None;
    let mut nat_set: Option<bool> = None;
    let mut next_full = tokio::time::Instant::now();
    let mut skipped = std::collections::BTreeMap::new();
    // The segments the last pass made: one that appears (the first map after
    // a start without a saved one, whose empty map unplugged every port) has
    // its ports put back at once, not at the next full pass 30 s later
    // (found by a review, 2026-12-04).
    let mut made = std::collections::BTreeSet::new();
    let mut mtu_told = false;
    loop {
        // No map yet (none saved, or a damaged one set aside): an empty one would take
        // down every bridge, cutting local workloads apart (a review, 2026-12-05).
        if maps.borrow_and_update().revision == 0 {
            if maps.changed().await.is_err() {
                return;
            }
            continue;
        }
        // Timed from here: the host's routes and the desired state are part of a pass's cost.
        let started = std::time::Instant::now();
        // Every pass: a DHCP renewal or an interface coming up changes them
        // (read again only when something changed, `host/routes.rs`).
        let networks = crate::host::routes::lan(own_node);
        let (desired, peers, behind_nat, held, exposed) = {
            let map = maps.borrow_and_update();
            if map.segment_mtu != 0 && map.segment_mtu != segment_mtu && !std::mem::replace(&mut mtu_told, true) {
                tracing::warn!(
                    cluster = map.segment_mtu,
                    running = segment_mtu,
                    "the cluster's segment MTU is not the one this agent runs with: restart it to take the \
                     cluster's (workloads attached before keep theirs until attached again)"
                );
            }
            let behind_nat = netmap::behind_nat(&map, own_node);
            let (mut peers, problems) = netmap::peers(&map, own_node);
            for p in problems {
                tracing::warn!("{p}");
            }
            let now_skipped = netmap::underlay_conflicts(&map, &coordinator, &networks);
            for (vni, why) in &now_skipped {
                if !skipped.contains_key(vni) {
                    tracing::warn!("{why}: it would cut this host off its underlay; not installed");
                }
            }
            skipped = now_skipped;
            netmap::without_skipped(&mut peers, &map, &skipped);
            let depended_on = netmap::depended_on_in_member_subnets(&map, &networks);
            let desired =
                Desired::from_map(&map, own_node, local, segment_mtu).without(&skipped).without_routes_to(&depended_on);
            (desired, peers, behind_nat, netmap::held_by(&map, own_node), reconcile::exposed_addresses(&map, own_node))
        };
        if peers_set.as_ref() != Some(&peers) {
            transport.set_peers(&peers);
            peers_set = Some(peers);
        }
        if nat_set != Some(behind_nat) {
            if behind_nat {
                tracing::info!(
                    "the coordinator sees this host at another address than it advertises: behind NAT (keepalives to peers unless --nat-keepalive is 0)"
                );
            }
            transport.set_behind_nat(behind_nat);
            nat_set = Some(behind_nat);
        }
        let full = applied.is_none() || tokio::time::Instant::now() >= next_full;
        if full {
            applied = None;
            next_full = tokio::time::Instant::now() + RESYNC;
        }
        applied = reconcile_once(&netlink, &desired, applied, &made).await;
        let new_segments = desired.segments.keys().any(|vni| !made.contains(vni));
        // This host's exposed address on a segment just made (every one at
        // start): after a reboot the bridges came back without them, and an
        // egress subnet's containers had no gateway until the exposures
        // sweep put it back two sweeps later, 5-10 s (found by a review,
        // 2026-12-07).
        for (vni, ip) in exposed.iter().filter(|(vni, _)| !made.contains(*vni) && desired.segments.contains_key(*vni)) {
            let (bridge, len) = (bridge_name(*vni), desired.subnets.get(vni).map_or(32, |n| n.prefix_len()));
            if let Err(e) = netlink.set_address(&bridge, *ip, len, true).await {
                tracing::warn!(bridge, %ip, error = %e, "cannot put this host's exposed address on its bridge");
            }
        }
        // After a pass that failed, only the segments made before: one whose
        // making failed is not "made again" when it succeeds (a review).
        made = match applied.is_some() {
            true => desired.segments.keys().copied().collect(),
            false => made.into_iter().filter(|v| desired.segments.contains_key(v)).collect(),
        };
        // On full passes (incremental ones do not dump the kernel: a bridge
        // someone deleted is made again by a full pass anyway) and when a
        // segment appears.
        let full = full || new_segments;
        let replugged = if full { netlink.replug_ports(|ip| held.contains(&ip)).await } else { Ok(Vec::new()) };
        match replugged {
            Ok(moved) if !moved.is_empty() => {
                tracing::info!(ports = ?moved, "workload ports put back into their bridges")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "putting workload ports back into their bridges"),
        }
        // The source guard from the ports there now: ports that went leave
        // it, and a guard table someone removed comes back.
        if full {
            match crate::host::firewall::guard_ports(&netlink).await {
                // Guarded: a port an unfinished attach left down may come up.
                Ok(_) => match netlink.raise_recorded_ports().await {
                    Ok(raised) if !raised.is_empty() => tracing::info!(ports = ?raised, "workload ports set up"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "setting workload ports up"),
                },
                Err(e) => tracing::warn!(error = %e, "holding workload ports to their addresses"),
            }
        }
        metrics::histogram!("weave_reconcile_duration_seconds", "pass" => if full { "full" } else { "incremental" })
            .record(started.elapsed().as_secs_f64());
        if applied.is_none() {
            metrics::counter!("weave_reconcile_errors_total").increment(1);
        }
        tokio::select! {
            changed = maps.changed() => {
                if changed.is_err() { return }
                // Leading edge: a lone change is applied at once (attach
                // waits for a new subnet's bridge); one that follows a pass
                // within DEBOUNCE waits out the rest of the burst.
                tokio::time::sleep_until(tokio::time::Instant::from_std(started) + DEBOUNCE).await;
            }
            _ = now.notified() => applied = None,
            _ = tokio::time::sleep_until(next_full) => {}
        }
    }
}

/// Keeps the DNS records equal to the map's: one rebuild per change of the
/// records, the domain, the range or the subnets' CIDRs (whose reverse names
/// stay local: a subnet added or removed counted only at the next record
/// change; a review, 2026-12-05). Most map changes are none of these: a
/// member allocating and releasing as fast as its pace allows made every
/// agent rebuild every name of the cluster each time.
pub async fn dns_loop(dns: DnsServer, mut maps: watch::Receiver<NetworkMap>, own_node: u64) {
    type Built = (String, String, Vec<String>, Vec<weave_proto::v1::DnsRecord>);
    let mut built: Option<Built> = None;
    let mut held: Vec<(String, u64)> = Vec::new();
    loop {
        let records = {
            let map = maps.borrow_and_update();
            // The subnets of this node's containers: each one's scopes.
            let mut now: Vec<(String, u64)> = map
                .allocations
                .iter()
                .filter(|a| a.node_id == own_node)
                .map(|a| (a.container.clone(), a.subnet_id))
                .collect();
            now.sort();
            if now != held {
                dns.scopes_from_map(&map, own_node);
                held = now;
            }
            let cidrs: Vec<String> = map.subnets.iter().map(|s| s.cidr.clone()).collect();
            let same = built.as_ref().is_some_and(|(d, range, c, r)| {
                *d == map.dns_domain && *range == map.range && *c == cidrs && *r == map.dns_records
            });
            if !same {
                dns.update(&map);
                built = Some((map.dns_domain.clone(), map.range.clone(), cidrs, map.dns_records.clone()));
            }
            (!same).then_some(map.dns_records.len())
        };
        if let Some(records) = records {
            tracing::debug!(records, "dns records updated");
        }
        if maps.changed().await.is_err() {
            return;
        }
    }
}

/// One pass from `applied` (the kernel state the last pass left), or from
/// the kernel as read now when there is none. Returns the state this pass
/// left, or `None` when a change failed (the next pass then reads the kernel).
/// A segment of `made` (made by an earlier pass) made again was deleted or
/// changed behind the agent's back: said, and counted (it was put back
/// without a word; found by a review, 2026-12-07).
async fn reconcile_once(
    netlink: &Netlink,
    desired: &Desired,
    applied: Option<Observed>,
    made: &std::collections::BTreeSet<u32>,
) -> Option<Observed> {
    let mut state = match applied {
        Some(state) => state,
        None => match netlink.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read interfaces");
                return None;
            }
        },
    };
    let mut ok = true;
    let (mut unflooded, mut proxied) = (Vec::new(), Vec::new());
    for change in reconcile::diff(desired, &state) {
        match netlink.apply(&change).await {
            Ok(done) => {
                tracing::debug!(?done, "applied");
                match done {
                    Change::EnsureSegment { vni, .. } if made.contains(&vni) => {
                        let bridge = bridge_name(vni);
                        tracing::warn!(
                            vni,
                            bridge,
                            "a segment's bridge or VXLAN device was deleted or changed: made again"
                        );
                        metrics::counter!("weave_segment_repairs_total").increment(1);
                    }
                    Change::RemoveFlood { vni, peer } => unflooded.push((vni, peer)),
                    Change::AddProxy { vni, addr } => proxied.push((vni, addr)),
                    _ => {}
                }
                state.record(&done);
            }
            Err(e) => {
                ok = false;
                tracing::warn!(?change, error = %e, "change failed; retrying on the next pass");
            }
        }
    }
    // Containers here that knew a now-remote address at its old port's MAC
    // learn the bridge's (`host/netlink/announce.rs`).
    if let Err(e) = netlink.announce_proxies(&proxied) {
        tracing::debug!(error = %e, addresses = proxied.len(), "proxy-ARP entries not announced");
    }
    match netlink.forget_learned(&unflooded).await {
        Ok(0) => {}
        Ok(forgotten) => tracing::debug!(forgotten, "learned MACs behind departed peers forgotten"),
        Err(e) => {
            tracing::warn!(error = %e, "learned MACs behind departed peers not forgotten (they age out in 300 s)")
        }
    }
    ok.then_some(state)
}

#[cfg(test)]
mod tests;
