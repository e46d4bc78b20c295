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
use std::{
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;

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

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Deadline<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let future = self.inner.call(request);
        let Some(limit) = self.limit else {
            return Box::pin(future);
        };
        Box::pin(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(answer) => answer,
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
