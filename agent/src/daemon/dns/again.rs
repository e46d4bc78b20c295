//! Serving again what could not be served: a namespace recorded for DNS
//! (an attach records it first; a restart's [`DnsServer::restore`] reads
//! it) with no server, because opening its sockets or placing its rule
//! failed (the agent out of descriptors, the namespace busy). Before,
//! nothing tried again: its container had no resolver until the agent
//! restarted (found by a review, 2026-12-07).
use std::{collections::BTreeSet, path::Path, time::Duration};

use tokio::sync::watch;
use weave_proto::v1::NetworkMap;

use super::DnsServer;

/// How often the recorded namespaces without a server are looked at. One is
/// served on the second look that finds it so: an attach records its
/// namespace before it serves it.
pub(super) const AGAIN: Duration = Duration::from_secs(10);

impl DnsServer {
    /// Every [`AGAIN`], [`Self::serve_missing`]; the scopes of what it
    /// served from the latest map (`own_node`'s allocations).
    pub async fn serve_missing_every(self, maps: watch::Receiver<NetworkMap>, own_node: u64) {
        let mut every = tokio::time::interval(AGAIN);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut looks = Looks::default();
        loop {
            every.tick().await;
            if self.serve_missing(&mut looks).await {
                self.scopes_from_map(&maps.borrow(), own_node);
            }
        }
    }

    /// Serves each recorded namespace with no server that the previous look
    /// found so too, and is still the namespace it was recorded as (one that
    /// is gone is the sweep's to retire). Returns whether it served any. A
    /// failure is said once a key (a container that took its loopback
    /// address away made two lines every 10 s; found by a review,
    /// 2026-12-07), and its end once.
    pub async fn serve_missing(&self, looks: &mut Looks) -> bool {
        let (mut missing, mut served) = (BTreeSet::new(), false);
        for (key, netns) in self.registered() {
            if self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key) {
                continue;
            }
            let path = Path::new(&netns);
            if !same_namespace(&key, path) {
                continue;
            }
            if !looks.missing.contains(&key) {
                missing.insert(key);
                continue;
            }
            match self.open_and_serve(path, &key).await {
                // A detach may have stopped it meanwhile (it takes the key
                // out of the record before the sockets): then it goes again.
                Ok(()) if self.registered().iter().any(|(k, _)| *k == key) => {
                    tracing::info!(netns, key, "serving DNS again, after it failed");
                    served = true;
                }
                Ok(()) => {
                    self.stop_detached(&key).await;
                }
                Err(e) => {
                    match looks.warned.contains(&key) {
                        true => tracing::debug!(netns, key, error = %e, "still cannot serve DNS in the container"),
                        false => tracing::warn!(
                            netns, key, error = %e,
                            "cannot serve DNS in the container; trying every 10 s, said again once it serves"
                        ),
                    }
                    missing.insert(key);
                }
            }
        }
        looks.warned = missing.iter().filter(|k| looks.missing.contains(*k)).cloned().collect();
        looks.missing = missing;
        served
    }
}

/// What [`DnsServer::serve_missing`] found: the keys without a server, and
/// those of them already said to fail.
#[derive(Default)]
pub struct Looks {
    missing: BTreeSet<String>,
    warned: BTreeSet<String>,
}

/// Whether `path` is still the namespace of `key` (for `netns:<inode>`
/// keys, the same inode).
pub(super) fn same_namespace(key: &str, path: &Path) -> bool {
    match crate::host::netns::inode_in_key(key) {
        Some(inode) => crate::host::registry::alive(path, inode),
        None => path.exists(),
    }
}
