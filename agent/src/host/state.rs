//! What the agent keeps on disk: its private key, its identity in the cluster
//! and the last network map it saw. Files holding secrets are mode 0600; every
//! write goes to a temporary file first and is renamed into place, so a crash
//! never leaves half a file.
use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use boringtun::x25519::{PublicKey, StaticSecret};
use prost::Message;
use serde::{Deserialize, Serialize};
use weave_proto::{token::Pin, v1::NetworkMap};

use super::registry;
use crate::error::Error;

const KEY: &str = "private.key";
/// The key an `agent rekey` rotates to, until the coordinator took it.
const PENDING_KEY: &str = "private.key.new";
/// How long [`StateDir::lock`] waits for another process to let go of the
/// directory (an agent exiting lets go within a moment).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const IDENTITY: &str = "identity.json";
const MAP: &str = "map.pb";
/// Written when the coordinator ended this node's membership: `agent join`
/// refuses until `agent reset` (a supervisor restarting a removed agent with
/// its old token must not bring the node back behind the admin's back).
const REMOVED: &str = "removed";
/// Written when the coordinator forgot this node (its token's
/// `--forget-after`): `agent run` says so and stops (it has no token to
/// join with); `agent join` joins again as a new node, and removes it.
const FORGOTTEN: &str = "forgotten";

/// Whether `why` (the coordinator's word) says the node was forgotten
/// (`--forget-after`), not removed.
fn was_forgotten(why: &str) -> bool {
    why.starts_with("node '") && why.contains("' was forgotten")
}

/// The node's WireGuard key pair. The private half is never sent anywhere.
#[derive(Clone)]
pub struct NodeKey(StaticSecret);

impl NodeKey {
    pub fn generate() -> Self {
        Self(StaticSecret::from(rand::random::<[u8; 32]>()))
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.0
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from(&self.0)
    }

    /// As a key file holds it: base64 of the 32 bytes.
    fn to_file(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// A key file's contents (None: not a base64 X25519 key).
    fn from_file(text: &str) -> Option<Self> {
        let key: [u8; 32] = STANDARD.decode(text.trim()).ok()?.try_into().ok()?;
        Some(Self(StaticSecret::from(key)))
    }
}

/// Who this host is in the cluster, as the coordinator answered at join.
#[derive(Clone, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: u64,
    pub name: String,
    /// The node's overlay address (from the node block).
    pub address: std::net::Ipv4Addr,
    pub coordinator: String,
    /// `sha256:<hex>` of the coordinator's public key.
    pub pin: String,
    /// Bearer credential for the coordinator: a secret.
    pub credential: String,
    pub endpoint: std::net::SocketAddr,
    pub listen_port: u16,
    /// The endpoints were given (`--endpoint`): never changed by the agent.
    /// Identities saved before this field existed count as pinned (they
    /// behave as they did).
    #[serde(default = "pinned_by_default")]
    pub endpoints_pinned: bool,
}

fn pinned_by_default() -> bool {
    true
}

impl Identity {
    pub fn pin(&self) -> Result<Pin, Error> {
        Pin::parse(&self.pin).ok_or_else(|| Error::State(format!("{IDENTITY}: the coordinator pin is malformed")))
    }
}

