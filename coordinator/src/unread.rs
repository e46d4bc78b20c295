//! A bound on the answers one credential leaves unread.
//!
//! An answer stays in the coordinator's memory until its client has read it
//! (HTTP/2 flow control: a client that stops reading, or sets its window to
//! zero, stops the send). A member asking for the whole map again and again
//! without reading (GetMap, a list: each up to the map's size) could so pile
//! up gigabytes; nothing else bounds how long an authenticated connection
//! may stay (found by a review, 2026-12-04: 64 streams × 256 connections per
//! source). Here each credential (the secret its `authorization` header
//! carries, as authentication reads it, whoever it turns out to be) has at most
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

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Calls of one credential whose answers are not all sent.
pub(crate) const PER_CREDENTIAL: usize = 16;
/// How long a call past [`PER_CREDENTIAL`] waits for room.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// Shorter is no secret of ours (256 random bits, 43 characters), and is
/// refused at once: `Bearer -` of joins among them.
const MIN_SECRET: usize = 32;
/// The largest piece of an answer handed to HTTP/2 at once. hyper hands h2
/// whatever the body yields once the stream has room for one byte, and h2
/// buffers all of it: a whole map, to a client that opened its window and
/// stopped reading its socket, was buffered with the body (and its room)
/// already finished. In pieces, h2 gives no more room once 400 KiB wait
/// (hyper's default, which tonic does not expose), and the rest of a larger
/// answer stays in its body, holding its room.
const SLICE: usize = 16 * 1024;

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
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    by_secret: HashMap<u64, Arc<Semaphore>>,
    /// The size at which the idle entries are dropped next: twice what the
    /// last pass kept, so a map full of busy entries (made-up secrets whose
    /// requests are held half-sent) costs each call O(1), not a scan.
    prune_at: usize,
}

impl Credentials {
    fn semaphore(&self, secret: &str) -> Arc<Semaphore> {
        let key = self.hasher.hash_one(secret);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.by_secret.len() >= open.prune_at.max(PRUNE_AT) {
            // Idle: no permit out and no call waiting (only the map holds it).
            open.by_secret.retain(|_, s| Arc::strong_count(s) > 1);
            open.prune_at = open.by_secret.len() * 2;
        }
        open.by_secret.entry(key).or_insert_with(|| Arc::new(Semaphore::new(PER_CREDENTIAL))).clone()
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
        // Keyed by the secret as authentication reads it: one credential
        // spelt several ways (an admin credential's form around a node's
        // secret) is one key.
        let secret = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .filter(|_| is_read(request.uri().path()))
            .and_then(|h| crate::api::bearer_secret(h.as_bytes()))
            .filter(|s| s.len() >= MIN_SECRET);
        let semaphore = secret.map(|s| self.credentials.semaphore(&s));
        // The inner service was made ready for this call: call it now, and
        // (for a counted read) only poll its future once there is room.
        let future = self.inner.call(request);
        let Some(semaphore) = semaphore else {
            return Box::pin(async move { Ok(future.await?.map(Held::new)) });
        };
        Box::pin(async move {
            let Ok(Ok(permit)) = tokio::time::timeout(WAIT, semaphore.acquire_owned()).await else {
                metrics::counter!("weave_rpc_unread_refused_total").increment(1);
                return Ok(tonic::Status::resource_exhausted(format!(
                    "{PER_CREDENTIAL} reads by this credential are still being answered or sent (is its client \
                     reading them?); read them or close the connection"
                ))
                .into_http::<ResBody>()
                .map(Held::new));
            };
            Ok(future.await?.map(|inner| Held::holding(inner, permit)))
        })
    }
}

/// An answer's body, handed out in pieces of at most [`SLICE`] bytes,
/// holding its room (`G`: its credential's permit here; a health watch's
/// permit and source slot, `health_watches`) until the last byte, or until
/// it is dropped.
pub(crate) struct Held<B, G = OwnedSemaphorePermit> {
    inner: B,
    pending: Bytes,
    permit: Option<G>,
}

