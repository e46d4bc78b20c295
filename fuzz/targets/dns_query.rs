//! DNS query parsing and answering (agent/src/dns.rs `DnsServer::respond`),
//! over UDP and TCP framing. Input: a byte stream as a TCP client would send
//! it (2-byte length, then the query, repeated); each query is answered as
//! over TCP and, as a datagram, as over UDP (with the size the UDP loop
//! reads from the query). No upstream is configured, so names outside the
//! domain get SERVFAIL without any I/O. The records come from a fixed map.
//! Invariants: no panic; every answer parses as a DNS response with the
//! query's id; a UDP answer fits the client's size.

use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use weave_agent::daemon::dns::DnsServer;
use weave_proto::v1::{DnsRecord, NetworkMap};

fn server() -> &'static DnsServer {
    static SERVER: OnceLock<DnsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = DnsServer::new("weave.local.", Vec::new());
        let record = |id: u64, name: &str, address: &str| DnsRecord {
            id,
            name: name.into(),
            address: address.into(),
            ..Default::default()
        };
        let map = NetworkMap {
            dns_records: vec![
                record(1, "web", "10.32.0.2/16"),
                record(2, "web", "10.32.0.3/16"),
                record(3, "db.weave.local", "10.32.0.4/16"),
                record(4, "v6", "fd00::4/64"),
                record(5, "Mixed.Case", "10.32.0.5/16"),
            ],
            ..Default::default()
        };
        server.update(&map);
        server
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    // A failure here is the harness's, not the code under test's.
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

fn check(query: &[u8], answer: Option<Vec<u8>>, udp_max: Option<u16>) {
    // No id to echo: no answer (the client gets nothing it could match).
    let Some(answer) = answer else {
        assert!(query.len() < 2, "a query with an id gets an answer");
        return;
    };
    let response = Message::from_vec(&answer).expect("the answer parses");
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert_eq!(response.metadata.id.to_be_bytes(), [query[0], query[1]], "the answer carries the query's id");
    if let Some(max) = udp_max {
        assert!(answer.len() <= max as usize, "UDP answer of {} bytes for a client of {max}", answer.len());
    }
}

pub fn run(data: &[u8]) {
    let server = server();
    let mut rest = data;
    let mut queries = 0;
    // The TCP loop: frames until the stream ends (a short frame ends it).
    while rest.len() >= 2 && queries < 16 {
        queries += 1;
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let Some(query) = rest.get(2..2 + len) else { break };
        rest = &rest[2 + len..];
        let tcp = runtime().block_on(server.respond(query, None));
        check(query, tcp, None);
        // The same bytes as one datagram, with the size the UDP loop takes from it.
        let max = Message::from_vec(query).map(|m| m.max_payload()).unwrap_or(512);
        let udp = runtime().block_on(server.respond(query, Some(max)));
        check(query, udp, Some(max));
    }
}
