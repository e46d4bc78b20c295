//! Group commit: concurrent writes share one SQLite transaction and one
//! fsync, and none is acknowledged before that transaction is durable.
//!
//! The single write connection holds at most one open transaction, the
//! batch. A write ([`Store::begin`]) waits for the writer lock, opens the
//! batch if there is none (and spawns the one task that will commit it),
//! and runs inside its own `SAVEPOINT`. [`Store::commit`] releases the
//! savepoint, adds the write's changes to the batch and waits for the
//! batch's COMMIT. A write that fails (or whose caller goes away) before
//! that is rolled back to its savepoint: it takes nothing of the others
//! with it, and its revision numbers are rolled back too, so the batch's
//! changes stay consecutive.
//!
//! The committer waits for the writer lock like every write. tokio's mutex
//! is fair (first come, first served), so it gets the lock after every write
//! that was already queued when the batch opened: those join the batch, and
//! whatever arrives while it commits forms the next one. One client alone
//! pays one commit per write, as before; a hundred share one fsync.
//!
//! Every step that must not stop halfway runs in a spawned task holding the
//! lock (releasing a savepoint and queueing the changes; committing and
//! publishing), so a caller's future dropped at any await leaves either the
//! whole write in the batch or none of it.
use std::collections::{BTreeSet, HashMap};

use tokio::sync::{OwnedMutexGuard, oneshot};
use weave_proto::v1::{self, map_change::Change};

use super::{
    Store,
    db::{self, Conn, Engine},
};
use crate::{
    error::{Error, Result},
    ipam,
};

const SAVEPOINT: &str = "SAVEPOINT weave_write";
const ROLLBACK_TO: &str = "ROLLBACK TO weave_write";
const RELEASE: &str = "RELEASE weave_write";

/// What the writer lock guards: the write connection's open batch.
#[derive(Default)]
pub(crate) struct Writer {
    open: Option<Batch>,
    /// A write entered its savepoint and did not release it (it failed, or
    /// its caller went away): roll it back before anything else runs.
    dirty: bool,
    /// The node block addresses in use, as the open batch sees them (None:
    /// not loaded, or forgotten after a rollback of the whole batch).
    node_addresses: Option<BTreeSet<u128>>,
    /// The same for the subnets that allocations asked for, by subnet id.
    subnet_addresses: HashMap<i64, BTreeSet<u128>>,
    /// Batches committed since the store opened.
    commits: u64,
}

/// One transaction shared by the writes that joined it.
struct Batch {
    tx: Conn,
    changes: Vec<(u64, v1::MapChange)>,
    /// One per write whose savepoint was released into the batch.
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

/// One write: the writer lock, inside the write's savepoint of the batch.
pub(crate) struct Tx {
    writer: OwnedMutexGuard<Writer>,
    pub(super) changes: Vec<(u64, v1::MapChange)>,
}

impl Tx {
    pub(super) fn c(&mut self) -> &mut Conn {
        // A Tx exists only while its batch is open (see `Store::begin`).
        &mut self.writer.open.as_mut().expect("a write runs inside an open batch").tx
    }

    /// The node block addresses in use, including those of the writes
    /// already in this batch (read once, then kept up to date in memory, so
    /// a join does not scan the node table).
    pub(super) async fn node_addresses(&mut self) -> Result<&BTreeSet<u128>> {
        if self.writer.node_addresses.is_none() {
            let used: Vec<String> = db::query_scalar("SELECT address FROM nodes").fetch_all(self.c()).await?;
            let set = used.iter().filter_map(|a| a.parse().ok()).map(ipam::key).collect();
            self.writer.node_addresses = Some(set);
        }
        Ok(self.writer.node_addresses.get_or_insert_default())
    }

    /// The addresses in use in subnet `id`, kept like [`Tx::node_addresses`]
    /// (an allocation does not scan every allocation of its subnet).
    pub(super) async fn subnet_addresses(&mut self, id: i64) -> Result<&BTreeSet<u128>> {
        if !self.writer.subnet_addresses.contains_key(&id) {
            let used: Vec<String> = db::query_scalar("SELECT address FROM allocations WHERE subnet_id = $1")
                .bind(id)
                .fetch_all(self.c())
                .await?;
            let set = used.iter().filter_map(|a| a.parse().ok()).map(ipam::key).collect();
            self.writer.subnet_addresses.insert(id, set);
        }
        Ok(self.writer.subnet_addresses.entry(id).or_default())
    }
}

impl Writer {
    /// Forgets the kept address sets: they are read again when next needed.
    pub(super) fn forget_addresses(&mut self) {
        self.node_addresses = None;
        self.subnet_addresses.clear();
    }

