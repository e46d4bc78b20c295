//! IPAM allocations: idempotent per (node, container, subnet), lowest free
//! address first, explicit addresses honoured or refused naming the holder.
use std::net::IpAddr;

use super::db::{self, Conn};
use weave_proto::v1::{self, map_change::Change};

use super::{
    Caller, Store, Tx, dns,
    holds::{self, Holds, Pick},
    rows::{self, ALLOCATION_SELECT},
};
use crate::{
    error::{Error, Result},
    ipam::{self, Unusable},
};

#[derive(Debug, Default, Clone)]
pub struct AllocationFilter {
    pub node_id: Option<u64>,
    pub subnet: Option<String>,
    pub container: Option<String>,
}

pub(super) async fn list(c: &mut Conn, f: &AllocationFilter) -> Result<Vec<v1::Allocation>> {
    let subnet_id = match &f.subnet {
        Some(sel) => Some(rows::resolve_subnet(&mut *c, sel).await?.id),
        None => None,
    };
    let rows = db::query(sqlx::AssertSqlSafe(format!(
        "{ALLOCATION_SELECT} WHERE ($1 IS NULL OR a.node_id = $1) AND ($2 IS NULL OR a.subnet_id = $2) \
         AND ($3 IS NULL OR a.container = $3) ORDER BY a.id"
    )))
    .bind(f.node_id.map(|n| n as i64))
    .bind(subnet_id)
    .bind(f.container.as_deref())
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(rows::allocation).collect()
}

async fn by_id(tx: &mut Tx, id: i64) -> Result<v1::Allocation> {
    let row = db::query(sqlx::AssertSqlSafe(format!("{ALLOCATION_SELECT} WHERE a.id = $1")))
        .bind(id)
        .fetch_one(tx.c())
        .await?;
    rows::allocation(&row)
}

impl Store {
    /// Gives `container` on `node_id` an address in `subnet` (the one in
    /// `explicit`, or the lowest free), and registers `dns_name` for it.
    /// `caller` decides who may take `dns_name` (see [`Store::add_record`]).
    pub async fn allocate(
        &self,
        caller: &Caller,
        node_id: u64,
        container: &str,
        subnet: &str,
        explicit: Option<(IpAddr, Option<u8>)>,
        dns_name: Option<&str>,
    ) -> Result<v1::Allocation> {
        let container = check_container(container)?;
        let mut tx = self.begin().await?;
        let subnet = rows::resolve_subnet(tx.c(), subnet).await?;
        let net = subnet.net;
        // Before the existing allocation is looked at: the same wrong prefix
        // is refused whatever the state (it was taken on a retry once the
        // address was allocated; found by a review, 2026-12-07).
        if let Some((ip, Some(p))) = explicit
            && p != net.prefix_len()
        {
            return Err(Error::InvalidArgument(format!(
                "{ip}/{p} does not match subnet {net}: the prefix length there is /{}",
                net.prefix_len()
            )));
        }
        let existing: Option<i64> =
            db::query_scalar("SELECT id FROM allocations WHERE node_id = $1 AND container = $2 AND subnet_id = $3")
                .bind(node_id as i64)
                .bind(container)
                .bind(subnet.id)
                .fetch_optional(tx.c())
                .await?;
        let allocation = if let Some(id) = existing {
            let allocation = by_id(&mut tx, id).await?;
            if let Some((ip, _)) = explicit
                && !allocation.address.starts_with(&format!("{ip}/"))
            {
                // `host:<node>` is what expose allocates for: undone by hide.
                let (who, undo) = match container.strip_prefix("host:") {
                    Some(node) => (format!("host {node}"), "hide"),
                    None => (format!("container {container}"), "detach"),
                };
                return Err(Error::AlreadyExists(format!(
                    "{who} already has {} in {net}; {undo} it first to change its address",
                    allocation.address
                )));
            }
            allocation
        } else {
            let mut room_for_holds = None;
            if let Some(quota) = self.node_quota {
                let held: i64 = db::query_scalar("SELECT COUNT(*) FROM allocations WHERE node_id = $1")
                    .bind(node_id as i64)
                    .fetch_one(tx.c())
                    .await?;
                room_for_holds = Some(u32::try_from(i64::from(quota) - held - 1).unwrap_or(0));
                if held >= i64::from(quota) {
                    let node = rows::resolve_node(tx.c(), &node_id.to_string()).await?;
                    return Err(Error::Exhausted(format!(
                        "node {} already holds {held} addresses, its quota (coordinator --node-quota {quota}): \
                         release some first",
                        node.name
                    )));
                }
            }
            let address = match explicit {
                Some((ip, _)) => {
                    match ipam::check_explicit(&net, ip) {
                        Err(Unusable::Outside) => {
                            return Err(Error::InvalidArgument(format!("{ip} is outside subnet {net}")));
                        }
                        Err(Unusable::Reserved) => {
                            return Err(Error::InvalidArgument(format!(
                                "{ip} is the network or broadcast address of {net} and cannot be assigned"
                            )));
                        }
                        Ok(()) => {}
                    }
                    let holder = db::query(
                        "SELECT a.container, n.name AS node FROM allocations a JOIN nodes n ON n.id = a.node_id \
                         WHERE a.address = $1",
                    )
                    .bind(ip.to_string())
                    .fetch_optional(tx.c())
                    .await?;
                    if let Some(h) = holder {
                        let (c, n): (String, String) = (h.try_get("container")?, h.try_get("node")?);
                        return Err(Error::AlreadyExists(format!("{ip} is already held by container {c} on node {n}")));
                    }
                    holds::check_explicit(&mut tx, caller, ip, node_id).await?;
                    ip
                }
                None => match holds::pick(&mut tx, &subnet, node_id, container).await? {
                    Pick::Address(ip) => ip,
                    Pick::Full { held_for_others } => {
                        let in_use = tx.subnet_addresses(subnet.id).await?.len();
                        let kept = match held_for_others {
                            0 => String::new(),
                            n => format!("; {n} more released lately are kept for their containers (--address-hold)"),
                        };
                        return Err(Error::Exhausted(format!(
                            "subnet {net} has no free address ({in_use} of {} in use{kept})",
                            ipam::capacity(&net)
                        )));
                    }
                },
            };
            holds::taken(&mut tx, address).await?;
            if let Some(keep) = room_for_holds {
                holds::fit(&mut tx, node_id, keep).await?;
            }
            let id = tx.next_id("allocations").await?;
            db::query(
                "INSERT INTO allocations (id, subnet_id, node_id, container, address, created_at) \
                 VALUES ($6, $1, $2, $3, $4, $5)",
            )
            .bind(subnet.id)
            .bind(node_id as i64)
            .bind(container)
            .bind(address.to_string())
            .bind(super::now())
            .bind(id)
            .execute(tx.c())
            .await?;
            let allocation = by_id(&mut tx, id).await?;
            tx.record(Change::AllocationAdded(allocation.clone())).await?;
            allocation
        };
        if let Some(name) = dns_name.filter(|n| !n.trim().is_empty()) {
            let ip = allocation.address.split('/').next().unwrap_or_default().to_string();
            let claimant = match caller {
                Caller::Admin => None,
                Caller::Node { .. } => Some(node_id),
            };
            let claimant = claimant.map(|node| dns::Claimant { node, quota: self.node_dns_quota });
            dns::insert_if_absent(&mut tx, name, &ip, Some(allocation.id as i64), claimant).await?;
        }
        self.commit(tx).await?;
        Ok(allocation)
    }

