//! Which nodes hold a map watch on this coordinator, recorded in the store
//! for `weavectl node ls` (`store/presence.rs`): when a node's first watch
//! opens or its last one ends, and every `REFRESH_SECS` for the nodes still
//! watching. One task writes everything, in the order it happened, and what
//! arrived together in one transaction (10,000 agents reconnecting at once
//! are a few writes, not 10,000 commits).
use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::store::{PRESENCE_REFRESH_SECS, Store};

/// Where watch streams report their node's watch opening and ending.
#[derive(Clone)]
pub struct Presence(mpsc::UnboundedSender<Event>);

enum Event {
    /// Node `.0` (named `.1`)'s watch opened (`true`) or ended (`false`).
    Watch(u64, String, bool),
    /// The coordinator stopped serving: every watch it still counts open
    /// ended; say so once written.
    Stopped(tokio::sync::oneshot::Sender<()>),
    /// Every node still watching is seen now (the store's clock jumped).
    Refresh,
}

impl Presence {
    /// The tracker, and its task: run it for the coordinator's life.
    pub fn new(store: Store) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), run(store, rx))
    }

    /// Node `node`'s (named `name`) watch opened (`true`) or ended (`false`).
    pub fn watch(&self, node: u64, name: &str, open: bool) {
        let _ = self.0.send(Event::Watch(node, name.to_string(), open));
    }

    /// Records every node watching here as seen now, at once (not at the
    /// next refresh, up to a minute away).
    pub fn refresh(&self) {
        let _ = self.0.send(Event::Refresh);
    }

    /// The coordinator stopped serving: records every watch still counted
    /// open as ended (none of its watches is held any more, whether or not
    /// its stream was seen to end), and returns once written (or not:
    /// the store is out of reach). Called before the store closes. A
    /// stopped coordinator's watches stayed "watching", and their nodes
    /// showed `connected` and were kept from being forgotten for two
    /// refreshes after it stopped (found by a review, 2026-12-06).
    pub async fn stop(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.0.send(Event::Stopped(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut open: HashMap<u64, u32> = HashMap::new();
    let period = std::time::Duration::from_secs(PRESENCE_REFRESH_SECS as u64);
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let mut changed: HashMap<u64, bool> = HashMap::new();
        let mut stopped = Vec::new();
        tokio::select! {
            event = rx.recv() => {
                let Some(first) = event else { return };
                let mut next = Some(first);
                while let Some(event) = next {
                    let (node, name, opened) = match event {
                        Event::Watch(node, name, opened) => (node, name, opened),
                        Event::Stopped(done) => {
                            changed.extend(open.drain().map(|(n, _)| (n, false)));
                            stopped.push(done);
                            next = rx.try_recv().ok();
                            continue;
                        }
                        Event::Refresh => {
                            changed.extend(open.keys().map(|n| (*n, true)));
                            next = rx.try_recv().ok();
                            continue;
                        }
                    };
                    let count = open.entry(node).or_default();
                    let before = *count > 0;
                    *count = if opened { *count + 1 } else { count.saturating_sub(1) };
                    let now_open = *count > 0;
                    if !now_open {
                        open.remove(&node);
                    }
                    // Its first watch opened, or its last one ended: said,
                    // as `weavectl node ls` shows it (a node's agent stopping
                    // left no line here; found by a review, 2026-12-07).
                    if before != now_open {
                        changed.insert(node, now_open);
                        match now_open {
                            true => tracing::info!(node, name, "a node's agent watches the map here"),
                            false => tracing::info!(
                                node, name,
                                "a node's agent no longer watches the map here (stopped, or connected elsewhere)"
                            ),
                        }
                    }
                    next = rx.try_recv().ok();
                }
            }
            _ = refresh.tick() => {
                changed.extend(open.keys().map(|n| (*n, true)));
            }
        }
        if !changed.is_empty() {
            let changes: Vec<(u64, bool)> = changed.into_iter().collect();
            if let Err(e) = store.nodes_seen(&changes).await {
                tracing::debug!(error = %e, nodes = changes.len(), "recording node presence");
            }
        }
        for done in stopped {
            let _ = done.send(());
        }
    }
}

/// How often a coordinator looks for nodes to forget (`--forget-after`).
pub const FORGET_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// How far the store's clock may run ahead of the monotonic clock between
/// two checks before it counts as a jump (seconds): more than a check's
/// slack and the database clock's re-measurement (`store/clock.rs`).
const CLOCK_JUMP_SECS: i64 = 10;

/// Every [`FORGET_CHECK`] until the coordinator stops: sets
/// `weave_connected_nodes` from the store, and forgets the nodes
/// that held no map watch for their token's `--forget-after`
/// ([`Store::forget_unseen`]). Every coordinator of a shared database runs
/// it; each node goes once (the second finds it gone).
pub async fn forget_unseen(state: super::Shared) {
    let mut stopping = state.stopping.clone();
    let mut tick = tokio::time::interval(FORGET_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Time out of touch counts from this coordinator's start, and from the
    // last check that found no node watching at all (see `forget_unseen`).
    // A start is such a pause already (agents reconnect within seconds):
    // no warning for it, only for one that follows watches.
    let mut since = state.started_at;
    let mut cut_off = true;
    // The last check's time on the store's clock and on the monotonic one.
    let mut last: Option<(i64, std::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        if *stopping.borrow() {
            return;
        }
        // The server's clock again (PostgreSQL), before any time is compared.
        if let Err(e) = state.store.sync_clock().await {
            tracing::debug!(error = %e, "cannot read the database server's clock now");
        }
        let now = crate::store::now();
        // A clock that jumped forward (NTP stepping it, a VM resumed or
        // migrated, the database server's clock set) is no time out of
        // touch: every watching node's last refresh looked minutes old, and
        // once any watch opened in the next 5 s (so that not every node
        // looked gone, which pauses this) every node of a shorter
        // --forget-after was forgotten, its agent told to leave (found by a
        // review, 2026-12-07). Time out of touch counts from the jump, and
        // the nodes watching here are recorded as seen now.
        // And one that went back (the database server's clock measured again
        // after a jump of this host's) leaves no start in the future, which
        // would pause forgetting for as long (found by a review, 2026-12-07).
        since = since.min(now);
        let jumped = last.map_or(0, |(was, at)| now - was - at.elapsed().as_secs() as i64);
        last = Some((now, std::time::Instant::now()));
        if jumped > CLOCK_JUMP_SECS {
            tracing::warn!(
                jumped_seconds = jumped,
                "the store's clock jumped forward: nodes' time out of touch (--forget-after) counts from now"
            );
            (since, cut_off) = (now, true);
            state.presence.refresh();
            continue;
        }
        // The store's view for `WeaveNodesNotWatching`, every check.
        if let Ok(n) = state.store.connected_nodes(now).await {
            metrics::gauge!("weave_connected_nodes").set(n as f64);
        }
        match state.store.forget_unseen(now, since).await {
            Ok(None) => {
                if !cut_off {
                    tracing::warn!(
                        "no node holds a map watch on any coordinator: forgetting nodes (--forget-after) is paused \
                         until one does, and their time out of touch counts from then"
                    );
                }
                (since, cut_off) = (now, true);
            }
            Ok(Some(gone)) => {
                cut_off = false;
                for (node, allocations, records) in gone {
                    metrics::counter!("weave_nodes_forgotten_total").increment(1);
                    tracing::info!(
                        node = %node.name, id = node.id, forget_after = node.forget_after_seconds, allocations, records,
                        "node forgotten: it held no map watch for its token's --forget-after (seconds); its \
                         addresses and DNS records are given back"
                    );
                }
            }
            // An outage is said elsewhere (every RPC says it); the next check tries again.
            Err(e) if e.is_unavailable() => tracing::debug!(error = %e, "cannot look for nodes to forget now"),
            Err(e) => tracing::warn!(error = %e, "cannot look for nodes to forget; trying again in 5 s"),
        }
    }
}
