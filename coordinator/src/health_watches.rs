//! The standard health service's `Watch` streams, bounded for the whole
//! coordinator.
//!
//! Health is served to anyone (load balancers and probes ask without a
//! credential). A `Check` answers and ends; a `Watch` lives until its
//! client closes it, about 5.6 KB of the coordinator's memory each. On a
//! connection that never proved a credential it ends with the connection
//! (`--authenticate-within`), but on one that did (any call with a node's
//! credential) nothing ended or counted them: 64 per connection, 256
//! connections per source, took a coordinator from 22 to 95 MB from one
//! address (found by a review, 2026-12-06), and further with more. Now at
//! most [`MAX_HEALTH_WATCHES`] are open at once; past that a `Watch`
//! answers `RESOURCE_EXHAUSTED` at once, saying to poll `Check`, which
//! nothing limits here. Agents and Kubernetes' gRPC probes use `Check`.
use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::{body::Body, server::NamedService};

/// Health `Watch` streams open at once, from every caller together.
pub(crate) const MAX_HEALTH_WATCHES: usize = 64;
const WATCH: &str = "/grpc.health.v1.Health/Watch";

#[derive(Clone)]
pub(crate) struct HealthWatches<S> {
    inner: S,
    room: Arc<Semaphore>,
}

impl<S> HealthWatches<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, room: Arc::new(Semaphore::new(MAX_HEALTH_WATCHES)) }
    }
}

impl<S: NamedService> NamedService for HealthWatches<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for HealthWatches<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if request.uri().path() != WATCH {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = self.room.clone().try_acquire_owned() else {
            metrics::counter!("weave_rpc_health_watches_refused_total").increment(1);
            return Box::pin(async {
                Ok(tonic::Status::resource_exhausted(format!(
                    "{MAX_HEALTH_WATCHES} health watches are open on this coordinator (at most \
                     {MAX_HEALTH_WATCHES}): poll grpc.health.v1.Health/Check instead"
                ))
                .into_http())
            });
        };
        let future = self.inner.call(request);
        // The room is given back when the stream ends or its client goes.
        Box::pin(async move { Ok(future.await?.map(|b| Body::new(crate::unread::Held::holding(b, permit)))) })
    }
}
