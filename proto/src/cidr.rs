//! Subnet notation as users type it (`10.2.3.0/24`, `fd00::/64`), checked
//! the same way by weavectl and the coordinator.
use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("'{0}' is not a subnet in CIDR notation (like 10.2.3.0/24 or fd00:1::/64)")]
    Syntax(String),
    #[error(
        "'{0}' has a number with a leading zero, which some tools read as octal (010 is 8 to inet_aton): write it without"
    )]
    LeadingZero(String),
    #[error("'{given}' has host bits set; did you mean {network}?")]
    HostBits { given: String, network: IpNet },
    #[error("'{0}' is too small to hold an address (largest prefix: /30 for IPv4, /126 for IPv6)")]
    TooSmall(String),
    #[error("'{given}' overlaps {range} ({what}): pick a private range such as {instead}")]
    SpecialUse { given: String, range: &'static str, what: &'static str, instead: &'static str },
}

/// Ranges no subnet may overlap: they mean something else on every host.
const SPECIAL_USE: [(&str, &str); 10] = [
    ("0.0.0.0/8", "\"this network\""),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local, with the cloud metadata service at 169.254.169.254"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, with the broadcast address"),
    ("::/127", "the unspecified and loopback addresses"),
    ("::ffff:0:0/96", "IPv4-mapped addresses"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("64:ff9b::/96", "NAT64"),
];

/// Refuses a new subnet that overlaps a special-use range (loopback,
/// link-local, multicast, reserved, IPv4-mapped): routed into an overlay
/// bridge on every host, it would take the hosts' own use of it away.
pub fn check_usable(net: &IpNet) -> Result<(), CidrError> {
    for (range, what) in SPECIAL_USE {
        let special: IpNet = range.parse().expect("a valid range");
        if special.contains(&net.network()) || net.contains(&special.network()) {
            // One of its own family: `--range` takes IPv4 alone.
            let instead = if net.addr().is_ipv4() { "10.0.0.0/8" } else { "fd00::/8" };
            return Err(CidrError::SpecialUse { given: net.to_string(), range, what, instead });
        }
    }
    Ok(())
}

/// Parses a subnet. Host bits must be zero: `10.2.3.1/24` is refused with the
/// network it probably meant, instead of being silently truncated.
pub fn parse_subnet(s: &str) -> Result<IpNet, CidrError> {
    let s = s.trim();
    let net = parse_net(s)?;
    if net.trunc() != net {
        return Err(CidrError::HostBits { given: s.to_string(), network: net.trunc() });
    }
    let max_prefix = match net {
        IpNet::V4(_) => 30,
        IpNet::V6(_) => 126,
    };
    if net.prefix_len() > max_prefix {
        return Err(CidrError::TooSmall(s.to_string()));
    }
    Ok(net)
}

/// `<address>/<length>` as typed, host bits allowed. The address is read as
/// the standard library reads it, which refuses IPv4 numbers with a leading
/// zero: `010.2.3.0/24` is ten to ipnet's own parser, eight to `inet_aton`
/// (and so to `ping` and `ip`), so it is refused with its own message rather
/// than taken as either.
pub fn parse_net(s: &str) -> Result<IpNet, CidrError> {
    let syntax = || CidrError::Syntax(s.to_string());
    let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
    if len.is_empty()
        || len.len() > 3
        || !len.bytes().all(|b| b.is_ascii_digit())
        || (len.len() > 1 && len.starts_with('0'))
    {
        return Err(syntax());
    }
    let len: u8 = len.parse().map_err(|_| syntax())?;
    let addr: IpAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(_) if has_leading_zero(addr) => return Err(CidrError::LeadingZero(s.to_string())),
        Err(_) => return Err(syntax()),
    };
    IpNet::new(addr, len).map_err(|_| syntax())
}

/// A dotted quad of decimal numbers of which one has a leading zero (`010`,
/// `00`).
pub fn has_leading_zero(addr: &str) -> bool {
    let parts: Vec<&str> = addr.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        && parts.iter().any(|p| p.len() > 1 && p.starts_with('0'))
}

