//! A bound on the answers one credential leaves unread.
//!
//! An answer stays in the coordinator's memory until its client has read it
//! (HTTP/2 flow control: a client that stops reading, or sets its window to
//! zero, stops the send). A member asking for the whole map again and again
//! without reading (GetMap, a list, a join's answer: each up to the map's
//! size) could so pile up gigabytes; nothing else bounds how long an
//! authenticated connection may stay (found by a review, 2026-12-04: 64
//! streams × 256 connections per source). Here each credential (the
//! `authorization` header, whoever it turns out to be) has at most
//! [`PER_CREDENTIAL`] reads between the request and the last byte of the
//! answer; a read past that waits up to [`WAIT`] for one to finish, then
//! answers `RESOURCE_EXHAUSTED`. Only reads are counted (see [`is_read`]).
//! Anyone may send a made-up credential: it only bounds that credential's
//! own calls.
use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Calls of one credential whose answers are not all sent.
pub(crate) const PER_CREDENTIAL: usize = 16;
/// How long a call past [`PER_CREDENTIAL`] waits for room.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// `Bearer ` and 32 characters: shorter is no credential of ours (a
/// credential's secret is 256 random bits), and is refused at once.
const MIN_CREDENTIAL: usize = 39;

/// The calls counted: weave's reads (`Get…`, `List…`, `Lookup`), whose answers
/// may be as large as the map, and which change nothing (a refused one is
/// simply asked again). Not the Watch stream (four per credential), not
/// joins (their callers have no credential yet and all send `Bearer -`: one
/// bound for every join of the cluster, which anyone could fill), and not
/// writes, whose answers are small (a connection holds at most 64 streams).
fn is_read(path: &str) -> bool {
    let Some((service, method)) = path.strip_prefix("/weave.v1.").and_then(|p| p.split_once('/')) else {
        return false;
    };
    service != "JoinService" && (method.starts_with("Get") || method.starts_with("List") || method == "Lookup")
}

/// Entries kept before the idle ones are dropped.
const PRUNE_AT: usize = 1024;

#[derive(Clone, Default)]
pub(crate) struct UnreadLayer(Arc<Credentials>);

#[derive(Default)]
struct Credentials {
    hasher: RandomState,
    open: Mutex<HashMap<u64, Arc<Semaphore>>>,
}

impl Credentials {
    fn semaphore(&self, credential: &[u8]) -> Arc<Semaphore> {
        let key = self.hasher.hash_one(credential);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= PRUNE_AT {
            // Idle: no permit out and no call waiting (only the map holds it).
            open.retain(|_, s| Arc::strong_count(s) > 1);
        }
        open.entry(key).or_insert_with(|| Arc::new(Semaphore::new(PER_CREDENTIAL))).clone()
    }
}

impl<S> tower::Layer<S> for UnreadLayer {
    type Service = Unread<S>;
    fn layer(&self, inner: S) -> Unread<S> {
        Unread { inner, credentials: self.0.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct Unread<S> {
    inner: S,
    credentials: Arc<Credentials>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Unread<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<Held<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let counted = is_read(request.uri().path());
        let semaphore = match request.headers().get(http::header::AUTHORIZATION) {
            Some(credential) if counted && credential.len() >= MIN_CREDENTIAL => {
                Some(self.credentials.semaphore(credential.as_bytes()))
            }
            _ => None,
        };
        let Some(semaphore) = semaphore else {
            let future = self.inner.call(request);
            return Box::pin(async move { Ok(future.await?.map(|inner| Held { inner, _permit: None })) });
        };
        // The inner service was made ready for this call: call it now, and
        // only poll its future once there is room.
        let future = self.inner.call(request);
        Box::pin(async move {
            let Ok(Ok(permit)) = tokio::time::timeout(WAIT, semaphore.acquire_owned()).await else {
                metrics::counter!("weave_rpc_unread_refused_total").increment(1);
                return Ok(tonic::Status::resource_exhausted(format!(
                    "{PER_CREDENTIAL} reads by this credential are still being answered or sent (is its client \
                     reading them?); read them or close the connection"
                ))
                .into_http::<ResBody>()
                .map(|inner| Held { inner, _permit: None }));
            };
            Ok(future.await?.map(|inner| Held { inner, _permit: Some(permit) }))
        })
    }
}

/// An answer's body, holding its credential's room until it is sent (or dropped).
pub(crate) struct Held<B> {
    inner: B,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<B: Default> Default for Held<B> {
    fn default() -> Self {
        Held { inner: B::default(), _permit: None }
    }
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this._permit = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_counted_and_the_rest_is_not() {
        for read in
            ["/weave.v1.MapService/GetMap", "/weave.v1.IpamService/ListAllocations", "/weave.v1.DnsService/Lookup"]
        {
            assert!(is_read(read), "{read}");
        }
        for other in [
            "/weave.v1.MapService/Watch",
            "/weave.v1.JoinService/Join",
            "/weave.v1.IpamService/Allocate",
            "/grpc.health.v1.Health/Check",
            "/weave.v1.GetMap",
            "/evil/ListX",
        ] {
            assert!(!is_read(other), "{other}");
        }
    }

    #[test]
    fn idle_credentials_are_dropped_and_busy_ones_kept() {
        let c = Credentials::default();
        let busy = c.semaphore(b"Bearer busy").try_acquire_owned().unwrap();
        for i in 1..PRUNE_AT {
            c.semaphore(format!("Bearer {i}").as_bytes());
        }
        assert_eq!(c.open.lock().unwrap().len(), PRUNE_AT);
        // The next lookup prunes: only the one with a permit out stays, and the new one.
        c.semaphore(b"Bearer new");
        assert_eq!(c.open.lock().unwrap().len(), 2);
        assert_eq!(c.semaphore(b"Bearer busy").available_permits(), PER_CREDENTIAL - 1);
        drop(busy);
    }
}
