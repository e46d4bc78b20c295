use tonic::{Request, Response, Status};
use weave_proto::{
    key::WgPublicKey,
    token::{JoinToken, hash_secret},
    v1::{self, ChallengeRequest, JoinChallenge, JoinRequest, JoinResponse, join_service_server::JoinService},
};

use super::Shared;
use crate::{
    error::Error,
    identity::new_secret,
    store::{self, now},
};

pub struct Join(pub Shared);

/// What node names were before 2026-12-05 (a node of such a name re-joins under it).
fn legacy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.parse::<i64>().is_err()
}

/// A host name: what DNS allows in one label, so nodes can be named in records later.
fn check_name(name: &str) -> Result<(), Error> {
    let ok = legacy_name(name)
        // Host-name labels: none empty, none starting or ending with '-' (a
        // name like "-n" would read as a flag to `weavectl node rm`).
        && name.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "node name '{name}' is not valid: use 1-63 letters, digits, '-', '_' or '.' (not only digits; no label empty or starting or ending with '-')"
        )))
    }
}

/// Endpoints one node may announce: enough for every address family and a
/// few NATs. Each goes to every agent in the map and in watch events, so an
/// unbounded list would let one node make events no agent can decode.
pub const MAX_ENDPOINTS: usize = 16;
/// "ip:port" is at most 47 characters (`[v6]:port`).
const MAX_ENDPOINT_LEN: usize = 64;

/// A low-order public key (its Diffie-Hellman with any secret is all zeros)
/// would let anyone compute the static-static secret of a handshake with
/// that node, and so pose as it to every peer: refused, as the kernel's
/// WireGuard refuses such keys. x25519 clamps every secret to a multiple of
/// the cofactor, so one fixed secret tells them all.
pub(super) fn check_key(key: &WgPublicKey) -> Result<(), Error> {
    // One value, one form: X25519 ignores the top bit and reads u mod
    // 2^255-19, so another spelling of a node's key passed the check that
    // no two nodes hold one key, and a member added a node under another's
    // key (it could not finish a handshake, but "one key, one node" no
    // longer held; found by a review, 2026-12-07). Keys made by X25519 are
    // always in this form.
    if !canonical(key.as_bytes()) {
        return Err(Error::InvalidArgument(
            "the WireGuard public key is not in its canonical form (its top bit set, or not below 2^255-19): \
             make a new key"
                .into(),
        ));
    }
    let probe = x25519_dalek::StaticSecret::from([0x5a; 32]);
    if probe.diffie_hellman(&x25519_dalek::PublicKey::from(*key.as_bytes())).was_contributory() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "the WireGuard public key is a low-order point (anyone could pose as its node): make a new key".into(),
        ))
    }
}

/// Whether `u` (little-endian) is below 2^255-19, its top bit clear.
fn canonical(u: &[u8; 32]) -> bool {
    // p = 2^255-19: 0xed, then 30 bytes of 0xff, then 0x7f.
    let mut p = [0xffu8; 32];
    (p[0], p[31]) = (0xed, 0x7f);
    // Compared from the most significant byte.
    u.iter().rev().lt(p.iter().rev())
}

/// Whether peers could reach a node at `ip`: loopback and link-local would
/// point every peer at a service on its own host or its own link (a
/// metadata server at 169.254.169.254), never at this node.
fn reachable(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || v4.is_loopback() || v4.is_link_local())
        }
        std::net::IpAddr::V6(v6) => {
            !(v6.is_unspecified() || v6.is_multicast() || v6.is_loopback() || v6.is_unicast_link_local())
        }
    }
}

/// Checks `endpoints` and returns them in canonical form (an IPv4-mapped
/// IPv6 address as the IPv4 address it is, so every later check and every
/// agent sees one form).
pub(super) fn check_endpoints(endpoints: &[String]) -> Result<Vec<String>, Error> {
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(Error::InvalidArgument(format!(
            "{} endpoints: a node may announce at most {MAX_ENDPOINTS}",
            endpoints.len()
        )));
    }
    if let Some(long) = endpoints.iter().find(|e| e.len() > MAX_ENDPOINT_LEN) {
        return Err(Error::InvalidArgument(format!(
            "an endpoint of {} bytes: ip:port is at most {MAX_ENDPOINT_LEN}",
            long.len()
        )));
    }
    let mut canonical = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        let Ok(addr) = e.parse::<std::net::SocketAddr>() else {
            return Err(Error::InvalidArgument(format!("endpoint '{e}' is not ip:port")));
        };
        let ip = addr.ip().to_canonical();
        if !reachable(ip) || addr.port() == 0 {
            return Err(Error::InvalidArgument(format!(
                "endpoint '{e}' is not a unicast address and port where peers could reach this node"
            )));
        }
        // Once each: a repeat would only make every peer try it twice.
        let e = std::net::SocketAddr::new(ip, addr.port()).to_string();
        if !canonical.contains(&e) {
            canonical.push(e);
        }
    }
    Ok(canonical)
}

