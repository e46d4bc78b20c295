//! The TCP accept loop's error policy, and its limits on connections held
//! ([`limited`]). The error policy: tonic ends `serve` on an accept error
//! it does not know (EMFILE, ENFILE, ENOBUFS), and retrying at once only
//! spins: when the process is out of file descriptors, nothing but closing
//! some helps. So such errors are logged and retried after a pause, during
//! which established connections (and the handshake timeout) free some.
mod held;

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use held::{Ends, Evicted, Held, Slot};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long accepting pauses after an error that is not one connection's.
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// Errors that concern only the connection being accepted: retry at once.
fn connection_only(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// `incoming` without its errors: each is retried, after [`BACKOFF`] unless
/// it concerned only one connection. Ends when `incoming` ends.
pub(crate) fn backing_off<T>(
    incoming: impl Stream<Item = io::Result<T>> + Send + Unpin + 'static,
) -> impl Stream<Item = io::Result<T>> + Send + 'static
where
    T: Send + 'static,
{
    futures::stream::unfold(incoming, |mut incoming| async move {
        loop {
            match incoming.next().await? {
                Ok(conn) => return Some((Ok(conn), incoming)),
                Err(e) if connection_only(&e) => tracing::debug!(error = %e, "accept: connection error"),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed (out of file descriptors?); pausing before the next");
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
    })
}

/// Connections held at once: per source address, per IPv6 /64 (one host
/// may hold a whole /64: 16 times the per-address limit), and in all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub per_source: usize,
    pub per_net: usize,
    pub total: usize,
    /// Of `total`, those that have not proved a credential yet.
    pub unproven: usize,
    /// How long a connection may stay open without proving a credential.
    pub authenticate_within: Duration,
}

impl Limits {
    /// `per_source` (None: no limit), and in all `total` or (None, or more
    /// than that) the process's open-file limit less 256 (for the database
    /// and the data dir) and what the metrics port may hold, after raising that limit to its
    /// hard maximum: tonic keeps accepting, and a flood of idle connections
    /// from anywhere would otherwise take every descriptor (then agents,
    /// weavectl and the database's own connections fail while the tunnels
    /// go on).
    pub(crate) fn for_process(per_source: Option<u32>, total: Option<u32>, unproven: Option<u32>) -> Limits {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        let soft = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft };
        // Kept back: 256 for the database, the data dir and the like, and
        // what the metrics port may hold.
        let reserved = 256 + weave_proto::observe::MAX_CONNECTIONS;
        let files = usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(reserved).max(16);
        let per_source = per_source.map_or(usize::MAX, |n| n as usize);
        let total = total.map_or(files, |n| (n as usize).clamp(1, files));
        let unproven = unproven.map_or(total, |n| (n as usize).min(total));
        let per_net = per_source.saturating_mul(16);
        Limits { per_source, per_net, total, unproven, authenticate_within: AUTHENTICATE_WITHIN }
    }
}

/// The connections held, shared by the accept loop, its streams and the
/// services (which mark a connection once a call on it proves a credential).
#[derive(Debug, Clone, Default)]
pub(crate) struct Connections(Arc<Mutex<Held>>);

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection with these ends (a request's `local_addr` and
    /// `remote_addr`) busy until the guard is dropped: a handler holds it
    /// while it waits on the store before it knows whether the caller
    /// proved anything (a join queued behind other writes, a credential
    /// lookup), so the sweep does not cut that call off. Only handlers,
    /// once the whole request is in: a client that never finishes sending
    /// one would otherwise keep its connection busy for ever.
    pub(crate) fn busy(&self, local: Option<SocketAddr>, peer: Option<SocketAddr>) -> Option<InFlight> {
        let slot = self.lock().slot((local?, peer?))?.clone();
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight(slot, self.clone()))
    }

    /// Every second until the coordinator stops: closes the connections
    /// that have not proved a credential in time.
    fn sweep_every_second(&self, within: Duration, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let held = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
                let closed = held.lock().sweep(Instant::now());
                if closed > 0 {
                    metrics::counter!("weave_connections_unauthenticated_closed_total").increment(closed as u64);
                    if every_10s(&UNAUTHENTICATED_LOGGED) {
                        tracing::info!(
                            closed,
                            "closed connections that proved no credential or join token within {within:?} (--authenticate-within)"
                        );
                    }
                }
            }
        });
    }
}

/// A call in flight on a connection (see [`Connections::busy`]).
pub(crate) struct InFlight(Arc<Slot>, Connections);

