//! What the 10 s check reads of the host's ruleset: one `nft -t -j list
//! ruleset` (see [`listing`]), whose tables, chains' rules and counters it
//! looks at.
use std::collections::BTreeSet;

use super::{TABLES, forward, nft_with};

/// The host's ruleset without the sets' elements (`nft -t -j list
/// ruleset`: every table, chain and rule), for the 10 s check. One run, and
/// a cheap one: nft 1.0.6 fetches every element of every set for `list
/// tables` and `list chain` as well, about 20 ms of its CPU a run at 10,000
/// remote workloads, where the terse ruleset takes 4 ms (the check ran five
/// such `nft` a time; found by a scale profile, 2026-12-07). JSON: other
/// programs' names may hold spaces and braces. None when nft could not be
/// asked (no verdict: the next check asks again).
pub(super) async fn listing() -> Option<serde_json::Value> {
    serde_json::from_str(&nft_with(&["-t", "-j", "list", "ruleset"], "").await.ok()?).ok()
}

/// The tables in `listing`, as "FAMILY NAME", less weave's whose chains of
/// [`TABLES`] hold no rule (someone may flush the ruleset, or one table:
/// `nft flush table` keeps the table and its chains but empties them; each
/// chain is never empty as weave writes it). Every chain at every check:
/// an emptied table is put back within 10 s (listing a chain cost a whole
/// `nft` run, so two of them were looked at a check: within 30 s).
pub(super) fn tables_in(listing: &serde_json::Value) -> BTreeSet<String> {
    let names = |o: &serde_json::Value, keys: &[&str]| -> Option<Vec<String>> {
        keys.iter().map(|k| o[k].as_str().map(str::to_string)).collect()
    };
    let mut present: BTreeSet<String> =
        forward::objects(listing, "table").filter_map(|t| Some(names(t, &["family", "name"])?.join(" "))).collect();
    let ruled: BTreeSet<Vec<String>> =
        forward::objects(listing, "rule").filter_map(|r| names(r, &["family", "table", "chain"])).collect();
    for (family, table, chain) in TABLES {
        if !ruled.contains([family, table, chain].map(str::to_string).as_slice()) {
            present.remove(&format!("{family} {table}"));
        }
    }
    present
}

/// The packets named counter `name` of `family table` counted, in a
/// [`listing`] (None: no such counter).
pub(super) fn counted(listing: &serde_json::Value, family: &str, table: &str, name: &str) -> Option<u64> {
    forward::objects(listing, "counter")
        .find(|c| c["family"] == family && c["table"] == table && c["name"] == name)
        .and_then(|c| c["packets"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::{TABLES, counted, tables_in};

    /// `nft -t -j list ruleset` as nft 1.0.6 prints it (trimmed): every chain of [`TABLES`] with a rule,
    /// then as it is after `nft flush table bridge weave` and with a chain deleted.
    fn listing(skip: &[(&str, &str, &str)]) -> serde_json::Value {
        let mut objects = vec![serde_json::json!({"metainfo": {"version": "1.0.6"}})];
        objects.push(serde_json::json!({"table": {"family": "ip", "name": "nat", "handle": 1}}));
        for (family, table, chain) in TABLES {
            objects.push(serde_json::json!({"table": {"family": family, "name": table}}));
            if skip.contains(&(family, table, chain)) {
                continue;
            }
            objects.push(serde_json::json!({"chain": {"family": family, "table": table, "name": chain}}));
            objects.push(serde_json::json!({"rule": {"family": family, "table": table, "chain": chain, "expr": []}}));
        }
        serde_json::json!({ "nftables": objects })
    }

    #[test]
    fn a_table_counts_only_while_each_of_its_checked_chains_holds_rules() {
        let all: Vec<String> = tables_in(&listing(&[])).into_iter().collect();
        assert_eq!(
            all,
            ["arp weave", "bridge weave", "bridge weave_guard", "inet weave", "inet weave_flows", "ip nat"]
        );
        // Emptied (or deleted): the table is not counted, and only that one.
        for skipped in TABLES {
            let present = tables_in(&listing(&[skipped]));
            let name = format!("{} {}", skipped.0, skipped.1);
            assert!(!present.contains(&name), "{skipped:?}");
            assert_eq!(present.len(), all.len() - 1, "{skipped:?}");
        }
        // A rule of another table's chain of the same name is not weave's.
        let mut other = listing(&[("arp", "weave", "input")]);
        other["nftables"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"rule": {"family": "arp", "table": "other", "chain": "input", "expr": []}}));
        assert!(!tables_in(&other).contains("arp weave"));
        assert!(tables_in(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn a_counters_packets_are_read_by_its_family_table_and_name() {
        let listing = serde_json::json!({"nftables": [
            {"counter": {"family": "bridge", "table": "weave_guard", "name": "guard_drops", "packets": 7, "bytes": 420}},
            {"counter": {"family": "bridge", "table": "weave_guard", "name": "storm_drops", "packets": 0, "bytes": 0}},
            {"counter": {"family": "inet", "table": "weave_flows", "name": "refused", "packets": 12, "bytes": 900}},
            {"counter": {"family": "inet", "table": "other", "name": "refused", "packets": 99, "bytes": 900}},
        ]});
        assert_eq!(counted(&listing, "bridge", "weave_guard", "guard_drops"), Some(7));
        assert_eq!(counted(&listing, "bridge", "weave_guard", "storm_drops"), Some(0));
        assert_eq!(counted(&listing, "inet", "weave_flows", "refused"), Some(12));
        assert_eq!(counted(&listing, "inet", "weave_flows", "guard_drops"), None);
        assert_eq!(counted(&serde_json::json!({}), "inet", "weave_flows", "refused"), None);
    }
}
