//! Another firewall's forward chain that drops by default. A packet must
//! pass every base chain of its hook, so whatever weave's table accepts, a
//! forward chain with `policy drop` elsewhere drops what weave routes
//! between a bridge and the TUN (a segment's traffic across hosts) and
//! egress. iptables' `FORWARD` (Docker's hosts, ufw) the agent opens for
//! weave's devices itself, with `iptables` and, where legacy tables are
//! loaded in this namespace, `iptables-legacy`; any other such chain (an
//! nftables ruleset of the host's own, iptables' `FORWARD` on a host or an
//! image without `iptables`, where it dropped everything silently: found by
//! a review of the Kubernetes image, 2026-12-06) is named in one warning.
use std::{collections::BTreeSet, sync::Mutex};

use tokio::process::Command;

use super::nft_with;
use crate::plan::kernel::WEAVE_DEVICES;

/// Run at start and at every 10 s check: opens iptables' `FORWARD` where
/// it drops by default, then warns (once per chain) of each forward chain
/// that still drops by default with no rule for weave's devices.
pub(super) async fn defer_forward() {
    let mut commands = vec!["iptables"];
    if std::fs::read_to_string("/proc/net/ip_tables_names").is_ok_and(|t| t.lines().any(|l| l == "filter")) {
        commands.push("iptables-legacy");
    }
    for command in commands {
        defer_iptables_forward(command).await;
    }
    let Ok(chains) = nft_with(&["list", "chains"], "").await else { return };
    for (family, table, chain) in dropping(&chains) {
        let listed = nft_with(&["list", "chain", &family, &table, &chain], "").await.unwrap_or_default();
        let name = format!("{family} {table} {chain}");
        if names_weave(&listed) || !WARNED.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone()) {
            continue;
        }
        tracing::warn!(
            chain = %name,
            "a forward chain of another firewall drops by default and has no rule for weave's devices ({WEAVE_DEVICES}): \
             traffic between this host's containers and other hosts, and egress, are dropped here; accept iifname \
             \"{WEAVE_DEVICES}\" and oifname \"{WEAVE_DEVICES}\" in it (iptables' FORWARD: install iptables, and the agent adds them)"
        );
    }
}

/// The chains warned of: once each for the life of the process.
static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The IP forward chains of `nft list chains` that drop by default, as
/// (family, table, chain), weave's own tables left out.
fn dropping(listed: &str) -> Vec<(String, String, String)> {
    let (mut table, mut chain) = (None::<(String, String)>, None::<String>);
    let mut out = Vec::new();
    for line in listed.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["table", family, name, "{"] => table = Some((family.to_string(), name.to_string())),
            ["chain", name, "{"] => chain = Some(name.to_string()),
            _ if line.contains("hook forward") && line.contains("policy drop;") => {
                if let (Some((family, name)), Some(c)) = (&table, &chain)
                    && ["ip", "ip6", "inet"].contains(&family.as_str())
                    && !name.starts_with("weave")
                {
                    out.push((family.clone(), name.clone(), c.clone()));
                }
            }
            _ => {}
        }
    }
    out
}

/// A chain's listing names a weave device (iptables' `-o wv+` lists as
/// `oifname "wv*"`): its admin has seen to weave's traffic.
fn names_weave(listed: &str) -> bool {
    listed.contains("\"wv")
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

    /// `nft list chains` as nft 1.0.6 prints it: iptables-nft's filter
    /// table, a host's own inet table, weave's, a bridge table.
    const LISTED: &str = "table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n\tchain DOCKER-USER {\n\t}\n}\n\
table inet host {\n\tchain fwd {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n\tchain open {\n\t\ttype filter hook forward priority 10; policy accept;\n\t}\n}\n\
table inet weave {\n\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy drop;\n\t}\n}\n\
table bridge other {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n";

    #[test]
    fn the_ip_forward_chains_that_drop_by_default_and_not_weaves() {
        let got = dropping(LISTED);
        let want = [("ip", "filter", "FORWARD"), ("inet", "host", "fwd")]
            .map(|(f, t, c)| (f.to_string(), t.to_string(), c.to_string()));
        assert_eq!(got, want);
        assert!(dropping("").is_empty());
    }

    #[test]
    fn a_chain_with_a_rule_for_weaves_devices_is_seen_to() {
        assert!(names_weave("table ip filter {\n\tchain FORWARD {\n\t\toifname \"wv*\" counter accept\n\t}\n}"));
        assert!(!names_weave("table inet host {\n\tchain fwd {\n\t\tiifname \"eth0\" accept\n\t}\n}"));
    }
}
