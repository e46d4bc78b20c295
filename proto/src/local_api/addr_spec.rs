//! The `ADDR` arguments of attach/detach/expose/hide (`net:default`,
//! `net:<CIDR>`, `ip:<IP>/<len>`): read the same way by weavectl, which
//! refuses a malformed one before it asks the agent, and by the agent.
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use super::Refusal;
use crate::cidr::{CidrError, parse_net};

/// One `ADDR` of `weavectl attach|detach|expose|hide`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSpec {
    /// `net:default` (also what no ADDR means).
    Default,
    /// `net:<CIDR>`.
    Net(Ipv4Net),
    /// `net:<name>`: the subnet added with that `--name`.
    Named(String),
    /// `ip:<IP>/<len>` or a bare `<IP>/<len>`.
    Ip(Ipv4Addr, u8),
}

/// As typed: `net:default`, `net:10.2.3.0/24`, `10.2.3.7/24`.
impl std::fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("net:default"),
            Self::Net(net) => write!(f, "net:{net}"),
            Self::Named(name) => write!(f, "net:{name}"),
            Self::Ip(ip, len) => write!(f, "{ip}/{len}"),
        }
    }
}

impl AddrSpec {
    pub fn parse(s: &str) -> Result<Self, Refusal> {
        if let Some(net) = s.strip_prefix("net:") {
            if net == "default" {
                return Ok(Self::Default);
            }
            let cidr = match parse_net(net) {
                Ok(IpNet::V4(cidr)) => cidr,
                Ok(IpNet::V6(cidr)) => return Err(ipv6(s, &cidr.to_string())),
                Err(e @ CidrError::LeadingZero(_)) => return Err(Refusal::invalid(format!("'{s}': {e}"))),
                // A subnet's name, as `subnet add --name` allows it.
                _ if is_subnet_name(net) => return Ok(Self::Named(net.to_string())),
                _ => {
                    return Err(Refusal::invalid(format!(
                        "'{s}': expected net:default, net:<CIDR> or net:<subnet name>"
                    )));
                }
            };
            if cidr.network() != cidr.addr() {
                return Err(Refusal::invalid(format!(
                    "'{s}': {cidr} is not a network address (did you mean ip:{cidr}?)"
                )));
            }
            return Ok(Self::Net(cidr));
        }
        if s.starts_with('/') {
            return Err(Refusal::invalid(format!(
                "'{s}' is a path, not an address: name one container, last ([ADDR...] <container>)"
            )));
        }
        let ip = s.strip_prefix("ip:").unwrap_or(s);
        if !ip.contains('/') {
            return Err(Refusal::invalid(format!("'{s}': an address needs its prefix length (ip:<IP>/<len>)")));
        }
        let (addr, len) = ip.split_once('/').unwrap_or((ip, ""));
        match parse_net(ip) {
            Ok(IpNet::V4(net)) => Ok(Self::Ip(net.addr(), net.prefix_len())),
            Ok(IpNet::V6(net)) => Err(ipv6(s, &net.addr().to_string())),
            Err(e @ CidrError::LeadingZero(_)) => Err(Refusal::invalid(format!("'{s}': {e}"))),
            _ if addr.parse::<Ipv4Addr>().is_err() => {
                Err(Refusal::invalid(format!("'{s}': '{addr}' is not an IPv4 address")))
            }
            _ => Err(Refusal::invalid(format!("'{s}': bad prefix length '{len}'"))),
        }
    }

    /// All of `addrs`, or `net:default` if there are none.
    pub fn parse_all(addrs: &[String]) -> Result<Vec<Self>, Refusal> {
        if addrs.is_empty() {
            return Ok(vec![Self::Default]);
        }
        addrs.iter().map(|a| Self::parse(a)).collect()
    }
}

/// Workloads and hosts get IPv4 addresses only; an IPv6 subnet is address
/// management through the coordinator's API.
/// What `weavectl subnet add --name` accepted: 1-63 letters, digits, '-'
/// or '_', not only digits (it now refuses a leading or trailing '-'; a
/// subnet named so before can still be named here).
fn is_subnet_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && s.parse::<i64>().is_err()
}

/// The refusal of an `ADDR` that names an IPv6 subnet (`what`).
pub fn ipv6(s: &str, what: &str) -> Refusal {
    Refusal::invalid(format!(
        "'{s}': {what} is IPv6; attach, detach, expose and hide take IPv4 subnets only (an IPv6 subnet is address \
         management through the coordinator's API)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_api::ErrorKind;

    #[test]
    fn addr_specs_parse() {
        assert_eq!(AddrSpec::parse_all(&[]).unwrap(), vec![AddrSpec::Default]);
        assert_eq!(AddrSpec::parse("net:default").unwrap(), AddrSpec::Default);
        assert_eq!(AddrSpec::parse("net:10.2.3.0/24").unwrap(), AddrSpec::Net("10.2.3.0/24".parse().unwrap()));
        assert_eq!(AddrSpec::parse("ip:10.2.3.7/24").unwrap(), AddrSpec::Ip("10.2.3.7".parse().unwrap(), 24));
        assert_eq!(AddrSpec::parse("10.2.3.7/24").unwrap(), AddrSpec::Ip("10.2.3.7".parse().unwrap(), 24));
        assert_eq!(AddrSpec::parse("net:back-end_2").unwrap(), AddrSpec::Named("back-end_2".into()));
        for bad in [
            "net:10.2.3.7/24",
            "net:no/pe",
            "net:123",
            "net:",
            "net:fd00::/64",
            "10.2.3.7",
            "ip:10.2.3.300/24",
            "ip:10.2.3.7/33",
            "ip:fd00::7/64",
            "web",
            "",
        ] {
            let e = AddrSpec::parse(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid, "{bad}");
        }
        let msg = |s: &str| AddrSpec::parse(s).unwrap_err().message;
        assert_eq!(msg("10.2.3.7"), "'10.2.3.7': an address needs its prefix length (ip:<IP>/<len>)");
        assert_eq!(msg("ip:10.2.3.300/24"), "'ip:10.2.3.300/24': '10.2.3.300' is not an IPv4 address");
        assert_eq!(msg("ip:10.2.3.7/33"), "'ip:10.2.3.7/33': bad prefix length '33'");
        assert!(msg("net:10.2.3.7/24").contains("did you mean ip:10.2.3.7/24?"));
        assert!(msg("net:fd50::/64").starts_with("'net:fd50::/64': fd50::/64 is IPv6; attach, detach"));
        assert!(msg("fd50::5/64").starts_with("'fd50::5/64': fd50::5 is IPv6; attach"));
        // Two containers given: the first is no address.
        assert_eq!(
            msg("/run/netns/x7"),
            "'/run/netns/x7' is a path, not an address: name one container, last ([ADDR...] <container>)"
        );
        // As typed, in messages that name two of them.
        let shown: Vec<String> = ["net:default", "net:10.2.3.0/24", "ip:10.2.3.7/24", "net:tiny"]
            .iter()
            .map(|a| AddrSpec::parse(a).unwrap().to_string())
            .collect();
        assert_eq!(shown, ["net:default", "net:10.2.3.0/24", "10.2.3.7/24", "net:tiny"]);
    }

    #[test]
    fn leading_zeros_are_refused_in_both_forms() {
        for bad in ["net:010.2.3.0/24", "ip:10.2.3.07/24", "10.002.3.7/24"] {
            let e = AddrSpec::parse(bad).unwrap_err();
            assert!(e.kind == ErrorKind::Invalid && e.message.contains("leading zero"), "{bad}: {e}");
        }
    }
}
