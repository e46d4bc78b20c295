use super::*;

#[test]
fn config_parses_and_refuses() {
    let c =
        NetConf::parse(br#"{"cniVersion":"1.0.0","name":"weave","type":"weave-cni","subnet":"10.2.3.0/24"}"#).unwrap();
    assert_eq!(c.addr(), "net:10.2.3.0/24");
    assert_eq!(c.socket(), "/run/weave/agent.sock");
    let d = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni","socket":"/x.sock"}"#).unwrap();
    assert_eq!((d.addr().as_str(), d.socket()), ("net:default", "/x.sock"));
    // Not JSON is a decode failure (6); JSON of the wrong shape a bad configuration (7).
    assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, code::DECODE);
    assert_eq!(NetConf::parse(b"").unwrap_err().code, code::DECODE);
    assert_eq!(NetConf::parse(br#"{"cniVersion":1,"name":"w","type":"t"}"#).unwrap_err().code, code::BAD_CONFIG);
    // A subnet by name; one the agent could never read is bad configuration (7).
    let conf = |subnet: &str| {
        let text = format!(r#"{{"cniVersion":"1.0.0","name":"w","type":"weave-cni","subnet":"{subnet}"}}"#);
        let conf = NetConf::parse(text.as_bytes()).expect("parses whatever the subnet (DEL needs it)");
        conf.check_subnet().map(|()| conf)
    };
    assert_eq!(conf("backend").unwrap().addr(), "net:backend");
    assert_eq!(conf("ip:10.2.3.7/24").unwrap().addr(), "ip:10.2.3.7/24");
    for bad in ["bad name", "10.2.3.7", "10.2.3.7/24", "net:fd00::/64", "/run/netns/x"] {
        let e = conf(bad).unwrap_err();
        assert_eq!(e.code, code::BAD_CONFIG, "{bad}: {e:?}");
        assert!(e.details.starts_with("subnet: "), "{bad}: {e:?}");
    }
    assert_eq!(NetConf::parse(br#"{"cniVersion":"1.0.0","type":"weave-cni"}"#).unwrap_err().code, code::BAD_CONFIG);
    // The versions the reference plugins take, not one they do not know.
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let text = format!(r#"{{"cniVersion":"{v}","name":"w","type":"weave-cni"}}"#);
        let conf = NetConf::parse(text.as_bytes()).unwrap();
        assert_eq!(conf.has_check(), v != "0.3.0" && v != "0.3.1", "{v}");
        assert_eq!(conf.has_gc(), v == "1.1.0", "{v}");
    }
    for v in ["0.2.0", "1.2.0", "2.0.0", ""] {
        let text = format!(r#"{{"cniVersion":"{v}","name":"w","type":"weave-cni"}}"#);
        assert_eq!(NetConf::parse(text.as_bytes()).unwrap_err().code, code::INCOMPATIBLE_VERSION, "{v}");
    }
}

fn conf_with_prev(version: &str, prev: &str) -> NetConf {
    let text = format!(r#"{{"cniVersion":"{version}","name":"w","type":"weave-cni","prevResult":{prev}}}"#);
    NetConf::parse(text.as_bytes()).unwrap()
}

#[test]
fn a_chained_add_passes_the_previous_result_on() {
    let prev = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff",
        "sandbox":"/run/netns/x"}],"ips":[{"address":"192.168.50.2/24","gateway":"192.168.50.1","interface":1}],
        "routes":[{"dst":"0.0.0.0/0"},{"dst":"224.0.0.0/4"}],"dns":{"nameservers":["192.168.50.1"]}}"#;
    let r = conf_with_prev("1.0.0", prev).add_result(
        "/run/netns/x",
        "ethwe",
        "0a:58:0a:20:00:07",
        &["10.32.0.7/16".into()],
        Some("10.32.0.1"),
        Some(("wv0a1b2c3d", "6e:11:22:33:44:55")),
    );
    let names: Vec<&str> = r["interfaces"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    // The host side of weave's veth after its container side, with no sandbox.
    assert_eq!(names, ["cni0", "eth0", "ethwe", "wv0a1b2c3d"]);
    assert_eq!(r["interfaces"][3], json!({"name": "wv0a1b2c3d", "mac": "6e:11:22:33:44:55"}));
    assert_eq!(r["ips"][0]["address"], "192.168.50.2/24");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!((r["ips"][1]["address"].as_str(), r["ips"][1]["interface"].as_u64()), (Some("10.32.0.7/16"), Some(2)));
    assert_eq!(r["routes"].as_array().unwrap().len(), 2, "the multicast and default routes once: {r}");
    assert_eq!(r["dns"]["nameservers"][0], "192.168.50.1", "the first network's resolver stays");
    assert_eq!(r["cniVersion"], "1.0.0");
    assert!(r["ips"][1].get("version").is_none(), "1.0.0 has no ips[].version");
    // Without servers in the previous result, weave's; in 0.4.0 each address says its family.
    let r = conf_with_prev("0.4.0", r#"{"interfaces":[],"ips":[]}"#).add_result(
        "/run/netns/x",
        "eth0",
        "0a:58:0a:20:00:07",
        &["10.32.0.7/16".into()],
        None,
        None,
    );
    assert_eq!((r["cniVersion"].as_str(), r["ips"][0]["version"].as_str()), (Some("0.4.0"), Some("4")));
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 1, "no host side named, none listed: {r}");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(r["dns"]["nameservers"][0], NAMESERVER);
    // A previous result of the wrong shape is passed on, not a panic (after the agent attached).
    for prev in [r#"{"ips":["192.168.50.2/24", 7, null]}"#, r#"{"ips":{"a":1},"interfaces":"x"}"#, "[1]"] {
        let r = conf_with_prev("0.4.0", prev).add_result(
            "/x",
            "eth0",
            "0a:58:0a:20:00:07",
            &["10.32.0.7/16".into()],
            None,
            None,
        );
        assert!(r["ips"].as_array().unwrap().iter().any(|i| i["address"] == "10.32.0.7/16"), "{prev}: {r}");
    }
}

#[test]
fn check_finds_weaves_interface_in_the_previous_result() {
    // Another plugin's interface and address first; weave's by its MAC (0a:58 and its address).
    let prev = r#"{"interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/x"},
        {"name":"ethwe","mac":"0A:58:0A:20:00:04","sandbox":"/x"}],
        "ips":[{"address":"192.168.60.2/24","interface":0},{"address":"10.32.0.4/16","interface":1}]}"#;
    let (name, mac, addresses) = conf_with_prev("1.0.0", prev).prev_weave_interface().unwrap();
    assert_eq!(
        (name.as_str(), mac.as_str(), addresses),
        ("ethwe", "0a:58:0a:20:00:04", vec!["10.32.0.4/16".to_string()])
    );
    // An address whose MAC is not weave's for it: none of weave's.
    let wrong = r#"{"interfaces":[{"name":"eth0","mac":"0a:58:0a:20:00:09"}],"ips":[{"address":"10.32.0.4/16","interface":0}]}"#;
    assert_eq!(conf_with_prev("1.0.0", wrong).prev_weave_interface(), None);
}

#[test]
fn del_names_only_the_addresses_of_its_own_interface() {
    let c = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni","prevResult":{
            "interfaces":[{"name":"eth1"},{"name":"lo0"}],
            "ips":[{"address":"10.2.3.5/24","interface":0},{"address":"192.168.9.9/24","interface":1},
                   {"address":"10.9.9.9/24"},{"address":"10.2.3.6/24","interface":7}]}}"#,
    )
    .unwrap();
    assert_eq!(c.prev_addresses_on("eth1"), vec!["10.2.3.5/24".to_string()]);
    assert!(c.prev_addresses_on("eth0").is_empty());
    let none = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni"}"#).unwrap();
    assert!(none.prev_addresses_on("eth0").is_empty());
}