    /// Rolls back a write that was left inside its savepoint.
    async fn settle(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(batch) = self.open.as_mut() {
            match db::query(ROLLBACK_TO).execute(&mut batch.tx).await {
                Ok(_) => {
                    db::query(RELEASE).execute(&mut batch.tx).await?;
                }
                // The write went away before its SAVEPOINT ran: nothing to undo.
                // (SQLite: "no such savepoint"; PostgreSQL: SQLSTATE 3B001.)
                Err(sqlx::Error::Database(e))
                    if e.message().contains("no such savepoint") || e.code().as_deref() == Some("3B001") => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.dirty = false;
        Ok(())
    }

    /// Gives up the open batch (rolled back): every write in it fails.
    fn abort(&mut self, why: &Error) {
        count_failure();
        self.dirty = false;
        self.forget_addresses();
        if let Some(batch) = self.open.take() {
            for w in batch.waiters {
                let _ = w.send(Err(batch_failed(why)));
            }
        }
    }
}

fn batch_failed(why: &Error) -> Error {
    match why {
        // Each write of the batch is told the disk is full (as the one that
        // found it), not that the database is out of reach.
        Error::Database(e) if crate::error::disk_full(e) => Error::Exhausted(format!(
            "the coordinator's database disk is full: the shared write transaction failed: {why}"
        )),
        _ => Error::Database(sqlx::Error::Io(std::io::Error::other(format!(
            "the shared write transaction failed: {why}"
        )))),
    }
}

/// Counts a batch that did not commit (`weave_store_commit_failures_total`).
fn count_failure() {
    metrics::counter!("weave_store_commit_failures_total").increment(1);
}

impl Store {
    /// Starts a write: waits for the writer lock, joins (or opens) the batch
    /// and enters the write's savepoint.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        let mut writer = self.writer.clone().lock_owned().await;
        if let Err(e) = writer.settle().await {
            writer.abort(&e);
            return Err(e);
        }
        if writer.open.is_none() {
            let mut tx = self.write.begin_write().await?;
            if self.write.engine() == Engine::Postgres {
                // Another coordinator may have written since this one's last
                // batch: memory takes those changes first (so that this
                // batch's follow them in order), and the kept address sets
                // are read again. Within this batch, the write lock keeps
                // every other writer out.
                if self.catch_up_on(&mut tx).await? {
                    writer.forget_addresses();
                }
            }
            writer.open = Some(Batch { tx, changes: Vec::new(), waiters: Vec::new() });
            let store = self.clone();
            tokio::spawn(async move { store.commit_batch().await });
        }
        // Set first: if this future is dropped while SAVEPOINT runs, the
        // next holder of the lock rolls back whatever it did.
        writer.dirty = true;
        let mut tx = Tx { writer, changes: Vec::new() };
        db::query(SAVEPOINT).execute(tx.c()).await?;
        Ok(tx)
    }

    /// Puts `tx` into its batch and waits until the batch is committed and
    /// published (in-memory map, event ring, revision signal). Dropping the
    /// returned future only stops waiting: once called, the write is either
    /// in the batch or rolled back, never half of it.
    pub(crate) async fn commit(&self, tx: Tx) -> Result<()> {
        let done =
            tokio::spawn(release(tx)).await.map_err(|e| Error::Bug(format!("the commit task failed: {e}")))??;
        done.await.map_err(|_| Error::Bug("the batch ended without an answer".into()))?
    }

    /// The batch's own task: once the writes queued before it have run,
    /// commits them with one fsync and publishes their changes in order.
    async fn commit_batch(&self) {
        let mut writer = self.writer.clone().lock_owned().await;
        if let Err(e) = writer.settle().await {
            tracing::error!(error = %e, "rolling back a write failed; failing its whole batch");
            writer.abort(&e);
            return;
        }
        let Some(mut batch) = writer.open.take() else { return };
        let notified = match batch.changes.last() {
            // Other coordinators' followers wake at COMMIT (follow.rs).
            Some(&(last, _)) if self.write.engine() == Engine::Postgres => {
                db::query("SELECT pg_notify($1, $2)")
                    .bind(super::follow::CHANNEL)
                    .bind(last.to_string())
                    .execute(&mut batch.tx)
                    .await
            }
            _ => Ok(0),
        };
        if let Err(e) = notified.map_err(Error::from) {
            tracing::error!(error = %e, writes = batch.waiters.len(), "group commit failed");
            count_failure();
            writer.forget_addresses();
            for w in batch.waiters {
                let _ = w.send(Err(batch_failed(&e)));
            }
            return;
        }
        if let Err(e) = batch.tx.commit().await {
            let e = Error::from(e);
            tracing::error!(error = %e, writes = batch.waiters.len(), "group commit failed");
            count_failure();
            writer.forget_addresses();
            for w in batch.waiters {
                let _ = w.send(Err(batch_failed(&e)));
            }
            return;
        }
        writer.commits += 1;
        metrics::counter!("weave_store_commits_total").increment(1);
        metrics::counter!("weave_store_committed_writes_total").increment(batch.waiters.len() as u64);
        self.publish(batch.changes);
        for w in batch.waiters {
            let _ = w.send(Ok(()));
        }
        drop(writer);
    }
}

/// Releases `tx`'s savepoint into its batch; returns where the batch's
/// outcome will arrive.
async fn release(mut tx: Tx) -> Result<oneshot::Receiver<Result<()>>> {
    db::query(RELEASE).execute(tx.c()).await?;
    let writer = &mut *tx.writer;
    writer.dirty = false;
    for (_, change) in &tx.changes {
        match &change.change {
            Some(Change::NodeUpserted(node)) => {
                if let (Some(set), Ok(ip)) = (writer.node_addresses.as_mut(), node.address.parse()) {
                    set.insert(ipam::key(ip));
                }
            }
            Some(Change::NodeRemoved(_)) => writer.node_addresses = None,
            Some(Change::AllocationAdded(a)) => {
                let ip = a.address.split('/').next().and_then(|ip| ip.parse().ok());
                match (writer.subnet_addresses.get_mut(&(a.subnet_id as i64)), ip) {
                    (Some(set), Some(ip)) => {
                        set.insert(ipam::key(ip));
                    }
                    (Some(_), None) => writer.subnet_addresses.clear(),
                    (None, _) => {}
                }
            }
            // Which address went is not in the change: read the sets again.
            Some(Change::AllocationRemoved(_) | Change::SubnetRemoved(_)) => writer.subnet_addresses.clear(),
            _ => {}
        }
    }
    let (done, outcome) = oneshot::channel();
    let batch = writer.open.as_mut().ok_or_else(|| Error::Bug("a write outlived its batch".into()))?;
    batch.changes.append(&mut tx.changes);
    batch.waiters.push(done);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use super::*;
    use crate::store::{Caller, ClusterSettings, Events, JoinRequest, NewToken};

    fn settings() -> ClusterSettings {
        ClusterSettings {
            range: "10.32.0.0/12".parse().unwrap(),
            node_range: "10.47.0.0/16".parse().unwrap(),
            default_subnet: "10.32.0.0/16".parse().unwrap(),
            dns_domain: "weave.local.".into(),
            segment_mtu: None,
        }
    }

    /// What one allocation request asks for.
    struct Ask {
        container: String,
        subnet: &'static str,
        explicit: Option<&'static str>,
        dns_name: Option<&'static str>,
    }

    fn ask(container: &str) -> Ask {
        Ask { container: container.into(), subnet: "default", explicit: None, dns_name: None }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_writes_in_a_shared_batch_fail_alone_and_revisions_stay_consecutive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.db");
        let store = Store::open(&path).await.unwrap();
        store.init_cluster(&settings()).await.unwrap();
        let secret_hash = "ab".repeat(32);
        let token = NewToken {
            id: "t1".into(),
            secret_hash: secret_hash.clone(),
            ttl_seconds: None,
            uses: None,
            description: String::new(),
            forget_after: 0,
        };
        store.create_token(token).await.unwrap();
        let join = JoinRequest {
            token_id: "t1".into(),
            token_secret_hash: secret_hash,
            name: "host1".into(),
            public_key: [7; 32],
            endpoints: vec![],
            credential_hash: "cd".repeat(32),
            proven: false,
            observed: String::new(),
        };
        let node = store.join(join).await.unwrap().node;
        let caller = Caller::Node { id: node.id, name: node.name.clone() };
        store.add_record(&Caller::Admin, "taken", "192.0.2.9").await.unwrap();
        let base = *store.revisions().borrow();

        let mut asks: Vec<Ask> = (0..40).map(|i| ask(&format!("c{i}"))).collect();
        // The same container twice: one allocation, both get it.
        asks.push(ask("c0"));
        // Two containers asking for the same address: exactly one gets it.
        asks.push(Ask { explicit: Some("10.32.0.200"), ..ask("x1") });
        asks.push(Ask { explicit: Some("10.32.0.200"), ..ask("x2") });
        // Refused before writing anything.
        asks.push(Ask { explicit: Some("10.99.0.1"), ..ask("outside") });
        asks.push(Ask { subnet: "10.200.0.0/24", ..ask("nowhere") });
        // Refused after its allocation row and event were written: the
        // savepoint must take back both.
        asks.push(Ask { dns_name: Some("taken"), ..ask("late") });

        // Every write queues behind the held lock, then all run as one batch.
        let held = store.writer.clone().lock_owned().await;
        let commits = held.commits;
        let queued = Arc::new(AtomicUsize::new(0));
        let total = asks.len();
        let tasks: Vec<_> = asks
            .into_iter()
            .map(|a| {
                let (store, caller, queued) = (store.clone(), caller.clone(), queued.clone());
                tokio::spawn(async move {
                    let explicit = a.explicit.map(|ip| (ip.parse().unwrap(), None));
                    queued.fetch_add(1, Ordering::SeqCst);
                    let r = store.allocate(&caller, node.id, &a.container, a.subnet, explicit, a.dns_name).await;
                    (a.container, r)
                })
            })
            .collect();
        while queued.load(Ordering::SeqCst) < total {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Each task queued on the lock in the same poll that counted it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(held);

        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for t in tasks {
            match t.await.unwrap() {
                (c, Ok(a)) => ok.push((c, a)),
                (c, Err(e)) => failed.push((c, e)),
            }
        }
        assert_eq!(store.writer.lock().await.commits, commits + 1, "all {total} writes shared one commit");

        let dynamic: BTreeSet<String> =
            ok.iter().filter(|(c, _)| c.starts_with('c')).map(|(_, a)| a.address.clone()).collect();
        let expected: BTreeSet<String> = (1..=40).map(|i| format!("10.32.0.{i}/16")).collect();
        assert_eq!(dynamic, expected, "the 40 containers got the 40 lowest addresses");
        let c0: Vec<u64> = ok.iter().filter(|(c, _)| c == "c0").map(|(_, a)| a.id).collect();
        assert!(c0.len() == 2 && c0[0] == c0[1], "the repeated request got the same allocation: {c0:?}");
        let explicit: Vec<&str> = ok.iter().filter(|(c, _)| c.starts_with('x')).map(|(c, _)| c.as_str()).collect();
        assert_eq!(explicit.len(), 1, "exactly one of x1, x2 holds 10.32.0.200");
        let mut failures: Vec<(String, &'static str)> = failed
            .iter()
            .map(|(c, e)| {
                let kind = match e {
                    Error::AlreadyExists(_) => "exists",
                    Error::InvalidArgument(_) => "invalid",
                    Error::NotFound(_) => "not found",
                    other => panic!("{c}: unexpected {other}"),
                };
                (c.clone(), kind)
            })
            .collect();
        failures.sort();
        let loser = if explicit[0] == "x1" { "x2" } else { "x1" };
        let mut want = vec![
            ("late".to_string(), "exists"),
            ("nowhere".to_string(), "not found"),
            ("outside".to_string(), "invalid"),
            (loser.to_string(), "exists"),
        ];
        want.sort();
        assert_eq!(failures, want);

        // 41 allocations, nothing of the refused ones, in consecutive revisions.
        let Events::Changes(changes) = store.events_after(base, 10_000).await.unwrap() else { panic!("kept") };
        let revisions: Vec<u64> = changes.iter().map(|(r, _)| *r).collect();
        assert_eq!(revisions, (base + 1..=base + 41).collect::<Vec<_>>());
        assert!(changes.iter().all(|(_, c)| matches!(c.change, Some(Change::AllocationAdded(_)))));
        let memory = store.snapshot().await.unwrap();
        assert_eq!(memory.revision, base + 41);
        assert!(!memory.allocations.iter().any(|a| a.container == "late"));
        let mut disk = Store::open(&path).await.unwrap().snapshot().await.unwrap();
        disk.history = memory.history; // each store begins its own
        assert!(memory == disk, "the in-memory map equals the database's");
    }
}
