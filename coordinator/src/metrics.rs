//! What the coordinator tells Prometheus and probes (served by
//! `weave_proto::observe` on its own plain-HTTP port, never the gRPC one).
//!
//! Kept as they happen: `weave_rpc_duration_seconds{method,code}` (this
//! module's tower layer around every gRPC service) and `weave_joins_total`
//! (`api/join.rs`). Read at scrape time from the in-memory map, so they cost
//! nothing between scrapes: nodes, subnets, IPs used and usable (Weave Net's
//! `weave_ips`/`weave_max_ips`), DNS entries, the map revision, open watches.
use std::{
    collections::HashSet,
    sync::{Arc, OnceLock, atomic::Ordering},
    task::{Context, Poll},
    time::Instant,
};

use futures::future::BoxFuture;
use ipnet::IpNet;
use prost::Message;
use weave_proto::observe::{Probe, ProbeFuture};

use crate::{api::Shared, ipam};

/// The coordinator's readiness and scrape-time gauges.
pub struct CoordinatorProbe(pub Shared);

impl Probe for CoordinatorProbe {
    fn ready(&self) -> ProbeFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if *self.0.stopping.borrow() {
                return Err("shutting down".into());
            }
            self.0.store.ping().await.map_err(|e| format!("the database does not answer: {e}"))
        })
    }

    fn refresh(&self) -> ProbeFuture<'_, ()> {
        let s = &self.0;
        s.store.with_map(|map| {
            // IPv4 only, as Weave Net's: one IPv6 subnet (a member may add a
            // /48) would make it 10^24 and every used/max ratio zero.
            // Used counts the same subnets as max (IPv6 allocations counted
            // against IPv4 capacity made the ratio climb with no IPv4 use),
            // and the fullest subnet's share is there for an alert: the
            // cluster's ratio hides one small subnet that is full (found by a
            // review, 2026-12-05).
            let mut used: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
            for a in &map.allocations {
                *used.entry(a.subnet_id).or_default() += 1.0;
            }
            let (mut capacity, mut in_use, mut fullest) = (0.0, 0.0, 0.0_f64);
            for (sn, net) in map.subnets.iter().filter_map(|sn| Some((sn, sn.cidr.parse::<IpNet>().ok()?))) {
                if !matches!(net, IpNet::V4(_)) {
                    continue;
                }
                let (max, n) = (ipam::capacity(&net) as f64, used.get(&sn.id).copied().unwrap_or(0.0));
                capacity += max;
                in_use += n;
                if max > 0.0 {
                    fullest = fullest.max(n / max);
                }
            }
            metrics::gauge!("weave_nodes").set(map.nodes.len() as f64);
            metrics::gauge!("weave_subnets").set(map.subnets.len() as f64);
            metrics::gauge!("weave_ips", "state" => "used").set(in_use);
            metrics::gauge!("weave_max_ips").set(capacity);
            metrics::gauge!("weave_subnet_fullest_ratio").set(fullest);
            metrics::gauge!("weave_dns_entries").set(map.dns_records.len() as f64);
            metrics::gauge!("weave_map_revision").set(map.revision as f64);
        });
        metrics::gauge!("weave_watchers").set(f64::from(s.watchers.load(Ordering::Relaxed)));
        let watching = s.watches_by_node.lock().unwrap_or_else(|p| p.into_inner()).len();
        metrics::gauge!("weave_watching_nodes").set(watching as f64);
        Box::pin(async {})
    }
}