#[test]
fn results_have_the_spec_shape() {
    let host = Some(("wv0a1b2c3d", "6e:11:22:33:44:55"));
    let r = add_result("/run/netns/x", "ethwe", "02:42:0a:20:00:05", &["10.32.0.5/16".into()], true, None, host);
    assert_eq!(r["cniVersion"], CNI_VERSION);
    assert_eq!(r["interfaces"][0]["mac"], "02:42:0a:20:00:05");
    assert_eq!(r["interfaces"][0]["sandbox"], "/run/netns/x");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(r["ips"][0]["address"], "10.32.0.5/16");
    assert_eq!(r["interfaces"][1], json!({"name": "wv0a1b2c3d", "mac": "6e:11:22:33:44:55"}), "{r}");
    assert_eq!(r["routes"][0]["dst"], "224.0.0.0/4");
    assert_eq!(r["dns"]["nameservers"][0], "127.0.0.11");
    assert!(r["ips"][0].get("gateway").is_none(), "no gateway off an egress subnet: {r}");
    // On an egress subnet: the host as gateway, and the default route through it.
    let r = add_result("/x", "eth0", "02:42:0a:20:00:05", &["10.32.0.5/16".into()], true, Some("10.32.0.1"), None);
    assert_eq!(r["ips"][0]["gateway"], "10.32.0.1");
    assert_eq!(r["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.32.0.1"}));
    assert_eq!(r["routes"][1]["dst"], "224.0.0.0/4");
    let off = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni","resolver":false}"#).unwrap();
    let r = off.add_result("/x", "eth0", "02:42:0a:20:00:05", &["10.32.0.5/16".into()], None, None);
    assert_eq!(r["dns"], json!({}), "no resolver named with resolver false: {r}");
    // `"dns"` is the spec's dictionary (libcni refuses a boolean there, and
    // with it the whole conflist): a dictionary is taken, a boolean refused.
    let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni","dns":false}"#).unwrap_err();
    assert!(e.code == code::BAD_CONFIG && e.details.contains("\"resolver\": false"), "{e:?}");
    NetConf::parse(br#"{"cniVersion":"1.0.0","name":"w","type":"weave-cni","dns":{"nameservers":["10.0.0.10"]}}"#)
        .unwrap();
    // Published ports: what the runtime passes for the portMappings capability.
    let conf = |rc: &str| {
        let text = format!(r#"{{"cniVersion":"1.0.0","name":"w","type":"weave-cni"{rc}}}"#);
        NetConf::parse(text.as_bytes()).unwrap().publishes_ports()
    };
    assert!(!conf(""));
    assert!(!conf(r#","runtimeConfig":{"portMappings":[]}"#));
    assert!(conf(r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#));
    assert_eq!(version_result()["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    let e = CniError::new(code::BAD_CONFIG, "m", "d").to_json();
    assert_eq!((e["code"].as_u64(), e["msg"].as_str()), (Some(7), Some("m")));
}

#[test]
fn refusals_map_to_codes_by_kind() {
    let code_of = |kind| refusal(&Refusal::new(kind, "m")).code;
    assert_eq!(code_of(ErrorKind::UnknownContainer), code::UNKNOWN_CONTAINER);
    assert_eq!(code_of(ErrorKind::Unavailable), code::TRY_AGAIN);
    for kind in [
        ErrorKind::Invalid,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Exhausted,
        ErrorKind::Denied,
        ErrorKind::Failed,
    ] {
        assert_eq!(code_of(kind), code::REFUSED, "{kind:?}");
    }
    assert_eq!(refusal(&Refusal::failed("why")).to_json()["details"], "why");
}

#[test]
fn names_from_cni_args() {
    // podman 4.3 (CNI backend)
    assert_eq!(dns_name("IgnoreUnknown=1;K8S_POD_NAME=web").as_deref(), Some("web"));
    // Kubernetes (kubelet, containerd, CRI-O)
    let k8s = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=Web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u";
    assert_eq!(dns_name(k8s).as_deref(), Some("web-0.shop"));
    assert_eq!(dns_name(""), None);
    assert_eq!(dns_name("IgnoreUnknown=1"), None);
    assert_eq!(dns_name("K8S_POD_NAME="), None);
    assert_eq!(dns_name("K8S_POD_NAME=bad name!"), None, "not a DNS label: no name, still an address");
    assert_eq!(dns_name("K8S_POD_NAME=-x"), None);
    // An address asked for (`podman run --ip`, `network reload`) is taken;
    // a MAC only as the one weave gives that address; anything else named.
    let ip = Some("10.32.0.50".parse().unwrap());
    assert_eq!(requested_address(k8s, &[]), Ok(None));
    assert_eq!(requested_address("IgnoreUnknown=1;K8S_POD_NAME=s1;IP=10.32.0.50", &[]), Ok(ip));
    assert_eq!(requested_address("IP=10.32.0.50;MAC=0A:58:0a:20:00:32", &[]), Ok(ip));
    assert_eq!(requested_address("IP=;K8S_POD_NAME=s1", &[]), Ok(None));
    // podman's reload of a `--ip` container: the address in runtimeConfig.ips
    // (twice), its MAC in CNI_ARGS, no IP= (refused: the container lost its
    // network; found by a review, 2026-12-06). IPv6 ones are not weave's.
    let ips = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let reload = "IgnoreUnknown=1;K8S_POD_NAME=fixed;MAC=0a:58:0a:20:00:32";
    assert_eq!(requested_address(reload, &ips(&["10.32.0.50", "10.32.0.50"])), Ok(ip));
    assert_eq!(requested_address("", &ips(&["10.32.0.50/16", "fd00::5"])), Ok(ip));
    assert_eq!(requested_address("IP=10.32.0.50", &ips(&["10.32.0.9"])), Ok(ip), "CNI_ARGS first");
    assert!(
        requested_address("", &ips(&["10.32.0.50", "10.32.0.51"])).unwrap_err().contains("one address per network")
    );
    assert!(requested_address("", &ips(&["nope"])).unwrap_err().contains("not an IP address"));
    assert!(requested_address(reload, &[]).unwrap_err().contains("its own MAC"));
    // What is not understood is refused, not answered with another address
    // (the same review's follow-up): a mapped address is its IPv4 one, a
    // prefix past the family's is bad, and so is any other shape.
    assert_eq!(requested_address("", &ips(&["::ffff:10.32.0.50"])), Ok(ip));
    assert!(requested_address("", &ips(&["10.32.0.50/99"])).unwrap_err().contains("not an IP address"));
    assert!(requested_address("", &ips(&["10.32.0.50/x"])).unwrap_err().contains("not an IP address"));
    // IPv6 alone is refused, as IP= of IPv6 is: it was passed over and an
    // address of weave's choosing given (a review, 2026-12-06).
    let v6_alone = requested_address("", &ips(&["fd00::9/64"])).unwrap_err();
    assert!(v6_alone.contains("fd00::9/64 alone") && v6_alone.contains("IPv4"), "{v6_alone}");
    assert_eq!(requested_address("IP=10.32.0.50", &ips(&["fd00::9/64"])), Ok(ip), "CNI_ARGS first");
    let conf = |ips: &str| {
        NetConf::parse(
            format!(r#"{{"cniVersion":"1.0.0","name":"w","type":"weave-cni","runtimeConfig":{{"ips":{ips}}}}}"#)
                .as_bytes(),
        )
        .unwrap()
        .runtime_ips()
    };
    assert_eq!(conf(r#"["10.32.0.50/16"]"#), Ok(vec!["10.32.0.50/16".to_string()]));
    assert_eq!(conf("null"), Ok(Vec::new()));
    assert!(conf(r#""10.32.0.78""#).unwrap_err().contains("not a list"));
    assert!(conf("[1,2]").unwrap_err().contains("not an address"));
    let refused = |args: &str| requested_address(args, &[]).unwrap_err();
    assert!(refused("MAC=02:11:22:33:44:55;K8S_POD_NAME=s1").contains("its own MAC"));
    assert!(refused("IP=10.32.0.50;MAC=02:11:22:33:44:55").contains("0a:58:0a:20:00:32 for 10.32.0.50"));
    assert!(refused("IP=10.32.0.500").contains("not an IPv4 address"));
    assert!(refused("IP=fd00::5").contains("not an IPv4 address"));
}

#[test]
fn the_gateway_of_weaves_interface_comes_from_the_previous_result() {
    let prev = r#"{"interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth1","mac":"02:57:0a:20:00:07"}],
        "ips":[{"address":"192.168.50.2/24","gateway":"192.168.50.1","interface":0},
               {"address":"10.32.0.7/16","gateway":"10.32.0.1","interface":1}]}"#;
    let conf = NetConf::parse(
        format!(r#"{{"cniVersion":"1.0.0","name":"w","type":"weave-cni","prevResult":{prev}}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(conf.prev_weave_gateway("eth1"), Some("10.32.0.1".parse().unwrap()));
    assert_eq!(conf.prev_weave_gateway("eth0"), Some("192.168.50.1".parse().unwrap()));
    assert_eq!(conf.prev_weave_gateway("eth9"), None);
}

/// GC's list under the spec's key, the older one, or both (libcni writes
/// both); none at all is not an empty list.
#[test]
fn gc_reads_the_valid_attachments_under_either_key() {
    let parse = |extra: &str| {
        let text = format!(r#"{{"cniVersion":"1.1.0","name":"w","type":"weave-cni"{extra}}}"#);
        NetConf::parse(text.as_bytes()).unwrap()
    };
    let one = r#"[{"containerID":"abc","ifname":"eth0"}]"#;
    for extra in [
        format!(r#","cni.dev/valid-attachments":{one}"#),
        format!(r#","cni.dev/attachments":{one}"#),
        format!(r#","cni.dev/valid-attachments":{one},"cni.dev/attachments":{one}"#),
    ] {
        let conf = parse(&extra);
        let keep = conf.gc_keep().unwrap();
        assert_eq!((keep.len(), keep[0].container_id.as_str(), keep[0].ifname.as_str()), (1, "abc", "eth0"), "{extra}");
    }
    assert_eq!(parse(r#","cni.dev/valid-attachments":[]"#).gc_keep().map(<[_]>::len), Some(0));
    assert!(parse("").gc_keep().is_none());
    let bad = r#"{"cniVersion":"1.1.0","name":"w","type":"weave-cni","cni.dev/valid-attachments":[{"ifname":"eth0"}]}"#;
    assert_eq!(NetConf::parse(bad.as_bytes()).unwrap_err().code, code::BAD_CONFIG);
}