impl InFlight {
    /// Marks the call's connection as having proved a credential or join
    /// token: it is then neither closed for never doing so nor chosen first
    /// to make room, nor counted against `--max-unauthenticated-connections`.
    pub(crate) fn authenticated(&self) {
        if !self.0.authenticated.load(Ordering::Acquire) {
            self.1.lock().proved(&self.0);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a connection may stay open without a call that proves a
/// credential (node or admin) or a join token, by default
/// (`--authenticate-within`); past it, it is closed.
pub const AUTHENTICATE_WITHIN: Duration = Duration::from_secs(10);

/// An accepted connection, counted until dropped (or closed to make room).
pub(crate) struct Counted {
    stream: TcpStream,
    ends: Ends,
    id: u64,
    slot: Arc<Slot>,
    held: Connections,
}

impl Counted {
    /// Whether this connection was closed by the accept loop: every read
    /// and write then fails, and the server drops it.
    fn evicted(&self, cx: &Context<'_>) -> bool {
        self.slot.waker.register(cx.waker());
        self.slot.closed.load(Ordering::Acquire)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // An evicted connection was released when it was chosen (a second
        // release finds nothing).
        self.held.lock().release(self.id, self.ends);
    }
}

/// When the last refusal and the last eviction were logged (seconds on a
/// monotonic clock, 10 at the first call; 0: never): at most one
/// warning of each in 10 s. On the wall clock, a clock set back by an hour
/// silenced them for that hour (found by a review, 2026-12-07).
static REFUSED_LOGGED: AtomicU64 = AtomicU64::new(0);
static EVICTED_LOGGED: AtomicU64 = AtomicU64::new(0);
static UNAUTHENTICATED_LOGGED: AtomicU64 = AtomicU64::new(0);

fn every_10s(last: &AtomicU64) -> bool {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let now = START.get_or_init(std::time::Instant::now).elapsed().as_secs() + 10;
    let before = last.load(Ordering::Relaxed);
    now >= before + 10 && last.compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// `incoming` within `limits`: a connection past its address's or its
/// /64's limit is closed at once (counted in
/// `weave_connections_refused_total`, logged at most every 10 s). With
/// every slot taken, the oldest connection of the group (address, IPv6
/// /64) holding the most is closed to make room
/// (`weave_connections_evicted_total`) if that group holds more than the
/// newcomer's would; else the newcomer is closed. The others are counted
/// until they close.
pub(crate) fn limited(
    incoming: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
    limits: Limits,
    held: Connections,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = io::Result<Counted>> + Send + 'static {
    held.sweep_every_second(limits.authenticate_within, stopping);
    incoming.filter_map(move |accepted| {
        let held = held.clone();
        async move {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => return Some(Err(e)),
            };
            let ends = (stream.local_addr().ok()?, stream.peer_addr().ok()?);
            let address = ends.1.ip().to_canonical();
            let now = Instant::now();
            let mut h = held.lock();
            let (from_address, from_group) = (h.held_by_address(&address), h.held_by_group(&address));
            let (mut evicted, mut flag) = (None, "--max-connections");
            // Connections that proved nothing are bounded on their own: an
            // outsider's cost memory (up to 64 half-sent requests each; a
            // review measured 2.3 GB from four addresses, 2026-12-06).
            let refused = from_address >= limits.per_source
                || from_group >= limits.per_net
                || (h.unproven_held >= limits.unproven && {
                    flag = "--max-unauthenticated-connections";
                    evicted = h.close_unproven_of_biggest();
                    evicted.is_none()
                })
                || (h.total >= limits.total && {
                    evicted = h.make_room(from_group, now);
                    evicted.is_none()
                });
            if refused {
                let total = h.total;
                drop(h);
                metrics::counter!("weave_connections_refused_total").increment(1);
                if every_10s(&REFUSED_LOGGED) {
                    tracing::warn!(
                        %address, from_address, from_group, total,
                        "connection refused: too many held (--max-connections-per-source, --max-connections, \
                         --max-unauthenticated-connections)"
                    );
                }
                return None;
            }
            let (id, slot) = h.admit(ends, now + limits.authenticate_within);
            drop(h);
            if let Some(evicted) = evicted {
                metrics::counter!("weave_connections_evicted_total").increment(1);
                if every_10s(&EVICTED_LOGGED) {
                    let (from, which) = match evicted {
                        // Past --max-unauthenticated-connections: of the
                        // source holding the most of them.
                        Evicted::Unauthenticated(from) if flag != "--max-connections" => {
                            (from, "the oldest that proved no credential yet, of the source holding the most")
                        }
                        Evicted::Unauthenticated(from) => (from, "the oldest that proved no credential yet"),
                        Evicted::Biggest(from) => (from, "the oldest of the source holding the most"),
                    };
                    tracing::warn!(%from, for_address = %address, "all connections held ({flag}): closed {which}");
                }
            }
            Some(Ok(Counted { stream, ends, id, slot, held }))
        }
    })
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

fn closed_to_make_room() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "closed to make room, or for proving no credential in time")
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.evicted(cx) {
            return Poll::Ready(Err(closed_to_make_room()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.evicted(cx) {
            return Poll::Ready(Err(closed_to_make_room()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.evicted(cx) {
            return Poll::Ready(Err(closed_to_make_room()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_logged_at_once_then_not_again_within_10_s() {
        let last = AtomicU64::new(0);
        assert!(every_10s(&last), "the first");
        assert!(!every_10s(&last), "not again at once");
    }

    #[test]
    fn the_limits_follow_the_per_source_setting() {
        let l = Limits::for_process(Some(256), None, Some(128));
        assert_eq!((l.per_source, l.per_net), (256, 4096), "a /64 holds 16 times one address");
        assert!(l.total >= 16 && l.unproven == 128.min(l.total));
        let l = Limits::for_process(None, Some(64), None);
        assert_eq!((l.total, l.unproven), (64, 64), "no limit of its own: all of them");
    }

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[tokio::test]
    async fn out_of_descriptors_pauses_and_goes_on_instead_of_ending() {
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        let inner = futures::stream::iter(vec![Err(emfile()), Err(emfile()), Ok(1), Err(aborted), Ok(2)]);
        let mut s = Box::pin(backing_off(inner));
        let start = std::time::Instant::now();
        assert_eq!(s.next().await.map(|r| r.unwrap()), Some(1));
        assert!(start.elapsed() >= 2 * BACKOFF, "one pause per EMFILE");
        let start = std::time::Instant::now();
        assert_eq!(s.next().await.map(|r| r.unwrap()), Some(2));
        assert!(start.elapsed() < BACKOFF, "no pause for one aborted connection");
        assert!(s.next().await.is_none(), "ends with the listener");
    }
}
