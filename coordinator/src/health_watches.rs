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
//!
//! A stop ends every `Watch` (`UNAVAILABLE`), as it ends the map watches:
//! tonic drains connections until their streams end, and one held watch
//! kept a stopped coordinator up, its lock held and its database open, for
//! as long as the client liked (found by a review, 2026-12-07).
use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{FutureExt, future::BoxFuture};
use http_body::Frame;
use tokio::sync::{Semaphore, watch};
use tonic::{body::Body, server::NamedService};

use crate::{
    api::pace::{Source, source_key},
    unread::Held,
};

/// Health `Watch` streams open at once, from every caller together.
pub(crate) const MAX_HEALTH_WATCHES: usize = 256;
/// Health `Watch` streams open at once from one address (an IPv6 /64).
pub(crate) const PER_SOURCE: usize = 4;
const WATCH: &str = "/grpc.health.v1.Health/Watch";

type Sources = Arc<Mutex<HashMap<Option<Source>, usize>>>;

#[derive(Clone)]
pub(crate) struct HealthWatches<S> {
    inner: S,
    room: Arc<Semaphore>,
    sources: Sources,
    /// True once the coordinator stops.
    stopping: watch::Receiver<bool>,
}

impl<S> HealthWatches<S> {
    pub(crate) fn new(inner: S, stopping: watch::Receiver<bool>) -> Self {
        Self { inner, room: Arc::new(Semaphore::new(MAX_HEALTH_WATCHES)), sources: Sources::default(), stopping }
    }
}

/// A response body that ends, with `UNAVAILABLE` in its trailers, once the
/// coordinator stops: between tonic's frames, each whole messages (inside
/// [`Held`], which slices them).
struct UntilStop<B> {
    inner: B,
    stop: Option<BoxFuture<'static, ()>>,
}

impl<B> UntilStop<B> {
    fn new(inner: B, mut stopping: watch::Receiver<bool>) -> Self {
        // A dropped sender is a coordinator gone too.
        let stop = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        Self { inner, stop: Some(stop.boxed()) }
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for UntilStop<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let Some(stop) = this.stop.as_mut() else { return Poll::Ready(None) };
        // The inner stream first: a stop sets NOT_SERVING before it is
        // signalled, and that update goes out before the end.
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if frame.is_pending() && stop.as_mut().poll(cx).is_ready() {
            this.stop = None;
            let mut trailers = http::HeaderMap::new();
            let _ = tonic::Status::unavailable("the coordinator is stopping").add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if let Poll::Ready(None) = frame {
            this.stop = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.stop.is_none()
    }
}

impl<S: NamedService> NamedService for HealthWatches<S> {
    const NAME: &'static str = S::NAME;
}

/// One source's open watch, counted until dropped.
struct SourceSlot {
    sources: Sources,
    source: Option<Source>,
}

impl SourceSlot {
    fn take(sources: &Sources, source: Option<Source>) -> Option<Self> {
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

/// The address a request came from, an IPv6 one as its /64 (as the
/// failed-authentication pacing keys them).
fn source_of<B>(request: &http::Request<B>) -> Option<Source> {
    let mut probe = http::Request::new(());
    *probe.extensions_mut() = request.extensions().clone();
    tonic::Request::from_http(probe).remote_addr().map(|a| source_key(a.ip()))
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
        let stopping = self.stopping.clone();
        Box::pin(async move {
            Ok(future.await?.map(|inner| Body::new(Held::holding(UntilStop::new(inner, stopping), (permit, slot)))))
        })
    }
}
