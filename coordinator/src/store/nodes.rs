//! Nodes: join (spending a token), listing, endpoint updates and removal,
//! which reclaims everything the node held in the same transaction.
use super::db::{self, Conn};
use subtle::ConstantTimeEq;
use weave_proto::v1::{self, map_change::Change};

use super::{
    Store, Tx,
    holds::{Holds, Released},
    now, parse_net,
    rows::{self, NODE_COLUMNS},
};
use crate::{
    error::{Error, Result},
    ipam,
};

pub struct JoinRequest {
    pub token_id: String,
    pub token_secret_hash: String,
    pub name: String,
    pub public_key: [u8; 32],
    pub endpoints: Vec<String>,
    pub credential_hash: String,
    /// The caller proved (join challenge) that it holds the private key of
    /// `public_key`: only then may it take over a node that has that key.
    pub proven: bool,
    /// The endpoint the join came from when it is not one of `endpoints`
    /// (behind NAT), else '' ([`crate::api`]'s `observed_endpoint`).
    pub observed: String,
}

pub struct JoinedNode {
    pub node: v1::Node,
    /// false when the same key joined again with a proof (same node, new credential).
    pub new: bool,
}

/// Checks `r`'s join token (known, right secret, not revoked, not expired);
/// returns its uses left (None: unlimited) and its `forget_after`. Checked
/// again inside the writing transaction, which is what counts.
async fn check_token(c: &mut Conn, r: &JoinRequest, t: i64) -> Result<(Option<i64>, i64)> {
    let token =
        db::query("SELECT secret_hash, expires_at, uses_left, revoked_at, forget_after FROM join_tokens WHERE id = $1")
            .bind(&r.token_id)
            .fetch_optional(&mut *c)
            .await?
            .ok_or_else(|| {
                Error::Unauthenticated(format!("join token {} is not known to this coordinator", r.token_id))
            })?;
    let hash: String = token.try_get("secret_hash")?;
    if !bool::from(hash.as_bytes().ct_eq(r.token_secret_hash.as_bytes())) {
        return Err(Error::Unauthenticated(format!("join token {} has a wrong secret", r.token_id)));
    }
    if token.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
        return Err(Error::Unauthenticated(format!("join token {} was revoked", r.token_id)));
    }
    if token.try_get::<Option<i64>, _>("expires_at")?.is_some_and(|e| e <= t) {
        return Err(Error::Unauthenticated(format!(
            "join token {} has expired (create a new one with `weavectl token create`)",
            r.token_id
        )));
    }
    Ok((token.try_get::<Option<i64>, _>("uses_left")?, token.try_get("forget_after")?))
}

/// An endpoint inside the overlay (the range, the node range or any subnet)
/// is refused: every agent routes those into the overlay, so peers could
/// never reach it there, and agents leave out a subnet that holds a node's
/// underlay address (`agent/src/plan/netmap.rs`): one member announcing an
/// address inside a subnet would take that subnet off every host.
pub fn check_outside_overlay(endpoints: &[String], map: &v1::NetworkMap) -> Result<(), Error> {
    let nets = [map.range.as_str(), map.node_range.as_str()]
        .into_iter()
        .map(|cidr| (cidr, "the overlay range", String::new()))
        .chain(map.subnets.iter().map(|s| {
            // Who can take it away: a member's subnet (a Docker network)
            // could otherwise keep hosts out with no one the wiser.
            let by = match (s.by_member, s.added_by_node) {
                (false, 0) => String::new(),
                (_, id) => format!(
                    " (added by a member node, id {id}; the admin may remove it: weavectl subnet rm {})",
                    s.cidr
                ),
            };
            (s.cidr.as_str(), "subnet", by)
        }))
        .filter_map(|(cidr, what, by)| Some((cidr.parse::<ipnet::IpNet>().ok()?, what, by)));
    for (net, what, by) in nets {
        if let Some(e) = endpoints
            .iter()
            .filter_map(|e| e.parse::<std::net::SocketAddr>().ok())
            .find(|e| net.contains(&e.ip().to_canonical()))
        {
            return Err(Error::FailedPrecondition(format!(
                "endpoint {e} lies inside {what} {net}{by}: peers route that into the overlay, and a node's \
                 underlay address inside a subnet takes that subnet off every host; announce the host's real \
                 underlay address"
            )));
        }
    }
    Ok(())
}

