//! Addresses held after a release (`address_holds`): for a while an address
//! a node's container released goes to no one else. Automatic allocation
//! skips it, and gives it back to the same container on the same node (a
//! restart, a re-attach, a CNI DEL before the pod's next ADD); no other
//! node may ask for it by name. Without it the lowest free address went to
//! the next container at once, on any host: peers still holding the old
//! owner's neighbour entries and connections reached the new one, and a
//! member watching the map could take a released address for that traffic.
use std::{collections::BTreeSet, net::IpAddr};

use weave_proto::v1;

use super::{Caller, Tx, db, rows};
use crate::{
    error::{Error, Result},
    ipam,
};

/// How long what a release frees stays its node's, in seconds (None: not at all).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Holds {
    pub dns: Option<u64>,
    pub address: Option<u64>,
}

/// One released allocation.
pub(super) struct Released {
    pub address: String,
    pub subnet_id: i64,
    pub node_id: i64,
    pub container: String,
}

/// Holds each released address for its node and container for `secs`
/// (replacing an older hold of the address); holds that ran out go.
pub(super) async fn hold(tx: &mut Tx, released: &[Released], secs: u64) -> Result<()> {
    let now = super::now();
    db::query("DELETE FROM address_holds WHERE held_until <= $1").bind(now).execute(tx.c()).await?;
    for r in released {
        db::query(
            "INSERT INTO address_holds (address, subnet_id, node_id, container, released_at, held_until) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (address) DO UPDATE SET subnet_id = excluded.subnet_id, node_id = excluded.node_id, \
             container = excluded.container, released_at = excluded.released_at, held_until = excluded.held_until",
        )
        .bind(&r.address)
        .bind(r.subnet_id)
        .bind(r.node_id)
        .bind(&r.container)
        .bind(now)
        .bind(now.saturating_add(secs as i64))
        .execute(tx.c())
        .await?;
    }
    Ok(())
}

/// The live holds of `subnet`: address keys and the node each is held for.
async fn live(tx: &mut Tx, subnet_id: i64) -> Result<Vec<(u128, u64)>> {
    let rows = db::query("SELECT address, node_id FROM address_holds WHERE subnet_id = $1 AND held_until > $2")
        .bind(subnet_id)
        .bind(super::now())
        .fetch_all(tx.c())
        .await?;
    let mut live = Vec::with_capacity(rows.len());
    for r in &rows {
        let (address, node_id): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
        if let Ok(ip) = address.parse() {
            live.push((ipam::key(ip), node_id as u64));
        }
    }
    Ok(live)
}

/// What automatic allocation found for a container.
pub(super) enum Pick {
    Address(IpAddr),
    /// No address to give: how many of the free ones other nodes' containers released lately.
    Full {
        held_for_others: usize,
    },
}

/// The address automatic allocation gives `container` on `node_id` in
/// `subnet`: the one it released lately if still free; else the lowest free
/// address nobody's container released lately; else the lowest free one
/// only `node_id`'s own containers released lately. Never one another
/// node's container released lately.
pub(super) async fn pick(tx: &mut Tx, subnet: &rows::SubnetRow, node_id: u64, container: &str) -> Result<Pick> {
    let own: Vec<String> = db::query_scalar(
        "SELECT address FROM address_holds WHERE subnet_id = $1 AND node_id = $2 AND container = $3 \
         AND held_until > $4",
    )
    .bind(subnet.id)
    .bind(node_id as i64)
    .bind(container)
    .bind(super::now())
    .fetch_all(tx.c())
    .await?;
    let net = subnet.net;
    let own = own.iter().filter_map(|a| a.parse().ok()).map(ipam::key).min();
    if let Some(k) = own
        && !tx.subnet_addresses(subnet.id).await?.contains(&k)
    {
        return Ok(Pick::Address(ipam::from_key(&net, k)));
    }
    let holds = live(tx, subnet.id).await?;
    let all: BTreeSet<u128> = holds.iter().map(|(k, _)| *k).collect();
    let others: BTreeSet<u128> = holds.iter().filter(|(_, n)| *n != node_id).map(|(k, _)| *k).collect();
    let used = tx.subnet_addresses(subnet.id).await?;
    let found =
        ipam::lowest_free_avoiding(&net, used, &all).or_else(|| ipam::lowest_free_avoiding(&net, used, &others));
    Ok(found.map_or(Pick::Full { held_for_others: others.len() }, Pick::Address))
}

/// Keeps at most `keep` live holds for `node_id`, dropping its oldest: a
/// node's holds and addresses together stay within its quota, so releasing
/// and allocating over and over reserves no more than holding would.
pub(super) async fn fit(tx: &mut Tx, node_id: u64, keep: u32) -> Result<()> {
    db::query("DELETE FROM address_holds WHERE node_id = $1 AND held_until <= $2")
        .bind(node_id as i64)
        .bind(super::now())
        .execute(tx.c())
        .await?;
    let count: i64 = db::query_scalar("SELECT COUNT(*) FROM address_holds WHERE node_id = $1")
        .bind(node_id as i64)
        .fetch_one(tx.c())
        .await?;
    let over = count - i64::from(keep);
    if over > 0 {
        db::query(
            "DELETE FROM address_holds WHERE address IN (SELECT address FROM address_holds WHERE node_id = $1 \
             ORDER BY released_at, address LIMIT $2)",
        )
        .bind(node_id as i64)
        .bind(over)
        .execute(tx.c())
        .await?;
    }
    Ok(())
}

