//! Endpoints Docker removed while the agent could not hear it (the agent
//! down or restarting during a `docker rm -f`, `docker network disconnect`):
//! Docker gave up its Leave, DeleteEndpoint and ReleaseAddress after its
//! retries, and the address, the DNS name, the veth and the endpoint's
//! record stayed for good, the name answering with a dead address (found by
//! a review, 2026-12-05). Docker's own list of each network's endpoints is
//! the truth: one the agent holds that Docker does not list, twice in a
//! row, goes as those calls would have taken it. And a listed one whose
//! container's name or aliases do not resolve to it is named again
//! ([`Plugin::name_again`]).
use std::{collections::BTreeSet, sync::Arc, time::Duration};

use ipnet::Ipv4Net;

use super::{Plugin, engine};
use crate::{
    host::docker::Endpoint,
    plan::docker::{EndpointRequest, RequestAddress, endpoint_ids},
};

/// Between looks. An endpoint is taken for gone when two looks this far
/// apart miss it (Docker lists one from its creation; the second look spares
/// one the first caught in a change).
const SWEEP: Duration = Duration::from_secs(10);

impl Plugin {
    /// Runs until aborted: every [`SWEEP`], [`Self::sweep_once`].
    pub async fn sweep_every(self: Arc<Self>) {
        self.rescope_all();
        // Joins whose follow-up (weave DNS in the container, its name) an
        // agent killed after the Join did not finish: done now. They stayed
        // without both for good (found by a review, 2026-12-05).
        // One after another: two endpoints of one container would both
        // find its resolver not yet served and both bind it (review).
        let unfinished: Vec<_> = self.state.endpoints().into_iter().filter(|(_, e)| e.sandbox.is_empty()).collect();
        let plugin = self.clone();
        tokio::spawn(async move {
            for (id, ep) in unfinished {
                if let (false, Ok(a)) = (ep.sandbox_path.is_empty(), ep.address.parse::<Ipv4Net>()) {
                    plugin.clone().after_join(ep.network.clone(), id, ep.sandbox_path.clone(), a.addr()).await;
                }
            }
        });
        let mut every = tokio::time::interval(SWEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut missing = BTreeSet::new();
        loop {
            every.tick().await;
            missing = self.sweep_once(&missing).await;
        }
    }

    /// Records which daemon shows network `id` as soon as it does (Docker
    /// lists a network once its CreateNetwork is answered), not at the next
    /// sweep up to 10 s later: an agent stopped before that sweep took a
    /// network removed meanwhile for one Docker never showed, and left it
    /// for good, its gateway address held and a network on its subnet
    /// refused (found by a review, 2026-12-06). Up to 5 s.
    pub(super) async fn note_shown(self: Arc<Self>, id: String) {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if self.state.network(&id).is_none() {
                return;
            }
            if let (Ok(daemon), Ok(Some(_))) =
                (engine::daemon_id(&self.docker_host).await, engine::network(&self.docker_host, &id).await)
            {
                self.state.saw_network(&id, &daemon);
                return;
            }
        }
    }

    /// Takes down each endpoint Docker does not list now and did not list
    /// last time, and each network Docker showed before and answers 404 for
    /// now and last time (`last`: the ids, endpoints' and networks', missing
    /// last time); returns those missing now. Docker that does not answer
    /// for a network: nothing of that network goes.
    async fn sweep_once(&self, last: &BTreeSet<String>) -> BTreeSet<String> {
        let mut missing = BTreeSet::new();
        let endpoints = self.state.endpoints();
        self.rescope_all();
        let daemon = engine::daemon_id(&self.docker_host).await.ok();
        for (network, known) in self.state.networks() {
            let shown = match engine::network(&self.docker_host, &network).await {
                Ok(Some(shown)) => shown,
                // A network Docker does not know (404) is no word on its
                // endpoints unless Docker showed it before: a
                // `--docker-host` that is another daemon than the plugin's
                // says so of every network, and would take every container
                // down (found by a review, 2026-12-05). One it showed was
                // removed (`docker network rm`, Compose's `down`) while the
                // agent was not listening: its endpoints, names, addresses
                // and gateway stayed for good, and a network on its subnet
                // was refused (found by the next review).
                Ok(None) if daemon.as_ref().is_some_and(|d| *d == known.seen_by) && last.contains(&network) => {
                    self.take_down_network(&network, &endpoints, false).await;
                    continue;
                }
                Ok(None) => {
                    missing.insert(network);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(network, error = e, "cannot list a Docker network's endpoints");
                    continue;
                }
            };
            if let Some(daemon) = &daemon {
                self.state.saw_network(&network, daemon);
            }
            let listed = endpoint_ids(&shown);
            self.name_again(&shown, endpoints.iter().filter(|(id, e)| e.network == network && listed.contains(id)))
                .await;
            for (id, ep) in endpoints.iter().filter(|(id, e)| e.network == network && !listed.contains(id)) {
                if !last.contains(id) {
                    missing.insert(id.clone());
                    continue;
                }
                self.take_down_endpoint(id, ep, &endpoints).await;
            }
        }
        missing
    }