/// [`check_outside_overlay`] against the store as the write transaction
/// `tx` sees it (the in-memory map may be a batch behind): a subnet added
/// between a check and the write cannot come to hold the endpoint.
/// And keeps `observed` only where it lies outside the overlay too (see
/// [`observed_outside`]), from the same read.
async fn check_outside_overlay_in(tx: &mut Tx, endpoints: &[String], observed: Option<&str>) -> Result<Option<String>> {
    let overlay = overlay_of(tx).await?;
    check_outside_overlay(endpoints, &overlay)?;
    Ok(observed.map(|o| observed_outside(o, &overlay)))
}

/// The overlay's ranges and subnets as `tx` sees them.
async fn overlay_of(tx: &mut Tx) -> Result<v1::NetworkMap> {
    let row = db::query("SELECT range_cidr, node_range FROM cluster WHERE id = 1").fetch_one(tx.c()).await?;
    Ok(v1::NetworkMap {
        range: row.try_get("range_cidr")?,
        node_range: row.try_get("node_range")?,
        subnets: super::subnets::all(tx.c(), false).await?,
        ..Default::default()
    })
}

/// `observed` (where the coordinator saw a node's call come from), or ''
/// when that lies inside the overlay: a member that reaches the coordinator
/// through the tunnel is seen at an overlay address, which peers must not
/// try and which would keep the admin from adding subnets over it.
fn observed_outside(observed: &str, overlay: &v1::NetworkMap) -> String {
    let inside = !observed.is_empty() && check_outside_overlay(&[observed.to_string()], overlay).is_err();
    if inside { String::new() } else { observed.to_string() }
}

