//! The plain-HTTP endpoint both daemons serve for operators and orchestrators:
//! `/metrics` (Prometheus text format), `/healthz` (the process answers) and
//! `/readyz` (it can do its job now). It is never the TLS gRPC port: scrapers
//! and kubelet probes speak plain HTTP, and nothing served here is secret.
//!
//! Metrics are recorded through the `metrics` facade into one process-wide
//! Prometheus recorder ([`recorder`]); values that are cheaper to read than to
//! keep current (peer counts, map sizes) are set by [`Probe::refresh`] just
//! before each scrape renders.
use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    future::Future,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, sync::Notify};

/// Connections served at once. A scraper and two probes need three; the
/// bound keeps a flood of idle connections from costing more than this many
/// tasks (~20 KB each). With all of them held, a newcomer closes the oldest
/// connection of the source (IPv4 address, IPv6 /64) that holds the most,
/// if that holds more than the newcomer's source would: holding every slot
/// against probes then takes `MAX_CONNECTIONS` sources, more addresses than
/// an IPv4 /24 underlay has. (Before, 32 slots held with keep-alive by 8
/// addresses kept the kubelet's probes in the listen backlog until they
/// timed out, and the kubelet restarted the daemon.)
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one source address may hold at once: a scraper needs one or
/// two; the rest of the slots stay for everyone else.
const MAX_PER_SOURCE: usize = 4;
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Latency buckets (seconds) for every `*_seconds` histogram: RPCs and
/// reconcile passes take from ~100 µs to seconds.
const BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A future a probe returns (boxed: probes are trait objects).
pub type ProbeFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a daemon tells the endpoint.
pub trait Probe: Send + Sync + 'static {
    /// `Ok` when the daemon can do its job (answered as 200 on `/readyz`),
    /// else why not (503, the reason as the body).
    fn ready(&self) -> ProbeFuture<'_, Result<(), String>>;
    /// Sets the gauges that are read rather than kept, before a scrape renders.
    fn refresh(&self) -> ProbeFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The process-wide Prometheus recorder, installed on first use. Later calls
/// return the same handle (tests start several daemons in one process).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // Invariant: BUCKETS is a non-empty constant, the only way this can fail.
            #[allow(clippy::expect_used)]
            let recorder = builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness);
            // rendering then shows only what this one saw, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Binds `addr` (so a taken port is an error at start, not later). `[::]`
/// takes IPv4 too (Linux's default, `bindv6only` 0), and where the host has
/// no IPv6 at all (`ipv6.disable=1`) it is IPv4's any address: the
/// Kubernetes manifests' `[::]:6782` serves the kubelet's probes on IPv4,
/// IPv6 and dual-stack nodes alike (with `0.0.0.0` an IPv6 node's probes
/// were refused; found by a review, 2026-12-06).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Err(e)
            if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT) =>
        {
            TcpListener::bind(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port())).await
        }
        bound => bound,
    }
}

/// Serves the three paths on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, probe: Arc<dyn Probe>, shutdown: impl Future<Output = ()>) {
    let handle = recorder();
    let held: Arc<Mutex<Held>> = Arc::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, source) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer.ip().to_canonical()),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some((id, evicted)) = lock(&held).admit(source) else {
            // Over its share, or every slot held by sources no bigger: closed at once.
            continue;
        };
        let (probe, handle, held) = (probe.clone(), handle.clone(), held.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (probe, handle) = (probe.clone(), handle.clone());
                async move { Ok::<_, Infallible>(answer(&req, probe.as_ref(), &handle).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = evicted.notified() => {}
            }
            lock(&held).release(source, id);
        });
    }
}

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// The group a source is ranked in: its IPv4 address, or its IPv6 /64 (one
/// host may hold a whole /64).
fn group_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// The connections held: by group, each oldest first, with its source
/// address, id and the signal that closes it.
#[derive(Default)]
struct Held {
    groups: HashMap<IpAddr, VecDeque<(u64, IpAddr, Arc<Notify>)>>,
    total: usize,
    next: u64,
}

impl Held {
    /// Counts a connection from `source`, closing another to make room if
    /// every slot is held ([`MAX_CONNECTIONS`]); None: refused.
    fn admit(&mut self, source: IpAddr) -> Option<(u64, Arc<Notify>)> {
        let group = group_of(source);
        let mine = self.groups.get(&group);
        if mine.is_some_and(|q| q.iter().filter(|c| c.1 == source).count() >= MAX_PER_SOURCE) {
            return None;
        }
        let mine = mine.map_or(0, VecDeque::len);
        if self.total >= MAX_CONNECTIONS {
            let (biggest, most) = self.groups.iter().map(|(g, q)| (*g, q.len())).max_by_key(|(_, n)| *n)?;
            if most <= mine + 1 {
                return None;
            }
            let (id, address, evict) = self.groups.get(&biggest)?.front()?.clone();
            self.release(address, id);
            // Stored if the connection's task is not waiting yet.
            evict.notify_one();
        }
        let (id, evict) = (self.next, Arc::new(Notify::new()));
        self.next += 1;
        self.groups.entry(group).or_default().push_back((id, source, evict.clone()));
        self.total += 1;
        Some((id, evict))
    }

