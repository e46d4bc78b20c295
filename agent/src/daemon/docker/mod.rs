//! Docker's legacy (v1) plugin protocol on a Unix socket: the agent is
//! Docker's `weave` network driver and IPAM driver. Each request is one JSON
//! POST (`/Plugin.Activate`, `/NetworkDriver.*`, `/IpamDriver.*`); the
//! answers and the mapping onto weave subnets are `plan::docker`, the work
//! is [`driver`] (reusing attach's veths, the coordinator's IPAM and the
//! DNS server), and Docker's own API is asked only for container names
//! and aliases ([`engine`], `names`). The socket is root's (0600) and lives in the host's mount
//! namespace, so a container can reach neither it nor the Docker socket.
use std::{
    convert::Infallible,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::Path,
    sync::Arc,
    time::Duration,
};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode, body::Bytes, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;

use crate::{error::Error, plan::docker as wire};

pub mod driver;
pub mod engine;
mod ipam;
mod names;
mod sweep;

pub use driver::Plugin;

/// The largest request body read (Docker's are a few hundred bytes).
const MAX_BODY: usize = 1 << 20;

/// Binds the plugin socket at `path` (its directory made if missing; a
/// stale socket from an earlier run replaced), root only.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let io = |e| Error::Io(path.display().to_string(), e);
    // A directory it makes is 0755 whatever the umask: with 0777 another
    // user could move the socket away and bind its own where dockerd
    // connects (found by a review, 2026-12-06).
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(io)?;
    }
    weave_proto::local_api::clear_stale(path).map_err(io)?;
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Waits for the directory of `path` to be made (by dockerd, at its start),
/// then binds `path`, as [`bind`]; tries again on a failure.
pub async fn bind_once_made(path: &Path) -> UnixListener {
    let mut warned = false;
    loop {
        if path.parent().is_some_and(Path::is_dir) {
            match bind(path) {
                Ok(listener) => {
                    tracing::info!(socket = %path.display(), "dockerd made its plugin directory: serving the Docker network and IPAM plugin");
                    return listener;
                }
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "cannot serve the Docker plugin yet: trying again every 2 s");
                    warned = true;
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// Serves Docker's requests on `listener` for ever.
pub async fn serve(listener: UnixListener, plugin: Arc<Plugin>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "docker plugin: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let plugin = plugin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let plugin = plugin.clone();
                async move { Ok::<_, Infallible>(answer(&plugin, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(plugin: &Arc<Plugin>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, wire::error_body(&format!("cannot read the request: {e}"))),
    };
    let (status, body) = match plugin.handle(&path, &body).await {
        Ok(v) => (StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default()),
        Err(e) => {
            tracing::info!(path, error = %e.message, "docker plugin: refused");
            (e.status, wire::error_body(&e.message))
        }
    };
    reply(status, body)
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(wire::CONTENT_TYPE));
    r
}

/// A refusal: the HTTP status and the message Docker shows.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Refused {
    pub fn bad(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }
}

impl From<tonic::Status> for Refused {
    /// The coordinator's own message, as Docker shows it.
    fn from(s: tonic::Status) -> Self {
        Self::bad(s.message().to_string())
    }
}
