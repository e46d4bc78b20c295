//! A node replaces its WireGuard key (`agent rekey`): with proofs that it
//! holds the current key and the new one; the same node, address and
//! credential; peers see the new key in the map; the old key proves nothing
//! any more; nobody else may do it (a gap a lifecycle review found,
//! 2026-12-07: rekeying meant removing the node and joining as a new one).
mod common;

use common::{TestCoordinator, assert_status, node_key, proven_join_request};
use tonic::Code;
use weave_proto::{
    client::Api,
    v1::{ChallengeRequest, GetMapRequest, ListNodesRequest, RotateKeyRequest},
};

/// A rotation request from the holder of `current` (seed) to `new` (seed),
/// each proving with the key from its `*_prover` seed, for node `name`.
async fn rotation(api: &mut Api, name: &str, (current, new): (u8, u8), provers: (u8, u8)) -> RotateKeyRequest {
    let challenge = api.join.challenge(ChallengeRequest {}).await.unwrap().into_inner();
    let theirs = x25519_dalek::PublicKey::from(<[u8; 32]>::try_from(challenge.coordinator_key.as_slice()).unwrap());
    let purpose = format!("rotate {name}");
    let prove = |seed: u8, prover: u8| {
        let (holder, _) = node_key(prover);
        let shared = holder.diffie_hellman(&theirs);
        weave_proto::proof::compute(shared.as_bytes(), &challenge.nonce, &purpose, &node_key(seed).1).to_vec()
    };
    RotateKeyRequest {
        challenge: challenge.nonce.clone(),
        proof: prove(current, provers.0),
        public_key: node_key(new).1.to_vec(),
        new_proof: prove(new, provers.1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rotates_its_own_key_with_proofs_of_both() {
    let c = TestCoordinator::start().await;
    let mut anon = c.admin().await;
    let token = c.token();
    let first = proven_join_request(&mut anon, &token, "h1", 31, 31).await;
    let joined = anon.join.join(first).await.unwrap().into_inner();
    let second = proven_join_request(&mut anon, &token, "h2", 32, 32).await;
    anon.join.join(second).await.unwrap();
    let before = joined.node.clone().unwrap();
    let mut node = c.api_with(&joined.credential).await;
    let mut admin = c.admin().await;

    // Not the admin, whatever the proofs: the private key never leaves its host.
    let r = rotation(&mut admin, "h1", (31, 33), (31, 33)).await;
    assert_status(admin.nodes.rotate_key(r).await, Code::PermissionDenied, "only the node itself");
    // Without the current key's proof (a stolen credential alone), or the new one's.
    let r = rotation(&mut node, "h1", (31, 33), (40, 33)).await;
    assert_status(node.nodes.rotate_key(r).await, Code::Unauthenticated, "the proof by the current key");
    let r = rotation(&mut node, "h1", (31, 33), (31, 40)).await;
    assert_status(node.nodes.rotate_key(r).await, Code::Unauthenticated, "the proof by the new key");
    // A proof made for another name (a join's) is no rotation's.
    let mut r = rotation(&mut node, "h1", (31, 33), (31, 33)).await;
    r.proof = proven_join_request(&mut node, &token, "h1", 31, 31).await.proof;
    assert_status(node.nodes.rotate_key(r).await, Code::Unauthenticated, "the proof by the current key");
    // Another node's key: refused, whoever holds it.
    let r = rotation(&mut node, "h1", (31, 32), (31, 32)).await;
    assert_status(node.nodes.rotate_key(r).await, Code::AlreadyExists, "already belongs to node 'h2'");
    let mut r = rotation(&mut node, "h1", (31, 33), (31, 33)).await;
    r.public_key = vec![0; 32];
    assert_status(node.nodes.rotate_key(r).await, Code::InvalidArgument, "low-order");

    let r = rotation(&mut node, "h1", (31, 33), (31, 33)).await;
    let rotated = node.nodes.rotate_key(r).await.unwrap().into_inner();
    assert_eq!(rotated.public_key, node_key(33).1.to_vec());
    assert_eq!((rotated.id, &rotated.name, &rotated.address), (before.id, &before.name, &before.address));
    // The map says so (peers take it from there), and the credential still works.
    let map = node.map.get_map(GetMapRequest {}).await.unwrap().into_inner();
    let listed = map.nodes.iter().find(|n| n.id == before.id).unwrap();
    assert_eq!(listed.public_key, node_key(33).1.to_vec());
    let nodes = admin.nodes.list_nodes(ListNodesRequest {}).await.unwrap().into_inner().nodes;
    assert_eq!(nodes.len(), 2);
    // The old key proves nothing any more: a join with it under the name is refused.
    let old = proven_join_request(&mut anon, &token, "h1", 31, 31).await;
    assert_status(anon.join.join(old).await, Code::AlreadyExists, "taken");
    // Nor does it rotate again (it is no longer the current one); the new one does.
    let r = rotation(&mut node, "h1", (31, 35), (31, 35)).await;
    assert_status(node.nodes.rotate_key(r).await, Code::Unauthenticated, "the proof by the current key");
    let r = rotation(&mut node, "h1", (33, 35), (33, 35)).await;
    node.nodes.rotate_key(r).await.unwrap();
}