/// An address with an optional prefix length: `10.2.3.7` or `10.2.3.7/24`.
pub fn parse_address(s: &str) -> Option<(IpAddr, Option<u8>)> {
    let s = s.trim();
    match s.split_once('/') {
        None => s.parse().ok().map(|ip| (ip, None)),
        Some((ip, len)) => {
            let ip: IpAddr = ip.parse().ok()?;
            let len: u8 = len.parse().ok()?;
            IpNet::new(ip, len).ok()?;
            Some((ip, Some(len)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_networks_and_refuses_host_bits() {
        assert_eq!(parse_subnet("10.2.3.0/24").unwrap().to_string(), "10.2.3.0/24");
        assert_eq!(parse_subnet(" fd00:1::/64 ").unwrap().to_string(), "fd00:1::/64");
        let err = parse_subnet("10.2.3.1/24").unwrap_err();
        assert_eq!(err.to_string(), "'10.2.3.1/24' has host bits set; did you mean 10.2.3.0/24?");
        assert!(matches!(parse_subnet("10.2.3.0"), Err(CidrError::Syntax(_))));
        assert!(matches!(parse_subnet("10.2.3.0/33"), Err(CidrError::Syntax(_))));
        assert!(matches!(parse_subnet("banana"), Err(CidrError::Syntax(_))));
        assert!(matches!(parse_subnet("10.2.3.0/31"), Err(CidrError::TooSmall(_))));
        assert!(parse_subnet("10.2.3.0/30").is_ok());
    }

    #[test]
    fn special_use_ranges_are_refused_and_private_ones_taken() {
        for bad in [
            "169.254.0.0/16",
            "169.254.169.0/24",
            "0.0.0.0/8",
            "127.0.0.0/24",
            "224.0.0.0/24",
            "240.0.0.0/24",
            "255.255.255.0/24",
            "0.0.0.0/1",
            "128.0.0.0/1",
            "fe80::/64",
            "ff02::/64",
            "::/126",
            "::ffff:10.9.9.0/120",
            "::/0",
        ] {
            let net = parse_subnet(bad).unwrap();
            assert!(matches!(check_usable(&net), Err(CidrError::SpecialUse { .. })), "{bad} accepted");
        }
        for good in ["10.2.3.0/24", "172.20.0.0/16", "192.168.5.0/24", "100.64.1.0/24", "fd00:1::/64", "2001:db8::/64"]
        {
            assert_eq!(check_usable(&parse_subnet(good).unwrap()), Ok(()), "{good}");
        }
        let e = check_usable(&parse_subnet("169.254.0.0/16").unwrap()).unwrap_err().to_string();
        assert_eq!(
            e,
            "'169.254.0.0/16' overlaps 169.254.0.0/16 (link-local, with the cloud metadata service at \
             169.254.169.254): pick a private range such as 10.0.0.0/8"
        );
        let e = check_usable(&parse_subnet("fe80::/64").unwrap()).unwrap_err().to_string();
        assert!(e.ends_with("pick a private range such as fd00::/8"), "{e}");
    }

    #[test]
    fn leading_zeros_are_refused_not_read_as_decimal() {
        for bad in ["010.002.003.000/24", "10.2.3.00/24", "10.02.3.0/24"] {
            let e = parse_subnet(bad).unwrap_err();
            assert_eq!(e, CidrError::LeadingZero(bad.to_string()), "{bad}");
            assert!(e.to_string().contains("leading zero"), "{e}");
        }
        assert_eq!(parse_address("010.2.3.7/24"), None);
        assert_eq!(parse_subnet("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        for bad in [
            "10.2.3.0/",
            "10.2.3.0/+24",
            "10.2.3.0/ 24",
            "10.2.3.0/0024",
            "10.2.4.0/024",
            "10.2.3.0/08",
            "/24",
            "10.2.3/24",
            "1.2.3.4.5/24",
        ] {
            assert_eq!(parse_subnet(bad), Err(CidrError::Syntax(bad.to_string())), "{bad}");
        }
    }

    #[test]
    fn parses_addresses_with_and_without_prefix() {
        assert_eq!(parse_address("10.2.3.7"), Some(("10.2.3.7".parse().unwrap(), None)));
        assert_eq!(parse_address("10.2.3.7/24"), Some(("10.2.3.7".parse().unwrap(), Some(24))));
        assert_eq!(parse_address("10.2.3.7/40"), None);
        assert_eq!(parse_address("x"), None);
    }
}
