//! The map in memory (`Live`): what every read and watch is served from,
//! rebuilt from the database when a store opens or falls behind.
use std::collections::VecDeque;

use weave_proto::v1;

use super::{
    AllocationFilter, Result, allocations,
    db::{self, Pool},
    dns, nodes, subnets,
};

/// The map at the latest committed revision, and the changes that led to it.
#[derive(Default)]
pub(super) struct Live {
    pub(super) map: v1::NetworkMap,
    pub(super) recent: VecDeque<(u64, v1::MapChange)>,
}

impl Live {
    /// Nothing yet, in `history` (see [`begin_history`]).
    pub(super) fn in_history(history: u64) -> Self {
        Live { map: v1::NetworkMap { history, ..Default::default() }, recent: VecDeque::new() }
    }

    /// `map` (read from the database) in force from now on, in this store's history.
    pub(super) fn reset(&mut self, mut map: v1::NetworkMap) {
        map.history = self.map.history;
        *self = Live { map, recent: VecDeque::new() };
    }
}

/// Begins this store's history (`NetworkMap.history`, `histories`): a new
/// random id, recorded with the revision it begins at.
pub(super) async fn begin_history(write: &Pool) -> Result<u64> {
    let history = rand::random::<u64>().max(1);
    db::query(
        "INSERT INTO histories (history, since, started_at) \
         VALUES ($1, (SELECT COALESCE(MAX(revision), 0) FROM cluster), $2)",
    )
    .bind(history as i64)
    .bind(super::now())
    .execute(write)
    .await?;
    Ok(history)
}

impl super::Store {
    /// Whether a watcher that saw `revision` of `history` may go on from
    /// there (and get only the changes after it): `history` is this store's,
    /// or one this database had whose revisions up to `revision` are this
    /// one's too (no later history began before it: a restored backup
    /// begins one at the backup's revision). 0: not known, the revision is
    /// trusted (clients from before histories).
    pub async fn continues(&self, history: u64, revision: u64) -> Result<bool> {
        if history == 0 || history == self.with_map(|m| m.history) {
            return Ok(true);
        }
        let found: i64 = db::query_scalar(
            "SELECT COUNT(*) FROM histories h WHERE h.history = $1 \
             AND NOT EXISTS (SELECT 1 FROM histories l WHERE l.id > h.id AND l.since < $2)",
        )
        .bind(history as i64)
        .bind(revision as i64)
        .fetch_one(&self.read)
        .await?;
        Ok(found > 0)
    }
}

/// The whole map read from `pool` (one read transaction = one revision).
pub(super) async fn load_snapshot(pool: &Pool) -> Result<v1::NetworkMap> {
    let mut tx = pool.begin_read().await?;
    let map = load_snapshot_on(&mut tx).await?;
    tx.commit().await?;
    Ok(map)
}

/// The whole map as `c` sees it (a read transaction, or the open batch's
/// transaction, which holds the write lock).
pub(super) async fn load_snapshot_on(c: &mut db::Conn) -> Result<v1::NetworkMap> {
    let Some(row) =
        db::query("SELECT revision, range_cidr, node_range, dns_domain, segment_mtu FROM cluster WHERE id = 1")
            .fetch_optional(&mut *c)
            .await?
    else {
        return Ok(v1::NetworkMap::default());
    };
    let nodes = nodes::all(&mut *c).await?;
    let subnets = subnets::all(&mut *c, false).await?;
    let allocations = allocations::list(&mut *c, &AllocationFilter::default()).await?;
    let dns_records = dns::all(&mut *c).await?;
    Ok(v1::NetworkMap {
        revision: row.try_get::<i64, _>("revision")? as u64,
        range: row.try_get("range_cidr")?,
        node_range: row.try_get("node_range")?,
        dns_domain: row.try_get("dns_domain")?,
        segment_mtu: u32::try_from(row.try_get::<i64, _>("segment_mtu")?).unwrap_or(0),
        nodes,
        subnets,
        allocations,
        dns_records,
        history: 0,
    })
}
