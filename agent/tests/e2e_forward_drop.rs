//! Another firewall's forward chain that drops by default (a host's own
//! nftables ruleset; iptables' `FORWARD` on a host or an image without the
//! `iptables` command) drops what weave routes between its bridges and the
//! TUN whatever weave's table says. The agent names such a chain in one
//! warning, and traffic flows again once the chain accepts weave's devices.
//! (The image had no `iptables`: a Docker or ufw host's pods reached no
//! other node, and nothing said why; found by a review, 2026-12-06.
//! iptables' `FORWARD` with the command there: `e2e_egress`.)
mod common;

use std::{fs, os::unix::fs::symlink, time::Duration};

use common::*;
use nix::sys::signal::Signal;

const WARNING: &str = "a forward chain of another firewall drops by default";
/// A forward base chain that drops by default.
const DROPPING: &str = "{ type filter hook forward priority 0; policy drop; }";

/// The lines of host `i`'s log warning of `chain`.
fn warned(bed: &Bed, i: usize, chain: &str) -> Vec<String> {
    // (The field comes last on the line: the whole name, nothing after it.)
    let named = format!("chain={chain}");
    bed.log(i).lines().filter(|l| l.contains(WARNING) && l.trim_end().ends_with(&named)).map(str::to_string).collect()
}

fn warnings(bed: &Bed, i: usize, chain: &str) -> usize {
    warned(bed, i, chain).len()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_forward_chain_that_drops_by_default_is_named_once_and_opened_by_its_admin() {
    let mut bed = Bed::with_hosts(2);
    let a = bed.add_workload(0, "default");
    let b = bed.add_workload(1, "default");
    bed.wait_ping(a, b, Duration::from_secs(10));

    // Host 1's own nftables ruleset drops what it forwards by default.
    let h1 = bed.hosts[0].ns.clone();
    ok_in(&h1, &["nft", "add", "table", "inet", "hostfw"]);
    ok_in(&h1, &["nft", "add", "chain", "inet", "hostfw", "forward", DROPPING]);
    let (from, to) = (bed.workloads[a].ns.clone(), bed.workloads[b].ip);
    assert!(!ping_within(&from, to, 2), "a chain dropping by default let weave's traffic through");
    wait_for("host 1's agent to name the chain", Duration::from_secs(25), || {
        (warnings(&bed, 0, "inet hostfw forward") == 1).then_some(())
    });
    // Once: another check (10 s) later, still one line.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(warnings(&bed, 0, "inet hostfw forward"), 1, "{}", bed.log(0));
    assert!(!warned(&bed, 0, "inet hostfw forward")[0].contains("install iptables"), "not iptables' chain");
    // What it says to do works.
    for dir in ["iifname", "oifname"] {
        ok_in(&h1, &["nft", "add", "rule", "inet", "hostfw", "forward", dir, "\"wv*\"", "accept"]);
    }
    bed.wait_ping(a, b, Duration::from_secs(10));
    // Eight more such chains that accept weave's devices (one check's
    // worth), then one that does not: it is named too (the first eight
    // were listed again every check, and a ninth never looked at).
    for t in 0..8 {
        let table = format!("open{t}");
        ok_in(&h1, &["nft", "add", "table", "inet", &table]);
        ok_in(&h1, &["nft", "add", "chain", "inet", &table, "forward", DROPPING]);
        for dir in ["iifname", "oifname"] {
            ok_in(&h1, &["nft", "add", "rule", "inet", &table, "forward", dir, "\"wv*\"", "accept"]);
        }
    }
    bed.wait_ping(a, b, Duration::from_secs(10));
    ok_in(&h1, &["nft", "add", "table", "inet", "zlast"]);
    ok_in(&h1, &["nft", "add", "chain", "inet", "zlast", "forward", DROPPING]);
    wait_for("host 1's agent to name the ninth chain", Duration::from_secs(35), || {
        (warnings(&bed, 0, "inet zlast forward") == 1).then_some(())
    });
    assert!((0..8).all(|t| warnings(&bed, 0, &format!("inet open{t} forward")) == 0), "{}", bed.log(0));
    ok_in(&h1, &["nft", "delete", "table", "inet", "zlast"]);
    bed.wait_ping(a, b, Duration::from_secs(10));

    // Host 2: iptables' FORWARD drops by default, and the agent runs where
    // there is no `iptables` (only `nft` and `ip`, as a minimal image).
    let h2 = bed.hosts[1].ns.clone();
    bed.signal_agent(1, Signal::SIGTERM);
    ok_in(&h2, &["iptables", "-w", "-P", "FORWARD", "DROP"]);
    let tools = bed.path("tools");
    fs::create_dir_all(&tools).unwrap();
    for tool in ["nft", "ip"] {
        let found = String::from_utf8(std::process::Command::new("which").arg(tool).output().unwrap().stdout).unwrap();
        symlink(found.trim(), tools.join(tool)).unwrap();
    }
    let log = fs::OpenOptions::new().append(true).open(&bed.hosts[1].log).unwrap();
    let mut cmd = bed.agent_command(1, false);
    cmd.env("PATH", &tools).stdout(log.try_clone().unwrap()).stderr(log);
    bed.hosts[1].agent = Some(cmd.spawn().unwrap());
    bed.wait_status(1);
    wait_for("host 2's agent to name iptables' FORWARD", Duration::from_secs(25), || {
        (warnings(&bed, 1, "ip filter FORWARD") == 1).then_some(())
    });
    assert!(warned(&bed, 1, "ip filter FORWARD")[0].contains("install iptables"), "{}", bed.log(1));
    assert!(!ping_within(&from, to, 2), "iptables' FORWARD dropping by default let weave's traffic through");
    // With `iptables` there, the agent opens FORWARD for weave's devices itself.
    bed.signal_agent(1, Signal::SIGTERM);
    bed.start_agent(1, false);
    bed.wait_ping(a, b, Duration::from_secs(30));
    let forward = ok_in(&h2, &["iptables", "-w", "-S", "FORWARD"]);
    assert!(forward.contains("-A FORWARD -o wv+ -j ACCEPT"), "{forward}");
    assert_eq!(warnings(&bed, 1, "ip filter FORWARD"), 1, "named again once opened: {}", bed.log(1));

    // Legacy iptables tables loaded in host 1's namespace, their FORWARD
    // dropping by default: opened with `iptables-legacy` within a check.
    // (The rules below are the agent's: nothing else adds them.)
    ok_in(&h1, &["iptables-legacy", "-w", "-P", "FORWARD", "DROP"]);
    bed.wait_ping(a, b, Duration::from_secs(25));
    let forward = ok_in(&h1, &["iptables-legacy", "-w", "-S", "FORWARD"]);
    assert!(
        forward.contains("-A FORWARD -o wv+ -j ACCEPT") && forward.contains("-A FORWARD -i wv+ -j ACCEPT"),
        "{forward}"
    );
}
