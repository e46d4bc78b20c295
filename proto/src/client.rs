//! Connecting to the coordinator: TLS that trusts exactly one public key (the
//! pin from a join token or admin credential), and a bearer credential on
//! every call.
//!
//! There is no CA: the verifier accepts the server certificate only if the
//! SHA-256 of its SubjectPublicKeyInfo equals the pin, and still checks the
//! handshake signatures, which is what proves the server holds that key.
use std::{sync::Arc, time::Duration};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, ClientTlsConfig, Endpoint},
};

use crate::{
    token::Pin,
    v1::{
        admin_service_client::AdminServiceClient, dns_service_client::DnsServiceClient,
        ipam_service_client::IpamServiceClient, join_service_client::JoinServiceClient,
        map_service_client::MapServiceClient, node_service_client::NodeServiceClient,
        status_service_client::StatusServiceClient, subnet_service_client::SubnetServiceClient,
        token_service_client::TokenServiceClient,
    },
};

/// The name the coordinator's certificate is issued for and clients ask for
/// (SNI). Identity comes from the pin, not from this name.
pub const SERVER_NAME: &str = "weave-coordinator";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("'{0}' is not a coordinator address (host:port)")]
    Address(String),
    #[error("cannot reach the coordinator at {addr}: {cause}")]
    Unreachable { addr: String, cause: String },
    #[error("the coordinator credential is not valid in a header")]
    Credential,
}

/// The coordinator addresses in `list`: one "host:port", or several
/// separated by commas (the coordinators of one cluster, sharing one
/// database and one identity).
pub fn addresses(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|a| !a.is_empty()).collect()
}

/// The IP addresses of the coordinators in `list` (see [`addresses`]), host
/// names resolved now (blocking), IPv4-mapped ones as IPv4, sorted and
/// without repeats; and the entries that resolved to nothing.
pub fn resolve(list: &str) -> (Vec<std::net::IpAddr>, Vec<&str>) {
    let (addrs, unresolved) = resolve_addrs(list);
    let mut ips: Vec<std::net::IpAddr> = addrs.into_iter().map(|a| a.ip()).collect();
    ips.sort();
    ips.dedup();
    (ips, unresolved)
}

/// [`resolve`] with the ports: each coordinator's address and port.
pub fn resolve_addrs(list: &str) -> (Vec<std::net::SocketAddr>, Vec<&str>) {
    let (mut out, mut unresolved) = (Vec::new(), Vec::new());
    for addr in addresses(list) {
        let found: Vec<std::net::SocketAddr> = match addr.parse::<std::net::SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(addr).map(|found| found.collect()).unwrap_or_default(),
        };
        if found.is_empty() {
            unresolved.push(addr);
        }
        out.extend(found.into_iter().map(|a| std::net::SocketAddr::new(a.ip().to_canonical(), a.port())));
    }
    out.sort();
    out.dedup();
    (out, unresolved)
}

/// Opens a TLS channel that trusts only `pin` to the first coordinator in
/// `list` that answers (tried in turn). Connects eagerly so that a wrong
/// address or pin fails here, with its cause.
pub async fn connect(list: &str, pin: Pin) -> Result<Channel, ConnectError> {
    connect_within(list, pin, CONNECT_WITHIN).await
}

/// How long [`connect`] waits for one coordinator, the name lookup and the
/// TCP, TLS and HTTP/2 handshakes together: the endpoint's connect timeout covers TCP alone,
/// and a port that accepts but never speaks TLS (a stopped coordinator's
/// host, another service) would otherwise hold the caller for good.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// [`connect`] with its time limit per address.
pub async fn connect_within(list: &str, pin: Pin, limit: Duration) -> Result<Channel, ConnectError> {
    let mut failed = None;
    for addr in addresses(list) {
        let unreachable = |cause| Some(ConnectError::Unreachable { addr: addr.to_string(), cause });
        match tokio::time::timeout(limit, endpoint(addr, pin)?.connect()).await {
            Ok(Ok(channel)) => return Ok(channel),
            Ok(Err(e)) => failed = unreachable(error_chain(&e)),
            Err(_) => {
                failed = unreachable(format!(
                    "no answer within {} s (name lookup, TCP, TLS and HTTP/2 together): is a weave coordinator \
                     listening there?",
                    limit.as_secs_f32()
                ))
            }
        }
    }
    Err(failed.unwrap_or_else(|| ConnectError::Address(list.to_string())))
}