pub(super) async fn all(c: &mut Conn) -> Result<Vec<v1::Node>> {
    let rows =
        db::query(sqlx::AssertSqlSafe(format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"))).fetch_all(c).await?;
    rows.iter().map(rows::node).collect()
}

impl Store {
    pub async fn join(&self, r: JoinRequest) -> Result<JoinedNode> {
        // Anyone who can reach the port can send joins (the pin is public):
        // a first join's token is checked on the read pool before the write
        // lock is taken, so bad tokens cannot queue up in front of real writes.
        // A proven re-join needs no token, but only a node's own key makes
        // one: a proof shows the caller holds the key it sent, and anyone can
        // make a key (and a proof for it), so a proof for a key no node has
        // is a first join like any other. (The key alone: the proof binds
        // key and name, and a known key under another name is refused below
        // with the name it has.) A node this coordinator's map holds is
        // found without a read connection: a flood of bogus calls that
        // holds every one must not keep a real node from re-joining
        // (`read_flood.rs`); only a key the map lacks (a first join, or a
        // node that joined through another coordinator a moment ago) is
        // looked up.
        let known = r.proven && self.with_map(|m| m.nodes.iter().any(|n| n.public_key == r.public_key));
        if !known {
            let mut c = self.read.acquire().await?;
            let rejoin = r.proven
                && db::query_scalar::<i64>("SELECT id FROM nodes WHERE public_key = $1")
                    .bind(&r.public_key[..])
                    .fetch_optional(&mut c)
                    .await?
                    .is_some();
            if !rejoin {
                check_token(&mut c, &r, now()).await?;
            }
        }
        // Only then (the caller is admitted): an answer naming a subnet
        // would otherwise map the overlay for anyone who knows the pin.
        self.with_map(|m| check_outside_overlay(&r.endpoints, m))?;
        let mut tx = self.begin().await?;
        let observed = check_outside_overlay_in(&mut tx, &r.endpoints, Some(&r.observed)).await?.unwrap_or_default();
        let t = now();
        let by_key = db::query(sqlx::AssertSqlSafe(format!("SELECT {NODE_COLUMNS} FROM nodes WHERE public_key = $1")))
            .bind(&r.public_key[..])
            .fetch_optional(tx.c())
            .await?
            .map(|row| rows::node(&row))
            .transpose()?;
        if let Some(existing) = by_key.as_ref().filter(|_| r.proven) {
            if existing.name != r.name {
                return Err(Error::AlreadyExists(format!(
                    "this WireGuard key already belongs to node '{}'; join with --name {} or remove that node first",
                    existing.name, existing.name
                )));
            }
            // The host proved it holds the node's key: same node and address,
            // fresh credential (the old one stops working). The node was
            // admitted once already, so the token is neither needed nor spent.
            let row = db::query(sqlx::AssertSqlSafe(format!(
                "UPDATE nodes SET credential_hash = $1, endpoints = $2, updated_at = $3, observed = $5 WHERE id = $4 \
                 RETURNING {NODE_COLUMNS}"
            )))
            .bind(&r.credential_hash)
            .bind(r.endpoints.join(","))
            .bind(t)
            .bind(existing.id as i64)
            .bind(&observed)
            .fetch_one(tx.c())
            .await?;
            let node = rows::node(&row)?;
            tx.record(Change::NodeUpserted(node.clone())).await?;
            self.commit(tx).await?;
            return Ok(JoinedNode { node, new: false });
        }

        // Everything else is a first join: the token must be valid and have uses left.
        let (uses_left, forget_after) = check_token(tx.c(), &r, t).await?;
        if let Some(existing) = by_key {
            // Names and public keys are in every node's map: knowing them proves nothing.
            let asked = match existing.name == r.name {
                true => String::new(),
                false => format!(" (this join asks for the name '{}')", r.name),
            };
            return Err(Error::PermissionDenied(format!(
                "node '{}' already exists with this WireGuard key{asked}, and joining with it again needs proof \
                 that this host holds its private key (`agent join` sends one; it was missing or wrong)",
                existing.name
            )));
        }
        if uses_left == Some(0) {
            return Err(Error::Unauthenticated(format!("join token {} is used up", r.token_id)));
        }
        // Names differing only in case are one name (to an admin reading
        // `node ls`, and to `node rm`): a second host may not take 'H1' beside 'h1'.
        let taken: Option<String> = db::query_scalar("SELECT name FROM nodes WHERE lower(name) = lower($1)")
            .bind(&r.name)
            .fetch_optional(tx.c())
            .await?;
        if let Some(name) = taken {
            let like = if name == r.name { String::new() } else { format!(" (as '{name}')") };
            return Err(Error::AlreadyExists(format!(
                "node name '{}' is taken{like} by another host's key; pick another --name, \
                 or remove the old node with `weavectl node rm {name}`",
                r.name
            )));
        }
        let node_range: String =
            db::query_scalar("SELECT node_range FROM cluster WHERE id = 1").fetch_one(tx.c()).await?;
        let node_range = parse_net(node_range)?;
        let address = ipam::lowest_free_in(&node_range, tx.node_addresses().await?)
            .ok_or_else(|| Error::Exhausted(format!("the node block {node_range} has no free address")))?;
        // A new id, never one a removed node had (SQLite would give the
        // newest removed node's id again): watchers, `removed_nodes` and a
        // subnet's `origin_node` keep naming that node.
        let row = db::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO nodes (id, name, public_key, endpoints, address, credential_hash, joined_via, joined_at, \
             updated_at, observed, forget_after) VALUES ((SELECT COALESCE(MAX(n), 0) + 1 FROM (SELECT id AS n \
             FROM nodes UNION ALL SELECT node_id FROM removed_nodes UNION ALL SELECT origin_node FROM subnets) \
             AS ids), $1, $2, $3, $4, $5, $6, $7, $7, $8, $9) RETURNING {NODE_COLUMNS}"
        )))
        .bind(&r.name)
        .bind(&r.public_key[..])
        .bind(r.endpoints.join(","))
        .bind(address.to_string())
        .bind(&r.credential_hash)
        .bind(&r.token_id)
        .bind(t)
        .bind(&observed)
        .bind(forget_after)
        .fetch_one(tx.c())
        .await?;
        let node = rows::node(&row)?;
        db::query(
            "UPDATE join_tokens SET uses = uses + 1, \
             uses_left = CASE WHEN uses_left IS NULL THEN NULL ELSE uses_left - 1 END WHERE id = $1",
        )
        .bind(&r.token_id)
        .execute(tx.c())
        .await?;
        tx.record(Change::NodeUpserted(node.clone())).await?;
        self.commit(tx).await?;
        Ok(JoinedNode { node, new: true })
    }

    pub async fn list_nodes(&self) -> Result<Vec<v1::Node>> {
        let mut c = self.read.acquire().await?;
        all(&mut c).await
    }

    pub async fn node(&self, sel: &str) -> Result<v1::Node> {
        let mut c = self.read.acquire().await?;
        rows::resolve_node(&mut c, sel).await
    }

    /// `observed`: as [`JoinRequest::observed`]; `None` keeps the one recorded.
    pub async fn update_endpoints(
        &self,
        node_id: u64,
        endpoints: &[String],
        observed: Option<&str>,
    ) -> Result<v1::Node> {
        let mut tx = self.begin().await?;
        let observed = check_outside_overlay_in(&mut tx, endpoints, observed).await?;
        // The same again is no change: each one reached every agent's watch
        // and reconcile (a member repeating them churned the cluster).
        let current = node_in(&mut tx, node_id).await?;
        if current.endpoints == endpoints && observed.as_deref().is_none_or(|o| o == current.observed_endpoint) {
            return Ok(current);
        }
        let row = db::query(sqlx::AssertSqlSafe(format!(
            "UPDATE nodes SET endpoints = $1, updated_at = $2, observed = CASE WHEN $5 THEN $4 ELSE observed END \
             WHERE id = $3 RETURNING {NODE_COLUMNS}"
        )))
        .bind(endpoints.join(","))
        .bind(now())
        .bind(node_id as i64)
        .bind(observed.as_deref().unwrap_or(""))
        .bind(observed.is_some())
        .fetch_optional(tx.c())
        .await?
        .ok_or_else(|| Error::NotFound(format!("no node {node_id}")))?;
        let node = rows::node(&row)?;
        tx.record(Change::NodeUpserted(node.clone())).await?;
        self.commit(tx).await?;
        Ok(node)
    }

    /// Replaces node `node_id`'s WireGuard key `current` (as the caller
    /// proved it) with `key`, in one transaction with its map change. A key
    /// another node has is refused; the node's key changed meanwhile (a
    /// second rotation) is a conflict.
    pub async fn rotate_key(&self, node_id: u64, key: &[u8; 32], current: &[u8; 32]) -> Result<v1::Node> {
        let mut tx = self.begin().await?;
        let holder: Option<String> = db::query_scalar("SELECT name FROM nodes WHERE public_key = $1")
            .bind(&key[..])
            .fetch_optional(tx.c())
            .await?;
        if let Some(holder) = holder {
            return Err(Error::AlreadyExists(format!("this WireGuard key already belongs to node '{holder}'")));
        }
        let row = db::query(sqlx::AssertSqlSafe(format!(
            "UPDATE nodes SET public_key = $1, updated_at = $2 WHERE id = $3 AND public_key = $4 RETURNING {NODE_COLUMNS}"
        )))
        .bind(&key[..])
        .bind(now())
        .bind(node_id as i64)
        .bind(&current[..])
        .fetch_optional(tx.c())
        .await?
        .ok_or_else(|| {
            Error::FailedPrecondition(format!("node {node_id}'s key changed meanwhile (or the node was removed)"))
        })?;
        let node = rows::node(&row)?;
        tx.record(Change::NodeUpserted(node.clone())).await?;
        self.commit(tx).await?;
        Ok(node)
    }

    /// Records where node `node_id`'s map watch came from, `observed`
    /// (`ip:port` as [`crate::api`]'s `observed_endpoint` makes it from the
    /// node's endpoints `made_from`), if that is still its endpoints and the
    /// record differs: a NAT whose public address changed left the old one
    /// in the map until the node's own addresses changed (an agent restart
    /// did not refresh it either), and peers that had to start over were
    /// sent there (found by a review, 2026-12-07). `observed` empty: the
    /// node is seen at its own endpoints, and has none. None: nothing changed.
    pub async fn refresh_observed(
        &self,
        node_id: u64,
        made_from: &[String],
        observed: &str,
    ) -> Result<Option<v1::Node>> {
        let mut tx = self.begin().await?;
        let current = node_in(&mut tx, node_id).await?;
        let observed = check_outside_overlay_in(&mut tx, &current.endpoints, Some(observed)).await?.unwrap_or_default();
        if current.endpoints != made_from || observed == current.observed_endpoint {
            return Ok(None);
        }
        let row = db::query(sqlx::AssertSqlSafe(format!(
            "UPDATE nodes SET observed = $1, updated_at = $2 WHERE id = $3 RETURNING {NODE_COLUMNS}"
        )))
        .bind(&observed)
        .bind(now())
        .bind(node_id as i64)
        .fetch_one(tx.c())
        .await?;
        let node = rows::node(&row)?;
        tx.record(Change::NodeUpserted(node.clone())).await?;
        self.commit(tx).await?;
        Ok(Some(node))
    }

    /// Removes a node with every allocation and DNS record it held, in one transaction.
    pub async fn remove_node(&self, sel: &str) -> Result<(v1::Node, u32, u32)> {
        let mut tx = self.begin().await?;
        let node = rows::resolve_node(tx.c(), sel).await?;
        let (allocations, records) = remove_in(&mut tx, &node, false).await?;
        self.commit(tx).await?;
        Ok((node, allocations, records))
    }
}