/// Refuses a node's request for `ip` by name while another node's
/// container released it lately; an admin's request ends the hold.
pub(super) async fn check_explicit(tx: &mut Tx, caller: &Caller, ip: IpAddr, node_id: u64) -> Result<()> {
    let now = super::now();
    let held: Option<(String, String, i64, i64)> = db::query(
        "SELECT n.name, h.container, h.released_at, h.held_until FROM address_holds h \
         JOIN nodes n ON n.id = h.node_id WHERE h.address = $1 AND h.node_id <> $2 AND h.held_until > $3",
    )
    .bind(ip.to_string())
    .bind(node_id as i64)
    .bind(now)
    .fetch_optional(tx.c())
    .await?
    .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
    .transpose()?;
    match (held, caller) {
        (Some((node, container, released_at, until)), Caller::Node { .. }) => Err(Error::AlreadyExists(format!(
            "{ip} was released by container {container} on node {node} {}s ago and is kept for it for another {}s \
             (coordinator --address-hold), in case it comes back; the admin can end that now: weavectl ipam \
             release {container} --node {node}",
            now.saturating_sub(released_at),
            until.saturating_sub(now),
        ))),
        _ => Ok(()),
    }
}

/// An address was allocated: whatever held it is over.
pub(super) async fn taken(tx: &mut Tx, ip: IpAddr) -> Result<()> {
    db::query("DELETE FROM address_holds WHERE address = $1").bind(ip.to_string()).execute(tx.c()).await?;
    Ok(())
}

impl super::Store {
    /// Ends the holds kept for container `container` of node `node_id`
    /// (in `subnet`, or all): the admin's `weavectl ipam release` of a
    /// container already released, to give its address to another host's
    /// container now (it said "has no address" and the hold's message
    /// named an API call weavectl did not have; found by a review,
    /// 2026-12-06). The addresses freed, with their prefix.
    pub async fn end_holds(&self, node_id: u64, container: &str, subnet: Option<&str>) -> Result<Vec<String>> {
        let mut tx = self.begin().await?;
        let subnet_id = match subnet {
            Some(sel) => Some(rows::resolve_subnet(tx.c(), sel).await?.id),
            None => None,
        };
        let rows = db::query(
            "DELETE FROM address_holds WHERE node_id = $1 AND container = $2 AND held_until > $3 \
             AND ($4 IS NULL OR subnet_id = $4) RETURNING address, subnet_id",
        )
        .bind(node_id as i64)
        .bind(container)
        .bind(super::now())
        .bind(subnet_id)
        .fetch_all(tx.c())
        .await?;
        let mut freed = Vec::new();
        for r in &rows {
            let (address, subnet): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
            let cidr: String =
                db::query_scalar("SELECT cidr FROM subnets WHERE id = $1").bind(subnet).fetch_one(tx.c()).await?;
            freed.push(rows::with_prefix(&address, &cidr));
        }
        self.commit(tx).await?;
        Ok(freed)
    }

    /// The live holds, oldest release first, of `node_id` and in `subnet`
    /// (a CIDR or a name) when given.
    pub async fn list_holds(&self, node_id: Option<u64>, subnet: Option<&str>) -> Result<Vec<v1::AddressHold>> {
        let mut c = self.read.acquire().await?;
        let subnet_id = match subnet {
            Some(sel) => Some(rows::resolve_subnet(&mut c, sel).await?.id),
            None => None,
        };
        let rows = db::query(
            "SELECT h.address, h.subnet_id, s.cidr, h.node_id, n.name, h.container, h.released_at, h.held_until \
             FROM address_holds h JOIN subnets s ON s.id = h.subnet_id JOIN nodes n ON n.id = h.node_id \
             WHERE h.held_until > $1 AND ($2 IS NULL OR h.node_id = $2) AND ($3 IS NULL OR h.subnet_id = $3) \
             ORDER BY h.released_at, h.address",
        )
        .bind(super::now())
        .bind(node_id.map(|n| n as i64))
        .bind(subnet_id)
        .fetch_all(&mut c)
        .await?;
        rows.iter()
            .map(|r| {
                let (address, cidr): (String, String) = (r.try_get(0)?, r.try_get(2)?);
                Ok(v1::AddressHold {
                    address: rows::with_prefix(&address, &cidr),
                    subnet_id: r.try_get::<i64, _>(1)? as u64,
                    subnet: cidr,
                    node_id: r.try_get::<i64, _>(3)? as u64,
                    node: r.try_get(4)?,
                    container: r.try_get(5)?,
                    released_at: r.try_get(6)?,
                    held_until: r.try_get(7)?,
                })
            })
            .collect()
    }
}
