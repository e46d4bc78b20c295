//! The CNI environment a runtime passes, checked as the spec asks.

/// `CNI_CONTAINERID` and `CNI_IFNAME` as the spec restricts them: an id
/// starts with a letter or digit, then letters, digits, `_`, `.`, `-` (at
/// most 252, the IPAM key's room); an interface name is 1-15 bytes, not `.`
/// or `..`, without `/`, `:` or white space. Others answered 101 after the
/// agent refused them, or netlink's errors, and ids such as `../../x` went
/// through (found by a review, 2026-12-07).
pub fn check_env(id: &str, ifname: &str) -> Result<(), String> {
    let id_ok = id.len() <= 252
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !id_ok {
        return Err(format!(
            "CNI_CONTAINERID {id:?} is not a container id (a letter or digit, then letters, digits, _ . -; at most 252)"
        ));
    }
    let if_ok = (1..=15).contains(&ifname.len())
        && ifname != "."
        && ifname != ".."
        && !ifname.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    match if_ok {
        true => Ok(()),
        false => Err(format!("CNI_IFNAME {ifname:?} is not an interface name (1-15 bytes, no / : or spaces)")),
    }
}
