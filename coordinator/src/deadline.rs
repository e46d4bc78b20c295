//! A bound on how long one RPC may wait for an answer (`--rpc-deadline`).
//!
//! A database that stops answering without closing its connections (a
//! frozen server, a partition that drops packets) leaves a statement
//! already sent waiting until TCP gives up, ~15 minutes, and sqlx has no
//! client-side statement timeout; every write queued behind it would wait
//! as long and its caller would get no answer at all. With this layer a
//! call whose handler has not answered within the deadline answers
//! `DEADLINE_EXCEEDED` instead (not `UNAVAILABLE`, which clients retry at
//! once, ten times: a CNI ADD would then wait ten deadlines), and a write
//! cut off this way may or may not have been applied, as for a connection
//! cut at COMMIT. The handler's future is dropped; the store's group commit
//! leaves such a write either whole in its batch or not at all
//! (`store/batch.rs`). A watch stream is bounded only until its first answer
//! (the handler returns the stream), never afterwards.
//!
//! A call whose request the client never finished sending is answered the
//! same way, but said to be the client's: any credential could hold its
//! requests half-sent and set off the "store not answering" warning and
//! alert (`weave_rpc_deadline_exceeded_total`) at will (found by a review,
//! 2026-12-07). It counts in `weave_rpc_requests_unfinished_total`.
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Frame;
use tonic::body::Body;

#[derive(Clone, Copy)]
pub(crate) struct DeadlineLayer(pub Option<Duration>);

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner, limit: self.0 }
    }
}

#[derive(Clone)]
pub(crate) struct Deadline<S> {
    inner: S,
    limit: Option<Duration>,
}

/// A request body that says when it has all arrived (its end, or its trailers).
struct Arrived {
    inner: Body,
    all: Arc<AtomicBool>,
}

impl http_body::Body for Arrived {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(&frame, Poll::Ready(None)) || matches!(&frame, Poll::Ready(Some(Ok(f))) if f.is_trailers()) {
            self.all.store(true, Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.all.store(true, Ordering::Relaxed);
        }
        end
    }
}

impl<S, ResBody> tower::Service<http::Request<Body>> for Deadline<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(limit) = self.limit else {
            return Box::pin(self.inner.call(request));
        };
        let all = Arc::new(AtomicBool::new(false));
        let request = request.map(|inner| Body::new(Arrived { inner, all: all.clone() }));
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(answer) => answer,
                Err(_) if !all.load(Ordering::Relaxed) => {
                    tracing::debug!(after = ?limit, "a request not sent whole within --rpc-deadline: cut off");
                    metrics::counter!("weave_rpc_requests_unfinished_total").increment(1);
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "the request did not arrive whole within {}s (--rpc-deadline)",
                        limit.as_secs()
                    ))
                    .into_http())
                }
                Err(_) => {
                    tracing::warn!(after = ?limit, "an RPC was not answered within --rpc-deadline: the store is not answering");
                    metrics::counter!("weave_rpc_deadline_exceeded_total").increment(1);
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "the coordinator did not answer within {}s (--rpc-deadline): its database is not answering; \
                         the call may or may not have been applied",
                        limit.as_secs()
                    ))
                    .into_http())
                }
            }
        })
    }
}
