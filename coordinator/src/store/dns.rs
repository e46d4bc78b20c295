//! DNS records under the cluster domain: several per name (round robin),
//! owned by a container's allocation (and removed with it) or external.
use super::db::{self, Conn};
use weave_proto::v1::{self, map_change::Change};

use super::{
    Caller, Store, Tx,
    rows::{self, DNS_SELECT},
};
use crate::error::{Error, Result};

/// [`weave_proto::dns_name::qualify`], refused as `INVALID_ARGUMENT`.
pub fn qualify_name(name: &str, domain: &str) -> Result<String> {
    weave_proto::dns_name::qualify(name, domain).map_err(Error::InvalidArgument)
}

pub(super) async fn all(c: &mut Conn) -> Result<Vec<v1::DnsRecord>> {
    let rows = db::query(sqlx::AssertSqlSafe(format!("{DNS_SELECT} ORDER BY d.id"))).fetch_all(c).await?;
    rows.iter().map(rows::dns_record).collect()
}

async fn domain(tx: &mut Tx) -> Result<String> {
    Ok(db::query_scalar("SELECT dns_domain FROM cluster WHERE id = 1").fetch_one(tx.c()).await?)
}

/// Keeps each released `(name, node)` for that node for `secs`: no other
/// node may claim the name meanwhile ([`check_hold`]). Only a name nobody
/// answers for any more is held (an admin's round robin across nodes goes
/// on: the others' containers keep claiming it), and a hold is renewed only
/// by its own node; holds that ran out go. Called after the records went.
/// (A shared name's hold keeps no one out while it is shared.)
pub(super) async fn hold<'a>(tx: &mut Tx, released: impl Iterator<Item = (&'a str, i64)>, secs: u64) -> Result<()> {
    let now = super::now();
    db::query("DELETE FROM dns_holds WHERE held_until <= $1").bind(now).execute(tx.c()).await?;
    for (name, node) in released {
        db::query(
            "INSERT INTO dns_holds (name, node_id, released_at, held_until) \
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM dns_records WHERE name = $1) \
             ON CONFLICT (name) DO UPDATE SET released_at = excluded.released_at, held_until = excluded.held_until \
             WHERE dns_holds.node_id = excluded.node_id",
        )
        .bind(name)
        .bind(node)
        .bind(now)
        .bind(now.saturating_add(secs as i64))
        .execute(tx.c())
        .await?;
    }
    Ok(())
}

/// Refuses node `node`'s claim on `fqdn` while another node holds it: that
/// node's container released it lately and may come back (a restart, a
/// re-attach). A member watching the map otherwise took a restarting
/// container's name in the gap, answered for it, and the container's own
/// allocation then failed whole.
async fn check_hold(tx: &mut Tx, fqdn: &str, node: u64) -> Result<()> {
    let now = super::now();
    let held: Option<(String, i64, i64)> = db::query(
        "SELECT n.name, h.released_at, h.held_until FROM dns_holds h JOIN nodes n ON n.id = h.node_id \
         WHERE h.name = $1 AND h.node_id <> $2 AND h.held_until > $3",
    )
    .bind(fqdn)
    .bind(node as i64)
    .bind(now)
    .fetch_optional(tx.c())
    .await?
    .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
    .transpose()?;
    match held {
        Some((holder, released_at, until)) => Err(Error::AlreadyExists(format!(
            "{fqdn} was released by node {holder}'s container {}s ago and is kept for it for another {}s \
             (coordinator --dns-name-hold), in case it comes back; an admin frees it now with \
             `weavectl dns rm {}`",
            now.saturating_sub(released_at),
            until.saturating_sub(now),
            fqdn.trim_end_matches('.')
        ))),
        None => Ok(()),
    }
}

/// `localhost` (and any name under it) is the host itself (RFC 6761): a
/// record would send a container that asks its resolver for it, not its
/// hosts file, to whoever published it (found by a review, 2026-12-05).
fn not_localhost(name: &str, fqdn: &str, domain: &str) -> Result<()> {
    let relative = fqdn.strip_suffix(&format!(".{}", domain.trim_start_matches('.'))).unwrap_or(fqdn);
    if relative.rsplit('.').next() == Some("localhost") {
        return Err(Error::InvalidArgument(format!(
            "'{name}' is reserved: localhost is always the host itself (RFC 6761)"
        )));
    }
    Ok(())
}

/// Whether an admin opened `fqdn` to every node's containers (`weavectl dns share`).
async fn is_shared(tx: &mut Tx, fqdn: &str) -> Result<bool> {
    let n: i64 =
        db::query_scalar("SELECT COUNT(*) FROM dns_shared_names WHERE name = $1").bind(fqdn).fetch_one(tx.c()).await?;
    Ok(n > 0)
}

