//! `agent rekey`: the node's WireGuard key replaced by a new one made here,
//! with the agent stopped (it holds the key in memory) and started after.
//! The coordinator takes the new key on proofs that this host holds the
//! current one and the new one (`RotateKey`); the node keeps its id,
//! address, name, credential and workloads, and its peers take the new key
//! with the map change and refuse the old one from then on. Before, a key
//! that had to change (copied off the host, a policy's rotation) meant
//! removing the node and joining as a new one, its addresses released
//! (found by a lifecycle review, 2026-12-07).
//!
//! Crash-safe in order: the new key is saved first (`private.key.new`),
//! then sent; once the coordinator has it, the saved map's entry and then
//! `private.key` follow. A rekey cut short anywhere finishes when run again.
use weave_proto::{
    client::{Api, connect},
    local_api,
    v1::{ChallengeRequest, ListNodesRequest, RotateKeyRequest},
};

use super::{config::ResetArgs, join::proof};
use crate::{error::Error, host::state::StateDir};

pub async fn rekey(args: ResetArgs) -> Result<String, Error> {
    let socket = &args.paths.socket;
    if local_api::probe(socket).is_ok_and(|p| p == local_api::SocketPath::Served) {
        return Err(Error::Usage(format!(
            "{}: an agent is serving on it: stop it first (it holds the key in memory), rekey, then start it",
            socket.display()
        )));
    }
    let dir = StateDir::new(&args.paths.data_dir);
    let _lock = dir.lock()?;
    // (Not `load`: after a rekey cut short past the map's update, the
    // saved map names the new key and `load` refuses the old one.)
    let current = dir.load_key()?.ok_or_else(|| Error::State(format!("no {} in the data dir", "private.key")))?;
    let (identity, mut map) = dir.load_saved(&current)?;
    let channel = connect(&identity.coordinator, identity.pin()?).await.map_err(|e| Error::Connect(e.to_string()))?;
    let mut api = Api::new(channel, &identity.credential).map_err(|e| Error::Connect(e.to_string()))?;
    let refused = |s: tonic::Status| Error::JoinRefused(s.message().to_string());
    let nodes = api.nodes.list_nodes(ListNodesRequest {}).await.map_err(refused)?.into_inner().nodes;
    let known = nodes.iter().find(|n| n.id == identity.node_id).map(|n| n.public_key.clone());
    let left = dir.pending_key();
    let pending = match (&known, left) {
        // A rekey cut short after the coordinator took its key: finished with it.
        (Some(k), Some(left)) if *k == left.public().as_bytes() => left,
        // Else a new key (one left by a rekey the coordinator never heard of is no one's).
        _ => dir.new_pending_key()?,
    };
    let (new, old) = (pending.public(), current.public());
    match known {
        Some(k) if k == new.as_bytes() => {}
        Some(k) if k == old.as_bytes() => {
            let challenge = api.join.challenge(ChallengeRequest {}).await.map_err(refused)?.into_inner();
            let purpose = format!("rotate {}", identity.name);
            let request = RotateKeyRequest {
                proof: proof(&challenge, &current, &purpose)?,
                public_key: new.as_bytes().to_vec(),
                new_proof: proof(&challenge, &pending, &purpose)?,
                challenge: challenge.nonce,
            };
            if let Err(status) = api.nodes.rotate_key(request).await {
                // Refused (an answer): the coordinator keeps the current key
                // and the new one is no one's. Cut off: it may have taken it,
                // and a rekey run again finds out (the agent does not start
                // meanwhile).
                if !weave_proto::client::cut_off(&status) {
                    dir.drop_pending_key();
                }
                return Err(refused(status));
            }
        }
        Some(_) => {
            dir.drop_pending_key();
            return Err(Error::State(
                "the coordinator knows this node by a key that is neither this host's nor the one a rekey \
                 made here: restore the node's own private.key"
                    .into(),
            ));
        }
        None => {
            dir.drop_pending_key();
            return Err(Error::State(format!("the coordinator has no node {}", identity.node_id)));
        }
    }
    if let Some(node) = map.nodes.iter_mut().find(|n| n.id == identity.node_id) {
        node.public_key = new.as_bytes().to_vec();
        dir.save_map(&map)?;
    }
    dir.commit_pending_key()?;
    use base64::Engine;
    Ok(format!(
        "node {} now has the WireGuard key {} (the old one is refused from now on): start the agent",
        identity.name,
        base64::engine::general_purpose::STANDARD.encode(new.as_bytes())
    ))
}
