//! What the agent asks Docker's own API, `GET /networks/<id>`: which
//! container an endpoint belongs to (its name, for weave DNS: Docker tells a
//! network plugin no container names, so after a Join the agent reads it
//! until the endpoint shows up), and which endpoints a network still has
//! (the sweep of those Docker removed while the agent was down); and
//! `GET /containers/<id>/json`: the container's aliases on the network and
//! its host name.
use std::{path::Path, time::Duration};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::plan::docker::{aliases, container_of, domain_names};

/// How long one answer from Docker may take: a Docker that accepts and
/// never answers must not hold a Join's follow-up or the sweep for good.
const ANSWER: Duration = Duration::from_secs(30);

/// One `GET` on the Docker socket at `socket`; the JSON body of a 200.
async fn get(socket: &Path, path: &str) -> Result<Value, String> {
    tokio::time::timeout(ANSWER, get_now(socket, path)).await.map_err(|_| format!("no answer within {ANSWER:?}"))?
}

async fn get_now(socket: &Path, path: &str) -> Result<Value, String> {
    let mut s = tokio::net::UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    // HTTP/1.0: the answer is the whole body, then the end of the stream.
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
    s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(16 << 20).read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    if head.split_whitespace().nth(1).is_none_or(|code| code != "200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    serde_json::from_str(body).map_err(|e| e.to_string())
}

/// The container (id, name) of endpoint `endpoint_id` on network
/// `network_id`, once Docker shows it (within `wait`).
pub async fn container(
    socket: &Path,
    network_id: &str,
    endpoint_id: &str,
    wait: Duration,
) -> Result<(String, String), String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let last = match get(socket, &format!("/networks/{network_id}")).await {
            Ok(net) => match container_of(&net, endpoint_id) {
                Some(found) => return Ok(found),
                None => "not on the network yet".to_string(),
            },
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Network `network_id` as Docker shows it now (its containers' endpoints
/// and names), or None if Docker does not know it any more (404).
pub async fn network(socket: &Path, network_id: &str) -> Result<Option<Value>, String> {
    match get(socket, &format!("/networks/{network_id}")).await {
        Ok(net) => Ok(Some(net)),
        Err(e) if e.starts_with("HTTP/") && e.split_whitespace().nth(1) == Some("404") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The aliases on network `network_id` ([`aliases`]) of the container
/// `(id, name)` as the network showed it. Docker lists an endpoint whose
/// sandbox it has not joined yet (`docker network connect` of a running
/// container) under `ep-<endpoint id>`, not the container's id: the
/// container is then asked for by its name. Docker answers once the
/// container has started, or been connected.
/// With them, its names in `domain` ([`domain_names`]: its host name, dotted aliases).
pub async fn aliases_of(
    socket: &Path,
    (id, name): (&str, &str),
    network_id: &str,
    domain: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let is_id = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit());
    // Docker's own rule for names: [a-zA-Z0-9][a-zA-Z0-9_.-]+.
    let is_name = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    let container = match (is_id, is_name) {
        (true, _) => id,
        (false, true) => name,
        (false, false) => return Err(format!("neither '{id}' nor '{name}' names a container")),
    };
    let shown = get(socket, &format!("/containers/{container}/json")).await?;
    Ok((aliases(&shown, network_id), domain_names(&shown, network_id, domain)))
}

/// The ID of the Docker daemon at `socket` (`GET /info`): a 404 for a
/// network is Docker's word that it removed it only from the daemon that
/// showed the network before.
pub async fn daemon_id(socket: &Path) -> Result<String, String> {
    let info = get(socket, "/info").await?;
    info.get("ID").and_then(Value::as_str).filter(|id| !id.is_empty()).map(str::to_string).ok_or("no daemon ID".into())
}
