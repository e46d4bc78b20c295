//! Address arithmetic, free of I/O: which addresses a subnet may hand out, the
//! lowest free one, how the default layout splits `--range`, and the VXLAN VNI
//! of a subnet. The store calls these inside its transactions.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address as a number in one space for both families (IPv4 mapped into
/// IPv6), so that ranges compare and sort the same way in code and in SQL.
pub fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// [`key`] as 32 hex digits: text order equals numeric order.
pub fn key_text(ip: IpAddr) -> String {
    format!("{:032x}", key(ip))
}

/// The address of `net`'s family whose [`key`] is `k`.
pub fn from_key(net: &IpNet, k: u128) -> IpAddr {
    match net {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from((k & 0xffff_ffff) as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(k)),
    }
}

/// First and last address that may be handed out: never the network address
/// (also IPv6's subnet-router anycast) nor IPv4's broadcast.
pub fn usable(net: &IpNet) -> (u128, u128) {
    let (first, last) = (key(net.network()), key(net.broadcast()));
    match net {
        IpNet::V4(_) => (first + 1, last - 1),
        IpNet::V6(_) => (first + 1, last),
    }
}

/// How many addresses a subnet can hand out.
pub fn capacity(net: &IpNet) -> u128 {
    let (first, last) = usable(net);
    // A /31 or /32 (which no subnet may be) has none, rather than a wrap.
    last.checked_sub(first).map_or(0, |span| span.saturating_add(1))
}

/// Why an explicitly requested address cannot be used in a subnet.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    Outside,
    Reserved,
}

pub fn check_explicit(net: &IpNet, ip: IpAddr) -> Result<(), Unusable> {
    if !net.contains(&ip) {
        return Err(Unusable::Outside);
    }
    let (first, last) = usable(net);
    let k = key(ip);
    if k < first || k > last { Err(Unusable::Reserved) } else { Ok(()) }
}

/// The lowest usable address of `net` not in `used`. `used` may hold
/// addresses of other families or outside the subnet; they are ignored.
pub fn lowest_free(net: &IpNet, used: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
    let (first, last) = usable(net);
    let mut taken: Vec<u128> = used.into_iter().map(key).filter(|k| (first..=last).contains(k)).collect();
    taken.sort_unstable();
    taken.dedup();
    let mut candidate = first;
    for k in taken {
        if k != candidate {
            break;
        }
        if candidate == last {
            return None;
        }
        candidate += 1;
    }
    Some(from_key(net, candidate))
}

/// [`lowest_free`] over the keys ([`key`]) of the addresses in use, kept
/// sorted in memory: no parsing and no sorting per call.
pub fn lowest_free_in(net: &IpNet, used: &BTreeSet<u128>) -> Option<IpAddr> {
    lowest_free_avoiding(net, used, &BTreeSet::new())
}

