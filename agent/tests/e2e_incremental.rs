//! The agent's incremental path (a diff against the kernel state it last
//! applied, nftables set elements added and deleted one by one) leaves the
//! host exactly as a full reconcile from nothing does: routes, proxy-ARP
//! entries, FDB flood entries, bridges and VXLAN devices, and both tables
//! with every set element.
mod common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use nix::sys::signal::Signal;
use weave_proto::v1::{AllocateRequest, ReleaseRequest};

/// Everything the agent owns in `ns`, normalised (sorted; interface indexes
/// and the VXLAN devices' random MACs left out).
fn kernel_state(ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut section = |name: &str, lines: Vec<String>| {
        let mut lines = lines;
        lines.sort();
        out.push(format!("== {name} ({})", lines.len()));
        out.extend(lines);
    };
    let lines = |args: &[&str]| ok_in(ns, args).lines().map(|l| l.trim().to_string()).collect::<Vec<_>>();
    section("routes", lines(&["ip", "-4", "route", "show", "proto", "87"]));
    section("proxy", lines(&["ip", "-4", "neigh", "show", "proxy"]));
    section(
        "fdb",
        lines(&["bridge", "fdb", "show"]).into_iter().filter(|l| l.starts_with("00:00:00:00:00:00")).collect(),
    );
    section(
        "links",
        lines(&["ip", "-o", "link", "show"])
            .into_iter()
            .filter_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                let name = fields.get(1)?.trim_end_matches(':').split('@').next()?.to_string();
                if !(name.starts_with("wvbr-") || name.starts_with("wvvx-")) {
                    return None;
                }
                let after = |key: &str| fields.iter().position(|f| *f == key).and_then(|i| fields.get(i + 1).copied());
                Some(format!("{name} mtu {:?} master {:?} state {:?}", after("mtu"), after("master"), after("state")))
            })
            .collect(),
    );
    for family in ["inet", "bridge"] {
        let text = ok_in(ns, &["nft", "list", "table", family, "weave"]);
        // Set elements as sorted sets (the kernel's listing order is its own),
        // the rest of the table as text.
        let mut rest = String::new();
        let mut sets = Vec::new();
        let mut tail = text.as_str();
        while let Some(start) = tail.find("elements = {") {
            rest.push_str(&tail[..start]);
            let end = start + tail[start..].find('}').expect("closing brace");
            let elements: BTreeSet<String> = tail[start + "elements = {".len()..end]
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect();
            sets.push(format!("elements {elements:?}"));
            tail = &tail[end + 1..];
        }
        rest.push_str(tail);
        out.push(format!("== table {family} weave"));
        out.extend(rest.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
        out.extend(sets);
    }
    out
}

fn our_routes(ns: &str) -> usize {
    ok_in(ns, &["ip", "-4", "route", "show", "proto", "87"]).lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn incremental_updates_leave_the_same_kernel_state_as_a_full_reconcile() {
    let mut bed = Bed::with_hosts(2);
    bed.wait_peers(0, 1);
    let out = bed.weavectl_admin(&["subnet", "add", "10.2.3.0/24"]);
    assert!(out.status.success(), "subnet add: {}", String::from_utf8_lossy(&out.stderr));
    let ns = bed.host_ns(0);
    let other = bed.hosts[1].name.clone();
    // A burst of remote attaches on both subnets, then (once host 1 routes
    // them) some detaches: all applied by host 1's agent as incremental
    // passes and set updates.
    let admin = |release: bool| {
        let other = other.clone();
        bed.admin(move |mut api| async move {
            for i in 0..24 {
                if release && [1, 3, 8, 13].contains(&i) {
                    let req = ReleaseRequest { node: other.clone(), container: format!("c{i}"), ..Default::default() };
                    api.ipam.release(req).await.unwrap();
                } else if !release {
                    let subnet = if i % 3 == 0 { "10.2.3.0/24" } else { "default" }.to_string();
                    let req = AllocateRequest {
                        node: other.clone(),
                        container: format!("c{i}"),
                        subnet,
                        ..Default::default()
                    };
                    api.ipam.allocate(req).await.unwrap();
                }
            }
        })
    };
    // The remote workloads plus the two subnet routes.
    let routed = |n: usize| {
        wait_for(&format!("host 1 to route {n} remote workloads"), Duration::from_secs(20), || {
            (our_routes(&ns) == n + 2).then_some(())
        })
    };
    admin(false);
    routed(24);
    admin(true);
    routed(20);
    // Settled: the set updates are in too, the two subnets' sets of remote
    // workloads (13 on the default subnet, 7 on the other; the firewall's
    // task applies them apart from the routes' pass), and no pass is still
    // running.
    let sets = |state: &[String]| -> Vec<usize> {
        state.iter().filter(|l| l.starts_with("elements")).map(|l| l.matches("\"10.").count()).collect()
    };
    let incremental = wait_for("a stable state with both sets filled", Duration::from_secs(20), || {
        let a = kernel_state(&ns);
        let filled = sets(&a);
        std::thread::sleep(Duration::from_millis(500));
        (filled.contains(&13) && filled.contains(&7) && kernel_state(&ns) == a).then_some(a)
    });

    // The same map applied from nothing: a full reconcile and a new ruleset.
    bed.signal_agent(0, Signal::SIGKILL);
    for l in
        interfaces(&ns).into_iter().filter(|l| !l.contains(' ') && (l.starts_with("wvbr-") || l.starts_with("wvvx-")))
    {
        ok_in(&ns, &["ip", "link", "del", &l]);
    }
    ok_in(&ns, &["nft", "delete", "table", "inet", "weave"]);
    ok_in(&ns, &["nft", "delete", "table", "bridge", "weave"]);
    assert_eq!(our_routes(&ns), 0, "nothing left of the first run");
    bed.start_agent(0, false);
    let full = wait_for("the restarted agent to converge", Duration::from_secs(20), || {
        // The restarted agent makes its tables some moments after it starts;
        // until both exist there is nothing to compare.
        let tables = ["inet", "bridge"];
        if !tables.iter().all(|f| in_ns(&ns, &["nft", "list", "table", f, "weave"]).status.success()) {
            return None;
        }
        let a = kernel_state(&ns);
        (a == incremental).then_some(a)
    });
    assert_eq!(full, incremental);
}
