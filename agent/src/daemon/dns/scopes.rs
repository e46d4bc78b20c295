//! Which scopes each served namespace's lookups try first
//! (`plan::dns::scoped`): the weave subnets of a Docker container's
//! networks, whose aliases are theirs alone, as Docker's are.
use std::sync::Arc;

use super::{DnsServer, limits::Scopes};

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
}
