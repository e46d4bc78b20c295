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
        DNSClass, Name, RData, Record, RecordType,
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
    /// The cluster's subnets (a Docker network's may lie outside the
    /// range, IPv6 ones always do): their reverse names stay here too (they
    /// were relayed upstream; found by a review, 2026-12-05).
    pub subnets: Vec<ipnet::IpNet>,
}

impl Records {
    pub fn from_map(map: &NetworkMap, default_domain: &str) -> Self {
        let domain = if map.dns_domain.is_empty() { default_domain } else { &map.dns_domain };
        let mut records = Records { domain: fqdn_lower(domain), range: map.range.parse().ok(), ..Default::default() };
        records.non_terminals.insert(records.domain.clone());
        records.subnets = map.subnets.iter().filter_map(|s| s.cidr.parse().ok()).collect();
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

/// [`qualify`], and a label under the scope label of one of the cluster's
/// subnets gets the domain too (`db.10-2-3-0-24`: a Docker network's alias
/// asked in full from another network); under a label that only looks like
/// one (no such subnet) it is some other name.
fn qualify_in(records: &Records, name: &str) -> String {
    let n = qualify(name, &records.domain);
    let under_scope = n.trim_end_matches('.').split_once('.').is_some_and(|(_, scope)| {
        let subnet = weave_proto::dns_name::scope_subnet(scope);
        subnet.is_some_and(|s| records.subnets.contains(&ipnet::IpNet::V4(s)))
    });
    if under_scope { format!("{n}{}", records.domain) } else { n }
}

/// An `in-addr.arpa.` name of 1-4 labels: the network its labels name (its
/// address, and the bits they fix).
fn reverse_network(name: &str) -> Option<ipnet::Ipv4Net> {
    let rest = fqdn_lower(name).strip_suffix(".in-addr.arpa.")?.to_string();
    let labels: Vec<u8> = rest.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if labels.is_empty() || labels.len() > 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (i, l) in labels.iter().rev().enumerate() {
        octets[i] = *l;
    }
    ipnet::Ipv4Net::new(Ipv4Addr::from(octets), 8 * labels.len() as u8).ok()
}

/// A reverse name inside the cluster's range or a subnet: the reverse zone
/// that answers for it, and its address if it names a whole one.
fn reverse_of_ours(records: &Records, name: &str) -> Option<(String, Option<IpAddr>)> {
    let net = reverse_network(name)?;
    let range = records.range.filter(|r| r.contains(&net));
    let ours = range
        .map(ipnet::IpNet::V4)
        .or_else(|| records.subnets.iter().copied().find(|s| matches!(s, ipnet::IpNet::V4(v4) if v4.contains(&net))))?;
    let full = (net.prefix_len() == 32).then_some(IpAddr::V4(net.addr()));
    // The zone of the asked name, as the PTR answers name it (the range's
    // own address gave `32.10.` for `44.10.` in 10.32.0.0/12; a review).
    Some((reverse_zone(net.addr(), ours.prefix_len()), full))
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

/// Builds the answer to `query` from `records` (shuffling with `rng`), for
/// a container on networks of `scopes` ([`scoped`]). Pure.
pub fn answer(records: &Records, query: &Message, scopes: &[String], rng: &mut impl rand::Rng) -> Answer {
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
    // Class IN only, for every name that is ours (reverse ones too): another
    // class is refused, and what is not ours is relayed as before.
    if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
        let ours = records.in_domain(&qualify_in(records, &asked))
            || reverse_of_ours(records, &asked).is_some()
            || ptr_address(&asked).is_some_and(|ip| records.by_address.contains_key(&ip));
        if !ours {
            return Answer::Forward;
        }
        response.metadata.response_code = ResponseCode::Refused;
        return Answer::Local(response);
    }
    // A reverse name in the cluster's range that is not a PTR question of
    // one address (another type, or a zone's name like `32.10.in-addr.arpa.`)
    // is ours too: no data, or no such name under an address that has none,
    // never relayed. They went upstream, telling it which overlay addresses
    // containers look up, and its answers came back (found by a review,
    // 2026-12-07).
    if let Some((ours, full)) =
        reverse_of_ours(records, &asked).filter(|(_, full)| qtype != RecordType::PTR || full.is_none())
    {
        response.metadata.authoritative = true;
        if full.is_some_and(|ip| !records.by_address.contains_key(&ip)) {
            response.metadata.response_code = ResponseCode::NXDomain;
        }
        response.add_authority(soa(&ours, &records.domain));
        return Answer::Local(response);
    }
    // PTR of a name that is no reverse name (`w2.weave.local`): answered as
    // any other type of that name below (it went upstream, and the
    // upstream's records for a weave name came back; a review, 2026-12-07).
    if let (RecordType::PTR, Some(ip)) = (qtype, ptr_address(&asked)) {
        let Some(names) = records.by_address.get(&ip) else {
            let range = records.range.map(ipnet::IpNet::V4).filter(|r| r.contains(&ip));
            let Some(ours) = range.or_else(|| records.subnets.iter().copied().find(|s| s.contains(&ip))) else {
                return Answer::Forward;
            };
            response.metadata.authoritative = true;
            response.metadata.response_code = ResponseCode::NXDomain;
            let zone = match ip {
                IpAddr::V4(v4) => reverse_zone(v4, ours.prefix_len()),
                IpAddr::V6(v6) => reverse_zone6(v6, ours.prefix_len()),
            };
            response.add_authority(soa(&zone, &records.domain));
            return Answer::Local(response);
        };
        response.metadata.authoritative = true;
        for n in names {
            let Ok(target) = Name::from_ascii(n) else { continue };
            response.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(target))));
        }
        return Answer::Local(response);
    }
    // localhost is the host itself, answered here as RFC 6761 asks of a
    // caching server: loopback for addresses, no data for other types.
    let lower = fqdn_lower(&asked);
    if lower == "localhost." || lower.ends_with(".localhost.") {
        let rdata = match qtype {
            RecordType::A => Some(RData::A(A(Ipv4Addr::LOCALHOST))),
            RecordType::AAAA => Some(RData::AAAA(AAAA(std::net::Ipv6Addr::LOCALHOST))),
            _ => None,
        };
        response.metadata.authoritative = true;
        response.answers.extend(rdata.map(|r| Record::from_rdata(q.name().clone(), TTL, r)));
        return Answer::Local(response);
    }
    let name = qualify_in(records, &asked);
    if !records.in_domain(&name) {
        return Answer::Forward;
    }
    // The domain's own SOA is its answer (it was only ever in negative
    // answers; a review, 2026-12-07).
    if name == records.domain && matches!(qtype, RecordType::SOA | RecordType::ANY) {
        response.metadata.authoritative = true;
        response.add_answer(soa(&records.domain, &records.domain));
        return Answer::Local(response);
    }
    let scoped = scoped(records, &name, scopes);
    let found = scoped.as_ref().or_else(|| records.by_name.get(&name));
    // A single label the domain does not have is some other name (`nas` on
    // the LAN, `com`): the upstream's, as Docker's resolver and Weave Net
    // relay it (answered NXDOMAIN with weave.local.'s SOA, `NS com` told a
    // resolver in the container "nothing exists under com.", RFC 8020, and
    // `ping nas` failed where the LAN's resolver knows it; reviews,
    // 2026-12-05). The price: a container's short name asked in the moment
    // it has none (a restart) is asked upstream too; `db.weave.local` never is.
    let single_label = !lower.trim_end_matches('.').contains('.');
    if single_label && found.is_none() && !records.non_terminals.contains(&name) {
        return Answer::Forward;
    }
    response.metadata.authoritative = true;
    let Some(addrs) = found else {
        if !records.non_terminals.contains(&name) {
            response.metadata.response_code = ResponseCode::NXDomain;
        }
        response.add_authority(soa(&records.domain, &records.domain));
        return Answer::Local(response);
    };
    let mut addrs = on_networks(addrs, scopes);
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

