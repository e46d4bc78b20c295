//! Writes the seed corpus (`fuzz/seeds/<target>/`): valid inputs of every
//! kind each target takes, so that fuzzing starts past the first checks.
//! Run from fuzz/: `cargo run --example seeds` (no sanitizer needed).
//! The router seeds hold real handshake messages, made with the fixed keys
//! the router targets use.
#[path = "../fuzz_targets/common/router.rs"]
mod common;

use std::{fs, net::Ipv4Addr, path::Path};

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{Name, RecordType},
};
use prost::Message as _;
use tun_rs::{VIRTIO_NET_HDR_LEN, VirtioNetHdr};
use weave_proto::v1::{
    Allocation, DnsRecord, MapChange, NetworkMap, Node, Subnet, WatchEvent, map_change::Change, watch_event::Event,
};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    fs::create_dir_all(&dir).expect("seed dir");
    fs::write(dir.join(name), bytes).expect("seed file");
}

/// `[source byte][length byte][datagram]`, as router_datagram reads.
fn record(src: u8, d: &[u8]) -> Vec<u8> {
    let mut r = vec![src, d.len() as u8];
    r.extend_from_slice(d);
    r
}

fn router() {
    let (a, b, c) = (common::node(1), common::node(2), common::node(3));
    a.router.set_peers(&[common::config(&b, Some(b.endpoint))], &a.wire);
    c.router.set_peers(&[common::config(&b, Some(b.endpoint))], &c.wire);
    let init_a = common::drain(&a).remove(0).1;
    let init_c = common::drain(&c).remove(0).1;
    write("router_datagram", "init", &record(0, &init_a));
    write("router_datagram", "init-moved", &record(2, &init_a));
    write("router_datagram", "init-twice", &[record(0, &init_a), record(3, &init_a)].concat());
    write("router_datagram", "init-other-peer", &record(1, &init_c));
    // b answers a; a cookie reply and a data packet shaped by hand.
    b.router.set_peers(&[common::config(&a, Some(a.endpoint))], &b.wire);
    common::drain(&b);
    common::receive(&b, a.endpoint, &init_a);
    let response = common::drain(&b).remove(0).1;
    write("router_datagram", "response", &record(1, &response));
    let mut cookie = vec![3, 0, 0, 0];
    cookie.extend_from_slice(&[0u8; 60]);
    write("router_datagram", "cookie", &record(2, &cookie));
    let mut data = vec![4, 0, 0, 0];
    data.extend_from_slice(&[0u8; 44]);
    write("router_datagram", "data", &record(0, &data));

    // router_session scripts: [setup] then [op, arg] pairs (see the target).
    let handshake = [0u8, 0x00, 0, 0x01, 0];
    let mut s = handshake.to_vec();
    s.extend_from_slice(&[0x04, 0x00, 5]);
    s.extend_from_slice(b"hello");
    s.extend_from_slice(&[0x05, 0x05, 3]);
    s.extend_from_slice(b"abc");
    write("router_session", "data-both-ways", &s);
    let mut s = handshake.to_vec();
    s.extend_from_slice(&[0x04, 0x01, 2, b'h', b'i', 0x08, 0x02, 0x24, 0x03, 1, b'x', 0x0e, 0]);
    write("router_session", "replay-and-spoof", &s);
    write("router_session", "corrupt-init", &[1, 0x10, 7, 0x01, 0, 0x00, 0, 0x0c, 0, 0x0f, 3]);
    let mut s = handshake.to_vec();
    s.extend_from_slice(&[0x04, 0x04, 1, b'w', 0x24, 0x06, 1, b'v', 0x14, 0x20, 4, 1, 2, 3, 4, 0x0a, 8]);
    s.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0]);
    write("router_session", "workloads-and-raw", &s);
}

fn ipv4_checksum(h: &mut [u8]) {
    h[10] = 0;
    h[11] = 0;
    let mut sum: u32 = h.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// An IPv4 TCP (proto 6) or UDP (17) packet with a valid IP header checksum.
fn packet(proto: u8, id: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let th = if proto == 6 { 20 } else { 8 };
    let len = 20 + th + payload.len();
    let mut p = common::ipv4(Ipv4Addr::new(10, 32, 0, 1), Ipv4Addr::new(10, 32, 0, 2), proto, &[]);
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6] = 0x40; // DF
    ipv4_checksum(&mut p[..20]);
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&80u16.to_be_bytes());
    if proto == 6 {
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
    }
    p.extend_from_slice(payload);
    p
}