impl<B, G> Held<B, G> {
    fn new(inner: B) -> Self {
        Held { inner, pending: Bytes::new(), permit: None }
    }

    /// `inner`, holding `permit` until its last byte (or until it is dropped).
    pub(crate) fn holding(inner: B, permit: G) -> Self {
        Held { permit: Some(permit), ..Held::new(inner) }
    }
}

impl<B: Default, G> Default for Held<B, G> {
    fn default() -> Self {
        Held::new(B::default())
    }
}

impl<B: Body<Data = Bytes> + Unpin, G: Unpin> Body for Held<B, G> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let piece = this.pending.split_to(this.pending.len().min(SLICE));
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) if data.len() > SLICE => {
                    this.pending = data.split_off(SLICE);
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
            Poll::Ready(None) => {
                this.permit = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let pending = self.pending.len() as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + pending);
        }
        hint.set_lower(inner.lower() + pending);
        hint
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

    /// A node's secret inside an admin credential's form (any address and
    /// pin around it) authenticates as the node: it is the same key here.
    #[test]
    fn one_secret_is_one_key_however_it_is_spelt() {
        let secret = "s".repeat(43);
        let pin = weave_proto::token::Pin([1; 32]);
        let admin =
            weave_proto::token::AdminCredential { coordinator: "192.0.2.1:6783".into(), pin, secret: secret.clone() };
        let read = |h: String| crate::api::bearer_secret(h.as_bytes());
        assert_eq!(read(format!("Bearer {admin}")), Some(secret.clone()));
        assert_eq!(read(format!("Bearer {secret}")), Some(secret));
        assert_eq!(read("Basic abc".into()), None);
    }

    #[test]
    fn idle_credentials_are_dropped_and_busy_ones_kept() {
        let c = Credentials::default();
        let busy = c.semaphore("busy").try_acquire_owned().unwrap();
        for i in 1..PRUNE_AT {
            c.semaphore(&i.to_string());
        }
        assert_eq!(c.open.lock().unwrap().by_secret.len(), PRUNE_AT);
        // The next lookup prunes: only the one with a permit out stays, and the new one.
        c.semaphore("new");
        assert_eq!(c.open.lock().unwrap().by_secret.len(), 2);
        assert_eq!(c.semaphore("busy").available_permits(), PER_CREDENTIAL - 1);
        drop(busy);
        // Busy entries are not scanned again until there are twice as many.
        let held: Vec<_> = (0..PRUNE_AT).map(|i| c.semaphore(&format!("h{i}")).try_acquire_owned().unwrap()).collect();
        let len = c.open.lock().unwrap().by_secret.len();
        c.semaphore("one more");
        let open = c.open.lock().unwrap();
        assert!(
            open.by_secret.len() == len + 1 && open.prune_at >= PRUNE_AT,
            "{} {}",
            open.by_secret.len(),
            open.prune_at
        );
        drop(open);
        drop(held);
    }

    /// An answer larger than [`SLICE`] is handed out in pieces; the room is
    /// held until the body has given its last frame.
    #[tokio::test]
    async fn an_answer_goes_in_pieces_and_holds_its_room_to_the_end() {
        use http_body_util::BodyExt;
        let semaphore = Arc::new(Semaphore::new(1));
        let answer = Bytes::from(vec![7u8; 3 * SLICE + 5]);
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(answer.clone())),
            Ok(Frame::trailers(Default::default())),
        ];
        let inner = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let mut body = Held { permit: Some(semaphore.clone().try_acquire_owned().unwrap()), ..Held::new(inner) };
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            assert_eq!(semaphore.available_permits(), 0, "the room went before the last frame");
            match frame.unwrap().into_data() {
                Ok(d) => {
                    sizes.push(d.len());
                    got.extend_from_slice(&d);
                }
                Err(f) => assert!(f.is_trailers()),
            }
        }
        assert_eq!(sizes, [SLICE, SLICE, SLICE, 5]);
        assert_eq!(got, answer);
        assert_eq!(semaphore.available_permits(), 1, "the room is back once the body ended");
    }
}
