//! Which scopes each served namespace's lookups try first
//! (`plan::dns::scoped`), and whose addresses a name answers when it has
//! some there (`plan::dns::on_networks`): the weave subnets of a Docker
//! container's networks, whose aliases are theirs alone, as Docker's are;
//! for any other container, the subnets it holds addresses in.
use std::{collections::HashMap, sync::Arc};

use weave_proto::v1::NetworkMap;

use super::{DnsServer, limits::Scopes};
use crate::{
    host::netns::inode_in_key,
    plan::dns::{NETWORK_ONLY, scope_of},
};

impl DnsServer {
    /// The scopes of namespace `key`, made empty if it has none yet.
    pub(super) fn scopes_of(&self, key: &str) -> Scopes {
        let mut all = self.inner.scopes.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(key.to_string()).or_insert_with(|| Arc::new(Default::default())).clone()
    }

    /// Namespace `key`'s lookups try `scopes` first (`plan::dns::scope_of`
    /// of each subnet it is on through a Docker network), from its next query.
    pub fn set_scopes(&self, key: &str, scopes: Vec<String>) {
        *self.scopes_of(key).write().unwrap_or_else(|e| e.into_inner()) = scopes;
    }

    /// Each served namespace's scopes from `map`: the subnets its container
    /// holds addresses in on this node (`own_node`), found under every name
    /// that leads to it (its DNS key, `--name`, CNI id), as network-only
    /// scopes (`plan::dns::NETWORK_ONLY`: no Docker aliases). A container on two
    /// subnets has its name on both, and one asked from the other tier got
    /// the address it cannot reach first most of the time (found by a
    /// review, 2026-12-06). A key whose container holds nothing under those
    /// names keeps what it has: a Docker sandbox's scopes are set by the
    /// plugin (its addresses are under endpoint ids).
    pub fn scopes_from_map(&self, map: &NetworkMap, own_node: u64) {
        let Some(registry) = &self.inner.registry else { return };
        let cidr: HashMap<u64, &str> = map.subnets.iter().map(|s| (s.id, s.cidr.as_str())).collect();
        let mut held: HashMap<&str, Vec<String>> = HashMap::new();
        for a in map.allocations.iter().filter(|a| a.node_id == own_node) {
            if let Some(c) = cidr.get(&a.subnet_id) {
                held.entry(a.container.as_str()).or_default().push(format!("{NETWORK_ONLY}{}", scope_of(c)));
            }
        }
        let served: Vec<String> = self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        for key in served {
            let mut names = registry.aliases_of(&key);
            names.extend(inode_in_key(&key).and_then(|i| registry.name_of(i)));
            names.push(key.clone());
            let mut scopes: Vec<String> =
                names.iter().filter_map(|n| held.get(n.as_str())).flatten().cloned().collect();
            scopes.sort();
            scopes.dedup();
            // The Docker plugin's (whole scopes) stay as it set them.
            let docker = self
                .scopes_of(&key)
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|s| !s.starts_with(NETWORK_ONLY));
            if !scopes.is_empty() && !docker {
                self.set_scopes(&key, scopes);
            }
        }
    }
}
