//! The network-map watch: a snapshot, then every change in revision order.
//! Changes are read back from the event log, so a watcher can never skip one;
//! the revision channel only says when to look.
use std::sync::atomic::Ordering;

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weave_proto::v1::{
    GetMapRequest, MapChange, NetworkMap, WatchEvent, WatchRequest, map_change::Change, map_service_server::MapService,
    watch_event,
};

use super::Shared;
use crate::store::{Caller, Events};

pub struct Map(pub Shared);

const BATCH: i64 = 1000;

/// What a watch stream sends.
type Item = Result<WatchEvent, Status>;
/// Where a watch's task puts its events. Boxed, and the task's rarely taken
/// paths boxed too (`Box::pin`): with 10,000 watches open, every byte of a
/// channel slot (32 are allocated at once) and of the task counts 10,000
/// times in the coordinator's memory.
type Out = mpsc::Sender<Box<Item>>;

/// Concurrent watches one credential may hold. An agent needs one (two for
/// a moment while it reconnects); each holds a task, a buffer and, when it
/// starts, a copy of the whole map, so a leaked or hostile credential must
/// not be able to open thousands.
pub const MAX_WATCHES_PER_CREDENTIAL: u32 = 4;

/// One open watch: counted in the total and against its credential until
/// the stream task ends, however it ends.
struct WatcherGuard {
    state: Shared,
    hash: String,
    /// The node watching (none for the admin), for `weavectl node ls`.
    node: Option<(u64, String)>,
}

impl WatcherGuard {
    fn acquire(state: &Shared, hash: &str, caller: &Caller) -> Result<Self, Status> {
        let mut open = state.watches_by_credential.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(hash.to_string()).or_default();
        if *count >= MAX_WATCHES_PER_CREDENTIAL {
            return Err(Status::resource_exhausted(format!(
                "this credential already has {count} watches open (at most {MAX_WATCHES_PER_CREDENTIAL}): \
                 close one first"
            )));
        }
        *count += 1;
        state.watchers.fetch_add(1, Ordering::Relaxed);
        let node = match caller {
            Caller::Node { id, name } => Some((*id, name.clone())),
            Caller::Admin => None,
        };
        if let Some((id, name)) = &node {
            state.presence.watch(*id, name, true);
            *state.watches_by_node.lock().unwrap_or_else(|p| p.into_inner()).entry(*id).or_default() += 1;
        }
        Ok(Self { state: state.clone(), hash: hash.to_string(), node })
    }
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.state.watchers.fetch_sub(1, Ordering::Relaxed);
        if let Some((id, name)) = &self.node {
            self.state.presence.watch(*id, name, false);
            one_less(&self.state.watches_by_node, id);
        }
        one_less(&self.state.watches_by_credential, &self.hash);
    }
}

/// One watch fewer under `key` in `counts` (gone at none).
fn one_less<K: std::hash::Hash + Eq>(counts: &std::sync::Mutex<std::collections::HashMap<K, u32>>, key: &K) {
    let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

async fn send_snapshot(state: &Shared, tx: &Out) -> Option<u64> {
    match state.store.snapshot().await {
        Ok(map) => {
            let revision = map.revision;
            let event = WatchEvent { revision, event: Some(watch_event::Event::Snapshot(map)) };
            tx.send(Box::new(Ok(event))).await.ok().map(|_| revision)
        }
        Err(e) => {
            let _ = tx.send(Box::new(Err(e.into()))).await;
            None
        }
    }
}

/// Why the watch of `caller` must end now, if its credential stopped
/// working (the node was removed, joined again, or the admin credential was
/// rotated). A watch is authenticated when it opens and again on every wake.
async fn revoked(state: &Shared, caller: &Caller, hash: &str) -> Result<Option<Status>, ()> {
    match state.store.caller(hash).await {
        Ok(Some(now)) if now == *caller => Ok(None),
        Ok(_) => Ok(Some(match caller {
            Caller::Admin => Status::unauthenticated("the admin credential was rotated"),
            Caller::Node { id, name } => match state.store.node(&id.to_string()).await {
                Ok(_) => super::membership_ended(
                    format!("node '{name}' joined again elsewhere: this credential was replaced"),
                    "replaced",
                ),
                Err(_) => match state.store.removed_node(hash).await {
                    Ok(Some((name, forgotten))) => super::removed(&name, forgotten),
                    _ => super::removed(name, false),
                },
            },
        })),
        // The database is out of reach: nobody can revoke anything meanwhile
        // (that is a write), and the credential was good when last checked.
        // The watch goes on from memory and checks again on its next wake.
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, "cannot recheck a watcher's credential now; keeping its watch");
            Err(())
        }
        // Another database error ends the stream; the agent retries as after any outage.
        Err(e) => Ok(Some(e.into())),
    }
}

