//! The TCP accept loop's error policy, and its limits on connections held
//! ([`limited`]). The error policy: tonic ends `serve` on an accept error
//! it does not know (EMFILE, ENFILE, ENOBUFS), and retrying at once only
//! spins: when the process is out of file descriptors, nothing but closing
//! some helps. So such errors are logged and retried after a pause, during
//! which established connections (and the handshake timeout) free some.
use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
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
    /// `per_source` (None: no limit), and in all the process's open-file
    /// limit less 256 (for the database, the data dir, the metrics port),
    /// after raising that limit to its hard maximum: tonic keeps accepting,
    /// and a flood of idle connections from anywhere would otherwise take
    /// every descriptor (then agents, weavectl and the database's own
    /// connections fail while the tunnels go on).
    pub(crate) fn for_process(per_source: Option<u32>) -> Limits {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        let soft = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft };
        let total = usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(256).max(16);
        let per_source = per_source.map_or(usize::MAX, |n| n as usize);
        Limits { per_source, per_net: per_source.saturating_mul(16), total }
    }
}

/// The keys a connection is counted under: its address (IPv4-mapped as
/// IPv4), and for IPv6 its /64.
fn source_keys(addr: SocketAddr) -> (IpAddr, Option<IpAddr>) {
    match addr.ip().to_canonical() {
        IpAddr::V6(v6) => (IpAddr::V6(v6), Some(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))))),
        v4 => (v4, None),
    }
}

#[derive(Debug, Default)]
struct Held {
    by_source: HashMap<IpAddr, usize>,
    by_net: HashMap<IpAddr, usize>,
    total: usize,
}

fn release(map: &mut HashMap<IpAddr, usize>, key: &IpAddr) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// An accepted connection, counted until dropped.
pub(crate) struct Counted {
    stream: TcpStream,
    source: (IpAddr, Option<IpAddr>),
    held: Arc<Mutex<Held>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total -= 1;
        release(&mut held.by_source, &self.source.0);
        if let Some(net) = &self.source.1 {
            release(&mut held.by_net, net);
        }
    }
}

/// When the last refusal was logged (seconds since the epoch): at most one
/// warning in 10 s, however many are refused.
static WARNED: AtomicU64 = AtomicU64::new(0);

/// `incoming` within `limits`: a connection past any of them is closed at
/// once (counted in `weave_connections_refused_total`, and logged at most
/// every 10 s); the others are counted until they close.
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
            let from_source = h.by_source.get(&source.0).copied().unwrap_or(0);
            let from_net = source.1.and_then(|n| h.by_net.get(&n).copied()).unwrap_or(0);
            if from_source >= limits.per_source || from_net >= limits.per_net || h.total >= limits.total {
                let total = h.total;
                drop(h);
                metrics::counter!("weave_connections_refused_total").increment(1);
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                if now >= WARNED.load(Ordering::Relaxed) + 10 {
                    WARNED.store(now, Ordering::Relaxed);
                    tracing::warn!(
                        source = %source.0, from_source, from_net, total,
                        "connection refused: too many held (--max-connections-per-source, or the open-file limit)"
                    );
                }
                return None;
            }
            *h.by_source.entry(source.0).or_default() += 1;
            if let Some(net) = source.1 {
                *h.by_net.entry(net).or_default() += 1;
            }
            h.total += 1;
            drop(h);
            Some(Ok(Counted { stream, source, held }))
        }
    })
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
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
        let l = Limits::for_process(Some(256));
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
