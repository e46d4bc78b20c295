//! DNS names a CNI ADD left out (another node's container holds the name,
//! or it is kept for one just released): registered for the container once
//! free. The pod took its name only at its next ADD, a restart; a name kept
//! by `--dns-name-hold` refused the whole ADD, and a pod moved to another
//! host started only once the hold ended (podman's container not at all;
//! found by a review, 2026-12-06).
use std::time::Duration;

use weave_proto::v1::AddRecordRequest;

use super::Attacher;

/// One registration's limit: the sweep holds the attach lock meanwhile.
const CALL: Duration = Duration::from_secs(2);

impl Attacher {
    /// Registers each left-out name for the addresses its container holds
    /// (owned by their allocations: released with them); forgets those
    /// whose container holds nothing any more. Under the attach lock, so
    /// that the address is still that container's.
    pub async fn register_left_out_names(&self) {
        let pending = self.names.left_out();
        if pending.is_empty() {
            return;
        }
        let _one = self.lock.lock().await;
        for (key, name) in pending {
            let held = self.held(&key);
            if held.is_empty() {
                self.names.set_left_out(&key, None);
                continue;
            }
            let mut registered = true;
            for address in held.values() {
                let address = address.split('/').next().unwrap_or_default().to_string();
                let req = AddRecordRequest { name: name.clone(), address: address.clone() };
                let mut dns = self.api.dns.clone();
                match tokio::time::timeout(CALL, dns.add_record(req)).await {
                    Ok(Ok(_)) => {
                        tracing::info!(container = key, name, address, "registered a DNS name left out at its ADD")
                    }
                    Ok(Err(s))
                        if s.code() == tonic::Code::AlreadyExists && s.message().contains("already resolves") => {}
                    Ok(Err(s)) => {
                        tracing::debug!(
                            container = key,
                            name,
                            error = s.message(),
                            "a left-out DNS name is not free yet"
                        );
                        registered = false;
                    }
                    Err(_) => registered = false,
                }
            }
            if registered {
                self.names.set_left_out(&key, None);
            }
        }
    }
}