    /// Network `network` and its endpoints, as Docker's calls would have
    /// taken them (Leave, DeleteEndpoint, ReleaseAddress, DeleteNetwork);
    /// with `replaced`, a network on its subnet is being made now and has
    /// this host's gateway address there (Docker asked for it before the
    /// CreateNetwork, and got the one held): it stays.
    pub(super) async fn take_down_network(&self, network: &str, endpoints: &[(String, Endpoint)], replaced: bool) {
        for (id, ep) in endpoints.iter().filter(|(_, e)| e.network == network) {
            self.take_down_endpoint(id, ep, endpoints).await;
        }
        if replaced {
            self.state.remove_network(network);
            tracing::info!(
                network,
                "a Docker network Docker no longer has (removed while the agent was not listening): forgotten"
            );
            return;
        }
        // The last network on its subnet (none being made there: not
        // `replaced`): its `--aux-address` reservations go too, which
        // Docker's ReleaseAddress would have freed and nothing records.
        let cidr = self.state.network(network).map(|n| n.cidr);
        let req = EndpointRequest { network_id: network.to_string(), ..Default::default() };
        let deleted = self.delete_network(&req).await;
        if let Some(cidr) = cidr.filter(|c| deleted.is_ok() && self.state.networks_on(c) == 0)
            && let Err(e) = self.release_leftovers(&cidr).await
        {
            tracing::warn!(network, error = ?e, "cannot release a removed Docker network's --aux-address reservations");
        }
        match deleted {
            Ok(_) => tracing::info!(
                network,
                "a Docker network Docker no longer has (removed while the agent was not listening): taken down"
            ),
            Err(e) => tracing::warn!(network, error = ?e, "cannot take down a removed Docker network"),
        }
    }

    /// One endpoint, as Docker's Leave, DeleteEndpoint and ReleaseAddress
    /// would have taken it.
    async fn take_down_endpoint(&self, id: &str, ep: &Endpoint, endpoints: &[(String, Endpoint)]) {
        let req = EndpointRequest {
            network_id: ep.network.clone(),
            endpoint_id: id.to_string(),
            interface: None,
            sandbox_key: String::new(),
        };
        let _ = self.leave(&req).await;
        let _ = self.delete_endpoint(&req).await;
        // Docker names an address only: one another endpoint here
        // holds now (Docker's own late ReleaseAddress freed it, and
        // it went to a new container) is that one's.
        let shared = endpoints.iter().any(|(other, e)| other != id && e.address == ep.address);
        let released = match ep.address.parse::<Ipv4Net>() {
            Ok(_) if shared => Ok(()),
            Ok(a) => {
                let pool =
                    RequestAddress { pool_id: a.trunc().to_string(), address: a.addr().to_string(), options: None };
                self.release_address(&pool).await.map(drop).map_err(|e| format!("{e:?}"))
            }
            Err(_) => Ok(()),
        };
        match released {
            Ok(()) => tracing::info!(
                endpoint = id,
                address = ep.address,
                "a Docker endpoint Docker no longer has (removed while the agent was not listening): taken down"
            ),
            // Its record is gone: the address waits for the admin.
            Err(e) => tracing::warn!(endpoint = id, error = e, "cannot release a removed Docker endpoint's address"),
        }
    }
}