/// Like [`connect`], but connects on first use and reconnects by itself: for
/// long-lived clients (agents) that must survive coordinator restarts. With
/// several addresses, requests go to the coordinators that are up (a dead
/// one is left out until it answers again), so a call made after one dies
/// (a watch resumed from its revision) reaches another.
pub fn connect_lazy(list: &str, pin: Pin) -> Result<Channel, ConnectError> {
    let addrs = addresses(list);
    match addrs.as_slice() {
        [] => Err(ConnectError::Address(list.to_string())),
        [one] => Ok(endpoint(one, pin)?.connect_lazy()),
        several => {
            let endpoints = several.iter().map(|a| endpoint(a, pin)).collect::<Result<Vec<_>, _>>()?;
            Ok(Channel::balance_list(endpoints.into_iter()))
        }
    }
}

/// Attempts of [`retry_unavailable`].
const UNAVAILABLE_ATTEMPTS: u32 = 10;
/// No attempt of [`retry_unavailable`] starts later than this after the
/// first: an unreachable coordinator (no route: about 3 s per connect; a
/// black hole: the 5 s connect timeout) cost an attach 10 attempts, 66 s,
/// before "try again" (found by a chaos review, 2026-12-06). A refused
/// connect (a killed coordinator among several) costs nothing, so failover
/// keeps its ten.
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(12);

/// Runs `call` again (up to 10 times, 50 ms apart) while it answers
/// `UNAVAILABLE`. Only for idempotent calls (an allocation for a container
/// and subnet, a release): a call cut off with its connection may or may not
/// have been applied. A [`connect_lazy`] channel over several coordinators
/// spreads calls over all of them, and one sent to a coordinator that was
/// just killed fails (`tcp connect error`, or `transport error` on the
/// connection it had) until the balancer stops picking it; another attempt
/// reaches a survivor.
pub async fn retry_unavailable<T, F, Fut>(call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    retry_unavailable_or(call, |_| None).await
}

/// Like [`retry_unavailable`], for a call whose repeat may find its own
/// first attempt applied (a release cut off with its connection after the
/// coordinator committed it answers `NOT_FOUND` when repeated): an error of
/// a repeated attempt that `repeat_done` maps to a value is that value. The
/// first attempt's errors are returned as they are.
pub async fn retry_unavailable_or<T, F, Fut, D>(mut call: F, repeat_done: D) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    D: Fn(&tonic::Status) -> Option<T>,
{
    let mut attempt = 1;
    let first = tokio::time::Instant::now();
    loop {
        match call().await {
            Err(s) if cut_off(&s) && attempt < UNAVAILABLE_ATTEMPTS && first.elapsed() < UNAVAILABLE_WITHIN => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) if attempt > 1 => return repeat_done(&s).ok_or(s),
            r => return r,
        }
    }
}

/// A call that did not reach a coordinator, or was cut off with its
/// connection: `Unavailable`; tonic's `Unknown` "transport error" for a
/// connection that broke under it (the coordinator was killed); or
/// `Cancelled`, which hyper answers for a request still queued on a
/// connection that closed ("operation was canceled: connection closed") and
/// a server answers for calls it drops while shutting down. Only idempotent
/// calls are retried on it: one cut off may or may not have been applied.
pub fn cut_off(s: &tonic::Status) -> bool {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => true,
        tonic::Code::Unknown => s.message().contains("transport error"),
        _ => false,
    }
}

