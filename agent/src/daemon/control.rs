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
    client::AuthChannel,
    v1::{NetworkMap, WatchEvent, WatchRequest, map_service_client::MapServiceClient},
};

use super::dns::DnsServer;
use crate::{
    dataplane::Transport,
    error::Error,
    host::{netlink::Netlink, state::StateDir},
    plan::{
        netmap::{self, PeerConfig},
        reconcile::{self, Change, Desired, Observed},
    },
};

use retry::{BACKOFF_MIN, QUICK_RETRIES};
pub use retry::{membership_ended, next_backoff};

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
/// open. Returns only when the coordinator refused this
/// node's credential, with its reason.
pub async fn watch_map(
    mut client: MapServiceClient<AuthChannel>,
    state: StateDir,
    maps: watch::Sender<NetworkMap>,
    connected: Arc<AtomicBool>,
) -> Error {
    // The next retry's delay, and how many quick retries were made since
    // the last event (`follow` resets both on an event, not on a watch that
    // is accepted and then ends: that one backs off).
    let mut retry = (BACKOFF_MIN, 0u32);
    loop {
        // A map without the cluster's segment MTU (saved from a coordinator
        // that had none yet, or none saved) asks for a whole snapshot: a
        // resumed watch sends only changes, and the MTU is in no change.
        let (from, history) = match &*maps.borrow() {
            m if m.segment_mtu == 0 => (0, 0),
            m => (m.revision, m.history),
        };
        match client.watch(WatchRequest { from_revision: from, from_history: history }).await {
            Ok(response) => {
                tracing::info!(from_revision = from, "watching the network map");
                connected.store(true, Ordering::Relaxed);
                if let Err(removed) = follow(response.into_inner(), &state, &maps, &mut retry).await {
                    connected.store(false, Ordering::Relaxed);
                    return removed;
                }
            }
            Err(status) if membership_ended(&status) => return Error::Removed(status.message().to_string()),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "cannot watch the network map; retrying");
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
        tokio::time::sleep(retry.0).await;
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
    mut stream: S,
    state: &StateDir,
    maps: &watch::Sender<NetworkMap>,
    retry: &mut (Duration, u32),
) -> Result<(), Error>
where
    S: futures::Stream<Item = Result<WatchEvent, tonic::Status>> + Unpin,
{
    use futures::{FutureExt, StreamExt};
    let mut unsaved = false;
    let mut first_unsaved = tokio::time::Instant::now();
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
            false => stream.next().await,
        };
        match next {
            Some(Ok(event)) => {
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
                tracing::warn!("the coordinator closed the watch");
                break Ok(());
            }
            Some(Err(status)) if membership_ended(&status) => break Err(Error::Removed(status.message().to_string())),
            Some(Err(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "watch broke");
                break Ok(());
            }
        }
    };
    save(state, maps, &mut unsaved);
    ended
}

fn save(state: &StateDir, maps: &watch::Sender<NetworkMap>, unsaved: &mut bool) {
    if std::mem::take(unsaved)
        && let Err(e) = state.save_map(&maps.borrow())
    {
        tracing::warn!(error = %e, "cannot save the network map");
    }
}

