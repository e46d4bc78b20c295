//! CNI configuration and environment (agent/src/cni.rs, as
//! src/bin/weave-cni.rs uses it): the runtime's `CNI_*` variables and the
//! network configuration on stdin. Input: `CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_IFNAME`, `CNI_NETNS` and stdin, separated by NUL bytes. Invariants:
//! no panic; the request the plugin would send the agent is one JSON line
//! that the agent parses back to exactly the runtime's values (no injection
//! through the environment or the config); results and errors are JSON.

use weave_agent::plan::cni::{self, CniError, NetConf};
use weave_proto::local_api::{Refusal, Request};

/// What the agent receives: one line, parsed as local_api's server does.
fn over_the_socket(request: &Request) -> Request {
    let line = serde_json::to_string(request).expect("a request encodes");
    assert!(!line.contains('\n'), "a request is one line");
    serde_json::from_str(&line).expect("the agent parses the plugin's request")
}

pub fn run(data: &[u8]) {
    let mut fields = data.splitn(5, |b| *b == 0);
    let mut next = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let (command, container, ifname, netns) = (next(), next(), next(), next());
    let stdin = data.splitn(5, |b| *b == 0).nth(4).unwrap_or_default();

    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_json().to_string();
            return;
        }
    };
    let id = cni::container_key(&container);
    let addr = conf.addr();
    let _ = conf.socket();
    let prev: Vec<String> = conf.prev_weave_interface().map(|(_, _, a)| a).unwrap_or_default();
    let multicast = conf.multicast.unwrap_or(true);
    // What weave-cni sends (the namespace's descriptor travels beside the
    // JSON, so only its flag is in the bytes fuzzed here).
    let request = match command.as_str() {
        "ADD" => Request::Attach {
            container: netns.clone(),
            netns_fd: true,
            netns: None,
            name: None,
            id: Some(id.clone()),
            ifname: Some(ifname.clone()),
            addrs: vec![addr.clone()],
            no_multicast: !multicast,
            exact_ifname: conf.prev_result.is_none(),
            no_dns: !conf.resolver.unwrap_or(true),
            network: Some(conf.name.clone()),
            needs_egress: conf.publishes_ports(),
            address: None,
        },
        _ => Request::Detach {
            container: netns.clone(),
            netns_fd: false,
            netns: None,
            id: Some(id.clone()),
            ifname: Some(ifname.clone()),
            addrs: vec![],
        },
    };
    match over_the_socket(&request) {
        Request::Attach {
            container: c,
            id: Some(i),
            ifname: Some(f),
            addrs,
            no_multicast,
            name: None,
            netns_fd,
            exact_ifname,
            no_dns,
            network,
            needs_egress,
            ..
        } => {
            assert_eq!(network.as_ref(), Some(&conf.name));
            assert!(netns_fd);
            assert_eq!(exact_ifname, conf.prev_result.is_none());
            assert_eq!((no_dns, needs_egress), (conf.resolver == Some(false), conf.publishes_ports()));
            assert_eq!((c, i, f, addrs, no_multicast), (netns.clone(), id, ifname.clone(), vec![addr], !multicast));
        }
        Request::Detach { container: c, id: Some(i), ifname: Some(f), addrs, netns_fd: false, .. } => {
            assert_eq!((c, i, f, addrs.len()), (netns.clone(), id, ifname.clone(), 0));
        }
        other => panic!("the agent read another request: {other:?}"),
    }
    // The chained result too: the previous result is whatever JSON the runtime passed.
    let gateway = multicast.then_some("10.32.0.1");
    let host = multicast.then_some(("wv0a1b2c3d", "6e:57:0a:20:00:05"));
    let result = conf.add_result(&netns, &ifname, "02:57:0a:20:00:05", &prev, gateway, host).to_string();
    let _: serde_json::Value = serde_json::from_str(&result).expect("the ADD result is JSON");
    let _ = cni::refusal(&Refusal::unknown_container(container.clone())).to_json().to_string();
    let _ = CniError::new(cni::code::BAD_ENV, command, ifname).to_json();
}