/// A node adding a record, and how many it may hold (None: no limit).
pub(super) struct Claimant {
    pub node: u64,
    pub quota: Option<u32>,
}

/// Adds (name, address) unless it is there; returns the record either way.
/// With `claimant` (a node caller), the name must not be held by another
/// node's container or by an external record: a node cannot join someone
/// else's round robin unless an admin shared the name; and a new record must
/// fit in the node's quota.
pub(super) async fn insert_if_absent(
    tx: &mut Tx,
    name: &str,
    address: &str,
    allocation_id: Option<i64>,
    claimant: Option<Claimant>,
) -> Result<(v1::DnsRecord, bool)> {
    let domain = domain(tx).await?;
    let fqdn = qualify_name(name, &domain)?;
    not_localhost(name, &fqdn, &domain)?;
    // A name under a subnet's scope label (a Docker network's alias) only
    // for an address in that subnet: it answers that network's containers
    // first, so one pointing elsewhere took a name another holds from them
    // (found by a review, 2026-12-05).
    if let Ok(ip) = address.parse() {
        weave_proto::dns_name::check_scope(&fqdn, &domain, ip).map_err(Error::InvalidArgument)?;
    }
    if let Some(Claimant { node, .. }) = claimant {
        claimable(tx, &fqdn, node).await?;
    }
    let existing: Option<i64> = db::query_scalar("SELECT id FROM dns_records WHERE name = $1 AND address = $2")
        .bind(&fqdn)
        .bind(address)
        .fetch_optional(tx.c())
        .await?;
    let (id, new) = match existing {
        Some(id) => (id, false),
        None => {
            if let Some(Claimant { node, quota: Some(quota) }) = claimant {
                let held: i64 = db::query_scalar(
                    "SELECT COUNT(*) FROM dns_records d JOIN allocations a ON a.id = d.allocation_id \
                     WHERE a.node_id = $1",
                )
                .bind(node as i64)
                .fetch_one(tx.c())
                .await?;
                if held >= i64::from(quota) {
                    return Err(Error::Exhausted(format!(
                        "this node already holds {held} DNS records, its quota (coordinator --node-dns-quota \
                         {quota}): remove some first"
                    )));
                }
            }
            let id = tx.next_id("dns_records").await?;
            db::query(
                "INSERT INTO dns_records (id, name, address, allocation_id, created_at) VALUES ($5, $1, $2, $3, $4)",
            )
            .bind(&fqdn)
            .bind(address)
            .bind(allocation_id)
            .bind(super::now())
            .bind(id)
            .execute(tx.c())
            .await?;
            (id, true)
        }
    };
    let row =
        db::query(sqlx::AssertSqlSafe(format!("{DNS_SELECT} WHERE d.id = $1"))).bind(id).fetch_one(tx.c()).await?;
    let record = rows::dns_record(&row)?;
    // The name is answered for again: its hold (the claimant's own, or any,
    // when the admin gives it to a container) has done its work.
    db::query("DELETE FROM dns_holds WHERE name = $1").bind(&fqdn).execute(tx.c()).await?;
    if new {
        tx.record(Change::DnsRecordAdded(record.clone())).await?;
    }
    Ok((record, new))
}

/// Whether node `node` may add a record named `fqdn`: the name is shared
/// by the admin, or no other node's container, no external record and no
/// hold for another node has it (`ALREADY_EXISTS` saying which).
async fn claimable(tx: &mut Tx, fqdn: &str, node: u64) -> Result<()> {
    // A shared name (`weavectl dns share`) takes every node's containers:
    // round robin across hosts, and no hold to wait out.
    if !is_shared(tx, fqdn).await? {
        check_hold(tx, fqdn, node).await?;
        let holder: Option<Option<String>> = db::query_scalar(
            "SELECT n.name FROM dns_records d LEFT JOIN allocations a ON a.id = d.allocation_id \
             LEFT JOIN nodes n ON n.id = a.node_id \
             WHERE d.name = $1 AND (a.node_id IS NULL OR a.node_id <> $2) ORDER BY d.id LIMIT 1",
        )
        .bind(fqdn)
        .bind(node as i64)
        .fetch_optional(tx.c())
        .await?;
        if let Some(holder) = holder {
            let by = holder.map_or_else(|| "an external record".to_string(), |n| format!("node {n}'s containers"));
            // The agent leaves a CNI pod's name out on " is held by " (`attach/allocate.rs`).
            return Err(Error::AlreadyExists(format!(
                "{fqdn} is held by {by}; a node may add only names that no other node holds \
                 (for containers on several hosts under one name, an admin shares it: `weavectl dns share {}`)",
                fqdn.trim_end_matches('.')
            )));
        }
    }
    Ok(())
}