/// The endpoint [`connect`] uses for one `addr` (TLS trusting only `pin`,
/// its timeouts and keepalives), for a caller that tunes it further.
pub fn endpoint(addr: &str, pin: Pin) -> Result<Endpoint, ConnectError> {
    let bad = || ConnectError::Address(addr.to_string());
    // A zone (`[fe80::1%eth0]:6783`) is no part of a URL's host: it was
    // looked up as a name, and "cannot reach" said nothing of why.
    if addr.contains('/') || !addr.contains(':') || addr.contains('%') {
        return Err(bad());
    }
    // The port: 1 to 65535 (a URL parser takes 0 and "connection refused"
    // made 99999 look like a coordinator that is down).
    let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) || port.starts_with('+') {
        return Err(bad());
    }
    // Always https: an http:// endpoint would silently skip TLS and the pin.
    let verifier = Arc::new(PinnedServer::new(pin));
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|_| bad())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .tls_config_with_verifier(ClientTlsConfig::new().domain_name(SERVER_NAME), verifier)
        .map_err(|e| ConnectError::Unreachable { addr: addr.to_string(), cause: error_chain(&e) })
}

/// An error and all its sources, joined by ": " (tonic's own message is
/// only "transport error"; the cause is further down). rustls' words for a
/// server that does not speak TLS at all are put as a person would.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.replace(
        NOT_TLS,
        "it does not answer with TLS (not the coordinator's gRPC port, or something else listens there)",
    )
}

/// The pin of the first certificate in `pem` (None: no certificate there
/// that parses), for a coordinator checking its own files at start.
pub fn pin_of_cert_pem(pem: &str) -> Option<Pin> {
    use rustls::pki_types::pem::PemObject;
    pin_of_cert(&CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()?)
}

/// The pin of a certificate (None: it does not parse).
fn pin_of_cert(der: &CertificateDer<'_>) -> Option<Pin> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    Some(Pin::of_spki(&cert.subject_public_key_info()))
}

/// In the error of a connection to a server that is not the pinned
/// coordinator (a man in the middle, `--new-identity`, another cluster's).
pub const PIN_MISMATCH: &str = "identity does not match the pin";

/// What rustls says when the first bytes back are not a TLS record (an HTTP
/// server, the coordinator's metrics port).
const NOT_TLS: &str = "received corrupt message of type InvalidContentType";

