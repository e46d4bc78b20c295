//! The TCP accept loop's error policy, and its limits on connections held
//! ([`limited`]). The error policy: tonic ends `serve` on an accept error
//! it does not know (EMFILE, ENFILE, ENOBUFS), and retrying at once only
//! spins: when the process is out of file descriptors, nothing but closing
//! some helps. So such errors are logged and retried after a pause, during
//! which established connections (and the handshake timeout) free some.
use std::{
    collections::{HashMap, VecDeque},
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt, task::AtomicWaker};
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
}

impl Limits {
    /// `per_source` (None: no limit), and in all `total` or (None, or more
    /// than that) the process's open-file limit less 256 (for the database,
    /// the data dir, the metrics port), after raising that limit to its
    /// hard maximum: tonic keeps accepting, and a flood of idle connections
    /// from anywhere would otherwise take every descriptor (then agents,
    /// weavectl and the database's own connections fail while the tunnels
    /// go on).
    pub(crate) fn for_process(per_source: Option<u32>, total: Option<u32>) -> Limits {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        let soft = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft };
        let files = usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(256).max(16);
        let per_source = per_source.map_or(usize::MAX, |n| n as usize);
        let total = total.map_or(files, |n| (n as usize).clamp(1, files));
        Limits { per_source, per_net: per_source.saturating_mul(16), total }
    }
}

/// The keys a connection is counted under: its address (IPv4-mapped as
/// IPv4), and for IPv6 its /64.
fn source_keys(addr: SocketAddr) -> (IpAddr, Option<IpAddr>) {
    let ip = addr.ip().to_canonical();
    (ip, net_of(ip))
}

/// An IPv6 address's /64.
fn net_of(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => Some(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)))),
        IpAddr::V4(_) => None,
    }
}

/// Set when a connection is closed to make room for another source's.
#[derive(Debug, Default)]
struct Evict {
    set: AtomicBool,
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct Held {
    /// Each source's connections, oldest first.
    by_source: HashMap<IpAddr, VecDeque<(u64, Arc<Evict>)>>,
    by_net: HashMap<IpAddr, usize>,
    total: usize,
    next: u64,
}

impl Held {
    fn from_source(&self, source: &IpAddr) -> usize {
        self.by_source.get(source).map_or(0, VecDeque::len)
    }

    /// Stops counting connection `id` of `source`.
    fn release(&mut self, id: u64, source: &(IpAddr, Option<IpAddr>)) {
        if let Some(q) = self.by_source.get_mut(&source.0) {
            q.retain(|(i, _)| *i != id);
            if q.is_empty() {
                self.by_source.remove(&source.0);
            }
        }
        if let Some(net) = &source.1
            && let Some(n) = self.by_net.get_mut(net)
        {
            *n -= 1;
            if *n == 0 {
                self.by_net.remove(net);
            }
        }
        self.total -= 1;
    }

    /// With every slot taken: closes the oldest connection of the source
    /// that holds the most, if that is more than `from_source + 1` (what
    /// the newcomer's source would hold), so that one source (or a few)
    /// cannot keep every other out by holding all slots. Whether it did.
    fn make_room(&mut self, from_source: usize) -> bool {
        let Some((key, q)) = self.by_source.iter().max_by_key(|(_, q)| q.len()) else { return false };
        if q.len() <= from_source + 1 {
            return false;
        }
        let (key, (id, evict)) = (*key, q[0].clone());
        self.release(id, &(key, net_of(key)));
        evict.set.store(true, Ordering::Release);
        evict.waker.wake();
        true
    }
}

/// An accepted connection, counted until dropped (or closed to make room).
pub(crate) struct Counted {
    stream: TcpStream,
    source: (IpAddr, Option<IpAddr>),
    id: u64,
    evict: Arc<Evict>,
    held: Arc<Mutex<Held>>,
}

impl Counted {
    /// Whether this connection was closed to make room: every read and
    /// write then fails, and the server drops it.
    fn evicted(&self, cx: &Context<'_>) -> bool {
        self.evict.waker.register(cx.waker());
        self.evict.set.load(Ordering::Acquire)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        // An evicted connection was released when it was chosen (under this lock).
        if !self.evict.set.load(Ordering::Acquire) {
            held.release(self.id, &self.source);
        }
    }
}

/// When the last refusal was logged (seconds since the epoch): at most one
/// warning in 10 s, however many are refused.
static WARNED: AtomicU64 = AtomicU64::new(0);

fn log_at_most_every_10s(what: &str, source: IpAddr, from_source: usize, from_net: usize, total: usize) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now >= WARNED.load(Ordering::Relaxed) + 10 {
        WARNED.store(now, Ordering::Relaxed);
        tracing::warn!(%source, from_source, from_net, total, "{what} (--max-connections-per-source, --max-connections)");
    }
}

