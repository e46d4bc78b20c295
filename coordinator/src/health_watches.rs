//! The standard health service's `Watch` streams, bounded per source
//! address and for the whole coordinator.
//!
//! Health is served to anyone (load balancers and probes ask without a
//! credential). A `Check` answers and ends; a `Watch` lives until its
//! client closes it, about 5.6 KB of the coordinator's memory each. On a
//! connection that never proved a credential it ends with the connection
//! (`--authenticate-within`), but on one that did (any call with a node's
//! credential) nothing ended or counted them: 64 per connection, 256
//! connections per source, took a coordinator from 22 to 95 MB from one
//! address (found by a review, 2026-12-06), and further with more. Now at
//! most [`PER_SOURCE`] are open from one address (an IPv6 /64), so that
//! one source cannot take them all, and [`MAX_HEALTH_WATCHES`] in all; past
//! either a `Watch` answers `RESOURCE_EXHAUSTED` at once, saying to poll
//! `Check`, which nothing limits here. Agents and Kubernetes' gRPC probes
//! use `Check`.
use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{body::Body, server::NamedService};

/// Health `Watch` streams open at once, from every caller together.
pub(crate) const MAX_HEALTH_WATCHES: usize = 256;
/// Health `Watch` streams open at once from one address (an IPv6 /64).
pub(crate) const PER_SOURCE: usize = 4;
const WATCH: &str = "/grpc.health.v1.Health/Watch";

type Sources = Arc<Mutex<HashMap<IpAddr, usize>>>;

#[derive(Clone)]
pub(crate) struct HealthWatches<S> {
    inner: S,
    room: Arc<Semaphore>,
    sources: Sources,
}

impl<S> HealthWatches<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, room: Arc::new(Semaphore::new(MAX_HEALTH_WATCHES)), sources: Sources::default() }
    }
}

impl<S: NamedService> NamedService for HealthWatches<S> {
    const NAME: &'static str = S::NAME;
}

/// One source's open watch, counted until dropped.
struct SourceSlot {
    sources: Sources,
    source: IpAddr,
}

impl SourceSlot {
    fn take(sources: &Sources, source: IpAddr) -> Option<Self> {
        let mut open = sources.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(source).or_default();
        if *count >= PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(Self { sources: sources.clone(), source })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// A watch's answer, holding its room until it ends or its client goes.
struct Guarded {
    inner: Body,
    _room: (OwnedSemaphorePermit, SourceSlot),
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The address a request came from, an IPv6 one as its /64.
fn source_of<B>(request: &http::Request<B>) -> IpAddr {
    let mut probe = http::Request::new(());
    *probe.extensions_mut() = request.extensions().clone();
    match tonic::Request::from_http(probe).remote_addr().map(|a| a.ip().to_canonical()) {
        Some(IpAddr::V6(v6)) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        Some(v4) => v4,
        None => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

fn refused(why: String) -> BoxFuture<'static, Result<http::Response<Body>, std::convert::Infallible>> {
    metrics::counter!("weave_rpc_health_watches_refused_total").increment(1);
    Box::pin(async move {
        Ok(tonic::Status::resource_exhausted(format!("{why}: poll grpc.health.v1.Health/Check instead")).into_http())
    })
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for HealthWatches<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<Body>, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if request.uri().path() != WATCH {
            return Box::pin(self.inner.call(request));
        }
        let Some(slot) = SourceSlot::take(&self.sources, source_of(&request)) else {
            return refused(format!("{PER_SOURCE} health watches are open from this address (at most {PER_SOURCE})"));
        };
        let Ok(permit) = self.room.clone().try_acquire_owned() else {
            return refused(format!(
                "{MAX_HEALTH_WATCHES} health watches are open on this coordinator (at most {MAX_HEALTH_WATCHES})"
            ));
        };
        let future = self.inner.call(request);
        Box::pin(async move { Ok(future.await?.map(|inner| Body::new(Guarded { inner, _room: (permit, slot) }))) })
    }
}
