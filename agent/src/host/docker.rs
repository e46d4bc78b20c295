//! The Docker plugin's memory, one file of the data dir ([`FILE`], replaced
//! whole on every change): which Docker network is which weave subnet, and
//! each endpoint's address, MAC and sandbox. Docker does not tell a plugin
//! again after it restarts, so a restarted agent must still know them.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};

use crate::plan::docker::Network;

pub const FILE: &str = "docker.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    /// `10.2.3.7/24`
    pub address: String,
    pub mac: String,
    /// The DNS key of the sandbox (network namespace) it joined, once it has.
    #[serde(default)]
    pub sandbox: String,
    /// The sandbox path Docker gave at Join.
    #[serde(default)]
    pub sandbox_path: String,
    /// Its container's aliases on the network (registered as names beside
    /// the container's own), once read after the Join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The container's names in the cluster's domain (its host name, `docker
    /// run -h web.weave.local`, and aliases such as `cache.weave.local`),
    /// registered as its name is; read with `aliases`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_domain: Vec<String>,
    /// Whether `in_domain` was read (an endpoint an agent from before saved
    /// has `aliases_read` without it: read again once by the sweep).
    #[serde(default)]
    pub in_domain_read: bool,
    /// The container's name registered for it (`docker rename` replaces it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Whether `aliases` was read from Docker (the sweep reads it again
    /// until it has been: Docker busy at the Join, an agent from before).
    #[serde(default)]
    pub aliases_read: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    networks: BTreeMap<String, Network>,
    endpoints: BTreeMap<String, Endpoint>,
    /// Subnets this host added for a Docker pool whose network Docker has
    /// not created yet: taken back if Docker releases the pool first.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    added_pools: BTreeSet<String>,
}

pub struct DockerState {
    file: PathBuf,
    saved: Mutex<Saved>,
}

impl DockerState {
    pub fn load(dir: &Path) -> Self {
        let file = dir.join(FILE);
        let saved = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Self { file, saved: Mutex::new(saved) }
    }

    fn saved(&self) -> MutexGuard<'_, Saved> {
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn network(&self, id: &str) -> Option<Network> {
        self.saved().networks.get(id).cloned()
    }

    /// Every network, by id.
    pub fn networks(&self) -> Vec<(String, Network)> {
        self.saved().networks.iter().map(|(id, n)| (id.clone(), n.clone())).collect()
    }

    /// Docker daemon `daemon` has shown network `id`.
    pub fn saw_network(&self, id: &str, daemon: &str) {
        let mut s = self.saved();
        if let Some(n) = s.networks.get_mut(id).filter(|n| n.seen_by != daemon) {
            n.seen_by = daemon.to_string();
            self.write(&s);
        }
    }

    pub fn add_network(&self, id: &str, network: Network) {
        let mut s = self.saved();
        s.networks.insert(id.to_string(), network);
        self.write(&s);
    }

    pub fn remove_network(&self, id: &str) {
        let mut s = self.saved();
        if s.networks.remove(id).is_some() {
            self.write(&s);
        }
    }

    /// Subnet `cidr` was added here for a pool (Docker's network not made yet).
    pub fn add_pool(&self, cidr: &str) {
        let mut s = self.saved();
        if s.added_pools.insert(cidr.to_string()) {
            self.write(&s);
        }
    }

    /// Whether subnet `cidr` was added here for a pool no network has used
    /// yet; forgotten either way.
    pub fn take_pool(&self, cidr: &str) -> bool {
        let mut s = self.saved();
        let added = s.added_pools.remove(cidr);
        if added {
            self.write(&s);
        }
        added
    }

    /// A Docker network on subnet `cidr`, if any.
    pub fn network_on(&self, cidr: &str) -> Option<String> {
        self.saved().networks.iter().find(|(_, n)| n.cidr == cidr).map(|(id, _)| id.clone())
    }

    /// How many Docker networks use subnet `cidr`.
    pub fn networks_on(&self, cidr: &str) -> usize {
        self.saved().networks.values().filter(|n| n.cidr == cidr).count()
    }

    pub fn endpoint(&self, id: &str) -> Option<Endpoint> {
        self.saved().endpoints.get(id).cloned()
    }

    /// Every endpoint, by id.
    pub fn endpoints(&self) -> Vec<(String, Endpoint)> {
        self.saved().endpoints.iter().map(|(id, e)| (id.clone(), e.clone())).collect()
    }

    pub fn set_endpoint(&self, id: &str, endpoint: Endpoint) {
        let mut s = self.saved();
        s.endpoints.insert(id.to_string(), endpoint);
        self.write(&s);
    }

    pub fn remove_endpoint(&self, id: &str) -> Option<Endpoint> {
        let mut s = self.saved();
        let removed = s.endpoints.remove(id);
        if removed.is_some() {
            self.write(&s);
        }
        removed
    }

    /// Whether another endpoint than `except`, on a network with multicast,
    /// is joined to the sandbox at `path` (its interface has the route).
    pub fn multicast_in(&self, path: &str, except: &str) -> bool {
        let s = self.saved();
        s.endpoints.iter().any(|(id, e)| {
            id != except && e.sandbox_path == path && s.networks.get(&e.network).is_some_and(|n| n.multicast)
        })
    }

