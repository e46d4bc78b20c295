//! When each node was last seen holding a map watch (`weavectl node ls`:
//! connected, or last seen when). Written outside the change log: no map
//! revision, nothing sent to the agents.
use weave_proto::v1;

use super::{Store, db, now, rows};
use crate::error::Result;

/// An open watch refreshes its node's presence this often (seconds).
pub const REFRESH_SECS: i64 = 60;

impl Store {
    /// Records, now, for each `(node, watching)`: that the node holds a
    /// watch, or just ended its last one. A node removed meanwhile has
    /// nothing to record (its row went with it).
    pub async fn nodes_seen(&self, nodes: &[(u64, bool)]) -> Result<()> {
        let mut tx = self.begin().await?;
        let at = now();
        for (node, watching) in nodes {
            db::query(
                "INSERT INTO node_presence (node_id, watching, seen_at) \
                 SELECT id, $2, $3 FROM nodes WHERE id = $1 \
                 ON CONFLICT (node_id) DO UPDATE SET watching = excluded.watching, seen_at = excluded.seen_at",
            )
            .bind(*node as i64)
            .bind(*watching)
            .bind(at)
            .execute(tx.c())
            .await?;
        }
        self.commit(tx).await
    }

    /// Every node's presence: connected while a watch is open and refreshed
    /// within two refreshes (a coordinator that died under a watch left it
    /// set, and its refreshes stopped).
    pub async fn presence(&self) -> Result<Vec<v1::NodePresence>> {
        let rows = db::query("SELECT node_id, watching, seen_at FROM node_presence ORDER BY node_id")
            .fetch_all(&self.read)
            .await?;
        let now = now();
        rows.iter()
            .map(|r| {
                let (watching, seen_at): (bool, i64) = (r.try_get("watching")?, r.try_get("seen_at")?);
                Ok(v1::NodePresence {
                    node_id: r.try_get::<i64, _>("node_id")? as u64,
                    connected: watching && now.saturating_sub(seen_at) <= 2 * REFRESH_SECS,
                    seen_at,
                })
            })
            .collect()
    }
}

impl Store {
    /// How many nodes hold a map watch on some coordinator of this store at
    /// `now` (`connected` in [`Store::presence`]): the same figure on every
    /// coordinator, where each one's own count would count a node watching
    /// two of them twice.
    pub async fn connected_nodes(&self, now: i64) -> Result<u64> {
        let r = db::query("SELECT COUNT(*) FROM node_presence WHERE watching AND seen_at >= $1")
            .bind(now.saturating_sub(2 * REFRESH_SECS))
            .fetch_one(&self.read)
            .await?;
        Ok(u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0))
    }
}

/// A node with a `forget_after`, and when it was last seen.
const FORGETTABLE: &str = "SELECT n.id, n.forget_after, n.joined_at, p.watching, p.seen_at FROM nodes n \
     LEFT JOIN node_presence p ON p.node_id = n.id WHERE n.forget_after > 0";

/// Whether the node in `r` (a [`FORGETTABLE`] row) is due to be forgotten
/// at `now`: it holds no watch (or its coordinator stopped refreshing one),
/// and has not since `forget_after` seconds before `now`. Its time counts
/// from when it was last seen, joined, or `since` (this coordinator's start:
/// one that was down for longer must not forget every node at once, before
/// their agents had a chance to come back), whichever is latest.
fn due(r: &db::Row, now: i64, since: i64) -> std::result::Result<bool, sqlx::Error> {
    let (forget_after, joined_at): (i64, i64) = (r.try_get("forget_after")?, r.try_get("joined_at")?);
    let (watching, seen_at): (Option<bool>, Option<i64>) = (r.try_get("watching")?, r.try_get("seen_at")?);
    if watching == Some(true) && seen_at.is_some_and(|s| now.saturating_sub(s) <= 2 * REFRESH_SECS) {
        return Ok(false);
    }
    let last = seen_at.unwrap_or(joined_at).max(joined_at).max(since);
    // Whole seconds both: `>`, so that a node seen at 10.9 is not forgotten at 20.0.
    Ok(now.saturating_sub(last) > forget_after)
}

impl Store {
    /// Removes, each as `RemoveNode` would (its addresses and DNS records
    /// released, the change sent to every agent), every node that joined
    /// with a `--forget-after` token and is due ([`due`]), checked again in
    /// its write transaction (a watch that opened meanwhile keeps it).
    /// Returns what went: each node, with its allocations and records.
    ///
    /// `None`, and nothing forgotten, while no node at all holds a watch
    /// (on any coordinator) though some exist: that is more likely this
    /// coordinator cut off (its own network down) than every host gone, and
    /// forgetting them all would take every one of them down as it comes
    /// back. The caller counts their time from when watches return, as
    /// after its own start.
    pub async fn forget_unseen(&self, now: i64, since: i64) -> Result<Option<Vec<(v1::Node, u32, u32)>>> {
        // A cluster without such nodes (most) pays this one query, and is
        // never said to have paused.
        let rows = db::query(FORGETTABLE).fetch_all(&self.read).await?;
        if rows.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let nodes: i64 = db::query("SELECT COUNT(*) FROM nodes").fetch_one(&self.read).await?.try_get(0)?;
        if nodes > 0 && self.connected_nodes(now).await? == 0 {
            return Ok(None);
        }
        let mut ids = Vec::new();
        for r in &rows {
            if due(r, now, since)? {
                ids.push(r.try_get::<i64, _>("id")?);
            }
        }
        let mut forgotten = Vec::new();
        for id in ids {
            let mut tx = self.begin().await?;
            let row = db::query(sqlx::AssertSqlSafe(format!("{FORGETTABLE} AND n.id = $1")))
                .bind(id)
                .fetch_optional(tx.c())
                .await?;
            if !row.map(|r| due(&r, now, since)).transpose()?.unwrap_or(false) {
                continue;
            }
            let node = rows::resolve_node(tx.c(), &id.to_string()).await?;
            let (allocations, records) = super::nodes::remove_in(&mut tx, &node, true).await?;
            self.commit(tx).await?;
            forgotten.push((node, allocations, records));
        }
        Ok(Some(forgotten))
    }
}