/// The endpoint a node's call came from (`from`: the TCP peer of its
/// connection) when that address is not among its own `endpoints`: behind a
/// masquerading NAT, the NAT's public address. The port is that of its first
/// endpoint of the same family (the call's TCP port says nothing about the
/// WireGuard port); masquerading keeps a source port when it is free, and
/// where it does not, peers learn the real one from the node's first
/// authenticated packet (roaming). '' when not applicable.
pub(super) fn observed_endpoint(from: Option<std::net::SocketAddr>, endpoints: &[String]) -> String {
    seen_from(from, endpoints).unwrap_or_default()
}

/// What `from` says of where a node with `endpoints` is: nothing (None: no
/// address, one peers could not reach, or none of the node's endpoints is of
/// its family), that it is at one of its own endpoints (''), or the endpoint
/// it is observed at ([`observed_endpoint`]'s).
pub(super) fn seen_from(from: Option<std::net::SocketAddr>, endpoints: &[String]) -> Option<String> {
    let ip = from.map(|a| a.ip().to_canonical())?;
    let own: Vec<std::net::SocketAddr> = endpoints.iter().filter_map(|e| e.parse().ok()).collect();
    // Not where peers could not reach it either (the store also drops one
    // inside the overlay: a member that reaches the coordinator through the
    // tunnel is seen at its overlay address).
    if !reachable(ip) {
        return None;
    }
    if own.iter().any(|e| e.ip().to_canonical() == ip) {
        return Some(String::new());
    }
    let e = own.iter().find(|e| e.ip().to_canonical().is_ipv4() == ip.is_ipv4())?;
    Some(std::net::SocketAddr::new(ip, e.port()).to_string())
}

#[tonic::async_trait]
impl JoinService for Join {
    #[tracing::instrument(skip_all, fields(node = ?request.get_ref().name))]
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let from = request.remote_addr();
        let joined = self.0.failures.counted(from, self.join_checked(request)).await;
        // A refusal of a valid token's join (a name taken by another key, a
        // key by another name) is said here too: only the agent said it
        // (found by a review, 2026-12-07). Failed authentication is `pace`'s.
        if let Err(s) = &joined
            && matches!(s.code(), tonic::Code::AlreadyExists | tonic::Code::PermissionDenied)
        {
            tracing::warn!(?from, code = ?s.code(), why = ?s.message(), "join refused");
        }
        joined
    }

    async fn challenge(&self, _request: Request<ChallengeRequest>) -> Result<Response<JoinChallenge>, Status> {
        let (nonce, coordinator_key) = self.0.challenger.issue(now());
        Ok(Response::new(JoinChallenge { nonce, coordinator_key: coordinator_key.to_vec() }))
    }
}