#[derive(Debug)]
struct PinnedServer {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServer {
    fn new(pin: Pin) -> Self {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        Self { pin, algorithms }
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen =
            pin_of_cert(end_entity).ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the coordinator's {PIN_MISMATCH} (expected {}, got {seen}): \
                 wrong address, or a token from another coordinator",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Adds `authorization: Bearer <credential>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(credential: &str) -> Result<Self, ConnectError> {
        let mut value: MetadataValue<Ascii> =
            format!("Bearer {credential}").parse().map_err(|_| ConnectError::Credential)?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// Every service client over one channel with one credential.
#[derive(Clone)]
pub struct Api {
    pub join: JoinServiceClient<Channel>,
    pub nodes: NodeServiceClient<AuthChannel>,
    pub map: MapServiceClient<AuthChannel>,
    pub subnets: SubnetServiceClient<AuthChannel>,
    pub ipam: IpamServiceClient<AuthChannel>,
    pub dns: DnsServiceClient<AuthChannel>,
    pub tokens: TokenServiceClient<AuthChannel>,
    pub status: StatusServiceClient<AuthChannel>,
    pub admin: AdminServiceClient<AuthChannel>,
}

/// The largest answer a client decodes. tonic's default (4 MiB) is passed
/// by the whole map (every snapshot, join answer and `GetMap`) at roughly
/// 30,000 allocations; past it every agent would fail on the same snapshot
/// for ever. 256 MiB holds millions of records, and the coordinator is the
/// pinned server, not a stranger. What clients send stays bounded by the
/// coordinator (4 MiB per request, and per-field limits).
pub const MAX_RESPONSE: usize = 256 << 20;

impl Api {
    pub fn new(channel: Channel, credential: &str) -> Result<Self, ConnectError> {
        let bearer = Bearer::new(credential)?;
        let auth = |c: &Channel| InterceptedService::new(c.clone(), bearer.clone());
        Ok(Self {
            join: JoinServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE),
            nodes: NodeServiceClient::new(auth(&channel)).max_decoding_message_size(MAX_RESPONSE),
            map: MapServiceClient::new(auth(&channel)).max_decoding_message_size(MAX_RESPONSE),
            subnets: SubnetServiceClient::new(auth(&channel)).max_decoding_message_size(MAX_RESPONSE),
            ipam: IpamServiceClient::new(auth(&channel)).max_decoding_message_size(MAX_RESPONSE),
            dns: DnsServiceClient::new(auth(&channel)).max_decoding_message_size(MAX_RESPONSE),
            tokens: TokenServiceClient::new(auth(&channel)).max_decoding_message_size(MAX_RESPONSE),
            status: StatusServiceClient::new(auth(&channel)).max_decoding_message_size(MAX_RESPONSE),
            admin: AdminServiceClient::new(auth(&channel)).max_decoding_message_size(MAX_RESPONSE),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tonic::{Code, Status};

    use super::*;

    fn cut() -> Status {
        Status::unknown("transport error")
    }

    /// A port that accepts the connection and never says a word: the
    /// caller gets its one error within the limit (it used to wait forever).
    #[tokio::test]
    async fn a_silent_port_is_an_error_within_the_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let started = std::time::Instant::now();
        let err = connect_within(&addr, Pin([7; 32]), Duration::from_millis(300)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let text = err.to_string();
        assert!(text.contains(&addr) && text.contains("no answer within 0.3 s"), "{text}");
        held.abort();
    }

    /// Answers the statuses in turn (then Ok(7)), counting calls.
    async fn scripted(script: Vec<Status>, done: impl Fn(&Status) -> Option<u32>) -> (Result<u32, Status>, u32) {
        let calls = AtomicU32::new(0);
        let r = retry_unavailable_or(
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
                let s = script.get(n).cloned();
                async move { s.map_or(Ok(7), Err) }
            },
            done,
        )
        .await;
        (r, calls.load(Ordering::SeqCst))
    }

    fn not_found_is_done(s: &Status) -> Option<u32> {
        (s.code() == Code::NotFound).then_some(0)
    }

    /// Connects that take their time (no route: ~3 s each) are retried
    /// only within `UNAVAILABLE_WITHIN` (ten of them made 66 s).
    #[tokio::test(start_paused = true)]
    async fn slow_failures_are_retried_only_within_a_bound() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let r: Result<u32, Status> = retry_unavailable(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Err(Status::unavailable("tcp connect error"))
            }
        })
        .await;
        assert_eq!(r.unwrap_err().code(), Code::Unavailable);
        // Attempts start at 0, 3.05, 6.1, 9.15 s; the next would be past 12.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(start.elapsed() < Duration::from_secs(13), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_repeat_that_finds_its_first_attempt_applied_is_done() {
        let (r, calls) = scripted(vec![cut(), Status::not_found("no allocation")], not_found_is_done).await;
        assert_eq!((r.unwrap(), calls), (0, 2));
    }

    #[tokio::test]
    async fn a_first_attempt_refused_is_an_error_even_if_a_repeat_would_be_done() {
        let (r, calls) = scripted(vec![Status::not_found("no allocation")], not_found_is_done).await;
        assert_eq!((r.unwrap_err().code(), calls), (Code::NotFound, 1));
    }

    #[tokio::test]
    async fn unreachable_is_retried_and_other_errors_are_not() {
        let (r, calls) = scripted(vec![Status::unavailable("tcp connect error"), cut()], |_| None).await;
        assert_eq!((r.unwrap(), calls), (7, 3));
        // hyper's answer for a request queued on a connection that closed
        // (seen in CI when a coordinator was killed under 100 clients).
        let (r, calls) = scripted(vec![Status::cancelled("operation was canceled")], |_| None).await;
        assert_eq!((r.unwrap(), calls), (7, 2));
        let (r, calls) = scripted(vec![Status::unknown("handler panicked")], |_| None).await;
        assert_eq!((r.unwrap_err().code(), calls), (Code::Unknown, 1));
        let (r, calls) = scripted(vec![Status::invalid_argument("bad")], |_| None).await;
        assert_eq!((r.unwrap_err().code(), calls), (Code::InvalidArgument, 1));
        let (r, calls) = scripted(vec![Status::unavailable("down"); 20], |_| None).await;
        assert_eq!((r.unwrap_err().code(), calls), (Code::Unavailable, UNAVAILABLE_ATTEMPTS));
    }
}
