//! `cp-bench idle`: how long `weavectl status` takes while the coordinator
//! (its own process, on loopback) holds many connections that go nowhere:
//! TCP connections that never send a byte, and TLS handshakes that stop
//! after a real ClientHello (the coordinator has made its key share and sent
//! its flight, and waits for a Finished that never comes). The coordinator
//! closes both after its handshake timeout; each is opened again at once,
//! so the counts hold for the whole measurement.
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{median, scale::Coordinator};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// TCP connections that send nothing.
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// TLS handshakes that stop after the ClientHello.
    #[arg(long, default_value_t = 2000)]
    stalled: usize,
    /// `weavectl status` runs per measurement, one every --interval-ms
    /// (together longer than the coordinator's 5 s handshake timeout).
    #[arg(long, default_value_t = 20)]
    calls: usize,
    #[arg(long, default_value_t = 400)]
    interval_ms: u64,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Never reached: the handshake stops before the certificate is checked.
#[derive(Debug)]
struct Stall;

impl ServerCertVerifier for Stall {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General("a stalled handshake checks nothing".into()))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("a stalled handshake checks nothing".into()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("a stalled handshake checks nothing".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A fresh ClientHello (its own random and key share), as a client sends it.
fn client_hello(config: &Arc<rustls::ClientConfig>) -> anyhow::Result<Vec<u8>> {
    let mut conn =
        rustls::ClientConnection::new(config.clone(), ServerName::try_from("weave-coordinator")?.to_owned())?;
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out)
}

/// Keeps one connection of the kind open, opening it again whenever the
/// coordinator closes it. `open` counts those open now, `reopened` the closes.
async fn hold(
    addr: String,
    hello: Option<Arc<rustls::ClientConfig>>,
    open: Arc<AtomicUsize>,
    reopened: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    loop {
        let mut s = match TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(config) = &hello {
            s.write_all(&client_hello(config)?).await?;
        }
        open.fetch_add(1, Ordering::Relaxed);
        // The server's flight (for a stalled handshake) is read and ignored;
        // the read ends when the coordinator gives up on the connection.
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        open.fetch_sub(1, Ordering::Relaxed);
        reopened.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `weavectl status` `calls` times, `interval` apart; returns each
/// run's wall time in ms.
async fn status_times(
    weavectl: &PathBuf,
    admin_file: &PathBuf,
    calls: usize,
    interval: Duration,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let out = tokio::process::Command::new(weavectl)
            .arg("--admin-file")
            .arg(admin_file)
            .arg("status")
            .output()
            .await
            .with_context(|| format!("running {} (build it with the same profile)", weavectl.display()))?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(out.status.success(), "weavectl status failed: {}", String::from_utf8_lossy(&out.stderr));
        times.push(ms);
        tokio::time::sleep(interval.saturating_sub(start.elapsed())).await;
    }
    Ok(times)
}

fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let weavectl = std::env::current_exe()?.with_file_name("weavectl");
    let interval = Duration::from_millis(args.interval_ms);
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Stall))
            .with_no_client_auth(),
    );
    let mut runs = Vec::new();
    for run in 0..args.repeat {
        let c = Coordinator::start()?;
        let admin_file = c.admin_file();
        let (base_median, base_max) = summary(status_times(&weavectl, &admin_file, 5, interval).await?);

        let (open, reopened) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut holders = Vec::new();
        for i in 0..args.idle + args.stalled {
            let hello = (i >= args.idle).then(|| config.clone());
            holders.push(tokio::spawn(hold(c.addr.clone(), hello, open.clone(), reopened.clone())));
        }
        let target = args.idle + args.stalled;
        let since = Instant::now();
        while open.load(Ordering::Relaxed) < target {
            anyhow::ensure!(
                since.elapsed() < Duration::from_secs(60),
                "only {} connections opened",
                open.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let times = status_times(&weavectl, &admin_file, args.calls, interval).await?;
        let still_open = open.load(Ordering::Relaxed);
        for h in holders {
            h.abort();
        }
        let (med, max) = summary(times);
        let closed = reopened.load(Ordering::Relaxed);
        println!(
            "run {run}: weavectl status alone: median {base_median:.0} ms, max {base_max:.0} ms; with {} idle + {} stalled \
             (open at the end {still_open}, closed by the coordinator and reopened {closed}): median {med:.0} ms, max {max:.0} ms",
            args.idle, args.stalled
        );
        runs.push(serde_json::json!({
            "idle": args.idle, "stalled": args.stalled,
            "alone_median_ms": base_median, "alone_max_ms": base_max,
            "loaded_median_ms": med, "loaded_max_ms": max,
            "open_at_end": still_open, "reopened": closed,
        }));
    }
    let med = |key: &str| median(runs.iter().map(|r| r[key].as_f64().unwrap_or(f64::NAN)).collect());
    let out = serde_json::json!({
        "runs": runs,
        "loaded_median_ms_median": med("loaded_median_ms"),
        "loaded_max_ms_median": med("loaded_max_ms"),
        "alone_median_ms_median": med("alone_median_ms"),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