    /// Releases the container's address in `subnet`, or in every subnet when
    /// `subnet` is None, with the DNS records that point at them.
    pub async fn release(
        &self,
        node_id: u64,
        container: &str,
        subnet: Option<&str>,
    ) -> Result<(Vec<v1::Allocation>, u32)> {
        // Refused as Allocate refuses it: an id no allocation can have is the
        // caller's mistake, not an address already given back.
        let container = check_container(container)?;
        let mut tx = self.begin().await?;
        let subnet_row = match subnet {
            Some(sel) => Some(rows::resolve_subnet(tx.c(), sel).await?),
            None => None,
        };
        let filter = AllocationFilter {
            node_id: Some(node_id),
            subnet: subnet_row.as_ref().map(|s| s.record.cidr.clone()),
            container: Some(container.to_string()),
        };
        let released = list(tx.c(), &filter).await?;
        if released.is_empty() {
            let node = rows::resolve_node(tx.c(), &node_id.to_string()).await?;
            return Err(Error::NotFound(match subnet_row {
                Some(s) => format!("container '{container}' on node {} has no address in {}", node.name, s.net),
                None => format!("container '{container}' on node {} has no address", node.name),
            }));
        }
        let mut records = 0;
        for a in &released {
            let holds = Holds { dns: self.dns_hold, address: self.address_hold };
            records += super::nodes::release_where(&mut tx, "a.id = $1", a.id as i64, holds).await?.1;
        }
        self.commit(tx).await?;
        Ok((released, records))
    }

    pub async fn list_allocations(&self, filter: &AllocationFilter) -> Result<Vec<v1::Allocation>> {
        let mut c = self.read.acquire().await?;
        list(&mut c, filter).await
    }
}

fn check_container(container: &str) -> Result<&str> {
    let c = container.trim();
    // Printable ASCII only: ids end up in every admin's tables (`ipam ls`,
    // `dns ls`), where a right-to-left override or a zero-width space would
    // disguise a row, and no runtime makes any other kind (Docker and CNI ids
    // and names, Kubernetes sandboxes, `host:<node>`).
    if c.is_empty() || c.len() > 256 || !c.chars().all(|ch| ch.is_ascii_graphic()) {
        return Err(Error::InvalidArgument(format!(
            "{container:?} is not a container id (1-256 printable ASCII characters, no spaces)"
        )));
    }
    Ok(c)
}
