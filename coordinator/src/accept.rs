//! The TCP accept loop's error policy, and its limits on connections held
//! ([`limited`]). The error policy: tonic ends `serve` on an accept error
//! it does not know (EMFILE, ENFILE, ENOBUFS), and retrying at once only
//! spins: when the process is out of file descriptors, nothing but closing
//! some helps. So such errors are logged and retried after a pause, during
//! which established connections (and the handshake timeout) free some.
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    io,
    net::{IpAddr, Ipv6Addr},
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
    /// than that) the process's open-file limit less 256 (for the database
    /// and the data dir) and what the metrics port may hold, after raising that limit to its
    /// hard maximum: tonic keeps accepting, and a flood of idle connections
    /// from anywhere would otherwise take every descriptor (then agents,
    /// weavectl and the database's own connections fail while the tunnels
    /// go on).
    pub(crate) fn for_process(per_source: Option<u32>, total: Option<u32>) -> Limits {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        let soft = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() { hard } else { soft };
        // Kept back: 256 for the database, the data dir and the like, and
        // what the metrics port may hold.
        let reserved = 256 + weave_proto::observe::MAX_CONNECTIONS;
        let files = usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(reserved).max(16);
        let per_source = per_source.map_or(usize::MAX, |n| n as usize);
        let total = total.map_or(files, |n| (n as usize).clamp(1, files));
        Limits { per_source, per_net: per_source.saturating_mul(16), total }
    }
}

/// The group a connection is ranked in: its address (IPv4-mapped as
/// IPv4), or for IPv6 its /64 (one host may hold a whole /64).
fn group_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Set when a connection is closed to make room for another group's.
#[derive(Debug, Default)]
struct Evict {
    set: AtomicBool,
    waker: AtomicWaker,
}

/// One held connection: its id (rising), address, and eviction flag.
type Entry = (u64, IpAddr, Arc<Evict>);

#[derive(Debug, Default)]
struct Held {
    /// Each group's connections, oldest first.
    groups: HashMap<IpAddr, VecDeque<Entry>>,
    /// Connections per address.
    by_address: HashMap<IpAddr, usize>,
    /// The groups by how many connections each holds (the biggest found
    /// without a walk over all).
    by_size: BTreeMap<usize, HashSet<IpAddr>>,
    total: usize,
    next: u64,
}

impl Held {
    fn held_by_address(&self, address: &IpAddr) -> usize {
        self.by_address.get(address).copied().unwrap_or(0)
    }

    fn held_by_group(&self, address: &IpAddr) -> usize {
        self.groups.get(&group_of(*address)).map_or(0, VecDeque::len)
    }

    fn resize(&mut self, group: IpAddr, from: usize, to: usize) {
        if let Some(set) = self.by_size.get_mut(&from) {
            set.remove(&group);
            if set.is_empty() {
                self.by_size.remove(&from);
            }
        }
        if to > 0 {
            self.by_size.entry(to).or_default().insert(group);
        }
    }

    /// Counts a new connection from `address`.
    fn admit(&mut self, address: IpAddr) -> (u64, Arc<Evict>) {
        let (id, evict, group) = (self.next, Arc::new(Evict::default()), group_of(address));
        self.next += 1;
        let q = self.groups.entry(group).or_default();
        q.push_back((id, address, evict.clone()));
        let len = q.len();
        self.resize(group, len - 1, len);
        *self.by_address.entry(address).or_default() += 1;
        self.total += 1;
        (id, evict)
    }

    /// Stops counting connection `id` from `address` (once: a second call finds nothing).
    fn release(&mut self, id: u64, address: IpAddr) {
        let group = group_of(address);
        let Some(q) = self.groups.get_mut(&group) else { return };
        let Ok(at) = q.binary_search_by_key(&id, |e| e.0) else { return };
        q.remove(at);
        let len = q.len();
        if len == 0 {
            self.groups.remove(&group);
        }
        self.resize(group, len + 1, len);
        if let Some(n) = self.by_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&address);
            }
        }
        self.total -= 1;
    }

    /// With every slot taken: closes the oldest connection of the group
    /// (address, IPv6 /64) that holds the most, if that is more than
    /// `from_group + 1` (what the newcomer's group would hold), so that one
    /// source (or a few) cannot keep every other out by holding all slots.
    /// The address it was from, if it closed one.
    fn make_room(&mut self, from_group: usize) -> Option<IpAddr> {
        let (&most, groups) = self.by_size.last_key_value()?;
        if most <= from_group + 1 {
            return None;
        }
        let group = *groups.iter().next()?;
        let (id, address, evict) = self.groups.get(&group)?.front()?.clone();
        self.release(id, address);
        evict.set.store(true, Ordering::Release);
        evict.waker.wake();
        Some(address)
    }
}