/// HELP texts (Prometheus' linter wants one per metric).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    // Descriptions go to the installed recorder: install it first.
    weave_proto::observe::recorder();
    describe_gauge!("weave_nodes", "Nodes (hosts) that joined the cluster.");
    describe_gauge!("weave_subnets", "Subnets defined.");
    describe_gauge!("weave_ips", "Addresses the IPv4 subnets handed out (state used).");
    describe_gauge!("weave_max_ips", "Addresses the IPv4 subnets can hand out in all.");
    describe_gauge!(
        "weave_subnet_fullest_ratio",
        "Share of its addresses the fullest IPv4 subnet has handed out (1: an attach there is refused)."
    );
    describe_gauge!("weave_dns_entries", "DNS records in the cluster domain.");
    describe_gauge!("weave_map_revision", "Revision of the network map.");
    describe_gauge!("weave_watchers", "Map watch streams open (agents, and admins' own).");
    describe_gauge!(
        "weave_watching_nodes",
        "Nodes with a map watch open on this coordinator (summed over the coordinators of a shared store, \
         compare with weave_nodes)."
    );
    describe_gauge!(
        "weave_connected_nodes",
        "Nodes holding a map watch on any coordinator of this store, as the store records it (weavectl node ls's \
         connected; the same on every coordinator of a shared store, compare with weave_nodes)."
    );
    describe_counter!("weave_joins_total", "Successful joins: new nodes and re-joins.");
    describe_counter!(
        "weave_store_commits_total",
        "Write transactions committed (each one fsync; group commit shares one among the writes queued together)."
    );
    describe_counter!(
        "weave_store_commit_failures_total",
        "Write transactions that did not commit (their writes answered an error): a full disk, a lost database."
    );
    describe_counter!(
        "weave_store_committed_writes_total",
        "Writes acknowledged after their batch committed: divided by weave_store_commits_total, the mean batch size."
    );
    describe_counter!(
        "weave_rpc_paced_total",
        "Calls of a node that waited their turn under --node-rate (refused ones answer RESOURCE_EXHAUSTED)."
    );
    describe_counter!(
        "weave_rpc_refused_after_failures_total",
        "Calls refused before any lookup because their source address failed to authenticate too often."
    );
    describe_counter!(
        "weave_rpc_deadline_exceeded_total",
        "RPCs answered DEADLINE_EXCEEDED because they were not answered within --rpc-deadline (the database is not answering)."
    );
    describe_counter!(
        "weave_rpc_requests_unfinished_total",
        "RPCs cut off at --rpc-deadline because their client had not sent the whole request (not the database's doing)."
    );
    describe_counter!(
        "weave_rpc_unread_refused_total",
        "Reads refused because their credential had 16 reads still being answered or sent (a client not reading)."
    );
    describe_counter!(
        "weave_rpc_health_watches_refused_total",
        "Health Watch streams refused: 4 were open from the address, or 256 on the coordinator (poll Check instead)."
    );
    describe_counter!(
        "weave_connections_refused_total",
        "Connections closed as they arrived: the coordinator held its limit of open connections."
    );
    describe_counter!(
        "weave_connections_evicted_total",
        "Connections closed to make room: their source address held more than its share."
    );
    describe_counter!(
        "weave_connections_unauthenticated_closed_total",
        "Connections closed for sending no authenticated call within --authenticate-within."
    );
    describe_counter!(
        "weave_nodes_forgotten_total",
        "Nodes the coordinator removed for holding no map watch for their token's --forget-after."
    );
    // Every counter from 0 at start, so that rate() sees its first event
    // (a series that appears with its first increment has no rate).
    for counter in [
        "weave_store_commits_total",
        "weave_store_commit_failures_total",
        "weave_store_committed_writes_total",
        "weave_rpc_paced_total",
        "weave_rpc_refused_after_failures_total",
        "weave_rpc_deadline_exceeded_total",
        "weave_rpc_requests_unfinished_total",
        "weave_rpc_unread_refused_total",
        "weave_rpc_health_watches_refused_total",
        "weave_connections_refused_total",
        "weave_connections_evicted_total",
        "weave_connections_unauthenticated_closed_total",
        "weave_nodes_forgotten_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    for result in ["new", "rejoin"] {
        metrics::counter!("weave_joins_total", "result" => result).increment(0);
    }
    describe_histogram!(
        "weave_rpc_duration_seconds",
        Unit::Seconds,
        "gRPC call latency until response headers, by method and status code."
    );
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until shutdown.
pub fn spawn(listener: tokio::net::TcpListener, state: Shared, mut stopping: tokio::sync::watch::Receiver<bool>) {
    describe();
    let probe: Arc<dyn Probe> = Arc::new(CoordinatorProbe(state));
    tokio::spawn(weave_proto::observe::serve(listener, probe, async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    }));
}

/// Every method this server serves, as `/package.Service/Method`: read once
/// from the descriptors it registers for reflection.
fn served_methods() -> &'static HashSet<String> {
    static METHODS: OnceLock<HashSet<String>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut out = HashSet::new();
        for bytes in [weave_proto::v1::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            // Both sets are generated at build time; one that does not decode adds nothing.
            let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else { continue };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    for method in &service.method {
                        out.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                    }
                }
            }
        }
        for version in ["v1", "v1alpha"] {
            out.insert(format!("/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"));
        }
        out
    })
}

/// The `method` label: a method this server serves, or "other". Paths come
/// from anyone who can open a TLS connection, before any credential is
/// checked: a made-up one must not create a new series.
fn method_label(path: &str) -> String {
    if served_methods().contains(path) { path.to_string() } else { "other".into() }
}

/// gRPC status code names, as Prometheus users read them.
fn code_label(code: &str) -> &'static str {
    match code.parse::<i32>().map(tonic::Code::from) {
        Ok(tonic::Code::Ok) => "OK",
        Ok(tonic::Code::Cancelled) => "CANCELLED",
        Ok(tonic::Code::InvalidArgument) => "INVALID_ARGUMENT",
        Ok(tonic::Code::DeadlineExceeded) => "DEADLINE_EXCEEDED",
        Ok(tonic::Code::NotFound) => "NOT_FOUND",
        Ok(tonic::Code::AlreadyExists) => "ALREADY_EXISTS",
        Ok(tonic::Code::PermissionDenied) => "PERMISSION_DENIED",
        Ok(tonic::Code::ResourceExhausted) => "RESOURCE_EXHAUSTED",
        Ok(tonic::Code::FailedPrecondition) => "FAILED_PRECONDITION",
        Ok(tonic::Code::Aborted) => "ABORTED",
        Ok(tonic::Code::Unimplemented) => "UNIMPLEMENTED",
        Ok(tonic::Code::Internal) => "INTERNAL",
        Ok(tonic::Code::Unavailable) => "UNAVAILABLE",
        Ok(tonic::Code::Unauthenticated) => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// A tower layer timing every RPC until its response headers, labelled by
/// method and status code. A call that fails before any message carries its
/// status in the headers (gRPC "trailers-only"); a call whose headers carry
/// none went on to stream its answer and counts as OK.
#[derive(Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics(inner)
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S>(S);

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let future = self.0.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => {
                    code_label(response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0"))
                }
                Err(_) => "UNAVAILABLE",
            };
            metrics::histogram!("weave_rpc_duration_seconds", "method" => method, "code" => code)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label("/weave.v1.NodeService/ListNodes"), "/weave.v1.NodeService/ListNodes");
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "/grpc.health.v1.Health/Check");
        assert_eq!(method_label("/evil/x"), "other");
        assert_eq!(method_label("/weave.v1.NodeService/Made_Up"), "other");
        assert_eq!(method_label("/weave.v1.x"), "other");
        assert_eq!(code_label("0"), "OK");
        assert_eq!(code_label("16"), "UNAUTHENTICATED");
        assert_eq!(code_label("junk"), "UNKNOWN");
    }
}
