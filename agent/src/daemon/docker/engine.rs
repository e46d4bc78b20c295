//! What the agent asks Docker's own API, `GET /networks/<id>`: which
//! container an endpoint belongs to (its name, for weave DNS: Docker tells a
//! network plugin no container names, so after a Join the agent reads it
//! until the endpoint shows up), and which endpoints a network still has
//! (the sweep of those Docker removed while the agent was down).
use std::{path::Path, time::Duration};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::plan::docker::container_name;

/// One `GET` on the Docker socket at `socket`; the JSON body of a 200.
async fn get(socket: &Path, path: &str) -> Result<Value, String> {
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

/// The name of the container of endpoint `endpoint_id` on network
/// `network_id`, once Docker shows it (within `wait`).
pub async fn container_of(
    socket: &Path,
    network_id: &str,
    endpoint_id: &str,
    wait: Duration,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let last = match get(socket, &format!("/networks/{network_id}")).await {
            Ok(net) => match container_name(&net, endpoint_id) {
                Some(name) => return Ok(name),
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
