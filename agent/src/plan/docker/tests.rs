//! `plan::docker`'s tests.
use super::*;

#[test]
fn a_host_name_in_the_domain_is_a_name() {
    let c = |host: &str, domain: &str| serde_json::json!({"Config": {"Hostname": host, "Domainname": domain}});
    let all = ["web.weave.local", "Web.Weave.Local.", "web|weave.local", "a.b|weave.local", "0123456789ab", "web"];
    let all = all.into_iter().chain(["weave.local", "|weave.local", "webweave.local", "web.weave.local.evil"]);
    let want = ["web", "web", "web", "a.b"].map(|n| vec![format!("{n}.weave.local.")]);
    for (spec, want) in all.zip(want.into_iter().chain(std::iter::repeat(vec![]))) {
        let (host, domain) = spec.split_once('|').unwrap_or((spec, ""));
        assert_eq!(domain_names(&c(host, domain), "n1", "weave.local."), want, "{spec}");
    }
    assert!(domain_names(&serde_json::json!({}), "n1", "weave.local.").is_empty());
}

/// Docker 20.10 lists the host name among a container's aliases: an alias
/// in the domain is a cluster name (once, with the host name), a dotted one
/// outside it is no alias of weave's, single labels are scoped aliases.
#[test]
fn dotted_aliases_are_names_in_the_domain_or_nothing() {
    let aliases_on = |list: &[&str]| {
        serde_json::json!({"Id": "fa9f1e407237aaaa", "Name": "/s1",
            "Config": {"Hostname": "search.weave.local", "Domainname": ""},
            "NetworkSettings": {"Networks": {"vnet": {"NetworkID": "n1", "Aliases": list}}}})
    };
    let c = aliases_on(&["fa9f1e407237", "search.weave.local", "api", "api.example.com", "Cache.Weave.Local", "s1"]);
    assert_eq!(aliases(&c, "n1"), ["api"]);
    assert_eq!(domain_names(&c, "n1", "weave.local."), ["search.weave.local.", "cache.weave.local."]);
    assert!(domain_names(&c, "other", "weave.local.").len() == 1, "only the host name off the network");
}

#[test]
fn only_the_plugins_own_keys_are_docker_keys() {
    assert!(is_docker_key(GATEWAY_KEY));
    assert!(is_docker_key("docker:00ff00ff00ff00ff"));
    for other in ["docker:", "web", "host:h1", "k8s-pod-1", "docker-gateway2", "mydocker:1"] {
        assert!(!is_docker_key(other), "{other}");
    }
}

fn create(json: &str) -> CreateNetwork {
    serde_json::from_str(json).unwrap()
}

#[test]
fn a_docker_network_is_a_subnet_with_options() {
    // As Docker 20.10 sends it for `docker network create -d weave --ipam-driver weave --subnet …`.
    let req = create(
        r#"{"NetworkID":"113a","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{}},
        "IPv4Data":[{"AddressSpace":"weave","Gateway":"10.2.3.23/24","Pool":"10.2.3.0/24"}],"IPv6Data":[]}"#,
    );
    let plain = Network { cidr: "10.2.3.0/24".into(), multicast: true, internal: false, seen_by: String::new() };
    assert_eq!(network_of(&req), Ok(plain.clone()));
    assert_eq!(internal_check(&plain, true), Ok(()));
    // `--internal`, as Docker sends it: refused on a subnet with egress only.
    let req = create(
        r#"{"NetworkID":"1","Options":{"com.docker.network.internal":true,"com.docker.network.generic":{}},
        "IPv4Data":[{"AddressSpace":"weave","Pool":"10.2.3.0/24"}]}"#,
    );
    let internal = network_of(&req).unwrap();
    assert!(internal.internal);
    assert_eq!(internal_check(&internal, false), Ok(()));
    assert!(internal_check(&internal, true).unwrap_err().contains("has egress"));
    let req = create(
        r#"{"NetworkID":"1","Options":{"com.docker.network.generic":{"works.weave.multicast":"false"}},
        "IPv4Data":[{"AddressSpace":"weave","Pool":"10.2.3.0/24"}]}"#,
    );
    assert!(!network_of(&req).unwrap().multicast);
    let req = create(
        r#"{"NetworkID":"1","Options":{"com.docker.network.generic":{"works.weave.multicst":"false"}},
        "IPv4Data":[{"AddressSpace":"weave","Pool":"10.2.3.0/24"}]}"#,
    );
    assert!(network_of(&req).unwrap_err().contains("unknown option --opt works.weave.multicst"));
    // Docker's MTU option: only the cluster's own.
    let req = create(
        r#"{"NetworkID":"1","Options":{"com.docker.network.generic":{"com.docker.network.driver.mtu":"1400"}},
        "IPv4Data":[{"AddressSpace":"weave","Pool":"10.2.3.0/24"}]}"#,
    );
    let e = mtu_check(&req, 1370).unwrap_err();
    assert!(e.contains("mtu=1400") && e.contains("cluster's MTU, 1370"), "{e}");
    assert_eq!(mtu_check(&req, 1400), Ok(()));
    assert_eq!(mtu_check(&create(r#"{"NetworkID":"1"}"#), 1370), Ok(()));
    let req = create(r#"{"NetworkID":"1","IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"172.18.0.0/16"}]}"#);
    assert!(network_of(&req).unwrap_err().contains("--ipam-driver weave"));
    let req = create(
        r#"{"NetworkID":"1","IPv4Data":[{"AddressSpace":"weave","Pool":"10.2.3.0/24"}],
        "IPv6Data":[{"AddressSpace":"weave","Pool":"fd00::/64"}]}"#,
    );
    assert!(network_of(&req).unwrap_err().contains("IPv4 only"));
}

#[test]
fn a_containers_aliases_on_one_network() {
    // As Docker 20.10 answers `GET /containers/<id>/json` for `docker run
    // --name web --network-alias api --network-alias API --net n1 …`
    // also on n2 with `--alias db`: its short id is an alias Docker adds.
    let inspect: Value = serde_json::from_str(
        r#"{"Id":"3f1c2b4a5d6e7f8091a2b3c4d5e6f708","Name":"/web","NetworkSettings":{"Networks":{
        "n1":{"NetworkID":"aaa1","EndpointID":"e1","Aliases":["api","3f1c2b4a5d6e","web","API",""]},
        "n2":{"NetworkID":"bbb2","EndpointID":"e2","Aliases":["db"]},
        "n3":{"NetworkID":"ccc3","EndpointID":"e3","Aliases":null}}}}"#,
    )
    .unwrap();
    assert_eq!(aliases(&inspect, "aaa1"), ["api"]);
    assert_eq!(aliases(&inspect, "bbb2"), ["db"]);
    assert!(aliases(&inspect, "ccc3").is_empty() && aliases(&inspect, "zzz").is_empty());
    assert!(aliases(&Value::Null, "aaa1").is_empty());
}

