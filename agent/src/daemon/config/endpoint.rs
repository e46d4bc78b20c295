//! `--endpoint` as written: `ip:port`, `[ipv6]:port` or an address alone.
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// An endpoint as given: `ip:port`, `[ipv6]:port`, or an address alone,
/// whose port 0 stands for --listen-port (`JoinArgs::endpoints`). The
/// address alone is what Kubernetes' downward API can give for an IPv6
/// node (`$(HOST_IP):6784` made `fd00::22:6784`, refused; found by a
/// review of the manifests, 2026-12-06).
///
/// An IPv6 address and a port written without brackets
/// (`2001:db8::15:6784`) reads as one address too: it is refused, with the
/// bracketed form, when what comes before its last colon is an address of
/// this host and the whole is not. It was taken as the address
/// `2001:db8::15:6784`, which peers were sent to (found by a review,
/// 2026-12-07).
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    parse_on(s, || crate::host::addresses::all().unwrap_or_default())
}

/// [`parse_endpoint`] on a host whose addresses `here` lists.
fn parse_on(s: &str, here: impl FnOnce() -> Vec<IpAddr>) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(endpoint) = s.parse::<SocketAddr>() {
        return Ok(endpoint);
    }
    // `[ipv6]` alone: an address without a port, written unambiguously.
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<Ipv6Addr>()
    {
        return Ok(SocketAddr::new(ip.into(), 0));
    }
    let ip = s.parse::<IpAddr>().map_err(|_| format!("{s}: not ip:port, [ipv6]:port or an address"))?;
    if let (IpAddr::V6(_), Some((head, port))) = (ip, s.rsplit_once(':'))
        && let (Ok(host), Ok(_)) = (head.parse::<Ipv6Addr>(), port.parse::<u16>())
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        let here = here();
        if here.contains(&IpAddr::V6(host)) && !here.contains(&ip) {
            return Err(format!(
                "{s}: write an IPv6 address and its port in brackets, as [{head}]:{port} (or, if it is one \
                 address, as [{s}])"
            ));
        }
    }
    Ok(SocketAddr::new(ip, 0))
}

/// `endpoint` with port 0 (an address given alone) as `port`.
pub fn with_port(endpoint: SocketAddr, port: u16) -> SocketAddr {
    if endpoint.port() == 0 { SocketAddr::new(endpoint.ip(), port) } else { endpoint }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_address_and_port_without_brackets_is_refused_on_the_host_it_names() {
        let here = || vec!["2001:db8::15".parse().unwrap(), "192.0.2.15".parse().unwrap()];
        assert_eq!(
            parse_on("2001:db8::15:6784", here).unwrap_err(),
            "2001:db8::15:6784: write an IPv6 address and its port in brackets, as [2001:db8::15]:6784 (or, \
             if it is one address, as [2001:db8::15:6784])"
        );
        // That other reading, unambiguous.
        assert_eq!(parse_on("[2001:db8::15:6784]", here), Ok("[2001:db8::15:6784]:0".parse().unwrap()));
        assert!(parse_on("[192.0.2.15]", here).is_err(), "brackets are IPv6's");
        assert_eq!(parse_on("[2001:db8::15]:6784", here), Ok("[2001:db8::15]:6784".parse().unwrap()));
        assert_eq!(parse_on("2001:db8::15", here), Ok("[2001:db8::15]:0".parse().unwrap()), "an address alone");
        // Not this host's: an address alone (a NAT's, forwarded here).
        assert_eq!(parse_on("2001:db8::16:6784", here), Ok("[2001:db8::16:6784]:0".parse().unwrap()));
        // The whole is this host's too: it is what was meant.
        let both = || vec!["2001:db8::15".parse().unwrap(), "2001:db8::15:6784".parse().unwrap()];
        assert_eq!(parse_on("2001:db8::15:6784", both), Ok("[2001:db8::15:6784]:0".parse().unwrap()));
        assert_eq!(parse_on(" 192.0.2.15:6784 ", here), Ok("192.0.2.15:6784".parse().unwrap()));
        assert!(parse_on("2001:db8::15:abcd", here).is_ok(), "a last group that is no port");
        assert!(parse_on("host:6784", here).is_err());
    }
}