/// The agent's data directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn is_joined(&self) -> bool {
        self.dir.join(IDENTITY).exists()
    }

    /// Writes the node's private key, durably (file and directory synced),
    /// before the join is sent: if the coordinator commits the join and the
    /// agent then dies, the host can still prove it is that node and join
    /// again under its name.
    pub fn save_key(&self, key: &NodeKey) -> Result<(), Error> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(|e| self.io("create", e))?;
        self.write(KEY, key.to_file().as_bytes())
    }

    /// The key a rekey cut short saved (`agent rekey` rotates to it, if the
    /// coordinator may have taken it), if any.
    pub fn pending_key(&self) -> Option<NodeKey> {
        NodeKey::from_file(&fs::read_to_string(self.dir.join(PENDING_KEY)).ok()?)
    }

    /// A new key for `agent rekey`, saved (0600, over any earlier one: one
    /// the coordinator never took is no one's) before the coordinator hears
    /// of it, so that a rekey run again finishes with the key it may have
    /// taken.
    pub fn new_pending_key(&self) -> Result<NodeKey, Error> {
        let key = NodeKey::generate();
        self.write(PENDING_KEY, key.to_file().as_bytes())?;
        Ok(key)
    }

    /// A rekey that did not reach the coordinator: its key goes.
    pub fn drop_pending_key(&self) {
        let _ = fs::remove_file(self.dir.join(PENDING_KEY));
    }

    /// The rotated key becomes the node's key (durably, replacing the old).
    pub fn commit_pending_key(&self) -> Result<(), Error> {
        fs::rename(self.dir.join(PENDING_KEY), self.dir.join(KEY)).map_err(|e| self.io(PENDING_KEY, e))?;
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| self.io("sync", e))
    }

    /// The saved private key, if there is one (from a join that may not have
    /// finished, or from a node that was removed).
    pub fn load_key(&self) -> Result<Option<NodeKey>, Error> {
        if let Some(warning) = weave_proto::private_dir::secret_file(&self.dir.join(KEY)) {
            tracing::warn!("{warning}");
        }
        match fs::read_to_string(self.dir.join(KEY)) {
            Ok(text) => NodeKey::from_file(&text).map(Some).ok_or_else(|| lost_key("is not a base64 X25519 key")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(lost_key(&e.to_string())),
            Err(e) => Err(self.io(KEY, e)),
        }
    }

    /// Writes everything a join produced; the key is written (again) too.
    pub fn save_join(&self, key: &NodeKey, identity: &Identity, map: &NetworkMap) -> Result<(), Error> {
        self.save_key(key)?;
        let json = serde_json::to_vec_pretty(identity).map_err(|e| Error::State(e.to_string()))?;
        self.write(IDENTITY, &json)?;
        self.save_map(map)?;
        let old = fs::read_to_string(self.dir.join(REMOVED)).ok().filter(|why| was_forgotten(why)).map(|_| REMOVED);
        for name in std::iter::once(FORGOTTEN).chain(old) {
            match fs::remove_file(self.dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(self.io(name, e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Rewrites the saved identity alone (the coordinator's addresses changed).
    pub fn save_identity(&self, identity: &Identity) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(identity).map_err(|e| Error::State(e.to_string()))?;
        self.write(IDENTITY, &json)
    }

    /// Forgets the membership (identity and map) and records `why`: as a
    /// removal, which keeps `agent join` from joining again, or (`may_rejoin`:
    /// the coordinator forgot the node) as what `agent run` says; the key
    /// stays until `agent reset`.
    pub fn forget_membership(&self, why: &str, may_rejoin: bool) -> Result<(), Error> {
        self.write(if may_rejoin { FORGOTTEN } else { REMOVED }, why.as_bytes())?;
        // The containers' interfaces went with the network, and their
        // addresses back to the pool: a node joining again starts with none.
        let attached = may_rejoin.then_some(registry::FILE);
        if may_rejoin {
            super::docker::DockerState::forget_endpoints(&self.dir);
        }
        for name in [IDENTITY, MAP].into_iter().chain(attached) {
            match fs::remove_file(self.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(name, e)),
            }
        }
        Ok(())
    }

    /// Why this host's membership ended, if it did (see [`Self::forget_membership`]).
    pub fn removed(&self) -> Option<String> {
        fs::read_to_string(self.dir.join(REMOVED)).ok().filter(|why| !was_forgotten(why))
    }

    /// Why the coordinator forgot this node, if it did and the host has not
    /// joined since: in `forgotten`, or in `removed` as agents before
    /// 2026-12-05 wrote it (they had no `forgotten`: upgraded, such a host
    /// refused to join again until `agent reset`; found by a review of
    /// upgrades, 2026-12-07).
    pub fn forgotten(&self) -> Option<String> {
        fs::read_to_string(self.dir.join(FORGOTTEN))
            .ok()
            .or_else(|| fs::read_to_string(self.dir.join(REMOVED)).ok().filter(|why| was_forgotten(why)))
    }

    pub fn save_map(&self, map: &NetworkMap) -> Result<(), Error> {
        self.write(MAP, &map.encode_to_vec())
    }

    pub fn load(&self) -> Result<(NodeKey, Identity, NetworkMap), Error> {
        // The coordinator may have taken its key already: the old one would
        // run cut off, every handshake refused (a review, 2026-12-07).
        if self.dir.join(PENDING_KEY).exists() {
            return Err(Error::State(format!(
                "an `agent rekey` did not finish ({PENDING_KEY} is there): run it again, then start the agent"
            )));
        }
        let key = self.load_key()?.ok_or_else(|| lost_key("is missing"))?;
        let (identity, map) = self.load_saved(&key)?;
        // A key that is not the node's (another host's backup restored, one
        // key copied to several hosts): every peer refuses its handshakes,
        // and the agent ran cut off, saying only that no handshake was
        // answered (found by a review, 2026-12-07).
        let public = key.public();
        if let Some(node) = map.nodes.iter().find(|n| n.id == identity.node_id)
            && !node.public_key.is_empty()
            && node.public_key != public.as_bytes()
        {
            return Err(Error::State(format!(
                "{KEY} is not node {}'s key: the cluster knows it by the public key {}, and this file's is {} \
                 (another host's key restored, or one key copied to several hosts; or an `agent rekey` cut \
                 short: run it again). Put the node's own {KEY} back; or make this host a new node: `weavectl \
                 node rm {}`, `agent reset`, then `agent join` with a token",
                node.name,
                STANDARD.encode(&node.public_key),
                STANDARD.encode(public.as_bytes()),
                node.name,
            )));
        }
        Ok((key, identity, map))
    }

    /// The saved identity and map (`key`: the saved key, whose node's name
    /// an unreadable identity's message gives).
    pub fn load_saved(&self, key: &NodeKey) -> Result<(Identity, NetworkMap), Error> {
        // Its node credential is as secret as the key.
        if let Some(warning) = weave_proto::private_dir::secret_file(&self.dir.join(IDENTITY)) {
            tracing::warn!("{warning}");
        }
        let identity = fs::read(self.dir.join(IDENTITY)).map_err(|e| self.io(IDENTITY, e))?;
        let identity: Identity = serde_json::from_slice(&identity).map_err(|e| {
            // The join takes the node's name from the saved map; without
            // one the coordinator asks for it (a review, 2026-12-06).
            let name = match self.saved_name_of(key) {
                Some(_) => "",
                None => ", and --name with this node's name (`weavectl node ls`): the saved map that gives it is gone",
            };
            Error::State(format!(
                "{IDENTITY} is unreadable ({e}): run `agent join` with a new token (and the --endpoint flags it \
                 joined with, if any{name}); it sets the file aside and joins again with this host's saved key \
                 ({KEY}), as the same node (its name, address and containers)"
            ))
        })?;
        // A cache of the coordinator's: one that cannot be read is set aside
        // and the map comes whole from the coordinator (it stopped the agent
        // for good, restarted in a loop by its unit; found by a review,
        // 2026-12-05).
        let map = match fs::read(self.dir.join(MAP)) {
            Ok(bytes) => NetworkMap::decode(bytes.as_slice()).unwrap_or_else(|e| {
                let aside = self.dir.join(format!("{MAP}.unreadable"));
                // Said as it happened: a rename that failed (an immutable
                // file) was reported as done (found by a review, 2026-12-06).
                match fs::rename(self.dir.join(MAP), &aside) {
                    Ok(()) => tracing::error!(
                        error = %e, kept = %aside.display(),
                        "the saved network map is unreadable: starting without it (the coordinator sends it whole)"
                    ),
                    Err(r) => tracing::error!(
                        error = %e, set_aside = %r,
                        "the saved network map is unreadable, and cannot be set aside: starting without it (the \
                         coordinator sends it whole; it replaces the file if it can)"
                    ),
                }
                NetworkMap::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NetworkMap::default(),
            Err(e) => return Err(self.io(MAP, e)),
        };
        Ok((identity, map))
    }

    /// The name the saved map gives the node with `key` (an identity file
    /// set aside still leaves the map, which lists every node's key): an
    /// `agent join` without `--name` then joins again as that node, not
    /// under the host name (the coordinator refused that: the key is the
    /// node's; found by a review, 2026-12-05).
    pub fn saved_name_of(&self, key: &NodeKey) -> Option<String> {
        let map = NetworkMap::decode(fs::read(self.dir.join(MAP)).ok()?.as_slice()).ok()?;
        let public = key.public();
        map.nodes.into_iter().find(|n| n.public_key == public.as_bytes()).map(|n| n.name)
    }

    /// Sets a saved identity that cannot be read aside (`agent join` with a
    /// token then joins again with the saved key); the reason, if it did.
    /// One that cannot be set aside is an error naming why: it was dropped,
    /// and the join then told to run the same join again (found by a
    /// review, 2026-12-06).
    pub fn set_aside_unreadable_identity(&self) -> Result<Option<String>, Error> {
        let Ok(bytes) = fs::read(self.dir.join(IDENTITY)) else { return Ok(None) };
        let Err(e) = serde_json::from_slice::<Identity>(&bytes) else { return Ok(None) };
        let aside = self.dir.join(format!("{IDENTITY}.unreadable"));
        fs::rename(self.dir.join(IDENTITY), &aside).map_err(|r| {
            Error::State(format!(
                "{}/{IDENTITY} is unreadable ({e}) and cannot be set aside as {} ({r}): make the data dir \
                 writable, or move the file away yourself, and join again",
                self.dir.display(),
                aside.display()
            ))
        })?;
        Ok(Some(format!("{e} (kept as {})", aside.display())))
    }

    /// Takes the directory for this process (made if missing), by a `flock`
    /// on the directory itself (no lock file to leave behind or to be
    /// unlinked while held): a second agent on it (from another network
    /// namespace: one host's identity used twice) took over the node's
    /// WireGuard identity, and its workloads lost every packet until it
    /// stopped (found by a review, 2026-12-04). Held until the returned lock
    /// is dropped; `agent reset` takes it too.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, Error> {
        if let Some(warning) =
            weave_proto::private_dir::secure(&self.dir).map_err(|e| Error::State(format!("--data-dir: {e}")))?
        {
            tracing::warn!("--data-dir: {warning}");
        }
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(|e| self.io("create", e))?;
        let mut dir = fs::File::open(&self.dir).map_err(|e| self.io("open", e))?;
        // A held lock is waited for a moment: an agent killed or stopping
        // holds it until it has exited, and one started right after it (a
        // restart) failed (found by a review, 2026-12-07).
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((back, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                    dir = back;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(Error::State(format!(
                        "another agent uses --data-dir {} (it holds a lock on it): stop it, or give this one a \
                         --data-dir of its own",
                        self.dir.display()
                    )));
                }
                Err((_, e)) => return Err(self.io("lock", e.into())),
            }
        }
    }

    /// Removes the directory if nothing is in it (a join that failed made
    /// it only for its lock).
    pub fn unlock_if_empty(&self, lock: nix::fcntl::Flock<fs::File>) {
        let _ = fs::remove_dir(&self.dir);
        drop(lock);
    }

    /// Forgets a key made for a join the coordinator refused, and the
    /// directory if nothing else is in it (what an earlier run left stays).
    pub fn forget_key(&self) {
        let _ = fs::remove_file(self.dir.join(KEY));
        let _ = fs::remove_dir(&self.dir);
    }

    /// Removes the files this agent wrote (the container registry too), and
    /// the directory if it is then empty.
    pub fn remove(&self) -> Result<(), Error> {
        let registry = [
            registry::FILE,
            "containers.tmp",
            "containers.json.unreadable",
            registry::LEGACY_FILES[0],
            registry::LEGACY_FILES[1],
        ];
        // And what set-aside and interrupted writes leave: `agent reset`
        // left them, and the directory with them (found by a review, 2026-12-06).
        let aside = [MAP, IDENTITY].map(|n| format!("{n}.unreadable"));
        let partial = [KEY, IDENTITY, MAP, PENDING_KEY].map(|n| format!(".{n}.tmp"));
        let all = [KEY, IDENTITY, MAP, REMOVED, PENDING_KEY]
            .into_iter()
            .chain(registry)
            .map(str::to_string)
            .chain(aside)
            .chain(partial);
        for name in all {
            match fs::remove_file(self.dir.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&name, e)),
            }
        }
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        replace_durably(&self.dir.join(format!(".{name}.tmp")), &self.dir.join(name), bytes)
            .map_err(|e| self.io(name, e))
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::Io(format!("{}/{what}", self.dir.display()), e)
    }
}

/// Replaces `path` whole with `bytes` (mode 0600) through `tmp`, durably: a
/// crash or power loss leaves the old file or the new one.
pub fn replace_durably(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(tmp)?;
    // A write or rename that failed (a full disk) takes its temporary file
    // with it (one stayed, empty; found by a review, 2026-12-07).
    if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()).and_then(|_| fs::rename(tmp, path)) {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    // The rename is durable only once the directory is synced.
    match path.parent() {
        Some(dir) => fs::File::open(dir).and_then(|d| d.sync_all()),
        None => Ok(()),
    }
}

/// Writes `value` as JSON over `file` (through `<file>.tmp`), durably.
pub fn save_json<T: Serialize>(file: &Path, value: &T) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    serde_json::to_vec(value).map_err(std::io::Error::other).and_then(|b| replace_durably(&tmp, file, &b))
}

/// Why a record could not be kept in `file`: the error's kind, and the
/// sentence an attach or Docker request is refused with.
pub fn not_recorded(file: &Path, e: &std::io::Error) -> (std::io::ErrorKind, String) {
    (e.kind(), format!("cannot record it in {}: {e}", file.display()))
}

/// The saved key is lost (`why`), and with it this host's node: the way
/// on, said (it stopped with the reason alone; found by a review, 2026-12-06).
fn lost_key(why: &str) -> Error {
    Error::State(format!(
        "{KEY} {why}: this host's WireGuard key, which its node is known by, is lost. Restore it from a \
         backup of the data dir; failing that, run `agent reset` here (it takes this host's containers off \
         weave), `weavectl node rm <this node>` as the admin, then `agent join` with a new token (a new node)"
    ))
}

#[cfg(test)]
mod tests;