/// An address a record may point at: one a client can connect to. The
/// unspecified, broadcast and multicast addresses are refused (a name for
/// them is a mistake), and so are loopback (every container would reach
/// itself) and IPv6 link-local ones (useless without the zone, which a
/// record cannot carry); IPv4 link-local stays (a name for a link-local
/// service is the admin's choice). An IPv4-mapped IPv6 address is its IPv4
/// address, as the same address must be one record, not two.
fn answerable(ip: std::net::IpAddr) -> Result<std::net::IpAddr> {
    let ip = ip.to_canonical();
    let bad = match ip {
        std::net::IpAddr::V4(v4) => v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast(),
        std::net::IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    if bad {
        return Err(Error::InvalidArgument(format!(
            "{ip} is an unspecified, broadcast or multicast address: a DNS record points at one host"
        )));
    }
    if ip.is_loopback() {
        return Err(Error::InvalidArgument(format!(
            "{ip} is a loopback address: each container asking would reach itself, not one host"
        )));
    }
    if let std::net::IpAddr::V6(v6) = ip
        && v6.is_unicast_link_local()
    {
        return Err(Error::InvalidArgument(format!(
            "{ip} is an IPv6 link-local address, which needs its link's zone (a record cannot carry one)"
        )));
    }
    Ok(ip)
}

impl Store {
    /// An admin may add any record; one that points at an allocated address
    /// belongs to that container and goes when it is detached. A node may add
    /// records only for addresses its own containers hold, and only under
    /// names no other node (and no external record) holds.
    pub async fn add_record(&self, caller: &Caller, name: &str, address: &str) -> Result<v1::DnsRecord> {
        let ip = answerable(rows::parse_ip(address)?)?.to_string();
        let mut tx = self.begin().await?;
        let holder: Option<(i64, i64)> = db::query("SELECT id, node_id FROM allocations WHERE address = $1")
            .bind(&ip)
            .fetch_optional(tx.c())
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?;
        if let Caller::Node { id, name: node } = caller
            && holder.is_none_or(|(_, n)| n as u64 != *id)
        {
            return Err(Error::PermissionDenied(format!(
                "node {node} may add records only for addresses its containers hold, and {ip} is not one"
            )));
        }
        // A subnet's network or broadcast address no host has (IPAM gives
        // neither): the record would lead nowhere.
        if let (Ok(std::net::IpAddr::V4(v4)), None) = (ip.parse(), holder) {
            let cidrs: Vec<String> = db::query_scalar("SELECT cidr FROM subnets").fetch_all(tx.c()).await?;
            for net in cidrs.iter().filter_map(|c| c.parse::<ipnet::IpNet>().ok()) {
                if crate::ipam::check_explicit(&net, v4.into()) == Err(crate::ipam::Unusable::Reserved) {
                    return Err(Error::InvalidArgument(format!(
                        "{v4} is the network or broadcast address of subnet {net}, which no host has: a DNS record \
                         points at one host"
                    )));
                }
            }
        }
        let claimant = match caller {
            Caller::Admin => None,
            Caller::Node { id, .. } => Some(Claimant { node: *id, quota: self.node_dns_quota }),
        };
        let (record, new) = insert_if_absent(&mut tx, name, &ip, holder.map(|(a, _)| a), claimant).await?;
        if !new {
            return Err(Error::AlreadyExists(format!("{} already resolves to {ip}", record.name)));
        }
        self.commit(tx).await?;
        Ok(record)
    }

    /// Removes the records of `name` (only the one for `address`, if given);
    /// returns how many, and whether the admin freed a hold on the name.
    pub async fn remove_records(&self, caller: &Caller, name: &str, address: Option<&str>) -> Result<(u32, bool)> {
        // Canonical, as add_record stores it (an IPv4-mapped address is its IPv4 address).
        let address = address.map(rows::parse_ip).transpose()?.map(|a| a.to_canonical().to_string());
        let mut tx = self.begin().await?;
        let fqdn = qualify_name(name, &domain(&mut tx).await?)?;
        let node_id = match caller {
            Caller::Admin => None,
            Caller::Node { id, .. } => Some(*id as i64),
        };
        let ids: Vec<i64> = db::query_scalar(
            "SELECT d.id FROM dns_records d LEFT JOIN allocations a ON a.id = d.allocation_id \
             WHERE d.name = $1 AND ($2 IS NULL OR d.address = $2) AND ($3 IS NULL OR a.node_id = $3) ORDER BY d.id",
        )
        .bind(&fqdn)
        .bind(address.as_deref())
        .bind(node_id)
        .fetch_all(tx.c())
        .await?;
        // The admin removing a name frees it: no node takes it back.
        let holds = match node_id {
            None if address.is_none() => {
                db::query("DELETE FROM dns_holds WHERE name = $1").bind(&fqdn).execute(tx.c()).await?
            }
            _ => 0,
        };
        if ids.is_empty() && holds > 0 {
            self.commit(tx).await?;
            return Ok((0, true));
        }
        if ids.is_empty() {
            let what = address.as_ref().map(|a| format!(" with address {a}")).unwrap_or_default();
            // A member asking for others' records (which it can list) is told so, not that there are none.
            let others: Option<Option<String>> = match caller {
                Caller::Node { .. } => {
                    db::query_scalar(
                        "SELECT n.name FROM dns_records d LEFT JOIN allocations a ON a.id = d.allocation_id \
                     LEFT JOIN nodes n ON n.id = a.node_id WHERE d.name = $1 AND ($2 IS NULL OR d.address = $2) \
                     ORDER BY d.id LIMIT 1",
                    )
                    .bind(&fqdn)
                    .bind(address.as_deref())
                    .fetch_optional(tx.c())
                    .await?
                }
                Caller::Admin => None,
            };
            return Err(match (others, caller) {
                (Some(owner), Caller::Node { name, .. }) => Error::PermissionDenied(format!(
                    "{fqdn}{what} is {}; node {name} may remove only its own containers' records",
                    owner.map_or("an admin's record".to_string(), |n| format!("node {n}'s containers' record"))
                )),
                _ => Error::NotFound(format!("no record {fqdn}{what} to remove")),
            });
        }
        for id in &ids {
            db::query("DELETE FROM dns_records WHERE id = $1").bind(id).execute(tx.c()).await?;
            tx.record(Change::DnsRecordRemoved(*id as u64)).await?;
        }
        self.commit(tx).await?;
        Ok((ids.len() as u32, holds > 0))
    }

    /// Opens `name` to every node's containers (`shared`), or closes it:
    /// returns the qualified name, whether this call changed anything, and
    /// how many records it removed. Closing gives the name back to the node
    /// of its oldest container record: the other nodes' containers' records
    /// go (an admin's record for a container's address is that container's;
    /// external ones stay), so that node's containers may claim it again
    /// (left there, a member's replica kept the name from the node that had
    /// it first once that node's container restarted; a review, 2026-12-05).
    pub async fn share_name(&self, name: &str, shared: bool) -> Result<(String, bool, u32)> {
        let mut tx = self.begin().await?;
        let domain = domain(&mut tx).await?;
        let fqdn = qualify_name(name, &domain)?;
        not_localhost(name, &fqdn, &domain)?;
        let changed = if shared {
            db::query("INSERT INTO dns_shared_names (name, shared_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(&fqdn)
                .bind(super::now())
                .execute(tx.c())
                .await?
        } else {
            db::query("DELETE FROM dns_shared_names WHERE name = $1").bind(&fqdn).execute(tx.c()).await?
        };
        let mut removed = 0;
        if !shared && changed > 0 {
            let others: Vec<i64> = db::query_scalar(
                "SELECT d.id FROM dns_records d JOIN allocations a ON a.id = d.allocation_id \
                 WHERE d.name = $1 AND a.node_id <> (SELECT a2.node_id FROM dns_records d2 \
                 JOIN allocations a2 ON a2.id = d2.allocation_id WHERE d2.name = $1 ORDER BY d2.id LIMIT 1) \
                 ORDER BY d.id",
            )
            .bind(&fqdn)
            .fetch_all(tx.c())
            .await?;
            for id in &others {
                db::query("DELETE FROM dns_records WHERE id = $1").bind(id).execute(tx.c()).await?;
                tx.record(Change::DnsRecordRemoved(*id as u64)).await?;
            }
            removed = others.len() as u32;
        }
        self.commit(tx).await?;
        Ok((fqdn, changed > 0, removed))
    }

    /// The shared names, sorted.
    pub async fn shared_names(&self) -> Result<Vec<String>> {
        Ok(db::query_scalar("SELECT name FROM dns_shared_names ORDER BY name").fetch_all(&self.read).await?)
    }

    pub async fn lookup(&self, name: &str, domain: &str) -> Result<(String, Vec<String>)> {
        let fqdn = qualify_name(name, domain)?;
        let addresses: Vec<String> = db::query_scalar("SELECT address FROM dns_records WHERE name = $1 ORDER BY id")
            .bind(&fqdn)
            .fetch_all(&self.read)
            .await?;
        if addresses.is_empty() {
            return Err(Error::NotFound(format!("no record for {fqdn}")));
        }
        Ok((fqdn, addresses))
    }

    pub async fn list_records(&self) -> Result<Vec<v1::DnsRecord>> {
        let mut c = self.read.acquire().await?;
        all(&mut c).await
    }
}