impl Join {
    /// The join itself ([`JoinService::join`] counts its authentication failures).
    async fn join_checked(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let (from, local) = (request.remote_addr(), request.local_addr());
        let r = request.into_inner();
        let token = JoinToken::parse(&r.token).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if token.pin != self.0.pin {
            return Err(Error::Unauthenticated("this join token was issued by another coordinator".into()).into());
        }
        // Until its answer: a join may wait on the store past --authenticate-within.
        let busy = self.0.connections.busy(local, from);
        let name = r.name.trim().to_string();
        // A node named before the rules were tightened re-joins under its
        // name (after `--new-identity`, or a lost identity): the name is its.
        // Looked up in the map in memory: before the token is checked, a
        // database query here was work an outsider could have done at will,
        // answered INVALID_ARGUMENT and so never counted against its
        // source's budget (found by a review, 2026-12-06).
        if let Err(e) = check_name(&name)
            && !(legacy_name(&name) && self.0.store.with_map(|m| m.nodes.iter().any(|n| n.name == name)))
        {
            return Err(e.into());
        }
        let key = WgPublicKey::from_bytes(&r.public_key).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        check_key(&key)?;
        let endpoints = check_endpoints(&r.endpoints)?;
        // A proof is optional (a first join needs none), but one that is
        // sent must verify: a host that thinks it re-joins learns why not.
        let proven = !r.proof.is_empty() || !r.challenge.is_empty();
        if proven {
            self.0
                .challenger
                .verify(now(), &r.challenge, &name, key.as_bytes(), &r.proof)
                .map_err(|e| Error::Unauthenticated(e.to_string()))?;
        }
        // A proven re-join rewrites the node and sends every agent the
        // change (and this caller the map): paced like any call of that node.
        if proven
            && let Some((id, node)) = self.0.store.with_map(|m| {
                m.nodes
                    .iter()
                    .find(|n| n.name == name && n.public_key == key.as_bytes())
                    .map(|n| (n.id, n.name.clone()))
            })
        {
            self.0.pacer.pace(id, &node, super::pace::MAP_READ).await?;
        }
        let credential = new_secret();
        let joined = self
            .0
            .store
            .join(store::JoinRequest {
                token_id: token.id.clone(),
                token_secret_hash: hash_secret(&token.secret),
                name,
                public_key: *key.as_bytes(),
                observed: observed_endpoint(from, &endpoints),
                endpoints,
                credential_hash: hash_secret(&credential),
                proven,
            })
            .await?;
        if let Some(b) = &busy {
            b.authenticated();
        }
        tracing::info!(node = %joined.node.name, address = %joined.node.address, key = %key.to_base64().get(..8).unwrap_or(""), new = joined.new, token = %token.id, "node joined");
        metrics::counter!("weave_joins_total", "result" => if joined.new { "new" } else { "rejoin" }).increment(1);
        // Another node at one of its endpoints: most often this host under
        // its old name (joined again with a new key), whose peers then try
        // both at one address (found by a review, 2026-12-07).
        // Seen from the same place too (no NAT, or the same one): two sites
        // behind NATs of their own may both announce one private address.
        let shared = self.0.store.with_map(|m| {
            let mine = |e: &String| joined.node.endpoints.contains(e);
            m.nodes
                .iter()
                .filter(|n| n.id != joined.node.id && n.endpoints.iter().any(mine))
                .filter(|n| n.observed_endpoint == joined.node.observed_endpoint)
                .map(|n| n.name.clone())
                .collect::<Vec<_>>()
        });
        for other in shared {
            tracing::warn!(
                node = %joined.node.name, other,
                "a node joined at an endpoint another node announces too: if that one was this host before \
                 (joined again under a new name), remove it (`weavectl node rm {other}`); peers may reach the wrong one there"
            );
        }
        // The whole map is ~100 bytes a node: at 10,000 nodes, copying,
        // encoding and encrypting it was most of a join's cost. The agent
        // takes it from its first watch instead (the snapshot every new
        // watcher gets anyway); older callers still get it here.
        let map = if r.map_by_watch {
            v1::NetworkMap {
                revision: 0,
                range: self.0.cluster.range.to_string(),
                node_range: self.0.cluster.node_range.to_string(),
                dns_domain: self.0.cluster.dns_domain.clone(),
                segment_mtu: self.0.cluster.segment_mtu,
                ..Default::default()
            }
        } else {
            self.0.store.snapshot().await?
        };
        Ok(Response::new(JoinResponse { node: Some(joined.node), credential, map: Some(map) }))
    }
}

#[cfg(test)]
mod observed_tests {
    use super::observed_endpoint;

    #[test]
    fn the_observed_endpoint_is_the_source_address_with_the_port_of_an_endpoint_of_its_family() {
        let eps = |e: &[&str]| e.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let nat = Some("192.0.2.1:40000".parse().unwrap());
        assert_eq!(observed_endpoint(nat, &eps(&["198.51.100.2:6784"])), "192.0.2.1:6784");
        assert_eq!(
            observed_endpoint(Some("[::ffff:192.0.2.1]:1".parse().unwrap()), &eps(&["10.0.0.2:7"])),
            "192.0.2.1:7"
        );
        assert_eq!(observed_endpoint(nat, &eps(&["192.0.2.1:6784"])), "", "its own address");
        assert_eq!(observed_endpoint(nat, &eps(&["[2001:db8::2]:6784"])), "", "no endpoint of that family");
        assert_eq!(observed_endpoint(Some("127.0.0.1:5".parse().unwrap()), &eps(&["10.0.0.2:7"])), "");
        assert_eq!(observed_endpoint(Some("169.254.1.1:5".parse().unwrap()), &eps(&["10.0.0.2:7"])), "");
        assert_eq!(observed_endpoint(Some("[fe80::1]:5".parse().unwrap()), &eps(&["[2001:db8::2]:7"])), "");
        assert_eq!(observed_endpoint(None, &eps(&["10.0.0.2:7"])), "");
    }
}
