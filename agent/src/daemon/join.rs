//! `agent join`: the host's key made (or reused), proven, and the identity
//! the coordinator gives back saved; then the caller becomes `agent run`.
use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use weave_proto::{
    client::{Api, addresses, connect, connect_within},
    token::JoinToken,
    v1::{ChallengeRequest, GetMapRequest, JoinRequest, NetworkMap},
};

use super::config::JoinArgs;
use crate::{
    error::Error,
    host::{
        addresses,
        state::{Identity, NodeKey, StateDir},
    },
};

const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `agent join`: joins with the token unless this host already has an
/// identity. Returns once the identity is saved; the caller then becomes
/// `agent run` ([`super::commands::exec_run`]), so the long-running process never holds the
/// token. No interface is created here. The private key is written before
/// the join is sent (a join the coordinator committed must never leave a
/// host that cannot prove it is that node), and removed again when the
/// coordinator refused the join.
pub async fn join(args: &JoinArgs) -> Result<(), Error> {
    args.run.check().map_err(Error::Usage)?;
    crate::host::firewall::nft_runs().await?;
    let dir = StateDir::new(&args.run.paths.data_dir);
    let lock = dir.lock()?;
    let joined = join_locked(args, &dir).await;
    if joined.is_err() {
        // A join that failed leaves no directory it made for its lock.
        dir.unlock_if_empty(lock);
    }
    joined
}

