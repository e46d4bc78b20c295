//! deploy/cni/10-weave.conflist run as a runtime runs a chain: weave-cni,
//! then the standard portmap and bandwidth plugins.
mod common;

use std::{io::Write, time::Duration};

use common::{cni::*, *};
use serde_json::{Value, json};

/// The conflist of deploy/cni/ run as a runtime runs a chain: each plugin's
/// result is the next one's prevResult, portmap and bandwidth run in the
/// host namespace. bandwidth finds the container interface's veth peer among
/// the result's host interfaces (weave's result named none until 2026-12-07,
/// and bandwidth failed every ADD that asked for a limit).
#[test]
#[ignore = "needs root: network namespaces"]
fn conflist_chains_weave_cni_with_portmap_and_bandwidth() {
    let bin_of = |t: &Value| match t.as_str().unwrap() {
        "weave-cni" => weave_cni(),
        other => format!("/usr/lib/cni/{other}"),
    };
    for t in ["portmap", "bandwidth"] {
        let p = bin_of(&json!(t));
        assert!(std::path::Path::new(&p).exists(), "install containernetworking-plugins (.ci/install-deps.sh)");
    }
    let mut bed = Bed::with_hosts(1);
    let list: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/cni/10-weave.conflist")).unwrap(),
    )
    .unwrap();
    let ns = bed.add_container("web");
    let netns = format!("/run/netns/{ns}");
    let id = format!("{}-web", bed.prefix);
    let host = bed.hosts[0].ns.clone();
    let socket = bed.hosts[0].socket.to_str().unwrap().to_string();
    // As libcni does: the port mappings and the bandwidth (as kubelet
    // passes a pod's bandwidth annotations, in bits) go to each plugin that
    // declares the capability, weave-cni too (it refuses port mappings
    // where replies cannot get back).
    let runtime = json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 80_000_000, "ingressBurst": 800_000, "egressRate": 40_000_000, "egressBurst": 400_000},
    });
    let conf_of = |p: &Value| {
        let mut conf = p.clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if p["type"] == "weave-cni" {
            conf["socket"] = json!(socket);
        }
        for (capability, on) in p["capabilities"].as_object().into_iter().flatten() {
            if on == true {
                conf["runtimeConfig"][capability] = runtime[capability].clone();
            }
        }
        conf
    };
    let types: Vec<&str> = list["plugins"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["weave-cni", "portmap", "bandwidth"]);
    assert_eq!(list["plugins"][0]["capabilities"]["portMappings"], true, "weave-cni must see the port mappings");
    // The default subnet has no egress: the container would get no default
    // route, and the replies to a published port nowhere to go.
    let out = plugin(&weave_cni(), "ADD", &netns, &id, &conf_of(&list["plugins"][0]), Some(&host));
    let refused = json_out(&out);
    assert_eq!(refused["code"], 101, "{refused}");
    assert!(refused["details"].as_str().unwrap_or_default().contains("has no egress"), "{refused}");
    assert!(interfaces(&ns).is_empty(), "a refused ADD left {:?}", interfaces(&ns));
    let out = bed.weavectl_admin(&["subnet", "set", "default", "--egress", "on"]);
    assert!(out.status.success(), "egress on: {}", String::from_utf8_lossy(&out.stderr));
    ok_in(&host, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let mut prev: Option<Value> = None;
    for p in list["plugins"].as_array().unwrap() {
        let mut conf = conf_of(p);
        if let Some(prev) = &prev {
            conf["prevResult"] = prev.clone();
        }
        let out = wait_for("the agent to see egress on", Duration::from_secs(10), || {
            let out = plugin(&bin_of(&p["type"]), "ADD", &netns, &id, &conf, Some(&host));
            (!String::from_utf8_lossy(&out.stdout).contains("has no egress")).then_some(out)
        });
        assert!(
            out.status.success(),
            "{} ADD: {}{}",
            p["type"],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        prev = Some(json_out(&out));
    }
    let result = prev.unwrap();
    let ip = validate_add_result(&result, &netns)[0].0;
    // weave's host side (no sandbox, its MAC) is in the result, and it is
    // the container interface's veth peer; bandwidth shaped it: an htb root
    // for what goes to the container, and an ifb of its own (listed after)
    // for what comes from it (Debian's plugin shapes with tbf, later ones with htb).
    let ifs = result["interfaces"].as_array().unwrap();
    let port = ifs.iter().find(|i| i["sandbox"].is_null() && i["name"].as_str().unwrap().starts_with("wv")).unwrap();
    let port = port["name"].as_str().unwrap().to_string();
    let link: Value = serde_json::from_str(&ok_in(&host, &["ip", "-j", "link", "show", &port])).unwrap();
    let peer: Value = serde_json::from_str(&ok_in(&ns, &["ip", "-j", "link", "show", "eth0"])).unwrap();
    assert_eq!(link[0]["ifindex"], peer[0]["link_index"], "{port} is eth0's peer: {link} {peer}");
    assert_eq!(link[0]["address"], ifs.iter().find(|i| i["name"] == port.as_str()).unwrap()["mac"], "{result}");
    let ifb = ifs.iter().find(|i| i["name"].as_str().unwrap().starts_with("bwp")).expect("bandwidth's ifb");
    let ifb = ifb["name"].as_str().unwrap().to_string();
    let shaped = |dev: &str| {
        let root = ok_in(&host, &["tc", "qdisc", "show", "dev", dev, "root"]);
        root.starts_with("qdisc tbf") || root.starts_with("qdisc htb")
    };
    assert!(shaped(&port) && shaped(&ifb), "{}", ok_in(&host, &["tc", "qdisc", "show"]));
    assert!(ok_in(&host, &["tc", "qdisc", "show", "dev", &port, "ingress"]).contains("ingress"), "to {ifb}");
    // CHECK, as the runtime runs it: each plugin with the final result
    // (but Debian's portmap, whose CHECK looks for iptables chains even with
    // the nftables backend: its own limit).
    for p in list["plugins"].as_array().unwrap().iter().filter(|p| p["type"] != "portmap") {
        let mut conf = conf_of(p);
        conf["prevResult"] = result.clone();
        let out = plugin(&bin_of(&p["type"]), "CHECK", &netns, &id, &conf, Some(&host));
        assert!(
            out.status.success(),
            "{} CHECK: {}{}",
            p["type"],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // portmap's DNAT: a connection to the host's port 8080 reaches the container's port 80.
    let rules = ok_in(&host, &["nft", "list", "ruleset"]);
    assert!(rules.contains("8080") && rules.contains(&ip.to_string()), "{rules}");
    let server = in_netns(&ns, move || {
        let l = std::net::TcpListener::bind((ip, 80)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"hello from the container").unwrap();
    });
    // The egress subnet's attach exposed the host and gave the container its
    // default route through it; a connection from the host to its own
    // underlay address, port 8080, goes through portmap's DNAT.
    let routes = ok_in(&ns, &["ip", "route", "show", "default"]);
    assert!(routes.starts_with("default via 10.32."), "{routes}");
    let hip = bed.hosts[0].ip;
    // Polled: `expose` waits for the firewall only up to 5 s, and the
    // listener's thread may still be binding.
    let connect = format!("exec 3<>/dev/tcp/{hip}/8080; timeout 5 cat <&3");
    let got = wait_for("the host to reach the container through portmap", Duration::from_secs(20), || {
        let out = in_ns(&host, &["timeout", "10", "bash", "-c", &connect]);
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !got.is_empty()).then_some(got)
    });
    assert_eq!(got, "hello from the container");
    server.join().unwrap();
    // Through the shaping: both directions' root qdiscs carried the connection.
    for dev in [&port, &ifb] {
        let stats = ok_in(&host, &["tc", "-s", "qdisc", "show", "dev", dev, "root"]);
        let sent = |line: &str| line.trim().strip_prefix("Sent ")?.split(' ').next()?.parse::<u64>().ok();
        assert!(stats.lines().filter_map(sent).sum::<u64>() > 0, "nothing through {dev}'s root: {stats}");
    }
    // DEL in reverse order, twice.
    for _ in 0..2 {
        for p in list["plugins"].as_array().unwrap().iter().rev() {
            let mut conf = p.clone();
            conf["cniVersion"] = list["cniVersion"].clone();
            conf["name"] = list["name"].clone();
            conf["socket"] = json!(socket);
            conf["runtimeConfig"] = runtime.clone();
            conf["prevResult"] = result.clone();
            let out = plugin(&bin_of(&p["type"]), "DEL", &netns, &id, &conf, Some(&host));
            assert!(
                out.status.success(),
                "{} DEL: {}{}",
                p["type"],
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(interfaces(&ns).is_empty());
    assert!(!in_ns(&host, &["ip", "link", "show", &ifb]).status.success(), "bandwidth's DEL removes {ifb}");
    assert!(!in_ns(&host, &["ip", "link", "show", &port]).status.success(), "weave's DEL removes {port}");
}
