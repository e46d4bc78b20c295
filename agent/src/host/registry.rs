//! The container registry: which container is which, in one file of the data
//! dir ([`FILE`], replaced whole on every change), so that a restarted agent
//! still knows it. Used by attach, DNS and reset.
//!
//! - names registered with `attach --name`: name -> the namespace (path and
//!   inode) it was given to, so a restarted agent still finds `detach web`. A
//!   name is the container's IPAM key, so it belongs to one live namespace at
//!   a time: handing it to another would hand over that one's addresses;
//! - the namespaces served DNS (key -> path), served again after a restart;
//! - the names a DNS server is known by (`--name`, a CNI id -> its key), so
//!   that a detach by them stops it, also after a restart.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};

/// The registry's file in the data dir.
pub const FILE: &str = "containers.json";
/// What earlier versions kept in two files instead; read once, then removed.
pub const LEGACY_FILES: [&str; 2] = ["names.json", "dns-namespaces.json"];

/// The file's shape.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// name -> (netns path, netns inode)
    names: BTreeMap<String, (PathBuf, u64)>,
    /// Names of namespaces passed by descriptor under a path the agent
    /// cannot see: their death does not show at the path.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    unseen: BTreeSet<String>,
    /// name -> the [`super::netns::cookie`] of its namespace: the namespace
    /// passed again through another process of it is told from one given
    /// its inode since (names of agents from before 2026-12-07 have none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    cookies: BTreeMap<String, u64>,
    /// DNS key -> the namespace path it is served in.
    #[serde(default)]
    dns: BTreeMap<String, String>,
    /// A `--name` or CNI id -> the DNS key of its namespace.
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    /// CNI network name -> its attachments on this host (for its GC).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    cni: BTreeMap<String, Vec<CniRecord>>,
    /// Subnet id -> the addresses of this host's containers given this host's
    /// address there as their default route (egress), until it is hidden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    egress_routed: BTreeMap<u64, BTreeSet<std::net::Ipv4Addr>>,
    /// IPAM key -> the DNS name its CNI ADD left out (held by another
    /// node's container, or kept for one just released): the sweep
    /// registers it once it is free.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    left_out: BTreeMap<String, String>,
    /// IPAM key -> the subnets an attach of it began on and did not end
    /// (its agent killed): [`attaching`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    attaching: BTreeMap<String, BTreeSet<String>>,
}

/// A CNI ADD that succeeded, until its DEL or the network's GC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRecord {
    /// The IPAM key (`cni:<CNI_CONTAINERID>`).
    pub id: String,
    pub ifname: String,
    /// The namespace as the runtime named it (`CNI_NETNS`), and its inode.
    pub netns: PathBuf,
    pub inode: u64,
    /// The subnets (CIDRs) the ADD attached it to: what its GC gives back
    /// (the configuration may name another subnet by then).
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Its [`super::netns::cookie`], which tells it from a namespace given its
    /// inode once it is gone (None: an older agent's record, a kernel < 5.14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<u64>,
}

pub struct Registry {
    file: PathBuf,
    saved: Mutex<Saved>,
    /// The last write failed (a full or read-only disk): the sweep writes
    /// again until one succeeds ([`Registry::save_if_unsaved`]).
    unsaved: std::sync::atomic::AtomicBool,
}