/// The addresses of a one-label name of the domain (`db.weave.local.`) in
/// the first of the asking container's `scopes` that has it
/// (`db.<scope>.weave.local.`): a Docker network's aliases live under its
/// scope ([`scope_of`]), as Docker's aliases are the network's own, and
/// shadow a name of the whole cluster for the network's containers.
/// Only a scoped record's addresses inside the scope's subnet count: the
/// coordinator refuses others now, but a record from before (or from a
/// member) pointing elsewhere must not answer the network's containers in
/// place of a name another holds (found by a review, 2026-12-05).
fn scoped(records: &Records, name: &str, scopes: &[String]) -> Option<Vec<IpAddr>> {
    let label = name.strip_suffix(&records.domain)?.strip_suffix('.')?;
    if label.is_empty() || label.contains('.') {
        return None;
    }
    // A subnet the asker is only on (`NETWORK_ONLY`) lends it no aliases.
    scopes.iter().filter(|s| !s.starts_with(NETWORK_ONLY)).find_map(|scope| {
        let net = weave_proto::dns_name::scope_subnet(scope)?;
        let found = records.by_name.get(&format!("{label}.{scope}.{}", records.domain))?;
        let inside: Vec<IpAddr> =
            found.iter().copied().filter(|ip| matches!(ip, IpAddr::V4(v4) if net.contains(v4))).collect();
        (!inside.is_empty()).then_some(inside)
    })
}

