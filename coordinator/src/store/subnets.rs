//! Subnets: one L2 segment each. Overlaps are refused here (naming the
//! subnet in the way) and, as a last line, by the schema's triggers.
use std::net::{IpAddr, SocketAddr};

use super::db::{self, Conn};
use ipnet::IpNet;
use weave_proto::v1::{self, Node, map_change::Change};

use super::{
    Store, Tx,
    nodes::release_where,
    now, parse_net,
    rows::{self, SUBNET_COLUMNS},
};
use crate::{
    error::{Error, Result},
    ipam,
};

pub(super) async fn all(c: &mut Conn, with_counts: bool) -> Result<Vec<v1::Subnet>> {
    let rows = db::query(sqlx::AssertSqlSafe(format!("SELECT {SUBNET_COLUMNS} FROM subnets ORDER BY id")))
        .fetch_all(&mut *c)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut s = rows::subnet(r)?.record;
        if with_counts {
            s.allocated = allocated(c, s.id).await?;
        }
        out.push(s);
    }
    Ok(out)
}

/// How many addresses subnet `id` has given.
async fn allocated(c: &mut Conn, id: u64) -> Result<u64> {
    let n: i64 = db::query_scalar("SELECT COUNT(*) FROM allocations WHERE subnet_id = $1")
        .bind(id as i64)
        .fetch_one(&mut *c)
        .await?;
    Ok(n as u64)
}

/// A subnet label: what DNS allows in a label, so it can name things later.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.parse::<i64>().is_err();
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "subnet name '{name}' is not valid: use 1-63 letters, digits, '-' or '_' (not only digits, not starting or ending with '-')"
        )))
    }
}

/// The first underlay address `net` would swallow, named for the error: a
/// node's endpoint (how its peers reach it) or one of the coordinator's own
/// addresses (how every agent reaches it). A subnet is routed into the
/// overlay bridge on every host, so one holding such an address cuts that
/// host off: checked for every caller, the admin too.
pub fn underlay_conflict(net: &IpNet, nodes: &[Node], coordinator: &[IpAddr]) -> Option<String> {
    for node in nodes {
        // Its announced endpoints and the one it was seen at behind NAT, in
        // either form of an IPv4 address (plain or IPv4-mapped IPv6).
        let endpoint = node
            .endpoints
            .iter()
            .chain(std::iter::once(&node.observed_endpoint))
            .filter_map(|e| e.parse::<SocketAddr>().ok())
            .map(|e| e.ip().to_canonical())
            .find(|ip| net.contains(ip));
        if let Some(ip) = endpoint {
            return Some(format!("the underlay address {ip} of node {}", node.name));
        }
    }
    coordinator.iter().find(|ip| net.contains(*ip)).map(|ip| format!("the coordinator's own address {ip}"))
}

/// A node that adds a subnet, and how many it may have added (None: no limit).
pub(super) struct AddedBy<'a> {
    pub id: u64,
    pub name: &'a str,
    pub quota: Option<u32>,
}