impl Registry {
    /// The registry of the data dir `dir` (empty if its file is missing or
    /// unreadable; taken over from the legacy files if only those exist).
    pub fn load(dir: &Path) -> Self {
        let file = dir.join(FILE);
        let read = |p: &Path| std::fs::read(p).ok();
        let found = match std::fs::read(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            found => Some(found.map_err(|e| e.to_string())),
        };
        match found {
            Some(b) => match b.and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
                Ok(saved) => Self { saved: Mutex::new(saved), file, unsaved: Default::default() },
                // Said, and kept aside: it went unnoticed, and the names in
                // it (detach by name, each container's DNS) with it (found
                // by a review, 2026-12-04).
                Err(e) => {
                    let aside = file.with_extension("json.unreadable");
                    let _ = std::fs::rename(&file, &aside);
                    tracing::error!(
                        path = %file.display(), kept = %aside.display(), error = %e,
                        "the container names are unreadable: starting without them (detach by namespace path)"
                    );
                    Self { saved: Mutex::new(Saved::default()), file, unsaved: Default::default() }
                }
            },
            None => {
                let mut saved: Saved =
                    read(&dir.join(LEGACY_FILES[0])).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
                saved.dns =
                    read(&dir.join(LEGACY_FILES[1])).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
                let registry = Self { file, saved: Mutex::new(saved), unsaved: Default::default() };
                if LEGACY_FILES.iter().any(|f| dir.join(f).exists()) {
                    registry.write(&registry.saved());
                    for f in LEGACY_FILES {
                        let _ = std::fs::remove_file(dir.join(f));
                    }
                }
                registry
            }
        }
    }

    /// The namespaces served DNS: (key, netns path).
    pub fn dns_served(&self) -> Vec<(String, String)> {
        self.saved().dns.iter().map(|(k, p)| (k.clone(), p.clone())).collect()
    }

    /// DNS `key` is served in the namespace at `netns` (None: it came as a
    /// descriptor, nothing to reopen after a restart).
    pub fn serve_dns(&self, key: &str, netns: Option<String>) {
        let mut saved = self.saved();
        let changed = match netns {
            Some(path) => saved.dns.insert(key.to_string(), path.clone()) != Some(path),
            None => false,
        };
        if changed {
            self.write(&saved);
        }
    }

    /// DNS `key` is no longer served; no name leads to it any more.
    pub fn stop_dns(&self, key: &str) {
        let mut saved = self.saved();
        let before = (saved.dns.len(), saved.aliases.len());
        saved.dns.remove(key);
        saved.aliases.retain(|_, k| k != key);
        if before != (saved.dns.len(), saved.aliases.len()) {
            self.write(&saved);
        }
    }

    /// The `--name`s and CNI ids that lead to DNS key `key`.
    pub fn aliases_of(&self, key: &str) -> Vec<String> {
        self.saved().aliases.iter().filter(|(_, k)| *k == key).map(|(a, _)| a.clone()).collect()
    }

    /// The first alias (`--name` or CNI id) `same` holds for.
    pub fn find_alias(&self, same: impl Fn(&str) -> bool) -> Option<String> {
        self.saved().aliases.keys().find(|a| same(a)).cloned()
    }

    /// The DNS key a `--name` or CNI id leads to.
    pub fn dns_key(&self, alias: &str) -> Option<String> {
        self.saved().aliases.get(alias).cloned()
    }

    /// The path the namespace `alias` leads to is served DNS at, if any, and
    /// not a CNI attachment's (its aliases are the pod's names and id, not
    /// IPAM keys).
    pub fn dns_path(&self, alias: &str) -> Option<(u64, String)> {
        let saved = self.saved();
        let key = saved.aliases.get(alias)?;
        let inode = super::netns::inode_in_key(key)?;
        if saved.cni.values().flatten().any(|r| r.inode == inode) {
            return None;
        }
        Some((inode, saved.dns.get(key)?.clone()))
    }

    /// `aliases` now lead to DNS `key`. Returns the other keys they led to
    /// (dead namespaces: attach refuses a live one's name), which lose every
    /// alias: their servers are to stop.
    pub fn alias_dns(&self, aliases: &[String], key: &str) -> Vec<String> {
        let mut saved = self.saved();
        let moved: Vec<String> = aliases
            .iter()
            .filter_map(|a| saved.aliases.insert(a.clone(), key.to_string()))
            .filter(|k| k != key)
            .collect();
        saved.aliases.retain(|_, k| !moved.contains(k));
        self.write(&saved);
        moved
    }

    /// `aliases` that lead nowhere yet lead to DNS key `key` (before an
    /// attach: one that lead elsewhere are [`Registry::alias_dns`]'s, after it).
    pub fn alias_dns_new(&self, aliases: &[String], key: &str) {
        let mut saved = self.saved();
        let before = saved.aliases.len();
        for a in aliases {
            saved.aliases.entry(a.clone()).or_insert_with(|| key.to_string());
        }
        if saved.aliases.len() != before {
            self.write(&saved);
        }
    }

    /// A CNI ADD on `network` succeeded (again: the same record).
    pub fn cni_added(&self, network: &str, record: CniRecord) {
        let mut saved = self.saved();
        let list = saved.cni.entry(network.to_string()).or_default();
        if list.contains(&record) {
            return;
        }
        list.retain(|r| (&r.id, &r.ifname) != (&record.id, &record.ifname));
        list.push(record);
        self.write(&saved);
    }

    /// The attachments of CNI `network` on this host.
    pub fn cni_records(&self, network: &str) -> Vec<CniRecord> {
        self.saved().cni.get(network).cloned().unwrap_or_default()
    }

    /// Every CNI attachment on this host, with its network.
    pub fn cni_all(&self) -> Vec<(String, CniRecord)> {
        let saved = self.saved();
        saved.cni.iter().flat_map(|(n, list)| list.iter().map(|r| (n.clone(), r.clone()))).collect()
    }

    /// Attachment `id`/`ifname` is gone (DEL, GC): from every network (a
    /// DEL does not say which), or from `network` alone.
    pub fn cni_gone(&self, network: Option<&str>, id: &str, ifname: &str) {
        let mut saved = self.saved();
        let before: usize = saved.cni.values().map(Vec::len).sum();
        for (n, list) in saved.cni.iter_mut() {
            if network.is_none_or(|w| w == n) {
                list.retain(|r| (r.id.as_str(), r.ifname.as_str()) != (id, ifname));
            }
        }
        saved.cni.retain(|_, list| !list.is_empty());
        if saved.cni.values().map(Vec::len).sum::<usize>() != before {
            self.write(&saved);
        }
    }

    /// The container at `address` on `subnet` was given this host's address
    /// there as its default route.
    pub fn gave_gateway(&self, subnet: u64, address: std::net::Ipv4Addr) {
        let mut saved = self.saved();
        if saved.egress_routed.entry(subnet).or_default().insert(address) {
            self.write(&saved);
        }
    }

    /// The addresses on `subnet` given this host's address there as their
    /// default route since it was last hidden there (some may be released
    /// since: the caller looks at which are still held).
    pub fn gateway_given(&self, subnet: u64) -> BTreeSet<std::net::Ipv4Addr> {
        self.saved().egress_routed.get(&subnet).cloned().unwrap_or_default()
    }

    /// The container at `address` on `subnet` gave it back: its route went
    /// with it (the address may go to a container never given one).
    pub fn route_gone(&self, subnet: u64, address: std::net::Ipv4Addr) {
        let mut saved = self.saved();
        if saved.egress_routed.get_mut(&subnet).is_some_and(|set| set.remove(&address)) {
            self.write(&saved);
        }
    }

    /// This host's address on `subnet` is gone (hidden), with its routes.
    pub fn gateway_gone(&self, subnet: u64) {
        let mut saved = self.saved();
        if saved.egress_routed.remove(&subnet).is_some() {
            self.write(&saved);
        }
    }

    fn saved(&self) -> MutexGuard<'_, Saved> {
        // A panic while holding it cannot leave the map half-written.
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `name` was registered: (netns path, netns inode).
    pub fn get(&self, name: &str) -> Option<(PathBuf, u64)> {
        self.saved().names.get(name).cloned()
    }

    /// The first registered name `same` says is the one meant, with where.
    pub fn find(&self, same: impl Fn(&str) -> bool) -> Option<(String, PathBuf, u64)> {
        self.saved().names.iter().find(|(n, _)| same(n)).map(|(n, (p, i))| (n.clone(), p.clone(), *i))
    }

    /// The name of the live namespace `inode`. Namespace inodes are reused
    /// once a namespace dies, so the registered path must still lead to it.
    pub fn of(&self, inode: u64) -> Option<String> {
        self.saved().names.iter().find(|(_, (path, ino))| *ino == inode && alive(path, *ino)).map(|(n, _)| n.clone())
    }

    /// Every registered name whose namespace the agent can see by its path
    /// (not passed by descriptor under a path it cannot see): (name, path, inode).
    pub fn seen_names(&self) -> Vec<(String, PathBuf, u64)> {
        let saved = self.saved();
        saved
            .names
            .iter()
            .filter(|(n, _)| !saved.unseen.contains(*n))
            .map(|(n, (path, ino))| (n.clone(), path.clone(), *ino))
            .collect()
    }

    /// The name given to namespace `inode`, whether or not its path still
    /// leads to it.
    pub fn name_of(&self, inode: u64) -> Option<String> {
        self.saved().names.iter().find(|(_, (_, ino))| *ino == inode).map(|(n, _)| n.clone())
    }

    /// `name` was given to a namespace the agent cannot see by path.
    pub fn unseen(&self, name: &str) -> bool {
        self.saved().unseen.contains(name)
    }

    /// Like [`Registry::of`] for a namespace the caller passed as a descriptor
    /// (alive: it is open) by `path`, which the agent may not see: the name
    /// given to that inode under that same path, or to that very namespace
    /// (its `cookie`, read only if a name has that inode): the pid it was
    /// attached by may have ended while another process of it is passed
    /// (a detach by that one cut the container off and left its address and
    /// name held; found by a review, 2026-12-06).
    pub fn of_passed(&self, inode: u64, path: &Path, cookie: impl FnOnce() -> Option<u64>) -> Option<String> {
        let saved = self.saved();
        let on_inode = saved.names.iter().filter(|(_, (_, ino))| *ino == inode);
        if let Some((n, _)) = on_inode.clone().find(|(_, (p, ino))| p == path || alive(p, *ino)) {
            return Some(n.clone());
        }
        let known: Vec<(&String, u64)> = on_inode.filter_map(|(n, _)| Some((n, *saved.cookies.get(n)?))).collect();
        if known.is_empty() {
            return None;
        }
        let now = cookie()?;
        known.into_iter().find(|(_, c)| *c == now).map(|(n, _)| n.clone())
    }

    /// `attach --name n` for `container` (namespace `inode`, with `cookie`;
    /// `passed`: its path as the caller gave it, when it came as a
    /// descriptor): refuses a name another live namespace holds, or a second
    /// name for a named namespace, also one named through another process of
    /// it (the cookie: found by a review, 2026-12-06). `holder_plugged`: the
    /// name's holder, dead by its path, still has veths (a namespace passed
    /// by descriptor under a path the agent cannot see). Returns the inode of
    /// a dead namespace that held the name (to retire).
    pub fn check(
        &self,
        n: &str,
        container: &str,
        (inode, cookie): (u64, Option<u64>),
        passed: Option<&Path>,
        holder_plugged: bool,
    ) -> Result<Option<u64>, String> {
        let saved = self.saved();
        if let Some((path, holder)) = saved.names.get(n)
            && *holder != inode
        {
            if alive(path, *holder) {
                return Err(format!(
                    "name '{n}' is already in use by another container ({}): weavectl detach {n} first",
                    path.display()
                ));
            }
            if holder_plugged {
                return Err(format!(
                    "name '{n}' is already in use by the container that was at {}: its namespace lives on (a \
                     process or an interface in it); weavectl detach {n} first",
                    path.display()
                ));
            }
            return Ok(Some(*holder));
        }
        // A passed namespace is alive (it is open): a name given to its inode
        // under the same path is its own, though the agent cannot see that path.
        let same_cookie = |m: &String| cookie.is_some() && saved.cookies.get(m) == cookie.as_ref();
        if let Some((other, _)) = saved.names.iter().find(|(m, (path, ino))| {
            m.as_str() != n && *ino == inode && (passed == Some(path.as_path()) || alive(path, *ino) || same_cookie(m))
        }) {
            return Err(format!(
                "container '{container}' is already attached as '{other}': weavectl detach {other} first"
            ));
        }
        Ok(None)
    }

    /// Gives `name` to namespace `inode` (with `cookie`) at `path`;
    /// `unseen`: the agent cannot see that path (it came as a descriptor).
    pub fn remember(&self, name: &str, path: PathBuf, inode: u64, cookie: Option<u64>, unseen: bool) {
        let mut saved = self.saved();
        saved.names.insert(name.to_string(), (path, inode));
        match cookie {
            Some(c) => saved.cookies.insert(name.to_string(), c),
            None => saved.cookies.remove(name),
        };
        if unseen {
            saved.unseen.insert(name.to_string());
        } else {
            saved.unseen.remove(name);
        }
        self.write(&saved);
    }

    pub fn forget(&self, name: &str) {
        let mut saved = self.saved();
        saved.unseen.remove(name);
        saved.cookies.remove(name);
        if saved.names.remove(name).is_some() {
            self.write(&saved);
        }
    }

    /// Replaces the file whole, durably (a crash or power loss leaves the
    /// old or the new one), readable by root only.
    fn write(&self, saved: &Saved) {
        let _ = self.write_result(saved);
    }

    /// [`Registry::write`], saying how it went.
    fn write_result(&self, saved: &Saved) -> std::io::Result<()> {
        let written = super::state::save_json(&self.file, saved);
        let was_unsaved = self.unsaved.swap(written.is_err(), std::sync::atomic::Ordering::Relaxed);
        match &written {
            // (`replace_durably` took its temporary file with it.)
            Err(e) => {
                if !was_unsaved {
                    tracing::error!(
                        path = %self.file.display(), error = %e,
                        "cannot save the container names (tried again every 5 s): an agent restarted meanwhile \
                         forgets what changed since"
                    );
                }
            }
            Ok(()) if was_unsaved => tracing::info!(path = %self.file.display(), "saved the container names again"),
            Ok(()) => {}
        }
        written
    }

    /// The DNS name of the container with IPAM key `key` was left out
    /// (`Some`), or is its own now or no longer wanted (`None`).
    pub fn set_left_out(&self, key: &str, name: Option<&str>) {
        let mut saved = self.saved();
        let changed = match name {
            Some(n) => saved.left_out.insert(key.to_string(), n.to_string()).is_none_or(|old| old != n),
            None => saved.left_out.remove(key).is_some(),
        };
        if changed {
            self.write(&saved);
        }
    }

    /// Every left-out name: (IPAM key, name).
    pub fn left_out(&self) -> Vec<(String, String)> {
        self.saved().left_out.iter().map(|(k, n)| (k.clone(), n.clone())).collect()
    }

    /// Writes the file again if the last write failed: once the disk has
    /// room again, what changed meanwhile is saved. It was not, until some
    /// later change happened to write it, and a restart brought back a
    /// detached container's DNS and forgot an attached one's name (found by
    /// a review, 2026-12-06).
    pub fn save_if_unsaved(&self) {
        let _ = self.on_disk();
    }
}

/// The namespace at `path` is still the one with `inode`.
pub fn alive(path: &Path, inode: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.ino() == inode)
}

mod attaching;
#[cfg(test)]
mod tests;