/// `incoming` within `limits`: a connection past its source's or its /64's
/// limit is closed at once (counted in `weave_connections_refused_total`,
/// logged at most every 10 s). With every slot taken, the oldest connection
/// of the source holding the most is closed to make room
/// (`weave_connections_evicted_total`) if that source holds more than the
/// newcomer's would; else the newcomer is closed. The others are counted
/// until they close.
pub(crate) fn limited(
    incoming: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
    limits: Limits,
) -> impl Stream<Item = io::Result<Counted>> + Send + 'static {
    let held = Arc::new(Mutex::new(Held::default()));
    incoming.filter_map(move |accepted| {
        let held = held.clone();
        async move {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => return Some(Err(e)),
            };
            let source = source_keys(stream.peer_addr().ok()?);
            let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
            let from_source = h.from_source(&source.0);
            let from_net = source.1.and_then(|n| h.by_net.get(&n).copied()).unwrap_or(0);
            let full = h.total >= limits.total;
            if from_source >= limits.per_source || from_net >= limits.per_net || (full && !h.make_room(from_source)) {
                let total = h.total;
                drop(h);
                metrics::counter!("weave_connections_refused_total").increment(1);
                log_at_most_every_10s("connection refused: too many held", source.0, from_source, from_net, total);
                return None;
            }
            if full {
                metrics::counter!("weave_connections_evicted_total").increment(1);
                log_at_most_every_10s(
                    "all connections held: closed the oldest of the source holding the most",
                    source.0,
                    from_source,
                    from_net,
                    h.total,
                );
            }
            let (id, evict) = (h.next, Arc::new(Evict::default()));
            h.next += 1;
            h.by_source.entry(source.0).or_default().push_back((id, evict.clone()));
            if let Some(net) = source.1 {
                *h.by_net.entry(net).or_default() += 1;
            }
            h.total += 1;
            drop(h);
            Some(Ok(Counted { stream, source, id, evict, held }))
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
    io::Error::new(io::ErrorKind::ConnectionReset, "closed to make room for another source's connection")
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
    fn connections_are_counted_per_address_and_per_ipv6_64() {
        let keys = |s: &str| {
            let (a, n) = source_keys(s.parse().unwrap());
            (a.to_string(), n.map(|n| n.to_string()))
        };
        assert_eq!(keys("192.0.2.7:40000"), ("192.0.2.7".into(), None));
        assert_eq!(keys("[::ffff:192.0.2.7]:40000"), ("192.0.2.7".into(), None));
        assert_eq!(
            keys("[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:1"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd".into(), Some("2001:db8:1:2::".into()))
        );
        assert_eq!(keys("[2001:db8:1:2::9]:1").1, keys("[2001:db8:1:2:ffff::1]:2").1);
        assert_ne!(keys("[2001:db8:1:2::9]:1").1, keys("[2001:db8:1:3::9]:1").1);
        let l = Limits::for_process(Some(256), None);
        assert_eq!((l.per_source, l.per_net), (256, 4096), "a /64 holds 16 times one address");
        assert!(l.total >= 16);
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