fn hdr(gso_type: u8, hdr_len: u16, gso_size: u16, csum_offset: u16) -> Vec<u8> {
    let h = VirtioNetHdr { flags: 1, gso_type, hdr_len, gso_size, csum_start: 20, csum_offset };
    let mut b = vec![0u8; VIRTIO_NET_HDR_LEN];
    h.encode(&mut b).expect("header encodes");
    b
}

fn tun() {
    let payload = vec![0x61u8; 3000];
    write("tun_gso_split", "tcp4", &[hdr(1, 40, 1000, 16), packet(6, 1, 1, &payload)].concat());
    write("tun_gso_split", "udp4", &[hdr(5, 28, 1200, 6), packet(17, 1, 0, &payload)].concat());
    write("tun_gso_split", "tcp4-short-tail", &[hdr(1, 40, 1400, 16), packet(6, 1, 1, &payload[..1500])].concat());
    let mut v6 = vec![0x60, 0, 0, 0, 0x0b, 0xcc, 6, 64];
    v6.extend_from_slice(&[0xfd; 32]);
    v6.extend_from_slice(&packet(6, 0, 7, &payload)[20..]);
    let mut h6 = hdr(4, 60, 1000, 16);
    h6[6..8].copy_from_slice(&40u16.to_le_bytes()); // csum_start 40
    write("tun_gso_split", "tcp6", &[h6, v6].concat());

    let mut batch = vec![1u8];
    for i in 0..4u32 {
        let p = packet(6, i as u16 + 1, 1 + i * 1000, &payload[..1000]);
        batch.extend_from_slice(&(p.len() as u16).to_be_bytes());
        batch.extend_from_slice(&p);
    }
    write("tun_gro", "tcp-flow", &batch);
    let mut batch = vec![1u8];
    for i in 0..3u16 {
        let p = packet(17, i + 1, 0, &payload[..1200]);
        batch.extend_from_slice(&(p.len() as u16).to_be_bytes());
        batch.extend_from_slice(&p);
    }
    write("tun_gro", "udp-flow", &batch);
}

fn dns() {
    let frame = |m: &Message| {
        let b = m.to_vec().expect("query encodes");
        [(b.len() as u16).to_be_bytes().to_vec(), b].concat()
    };
    let query = |id: u16, name: &str, t: RecordType, edns: bool| {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
        if edns {
            m.edns = Some(Edns::new());
        }
        m
    };
    write("dns_query", "a-web", &frame(&query(1, "web", RecordType::A, false)));
    write("dns_query", "aaaa-v6-edns", &frame(&query(2, "v6.weave.local.", RecordType::AAAA, true)));
    write("dns_query", "ptr", &frame(&query(3, "2.0.32.10.in-addr.arpa.", RecordType::PTR, false)));
    write(
        "dns_query",
        "several",
        &[
            frame(&query(4, "db", RecordType::ANY, true)),
            frame(&query(5, "nope.weave.local.", RecordType::A, false)),
            frame(&query(6, "example.com.", RecordType::A, false)),
            frame(&query(7, "MIXED.case", RecordType::MX, false)),
        ]
        .concat(),
    );
}