/// Ends the watch (with the reason) if the caller's credential stopped working.
/// Whether the watch must end (its credential stopped working; it was told
/// why). `Err`: the database cannot tell now; check again on the next wake.
async fn ended(state: &Shared, caller: &Caller, hash: &str, tx: &Out) -> Result<bool, ()> {
    let Some(status) = Box::pin(revoked(state, caller, hash)).await? else { return Ok(false) };
    tracing::info!(?caller, message = status.message(), "closing a watch whose credential stopped working");
    let _ = tx.send(Box::new(Err(status))).await;
    Ok(true)
}

/// Whether `change` may have ended `caller`'s credential.
fn concerns(caller: &Caller, change: &MapChange) -> bool {
    let Caller::Node { id, .. } = caller else { return false };
    match &change.change {
        Some(Change::NodeRemoved(removed)) => removed == id,
        Some(Change::NodeUpserted(node)) => node.id == *id,
        _ => false,
    }
}

/// How often an admin watch checks that its credential is still the one.
/// A node's map watch comes from where the coordinator sees the node now:
/// behind a NAT whose public address changed, that is the node's observed
/// endpoint (peers try it after the node's own); from one of its own
/// endpoints, it has none (no longer behind the NAT: the old one stayed, a
/// dead address for peers to fall back to; a review, 2026-12-07). Recorded
/// in the background, only when it differs
/// ([`crate::store::Store::refresh_observed`]); a watch from nowhere peers
/// could reach (loopback, link-local) says nothing.
fn refresh_observed(state: &Shared, node: u64, from: Option<std::net::SocketAddr>) {
    let Some((endpoints, current)) = state.store.with_map(|m| {
        m.nodes.iter().find(|n| n.id == node).map(|n| (n.endpoints.clone(), n.observed_endpoint.clone()))
    }) else {
        return;
    };
    let Some(observed) = super::join::seen_from(from, &endpoints).filter(|o| *o != current) else { return };
    let state = state.clone();
    tokio::spawn(async move {
        match state.store.refresh_observed(node, &endpoints, &observed).await {
            Ok(Some(n)) => tracing::info!(
                node = n.name,
                observed,
                "a node's watch came from a new address: its observed endpoint follows"
            ),
            Ok(None) => {}
            Err(e) => tracing::debug!(node, error = %e, "cannot record a node's observed endpoint"),
        }
    });
}

/// How often an admin's open stream checks its credential again (rotated
/// through another coordinator of a shared database; `admin_only.rs` too).
pub(crate) const ADMIN_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

