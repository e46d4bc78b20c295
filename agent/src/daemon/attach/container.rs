//! Which network namespace a request means: a path, a pid, a registered
//! name, a name under `/run/netns`, or a descriptor the caller passed.
use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use weave_proto::local_api::Refusal;

use super::Attacher;

/// How a request named its container, resolved.
pub(super) struct Container {
    pub(super) netns: File,
    /// The IPAM key: the registered name, or `netns:<inode>`.
    pub(super) key: String,
    pub(super) name: Option<String>,
    pub(super) inode: u64,
    pub(super) path: PathBuf,
    /// Its [`crate::host::netns::cookie`], read once, when first asked.
    cookie: std::sync::OnceLock<Option<u64>>,
}

impl Container {
    /// The namespace's cookie (a thread enters it to read it: once).
    pub(super) fn cookie(&self) -> Option<u64> {
        *self.cookie.get_or_init(|| crate::host::netns::cookie(&self.netns))
    }
}

impl Attacher {
    /// `name` as the registry keeps names: the DNS name it is, relative to
    /// the cluster's domain (`WEB`, `web.weave.local` and `web.weave.local.`
    /// are `web`), or the whole name where the relative one would itself end
    /// in the domain (`a.weave.local.weave.local.`, which is not
    /// `a.weave.local`). Kept as given, two live containers held one name as
    /// `web` and `WEB` (found by reviews, 2026-12-05).
    pub(super) fn canonical(&self, name: &str) -> Result<String, String> {
        canonical_in(name, &self.domain())
    }

    /// The cluster's DNS domain, lower case, without dots at either end.
    fn domain(&self) -> String {
        let domain = Some(self.maps.borrow().dns_domain.clone()).filter(|d| !d.is_empty());
        domain.unwrap_or_else(|| "weave.local.".into()).trim_matches('.').to_ascii_lowercase()
    }

    /// The registered name `container` means, with its (netns path, inode):
    /// that very key, else its canonical one, else one an agent from before
    /// registered in another spelling of the same name (`WEB`).
    pub(super) fn registered(&self, container: &str) -> Option<(String, PathBuf, u64)> {
        if let Some((path, ino)) = self.names.get(container) {
            return Some((container.to_string(), path, ino));
        }
        // The map is read before the registry is locked, never while.
        let domain = self.domain();
        let canonical = canonical_in(container, &domain).ok()?;
        if let Some((path, ino)) = self.names.get(&canonical) {
            return Some((canonical, path, ino));
        }
        self.names.find(|n| canonical_in(n, &domain).is_ok_and(|c| c == canonical))
    }

    /// The DNS alias a `--name` is kept under: the spelling the registry
    /// holds the name in (an older agent's `WEB` beside `web` stays its
    /// own: taken as `web`, it stopped the other container's resolver; found
    /// by a review, 2026-12-06), else its canonical spelling (as given if it
    /// is no name).
    pub(crate) fn alias(&self, name: &str) -> String {
        match self.registered(name) {
            Some((registered, ..)) => registered,
            None => self.canonical(name).unwrap_or_else(|_| name.to_string()),
        }
    }

    /// The alias `container` means in any spelling of the name: the one of
    /// the name `registered` finds (so that a detach stops the resolver of
    /// the container whose addresses it released), else that very alias,
    /// else one whose canonical spelling is the same (an attach as `WEB`
    /// kept it so until 2026-12-06, and a detach as `web` or
    /// `WEB.weave.local.` left its resolver running; found by a review).
    pub(crate) fn alias_of(&self, container: &str) -> Option<String> {
        if let Some((registered, ..)) = self.registered(container).filter(|(n, ..)| self.names.dns_key(n).is_some()) {
            return Some(registered);
        }
        if self.names.dns_key(container).is_some() {
            return Some(container.to_string());
        }
        let domain = self.domain();
        let canonical = canonical_in(container, &domain).ok()?;
        if self.names.dns_key(&canonical).is_some() {
            return Some(canonical);
        }
        self.names.find_alias(|a| canonical_in(a, &domain).is_ok_and(|c| c == canonical))
    }