/// Removes `node` in `tx` with every allocation and DNS record it held;
/// `forgotten`: by the coordinator ([`Store::forget_unseen`]), not an admin.
/// Returns how many allocations and records went.
pub(super) async fn remove_in(tx: &mut Tx, node: &v1::Node, forgotten: bool) -> Result<(u32, u32)> {
    let (allocations, records) = release_where(tx, "a.node_id = $1", node.id as i64, Holds::default()).await?;
    // Remembered by its credential, so that its agent learns why even if it was away.
    db::query(
        "INSERT INTO removed_nodes (credential_hash, node_id, name, removed_at, forgotten) \
         SELECT credential_hash, id, name, $2, $3 FROM nodes WHERE id = $1 ON CONFLICT (credential_hash) DO NOTHING",
    )
    .bind(node.id as i64)
    .bind(now())
    .bind(forgotten)
    .execute(tx.c())
    .await?;
    db::query("DELETE FROM nodes WHERE id = $1").bind(node.id as i64).execute(tx.c()).await?;
    tx.record(Change::NodeRemoved(node.id)).await?;
    // Its subnets stay (workloads elsewhere may use them) and still name
    // it (`origin_node`): nothing about them changes, so no change is sent.
    Ok((allocations, records))
}

/// Deletes the allocations matching `condition` (on alias `a`, one i64
/// parameter) and their DNS records, recording each removal. Returns how many
/// allocations and records went.
pub(super) async fn release_where(tx: &mut Tx, condition: &str, param: i64, holds: Holds) -> Result<(u32, u32)> {
    let records = db::query(sqlx::AssertSqlSafe(format!(
        "SELECT d.id, d.name, a.node_id FROM dns_records d JOIN allocations a ON a.id = d.allocation_id \
         WHERE {condition} ORDER BY d.id"
    )))
    .bind(param)
    .fetch_all(tx.c())
    .await?
    .iter()
    .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?, r.try_get::<i64, _>(2)?)))
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let allocations: Vec<(i64, Released)> = db::query(sqlx::AssertSqlSafe(format!(
        "SELECT a.id, a.address, a.subnet_id, a.node_id, a.container FROM allocations a WHERE {condition} ORDER BY a.id"
    )))
    .bind(param)
    .fetch_all(tx.c())
    .await?
    .iter()
    .map(|r| {
        let released = Released {
            address: r.try_get(1)?,
            subnet_id: r.try_get(2)?,
            node_id: r.try_get(3)?,
            container: r.try_get(4)?,
        };
        Ok((r.try_get::<i64, _>(0)?, released))
    })
    .collect::<Result<_, sqlx::Error>>()?;
    for (id, ..) in &records {
        db::query("DELETE FROM dns_records WHERE id = $1").bind(id).execute(tx.c()).await?;
        tx.record(Change::DnsRecordRemoved(*id as u64)).await?;
    }
    // Once the records are gone: a name others still answer for is not held.
    if let Some(secs) = holds.dns.filter(|_| !records.is_empty()) {
        super::dns::hold(tx, records.iter().map(|(_, name, node)| (name.as_str(), *node)), secs).await?;
    }
    for (id, _) in &allocations {
        db::query("DELETE FROM allocations WHERE id = $1").bind(id).execute(tx.c()).await?;
        tx.record(Change::AllocationRemoved(*id as u64)).await?;
    }
    let released: Vec<Released> = allocations.into_iter().map(|(_, r)| r).collect();
    if let Some(secs) = holds.address.filter(|_| !released.is_empty()) {
        super::holds::hold(tx, &released, secs).await?;
    }
    Ok((released.len() as u32, records.len() as u32))
}

/// Node `node_id` as `tx` reads it.
async fn node_in(tx: &mut Tx, node_id: u64) -> Result<v1::Node> {
    let row = db::query(sqlx::AssertSqlSafe(format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1")))
        .bind(node_id as i64)
        .fetch_optional(tx.c())
        .await?
        .ok_or_else(|| Error::NotFound(format!("no node {node_id}")))?;
    rows::node(&row)
}