async fn join_locked(args: &JoinArgs, dir: &StateDir) -> Result<(), Error> {
    if let Some(why) = dir.removed() {
        return Err(Error::RemovedEarlier(why));
    }
    let secret = super::config::read_token(args);
    if secret.is_ok()
        && let Some(why) = dir.set_aside_unreadable_identity()?
    {
        tracing::warn!(error = why, "this host's saved identity is unreadable: joining again with its saved key");
    }
    if !dir.is_joined() {
        return join_with(args, dir, secret?).await;
    }
    // A token of the saved coordinator (its address) with another identity
    // (`coordinator serve --new-identity`): join again with this host's key,
    // which the coordinator knows it by. Before, the token was ignored and the
    // agent kept refusing the new identity for ever (found by a review,
    // 2026-12-05). Not a token of another coordinator (a host moves to
    // another cluster by `agent reset` and a join), and if the join fails (a
    // stale token left in the unit's environment), the saved identity stays.
    if !args.endpoint.is_empty() {
        repin(args, dir).await?;
    }
    let token = secret.as_ref().ok().and_then(|s| JoinToken::parse(s).ok());
    let saved = dir.load().ok().map(|(_, identity, _)| identity);
    let forgotten = match (&token, &saved, &secret) {
        (Some(t), Some(saved), Ok(_)) if t.pin.to_string() == saved.pin => credential_forgotten(saved).await,
        _ => false,
    };
    // `--name` is the join's: said, not dropped without a word, as
    // `--endpoint` is applied (found by a review, 2026-12-06).
    if let (Some(asked), Some(saved)) = (&args.name, &saved)
        && !forgotten
        && !asked.eq_ignore_ascii_case(&saved.name)
    {
        tracing::warn!(
            name = saved.name,
            asked,
            "already joined under another name: --name is not applied (to rename the host: `weavectl node rm \
             <name>`, then `agent reset` and `agent join --name` with a new token)"
        );
    }
    match (token, saved, secret) {
        // A token of this cluster, and a coordinator that does not know this
        // node's credential: a backup restored from before it joined (a node
        // removed is told "removed", and stays out). Before, the token was
        // ignored and the agent waited for ever, its address given to the
        // next host that joined (found by a review, 2026-12-05); joined
        // again as a new node, with this host's key.
        (Some(_), Some(saved), Ok(secret)) if forgotten => {
            tracing::warn!(
                node = saved.name,
                before = saved.node_id,
                "the coordinator does not know this node's credential (a backup restored?): joining again with the token"
            );
            if let Err(e) = join_with(args, dir, secret).await {
                tracing::warn!(error = %e, "cannot join again with the token; restarting from the saved identity");
            }
        }
        (Some(t), Some(saved), Ok(secret)) if t.coordinator == saved.coordinator && t.pin.to_string() != saved.pin => {
            tracing::warn!(
                saved = saved.pin, token = %t.pin,
                "the token pins another identity of the saved coordinator: joining again with this host's key"
            );
            match join_with(args, dir, secret).await {
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot join again with the token; restarting from the saved identity"
                ),
                Ok(()) if dir.load().is_ok_and(|(_, now, _)| now.node_id != saved.node_id) => tracing::warn!(
                    before = saved.node_id,
                    "the coordinator did not know this host's key: joined as a new node"
                ),
                Ok(()) => {}
            }
        }
        // A token of the same coordinator identity (the pin) listing addresses
        // the saved list lacks (coordinators added on a shared PostgreSQL, or
        // moved): each is added, after the saved ones, once this coordinator
        // answers there (probed together, 2 s each: an agent start waits for
        // it), so the agent can fail over to them. Before, an agent joined
        // while there was one coordinator kept its address for good; a stale
        // or mistyped token must neither cut the agent off nor slow every
        // start (found by reviews, 2026-12-05).
        (Some(t), Some(mut saved), _)
            if t.pin.to_string() == saved.pin
                && addresses(&t.coordinator).iter().any(|a| !addresses(&saved.coordinator).contains(a)) =>
        {
            let known = addresses(&saved.coordinator);
            let new: Vec<String> =
                addresses(&t.coordinator).into_iter().filter(|a| !known.contains(a)).map(str::to_string).collect();
            let mut probes = tokio::task::JoinSet::new();
            for address in new.clone() {
                let pin = t.pin;
                probes.spawn(async move {
                    let answered = connect_within(&address, pin, Duration::from_secs(2)).await.is_ok();
                    (address, answered)
                });
            }
            let answered: Vec<String> =
                probes.join_all().await.into_iter().filter(|(_, ok)| *ok).map(|(a, _)| a).collect();
            // In the token's order, after the saved ones.
            let added: Vec<&String> = new.iter().filter(|a| answered.contains(a)).collect();
            if !added.is_empty() {
                let mut list: Vec<&str> = known.clone();
                list.extend(added.iter().map(|a| a.as_str()));
                saved.coordinator = list.join(",");
                tracing::info!(
                    now = saved.coordinator,
                    "already joined; the token lists other coordinator addresses: saved those that answered, \
                     restarting from the saved identity"
                );
                dir.save_identity(&saved)?;
            } else {
                tracing::warn!(
                    token = t.coordinator,
                    "already joined; the token lists other coordinator addresses, but the coordinator does not \
                     answer there: keeping the saved ones"
                );
            }
        }
        _ => tracing::info!(data_dir = %dir.path().display(), "already joined; restarting from the saved identity"),
    }
    Ok(())
}

/// Whether the coordinator answers, and answers that it does not know the
/// saved credential (`UNAUTHENTICATED` "not recognised"; not a coordinator
/// that cannot be reached, nor a credential it knows as revoked).
async fn credential_forgotten(saved: &Identity) -> bool {
    let ask = async {
        let channel = connect_within(&saved.coordinator, saved.pin().ok()?, Duration::from_secs(5)).await.ok()?;
        let mut api = Api::new(channel, &saved.credential).ok()?;
        Some(api.status.get_status(weave_proto::v1::GetStatusRequest {}).await)
    };
    match tokio::time::timeout(JOIN_TIMEOUT, ask).await {
        Ok(Some(Err(status))) => {
            status.code() == tonic::Code::Unauthenticated && status.message().contains("not recognised")
        }
        _ => false,
    }
}

