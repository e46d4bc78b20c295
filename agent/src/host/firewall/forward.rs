//! Another firewall's forward chain that drops by default. A packet must
//! pass every base chain of its hook, so whatever weave's table accepts, a
//! forward chain with `policy drop` elsewhere drops what weave routes
//! between a bridge and the TUN (a segment's traffic across hosts) and
//! egress. iptables' `FORWARD` (Docker's hosts, ufw) the agent opens for
//! weave's devices itself, with `iptables` and, where legacy tables are
//! loaded in this namespace, `iptables-legacy`; any other such chain (an
//! nftables ruleset of the host's own, iptables' `FORWARD` on a host or an
//! image without `iptables`, where it dropped everything silently: found by
//! a review of the Kubernetes image, 2026-12-06; a `bridge` table's, which
//! drops what a host's containers send each other) is named in one warning.
//! Read as JSON (names may hold spaces), a few chains a check, a bounded
//! number for the life of the process. (IPv6 forwarding is not weave's:
//! its traffic between hosts and egress are routed IPv4.)
use std::{collections::BTreeSet, sync::Mutex};

use serde_json::Value;
use tokio::process::Command;

use crate::plan::{firewall::TABLE, flows::FLOW_TABLE, kernel::WEAVE_DEVICES, l2::GUARD_TABLE};

/// Chains named, at most, for the life of the process.
const NAMED_AT_MOST: usize = 64;

/// Opens iptables' `FORWARD` where it drops by default: with every
/// ruleset applied (egress turned on needs it at once) and every 10 s check.
pub(super) async fn open_iptables() {
    let mut commands = vec!["iptables"];
    if std::fs::read_to_string("/proc/net/ip_tables_names").is_ok_and(|t| t.lines().any(|l| l == "filter")) {
        commands.push("iptables-legacy");
    }
    for command in commands {
        defer_iptables_forward(command).await;
    }
}

/// At every 10 s check, after [`open_iptables`]: warns (once per chain) of
/// each forward chain in `listing` (the check's `nft -t -j list ruleset`)
/// that drops by default with no rule for weave's devices (not with every
/// ruleset applied: a warning can wait a check). (JSON: names may hold
/// spaces and braces, which netlink takes and `nft`'s text neither quotes
/// nor takes back. A dormant table's chain is named too: nft 1.0.6's JSON
/// prints table flags wrong, and its text not at all in `list tables`.)
pub(super) fn name_dropping_chains(listing: &Value) {
    for c in dropping(listing) {
        if names_weave(listing, &c) || !remember(&c) {
            continue;
        }
        let hint = if (c.family.as_str(), c.table.as_str(), c.name.as_str()) == ("ip", "filter", "FORWARD") {
            "iptables' FORWARD: install iptables, and the agent adds them"
        } else {
            "or have its owner do so"
        };
        tracing::warn!(
            chain = %c,
            "a forward chain of another firewall drops by default and has no rule for weave's devices ({WEAVE_DEVICES}): \
             what weave forwards here (between containers and other hosts, egress; in a bridge table, between \
             containers on this host) is dropped; accept iifname \"{WEAVE_DEVICES}\" and oifname \"{WEAVE_DEVICES}\" \
             in it ({hint})"
        );
    }
}

/// Records `c` as named; false when it was, or when [`NAMED_AT_MOST`] are
/// (then no more are named).
fn remember(c: &Chain) -> bool {
    let mut named = lock();
    named.len() < NAMED_AT_MOST && named.insert(c.to_string())
}

/// The chains named: once each for the life of the process.
static NAMED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn lock() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    NAMED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A base chain of another program's table.
#[derive(Debug, PartialEq)]
struct Chain {
    family: String,
    table: String,
    name: String,
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.family, self.table, self.name)
    }
}

/// The objects of kind `kind` in `nft -j` output.
pub(super) fn objects<'a>(json: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    json["nftables"].as_array().into_iter().flatten().filter_map(move |o| o.get(kind))
}

/// The forward chains of an `nft -j` listing that drop by default, in the
/// families whose forwarding weave's traffic passes (IPv4 routed between a
/// bridge and the TUN: `ip`, `inet`; bridged between a host's containers:
/// `bridge`), weave's own tables left out.
fn dropping(listing: &Value) -> Vec<Chain> {
    objects(listing, "chain")
        .filter(|c| c["hook"] == "forward" && c["policy"] == "drop")
        .filter_map(|c| {
            let (family, table, name) = (c["family"].as_str()?, c["table"].as_str()?, c["name"].as_str()?);
            let ours = match family {
                "ip" | "inet" => [TABLE, FLOW_TABLE].contains(&table),
                "bridge" => [TABLE, GUARD_TABLE].contains(&table),
                _ => return None,
            };
            (!ours).then(|| Chain { family: family.into(), table: table.into(), name: name.into() })
        })
        .collect()
}

