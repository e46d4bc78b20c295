//! gRPC services, one file each. A handler authenticates the caller, checks
//! its role, converts the request, calls the store, and converts back.
//!
//! Roles: admin may call everything; a node may read (map, nodes, subnets,
//! allocations, records, status) and change only its own endpoints,
//! allocations and DNS records. Join is authenticated by its token alone.

mod admin;
mod dns;
mod ipam;
mod join;
mod map;
pub(crate) use map::ADMIN_RECHECK;
mod nodes;
pub mod pace;
pub mod presence;
mod status;
mod subnets;
pub(crate) mod tokens;

use std::sync::{Arc, atomic::AtomicU32};

use tonic::{Request, Status};
use weave_proto::token::{Pin, hash_secret};

pub use self::{
    admin::Admin,
    dns::Dns,
    ipam::Ipam,
    join::{Join, MAX_ENDPOINTS},
    map::{MAX_WATCHES_PER_CREDENTIAL, Map},
    nodes::Nodes,
    status::StatusApi,
    subnets::{Subnets, own_addresses},
    tokens::{MAX_DESCRIPTION_LEN, Tokens},
};
use crate::{
    error::Error,
    store::{Caller, Cluster, Store},
};

/// What every service shares.
pub struct State {
    pub store: Store,
    pub cluster: Cluster,
    /// host:port put into join tokens.
    pub advertise: String,
    /// This coordinator's own addresses (listen and advertised): no subnet may hold one.
    pub underlay: Vec<std::net::IpAddr>,
    /// The addresses of its PostgreSQL server (`--store`): no subnet may hold one either.
    pub store_hosts: Vec<std::net::IpAddr>,
    /// Where a node (not the admin) may add subnets (`--node-subnets`).
    pub node_subnets: Vec<ipnet::IpNet>,
    pub pin: Pin,
    pub token_ttl: Option<std::time::Duration>,
    /// The shortest `forget_after` a token may give (seconds).
    pub forget_after_floor: u64,
    pub started_at: i64,
    /// Watch streams open now.
    pub watchers: AtomicU32,
    /// Watch streams open now per credential (by its hash), for the limit
    /// [`MAX_WATCHES_PER_CREDENTIAL`].
    pub watches_by_credential: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Open watches by node (the admin's not counted): how many nodes watch
    /// (`weave_watching_nodes`; the stream count alone let one node's extra
    /// watches hide another that had none, a review 2026-12-07).
    pub watches_by_node: std::sync::Mutex<std::collections::HashMap<u64, u32>>,
    /// Issues and checks the challenges of re-joins.
    pub challenger: crate::challenge::Challenger,
    /// Where `admin.credential` lives: rotation rewrites it.
    pub data_dir: std::path::PathBuf,
    /// Bumped when credentials stop being valid without a map change (admin
    /// rotation): open watch streams re-check their caller then.
    pub credentials_epoch: tokio::sync::watch::Sender<u64>,
    /// One admin rotation at a time: two at once wrote the file and the
    /// database in different orders, and left callers holding credentials
    /// that did not work (found by a review, 2026-12-05).
    pub rotation: tokio::sync::Mutex<()>,
    /// Becomes true when the coordinator shuts down: watch streams end then,
    /// or graceful shutdown would wait for them forever.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// How fast each node may call (`--node-rate`).
    pub pacer: pace::Pacer,
    /// How often each source address may fail to authenticate.
    pub failures: pace::Failures,
    /// The connections held: a call that proves a credential marks its own.
    pub(crate) connections: crate::accept::Connections,
    /// Which nodes watch the map here (`weavectl node ls`).
    pub presence: presence::Presence,
}

pub type Shared = Arc<State>;

impl State {
    /// The caller behind the request's bearer credential.
    pub async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        Ok(self.caller_and_hash(req).await?.0)
    }