    /// The subnets of the networks whose endpoints joined `sandbox` (its
    /// DNS key), each once, in order.
    pub fn subnets_of_sandbox(&self, sandbox: &str) -> Vec<String> {
        let s = self.saved();
        let cidrs = s.endpoints.values().filter(|e| e.sandbox == sandbox).filter_map(|e| s.networks.get(&e.network));
        cidrs.map(|n| n.cidr.clone()).collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// Whether another endpoint than `except` is joined to `sandbox`.
    pub fn sandbox_in_use(&self, sandbox: &str, except: &str) -> bool {
        self.saved().endpoints.iter().any(|(id, e)| id != except && e.sandbox == sandbox)
    }

    /// Forgets every endpoint (networks stay: Docker still has them, and
    /// their subnets are the cluster's): this node's membership ended, its
    /// containers' interfaces went with its network and their addresses back
    /// to the pool. Nothing is written where no file was.
    pub fn forget_endpoints(dir: &Path) {
        if dir.join(FILE).exists() {
            let state = Self::load(dir);
            let mut s = state.saved();
            s.endpoints.clear();
            state.write(&s);
        }
    }

    fn write(&self, saved: &Saved) {
        if let Err(e) = self.write_result(saved) {
            tracing::warn!(path = %self.file.display(), error = %e, "cannot save the Docker networks");
        }
    }

    /// Replaces the file whole, durably (a crash leaves the old or the new
    /// one); a failed write leaves no temporary file behind (`replace_durably`).
    fn write_result(&self, saved: &Saved) -> std::io::Result<()> {
        super::state::save_json(&self.file, saved)
    }

    /// Whether the file can be written now (it is, whole): an endpoint's
    /// address is not allocated where its record could not be saved. With
    /// the data dir full, Docker got an address recorded nowhere, held for
    /// good once the agent restarted and the container went meanwhile
    /// (found by a review, 2026-12-07).
    pub fn on_disk(&self) -> Result<(), (std::io::ErrorKind, String)> {
        let saved = self.saved();
        self.write_result(&saved).map_err(|e| super::state::not_recorded(&self.file, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_endpoints_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = DockerState::load(dir.path());
        s.add_network(
            "n1",
            Network { cidr: "10.2.3.0/24".into(), multicast: false, internal: false, seen_by: String::new() },
        );
        let ep = Endpoint {
            network: "n1".into(),
            address: "10.2.3.2/24".into(),
            mac: "02:00:00:00:00:01".into(),
            sandbox: "/x".into(),
            sandbox_path: "/p".into(),
            aliases: vec!["api".into()],
            aliases_read: true,
            in_domain: vec!["web.weave.local.".into()],
            in_domain_read: true,
            name: "web".into(),
        };
        s.set_endpoint("e1", ep.clone());
        let s = DockerState::load(dir.path());
        assert_eq!(s.network("n1").map(|n| n.cidr).as_deref(), Some("10.2.3.0/24"));
        assert_eq!(s.endpoint("e1"), Some(ep.clone()));
        // A forgotten node's endpoints go (their addresses went back), its networks stay.
        DockerState::forget_endpoints(dir.path());
        let s = DockerState::load(dir.path());
        assert_eq!((s.endpoint("e1"), s.network("n1").is_some()), (None, true));
        s.set_endpoint("e1", ep.clone());
        let elsewhere = tempfile::tempdir().unwrap();
        DockerState::forget_endpoints(elsewhere.path());
        assert!(!elsewhere.path().join(FILE).exists(), "written where no Docker plugin ran");
        assert!(s.sandbox_in_use("/x", "e2") && !s.sandbox_in_use("/x", "e1"));
        assert!(!s.multicast_in("/p", "e2"), "n1 has no multicast");
        s.add_network(
            "n2",
            Network { cidr: "10.2.4.0/24".into(), multicast: true, internal: false, seen_by: String::new() },
        );
        s.set_endpoint("e3", Endpoint { network: "n2".into(), sandbox_path: "/p".into(), ..Default::default() });
        assert!(s.multicast_in("/p", "e2") && !s.multicast_in("/p", "e3"));
        s.remove_endpoint("e3");
        s.remove_network("n2");
        assert!(s.remove_endpoint("e1").is_some());
        s.remove_network("n1");
        s.add_pool("10.2.5.0/24");
        let s = DockerState::load(dir.path());
        assert!(s.take_pool("10.2.5.0/24") && !s.take_pool("10.2.5.0/24") && !s.take_pool("10.2.6.0/24"));
        assert_eq!((s.network("n1"), s.endpoint("e1")), (None, None));
    }

    /// An endpoint an agent from before saved (aliases read, no names in the
    /// domain yet) loads with `in_domain_read` false: the sweep reads its
    /// container again once, so a `-h web.weave.local` from before the
    /// upgrade gets its name (a review, 2026-12-05).
    #[test]
    fn an_older_agents_endpoint_is_read_again_for_its_names_in_the_domain() {
        let old = r#"{"network":"n1","address":"10.2.3.2/24","mac":"m","aliases":["api"],"aliases_read":true}"#;
        let ep: Endpoint = serde_json::from_str(old).unwrap();
        assert!(ep.aliases_read && !ep.in_domain_read && ep.in_domain.is_empty());
    }
}