/// `--endpoint` on a host that has joined: the node's endpoints become
/// those (pinned), announced to the coordinator now, unless they are what
/// the saved map has for it already. Before, they were ignored without a
/// word, and a host whose pinned address had changed stayed unreachable
/// at the old one (found by a review, 2026-12-05); changing them took an
/// `agent reset` and a new join. When the coordinator cannot be reached
/// the saved ones stay, with a warning (a unit's start must not hang on
/// it); the next start tries again.
async fn repin(args: &JoinArgs, dir: &StateDir) -> Result<(), Error> {
    let Ok((_, mut saved, map)) = dir.load() else { return Ok(()) };
    let given = args.endpoints();
    let wanted: Vec<String> = given.iter().map(ToString::to_string).collect();
    let current = map.nodes.iter().find(|n| n.id == saved.node_id).map(|n| n.endpoints.clone());
    if saved.endpoints_pinned && current.as_ref() == Some(&wanted) {
        return Ok(());
    }
    match super::endpoints::announce(&saved, saved.pin()?, &wanted).await {
        Ok(_) => {
            tracing::info!(before = ?current.unwrap_or_default(), now = ?wanted, "already joined; this node's endpoints are now the ones given (pinned)");
            saved.endpoint = given[0];
            saved.endpoints_pinned = true;
            // The saved map follows now (the running agent writes it within
            // 2 s of a change): a start within those 2 s announced them again.
            let mut map = map;
            if let Some(n) = map.nodes.iter_mut().find(|n| n.id == saved.node_id) {
                n.endpoints = wanted;
            }
            dir.save_map(&map)?;
            dir.save_identity(&saved)
        }
        Err(e) => {
            tracing::warn!(error = %e, endpoints = ?wanted, "already joined; cannot tell the coordinator the endpoints given: keeping the saved ones");
            Ok(())
        }
    }
}

/// Joins with token `secret` (this host's saved key, or a new one).
async fn join_with(args: &JoinArgs, dir: &StateDir, secret: String) -> Result<(), Error> {
    let token = JoinToken::parse(&secret).map_err(|e| Error::Token(e.to_string()))?;
    let endpoints = match &args.endpoints()[..] {
        [] => {
            let ips = addresses::advertised()?;
            if ips.is_empty() {
                return Err(Error::State(
                    "no IPv4 or global IPv6 address to advertise: pass --endpoint ip:port".into(),
                ));
            }
            ips.into_iter().map(|ip| SocketAddr::new(ip, args.run.listen_port)).collect()
        }
        pinned => pinned.to_vec(),
    };
    let saved_name = || dir.load_key().ok().flatten().and_then(|key| dir.saved_name_of(&key));
    let name = match (&args.name, saved_name()) {
        (Some(n), _) => n.clone(),
        (None, Some(saved)) => saved,
        (None, None) => hostname()?,
    };
    let channel = connect(&token.coordinator, token.pin).await.map_err(|e| Error::Connect(e.to_string()))?;
    let mut api = Api::new(channel.clone(), "-").map_err(|e| Error::Connect(e.to_string()))?;
    let (key, created) = match dir.load_key()? {
        Some(key) => {
            tracing::info!("reusing this host's saved key (an earlier join was interrupted, or the node was removed)");
            (key, false)
        }
        None => {
            let key = NodeKey::generate();
            dir.save_key(&key)?;
            (key, true)
        }
    };
    let (challenge, proof) = prove(&mut api, &key, &name, &token.coordinator).await?;
    let request = JoinRequest {
        token: secret.trim().to_string(),
        name: name.clone(),
        public_key: key.public().as_bytes().to_vec(),
        endpoints: endpoints.iter().map(ToString::to_string).collect(),
        challenge,
        proof,
        // The answer carries only the cluster settings; see `whole_map`.
        map_by_watch: true,
    };
    let response = match tokio::time::timeout(JOIN_TIMEOUT, api.join.join(request)).await {
        Err(_) => {
            return Err(Error::Connect(format!("the coordinator at {} did not answer the join", token.coordinator)));
        }
        Ok(Err(status)) => {
            // An answer that says no: nothing was committed, leave nothing behind.
            if created && refused(&status) {
                dir.forget_key();
            }
            return Err(match denied(&status) {
                true => Error::JoinDenied(status.message().to_string()),
                false => Error::JoinRefused(status.message().to_string()),
            });
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    let node = response.node.ok_or_else(|| Error::JoinRefused("the answer names no node".into()))?;
    let address: Ipv4Addr =
        node.address.parse().map_err(|_| Error::JoinRefused(format!("node address '{}' is not IPv4", node.address)))?;
    let identity = Identity {
        node_id: node.id,
        name: node.name,
        address,
        coordinator: token.coordinator.clone(),
        pin: token.pin.to_string(),
        credential: response.credential,
        endpoint: endpoints[0],
        listen_port: args.run.listen_port,
        endpoints_pinned: !args.endpoint.is_empty(),
    };
    let map = whole_map(channel, &identity.credential, response.map.unwrap_or_default()).await;
    dir.save_join(&key, &identity, &map)?;
    tracing::info!(node = identity.node_id, name = %identity.name, address = %address, "joined");
    Ok(())
}

/// The whole map after a join whose answer carried only `settings`: by
/// GetMap, a unary call whose buffers go with it (a watch stream keeps a
/// buffer the size of the largest message it sent for as long as it stays
/// open, so snapshots over watches would cost the coordinator a map per
/// agent). If that fails, `settings` (revision 0): `agent run`'s first watch
/// then starts with a snapshot.
async fn whole_map(channel: tonic::transport::Channel, credential: &str, settings: NetworkMap) -> NetworkMap {
    let Ok(mut api) = Api::new(channel, credential) else { return settings };
    match tokio::time::timeout(JOIN_TIMEOUT, api.map.get_map(GetMapRequest {})).await {
        Ok(Ok(map)) => map.into_inner(),
        Ok(Err(status)) => {
            tracing::warn!(message = status.message(), "cannot read the map now; the first watch will bring it");
            settings
        }
        Err(_) => {
            tracing::warn!("the coordinator did not send the map in time; the first watch will bring it");
            settings
        }
    }
}

/// Whether a failed join call is a refusal (the coordinator answered and
/// committed nothing) rather than a lost answer.
/// A refusal that the same join, tried again, meets again (a supervisor
/// restarting it looped until its start limit; found by a review,
/// 2026-12-06): not a paced or exhausted one, nor a coordinator's outage.
fn denied(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied | Code::AlreadyExists | Code::NotFound
    )
}

fn refused(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::NotFound
    )
}