    /// `id`, when given, is the IPAM key (e.g. `cni:<container id>`, so
    /// that a CNI DEL can release it after the namespace is gone).
    /// `passed`: the namespace the caller sent as a descriptor; it wins over
    /// the path in `container` (which the agent may not see), but not over a
    /// registered name.
    pub(super) fn resolve(
        &self,
        container: &str,
        passed: Option<&File>,
        name: Option<&str>,
        id: Option<&str>,
    ) -> Result<Container, Refusal> {
        // The inode a registered name was given to: its path may since lead
        // to another namespace (`ip netns del` then `add`, a reused pid).
        let mut registered_inode = None;
        let mut netns = None;
        let by_name = self.registered(container);
        let path = if let Some(file) = passed.filter(|_| by_name.is_none()) {
            netns = Some(
                file.try_clone().map_err(|e| Refusal::failed(format!("the passed namespace of '{container}': {e}")))?,
            );
            // A pid as the path it means: recorded as the bare pid, a later
            // `detach /proc/<pid>/ns/net` did not find the name, cut the
            // container off and left its address and name held (found by a
            // review, 2026-12-06).
            match is_pid(container) {
                true => PathBuf::from(format!("/proc/{container}/ns/net")),
                false => PathBuf::from(container),
            }
        } else if container.starts_with('/') {
            PathBuf::from(container)
        } else if is_pid(container) {
            PathBuf::from(format!("/proc/{container}/ns/net"))
        } else if let Some((_, p, ino)) = by_name {
            registered_inode = Some(ino);
            p
        } else if !container.is_empty() && !container.contains('/') && Path::new("/run/netns").join(container).exists()
        {
            Path::new("/run/netns").join(container)
        } else {
            // Another host's container, by its name (found by a review,
            // 2026-12-06: "unknown container" said nothing of where it is).
            let map = self.maps.borrow();
            // Only what a `--name` can be: not an IPAM key of another kind
            // (`cni:…`, `host:…`, `netns:…`, a Docker endpoint id).
            let endpoint_id = container.len() == 64 && container.bytes().all(|b| b.is_ascii_hexdigit());
            let named = !container.contains(':') && !endpoint_id;
            let node = map.allocations.iter().find(|a| named && a.container == container && a.node_id != self.node_id);
            let elsewhere =
                node.and_then(|a| map.nodes.iter().find(|n| n.id == a.node_id)).map_or_else(String::new, |n| {
                    format!(" (a container '{container}' is attached on host {}: run this there)", n.name)
                });
            return Err(Refusal::unknown_container(format!(
                "unknown container '{container}': give a netns path, a pid, or a name registered with --name{elsewhere}"
            )));
        };
        let netns = match netns {
            Some(n) => n,
            None => File::open(&path).map_err(|e| {
                Refusal::unknown_container(format!("unknown container '{container}': {}: {e}", path.display()))
            })?,
        };
        let meta = netns.metadata().map_err(|e| Refusal::failed(format!("{}: {e}", path.display())))?;
        // A network namespace file is on nsfs; anything else is not a container.
        if nix::sys::statfs::fstatfs(&netns)
            .map(|s| s.filesystem_type() != nix::sys::statfs::NSFS_MAGIC)
            .unwrap_or(true)
        {
            return Err(Refusal::unknown_container(format!(
                "unknown container '{container}': {} is not a network namespace",
                path.display()
            )));
        }
        let inode = meta.ino();
        // The agent's own namespace is the host's: plumbing `ethwe` and a
        // resolver into it (pid 1, `/proc/self/ns/net`) is never what was meant.
        if std::fs::metadata("/proc/self/ns/net").is_ok_and(|own| own.ino() == inode && own.dev() == meta.dev()) {
            return Err(Refusal::unknown_container(format!(
                "unknown container '{container}': {} is the host's own network namespace, not a container's",
                path.display()
            )));
        }
        if registered_inode.is_some_and(|ino| ino != inode) {
            return Err(Refusal::unknown_container(format!(
                "unknown container '{container}': its namespace is gone ({} is another one now)",
                path.display()
            )));
        }
        let cookie = std::sync::OnceLock::new();
        let registered = match passed {
            Some(_) => {
                self.names.of_passed(inode, &path, || *cookie.get_or_init(|| crate::host::netns::cookie(&netns)))
            }
            None => self.names.of(inode),
        };
        let name = name.map(str::to_string).or(registered);
        let key = id.map(str::to_string).or_else(|| name.clone()).unwrap_or_else(|| crate::host::netns::key_of(inode));
        Ok(Container { netns, key, name, inode, path, cookie })
    }
}

impl Attacher {
    /// The IPAM key a detach releases for container `c`: its own, unless
    /// that holds nothing here (and no CNI `id` names it) and the agent
    /// forgot the container (its registry lost or set aside). Then the
    /// name, unknown to the agent, that holds on this node an address on one
    /// of its interfaces which the agent pinned to this namespace's own port
    /// (`host_ifname` of its inode): a detach by path, the README's way
    /// back, released nothing, its address and DNS name held for good (found
    /// by a review, 2026-12-06).
    pub(super) async fn detach_key(
        &self,
        c: &Container,
        before: &[crate::host::netlink::WorkloadInterface],
        id: Option<&str>,
    ) -> String {
        // Only for a container the agent knows no name of: a known name
        // whose address was released behind its back (`ipam release`) left
        // its port pinned to an address that may be another's now.
        if id.is_some() || c.name.is_some() || !self.held(&c.key).is_empty() {
            return c.key.clone();
        }
        let Ok(pinned) = self.netlink.pinned_ports().await else { return c.key.clone() };
        let map = self.maps.borrow();
        let ports: Vec<String> = map.subnets.iter().map(|s| crate::plan::kernel::host_ifname(c.inode, s.vni)).collect();
        let ours = |ip: &std::net::Ipv4Addr| pinned.iter().any(|(port, pin, _)| pin == ip && ports.contains(port));
        let on_it: Vec<_> = before.iter().flat_map(|i| i.addresses.iter().map(|(ip, _)| *ip)).filter(ours).collect();
        let address = |a: &&weave_proto::v1::Allocation| crate::plan::netmap::allocation_address(&a.address);
        // A name, as `--name` gives them (no `docker:`, `cni:` or `host:` key),
        // that the agent does not know: the forgotten one.
        let forgotten = |key: &str| !key.contains(':') && self.names.get(key).is_none();
        let mut here = map.allocations.iter().filter(|a| a.node_id == self.node_id && forgotten(&a.container));
        here.find(|a| address(a).is_some_and(|ip| on_it.contains(&ip)))
            .map_or_else(|| c.key.clone(), |a| a.container.clone())
    }

