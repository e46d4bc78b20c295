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
//!
//! A stream lives as long as its client likes, so the credential is checked
//! again while it does, as an admin's map watch is: when this coordinator's
//! admin credential is rotated, and every [`ADMIN_RECHECK`] (rotated through
//! another coordinator of a shared database). One that no longer works ends
//! the stream with the status a new call would get (a stream opened before
//! `weavectl admin rotate` went on answering with the old credential; found
//! by a review, 2026-12-07).
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Frame;
use tonic::{Status, body::Body, server::NamedService};

use crate::api::{ADMIN_RECHECK, Shared};

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

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for AdminOnly<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
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
        let (headers, extensions) = (request.headers().clone(), request.extensions().clone());
        let probe = move || {
            let mut probe = http::Request::new(());
            *probe.headers_mut() = headers.clone();
            *probe.extensions_mut() = extensions.clone();
            tonic::Request::from_http(probe)
        };
        Box::pin(async move {
            match state.admin(&probe()).await {
                Ok(_) => {
                    let ended = Box::pin(revoked(state, probe()));
                    let response = inner.call(request).await?;
                    Ok(response.map(|inner| Body::new(Revocable { inner, ended: Some(ended) })))
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// Resolves, with the status a new call would get, once `probe`'s
/// credential is no longer the admin's (checked again when this
/// coordinator's is rotated and every [`ADMIN_RECHECK`]; a store that does
/// not answer is no verdict).
async fn revoked(state: Shared, probe: tonic::Request<()>) -> Status {
    let mut epoch = state.credentials_epoch.subscribe();
    loop {
        tokio::select! {
            changed = epoch.changed() => {
                if changed.is_err() {
                    // (The coordinator is going: its streams end with it.)
                    std::future::pending::<()>().await;
                }
            }
            _ = tokio::time::sleep(ADMIN_RECHECK) => {}
        }
        match state.admin(&probe).await {
            Err(status) if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                return status;
            }
            _ => {}
        }
    }
}

/// A response body that ends, with trailers carrying a status, when
/// `ended` resolves.
struct Revocable {
    inner: Body,
    ended: Option<BoxFuture<'static, Status>>,
}

impl http_body::Body for Revocable {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let Some(ended) = this.ended.as_mut() else { return Poll::Ready(None) };
        if let Poll::Ready(status) = ended.as_mut().poll(cx) {
            this.ended = None;
            let mut trailers = http::HeaderMap::new();
            return Poll::Ready(Some(status.add_header(&mut trailers).map(|()| Frame::trailers(trailers))));
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            this.ended = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended.is_none() || self.inner.is_end_stream()
    }
}