    /// The caller of a call that answers with the whole map or a list as
    /// long: a node pays [`pace::MAP_READ`] of its rate for it.
    pub async fn map_reader<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        Ok(self.caller_costing(req, pace::MAP_READ).await?.0)
    }

    /// The caller and the hash of its credential, for streams that check
    /// later that the credential is still valid.
    pub async fn caller_and_hash<T>(&self, req: &Request<T>) -> Result<(Caller, String), Status> {
        self.caller_costing(req, 1).await
    }

    /// The caller and its credential's hash; a node caller waits for its
    /// turn under `--node-rate` for a call of `cost` (or is refused).
    async fn caller_costing<T>(&self, req: &Request<T>, cost: u32) -> Result<(Caller, String), Status> {
        let (caller, hash) = self.authenticate(req).await?;
        if let Caller::Node { id, name } = &caller {
            self.pacer.pace(*id, name, cost).await?;
        }
        Ok((caller, hash))
    }

    async fn authenticate<T>(&self, req: &Request<T>) -> Result<(Caller, String), Status> {
        let proof = req
            .metadata()
            .get("authorization")
            .and_then(|h| bearer_secret(h.as_bytes()))
            .map(|secret| hash_secret(&secret));
        self.failures.counted_with(req.remote_addr(), proof.as_deref(), self.find_caller(req)).await
    }

    async fn find_caller<T>(&self, req: &Request<T>) -> Result<(Caller, String), Status> {
        let header = req.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("no credential: pass the admin credential (weavectl) or a node credential")
        })?;
        let secret = bearer_secret(header.as_bytes())
            .ok_or_else(|| Status::unauthenticated("the authorization header is not 'Bearer <credential>'"))?;
        let hash = hash_secret(&secret);
        let busy = self.connections.busy(req.local_addr(), req.remote_addr());
        if let Some(caller) = self.store.caller(&hash).await.map_err(Status::from)? {
            if let Some(b) = &busy {
                b.authenticated();
            }
            return Ok((caller, hash));
        }
        if let Some((name, forgotten)) = self.store.removed_node(&hash).await.map_err(Status::from)? {
            return Err(removed(&name, forgotten));
        }
        // Each case says what to do (a rotated admin credential and a node
        // a restored backup does not know were told "wrong coordinator, the
        // node was removed, or …"; found by a review, 2026-12-06).
        if self.store.rotated_admin(&hash).await.map_err(Status::from)? {
            return Err(Status::unauthenticated(
                "this admin credential was replaced (`weavectl admin rotate`, or a coordinator started without \
                 its admin.credential): use the current one, in the <data-dir>/admin.credential of the \
                 coordinator it was rotated through (with several, the others' copies are stale until copied) or \
                 as the rotation printed it",
            ));
        }
        Err(Status::unauthenticated(
            "credential not recognised by this coordinator: another cluster's; a node's it does not know \
             (restored from a backup taken before it joined: run `agent join --token-file <file>` on that \
             host); or an admin credential it never had (use the one in its <data-dir>/admin.credential)",
        ))
    }

    pub async fn admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match self.caller(req).await? {
            Caller::Admin => Ok(()),
            Caller::Node { name, .. } => {
                Err(Status::permission_denied(format!("node {name} may not do this: it needs the admin role")))
            }
        }
    }

    /// The node a node-scoped call acts on: a node caller acts on itself (and
    /// may name only itself); an admin must name the node.
    pub async fn target_node(&self, caller: &Caller, requested: &str) -> Result<u64, Status> {
        let requested = requested.trim();
        match caller {
            Caller::Node { id, name } => {
                // Names are one in any letter case (as the store looks them
                // up): "H1" from h1 was PERMISSION_DENIED (a review, 2026-12-07).
                if requested.is_empty() || requested.eq_ignore_ascii_case(name) || requested == id.to_string() {
                    Ok(*id)
                } else {
                    Err(Status::permission_denied(format!("node {name} may act only on itself, not on '{requested}'")))
                }
            }
            Caller::Admin if requested.is_empty() => {
                Err(Error::InvalidArgument("name the node this is for (admin callers act on any node)".into()).into())
            }
            Caller::Admin => Ok(self.store.node(requested).await?.id),
        }
    }
}

/// The metadata key that tells an agent its membership is over (value
/// `removed`, `forgotten` or `replaced`): only then does it tear its network
/// down and stop (after `forgotten`, free to join again with its token). A
/// bare UNAUTHENTICATED (a coordinator restored from an older backup, a
/// wrong coordinator) is waited out like an outage.
pub const MEMBERSHIP_KEY: &str = "weave-membership";

/// What the agent of node `name` is told once its node is gone: removed by
/// an admin, or forgotten by the coordinator (`--forget-after`; not an
/// admin's decision, so its agent may join again with its token).
pub fn removed(name: &str, forgotten: bool) -> Status {
    match forgotten {
        false => membership_ended(format!("node '{name}' was removed from the cluster"), "removed"),
        true => membership_ended(
            format!(
                "node '{name}' was forgotten: it held no map watch for longer than its token's --forget-after, \
                 and its addresses and DNS records were given back"
            ),
            "forgotten",
        ),
    }
}

/// UNAUTHENTICATED carrying [`MEMBERSHIP_KEY`] = `why`.
pub fn membership_ended(message: String, why: &'static str) -> Status {
    let mut status = Status::unauthenticated(message);
    status.metadata_mut().insert(MEMBERSHIP_KEY, tonic::metadata::MetadataValue::from_static(why));
    status
}

/// The secret an `authorization` header carries, as [`State::authenticate`]
/// checks it: `Bearer <secret>`, or `Bearer <admin credential>` (weavectl may
/// pass the whole `wva1.…` string; only its secret counts).
pub(crate) fn bearer_secret(header: &[u8]) -> Option<String> {
    let secret = std::str::from_utf8(header).ok()?.strip_prefix("Bearer ")?;
    Some(match weave_proto::token::AdminCredential::parse(secret) {
        Ok(admin) => admin.secret,
        Err(_) => secret.to_string(),
    })
}