pub(super) async fn insert(
    tx: &mut Tx,
    net: &IpNet,
    name: Option<&str>,
    is_default: bool,
    added_by: Option<AddedBy<'_>>,
    underlay: &[IpAddr],
    egress: bool,
) -> Result<v1::Subnet> {
    let node_range: String = db::query_scalar("SELECT node_range FROM cluster WHERE id = 1").fetch_one(tx.c()).await?;
    let node_range = parse_net(node_range)?;
    if ipam::overlaps(net, &node_range) {
        return Err(Error::InvalidArgument(format!(
            "{net} overlaps the block reserved for node addresses ({node_range}, --node-range); choose a subnet outside it"
        )));
    }
    let existing = all(tx.c(), false).await?;
    if let Some(other) = existing.iter().find(|s| s.cidr.parse::<IpNet>().is_ok_and(|o| ipam::overlaps(net, &o))) {
        let label = if other.name.is_empty() { String::new() } else { format!(" ({})", other.name) };
        return Err(if other.cidr == net.to_string() {
            Error::AlreadyExists(format!("subnet {net} already exists{label}"))
        } else {
            Error::AlreadyExists(format!("{net} overlaps subnet {}{label}", other.cidr))
        });
    }
    if let Some(name) = name {
        if !is_default {
            check_name(name)?;
            if name.eq_ignore_ascii_case("default") {
                return Err(Error::InvalidArgument("'default' names the default subnet; pick another name".into()));
            }
        }
        // Names differing only in case are one name, as node names are: a
        // `net:Backend` typo must not find a second subnet beside 'backend'.
        if let Some(other) = existing.iter().find(|s| s.name.eq_ignore_ascii_case(name)) {
            let like = if other.name == name { String::new() } else { format!(" (as '{}')", other.name) };
            return Err(Error::AlreadyExists(format!("subnet name '{name}' is taken{like} by {}", other.cidr)));
        }
    }
    // After the checks above: asking again for a subnet that exists is
    // "already exists", whatever the quota.
    if let Some(AddedBy { id, name, quota: Some(quota) }) = &added_by {
        let added: i64 = db::query_scalar("SELECT COUNT(*) FROM subnets WHERE added_by = $1")
            .bind(*id as i64)
            .fetch_one(tx.c())
            .await?;
        if added >= i64::from(*quota) {
            return Err(Error::Exhausted(format!(
                "node {name} has already added {added} subnets, its quota (coordinator --node-subnet-quota {quota}): \
                 the admin adds more (weavectl subnet add) or removes unused ones (weavectl subnet rm)"
            )));
        }
    }
    // Last, as it reads every node: a subnet that exists, or one past the
    // caller's quota, is refused without it.
    let nodes = super::nodes::all(tx.c()).await?;
    if let Some(conflict) = underlay_conflict(net, &nodes, underlay) {
        return Err(Error::FailedPrecondition(format!(
            "{net} contains {conflict}: every agent would route it into the overlay and cut that host off \
             its underlay; choose a subnet away from the hosts' real addresses"
        )));
    }
    let used: Vec<u32> = existing.iter().map(|s| s.vni).collect();
    let vni = (0..).map(|attempt| ipam::vni(net, attempt)).find(|v| !used.contains(v)).unwrap_or(1);
    let id = tx.next_id("subnets").await?;
    let row = db::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO subnets (id, cidr, name, first_key, last_key, is_default, vni, created_at, added_by, by_member, \
         origin_node, egress) VALUES ($11, $1, $2, $3, $4, $5, $6, $7, $8, $9, $8, $10) RETURNING {SUBNET_COLUMNS}"
    )))
    .bind(net.to_string())
    .bind(name)
    .bind(ipam::key_text(net.network()))
    .bind(ipam::key_text(net.broadcast()))
    .bind(is_default)
    .bind(i64::from(vni))
    .bind(now())
    .bind(added_by.as_ref().map(|a| a.id as i64))
    .bind(added_by.is_some())
    .bind(egress)
    .bind(id)
    .fetch_one(tx.c())
    .await?;
    let subnet = rows::subnet(&row)?.record;
    tx.record(Change::SubnetAdded(subnet.clone())).await?;
    Ok(subnet)
}

impl Store {
    /// A subnet of the admin's; `underlay`: the coordinators' own addresses,
    /// which no subnet may hold (nor any node's endpoint).
    pub async fn add_subnet(
        &self,
        net: &IpNet,
        name: Option<&str>,
        underlay: &[IpAddr],
        egress: bool,
    ) -> Result<v1::Subnet> {
        let mut tx = self.begin().await?;
        let subnet = insert(&mut tx, net, name, false, None, underlay, egress).await?;
        self.commit(tx).await?;
        Ok(subnet)
    }

    /// An unnamed subnet added by node `node_id` (`node_name` for errors),
    /// within its `--node-subnet-quota`.
    pub async fn add_node_subnet(
        &self,
        net: &IpNet,
        node_id: u64,
        node_name: &str,
        underlay: &[IpAddr],
    ) -> Result<v1::Subnet> {
        let mut tx = self.begin().await?;
        let added_by = AddedBy { id: node_id, name: node_name, quota: self.node_subnet_quota };
        let subnet = insert(&mut tx, net, None, false, Some(added_by), underlay, false).await?;
        self.commit(tx).await?;
        Ok(subnet)
    }

