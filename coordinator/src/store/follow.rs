//! Several coordinators on one PostgreSQL database: each keeps its
//! in-memory map (and so its watchers) at the database's latest revision,
//! whichever coordinator wrote it.
//!
//! The event log (`map_events`, gap-free revisions) is the truth; a
//! notification is only a wake-up. Every writer sends `NOTIFY weave_map`
//! inside its transaction (delivered at COMMIT). Each coordinator listens,
//! and re-reads the event log after every notification, after its listener
//! (re)connects, and once a second whatever happens, applying in revision
//! order whatever it has not seen. Its own batches catch up the same way
//! before writing (`batch.rs`), under the writer lock, so changes reach
//! memory strictly in revision order.
use std::{sync::Arc, time::Duration};

use prost::Message as _;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use weave_proto::v1;

use super::{
    RING, Store,
    db::{self, Conn, Pool},
};
use crate::error::{Error, Result};

/// The channel writers notify on.
pub(super) const CHANNEL: &str = "weave_map";
/// How often the event log is re-read without a notification.
const POLL: Duration = Duration::from_secs(1);

/// The changes after `after` in the database `c` sees, in order; None when
/// some were pruned already (the caller needs a snapshot).
pub(super) async fn read_after(c: &mut Conn, after: u64) -> Result<Option<Vec<(u64, v1::MapChange)>>> {
    let rows = db::query("SELECT revision, change FROM map_events WHERE revision > $1 ORDER BY revision")
        .bind(after as i64)
        .fetch_all(&mut *c)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (expect, r) in (after + 1..).zip(rows) {
        let revision = r.try_get::<i64, _>("revision")? as u64;
        if revision != expect {
            return Ok(None);
        }
        let bytes: Vec<u8> = r.try_get("change")?;
        let change =
            v1::MapChange::decode(bytes.as_slice()).map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))?;
        out.push((revision, change));
    }
    Ok(Some(out))
}

impl Store {
    /// Applies `changes` (consecutive, after the map's revision) to memory
    /// and signals the new revision. The caller holds the writer lock.
    pub(super) fn publish(&self, changes: Vec<(u64, v1::MapChange)>) {
        let Some(&(last, _)) = changes.last() else { return };
        {
            let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
            for (rev, change) in changes {
                if rev <= live.map.revision {
                    continue;
                }
                weave_proto::map::apply_change(&mut live.map, rev, &change);
                live.recent.push_back((rev, change));
                if live.recent.len() > RING {
                    live.recent.pop_front();
                }
            }
        }
        self.revision.send_replace(last);
    }

    /// Brings memory up to what `c` sees (the caller holds the writer lock).
    /// Returns whether anything was applied.
    pub(super) async fn catch_up_on(&self, c: &mut Conn) -> Result<bool> {
        let known = self.live.read().unwrap_or_else(|p| p.into_inner()).map.revision;
        let current: Option<i64> =
            db::query_scalar("SELECT revision FROM cluster WHERE id = 1").fetch_optional(&mut *c).await?;
        let Some(current) = current.map(|r| r as u64).filter(|r| *r > known) else { return Ok(false) };
        match read_after(c, known).await? {
            Some(changes) if changes.last().is_some_and(|(r, _)| *r >= current) => self.publish(changes),
            // Pruned past what this coordinator has (it was away long): start over from a snapshot.
            _ => {
                tracing::info!(known, current, "behind the event log: reloading the map");
                let map = super::live::load_snapshot_on(c).await?;
                let revision = map.revision;
                self.live.write().unwrap_or_else(|p| p.into_inner()).reset(map);
                self.revision.send_replace(revision);
            }
        }
        Ok(true)
    }

    /// One catch-up under the writer lock, in one read transaction on a
    /// connection of the write pool (PostgreSQL): an open batch of this
    /// coordinator may hold the cluster-wide write lock until this is done,
    /// so it must not queue behind the read pool's callers.
    pub(super) async fn catch_up(&self) -> Result<()> {
        let mut writer = self.writer.lock().await;
        let mut c = self.locked_reads().begin_read().await?;
        if self.catch_up_on(&mut c).await? {
            // Other coordinators changed nodes or allocations.
            writer.forget_addresses();
        }
        c.commit().await?;
        Ok(())
    }

    /// Starts following the database (PostgreSQL only) until every other
    /// handle on this store is dropped.
    pub(super) fn follow(&self) {
        let Pool::Postgres(read) = &self.read else { return };
        // A session of its own, not one of the read pool's: sqlx's listener
        // takes its connection from the pool it is given, so it held one of
        // the 16 read sessions (18 in all, not 19), and with those kept busy
        // by bogus credentials its reconnection after a database restart
        // queued behind them (found by a review, 2026-12-05).
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(super::open::pg_session(&read.connect_options(), "listen"));
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(pool, wake.clone()));
        let store = self.clone();
        tokio::spawn(async move {
            // The first failure of a run said at WARN, and the end of it:
            // said at DEBUG alone, an outage left this coordinator's watchers
            // behind the others' changes without a word at the default level
            // (found by a review, 2026-12-06).
            let mut failing: Option<std::time::Instant> = None;
            while Arc::strong_count(&store.alive) > 1 {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                match (store.catch_up().await, failing) {
                    (Err(e), None) => {
                        tracing::warn!(
                            error = %e,
                            "cannot read other coordinators' changes from the database; retrying every second"
                        );
                        failing = Some(std::time::Instant::now());
                    }
                    (Err(e), Some(_)) => tracing::debug!(error = %e, "catching up with the event log failed"),
                    (Ok(()), Some(since)) => {
                        tracing::info!(after = ?since.elapsed(), "reading other coordinators' changes again");
                        failing = None;
                    }
                    (Ok(()), None) => {}
                }
            }
            listener.abort();
        });
    }
}

/// Wakes `wake` on every notification on [`CHANNEL`] and after every
/// (re)connection of the listener (notifications may have been missed).
async fn listen(pool: sqlx::PgPool, wake: Arc<Notify>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "no listener connection yet");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for other coordinators' changes");
            tokio::time::sleep(POLL).await;
            continue;
        }
        wake.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => wake.notify_one(),
                // The connection was lost and sqlx reconnected it: notifications may be lost.
                Ok(None) => wake.notify_one(),
                Err(e) => {
                    tracing::debug!(error = %e, "the listener connection failed");
                    tokio::time::sleep(POLL).await;
                    break;
                }
            }
        }
    }
}