/// Of a name's addresses, those on the asking container's networks (its
/// `scopes`' subnets), if any are: a container on two weave networks has
/// its name on both, and one asked from a container on one of them answered
/// the other's address too, unreachable from there, first half the time
/// (Docker answers a name with the address on the asker's network; found
/// by a review, 2026-12-05). All of them when none is, or with no scopes.
fn on_networks(addrs: &[IpAddr], scopes: &[String]) -> Vec<IpAddr> {
    let nets: Vec<ipnet::Ipv4Net> =
        scopes.iter().filter_map(|s| weave_proto::dns_name::scope_subnet(s.trim_start_matches(NETWORK_ONLY))).collect();
    let inside = |ip: &IpAddr| matches!(ip, IpAddr::V4(v4) if nets.iter().any(|n| n.contains(v4)));
    if !addrs.iter().any(inside) {
        return addrs.to_vec();
    }
    // The IPv4 addresses on the asker's networks; IPv6 ones (AAAA) all stay.
    addrs.iter().copied().filter(|ip| ip.is_ipv6() || inside(ip)).collect()
}

/// Marks a scope the asker is on but whose aliases are not its own: the
/// subnets of a container attached by weavectl or CNI (taken from the map)
/// narrow a name's addresses to its networks ([`on_networks`]), and lend
/// it no `label.<scope>` names ([`scoped`]): those are a Docker network's
/// aliases, and for every container they shadowed the cluster's name, a
/// member's `dns add db.<scope>` taking `db` over for all (found by a
/// review, 2026-12-06). No DNS label holds it.
pub const NETWORK_ONLY: char = '~';

/// The DNS label that scopes names to weave subnet `cidr` (`10.2.3.0/24` ->
/// `10-2-3-0-24`): a Docker alias `db` on that subnet's network is the
/// record `db.10-2-3-0-24.<domain>`.
pub fn scope_of(cidr: &str) -> String {
    weave_proto::dns_name::scope_label(cidr)
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

/// The `ip6.arpa.` zone of `ip`'s first `prefix` bits, in whole nibbles
/// (rounded up, as [`reverse_zone`] rounds to whole octets).
fn reverse_zone6(ip: std::net::Ipv6Addr, prefix: u8) -> String {
    let hex = format!("{:032x}", u128::from(ip));
    let nibbles = usize::from(prefix.div_ceil(4).min(32));
    hex[..nibbles].chars().rev().map(|c| format!("{c}.")).collect::<String>() + "ip6.arpa."
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

/// Encodes `response` for TCP, whose messages take at most 65,535 bytes: a
/// name with more records than fit is answered with as many as fit, and
/// TC. hickory's encoder cut such a message short and left the start of the
/// record that did not fit at its end: a malformed answer (found by a
/// review, 2026-12-07, at some 2,200 records).
pub fn encode_tcp(response: &Message) -> Option<Vec<u8>> {
    let mut r = response.clone();
    loop {
        let bytes = r.to_vec().ok()?;
        let whole = Message::from_vec(&bytes).is_ok_and(|m| m.answers.len() == r.answers.len());
        if bytes.len() <= usize::from(u16::MAX) && whole {
            return Some(bytes);
        }
        if r.answers.is_empty() {
            return encode_udp(response, 0);
        }
        r.answers.truncate(r.answers.len() * 3 / 4);
        r.metadata.truncation = true;
    }
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
#[path = "dns_tests.rs"]
mod tests;