    /// Turns a subnet's egress on or off (the admin's); the agents see the
    /// change as the subnet again (`SubnetAdded` replaces it by id). Setting
    /// what it already is changes nothing and records nothing.
    /// Returns the subnet as `subnet ls` shows it, with its count of
    /// addresses given (it said 0; found by a review, 2026-12-06).
    pub async fn set_subnet_egress(&self, sel: &str, egress: bool) -> Result<v1::Subnet> {
        let mut tx = self.begin().await?;
        let subnet = rows::resolve_subnet(tx.c(), sel).await?;
        if subnet.record.egress == egress {
            let allocated = allocated(tx.c(), subnet.record.id).await?;
            return Ok(v1::Subnet { allocated, ..subnet.record });
        }
        if egress && subnet.net.addr().is_ipv6() {
            return Err(Error::InvalidArgument(format!("{}: egress is for IPv4 subnets only", subnet.net)));
        }
        let row = db::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subnets SET egress = $1 WHERE id = $2 RETURNING {SUBNET_COLUMNS}"
        )))
        .bind(egress)
        .bind(subnet.id)
        .fetch_one(tx.c())
        .await?;
        let updated = rows::subnet(&row)?.record;
        tx.record(Change::SubnetAdded(updated.clone())).await?;
        let allocated = allocated(tx.c(), subnet.record.id).await?;
        self.commit(tx).await?;
        Ok(v1::Subnet { allocated, ..updated })
    }

    pub async fn list_subnets(&self) -> Result<Vec<v1::Subnet>> {
        let mut c = self.read.acquire().await?;
        all(&mut c, true).await
    }

    /// Refused while containers hold addresses in it, unless `force`, which
    /// releases them (and their DNS records) in the same transaction.
    pub async fn remove_subnet(&self, sel: &str, force: bool) -> Result<(v1::Subnet, u32)> {
        self.remove_subnet_by(sel, force, None).await
    }

    /// [`Self::remove_subnet`] for `by_node` (None: the admin). A node
    /// removes only a subnet it added that the admin has not named or given
    /// egress since, and never with `force` (its holders' allocations): an
    /// agent's Docker plugin takes back the subnet of a `docker network
    /// create` that failed after the subnet was added (it stayed, a bridge
    /// and a VXLAN device on every host; found by a review, 2026-12-05).
    pub async fn remove_subnet_by(&self, sel: &str, force: bool, by_node: Option<u64>) -> Result<(v1::Subnet, u32)> {
        let mut tx = self.begin().await?;
        let subnet = rows::resolve_subnet(tx.c(), sel).await?;
        if let Some(node) = by_node {
            let added_by: Option<i64> = db::query_scalar("SELECT added_by FROM subnets WHERE id = $1")
                .bind(subnet.id)
                .fetch_one(tx.c())
                .await?;
            if force || added_by != Some(node as i64) || !subnet.record.name.is_empty() || subnet.record.egress {
                return Err(Error::PermissionDenied(format!(
                    "a node may remove only an empty subnet it added, unnamed and without egress, and not with \
                     --force: removing {} is the admin's (weavectl subnet rm)",
                    subnet.net
                )));
            }
            // Another node's container's address kept for it counts as in
            // use: removing the subnet (and its holds) and adding it again
            // let a member take that address while the container restarted
            // (found by a review, 2026-12-05).
            let kept: Option<(String, String)> = db::query(
                "SELECT h.container, n.name FROM address_holds h JOIN nodes n ON n.id = h.node_id \
                 WHERE h.subnet_id = $1 AND h.node_id <> $2 AND h.held_until > $3 ORDER BY h.held_until DESC LIMIT 1",
            )
            .bind(subnet.id)
            .bind(node as i64)
            .bind(super::now())
            .fetch_optional(tx.c())
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?;
            if let Some((container, holder)) = kept {
                return Err(Error::FailedPrecondition(format!(
                    "subnet {} holds an address released by {container} on {holder}, kept for it \
                     (coordinator --address-hold); try again once that hold ran out",
                    subnet.net
                )));
            }
        }
        // After the node's checks: a node asking for what it may never do
        // is told so (PERMISSION_DENIED), whichever subnet it named; the
        // default subnet answered FAILED_PRECONDITION, the others
        // PERMISSION_DENIED (found by a review, 2026-12-07).
        if subnet.record.is_default {
            return Err(Error::FailedPrecondition(format!(
                "{} is the default subnet and cannot be removed",
                subnet.net
            )));
        }
        let holders = db::query(
            "SELECT a.container, n.name AS node FROM allocations a JOIN nodes n ON n.id = a.node_id \
             WHERE a.subnet_id = $1 ORDER BY a.id LIMIT 3",
        )
        .bind(subnet.id)
        .fetch_all(tx.c())
        .await?;
        if !holders.is_empty() && !force {
            let count: i64 = db::query_scalar("SELECT COUNT(*) FROM allocations WHERE subnet_id = $1")
                .bind(subnet.id)
                .fetch_one(tx.c())
                .await?;
            let names: Vec<String> = holders
                .iter()
                .map(|r| {
                    let container: String = r.try_get("container").unwrap_or_default();
                    let node: String = r.try_get("node").unwrap_or_default();
                    format!("{container} on {node}")
                })
                .collect();
            let more = if count > 3 { ", ..." } else { "" };
            return Err(Error::FailedPrecondition(format!(
                "subnet {} still has {count} allocation(s) ({}{more}); detach them first or remove with --force",
                subnet.net,
                names.join(", ")
            )));
        }
        let (released, _) = release_where(&mut tx, "a.subnet_id = $1", subnet.id, Default::default()).await?;
        db::query("DELETE FROM subnets WHERE id = $1").bind(subnet.id).execute(tx.c()).await?;
        tx.record(Change::SubnetRemoved(subnet.id as u64)).await?;
        self.commit(tx).await?;
        Ok((subnet.record, released))
    }
}