/// An accepted connection, counted until dropped (or closed to make room).
pub(crate) struct Counted {
    stream: TcpStream,
    address: IpAddr,
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
        // An evicted connection was released when it was chosen (a second
        // release finds nothing).
        self.held.lock().unwrap_or_else(|e| e.into_inner()).release(self.id, self.address);
    }
}

/// When the last refusal and the last eviction were logged (seconds since
/// the epoch): at most one warning of each in 10 s.
static REFUSED_LOGGED: AtomicU64 = AtomicU64::new(0);
static EVICTED_LOGGED: AtomicU64 = AtomicU64::new(0);

fn every_10s(last: &AtomicU64) -> bool {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
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
) -> impl Stream<Item = io::Result<Counted>> + Send + 'static {
    let held = Arc::new(Mutex::new(Held::default()));
    incoming.filter_map(move |accepted| {
        let held = held.clone();
        async move {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => return Some(Err(e)),
            };
            let address = stream.peer_addr().ok()?.ip().to_canonical();
            let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
            let (from_address, from_group) = (h.held_by_address(&address), h.held_by_group(&address));
            let mut evicted = None;
            let refused = from_address >= limits.per_source
                || from_group >= limits.per_net
                || (h.total >= limits.total && {
                    evicted = h.make_room(from_group);
                    evicted.is_none()
                });
            if refused {
                let total = h.total;
                drop(h);
                metrics::counter!("weave_connections_refused_total").increment(1);
                if every_10s(&REFUSED_LOGGED) {
                    tracing::warn!(
                        %address, from_address, from_group, total,
                        "connection refused: too many held (--max-connections-per-source, --max-connections)"
                    );
                }
                return None;
            }
            let (id, evict) = h.admit(address);
            drop(h);
            if let Some(from) = evicted {
                metrics::counter!("weave_connections_evicted_total").increment(1);
                if every_10s(&EVICTED_LOGGED) {
                    tracing::warn!(%from, for_address = %address, "all connections held (--max-connections): closed the oldest of the source holding the most");
                }
            }
            Some(Ok(Counted { stream, address, id, evict, held }))
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_counted_per_address_and_per_ipv6_64() {
        let group = |s: &str| group_of(ip(s)).to_string();
        assert_eq!(group("192.0.2.7"), "192.0.2.7");
        assert_eq!(group("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(group("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_ne!(group("2001:db8:1:2::9"), group("2001:db8:1:3::9"));
        let mut h = Held::default();
        let a = h.admit(ip("2001:db8:1:2::9"));
        h.admit(ip("2001:db8:1:2::a"));
        h.admit(ip("192.0.2.7"));
        assert_eq!((h.held_by_address(&ip("2001:db8:1:2::9")), h.held_by_group(&ip("2001:db8:1:2::ffff"))), (1, 2));
        assert_eq!((h.held_by_address(&ip("192.0.2.7")), h.held_by_group(&ip("192.0.2.7")), h.total), (1, 1, 3));
        h.release(a.0, ip("2001:db8:1:2::9"));
        h.release(a.0, ip("2001:db8:1:2::9"));
        assert_eq!((h.held_by_group(&ip("2001:db8:1:2::")), h.total), (1, 2), "released once");
        let l = Limits::for_process(Some(256), None);
        assert_eq!((l.per_source, l.per_net), (256, 4096), "a /64 holds 16 times one address");
        assert!(l.total >= 16);
    }

    /// With every slot held, the group holding the most gives up its oldest
    /// connection, counted by /64: one address each from one /64 is one
    /// source, not many (a review found them ranked per address).
    #[test]
    fn room_is_made_from_the_biggest_group_by_ipv6_64() {
        let mut h = Held::default();
        let (mut first, mut rest) = (None, Vec::new());
        for i in 1..=4 {
            let e = h.admit(ip(&format!("2001:db8:1:2::{i}")));
            if first.is_none() { first = Some(e) } else { rest.push(e) }
        }
        h.admit(ip("192.0.2.7"));
        h.admit(ip("192.0.2.7"));
        assert_eq!(h.make_room(0), Some(ip("2001:db8:1:2::1")), "the /64's oldest");
        assert!(first.unwrap().1.set.load(Ordering::Acquire));
        assert!(rest.iter().all(|e| !e.1.set.load(Ordering::Acquire)));
        assert_eq!((h.held_by_group(&ip("2001:db8:1:2::1")), h.total), (3, 5));
        // The /64 (3) against a newcomer whose group holds 2: no more than one more.
        assert_eq!(h.make_room(2), None);
        assert_eq!(h.make_room(1), Some(ip("2001:db8:1:2::2")));
        // Then two groups of 2: a newcomer from either gets nothing; from a third, room.
        assert_eq!(h.make_room(1), None);
        assert!(h.make_room(0).is_some());
        assert_eq!(h.total, 3);
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
