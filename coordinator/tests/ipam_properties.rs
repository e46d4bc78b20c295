//! Random sequences of join, allocate, release and remove-node against the
//! real store never hand out a duplicate address, never lose one, and always
//! hand out the lowest free address that no container released lately (its
//! own container's first: `address_holds`).
mod common;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use proptest::prelude::*;
use weave_coordinator::{
    error::Error,
    ipam,
    store::{AllocationFilter, ClusterSettings, JoinRequest, NewToken, Store},
};

const SUBNETS: [&str; 3] = ["10.2.0.0/29", "10.2.1.0/28", "fd00::/125"];

#[derive(Debug, Clone)]
enum Op {
    Join(u8),
    Allocate { node: u8, container: u8, subnet: usize },
    Release { node: u8, container: u8 },
    RemoveNode(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..4u8).prop_map(Op::Join),
        6 => (0..4u8, 0..8u8, 0..SUBNETS.len()).prop_map(|(node, container, subnet)| Op::Allocate { node, container, subnet }),
        2 => (0..4u8, 0..8u8).prop_map(|(node, container)| Op::Release { node, container }),
        1 => (0..4u8).prop_map(Op::RemoveNode),
    ]
}

type Key = (u8, String, usize);

/// What automatic allocation should give `container` on `node` in `net`:
/// the address it released itself if free; else the lowest free that no
/// container released lately; else the lowest free that only `node`'s did.
fn expected(
    net: &IpNet,
    used: &[IpAddr],
    holds: &BTreeMap<IpAddr, (u8, String)>,
    node: u8,
    container: &str,
) -> Option<IpAddr> {
    let held = |ip: &IpAddr| net.contains(ip);
    let own = holds.iter().filter(|(ip, (n, c))| held(ip) && *n == node && c == container && !used.contains(ip));
    if let Some((ip, _)) = own.min_by_key(|(ip, _)| ipam::key(**ip)) {
        return Some(*ip);
    }
    let all = used.iter().copied().chain(holds.keys().copied());
    let others = used.iter().copied().chain(holds.iter().filter(|(_, (n, _))| *n != node).map(|(ip, _)| *ip));
    ipam::lowest_free(net, all).or_else(|| ipam::lowest_free(net, others))
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&common::store_at(&dir.path().join("db"))).await.unwrap();
    let range: IpNet = "10.32.0.0/12".parse().unwrap();
    let (default_subnet, node_range) = ipam::default_layout(&range);
    store
        .init_cluster(&ClusterSettings {
            range,
            node_range,
            default_subnet,
            dns_domain: "weave.local.".into(),
            segment_mtu: None,
        })
        .await
        .unwrap();
    for s in SUBNETS {
        store.add_subnet(&s.parse().unwrap(), None, &[], false).await.unwrap();
    }
    let secret_hash = weave_proto::token::hash_secret("s");
    store
        .create_token(NewToken {
            id: "t".into(),
            secret_hash: secret_hash.clone(),
            ttl_seconds: None,
            uses: None,
            description: String::new(),
            forget_after: 0,
        })
        .await
        .unwrap();

    let mut nodes: HashMap<u8, u64> = HashMap::new();
    let mut model: BTreeMap<Key, IpAddr> = BTreeMap::new();
    // Released addresses, held for their container (the default hold, a
    // minute, outlasts the test): address -> (node, container).
    let mut holds: BTreeMap<IpAddr, (u8, String)> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Join(n) => {
                let joined = store
                    .join(JoinRequest {
                        token_id: "t".into(),
                        token_secret_hash: secret_hash.clone(),
                        name: format!("n{n}"),
                        public_key: [n + 1; 32],
                        endpoints: vec![],
                        credential_hash: format!("cred-{n}-{}", model.len()),
                        // A re-join here stands for an agent that proved its key.
                        proven: true,
                        observed: String::new(),
                    })
                    .await
                    .unwrap();
                if let Some(id) = nodes.get(&n) {
                    assert_eq!(*id, joined.node.id, "re-join keeps the node");
                }
                nodes.insert(n, joined.node.id);
            }
            Op::Allocate { node, container, subnet } => {
                let Some(&id) = nodes.get(&node) else { continue };
                let net: IpNet = SUBNETS[subnet].parse().unwrap();
                let key = (node, format!("c{container}"), subnet);
                let used: Vec<IpAddr> = model.iter().filter(|((_, _, s), _)| *s == subnet).map(|(_, a)| *a).collect();
                let result = store
                    .allocate(&weave_coordinator::store::Caller::Admin, id, &key.1, SUBNETS[subnet], None, None)
                    .await;
                match (model.get(&key), result) {
                    (Some(held), Ok(a)) => assert_eq!(a.address, format!("{held}/{}", net.prefix_len()), "idempotent"),
                    (None, Ok(a)) => {
                        let ip: IpAddr = a.address.split('/').next().unwrap().parse().unwrap();
                        assert_eq!(Some(ip), expected(&net, &used, &holds, node, &key.1), "lowest free address");
                        assert!(!model.values().any(|v| *v == ip), "duplicate {ip}");
                        model.insert(key, ip);
                        holds.remove(&ip);
                    }
                    (None, Err(Error::Exhausted(_))) => assert_eq!(expected(&net, &used, &holds, node, &key.1), None),
                    (_, other) => panic!("unexpected {other:?}"),
                }
            }
            Op::Release { node, container } => {
                let Some(&id) = nodes.get(&node) else { continue };
                let name = format!("c{container}");
                let held: Vec<Key> = model.keys().filter(|(n, c, _)| *n == node && *c == name).cloned().collect();
                match store.release(id, &name, None).await {
                    Ok((released, _)) => assert_eq!(released.len(), held.len()),
                    Err(Error::NotFound(_)) => assert!(held.is_empty()),
                    Err(e) => panic!("unexpected {e}"),
                }
                for k in held {
                    let ip = model.remove(&k).unwrap();
                    holds.insert(ip, (node, k.1));
                }
            }
            Op::RemoveNode(n) => {
                let held = model.keys().filter(|(m, _, _)| *m == n).count() as u32;
                match (nodes.remove(&n), store.remove_node(&format!("n{n}")).await) {
                    (Some(_), Ok((_, released, _))) => assert_eq!(released, held),
                    (None, Err(Error::NotFound(_))) => {}
                    (_, other) => panic!("unexpected {other:?}"),
                }
                model.retain(|(m, _, _), _| *m != n);
                // A removed node's holds go with it.
                holds.retain(|_, (m, _)| *m != n);
            }
        }
        // The store holds exactly the model: nothing lost, nothing extra, nothing doubled.
        let stored = store.list_allocations(&AllocationFilter::default()).await.unwrap();
        let mut actual: BTreeMap<Key, IpAddr> = BTreeMap::new();
        for a in stored {
            let n = *nodes.iter().find(|(_, id)| **id == a.node_id).expect("allocation of a live node").0;
            let s = SUBNETS.iter().position(|s| *s == a.subnet).expect("known subnet");
            let ip = a.address.split('/').next().unwrap().parse().unwrap();
            assert!(actual.insert((n, a.container, s), ip).is_none());
        }
        assert_eq!(actual, model);
    }
    // The in-memory map (what joins and watchers get) is what the database holds.
    let reopened = Store::connect(&common::store_at(&dir.path().join("db"))).await.unwrap();
    let (memory, mut disk) = (store.snapshot().await.unwrap(), reopened.snapshot().await.unwrap());
    disk.history = memory.history; // each store begins its own
    assert_eq!(memory, disk);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn allocations_never_duplicate_or_vanish(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
