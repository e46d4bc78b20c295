//! The subnets an attach began on, recorded before it allocates and
//! forgotten when it ends either way: what is left names an attach its
//! agent was killed in (`daemon/attach/unplugged.rs` gives back what such a
//! one holds that no port carries). Only those: an address `agent allocate`
//! gave under an attached container's name, plugged by hand, has no port
//! either, and was given back (found by a review, 2026-12-07).
use std::collections::BTreeSet;

use super::Registry;

impl Registry {
    /// An attach of `key` begins on `subnets` (CIDRs).
    pub fn attach_began(&self, key: &str, subnets: &[String]) {
        let mut saved = self.saved();
        let entry = saved.attaching.entry(key.to_string()).or_default();
        let before = entry.len();
        entry.extend(subnets.iter().cloned());
        if entry.len() != before {
            self.write(&saved);
        }
    }

    /// The attach of `key` on `subnets` ended (done or undone), or the
    /// sweep settled them.
    pub fn attach_ended(&self, key: &str, subnets: &[String]) {
        let mut saved = self.saved();
        let Some(entry) = saved.attaching.get_mut(key) else { return };
        let before = entry.len();
        entry.retain(|s| !subnets.contains(s));
        let changed = entry.len() != before;
        if entry.is_empty() {
            saved.attaching.remove(key);
        }
        if changed {
            self.write(&saved);
        }
    }

    /// What is recorded is on disk, written again now if a write failed;
    /// else why not (the error's kind, and a sentence naming the file).
    pub fn on_disk(&self) -> Result<(), (std::io::ErrorKind, String)> {
        if !self.unsaved.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let saved = self.saved();
        self.write_result(&saved).map_err(|e| super::super::state::not_recorded(&self.file, &e))
    }

    /// The attaches begun and not ended: IPAM key -> subnets.
    pub fn attaching(&self) -> Vec<(String, BTreeSet<String>)> {
        self.saved().attaching.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_attach_is_recorded_until_it_ends_and_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let r = super::Registry::load(dir.path());
        let subnets = ["10.32.0.0/16".to_string(), "10.40.0.0/24".to_string()];
        r.attach_began("web", &subnets);
        r.attach_ended("web", &subnets[..1]);
        let again = super::Registry::load(dir.path());
        assert_eq!(again.attaching(), [("web".to_string(), [subnets[1].clone()].into())]);
        again.attach_ended("web", &subnets[1..]);
        assert!(super::Registry::load(dir.path()).attaching().is_empty());
    }
}
