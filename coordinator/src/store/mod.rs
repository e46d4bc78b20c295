//! The only SQL in weave: every change is one transaction that also bumps the
//! map revision and appends the change to `map_events`, which is what the watch
//! stream replays.
//!
//! SQLite allows one writer at a time: writes go through a pool of one
//! connection (`BEGIN IMMEDIATE`), so concurrent RPCs queue here instead of
//! failing with SQLITE_BUSY; reads use a separate pool and see WAL snapshots.
//! Each write runs in its own savepoint of a transaction shared with the
//! writes queued beside it (group commit, [`batch`]): one fsync for all.
//! The SQL itself is plain (`$n` placeholders, `RETURNING`, `ON CONFLICT`) so
//! that it also runs on Postgres.
//!
//! Records are the `weave.v1` messages themselves: the store builds each once,
//! and the watch stream sends the stored change as it is.
//!
//! The committed map is also kept in memory ([`Live`]): writes and their batch's
//! commit hold one lock until its changes are applied to it, so it is always
//! the map at exactly the latest committed revision. Snapshots (every join, every
//! new watcher) are a clone of it, and watchers read recent changes from its
//! ring, not from SQLite.

mod allocations;
mod auth;
mod batch;
mod clock;
pub mod db;
mod dns;
mod follow;
mod holds;
mod ids;
mod live;
pub mod migrate;
mod nodes;
mod open;
mod presence;
mod redact;
mod rows;
mod subnets;
mod tokens;

use std::{
    str::FromStr,
    sync::{Arc, RwLock},
};

use ipnet::IpNet;
use prost::Message as _;
use tokio::sync::{Mutex, watch};
use weave_proto::v1::{self, map_change::Change};

use self::db::{Engine, Pool};

pub use self::{
    allocations::AllocationFilter,
    auth::Caller,
    clock::{LOCAL_SKEW_SECS, now},
    dns::qualify_name,
    nodes::{JoinRequest, JoinedNode, check_outside_overlay},
    open::{Location, LocationError},
    presence::REFRESH_SECS as PRESENCE_REFRESH_SECS,
    subnets::underlay_conflict,
    tokens::NewToken,
};
use crate::{
    error::{Error, Result},
    ipam,
};

/// Events kept for watchers that reconnect; older ones are pruned and such a
/// watcher gets a fresh snapshot instead.
const EVENTS_KEPT: i64 = 10_000;
/// Changes kept in memory for watchers; older resumes read `map_events`.
const RING: usize = 4096;

/// What the coordinator was started with on its first run; later runs keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub range: IpNet,
    pub node_range: IpNet,
    pub default_subnet: IpNet,
    pub dns_domain: String,
    /// Every segment's MTU (`--mtu`); None: [`DEFAULT_SEGMENT_MTU`] for a
    /// new cluster, and a recorded one (or none) kept.
    pub segment_mtu: Option<u32>,
}

/// A 1500-byte underlay's segment MTU: 1500 − 80 (WireGuard over IPv6,
/// the larger header) − 50 (VXLAN).
pub const DEFAULT_SEGMENT_MTU: u32 = 1370;

#[derive(Debug, Clone)]
pub struct Cluster {
    pub range: IpNet,
    pub node_range: IpNet,
    pub dns_domain: String,
    pub created_at: i64,
    /// 0: none recorded (each host derives its own).
    pub segment_mtu: u32,
}

#[derive(Clone)]
pub struct Store {
    /// SQLite: one connection (one writer); PostgreSQL: a small pool of its
    /// own (the batch's transaction, and reads made under the writer lock).
    write: Pool,
    read: Pool,
    revision: watch::Sender<u64>,
    live: Arc<RwLock<Live>>,
    /// The write connection's open batch; held by one write at a time, and
    /// by the batch's commit until its changes are in `live` (see [`batch`]).
    writer: Arc<Mutex<batch::Writer>>,
    /// Most addresses one node may hold (None: no limit); see [`Store::with_node_quota`].
    node_quota: Option<u32>,
    /// Most subnets one node may add (None: no limit); see [`Store::with_node_subnet_quota`].
    node_subnet_quota: Option<u32>,
    /// Most DNS records one node may hold (None: no limit); see [`Store::with_node_dns_quota`].
    node_dns_quota: Option<u32>,
    /// How long a released name stays its node's (None: not at all); see
    /// [`Store::with_dns_hold`].
    dns_hold: Option<u64>,
    /// How long a released address stays its container's (None: not at
    /// all); see [`Store::with_address_hold`].
    address_hold: Option<u64>,
    /// One per handle: the follower task (PostgreSQL, [`follow`]) stops when it holds the last.
    alive: Arc<()>,
}

use self::live::{Live, load_snapshot};
pub(crate) use batch::Tx;

