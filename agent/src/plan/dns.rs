//! DNS answers for workloads, as pure values: the map's records indexed for
//! lookups, and the answer to one query (see the daemon's DNS server for the
//! sockets).
//!
//! Names in the cluster domain (`weave.local.`) are answered here: A/AAAA from
//! the records (several per name, shuffled per answer), PTR for known
//! addresses (NXDOMAIN for others in the cluster's range), NXDOMAIN for
//! unknown names (NOERROR for the domain and names with names below them),
//! TTL 1, and a negative answer carries its zone's SOA (RFC 2308: negative
//! caching for 1 s); other opcodes are NOTIMP, EDNS versions above 0
//! BADVERS; single-label names are
//! qualified with the domain, and matching ignores case. Every other query is
//! relayed upstream by the server. Answers too big for the client's UDP size
//! are sent truncated, so the client retries over TCP.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, PTR, SOA},
    },
};
use rand::seq::SliceRandom;
use weave_proto::v1::NetworkMap;

pub const DEFAULT_DOMAIN: &str = "weave.local.";
/// As Weave: records change as containers come and go.
pub const TTL: u32 = 1;
/// What we advertise (and use) as our EDNS UDP size.
const EDNS_PAYLOAD: u16 = 1232;

/// The records of one map, indexed for answers. Pure data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Records {
    /// Lower case, with a trailing dot.
    pub domain: String,
    pub by_name: HashMap<String, Vec<IpAddr>>,
    pub by_address: HashMap<IpAddr, Vec<String>>,
    /// Names under the domain that have none of their own but some below
    /// them (`b.weave.local.` of `a.b.weave.local.`), and the domain itself:
    /// NOERROR with no data, not NXDOMAIN, which says nothing exists below
    /// (RFC 8020) and lets a caching resolver deny the whole subtree.
    pub non_terminals: HashSet<String>,
    /// The cluster's range: a reverse name in it with no record is answered
    /// NXDOMAIN here, not relayed upstream (RFC 6303's idea: the overlay's
    /// addresses are nobody else's to answer for, and not to leak).
    pub range: Option<ipnet::Ipv4Net>,
}

impl Records {
    pub fn from_map(map: &NetworkMap, default_domain: &str) -> Self {
        let domain = if map.dns_domain.is_empty() { default_domain } else { &map.dns_domain };
        let mut records = Records { domain: fqdn_lower(domain), range: map.range.parse().ok(), ..Default::default() };
        records.non_terminals.insert(records.domain.clone());
        // Each (name, address) pair once, in the map's order. One set, not a
        // scan of each list: a member may give one address thousands of names
        // (its quota), and every agent rebuilds this on every map change
        // (the scans made that quadratic: 0.23 s for 8,192 names, found by a
        // review, 2026-12-04).
        let mut seen = HashSet::with_capacity(map.dns_records.len());
        for r in &map.dns_records {
            let Ok(ip) = r.address.split('/').next().unwrap_or_default().parse::<IpAddr>() else { continue };
            let name = fqdn_lower(&r.name);
            if !seen.insert((name.clone(), ip)) {
                continue;
            }
            let mut above = name.as_str();
            while let Some((_, parent)) = above.split_once('.')
                && parent.len() > records.domain.len()
                && parent.ends_with(&records.domain)
            {
                records.non_terminals.insert(parent.to_string());
                above = parent;
            }
            records.by_name.entry(name.clone()).or_default().push(ip);
            records.by_address.entry(ip).or_default().push(name);
        }
        records
    }

    /// The addresses of `name` (qualified with the domain if it has one label).
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        self.by_name.get(&qualify(name, &self.domain)).cloned().unwrap_or_default()
    }

    pub fn in_domain(&self, qualified: &str) -> bool {
        qualified == self.domain || qualified.ends_with(&format!(".{}", self.domain))
    }

    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