async fn stream(_guard: WatcherGuard, state: Shared, (caller, hash): (Caller, String), from: u64, tx: Out) {
    let mut revisions = state.store.revisions();
    let mut stopping = state.stopping.clone();
    let mut credentials = state.credentials_epoch.subscribe();
    let mut seen = if from == 0 {
        match Box::pin(send_snapshot(&state, &tx)).await {
            Some(r) => r,
            None => return,
        }
    } else {
        from
    };
    // The credential is checked when the watch opens and again whenever it
    // may have stopped working: the admin credential was rotated (the
    // epoch), or a change concerns the caller's own node (removed, or joined
    // again with a new credential). Not on every wake: with 10,000 watchers,
    // a database read each per change was most of a change's fan-out time.
    let mut check = true;
    // The admin credential may also be rotated through another coordinator
    // of a shared database, which this one's epoch does not hear of: an admin
    // watch checks it again every ADMIN_RECHECK (admin watches are few).
    let admin = matches!(caller, Caller::Admin);
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + ADMIN_RECHECK, ADMIN_RECHECK);
    loop {
        let checked = check;
        if check {
            match ended(&state, &caller, &hash, &tx).await {
                Ok(true) => return,
                Ok(false) => check = false,
                Err(()) => {}
            }
        }
        match Box::pin(state.store.events_after(seen, BATCH)).await {
            Ok(Events::NeedSnapshot) => {
                if !checked {
                    match ended(&state, &caller, &hash, &tx).await {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(()) => check = true,
                    }
                }
                match Box::pin(send_snapshot(&state, &tx)).await {
                    Some(r) => seen = r,
                    None => return,
                }
            }
            Ok(Events::Changes(changes)) => {
                if !checked && changes.iter().any(|(_, c)| concerns(&caller, c)) {
                    match ended(&state, &caller, &hash, &tx).await {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(()) => check = true,
                    }
                }
                let caught_up = (changes.len() as i64) < BATCH;
                for (revision, change) in changes {
                    let event = WatchEvent { revision, event: Some(watch_event::Event::Change(change)) };
                    if tx.send(Box::new(Ok(event))).await.is_err() {
                        return;
                    }
                    seen = revision;
                }
                if !caught_up {
                    // A reader a whole batch or more behind loops without
                    // waiting, so the select below never ran: a credential
                    // rotated meanwhile went unnoticed until it caught up
                    // (thousands of changes later; found by a review,
                    // 2026-12-07). Looked at between batches too.
                    if credentials.has_changed().unwrap_or(false) {
                        credentials.borrow_and_update();
                        check = true;
                    }
                    if admin && futures::FutureExt::now_or_never(recheck.tick()).is_some() {
                        check = true;
                    }
                } else {
                    let stop = tokio::select! {
                        r = revisions.wait_for(|r| *r > seen) => r.is_err(),
                        r = credentials.changed() => {
                            check = true;
                            r.is_err()
                        }
                        _ = recheck.tick(), if admin => {
                            check = true;
                            false
                        }
                        _ = tx.closed() => return,
                        _ = stopping.wait_for(|s| *s) => true,
                    };
                    if stop {
                        // Ending the stream lets the agent reconnect (to this coordinator
                        // restarted, or another one) from the revision it has.
                        let _ = tx.send(Box::new(Err(Status::unavailable("the coordinator is shutting down")))).await;
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Box::new(Err(e.into()))).await;
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl MapService for Map {
    type WatchStream = futures::stream::Map<ReceiverStream<Box<Item>>, fn(Box<Item>) -> Item>;

    #[tracing::instrument(skip_all, fields(from = request.get_ref().from_revision))]
    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.0.caller_costing(&request, super::pace::MAP_READ).await?;
        tracing::debug!(caller = ?caller.0, "watch opened");
        let guard = WatcherGuard::acquire(&self.0, &caller.1, &caller.0)?;
        if let Caller::Node { id, .. } = &caller.0 {
            refresh_observed(&self.0, *id, request.remote_addr());
        }
        let (tx, rx) = mpsc::channel(256);
        // A revision of another history (a restored backup's) may name other changes: a snapshot.
        let WatchRequest { from_revision, from_history } = *request.get_ref();
        // Unanswered (the database out of reach): a snapshot, from memory.
        let from = match self.0.store.continues(from_history, from_revision).await {
            Ok(true) => from_revision,
            _ => 0,
        };
        tokio::spawn(stream(guard, self.0.clone(), caller, from, tx));
        let unbox: fn(Box<Item>) -> Item = |item| *item;
        Ok(Response::new(ReceiverStream::new(rx).map(unbox)))
    }

    async fn get_map(&self, request: Request<GetMapRequest>) -> Result<Response<NetworkMap>, Status> {
        self.0.map_reader(&request).await?;
        Ok(Response::new(self.0.store.snapshot().await?))
    }
}
