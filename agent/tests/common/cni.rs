//! Driving a CNI plugin as a runtime does: `CNI_*` environment variables,
//! the network configuration on stdin, JSON on stdout; and the spec's result shape.
use std::{
    io::Write,
    net::Ipv4Addr,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

pub fn plugin(bin: &str, command: &str, ns_path: &str, id: &str, conf: &Value, in_ns: Option<&str>) -> Output {
    plugin_with_args(bin, command, ns_path, id, conf, in_ns, "")
}

/// [`plugin`] with `CNI_IFNAME` `ifname` (a container's second network is `eth1`).
pub fn plugin_on(bin: &str, command: &str, ns_path: &str, id: &str, conf: &Value, ifname: &str) -> Output {
    run_plugin(bin, command, ns_path, id, conf, None, "", ifname)
}

/// [`plugin`] with `CNI_ARGS` (what kubelet passes: `K8S_POD_NAME=…;…`).
pub fn plugin_with_args(
    bin: &str,
    command: &str,
    ns_path: &str,
    id: &str,
    conf: &Value,
    in_ns: Option<&str>,
    cni_args: &str,
) -> Output {
    run_plugin(bin, command, ns_path, id, conf, in_ns, cni_args, "eth0")
}

#[allow(clippy::too_many_arguments)]
fn run_plugin(
    bin: &str,
    command: &str,
    ns_path: &str,
    id: &str,
    conf: &Value,
    in_ns: Option<&str>,
    cni_args: &str,
    ifname: &str,
) -> Output {
    let mut cmd = match in_ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", ns_path)
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", cni_args)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the plugin");
    // VERSION may exit without reading stdin.
    let _ = child.stdin.take().unwrap().write_all(conf.to_string().as_bytes());
    child.wait_with_output().unwrap()
}

pub fn weave_cni() -> String {
    env!("CARGO_BIN_EXE_weave-cni").to_string()
}

pub fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// The spec's result shape (section "ADD Success").
pub fn validate_add_result(r: &Value, netns: &str) -> Vec<(Ipv4Addr, u8)> {
    assert_eq!(r["cniVersion"], "1.0.0", "{r}");
    let ifs = r["interfaces"].as_array().expect("interfaces is a list");
    assert!(!ifs.is_empty(), "{r}");
    for i in ifs {
        assert!(i["name"].as_str().is_some_and(|n| !n.is_empty()), "{r}");
        // podman parses it with Go's net.ParseMAC and fails the container without one.
        let mac = i["mac"].as_str().unwrap_or_else(|| panic!("interfaces[].mac is missing: {r}"));
        let octets: Vec<&str> = mac.split(':').collect();
        assert!(octets.len() == 6 && octets.iter().all(|o| u8::from_str_radix(o, 16).is_ok() && o.len() == 2), "{r}");
    }
    assert_eq!(ifs[0]["sandbox"], netns, "{r}");
    let ips = r["ips"].as_array().expect("ips is a list");
    assert!(!ips.is_empty(), "{r}");
    let addrs = ips
        .iter()
        .map(|ip| {
            let index = ip["interface"].as_u64().expect("ips[].interface is an index") as usize;
            assert!(index < ifs.len(), "{r}");
            let net: ipnet::Ipv4Net = ip["address"].as_str().unwrap().parse().expect("ips[].address is CIDR");
            (net.addr(), net.prefix_len())
        })
        .collect();
    for route in r["routes"].as_array().expect("routes is a list") {
        let _: ipnet::IpNet = route["dst"].as_str().unwrap().parse().expect("routes[].dst is CIDR");
    }
    assert!(r["dns"].is_object(), "{r}");
    addrs
}
