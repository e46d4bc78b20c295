//! The subnet of the map each `ADDR` of attach/detach/expose/hide names
//! (the `ADDR` itself, [`AddrSpec`], is parsed in `weave-proto`, where
//! weavectl reads it too): pure, checked before anything changes.
use ipnet::Ipv4Net;
pub use weave_proto::local_api::addr_spec::AddrSpec;
use weave_proto::{
    local_api::{Refusal, addr_spec},
    v1::{NetworkMap, Subnet},
};

/// The subnet of the map an [`AddrSpec`] names.
pub trait NamesSubnet {
    fn subnet<'m>(&self, map: &'m NetworkMap) -> Result<&'m Subnet, Refusal>;
}

impl NamesSubnet for AddrSpec {
    /// The subnet of the map this spec names.
    fn subnet<'m>(&self, map: &'m NetworkMap) -> Result<&'m Subnet, Refusal> {
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
            // Case does not tell two names apart (the coordinator refuses
            // the second): the exact spelling first.
            Self::Named(name) => {
                let s = map
                    .subnets
                    .iter()
                    .find(|s| s.name == *name)
                    .or_else(|| map.subnets.iter().find(|s| !s.name.is_empty() && s.name.eq_ignore_ascii_case(name)))
                    .ok_or_else(|| Refusal::not_found(format!("no subnet is named {name} (weavectl subnet ls)")))?;
                // As `net:<IPv6 CIDR>` is refused when parsed: by name it
                // reached IPAM, and its address then nothing (found by a review).
                match cidr(s) {
                    Some(_) => Ok(s),
                    None => Err(addr_spec::ipv6(&format!("net:{name}"), &format!("subnet {name} ({})", s.cidr))),
                }
            }
            Self::Ip(ip, len) => {
                let s = map.subnets.iter().find(|s| cidr(s).is_some_and(|c| c.contains(ip))).ok_or_else(|| {
                    // Its subnet is not defined: not found (4), as `net:<CIDR>` of one that is not.
                    Refusal::not_found(format!("address {ip}/{len} is outside every subnet (weavectl subnet ls)"))
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
    fn specs_name_subnets_of_the_map() {
        let map = NetworkMap {
            subnets: vec![
                Subnet { id: 1, cidr: "10.32.0.0/16".into(), is_default: true, vni: 5, ..Default::default() },
                Subnet { id: 2, cidr: "10.2.3.0/24".into(), vni: 6, ..Default::default() },
                Subnet { id: 3, cidr: "10.2.4.0/24".into(), name: "backend".into(), vni: 7, ..Default::default() },
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
        assert!(e.kind == ErrorKind::NotFound && e.message.contains("outside every subnet"), "{e}");
        assert_eq!(AddrSpec::parse("10.2.3.7").unwrap_err().kind, ErrorKind::Invalid);
        // By name, as `subnet add --name` gave it.
        assert_eq!(AddrSpec::parse("net:backend").unwrap().subnet(&map).unwrap().id, 3);
        let e = AddrSpec::parse("net:frontend").unwrap().subnet(&map).unwrap_err();
        assert!(e.kind == ErrorKind::NotFound && e.message.contains("no subnet is named frontend"), "{e}");
        // In any case, the exact spelling first: a subnet named `Default`
        // before names were one whatever their case keeps its name.
        assert_eq!(AddrSpec::parse("net:BACKEND").unwrap().subnet(&map).unwrap().id, 3);
        let mut map = map;
        map.subnets[0].name = "default".into();
        map.subnets[1].name = "Default".into();
        assert_eq!(AddrSpec::parse("net:Default").unwrap().subnet(&map).unwrap().id, 2);
        assert_eq!(AddrSpec::parse("net:default").unwrap().subnet(&map).unwrap().id, 1);
        assert_eq!(AddrSpec::parse("net:DEFAULT").unwrap().subnet(&map).unwrap().id, 1);
    }
}
