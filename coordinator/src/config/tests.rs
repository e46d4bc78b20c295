//! `coordinator serve`'s flags, parsed and checked.
use super::*;

fn args() -> ServeArgs {
    ServeArgs::for_data_dir("/tmp/x".into(), "127.0.0.1:0".parse().unwrap())
}

#[test]
fn defaults_split_the_weave_range() {
    let s = args().settings().unwrap();
    assert_eq!(s.cluster.default_subnet.to_string(), "10.32.0.0/16");
    assert_eq!(s.cluster.node_range.to_string(), "10.47.0.0/16");
    assert_eq!(s.cluster.dns_domain, "weave.local.");
    assert_eq!(s.token_ttl, Some(Duration::from_secs(86_400)));
    assert_eq!(s.first_token_ttl, Some(Duration::from_secs(3600)), "the first-start token is short-lived");
    assert_eq!(s.first_token_uses, 1, "and single-use");
    assert_eq!(s.node_quota, Some(4096));
    assert_eq!(s.node_subnet_quota, Some(32));
    assert_eq!(s.node_dns_quota, Some(8192));
    assert_eq!(s.rpc_deadline, Some(Duration::from_secs(30)));
    assert_eq!(s.node_rate, Some(50));
    assert_eq!(s.dns_name_hold, Some(Duration::from_secs(60)));
    assert_eq!(s.dns_name_hold.map(|d| d.as_secs()), Some(crate::store::DEFAULT_DNS_HOLD_SECS), "as the store's");
    let mut a = args();
    a.dns_name_hold = "0s".into();
    assert_eq!(a.settings().unwrap().dns_name_hold, None, "0s: no hold");
    a.dns_name_hold = "never".into();
    assert!(a.settings().unwrap_err().to_string().starts_with("--dns-name-hold: must be a time"));
    assert_eq!(s.address_hold.map(|d| d.as_secs()), Some(crate::store::DEFAULT_ADDRESS_HOLD_SECS), "as the store's");
    let mut a = args();
    a.address_hold = "off".into();
    assert_eq!(a.settings().unwrap().address_hold, None, "off: no hold");
    a.address_hold = "25h".into();
    assert!(a.settings().unwrap_err().to_string().starts_with("--address-hold: must be at most 24h"));
    a.address_hold = "24h".into();
    assert_eq!(a.settings().unwrap().address_hold, Some(Duration::from_secs(86_400)));
    a.address_hold = "never".into();
    assert!(a.settings().unwrap_err().to_string().starts_with("--address-hold: must be a time"));
    a.dns_name_hold = "25h".into();
    assert!(a.settings().unwrap_err().to_string().starts_with("--dns-name-hold: must be at most 24h"));
    a.dns_name_hold = "18446744073709551615s".into();
    assert!(a.settings().unwrap_err().to_string().starts_with("--dns-name-hold: '18446744073709551615s' is too long"));
    a.dns_name_hold = "soon".into();
    assert!(a.settings().unwrap_err().to_string().starts_with("--dns-name-hold: 'soon' is not a duration"));
    assert_eq!(s.node_subnets.len(), 4, "RFC 1918 and ULA");
    let mut a = args();
    a.node_subnets = "none".into();
    assert!(a.settings().unwrap().node_subnets.is_empty());
    a.node_subnets = "10.0.0.0/8,banana".into();
    assert!(a.settings().unwrap_err().to_string().starts_with("--node-subnets: 'banana'"));
    let mut a = args();
    a.node_quota = 0;
    assert_eq!(a.settings().unwrap().node_quota, None, "0: no limit");
    a.node_subnet_quota = 0;
    assert_eq!(a.settings().unwrap().node_subnet_quota, None, "0: no limit");
    a.node_dns_quota = 0;
    assert_eq!(a.settings().unwrap().node_dns_quota, None, "0: no limit");
    a.node_rate = 1;
    assert!(a.settings().unwrap_err().to_string().contains("--node-rate: 1 is too low"));
    a.node_rate = 2;
    a.rpc_deadline = "5s".into();
    assert!(a.settings().unwrap_err().to_string().contains("--rpc-deadline: '5s' is too short"));
    a.rpc_deadline = "never".into();
    assert_eq!(a.settings().unwrap().rpc_deadline, None);
    a.advertise = Some(" 192.0.2.1:6783, coord2.example:6783 ,".into());
    let list = a.settings().unwrap().advertise;
    assert_eq!(list.as_deref(), Some("192.0.2.1:6783,coord2.example:6783"), "tokens carry no spaces");
    a.advertise = Some("192.0.2.1:6783,coord2".into());
    assert!(a.settings().unwrap_err().to_string().contains("--advertise: 'coord2' should be host:port"));
    for (bad, says) in [
        ("0.0.0.0:6783", "is where a server listens"),
        ("[::]:6783", "is where a server listens"),
        ("192.0.2.1:0", "the port must be 1 to 65535"),
        ("192.0.2.1:99999", "the port must be 1 to 65535"),
        ("2001:db8::1:6783", "write an IPv6 address in brackets, as [2001:db8::1]:6783"),
    ] {
        a.advertise = Some(format!("192.0.2.9:6783,{bad}"));
        let e = a.settings().unwrap_err().to_string();
        assert!(e.starts_with(&format!("--advertise: '{bad}'")) && e.contains(says), "{bad}: {e}");
    }
    a.advertise = Some("[2001:db8::1]:6783".into());
    assert_eq!(a.settings().unwrap().advertise.as_deref(), Some("[2001:db8::1]:6783"));
}

