//! When each node was last seen holding a map watch (`weavectl node ls`:
//! connected, or last seen when). Written outside the change log: no map
//! revision, nothing sent to the agents.
use weave_proto::v1;

use super::{Store, db, now};
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