pub fn fqdn_lower(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// Lower case, trailing dot, and a single label gets the domain appended
/// (`Web` -> `web.weave.local.`), as Weave resolved unqualified names.
pub fn qualify(name: &str, domain: &str) -> String {
    let n = fqdn_lower(name);
    let labels = n.trim_end_matches('.');
    if !labels.is_empty() && !labels.contains('.') { format!("{n}{domain}") } else { n }
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa.` -> 1.2.3.4,
/// and the 32-nibble `ip6.arpa.` form.
pub fn ptr_address(name: &str) -> Option<IpAddr> {
    let n = fqdn_lower(name);
    if let Some(rest) = n.strip_suffix(".in-addr.arpa.") {
        let parts: Vec<u8> = rest.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        let [d, c, b, a] = parts[..] else { return None };
        return Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    }
    let rest = n.strip_suffix(".ip6.arpa.")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|p| if p.len() == 1 { u8::from_str_radix(p, 16).ok() } else { None })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.iter().rev().collect::<Vec<_>>().chunks(2).enumerate() {
        bytes[i] = (pair[0] << 4) | pair[1];
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// What to do with a query.
#[derive(Debug)]
pub enum Answer {
    /// Answered here: the encoded response.
    Local(Message),
    /// Not ours: relay the query upstream unchanged.
    Forward,
}

/// Builds the answer to `query` from `records` (shuffling with `rng`). Pure.
pub fn answer(records: &Records, query: &Message, rng: &mut impl rand::Rng) -> Answer {
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.edns = Some(edns);
    }
    if query.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return Answer::Local(response);
    }
    // RFC 6891 6.1.3: a version not implemented is BADVERS, with our own (0).
    if query.edns.as_ref().is_some_and(|e| e.version() > 0) {
        response.metadata.response_code = ResponseCode::BADVERS;
        return Answer::Local(response);
    }
    let (Some(q), MessageType::Query, 1) = (query.queries.first(), query.metadata.message_type, query.queries.len())
    else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Answer::Local(response);
    };
    let asked = q.name().to_ascii();
    let qtype = q.query_type();
    if qtype == RecordType::PTR {
        let Some(ip) = ptr_address(&asked) else { return Answer::Forward };
        let Some(names) = records.by_address.get(&ip) else {
            let ours = matches!((ip, records.range), (IpAddr::V4(v4), Some(range)) if range.contains(&v4));
            if !ours {
                return Answer::Forward;
            }
            response.metadata.authoritative = true;
            response.metadata.response_code = ResponseCode::NXDomain;
            if let (IpAddr::V4(v4), Some(range)) = (ip, records.range) {
                response.add_authority(soa(&reverse_zone(v4, range.prefix_len()), &records.domain));
            }
            return Answer::Local(response);
        };
        response.metadata.authoritative = true;
        for n in names {
            let Ok(target) = Name::from_ascii(n) else { continue };
            response.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(target))));
        }
        return Answer::Local(response);
    }
    let name = qualify(&asked, &records.domain);
    if !records.in_domain(&name) {
        return Answer::Forward;
    }
    response.metadata.authoritative = true;
    let Some(addrs) = records.by_name.get(&name) else {
        if !records.non_terminals.contains(&name) {
            response.metadata.response_code = ResponseCode::NXDomain;
        }
        response.add_authority(soa(&records.domain, &records.domain));
        return Answer::Local(response);
    };
    let mut addrs = addrs.clone();
    addrs.shuffle(rng);
    for ip in addrs {
        let rdata = match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
            // The name exists: NOERROR with no data for other types.
            _ => continue,
        };
        response.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
    }
    if response.answers.is_empty() {
        response.add_authority(soa(&records.domain, &records.domain));
    }
    Answer::Local(response)
}

/// The SOA of zone `apex` (the cluster domain, or a reverse zone of its
/// range) for the authority section of a negative answer: its minimum, and
/// so how long a resolver may cache that a name or type does not exist, is
/// [`TTL`], as CoreDNS names its own (`ns.dns.<domain>`, `hostmaster.<domain>`).
fn soa(apex: &str, domain: &str) -> Record {
    let name = |n: &str| Name::from_ascii(n).unwrap_or_else(|_| Name::root());
    let rdata =
        SOA::new(name(&format!("ns.dns.{domain}")), name(&format!("hostmaster.{domain}")), 1, 7200, 1800, 86400, TTL);
    Record::from_rdata(name(apex), TTL, RData::SOA(rdata))
}

/// The reverse zone of `ip` in a range of `prefix` bits: its first octets, as
/// many as the prefix covers rounded up to whole octets (`32.10.in-addr.arpa.`
/// for 10.32.0.9 in 10.32.0.0/12).
fn reverse_zone(ip: Ipv4Addr, prefix: u8) -> String {
    let octets = usize::from(prefix.div_ceil(8).min(4));
    let labels: Vec<String> = ip.octets()[..octets].iter().rev().map(u8::to_string).collect();
    labels.iter().map(|l| format!("{l}.")).collect::<String>() + "in-addr.arpa."
}

/// Encodes `response` for UDP: if it is bigger than the client said it can
/// take, only the header and question go, with the TC bit (the client then
/// asks again over TCP).
pub fn encode_udp(response: &Message, client_max: u16) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= client_max as usize {
        return Some(bytes);
    }
    let mut short = Message::response(response.metadata.id, response.metadata.op_code);
    short.metadata = response.metadata;
    short.metadata.truncation = true;
    short.queries = response.queries.clone();
    short.edns = response.edns.clone();
    short.to_vec().ok()
}

/// The nameservers of a resolv.conf, port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use rand::SeedableRng;
    use weave_proto::v1::DnsRecord;

    fn map() -> NetworkMap {
        let rec = |id, name: &str, address: &str| DnsRecord {
            id,
            name: name.into(),
            address: address.into(),
            ..Default::default()
        };
        NetworkMap {
            dns_domain: "weave.local.".into(),
            dns_records: vec![
                rec(1, "web.weave.local.", "10.32.0.1"),
                rec(2, "web.weave.local.", "10.32.0.2"),
                rec(3, "db.weave.local.", "10.32.0.3/12"),
                rec(4, "v6.weave.local.", "fd00::1"),
            ],
            ..Default::default()
        }
    }

    fn ask(name: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m
    }

    fn local(records: &Records, name: &str, t: RecordType, seed: u64) -> Message {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        match answer(records, &ask(name, t), &mut rng) {
            Answer::Local(m) => m,
            Answer::Forward => panic!("{name} was forwarded"),
        }
    }

    fn addrs(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn qualifies_single_labels_and_lowercases() {
        assert_eq!(qualify("Web", "weave.local."), "web.weave.local.");
        assert_eq!(qualify("web.", "weave.local."), "web.weave.local.");
        assert_eq!(qualify("WEB.Weave.Local", "weave.local."), "web.weave.local.");
        assert_eq!(qualify("example.com.", "weave.local."), "example.com.");
    }

    #[test]
    fn parses_reverse_names() {
        assert_eq!(ptr_address("4.3.2.10.in-addr.arpa."), Some("10.2.3.4".parse().unwrap()));
        assert_eq!(ptr_address("4.3.2.10.IN-ADDR.ARPA"), Some("10.2.3.4".parse().unwrap()));
        assert_eq!(ptr_address("3.2.10.in-addr.arpa."), None);
        assert_eq!(ptr_address("x.3.2.10.in-addr.arpa."), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(ptr_address(v6), Some("fd00::1".parse().unwrap()));
        assert_eq!(ptr_address("web.weave.local."), None);
    }

    #[test]
    fn builds_records_from_the_map() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        assert_eq!(r.len(), 4);
        assert_eq!(r.lookup("db"), vec!["10.32.0.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.lookup("nope"), Vec::<IpAddr>::new());
        let empty = NetworkMap::default();
        assert_eq!(Records::from_map(&empty, "other.").domain, "other.");
    }

    #[test]
    fn each_name_and_address_pair_once_in_the_maps_order() {
        let mut m = map();
        // Case and the trailing dot do not make another pair; a prefix length does not either.
        for (name, address) in [("WEB.weave.local", "10.32.0.2/12"), ("web.weave.local.", "10.32.0.1")] {
            m.dns_records.push(DnsRecord { name: name.into(), address: address.into(), ..Default::default() });
        }
        // One address with a member's whole quota of names, twice over.
        for round in 0..2 {
            for i in 0..8192 {
                let name = format!("n{i}.weave.local.");
                m.dns_records.push(DnsRecord { id: round, name, address: "10.32.0.9".into(), ..Default::default() });
            }
        }
        let r = Records::from_map(&m, DEFAULT_DOMAIN);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(r.lookup("web"), [ip("10.32.0.1"), ip("10.32.0.2")]);
        let names = &r.by_address[&ip("10.32.0.9")];
        assert_eq!(names.len(), 8192);
        assert!(names.iter().enumerate().all(|(i, n)| *n == format!("n{i}.weave.local.")));
        assert_eq!(r.by_address[&ip("10.32.0.1")], ["web.weave.local."]);
        assert_eq!(r.len(), 4 + 8192);
    }

    #[test]
    fn answers_a_with_every_record_shuffled_and_ttl_1() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        let mut orders = std::collections::HashSet::new();
        for seed in 0..20 {
            let m = local(&r, "web.weave.local.", RecordType::A, seed);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.answers.iter().all(|a| a.ttl == TTL));
            let mut got = addrs(&m);
            orders.insert(got.clone());
            got.sort();
            assert_eq!(got, ["10.32.0.1", "10.32.0.2"]);
        }
        assert_eq!(orders.len(), 2, "both orders over 20 answers");
    }

    #[test]
    fn unqualified_and_mixed_case_names_resolve() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        assert_eq!(addrs(&local(&r, "DB.", RecordType::A, 1)), ["10.32.0.3"]);
        assert_eq!(addrs(&local(&r, "Db.WEAVE.local.", RecordType::A, 1)), ["10.32.0.3"]);
    }

    #[test]
    fn aaaa_ptr_and_nxdomain() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        assert_eq!(addrs(&local(&r, "v6.weave.local.", RecordType::AAAA, 1)), ["fd00::1"]);
        let none = local(&r, "v6.weave.local.", RecordType::A, 1);
        assert_eq!((none.metadata.response_code, none.answers.len()), (ResponseCode::NoError, 0));
        let ptr = local(&r, "3.0.32.10.in-addr.arpa.", RecordType::PTR, 1);
        assert_eq!(addrs(&ptr), ["db.weave.local."]);
        let nx = local(&r, "nope.weave.local.", RecordType::A, 1);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        // Negative answers carry the zone's SOA (RFC 2308), minimum 1 s; positive ones none.
        for m in [&none, &nx] {
            let soa = m.authorities.iter().map(|a| (a.name.to_ascii(), a.data.to_string())).collect::<Vec<_>>();
            let want = "ns.dns.weave.local. hostmaster.weave.local. 1 7200 1800 86400 1";
            assert_eq!(soa, [("weave.local.".to_string(), want.to_string())]);
        }
        assert!(ptr.authorities.is_empty());
    }

    #[test]
    fn other_opcodes_are_notimp_and_other_edns_versions_badvers() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut notify = ask("web.weave.local.", RecordType::SOA);
        notify.metadata.op_code = OpCode::Notify;
        let Answer::Local(m) = answer(&r, &notify, &mut rng) else { panic!("forwarded") };
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        let mut v1 = ask("example.com.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(1);
        v1.edns = Some(edns);
        let Answer::Local(m) = answer(&r, &v1, &mut rng) else { panic!("forwarded") };
        let wire = Message::from_vec(&m.to_vec().unwrap()).unwrap();
        // 16 (BADVERS and BADSIG share it: hickory reads it back as the latter).
        assert_eq!(u16::from(wire.metadata.response_code), 16);
        assert_eq!(wire.edns.map(|e| e.version()), Some(0));
    }

    /// The domain itself and a name with names below it exist (NOERROR, no
    /// data); a reverse name in the cluster's range with no record is
    /// NXDOMAIN here, not asked upstream (found by a review, 2026-12-04).
    #[test]
    fn empty_non_terminals_exist_and_the_ranges_reverse_names_stay_here() {
        let mut m = map();
        m.range = "10.32.0.0/12".into();
        m.dns_records.push(DnsRecord {
            name: "a.b.c.weave.local.".into(),
            address: "10.32.0.9".into(),
            ..Default::default()
        });
        let r = Records::from_map(&m, DEFAULT_DOMAIN);
        for name in ["weave.local.", "b.c.weave.local.", "C.weave.local."] {
            let m = local(&r, name, RecordType::A, 1);
            assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0), "{name}");
        }
        for name in ["x.b.c.weave.local.", "c.b.weave.local."] {
            assert_eq!(local(&r, name, RecordType::A, 1).metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
        let nx = local(&r, "99.0.33.10.in-addr.arpa.", RecordType::PTR, 1);
        assert!(nx.metadata.authoritative && nx.metadata.response_code == ResponseCode::NXDomain);
        assert_eq!(nx.authorities[0].name.to_ascii(), "33.10.in-addr.arpa.");
        assert_eq!(reverse_zone("10.2.3.4".parse().unwrap(), 24), "3.2.10.in-addr.arpa.");
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        assert!(matches!(answer(&r, &ask("1.0.48.10.in-addr.arpa.", RecordType::PTR), &mut rng), Answer::Forward));
    }

    #[test]
    fn other_names_and_unknown_addresses_go_upstream() {
        let r = Records::from_map(&map(), DEFAULT_DOMAIN);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        assert!(matches!(answer(&r, &ask("example.com.", RecordType::A), &mut rng), Answer::Forward));
        assert!(matches!(answer(&r, &ask("9.9.9.9.in-addr.arpa.", RecordType::PTR), &mut rng), Answer::Forward));
    }

    #[test]
    fn big_answers_are_truncated_for_udp() {
        let mut m = map();
        m.dns_records = (1..=50)
            .map(|i| DnsRecord {
                id: i,
                name: "many.weave.local.".into(),
                address: format!("10.40.0.{i}"),
                ..Default::default()
            })
            .collect();
        let r = Records::from_map(&m, DEFAULT_DOMAIN);
        let full = local(&r, "many", RecordType::A, 1);
        assert_eq!(full.answers.len(), 50);
        let short = Message::from_vec(&encode_udp(&full, 512).unwrap()).unwrap();
        assert!(short.metadata.truncation && short.answers.is_empty());
        let fits = Message::from_vec(&encode_udp(&full, 4096).unwrap()).unwrap();
        assert!(!fits.metadata.truncation && fits.answers.len() == 50);
    }

    #[test]
    fn reads_nameservers_from_resolv_conf() {
        let text = "# c\nsearch x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver bad\noptions ndots:1\n";
        assert_eq!(parse_resolv_conf(text), ["192.0.2.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    }
}