impl Tx {
    /// Bumps the revision and appends `change` to the event log.
    async fn record(&mut self, change: Change) -> Result<u64> {
        let rev: i64 = db::query_scalar("UPDATE cluster SET revision = revision + 1 WHERE id = 1 RETURNING revision")
            .fetch_one(self.c())
            .await?;
        let change = v1::MapChange { change: Some(change) };
        let bytes = change.encode_to_vec();
        db::query("INSERT INTO map_events (revision, change, created_at) VALUES ($1, $2, $3)")
            .bind(rev)
            .bind(bytes)
            .bind(now())
            .execute(self.c())
            .await?;
        if rev % 1000 == 0 {
            db::query("DELETE FROM map_events WHERE revision <= $1").bind(rev - EVENTS_KEPT).execute(self.c()).await?;
        }
        self.changes.push((rev as u64, change));
        Ok(rev as u64)
    }
}

/// Changes after a revision, or word that the caller is too far behind.
pub enum Events {
    Changes(Vec<(u64, v1::MapChange)>),
    /// The caller's revision is older than the oldest kept event, or newer
    /// than this coordinator's (another database): it needs a snapshot.
    NeedSnapshot,
}

/// [`Store::with_dns_hold`]'s default, as `coordinator serve --dns-name-hold`'s.
pub const DEFAULT_DNS_HOLD_SECS: u64 = 60;
/// [`Store::with_address_hold`]'s default, as `coordinator serve --address-hold`'s.
pub const DEFAULT_ADDRESS_HOLD_SECS: u64 = 60;

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub async fn open(path: &std::path::Path) -> Result<Self> {
        Self::connect(&Location::Sqlite(path.to_path_buf())).await
    }

    /// Connects to the database at `location` (creating a SQLite file if
    /// needed), migrates it and loads the map.
    pub async fn connect(location: &Location) -> Result<Self> {
        let (write, read) = open::pools(location).await?;
        let current: Option<i64> =
            db::query_scalar("SELECT revision FROM cluster WHERE id = 1").fetch_optional(&read).await?;
        let (revision, _) = watch::channel(current.unwrap_or(0) as u64);
        let history = live::begin_history(&write).await?;
        let store = Self {
            write,
            read,
            revision,
            live: Arc::new(RwLock::new(Live::in_history(history))),
            writer: Arc::default(),
            node_quota: None,
            node_subnet_quota: None,
            node_dns_quota: None,
            dns_hold: Some(DEFAULT_DNS_HOLD_SECS),
            address_hold: Some(DEFAULT_ADDRESS_HOLD_SECS),
            alive: Arc::default(),
        };
        store.sync_clock().await?;
        store.reload_live().await?;
        store.follow();
        Ok(store)
    }

    pub fn engine(&self) -> Engine {
        self.write.engine()
    }

    /// Caps the addresses one node may hold: every allocation is a map change
    /// that each agent applies, so one node taking a whole subnet costs the
    /// cluster, not only itself. It counts whoever asks (admin included).
    pub fn with_node_quota(mut self, quota: Option<u32>) -> Self {
        self.node_quota = quota;
        self
    }

    /// Caps the subnets one node may add ([`Store::add_node_subnet`]): each
    /// is a bridge and a VXLAN device on every host.
    pub fn with_node_subnet_quota(mut self, quota: Option<u32>) -> Self {
        self.node_subnet_quota = quota;
        self
    }

    /// Caps the DNS records a node may add for its containers (by `AddRecord`
    /// or with an allocation's name): every record is a map change that each
    /// agent applies and keeps, and a node may otherwise give one address
    /// any number of names. Records the admin adds are never refused, but
    /// those pointing at a node's containers count towards its quota.
    pub fn with_node_dns_quota(mut self, quota: Option<u32>) -> Self {
        self.node_dns_quota = quota;
        self
    }

    /// How long (seconds; None or 0: not at all) a DNS name a node's
    /// container released stays that node's: no other node may claim it
    /// meanwhile, so a restarting container's name is not a member's for the
    /// taking in the gap (`dns_holds`).
    pub fn with_dns_hold(mut self, secs: Option<u64>) -> Self {
        self.dns_hold = secs.filter(|s| *s > 0);
        self
    }

    /// How long (seconds; None or 0: not at all) an address a node's
    /// container released stays out of other hands: automatic allocation
    /// skips it (the same container on the same node gets it back) and no
    /// other node may ask for it by name (`address_holds`).
    pub fn with_address_hold(mut self, secs: Option<u64>) -> Self {
        self.address_hold = secs.filter(|s| *s > 0);
        self
    }

    /// Where reads made while holding the writer lock go. PostgreSQL: the
    /// write pool, never the read pool, which any caller can fill (every RPC
    /// looks up its credential there before it is authenticated) while an
    /// open batch of this coordinator holds the cluster-wide write lock.
    /// SQLite: the read pool (its one write connection may be the open
    /// batch's, and its readers never wait for the writer).
    fn locked_reads(&self) -> &Pool {
        match self.write.engine() {
            Engine::Postgres => &self.write,
            Engine::Sqlite => &self.read,
        }
    }

    /// Rebuilds the in-memory map from the database.
    async fn reload_live(&self) -> Result<()> {
        let _writer = self.writer.lock().await;
        let map = load_snapshot(self.locked_reads()).await?;
        self.live.write().unwrap_or_else(|p| p.into_inner()).reset(map);
        Ok(())
    }

    /// Closes a SQLite store's connections. The last one to close folds the
    /// write-ahead log into the database file, so after a stop
    /// `coordinator.db` alone holds the whole cluster and a copy of it is a
    /// backup. Bounded: a connection still held after 10 s is left to the
    /// process's exit (the log is then replayed at the next open, as after a
    /// crash). PostgreSQL keeps no such file; its pools close with the process.
    pub async fn close(&self) {
        if let (Pool::Sqlite(_), Pool::Sqlite(_)) = (&self.write, &self.read) {
            let both = async {
                self.write.close().await;
                self.read.close().await;
            };
            if tokio::time::timeout(std::time::Duration::from_secs(10), both).await.is_err() {
                tracing::warn!(
                    "the database's connections did not close within 10 s; its log is replayed at the next start"
                );
            }
        }
    }

    /// The latest committed revision, and a way to wait for the next.
    pub fn revisions(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// First start: records the settings and creates the default subnet.
    /// Later starts: returns what was recorded (flags that differ are ignored
    /// with a warning by the caller).
    pub async fn init_cluster(&self, settings: &ClusterSettings) -> Result<(Cluster, bool)> {
        self.init_cluster_pinned(settings, None).await
    }

    /// [`Self::init_cluster`], recording `pin` with the cluster it makes:
    /// in the same insert, so of two coordinators that find the database
    /// empty at once, the one whose insert lands holds the identity.
    pub async fn init_cluster_pinned(&self, settings: &ClusterSettings, pin: Option<&str>) -> Result<(Cluster, bool)> {
        if let Some(c) = self.cluster().await? {
            return Ok((c, false));
        }
        let mut tx = self.begin().await?;
        let created = now();
        // Another coordinator of a shared database may have made it since
        // the look above (both found it empty): the write lock orders the
        // two, and the second inserts nothing (it failed on the key).
        let inserted = db::query(
            "INSERT INTO cluster (id, range_cidr, node_range, node_first, node_last, dns_domain, revision, created_at, \
             segment_mtu, pin) VALUES (1, $1, $2, $3, $4, $5, 0, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(settings.range.to_string())
        .bind(settings.node_range.to_string())
        .bind(ipam::key_text(settings.node_range.network()))
        .bind(ipam::key_text(settings.node_range.broadcast()))
        .bind(&settings.dns_domain)
        .bind(created)
        .bind(i64::from(settings.segment_mtu.unwrap_or(DEFAULT_SEGMENT_MTU)))
        .bind(pin.map(str::to_string))
        .execute(tx.c())
        .await?;
        if inserted == 0 {
            self.commit(tx).await?;
            let cluster = self.cluster().await?.ok_or_else(|| Error::NotFound("cluster settings vanished".into()))?;
            return Ok((cluster, false));
        }
        subnets::insert(&mut tx, &settings.default_subnet, Some("default"), true, None, &[], false).await?;
        self.commit(tx).await?;
        self.reload_live().await?;
        let cluster = self.cluster().await?.ok_or_else(|| Error::NotFound("cluster settings vanished".into()))?;
        Ok((cluster, true))
    }

    /// Records the segment MTU of a cluster created before there was one
    /// (0 recorded); agents take it at their next start. false: one was
    /// recorded already, and it stays.
    pub async fn record_segment_mtu(&self, mtu: u32) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = db::query("UPDATE cluster SET segment_mtu = $1 WHERE id = 1 AND segment_mtu = 0")
            .bind(i64::from(mtu))
            .execute(tx.c())
            .await?;
        self.commit(tx).await?;
        self.reload_live().await?;
        Ok(done == 1)
    }

    pub async fn cluster(&self) -> Result<Option<Cluster>> {
        let row =
            db::query("SELECT range_cidr, node_range, dns_domain, created_at, segment_mtu FROM cluster WHERE id = 1")
                .fetch_optional(&self.read)
                .await?;
        row.map(|r| {
            Ok(Cluster {
                range: parse_net(r.try_get("range_cidr")?)?,
                node_range: parse_net(r.try_get("node_range")?)?,
                dns_domain: r.try_get("dns_domain")?,
                created_at: r.try_get("created_at")?,
                segment_mtu: u32::try_from(r.try_get::<i64, _>("segment_mtu")?).unwrap_or(0),
            })
        })
        .transpose()
    }

    /// Reads the map at the latest committed revision in place (no copy),
    /// e.g. for the metrics a scrape renders.
    pub fn with_map<R>(&self, f: impl FnOnce(&v1::NetworkMap) -> R) -> R {
        f(&self.live.read().unwrap_or_else(|p| p.into_inner()).map)
    }

    /// One trivial read: whether the database answers at all (readiness).
    pub async fn ping(&self) -> Result<()> {
        db::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// The whole map at the latest committed revision.
    pub async fn snapshot(&self) -> Result<v1::NetworkMap> {
        Ok(self.live.read().unwrap_or_else(|p| p.into_inner()).map.clone())
    }

    /// Up to `limit` changes after revision `after`, in revision order: from
    /// memory when the ring still holds them, else from `map_events`.
    pub async fn events_after(&self, after: u64, limit: i64) -> Result<Events> {
        // A watcher that comes from another coordinator of the same database
        // may be ahead of this one by a change or two: catch up first rather
        // than send it a whole snapshot.
        if self.engine() == Engine::Postgres && after > self.live.read().unwrap_or_else(|p| p.into_inner()).map.revision
        {
            self.catch_up().await?;
        }
        {
            let live = self.live.read().unwrap_or_else(|p| p.into_inner());
            if after > live.map.revision {
                return Ok(Events::NeedSnapshot);
            }
            if after == live.map.revision {
                return Ok(Events::Changes(Vec::new()));
            }
            if let Some(&(first, _)) = live.recent.front()
                && first <= after + 1
            {
                let skip = (after + 1 - first) as usize;
                let changes = live.recent.iter().skip(skip).take(limit as usize).cloned().collect();
                return Ok(Events::Changes(changes));
            }
        }
        let mut tx = self.read.begin_read().await?;
        let current: i64 = db::query_scalar("SELECT revision FROM cluster WHERE id = 1").fetch_one(&mut tx).await?;
        if after as i64 > current {
            return Ok(Events::NeedSnapshot);
        }
        let oldest: Option<i64> = db::query_scalar("SELECT MIN(revision) FROM map_events").fetch_one(&mut tx).await?;
        if (after as i64) < current && oldest.is_none_or(|o| after as i64 + 1 < o) {
            return Ok(Events::NeedSnapshot);
        }
        let rows = db::query("SELECT revision, change FROM map_events WHERE revision > $1 ORDER BY revision LIMIT $2")
            .bind(after as i64)
            .bind(limit)
            .fetch_all(&mut tx)
            .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let bytes: Vec<u8> = r.try_get("change")?;
            let change = v1::MapChange::decode(bytes.as_slice())
                .map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))?;
            out.push((r.try_get::<i64, _>("revision")? as u64, change));
        }
        Ok(Events::Changes(out))
    }

    /// Counts for `weavectl status`.
    pub async fn counts(&self) -> Result<Counts> {
        let t = now();
        let row = db::query(
            "SELECT (SELECT revision FROM cluster WHERE id = 1) AS revision, \
                    (SELECT COUNT(*) FROM nodes) AS nodes, \
                    (SELECT COUNT(*) FROM subnets) AS subnets, \
                    (SELECT COUNT(*) FROM allocations) AS allocations, \
                    (SELECT COUNT(*) FROM dns_records) AS dns_records, \
                    (SELECT COUNT(*) FROM join_tokens WHERE revoked_at IS NULL \
                        AND (expires_at IS NULL OR expires_at > $1) \
                        AND (uses_left IS NULL OR uses_left > 0)) AS active_tokens, \
                    (SELECT cidr FROM subnets WHERE is_default) AS default_subnet",
        )
        .bind(t)
        .fetch_one(&self.read)
        .await?;
        Ok(Counts {
            revision: row.try_get::<i64, _>("revision")? as u64,
            nodes: row.try_get::<i64, _>("nodes")? as u32,
            subnets: row.try_get::<i64, _>("subnets")? as u32,
            allocations: row.try_get::<i64, _>("allocations")? as u64,
            dns_records: row.try_get::<i64, _>("dns_records")? as u32,
            active_tokens: row.try_get::<i64, _>("active_tokens")? as u32,
            default_subnet: row.try_get::<Option<String>, _>("default_subnet")?.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Counts {
    pub revision: u64,
    pub nodes: u32,
    pub subnets: u32,
    pub allocations: u64,
    pub dns_records: u32,
    pub active_tokens: u32,
    pub default_subnet: String,
}

fn parse_net(s: String) -> Result<IpNet> {
    IpNet::from_str(&s).map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))
}
