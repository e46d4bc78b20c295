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
        let mut last = BTreeSet::new();
        loop {
            every.tick().await;
            let served;
            (last, served) = self.serve_missing(&last).await;
            if served {
                self.scopes_from_map(&maps.borrow(), own_node);
            }
        }
    }

    /// Serves each recorded namespace with no server that `last` (the
    /// previous look's answer) named too, and is still the namespace it
    /// was recorded as (one that is gone is the sweep's to retire). Returns
    /// the ones found without a server this time and not served now, and
    /// whether it served any.
    pub async fn serve_missing(&self, last: &BTreeSet<String>) -> (BTreeSet<String>, bool) {
        let (mut missing, mut served) = (BTreeSet::new(), false);
        for (key, netns) in self.registered() {
            if self.inner.served.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key) {
                continue;
            }
            let path = Path::new(&netns);
            if !same_namespace(&key, path) {
                continue;
            }
            if !last.contains(&key) {
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
                    tracing::warn!(netns, key, error = %e, "still cannot serve DNS in the container (tried every 10 s)");
                    missing.insert(key);
                }
            }
        }
        (missing, served)
    }
}

/// Whether `path` is still the namespace of `key` (for `netns:<inode>`
/// keys, the same inode).
pub(super) fn same_namespace(key: &str, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| crate::host::netns::inode_in_key(key).is_none_or(|ino| ino == m.ino()))
}
