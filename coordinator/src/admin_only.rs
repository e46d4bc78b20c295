//! Server reflection for the admin only, checked before the reflection
//! service sees the call.
//!
//! Served to anyone, reflection was the one service where a caller that
//! never joined got much for little: each 26-byte `file_containing_symbol`
//! request on a `ServerReflectionInfo` stream answers ~4 KB, and a client
//! that never reads lets those answers pile up in the stream's send buffer
//! (~400 KB each, a setting tonic does not expose). 64 such streams on each
//! of 48 connections from one address took a coordinator from 237 MB to
//! 1.6 GB in 3 s (found by a review, 2026-12-03). Now such a call answers
//! UNAUTHENTICATED without any reflection work, as every weave service does;
//! grpcurl and Python's grpcio-reflection pass the same `authorization`
//! header they pass to any other call. A node's credential gets
//! PERMISSION_DENIED: agents never need reflection, and a member could
//! otherwise do the same (its `--node-rate` is charged once per stream, and
//! a stream lives as long as it likes). A call that proves a credential here
//! marks its connection authenticated, as other calls do. Health stays open
//! (load balancers and probes ask it without a credential; its answers are a
//! few bytes).
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::server::NamedService;

use crate::api::Shared;

#[derive(Clone)]
pub(crate) struct AdminOnly<S> {
    inner: S,
    state: Shared,
}

impl<S> AdminOnly<S> {
    pub(crate) fn new(inner: S, state: Shared) -> Self {
        Self { inner, state }
    }
}

impl<S: NamedService> NamedService for AdminOnly<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AdminOnly<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The service that was polled ready serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let mut probe = http::Request::new(());
            *probe.headers_mut() = request.headers().clone();
            *probe.extensions_mut() = request.extensions().clone();
            match state.admin(&tonic::Request::from_http(probe)).await {
                Ok(_) => inner.call(request).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