/// Answers a join challenge: proof that this host holds `key` (see
/// `weave_proto::proof`). A coordinator without challenges gets no proof:
/// a first join needs none.
async fn prove(api: &mut Api, key: &NodeKey, name: &str, coordinator: &str) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let challenge = match tokio::time::timeout(JOIN_TIMEOUT, api.join.challenge(ChallengeRequest {})).await {
        Err(_) => return Err(Error::Connect(format!("the coordinator at {coordinator} did not answer"))),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => return Ok((Vec::new(), Vec::new())),
        Ok(Err(s)) => return Err(Error::JoinRefused(s.message().to_string())),
        Ok(Ok(c)) => c.into_inner(),
    };
    let proof = proof(&challenge, key, name)?;
    Ok((challenge.nonce, proof))
}

/// The proof for `challenge` that this host holds `key`, made for `name`
/// (a join's, or `agent rekey`'s `rotate <name>`).
pub(super) fn proof(challenge: &weave_proto::v1::JoinChallenge, key: &NodeKey, name: &str) -> Result<Vec<u8>, Error> {
    let theirs: [u8; 32] = challenge
        .coordinator_key
        .as_slice()
        .try_into()
        .map_err(|_| Error::JoinRefused("the coordinator's challenge key is not 32 bytes".into()))?;
    let shared = key.secret().diffie_hellman(&boringtun::x25519::PublicKey::from(theirs));
    Ok(weave_proto::proof::compute(shared.as_bytes(), &challenge.nonce, name, key.public().as_bytes()).to_vec())
}

fn hostname() -> Result<String, Error> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .map_err(|e| Error::Io("/proc/sys/kernel/hostname".into(), e))
}