fn map() {
    let ev = |revision: u64, event: Event| WatchEvent { revision, event: Some(event) }.encode_length_delimited_to_vec();
    let change = |c: Change| Event::Change(MapChange { change: Some(c) });
    let node = |id: u64| Node {
        id,
        name: format!("h{id}"),
        public_key: vec![id as u8; 32],
        address: format!("10.47.0.{id}"),
        endpoints: vec![format!("192.0.2.{id}:6784")],
        ..Default::default()
    };
    let snapshot = NetworkMap {
        revision: 3,
        node_range: "10.47.0.0/16".into(),
        nodes: vec![node(1), node(2)],
        subnets: vec![Subnet { id: 1, cidr: "10.32.0.0/16".into(), vni: 4242, is_default: true, ..Default::default() }],
        allocations: vec![Allocation {
            id: 1,
            node_id: 2,
            subnet_id: 1,
            address: "10.32.0.2/16".into(),
            container: "c1".into(),
            ..Default::default()
        }],
        dns_records: vec![DnsRecord {
            id: 1,
            name: "web.weave.local.".into(),
            address: "10.32.0.2/16".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut s = ev(3, Event::Snapshot(snapshot));
    s.extend(ev(4, change(Change::NodeUpserted(node(3)))));
    s.extend(ev(
        5,
        change(Change::AllocationAdded(Allocation {
            id: 2,
            node_id: 3,
            subnet_id: 1,
            address: "10.32.0.3/16".into(),
            container: "host:h3".into(),
            ..Default::default()
        })),
    ));
    s.extend(ev(6, change(Change::NodeRemoved(2))));
    s.extend(ev(7, change(Change::SubnetRemoved(1))));
    s.extend(ev(8, change(Change::DnsRecordRemoved(1))));
    write("map_change", "snapshot-then-changes", &s);
    write(
        "map_change",
        "changes-only",
        &ev(
            1,
            change(Change::SubnetAdded(Subnet { id: 2, cidr: "10.40.0.0/24".into(), vni: 7, ..Default::default() })),
        ),
    );
}

fn text() {
    let pin = "sha256:".to_string() + &"ab".repeat(32);
    write("token_parse", "pin", pin.as_bytes());
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let (addr, p, secret) = (b64(b"192.0.2.1:6783"), b64(&[7u8; 32]), b64(&[9u8; 32]));
    write("token_parse", "join", format!("wv1.{addr}.{p}.0123456789abcdef.{secret}").as_bytes());
    write("token_parse", "admin", format!("wva1.{addr}.{p}.{secret}").as_bytes());
    write(
        "token_parse",
        "join-v6",
        format!("wv1.{}.{p}.0123456789ABCDEF.{secret}\n", b64(b"[2001:db8::1]:6783")).as_bytes(),
    );

    let lines = [
        r#"{"method":"status"}"#,
        r#"{"method":"dns_lookup","name":"web"}"#,
        r#"{"method":"attach","container":"/proc/1/ns/net","name":"web","addrs":["net:default","ip:10.32.0.9/16","net:10.40.0.0/24"]}"#,
        r#"{"method":"detach","container":"c","id":"cni:x","ifname":"eth0","addrs":[]}"#,
        r#"{"method":"allocate","container":"c","subnet":"default"}"#,
        r#"{"method":"expose","addrs":["10.32.0.1/16"]}"#,
        r#"{"dns":{"name":"web","addresses":["10.32.0.2"]}}"#,
        r#"{"status":{"node_id":1,"name":"h1","address":"10.47.0.1","endpoint":"192.0.2.1:6784","revision":3,"coordinator_connected":true,"segments":[{"subnet":"10.32.0.0/16","vni":1,"bridge":"weave1","mtu":1370}],"peers":[{"node_id":2,"name":"h2","address":"10.47.0.2","endpoint":null,"handshake_age_secs":1.5,"tx_bytes":1,"rx_bytes":2,"dropped_spoofed":0}]}}"#,
        r#""done""#,
        r#"{"error":"no"}"#,
    ];
    for (i, l) in lines.iter().enumerate() {
        write("local_api_request", &format!("line{i}"), l.as_bytes());
    }
    let conf = r#"{"cniVersion":"1.0.0","name":"weave","type":"weave-cni","subnet":"10.40.0.0/24","multicast":false,"prevResult":{"ips":[{"address":"10.40.0.2/24"}]}}"#;
    write("cni_config", "add", format!("ADD\0abc123\0eth0\0/var/run/netns/x\0{conf}").as_bytes());
    write(
        "cni_config",
        "del",
        "DEL\0abc123\0eth0\0\0{\"cniVersion\":\"1.0.0\",\"name\":\"w\",\"type\":\"weave-cni\"}".as_bytes(),
    );
    write(
        "cni_config",
        "check",
        "CHECK\0a\"b\0e\nth0\0/x\0{\"cniVersion\":\"0.4.0\",\"name\":\"w\",\"type\":\"weave-cni\"}".as_bytes(),
    );
}

fn main() {
    router();
    tun();
    dns();
    map();
    text();
}
