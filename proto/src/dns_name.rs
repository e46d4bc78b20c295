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

#[cfg(test)]
mod tests {
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
