//! The resolver's sockets inside a container, as Docker places its own: on
//! 127.0.0.11 at a port the kernel picks, with a DNAT rule in the
//! container's own nftables (`table ip weave_dns`) that sends what the
//! container asks 127.0.0.11:53 there. Port 53 of the container stays its
//! own: a DNS server in it may bind `0.0.0.0:53` (the resolver held
//! 127.0.0.11:53, and such a bind failed "address in use").
use std::{
    io::Write,
    net::{IpAddr, TcpListener, UdpSocket},
    process::{Command, Stdio},
};

/// The nftables table of the rule, in the container's namespace.
pub(super) const TABLE: &str = "weave_dns";

/// The script that (re)places the rule: what the container sends to
/// `ip`:53 goes to `ip`:`port` (UDP and TCP; the replies come back from
/// port 53 through conntrack). A table left by an agent before a restart
/// is replaced whole.
pub(super) fn script(ip: IpAddr, port: u16) -> String {
    format!(
        "table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain resolver {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr {ip} udp dport 53 dnat to {ip}:{port}\n\
         \t\tip daddr {ip} tcp dport 53 dnat to {ip}:{port}\n\
         \t}}\n\
         }}\n"
    )
}

/// On the thread that entered the container's namespace: a UDP socket and
/// a TCP listener on one free port of `ip`, and the rule that leads port
/// 53 there. An error says why (no `nft`, no NAT in the kernel): the
/// caller then binds port 53 itself.
pub(super) fn bind(ip: IpAddr) -> Result<(UdpSocket, TcpListener), String> {
    let (udp, tcp, port) = (0..16)
        .find_map(|_| {
            let udp = UdpSocket::bind((ip, 0)).ok()?;
            let port = udp.local_addr().ok()?.port();
            let tcp = TcpListener::bind((ip, port)).ok()?;
            Some((udp, tcp, port))
        })
        .ok_or_else(|| format!("no port of {ip} free for both UDP and TCP"))?;
    nft(&script(ip, port))?;
    Ok((udp, tcp))
}

/// `nft -f -` with `script`, spawned from this thread: in the namespace it
/// entered.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| format!("write to nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("run nft: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())),
    }
}

/// On the thread that entered the container's namespace: the rule goes
/// (there or not; best effort: the namespace may be going too).
pub(super) fn remove() {
    if let Err(e) = nft(&format!("table ip {TABLE}\ndelete table ip {TABLE}\n")) {
        tracing::debug!(error = e, "the DNS rule stays");
    }
}

/// Removes the DNAT rule in each namespace (its key, and the namespace or
/// why it cannot be opened); best effort, as [`remove`]. Also for
/// `agent reset`, from the paths the registry saved.
pub fn remove_in(namespaces: impl IntoIterator<Item = (String, std::io::Result<std::fs::File>)>) {
    for (key, netns) in namespaces {
        let removed =
            netns.map_err(|e| crate::error::Error::Io(format!("open the namespace of {key}"), e)).and_then(|netns| {
                crate::host::netns::run_in(&netns, &key, || {
                    remove();
                    Ok(())
                })
            });
        if let Err(e) = removed {
            tracing::debug!(key, error = %e, "the DNS rule stays");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_leads_port_53_of_the_resolver_address_alone_to_the_port() {
        let s = script("127.0.0.11".parse().unwrap(), 40123);
        assert!(s.starts_with("table ip weave_dns\ndelete table ip weave_dns\n"), "{s}");
        assert!(s.contains("type nat hook output priority -100;"), "{s}");
        assert!(s.contains("ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:40123\n"), "{s}");
        assert!(s.contains("ip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:40123\n"), "{s}");
        assert_eq!(s.matches("dnat").count(), 2, "{s}");
    }
}