#[test]
fn ranges_too_small_or_ipv6_are_refused_in_one_line() {
    for (range, says) in [
        ("10.32.0.0/30", "--range: 10.32.0.0/30 is too small"),
        ("10.32.0.0/29", "--range: 10.32.0.0/29 is too small"),
        ("fd00::/48", "--range: fd00::/48 is IPv6"),
        ("fd00::/126", "--range: fd00::/126 is IPv6"),
    ] {
        let mut a = args();
        a.range = range.into();
        let e = a.settings().unwrap_err().to_string();
        assert!(e.starts_with(says) && !e.contains('\n'), "{range}: {e}");
    }
    let mut a = args();
    a.range = "10.32.0.0/29".into();
    (a.default_subnet, a.node_range) = (Some("10.32.0.0/30".into()), Some("10.32.0.4/30".into()));
    assert!(a.settings().is_ok(), "a small range with both parts given");
    let mut a = args();
    a.range = "10.32.0.0/28".into();
    let s = a.settings().unwrap();
    assert_eq!(
        (s.cluster.default_subnet.to_string(), s.cluster.node_range.to_string()),
        ("10.32.0.0/30".into(), "10.32.0.12/30".into())
    );
}

#[test]
fn bad_flags_name_the_flag() {
    let mut a = args();
    a.range = "10.32.0.1/12".into();
    assert!(a.settings().unwrap_err().to_string().starts_with("--range: "));
    let mut a = args();
    a.default_subnet = Some("10.2.0.0/16".into());
    assert_eq!(
        a.settings().unwrap_err().to_string(),
        "--default-subnet: 10.2.0.0/16 is not inside --range 10.32.0.0/12"
    );
    let mut a = args();
    a.node_range = Some("10.32.0.0/24".into());
    assert!(a.settings().unwrap_err().to_string().contains("overlaps"));
    let mut a = args();
    a.dns_domain = "bad domain".into();
    assert!(a.settings().is_err());
    // Nothing DNS cannot carry is recorded for good: a label over 63, a
    // domain leaving no room for names (a review, 2026-12-07).
    let label = "q".repeat(64);
    for (domain, says) in [
        (format!("{label}.local"), format!("--dns-domain: '{label}' is not a DNS label")),
        ("-a.local".to_string(), "--dns-domain: '-a' is not a DNS label".to_string()),
        (format!("{}.local", vec!["z".repeat(60); 3].join(".")), "--dns-domain: 'zzz".to_string()),
    ] {
        let mut a = args();
        a.dns_domain = domain.clone();
        let e = a.settings().unwrap_err().to_string();
        assert!(e.starts_with(&says), "{domain}: {e}");
    }
    let mut a = args();
    a.dns_domain = format!("{}.local", vec!["z".repeat(60); 2].join("."));
    assert!(a.settings().is_ok(), "a 127-character domain");
    let mut a = args();
    a.store = Some("mysql://db/weave".into());
    assert!(a.settings().unwrap_err().to_string().starts_with("--store: 'mysql://db/weave' is neither"));
    // Special-use ranges and token lifetimes past ten years.
    let mut a = args();
    a.range = "169.254.0.0/16".into();
    assert!(a.settings().unwrap_err().to_string().starts_with("--range: '169.254.0.0/16' overlaps"));
    for (flag, set) in [("--token-ttl", 0), ("--first-token-ttl", 1)] {
        let mut a = args();
        *[&mut a.token_ttl, &mut a.first_token_ttl][set] = "5000d".into();
        let e = a.settings().unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{flag}: a lifetime of 5000 days: at most 3650 (never, for a token that does not expire)")
        );
        let mut a = args();
        *[&mut a.token_ttl, &mut a.first_token_ttl][set] = "never".into();
        assert!(a.settings().is_ok());
    }
}

#[test]
fn the_store_defaults_to_sqlite_in_the_data_dir() {
    assert_eq!(args().settings().unwrap().store, Location::Sqlite("/tmp/x/coordinator.db".into()));
    let mut a = args();
    a.store = Some("postgres://weave@db.example/weave".into());
    assert_eq!(a.settings().unwrap().store, Location::Postgres("postgres://weave@db.example/weave".into()));
}
