//! The `ADDR` arguments of attach/detach/expose/hide (`net:default`,
//! `net:<CIDR>`, `ip:<IP>/<len>`) and the subnet of the map each one names:
//! pure, checked before anything changes.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weave_proto::{
    local_api::Refusal,
    v1::{NetworkMap, Subnet},
};

/// One `ADDR` of `weavectl attach|detach|expose|hide`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSpec {
    /// `net:default` (also what no ADDR means).
    Default,
    /// `net:<CIDR>`.
    Net(Ipv4Net),
    /// `ip:<IP>/<len>` or a bare `<IP>/<len>`.
    Ip(Ipv4Addr, u8),
}

impl AddrSpec {
    pub fn parse(s: &str) -> Result<Self, Refusal> {
        if let Some(net) = s.strip_prefix("net:") {
            if net == "default" {
                return Ok(Self::Default);
            }
            let cidr: Ipv4Net =
                net.parse().map_err(|_| Refusal::invalid(format!("'{s}': expected net:default or net:<CIDR>")))?;
            if cidr.network() != cidr.addr() {
                return Err(Refusal::invalid(format!(
                    "'{s}': {cidr} is not a network address (did you mean ip:{cidr}?)"
                )));
            }
            return Ok(Self::Net(cidr));
        }
        let ip = s.strip_prefix("ip:").unwrap_or(s);
        let (addr, len) = ip
            .split_once('/')
            .ok_or_else(|| Refusal::invalid(format!("'{s}': an address needs its prefix length (ip:<IP>/<len>)")))?;
        let addr: Ipv4Addr =
            addr.parse().map_err(|_| Refusal::invalid(format!("'{s}': '{addr}' is not an IPv4 address")))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| Refusal::invalid(format!("'{s}': bad prefix length '{len}'")))?;
        Ok(Self::Ip(addr, len))
    }

    /// All of `addrs`, or `net:default` if there are none.
    pub fn parse_all(addrs: &[String]) -> Result<Vec<Self>, Refusal> {
        if addrs.is_empty() {
            return Ok(vec![Self::Default]);
        }
        addrs.iter().map(|a| Self::parse(a)).collect()
    }

    /// The subnet of the map this spec names.
    pub fn subnet<'m>(&self, map: &'m NetworkMap) -> Result<&'m Subnet, Refusal> {
        let cidr = |s: &Subnet| s.cidr.parse::<Ipv4Net>().ok();
        match self {
            Self::Default => {
                map.subnets.iter().find(|s| s.is_default).ok_or_else(|| Refusal::not_found("no default subnet"))
            }
            Self::Net(net) => {
                map.subnets.iter().find(|s| cidr(s) == Some(*net)).ok_or_else(|| {
                    Refusal::not_found(format!("subnet {net} is not defined (weavectl subnet add {net})"))
                })
            }
            Self::Ip(ip, len) => {
                let s = map.subnets.iter().find(|s| cidr(s).is_some_and(|c| c.contains(ip))).ok_or_else(|| {
                    Refusal::invalid(format!("address {ip}/{len} is outside every subnet (weavectl subnet ls)"))
                })?;
                match cidr(s) {
                    Some(c) if c.prefix_len() == *len => Ok(s),
                    _ => Err(Refusal::invalid(format!(
                        "address {ip}/{len} is outside subnet {}: use ip:{ip}/{}",
                        s.cidr,
                        s.cidr.split('/').nth(1).unwrap_or("?")
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_proto::local_api::ErrorKind;

    #[test]
    fn addr_specs_parse() {
        assert_eq!(AddrSpec::parse_all(&[]).unwrap(), vec![AddrSpec::Default]);
        assert_eq!(AddrSpec::parse("net:default").unwrap(), AddrSpec::Default);
        assert_eq!(AddrSpec::parse("net:10.2.3.0/24").unwrap(), AddrSpec::Net("10.2.3.0/24".parse().unwrap()));
        assert_eq!(AddrSpec::parse("ip:10.2.3.7/24").unwrap(), AddrSpec::Ip("10.2.3.7".parse().unwrap(), 24));
        assert_eq!(AddrSpec::parse("10.2.3.7/24").unwrap(), AddrSpec::Ip("10.2.3.7".parse().unwrap(), 24));
        for bad in ["net:10.2.3.7/24", "net:nope", "10.2.3.7", "ip:10.2.3.300/24", "ip:10.2.3.7/33", "web", ""] {
            assert!(AddrSpec::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn specs_name_subnets_of_the_map() {
        let map = NetworkMap {
            subnets: vec![
                Subnet { id: 1, cidr: "10.32.0.0/16".into(), is_default: true, vni: 5, ..Default::default() },
                Subnet { id: 2, cidr: "10.2.3.0/24".into(), vni: 6, ..Default::default() },
            ],
            ..Default::default()
        };
        assert_eq!(AddrSpec::Default.subnet(&map).unwrap().id, 1);
        assert_eq!(AddrSpec::parse("net:10.2.3.0/24").unwrap().subnet(&map).unwrap().id, 2);
        assert_eq!(AddrSpec::parse("10.2.3.9/24").unwrap().subnet(&map).unwrap().id, 2);
        let e = AddrSpec::parse("net:10.9.0.0/24").unwrap().subnet(&map).unwrap_err();
        assert!(e.kind == ErrorKind::NotFound && e.message.contains("not defined"), "{e}");
        let e = AddrSpec::parse("10.2.3.9/16").unwrap().subnet(&map).unwrap_err();
        assert!(e.kind == ErrorKind::Invalid && e.message.contains("outside subnet 10.2.3.0/24"), "{e}");
        let e = AddrSpec::parse("10.9.9.9/24").unwrap().subnet(&map).unwrap_err();
        assert!(e.kind == ErrorKind::Invalid && e.message.contains("outside every subnet"), "{e}");
        assert_eq!(AddrSpec::parse("10.2.3.7").unwrap_err().kind, ErrorKind::Invalid);
    }
}