#[test]
fn pools_and_addresses() {
    assert_eq!(pool_cidr("10.2.3.0/24").unwrap().to_string(), "10.2.3.0/24");
    assert!(pool_cidr("10.2.3.1/24").unwrap_err().contains("did you mean 10.2.3.0/24"));
    assert!(pool_cidr("banana").is_err());
    let ok = RequestPool { address_space: "weave".into(), pool: "10.2.3.0/24".into(), ..Default::default() };
    assert_eq!(check_pool(&ok), Ok(()));
    let v6 = RequestPool { v6: true, ..Default::default() };
    assert!(check_pool(&v6).unwrap_err().contains("IPv6"));
    let range = RequestPool { pool: "10.2.3.0/24".into(), sub_pool: "10.2.3.0/25".into(), ..Default::default() };
    assert!(check_pool(&range).unwrap_err().contains("--ip-range"));
    assert_eq!(wanted_address(""), Ok(None));
    assert_eq!(wanted_address("10.2.3.7"), Ok(Some(Ipv4Addr::new(10, 2, 3, 7))));
    assert_eq!(wanted_address("10.2.3.7/24"), Ok(Some(Ipv4Addr::new(10, 2, 3, 7))));
    assert!(wanted_address("x").is_err());
    let gw: RequestAddress = serde_json::from_str(
        r#"{"PoolID":"10.2.3.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
    )
    .unwrap();
    assert!(gw.is_gateway());
    let ep: RequestAddress = serde_json::from_str(r#"{"PoolID":"10.2.3.0/24","Address":"","Options":null}"#).unwrap();
    assert!(!ep.is_gateway());
}

#[test]
fn endpoint_names_and_join() {
    let id = "ec81aa991b4df5bdfcae295152d596f0dc8800b7ce6d82e5e6172b53ef8040c2";
    assert_eq!(host_ifname(id).unwrap(), "wvdec81aa991b");
    assert!(host_ifname(id).unwrap().len() < 15);
    assert!(host_ifname("../x").is_err() && host_ifname("abc").is_err());
    let j = join_response("wvdec81aa991bp", true, None);
    assert_eq!(j["InterfaceName"]["DstPrefix"], "ethwe");
    assert_eq!(j["StaticRoutes"][0]["Destination"], "224.0.0.0/4");
    assert_eq!(j["DisableGatewayService"], true);
    assert!(j.get("Gateway").is_none(), "no way out off an egress subnet: {j}");
    assert_eq!(join_response("x", false, None)["StaticRoutes"].as_array().unwrap().len(), 0);
    let egress = join_response("x", false, Some(Ipv4Addr::new(10, 2, 3, 1)));
    assert_eq!((&egress["Gateway"], &egress["DisableGatewayService"]), (&"10.2.3.1".into(), &true.into()));
    let net: Value = serde_json::from_str(
        r#"{"Containers":{"5781":{"Name":"web","EndpointID":"ec81","IPv4Address":"10.2.3.174/24"}}}"#,
    )
    .unwrap();
    assert_eq!(container_name(&net, "ec81").as_deref(), Some("web"));
    assert_eq!(container_name(&net, "other"), None);
    assert_eq!(error_body("no"), br#"{"Err":"no"}"#);
}
