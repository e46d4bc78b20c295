//! The flow limit (`--flow-limit`), as the nftables table that holds it.
//!
//! Every connection a workload opens through its host (to a remote workload
//! of its subnet, to a neighbour when `br_netfilter` passes bridged frames
//! through the IP hooks, to the host's exposed address) is an entry in the
//! host's connection tracking table, and so is every connection a remote
//! workload opens into the host. That table is one per network namespace,
//! `nf_conntrack_max` entries (262,144 on a host with 4 GiB or more), and the
//! host's own connections share it. A container that opened connections to a
//! peer that answers (another container of its owner's) kept them there for
//! days (an established TCP connection's entry lives five), and once the
//! table was full the host dropped every new connection: its other
//! containers', a remote member's, its own. The kernel's early drop frees
//! only entries that never saw an answer.
//!
//! So no source address of a weave device may hold more than `limit`
//! tracked connections on a host: its new connections over that are
//! dropped (and counted). Established traffic is not looked at: only
//! packets of a connection that has not seen an answer yet meet the rule.
//! VXLAN between peers is not tracked at all (`inet weave`'s raw chains:
//! its source port changes with every inner flow), and skips the rule. A
//! member holds at most `limit` times its addresses on each host, and its
//! addresses are bounded by the coordinator's `--node-quota`. `nf_conncount` does not count TCP
//! connections in TIME_WAIT or CLOSE, and clears closed ones only a few per
//! clock tick (README, "No container holds more than its share").
//!
//! The table is a table of its own, written at start (kept when an earlier
//! run left it with the same limit) and put back if removed, not replaced
//! with the isolation tables: a replacement would forget every count
//! (connections are counted only when they start).
use std::fmt::Write;

use super::kernel::{VXLAN_PORT, WEAVE_DEVICES};

pub const FLOW_TABLE: &str = "weave_flows";
/// The chain the firewall check lists to see the table still holds its rules.
pub const CHECKED_CHAIN: &str = "forward";
/// The named counter of the connections the limit refused.
pub const COUNTER: &str = "refused";
/// Distinct source addresses the counts are kept for (past it a new
/// address's connections are not limited: the set refuses a new element).
pub const SOURCES: u32 = 65_536;

/// The default `--flow-limit` for a host whose table holds `conntrack_max`
/// entries: a sixteenth of it (16,384 at the kernel's default for 4 GiB and
/// more), and at least 1,024.
pub fn default_limit(conntrack_max: u32) -> u32 {
    (conntrack_max / 16).max(1024)
}

/// The table for `limit` tracked connections per source address (0: the
/// table is only removed).
pub fn flow_ruleset(limit: u32) -> String {
    let mut out = format!("table inet {FLOW_TABLE} {{}}\ndelete table inet {FLOW_TABLE}\n");
    if limit == 0 {
        return out;
    }
    let _ = write!(out, "table inet {FLOW_TABLE} {{\n  counter {COUNTER} {{\n  }}\n");
    for (set, kind) in [("sources4", "ipv4_addr"), ("sources6", "ipv6_addr")] {
        let _ = write!(out, "  set {set} {{\n    type {kind}\n    size {SOURCES}\n    flags dynamic\n  }}\n");
    }
    let limit_rules = |out: &mut String| {
        for (set, addr) in [("sources4", "ip saddr"), ("sources6", "ip6 saddr")] {
            let _ = writeln!(
                out,
                "    iifname \"{WEAVE_DEVICES}\" ct state new add @{set} {{ {addr} ct count over {limit} }} counter name \"{COUNTER}\" drop"
            );
        }
    };
    // Before the isolation table (filter - 10): a connection it drops is
    // counted only until the kernel finds it never started.
    let _ =
        write!(out, "  chain {CHECKED_CHAIN} {{\n    type filter hook forward priority filter - 20; policy accept;\n");
    limit_rules(&mut out);
    out += "  }\n  chain input {\n    type filter hook input priority filter - 20; policy accept;\n";
    let _ = writeln!(out, "    iifname \"{WEAVE_DEVICES}\" udp dport {VXLAN_PORT} return");
    limit_rules(&mut out);
    out += "  }\n}\n";
    out
}

/// Whether a chain of the table as `nft list chain` prints it holds the
/// limit's two rules for `limit` (and, for the input chain, VXLAN's return
/// before them): an earlier run's table that does is kept at start.
pub fn holds_limit(listed: &str, limit: u32) -> bool {
    let rules: Vec<&str> = listed.lines().map(str::trim).filter(|l| l.contains("ct count over")).collect();
    let vxlan = listed.find(&format!("udp dport {VXLAN_PORT} return"));
    let first_limit = listed.find("ct count over");
    let ordered = !listed.contains("hook input") || matches!((vxlan, first_limit), (Some(v), Some(l)) if v < l);
    rules.len() == 2 && rules.iter().all(|r| r.contains(&format!("ct count over {limit} }}"))) && ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_is_limited_in_forward_and_input_but_vxlan_is_not() {
        let r = flow_ruleset(300);
        assert!(r.starts_with("table inet weave_flows {}\ndelete table inet weave_flows\n"), "{r}");
        for chain in ["forward", "input"] {
            let body = r.split(&format!("chain {chain} {{")).nth(1).unwrap().split("  }").next().unwrap();
            assert!(body.contains(&format!("hook {chain} priority filter - 20")), "{body}");
            for rule in [
                "iifname \"wv*\" ct state new add @sources4 { ip saddr ct count over 300 } counter name \"refused\" drop",
                "iifname \"wv*\" ct state new add @sources6 { ip6 saddr ct count over 300 } counter name \"refused\" drop",
            ] {
                assert!(body.contains(rule), "{chain}: {rule}\n{body}");
            }
        }
        let input = r.split("chain input {").nth(1).unwrap();
        let (vxlan, limit) = (input.find("udp dport 4789 return").unwrap(), input.find("ct count").unwrap());
        assert!(vxlan < limit, "VXLAN must skip the limit: {input}");
        assert_eq!(r.matches("flags dynamic").count(), 2);
        assert!(!flow_ruleset(0).contains("chain"), "0 only removes the table");
    }

    #[test]
    fn a_table_is_kept_only_with_both_rules_at_that_limit() {
        let r = flow_ruleset(300);
        let chain = |name: &str| {
            let body = r.split(&format!("chain {name} {{")).nth(1).unwrap().split("  }").next().unwrap();
            format!("table inet weave_flows {{\n\tchain {name} {{{body}\t}}\n}}\n")
        };
        for name in ["forward", "input"] {
            assert!(holds_limit(&chain(name), 300), "{name}");
            assert!(!holds_limit(&chain(name), 400), "{name} at another limit");
        }
        let without_vxlan = chain("input").replace("udp dport 4789 return", "");
        assert!(!holds_limit(&without_vxlan, 300));
        let one_rule: String =
            chain("forward").lines().filter(|l| !l.contains("ip6 saddr")).collect::<Vec<_>>().join("\n");
        assert!(!holds_limit(&one_rule, 300));
        assert!(!holds_limit("", 300));
    }

    #[test]
    fn the_default_is_a_sixteenth_of_the_table() {
        assert_eq!(default_limit(262_144), 16_384);
        assert_eq!(default_limit(65_536), 4_096);
        assert_eq!(default_limit(1_000), 1_024);
    }
}