    /// The key that holds `address` on this host, if it is one of container
    /// `c`'s: its `netns:<inode>`, a name or a CNI record given to its
    /// namespace. Not another's: a container may put a neighbour's address
    /// on an `ethwe` of its own, and a refusal that said "attached as 'w1'"
    /// had the admin detach w1 (found by a review, 2026-12-06).
    pub(super) fn key_here(&self, c: &Container, address: std::net::Ipv4Addr) -> Option<String> {
        use crate::plan::netmap::allocation_address;
        let key = {
            let map = self.maps.borrow();
            let mut here = map.allocations.iter().filter(|a| a.node_id == self.node_id);
            here.find(|a| allocation_address(&a.address) == Some(address)).map(|a| a.container.clone())
        }?;
        let ours = key == crate::host::netns::key_of(c.inode)
            || self.names.get(&key).is_some_and(|(_, ino)| ino == c.inode)
            || self.names.cni_all().iter().any(|(_, r)| r.id == key && r.inode == c.inode);
        ours.then_some(key)
    }
}

/// Whether `container` names a process by its pid.
fn is_pid(container: &str) -> bool {
    !container.is_empty() && container.bytes().all(|b| b.is_ascii_digit())
}

/// [`Attacher::canonical`] in `domain` (lower case, no dots at the ends).
fn canonical_in(name: &str, domain: &str) -> Result<String, String> {
    let fqdn = weave_proto::dns_name::qualify(name, domain)?;
    Ok(match fqdn.strip_suffix(&format!(".{domain}.")) {
        Some(relative) if relative != domain && !relative.ends_with(&format!(".{domain}")) => relative.into(),
        _ => fqdn,
    })
}

/// A `--name` is its container's IPAM key: the Docker plugin's gateway key
/// is not one to take (a container so named lost its address when a Docker
/// network on its subnet went; found by a review, 2026-12-07). A CNI
/// attach's name is only its DNS name (its key is `cni:<id>`).
pub(super) fn check_key_free(kept: &str) -> Result<(), String> {
    if crate::plan::docker::is_docker_key(kept) {
        return Err(format!("'{kept}' is the key of the Docker plugin's gateway addresses: choose another name"));
    }
    // A container given as digits is a pid: `detach 32533` detached the
    // container of process 32533, not the one named so (found by a review,
    // 2026-12-08).
    if is_pid(kept) {
        return Err(format!("'{kept}' is all digits, which names a process (a pid): choose a name with a letter"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_name_is_kept_as_the_dns_name_it_is() {
        let c = |n: &str| super::canonical_in(n, "weave.local");
        for web in ["web", "WEB", "web.weave.local", "Web.Weave.Local."] {
            assert_eq!(c(web).as_deref(), Ok("web"), "{web}");
        }
        assert_eq!(c("a.b").as_deref(), Ok("a.b"));
        // Not a.weave.local: that qualifies to a.weave.local., another name.
        for twice in ["a.weave.local.weave.local", "a.weave.local.weave.local."] {
            assert_eq!(c(twice).as_deref(), Ok("a.weave.local.weave.local."), "{twice}");
        }
        // Idempotent: what it keeps is read back as itself.
        for n in ["web", "a.b", "a.weave.local.weave.local."] {
            assert_eq!(c(&c(n).unwrap()), c(n), "{n}");
        }
        assert!(c("a..b").is_err() && c("x.example.com.").is_err());
        // The Docker plugin's gateway key, in any spelling it is kept in.
        for taken in ["docker-gateway", "DOCKER-GATEWAY.weave.local."] {
            let kept = c(taken).unwrap();
            assert!(super::check_key_free(&kept).is_err_and(|e| e.contains("Docker plugin")), "{taken}");
        }
        assert!(super::check_key_free("web").is_ok());
        assert!(super::check_key_free("32533").is_err_and(|e| e.contains("pid")));
        assert!(super::check_key_free("web1").is_ok() && super::check_key_free("1web").is_ok());
    }
}
