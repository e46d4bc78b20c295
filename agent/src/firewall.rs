//! Subnet isolation in the host's forwarding path: the only module that
//! touches nftables. It owns one table, `inet weave`, whose forward chain
//! drops everything routed into or out of a weave bridge (`wvbr-*`), so a
//! workload that adds a foreign address or route, or a host with IP
//! forwarding on, still cannot carry traffic between subnets (or between a
//! subnet and anything else). Traffic inside one bridge stays allowed, also
//! when `br_netfilter` passes bridged frames through the IP hooks, and so do
//! connections a port mapping DNATed (the CNI `portmap` plugin's rules, an
//! explicit opt-in of the runtime).
//!
//! Why `nft -f -` and not netlink (the one documented exception to "netlink,
//! not commands"): the `nftnl` crate binds libnftnl, whose C headers are not
//! installed on the build machines, and a pure-Rust nf_tables encoder was not
//! evaluated within the time this was written in; a hand-written encoder is
//! far more code than this ruleset. So this one module runs the `nft`
//! binary with a generated ruleset, applied atomically (one transaction: the
//! table is replaced as a whole). Replacing it with netlink touches only here.
use std::process::Stdio;

use tokio::{io::AsyncWriteExt, process::Command, sync::watch};
use weave_proto::v1::NetworkMap;

use crate::{
    error::Error,
    reconcile::{BRIDGE_PREFIX, bridge_name},
};

pub const TABLE: &str = "weave";

/// The whole table for these bridges (pure, for tests and logs).
pub fn ruleset(bridges: &[String]) -> String {
    let mut out = format!(
        "table inet {TABLE} {{}}\nflush table inet {TABLE}\ntable inet {TABLE} {{\n  chain forward {{\n    \
         type filter hook forward priority filter - 10; policy accept;\n"
    );
    for b in bridges {
        out += &format!("    iifname \"{b}\" oifname \"{b}\" accept\n");
    }
    // Port mappings (CNI portmap, DNAT) are the one explicit way in.
    out += "    ct status dnat accept\n";
    out += &format!("    iifname \"{BRIDGE_PREFIX}*\" drop\n    oifname \"{BRIDGE_PREFIX}*\" drop\n  }}\n}}\n");
    out
}

async fn nft(script: &str) -> Result<(), Error> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io("run nft".into(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(|e| Error::Io("write to nft".into(), e))?;
    }
    let out = child.wait_with_output().await.map_err(|e| Error::Io("run nft".into(), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Netlink(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

pub async fn apply(bridges: &[String]) -> Result<(), Error> {
    nft(&ruleset(bridges)).await
}

/// Removes the table (`agent reset`, `--cleanup-on-exit`); fine if absent.
pub async fn remove() -> Result<(), Error> {
    nft(&format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")).await
}

/// Applies the ruleset now and again whenever the set of subnets changes.
pub async fn keep(mut maps: watch::Receiver<NetworkMap>) {
    let mut applied: Option<Vec<String>> = None;
    loop {
        let mut bridges: Vec<String> =
            maps.borrow_and_update().subnets.iter().filter(|s| s.vni != 0).map(|s| bridge_name(s.vni)).collect();
        bridges.sort();
        if applied.as_ref() != Some(&bridges) {
            match apply(&bridges).await {
                Ok(()) => {
                    tracing::debug!(bridges = bridges.len(), "isolation rules applied");
                    applied = Some(bridges);
                }
                Err(e) => tracing::warn!(error = %e, "isolation rules not applied; retrying"),
            }
        }
        // Retry a failed apply after a pause, else wait for the next map.
        if applied.is_none() {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        } else if maps.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_replaces_the_table_and_drops_routing_across_bridges() {
        let r = ruleset(&["wvbr-5".into(), "wvbr-9".into()]);
        assert!(r.starts_with("table inet weave {}\nflush table inet weave\n"), "{r}");
        assert!(r.contains("iifname \"wvbr-5\" oifname \"wvbr-5\" accept"), "{r}");
        assert!(r.contains("iifname \"wvbr-9\" oifname \"wvbr-9\" accept"), "{r}");
        let accept = r.find("accept\n    iifname \"wvbr-*\" drop").expect("drops after the accepts");
        assert!(accept > 0 && r.contains("oifname \"wvbr-*\" drop"), "{r}");
    }
}
