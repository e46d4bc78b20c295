//! Subnet notation as users type it (`10.2.3.0/24`, `fd00::/64`), checked
//! the same way by weavectl and the coordinator.
use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("'{0}' is not a subnet in CIDR notation (like 10.2.3.0/24 or fd00:1::/64)")]
    Syntax(String),
    #[error("'{given}' has host bits set; did you mean {network}?")]
    HostBits { given: String, network: IpNet },
    #[error("'{0}' is too small to hold an address (largest prefix: /30 for IPv4, /126 for IPv6)")]
    TooSmall(String),
}

/// Parses a subnet. Host bits must be zero: `10.2.3.1/24` is refused with the
/// network it probably meant, instead of being silently truncated.
pub fn parse_subnet(s: &str) -> Result<IpNet, CidrError> {
    let s = s.trim();
    let net: IpNet = s.parse().map_err(|_| CidrError::Syntax(s.to_string()))?;
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
    fn parses_addresses_with_and_without_prefix() {
        assert_eq!(parse_address("10.2.3.7"), Some(("10.2.3.7".parse().unwrap(), None)));
        assert_eq!(parse_address("10.2.3.7/24"), Some(("10.2.3.7".parse().unwrap(), Some(24))));
        assert_eq!(parse_address("10.2.3.7/40"), None);
        assert_eq!(parse_address("x"), None);
    }
}