/// [`lowest_free_in`], also skipping the addresses (keys) in `avoid`.
pub fn lowest_free_avoiding(net: &IpNet, used: &BTreeSet<u128>, avoid: &BTreeSet<u128>) -> Option<IpAddr> {
    let (first, last) = usable(net);
    let mut taken = used.range(first..=last).peekable();
    let mut candidate = first;
    loop {
        while taken.next_if(|&&k| k < candidate).is_some() {}
        if taken.peek() != Some(&&candidate) && !avoid.contains(&candidate) {
            return Some(from_key(net, candidate));
        }
        if candidate == last {
            return None;
        }
        candidate += 1;
    }
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The default split of `--range`: the default subnet is its first /16 (or its
/// first quarter when the range is smaller than a /14), the node block its last.
/// For 10.32.0.0/12 that is 10.32.0.0/16 for containers and 10.47.0.0/16 for nodes.
pub fn default_layout(range: &IpNet) -> (IpNet, IpNet) {
    let (full, part) = match range {
        IpNet::V4(_) => (32u8, 16u8),
        IpNet::V6(_) => (128u8, 64u8),
    };
    let prefix = if range.prefix_len() + 2 <= part { part } else { (range.prefix_len() + 2).min(full) };
    // `prefix` is at least range.prefix_len() and at most the family's width,
    // so `subnets` cannot fail.
    let mut blocks = range.subnets(prefix).expect("prefix within range");
    let first = blocks.next().unwrap_or(*range);
    let last = range_last_block(range, prefix);
    (first, last)
}

fn range_last_block(range: &IpNet, prefix: u8) -> IpNet {
    match range {
        IpNet::V4(r) => IpNet::V4(Ipv4Net::new(r.broadcast(), prefix).map(|n| n.trunc()).unwrap_or(*r)),
        IpNet::V6(r) => IpNet::V6(Ipv6Net::new(r.broadcast(), prefix).map(|n| n.trunc()).unwrap_or(*r)),
    }
}

/// The VXLAN network identifier of a subnet: a 24-bit FNV-1a hash of its
/// canonical text, moved along by `attempt` when it collides with another
/// subnet's. Deterministic, so the same subnet gets the same VNI on rebuilds.
pub fn vni(net: &IpNet, attempt: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in net.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let v = (h ^ (h >> 24)).wrapping_add(attempt) & 0x00ff_ffff;
    if v == 0 { 1 } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_free_skips_network_broadcast_and_used() {
        let n = net("10.2.3.0/24");
        assert_eq!(lowest_free(&n, []), Some(ip("10.2.3.1")));
        assert_eq!(lowest_free(&n, [ip("10.2.3.1"), ip("10.2.3.2")]), Some(ip("10.2.3.3")));
        assert_eq!(lowest_free(&n, [ip("10.2.3.2")]), Some(ip("10.2.3.1")), "fills holes first");
        assert_eq!(lowest_free(&n, [ip("10.9.9.9"), ip("fd00::1")]), Some(ip("10.2.3.1")));
    }

    #[test]
    fn lowest_free_in_a_kept_set_agrees_with_lowest_free() {
        for (n, used) in [
            ("10.2.3.0/24", vec![]),
            ("10.2.3.0/24", vec!["10.2.3.1", "10.2.3.2", "10.2.3.4", "10.9.9.9"]),
            ("10.2.3.0/24", vec!["10.2.3.2"]),
            ("10.0.0.0/30", vec!["10.0.0.1", "10.0.0.2"]),
            ("fd00::/126", vec!["fd00::1", "fd00::2"]),
        ] {
            let (n, used): (IpNet, Vec<IpAddr>) = (net(n), used.into_iter().map(ip).collect());
            let set = used.iter().copied().map(key).collect();
            assert_eq!(lowest_free_in(&n, &set), lowest_free(&n, used), "{n}");
        }
    }

    #[test]
    fn lowest_free_avoiding_skips_both_sets_and_agrees_with_their_union() {
        let keys = |v: &[&str]| v.iter().map(|a| key(ip(a))).collect::<BTreeSet<u128>>();
        for (n, used, avoid) in [
            ("10.2.3.0/24", vec![], vec![]),
            ("10.2.3.0/24", vec![], vec!["10.2.3.1"]),
            ("10.2.3.0/24", vec!["10.2.3.1", "10.2.3.3"], vec!["10.2.3.2", "10.2.3.4"]),
            ("10.2.3.0/24", vec!["10.2.3.2"], vec!["10.2.3.1", "10.2.3.2", "10.9.9.9"]),
            ("10.0.0.0/30", vec!["10.0.0.1"], vec!["10.0.0.2"]),
            ("10.0.0.0/30", vec![], vec!["10.0.0.1", "10.0.0.2"]),
            ("fd00::/126", vec!["fd00::1"], vec!["fd00::2"]),
        ] {
            let n = net(n);
            let (used, avoid) = (keys(&used), keys(&avoid));
            let union: BTreeSet<u128> = used.union(&avoid).copied().collect();
            assert_eq!(lowest_free_avoiding(&n, &used, &avoid), lowest_free_in(&n, &union), "{n} {used:?} {avoid:?}");
        }
        let n = net("10.2.3.0/24");
        let got = lowest_free_avoiding(&n, &keys(&["10.2.3.1"]), &keys(&["10.2.3.2", "10.2.3.3"]));
        assert_eq!(got, Some(ip("10.2.3.4")));
        assert_eq!(from_key(&n, key(ip("10.2.3.9"))), ip("10.2.3.9"));
        assert_eq!(from_key(&net("fd00::/64"), key(ip("fd00::9"))), ip("fd00::9"));
    }

    #[test]
    fn exhaustion_is_none() {
        let n = net("10.0.0.0/30");
        assert_eq!(capacity(&n), 2);
        assert_eq!(capacity(&"10.2.0.0/31".parse().unwrap()), 0, "none, not a wrap");
        assert_eq!(capacity(&"10.2.0.0/32".parse().unwrap()), 0);
        assert_eq!(lowest_free(&n, [ip("10.0.0.1")]), Some(ip("10.0.0.2")));
        assert_eq!(lowest_free(&n, [ip("10.0.0.1"), ip("10.0.0.2")]), None);
    }

    #[test]
    fn ipv6_hands_out_all_but_the_anycast_address() {
        let n = net("fd00::/126");
        assert_eq!(capacity(&n), 3);
        assert_eq!(lowest_free(&n, []), Some(ip("fd00::1")));
        assert_eq!(lowest_free(&n, [ip("fd00::1"), ip("fd00::2")]), Some(ip("fd00::3")));
        assert_eq!(lowest_free(&n, [ip("fd00::1"), ip("fd00::2"), ip("fd00::3")]), None);
    }

    #[test]
    fn explicit_addresses_are_checked() {
        let n = net("10.2.3.0/24");
        assert_eq!(check_explicit(&n, ip("10.2.3.7")), Ok(()));
        assert_eq!(check_explicit(&n, ip("10.2.3.0")), Err(Unusable::Reserved));
        assert_eq!(check_explicit(&n, ip("10.2.3.255")), Err(Unusable::Reserved));
        assert_eq!(check_explicit(&n, ip("10.2.4.1")), Err(Unusable::Outside));
        assert_eq!(check_explicit(&n, ip("fd00::1")), Err(Unusable::Outside));
    }

    #[test]
    fn default_layout_of_weave_range() {
        assert_eq!(default_layout(&net("10.32.0.0/12")), (net("10.32.0.0/16"), net("10.47.0.0/16")));
        assert_eq!(default_layout(&net("10.2.0.0/16")), (net("10.2.0.0/18"), net("10.2.192.0/18")));
        assert_eq!(default_layout(&net("fd00::/48")), (net("fd00::/64"), net("fd00:0:0:ffff::/64")));
        let (a, b) = default_layout(&net("192.168.0.0/24"));
        assert!(!overlaps(&a, &b));
    }

    #[test]
    fn overlap_and_keys() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.2.3.0/24")));
        assert!(overlaps(&net("10.2.3.0/24"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.2.3.0/24"), &net("10.2.4.0/24")));
        assert!(key_text(ip("10.0.0.2")) > key_text(ip("10.0.0.1")));
        assert!(key_text(ip("10.0.1.0")) > key_text(ip("10.0.0.255")));
        assert_eq!(key_text(ip("0.0.0.1")).len(), 32);
    }

    #[test]
    fn vni_is_stable_nonzero_and_24_bit() {
        let n = net("10.2.3.0/24");
        assert_eq!(vni(&n, 0), vni(&n, 0));
        assert_ne!(vni(&n, 0), vni(&net("10.2.4.0/24"), 0));
        assert_ne!(vni(&n, 0), vni(&n, 1));
        for a in 0..100 {
            let v = vni(&n, a);
            assert!(v > 0 && v < (1 << 24));
        }
    }
}
