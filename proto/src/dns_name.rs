//! DNS names under the cluster domain, checked the same way by the
//! coordinator (records, lookups) and the agent (`weavectl dns lookup` on a
//! host with an agent).

/// `web`, `WEB.weave.local`, `web.weave.local.` -> `web.weave.local.`.
/// Names are case-insensitive and always live under `domain`.
/// A name ending in a dot is absolute: it must end in the domain
/// (`foo.example.com.` is refused, not made `foo.example.com.weave.local.`).
pub fn qualify(name: &str, domain: &str) -> Result<String, String> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let trimmed = name.trim().to_ascii_lowercase();
    let (lower, absolute) = match trimmed.strip_suffix('.') {
        Some(rest) => (rest, true),
        None => (trimmed.as_str(), false),
    };
    let invalid =
        || format!("'{name}' is not a valid DNS name (labels of letters, digits, '-' and '_', separated by dots)");
    // An empty label (`web..`, `.web`) is what is wrong, wherever it is.
    if lower.split('.').any(str::is_empty) {
        return Err(invalid());
    }
    let relative = match lower.strip_suffix(&format!(".{domain}")) {
        Some(relative) => relative,
        None if absolute && lower != domain => {
            return Err(format!(
                "'{name}' is outside {domain}. (a name ending in '.' is absolute; leave the dot off for one \
                 under {domain}.)"
            ));
        }
        None => lower,
    };
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if relative.is_empty() || relative == domain || !relative.split('.').all(valid_label) {
        return Err(invalid());
    }
    let fqdn = format!("{relative}.{domain}.");
    if fqdn.len() > 254 {
        return Err(format!("'{name}' is too long for DNS"));
    }
    Ok(fqdn)
}

/// The DNS label that scopes names to IPv4 subnet `cidr` (`10.2.3.0/24` ->
/// `10-2-3-0-24`): a Docker alias `db` on that subnet's network is the
/// record `db.10-2-3-0-24.<domain>`, answered as `db` first to that
/// network's containers.
pub fn scope_label(cidr: &str) -> String {
    cidr.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// The subnet a scope label names (`10-2-3-0-24` -> 10.2.3.0/24), if it is one.
pub fn scope_subnet(label: &str) -> Option<ipnet::Ipv4Net> {
    let parts: Vec<&str> = label.split('-').collect();
    let [a, b, c, d, n] = parts[..] else { return None };
    let net: ipnet::Ipv4Net = format!("{a}.{b}.{c}.{d}/{n}").parse().ok()?;
    (net.trunc() == net && scope_label(&net.to_string()) == label).then_some(net)
}

/// Refused: a name whose last label under `domain` is a subnet's scope
/// label, for an address outside that subnet. Such a record would answer a
/// Docker network's containers first in place of a name another holds.
pub fn check_scope(fqdn: &str, domain: &str, address: std::net::IpAddr) -> Result<(), String> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let relative = fqdn.trim_end_matches('.').to_ascii_lowercase();
    let Some(relative) = relative.strip_suffix(&format!(".{domain}")) else { return Ok(()) };
    let Some(net) = relative.rsplit('.').next().filter(|_| relative.contains('.')).and_then(scope_subnet) else {
        return Ok(());
    };
    match address {
        std::net::IpAddr::V4(v4) if net.contains(&v4) => Ok(()),
        _ => Err(format!(
            "'{fqdn}' is under {} (the scope of subnet {net}): only for an address in {net}, and {address} is not",
            scope_label(&net.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn scope_labels_name_subnets_and_hold_only_their_addresses() {
        assert_eq!(scope_label("10.2.3.0/24"), "10-2-3-0-24");
        assert_eq!(scope_subnet("10-2-3-0-24"), Some("10.2.3.0/24".parse().unwrap()));
        for not in ["10-2-3-0", "10-2-3-1-24", "10-2-3-0-33", "010-2-3-0-24", "web", "a-b-c-d-e"] {
            assert_eq!(scope_subnet(not), None, "{not}");
        }
        let ip = |s: &str| s.parse().unwrap();
        assert!(check_scope("db.10-2-3-0-24.weave.local.", "weave.local.", ip("10.2.3.9")).is_ok());
        let e = check_scope("db.10-2-3-0-24.weave.local.", "weave.local.", ip("10.40.0.66")).unwrap_err();
        assert!(e.contains("only for an address in 10.2.3.0/24"), "{e}");
        assert!(check_scope("db.10-2-3-0-24.weave.local.", "weave.local.", ip("fd00::1")).is_err());
        // Not a scope: any address.
        assert!(check_scope("10-2-3-0-24.weave.local.", "weave.local.", ip("10.40.0.66")).is_ok());
        assert!(check_scope("db.web.weave.local.", "weave.local.", ip("10.40.0.66")).is_ok());
    }
    use super::*;

    #[test]
    fn names_are_qualified_and_case_folded() {
        let d = "weave.local.";
        assert_eq!(qualify("web", d).unwrap(), "web.weave.local.");
        assert_eq!(qualify("WEB.Weave.Local", d).unwrap(), "web.weave.local.");
        assert_eq!(qualify("web.weave.local.", d).unwrap(), "web.weave.local.");
        assert_eq!(qualify("a.b", d).unwrap(), "a.b.weave.local.");
        for bad in ["", "weave.local", "-x", "a..b", "sp ace", "x!", "web.weave.local..", "web..", ".", "weave.local."]
        {
            assert!(qualify(bad, d).is_err(), "{bad:?} should be refused");
        }
        // Absolute (a trailing dot): only inside the domain.
        let e = qualify("foo.example.com.", d).unwrap_err().to_string();
        assert!(e.contains("'foo.example.com.' is outside weave.local."), "{e}");
        for empty_label in ["web..", ".web", "a..b", "web.weave.local..", "."] {
            let e = qualify(empty_label, "weave.local.").unwrap_err().to_string();
            assert!(e.contains("is not a valid DNS name"), "{empty_label}: {e}");
        }
        assert_eq!(qualify("foo.example.com", d).unwrap(), "foo.example.com.weave.local.");
    }
}
