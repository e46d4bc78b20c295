//! Containers whose namespace went away without a detach (`ip netns del`,
//! their process ended): what they held is given back, as a detach would.
//! The agent's own DNS sockets in such a namespace kept it alive, with its
//! veth and address answering, and its addresses and names stayed taken for
//! ever: enough of them filled a subnet (found by a review, 2026-12-05).
use std::{path::Path, sync::Arc, time::Duration};

use super::Attacher;
use crate::host::registry::alive;

/// How often the namespaces are looked at (a `stat` each).
pub const SWEEP: Duration = Duration::from_secs(5);

impl Attacher {
    /// Every `SWEEP`, [`Self::retire_dead`]; `gone` is told each DNS key
    /// whose namespace went (its server is to stop).
    pub async fn retire_dead_every(self: Arc<Self>, gone: impl Fn(&str)) {
        let mut every = tokio::time::interval(SWEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            for key in self.retire_dead().await {
                gone(&key);
            }
        }
    }

    /// Gives back what each container whose namespace is gone holds: the
    /// registered names whose path no longer leads to their namespace, and
    /// the namespaces served DNS by path (attached without a name) that are
    /// gone. Returns their DNS keys. A container that cannot be given back
    /// now (the coordinator unreachable) is tried again next time.
    pub async fn retire_dead(&self) -> Vec<String> {
        let _one = self.lock.lock().await;
        let mut gone = Vec::new();
        for (name, path, inode) in self.names.seen_names() {
            if alive(&path, inode) {
                continue;
            }
            match self.retire(&name, Some(inode), Some(&name), &[]).await {
                Ok(_) => gone.push(format!("netns:{inode}")),
                Err(e) => {
                    tracing::warn!(container = name, error = %e.message, "cannot give back a container that is gone")
                }
            }
        }
        for (key, path) in self.names.dns_served() {
            let Some(inode) = key.strip_prefix("netns:").and_then(|i| i.parse::<u64>().ok()) else { continue };
            if alive(Path::new(&path), inode) || gone.contains(&key) {
                continue;
            }
            match self.retire(&key, Some(inode), None, &[]).await {
                Ok(_) => gone.push(key),
                Err(e) => {
                    tracing::warn!(container = key, error = %e.message, "cannot give back a container that is gone")
                }
            }
        }
        gone
    }
}