    /// Stops counting connection `id` (once: a second call finds nothing).
    fn release(&mut self, source: IpAddr, id: u64) {
        let group = group_of(source);
        let Some(q) = self.groups.get_mut(&group) else { return };
        let Some(at) = q.iter().position(|c| c.0 == id) else { return };
        q.remove(at);
        if q.is_empty() {
            self.groups.remove(&group);
        }
        self.total -= 1;
    }
}

/// One request's answer (pure apart from the probe and the recorder).
pub async fn answer<B>(req: &Request<B>, probe: &dyn Probe, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            probe.refresh().await;
            let mut response = text(StatusCode::OK, handle.render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match probe.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Flag(AtomicBool);
    impl Probe for Flag {
        fn ready(&self) -> ProbeFuture<'_, Result<(), String>> {
            let ready = self.0.load(Ordering::Relaxed);
            Box::pin(async move { if ready { Ok(()) } else { Err("no map yet".into()) } })
        }
        fn refresh(&self) -> ProbeFuture<'_, ()> {
            metrics::gauge!("weave_test_refreshed").set(1.0);
            Box::pin(async {})
        }
    }

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    /// `[::]` (the manifests' address) answers IPv4 and IPv6 clients.
    #[tokio::test]
    async fn the_ipv6_any_address_takes_ipv4_clients_too() {
        let listener = bind("[::]:0".parse().unwrap()).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for client in ["127.0.0.1", "::1"] {
            let to = SocketAddr::new(client.parse().unwrap(), port);
            let (connected, accepted) = tokio::join!(tokio::net::TcpStream::connect(to), listener.accept());
            connected.unwrap_or_else(|e| panic!("{to}: {e}"));
            accepted.unwrap();
        }
    }

    #[tokio::test]
    async fn paths_answer_as_probes_expect() {
        let handle = recorder();
        let probe = Flag(AtomicBool::new(false));
        assert_eq!(answer(&get("/healthz"), &probe, &handle).await.status(), StatusCode::OK);
        assert_eq!(answer(&get("/readyz"), &probe, &handle).await.status(), StatusCode::SERVICE_UNAVAILABLE);
        probe.0.store(true, Ordering::Relaxed);
        assert_eq!(answer(&get("/readyz"), &probe, &handle).await.status(), StatusCode::OK);
        assert_eq!(answer(&get("/nope"), &probe, &handle).await.status(), StatusCode::NOT_FOUND);
        let post = Request::builder().method(Method::POST).uri("/metrics").body(()).unwrap();
        assert_eq!(answer(&post, &probe, &handle).await.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn metrics_are_rendered_after_a_refresh() {
        let handle = recorder();
        metrics::counter!("weave_test_total", "result" => "ok").increment(2);
        metrics::histogram!("weave_test_duration_seconds").record(0.003);
        let probe = Flag(AtomicBool::new(true));
        let response = answer(&get("/metrics"), &probe, &handle).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = handle.render();
        assert!(body.contains("weave_test_total{result=\"ok\"} 2"), "{body}");
        assert!(body.contains("weave_test_refreshed 1"), "{body}");
        assert!(body.contains("weave_test_duration_seconds_bucket{le=\"0.005\"} 1"), "{body}");
    }

    #[tokio::test]
    async fn serves_over_tcp_until_shutdown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(Flag(AtomicBool::new(true))), async {
            let _ = stopped.await;
        }));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("ready\n"), "{out}");
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    /// An endpoint serving on a port of 127.0.0.1 until the test ends: its address.
    async fn serving() -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(Flag(AtomicBool::new(true))), std::future::pending()));
        addr
    }

    /// A connection to `addr` from loopback address `source`.
    async fn connect_from(source: &str, addr: SocketAddr) -> tokio::net::TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
        s.connect(addr).await.unwrap()
    }

    /// One `GET /healthz` on a connection of its own: the whole answer.
    async fn healthz(addr: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Idle connections from one address hold at most its share of the
    /// slots: a probe from elsewhere is still answered at once.
    #[tokio::test]
    async fn one_source_cannot_take_every_slot() {
        let addr = serving().await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 8 {
            idle.push(connect_from("127.0.0.2", addr).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let probe = healthz(addr);
        let out = tokio::time::timeout(Duration::from_secs(2), probe).await.expect("answered while one source floods");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        drop(idle);
    }

    /// Sources that each hold their share of the slots, all of them, with
    /// keep-alive (a request every few seconds keeps a connection past the
    /// header timeout): a probe from another source is answered at once,
    /// because the oldest connection of a source holding the most is closed
    /// to make room. Before, the probe waited in the listen backlog until the
    /// kubelet gave up on it and restarted the daemon.
    #[tokio::test]
    async fn sources_holding_every_slot_make_room_for_a_probe() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = serving().await;
        let mut held = Vec::new();
        for i in 0..MAX_CONNECTIONS / MAX_PER_SOURCE {
            for _ in 0..MAX_PER_SOURCE {
                let mut c = connect_from(&format!("127.0.1.{}", i + 1), addr).await;
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
                let mut buf = [0u8; 512];
                let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
                    .await
                    .expect("every slot's connection is served")
                    .unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
                held.push(c);
            }
        }
        let probe = healthz(addr);
        let out = tokio::time::timeout(Duration::from_secs(2), probe).await.expect("answered while every slot is held");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        // One held connection (a source's oldest) was closed for it; the rest are open.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 16];
        let closed = held.iter().filter(|c| matches!(c.try_read(&mut buf), Ok(0))).count();
        assert_eq!(closed, 1, "one connection made room");
    }
}