/// A rule of chain `c` in `listing` names a weave device (iptables' `-o
/// wv+` lists as `oifname "wv*"`): its admin has seen to weave's traffic.
/// The rules' expressions only (a table named `wv…` is not).
fn names_weave(listing: &Value, c: &Chain) -> bool {
    objects(listing, "rule")
        .filter(|r| r["family"] == c.family.as_str() && r["table"] == c.table.as_str() && r["chain"] == c.name.as_str())
        .any(|r| r["expr"].to_string().contains("\"wv"))
}

/// `command`'s `FORWARD` drops by default: two rules appended that leave
/// whatever enters or leaves a weave device to weave's own table, as Weave
/// Net and flannel did (only when missing, so a Docker that rebuilt its
/// chains or a policy changed later gets them again within 10 s; found by a
/// review, 2026-12-05). No such command, or a policy of ACCEPT: nothing.
async fn defer_iptables_forward(command: &str) {
    let iptables = |args: Vec<&str>| {
        let mut c = Command::new(command);
        c.arg("-w").args(args);
        async move { c.output().await.map_err(|e| e.to_string()) }
    };
    let listed = match iptables(vec!["-S", "FORWARD"]).await {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => return,
    };
    if !listed.lines().any(|l| l.trim() == "-P FORWARD DROP") {
        return;
    }
    // `wv+`: weave's devices (bridges, the TUN, VXLAN), whose forwarding
    // weave's table judges (a NodePort to a workload on another host goes
    // from the underlay into the TUN).
    let devices = WEAVE_DEVICES.replace('*', "+");
    for dir in ["-o", "-i"] {
        let rule = vec![dir, devices.as_str(), "-j", "ACCEPT"];
        if iptables([&["-C", "FORWARD"][..], &rule].concat()).await.is_ok_and(|o| o.status.success()) {
            continue;
        }
        // Appended: `DOCKER-USER` and any policy layer before them still
        // judge weave's traffic (found by a review, 2026-12-05).
        match iptables([&["-A", "FORWARD"][..], &rule].concat()).await {
            Ok(out) if out.status.success() => {
                tracing::info!(command, rule = %rule.join(" "), "iptables FORWARD drops by default: weave's devices left to weave's table")
            }
            Ok(out) => {
                tracing::warn!(command, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "iptables FORWARD rule for weave's devices not added")
            }
            Err(e) => tracing::warn!(command, error = %e, "iptables FORWARD rule for weave's devices not added"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chains of `nft -t -j list ruleset` as nft 1.0.6 prints them: iptables-nft's filter
    /// table, a host's own inet table (a name with a space), weave's, a
    /// bridge table, an ip6 table, a regular chain whose comment reads like
    /// a base chain.
    const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
      {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 2, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER", "handle": 3}},
      {"chain": {"family": "inet", "table": "host fw", "name": "f d", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "inet", "table": "host fw", "name": "open", "handle": 2, "type": "filter", "hook": "forward", "prio": 10, "policy": "accept"}},
      {"chain": {"family": "inet", "table": "weave", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": -10, "policy": "drop"}},
      {"chain": {"family": "inet", "table": "weaver", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "bridge", "table": "weave_guard", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "bridge", "table": "lan", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "ip6", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "inet", "table": "c", "name": "reg", "handle": 1, "comment": "type filter hook forward priority 0; policy drop;"}}]}"#;

    #[test]
    fn the_forward_chains_that_drop_by_default_and_not_weaves() {
        let listing = serde_json::from_str(LISTED).unwrap();
        let got: Vec<String> = dropping(&listing).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["ip filter FORWARD", "inet host fw f d", "inet weaver forward", "bridge lan forward"]);
        assert!(dropping(&Value::Null).is_empty() && dropping(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn a_chain_with_a_rule_for_weaves_devices_is_seen_to() {
        let chain =
            r#"{"chain": {"family": "inet", "table": "wvlan", "name": "f", "hook": "forward", "policy": "drop"}}"#;
        let c = Chain { family: "inet".into(), table: "wvlan".into(), name: "f".into() };
        let rule = |chain_of_rule: &str, right: &str| {
            let expr = format!(
                r#"[{{"match": {{"op": "==", "left": {{"meta": {{"key": "oifname"}}}}, "right": "{right}"}}}}]"#
            );
            let rule = format!(
                r#"{{"rule": {{"family": "inet", "table": "wvlan", "chain": "{chain_of_rule}", "expr": {expr}}}}}"#
            );
            serde_json::from_str::<Value>(&format!(r#"{{"nftables": [{chain}, {rule}]}}"#)).unwrap()
        };
        assert!(names_weave(&rule("f", "wv*"), &c));
        // The table's name is no rule; another chain's rule is not this one's.
        assert!(!names_weave(&rule("f", "eth0"), &c));
        assert!(!names_weave(&rule("g", "wv*"), &c));
        assert!(!names_weave(&serde_json::from_str(&format!(r#"{{"nftables": [{chain}]}}"#)).unwrap(), &c));
    }
}