/// Applies the current map whenever it changes (a burst of changes, one
/// pass per [`DEBOUNCE`] at most), when `now` is notified, and every [`RESYNC`].
///
/// A pass after a map change diffs against the kernel state the previous
/// pass left (kept in memory, [`Observed::record`]), so it costs only the
/// changes. The kernel is read again (a full pass) at start, when `now` is
/// notified (attach, expose and hide change the bridges themselves), after
/// any failed change, and every [`RESYNC`] (repairs what someone else changed).
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
        // Read every pass: a DHCP renewal or an interface coming up changes them.
        let networks = crate::host::routes::lan(own_node);
        let (desired, peers, behind_nat, held) = {
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
            (desired, peers, behind_nat, netmap::held_by(&map, own_node))
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
        let started = std::time::Instant::now();
        let full = applied.is_none() || tokio::time::Instant::now() >= next_full;
        if full {
            applied = None;
            next_full = tokio::time::Instant::now() + RESYNC;
        }
        applied = reconcile_once(&netlink, &desired, applied).await;
        let new_segments = desired.segments.keys().any(|vni| !made.contains(vni));
        made = desired.segments.keys().copied().collect();
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
/// records or the domain (most map changes are neither: a member allocating
/// and releasing as fast as its pace allows made every agent rebuild every
/// name of the cluster each time).
pub async fn dns_loop(dns: DnsServer, mut maps: watch::Receiver<NetworkMap>) {
    let mut built: Option<(String, Vec<weave_proto::v1::DnsRecord>)> = None;
    loop {
        let records = {
            let map = maps.borrow_and_update();
            let same = built.as_ref().is_some_and(|(d, r)| *d == map.dns_domain && *r == map.dns_records);
            if !same {
                dns.update(&map);
                built = Some((map.dns_domain.clone(), map.dns_records.clone()));
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
async fn reconcile_once(netlink: &Netlink, desired: &Desired, applied: Option<Observed>) -> Option<Observed> {
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
    let mut unflooded = Vec::new();
    for change in reconcile::diff(desired, &state) {
        match netlink.apply(&change).await {
            Ok(done) => {
                tracing::debug!(?done, "applied");
                if let Change::RemoveFlood { vni, peer } = done {
                    unflooded.push((vni, peer));
                }
                state.record(&done);
            }
            Err(e) => {
                ok = false;
                tracing::warn!(?change, error = %e, "change failed; retrying on the next pass");
            }
        }
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
mod tests {
    use super::{retry::BACKOFF_MAX, *};

    #[test]
    fn only_a_marked_unauthenticated_ends_membership() {
        let mut removed = tonic::Status::unauthenticated("node 'h3' was removed from the cluster");
        removed.metadata_mut().insert("weave-membership", tonic::metadata::MetadataValue::from_static("removed"));
        assert!(membership_ended(&removed));
        assert!(!membership_ended(&tonic::Status::unauthenticated("credential not recognised by this coordinator")));
        for s in [
            tonic::Status::unavailable("connection refused"),
            tonic::Status::unavailable("the coordinator is shutting down"),
            tonic::Status::internal("database"),
            tonic::Status::deadline_exceeded("slow"),
            tonic::Status::unknown("transport error"),
        ] {
            assert!(!membership_ended(&s), "{s:?} is an outage, not a removal");
        }
    }

    /// A change is on disk before the watch waits for the next one, not a
    /// quiet period later: an agent killed then (SIGKILL, no chance to save
    /// on exit) restarts from a map that has it. Failed with the 200 ms
    /// quiet period (e2e_dns: a restarted agent without its coordinator
    /// never resolved the container attached just before).
    #[tokio::test]
    async fn a_change_is_saved_before_the_next_one_is_awaited() {
        use prost::Message;
        use weave_proto::v1::watch_event::Event;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let (maps, mut seen) = watch::channel(NetworkMap::default());
        let (events, stream) = futures::channel::mpsc::unbounded();
        let task = tokio::spawn(async move { follow(stream, &state, &maps, &mut (BACKOFF_MIN, 0)).await });
        let snapshot = |revision| WatchEvent {
            revision,
            event: Some(Event::Snapshot(NetworkMap {
                revision,
                dns_domain: "weave.local.".into(),
                ..Default::default()
            })),
        };
        let saved = || {
            let bytes = std::fs::read(dir.path().join("map.pb")).ok()?;
            Some(NetworkMap::decode(bytes.as_slice()).unwrap().revision)
        };
        for revision in [7, 8] {
            events.unbounded_send(Ok(snapshot(revision))).unwrap();
            seen.changed().await.unwrap();
            assert_eq!(seen.borrow_and_update().revision, revision);
            // One turn for the watch task, no time passes: it has nothing
            // more to read, so it must have saved already.
            tokio::task::yield_now().await;
            assert_eq!(saved(), Some(revision), "revision {revision} applied but not saved while the watch idles");
        }
        // Events waiting together: applied one after the other, the last saved.
        events.unbounded_send(Ok(snapshot(9))).unwrap();
        events.unbounded_send(Ok(snapshot(10))).unwrap();
        seen.changed().await.unwrap();
        tokio::task::yield_now().await;
        assert_eq!(saved(), Some(10));
        drop(events);
        assert!(task.await.unwrap().is_ok(), "a closed watch is resumed, not a removal");
    }

    /// A map change that leaves the records and the domain alone does not
    /// rebuild the index; one that changes a record does.
    #[tokio::test]
    async fn dns_records_are_rebuilt_only_when_they_change() {
        use weave_proto::v1::DnsRecord;
        let dns = DnsServer::new("weave.local.", Vec::new());
        let record = |name: &str| DnsRecord {
            name: format!("{name}.weave.local."),
            address: "10.32.0.1".into(),
            ..Default::default()
        };
        let (maps, seen) = watch::channel(NetworkMap { dns_records: vec![record("a")], ..Default::default() });
        let task = tokio::spawn(dns_loop(dns.clone(), seen));
        let settled = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        settled().await;
        let first = dns.records();
        assert_eq!(first.lookup("a").len(), 1);
        maps.send_modify(|m| m.revision = 2);
        settled().await;
        assert!(Arc::ptr_eq(&first, &dns.records()), "rebuilt for a change without DNS in it");
        maps.send_modify(|m| m.dns_records.push(record("b")));
        settled().await;
        assert_eq!(dns.records().lookup("b").len(), 1, "a new record was not indexed");
        maps.send_modify(|m| m.dns_domain = "other.".into());
        settled().await;
        assert_eq!(dns.records().domain, "other.", "a new domain was not taken");
        drop(maps);
        task.await.unwrap();
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let mut b = BACKOFF_MIN;
        let mut seen = vec![b];
        for _ in 0..20 {
            b = next_backoff(b);
            seen.push(b);
        }
        assert!(seen[1] >= BACKOFF_MIN * 2);
        assert!(seen.iter().all(|d| *d <= BACKOFF_MAX));
        assert_eq!(*seen.last().unwrap(), BACKOFF_MAX);
    }
}
