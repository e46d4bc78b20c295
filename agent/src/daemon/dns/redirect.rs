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

/// Why the rule could not be placed.
#[derive(Debug)]
pub(super) struct Unplaced {
    pub why: String,
    /// The agent is out of descriptors or memory (EMFILE, ENFILE, ENOMEM,
    /// ENOBUFS, EAGAIN): the namespace may hold an earlier agent's rule,
    /// which would lead port 53 away from a socket bound there instead, so
    /// the caller does not fall back; it tries again later.
    pub short: bool,
}

impl Unplaced {
    fn io(what: String, e: &std::io::Error) -> Self {
        use nix::libc::{EAGAIN, EMFILE, ENFILE, ENOBUFS, ENOMEM};
        let short = matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOMEM | ENOBUFS | EAGAIN));
        Unplaced { why: format!("{what}: {e}"), short }
    }
}

/// On the thread that entered the container's namespace: a UDP socket and
/// a TCP listener on one free port of `ip`, and the rule that leads port
/// 53 there. An error says why (no `nft`, no NAT in the kernel: the caller
/// then binds port 53 itself; or no descriptors left, [`Unplaced::short`]).
pub(super) fn bind(ip: IpAddr) -> Result<(UdpSocket, TcpListener), Unplaced> {
    let mut last = Unplaced { why: format!("no port of {ip} free for both UDP and TCP"), short: false };
    for _ in 0..16 {
        let udp = UdpSocket::bind((ip, 0)).map_err(|e| Unplaced::io(format!("bind udp {ip}"), &e))?;
        let port = udp.local_addr().map_err(|e| Unplaced::io("udp".into(), &e))?.port();
        match TcpListener::bind((ip, port)) {
            Ok(tcp) => {
                nft(&script(ip, port))?;
                return Ok((udp, tcp));
            }
            // Another's port for TCP: the next one (socket errors of the
            // agent's own, EMFILE, stop the search; they were all "no port free").
            Err(e) => last = Unplaced::io(format!("bind tcp {ip}:{port}"), &e),
        }
        if last.short {
            break;
        }
    }
    Err(last)
}

/// `nft -f -` with `script`, spawned from this thread: in the namespace it
/// entered.
fn nft(script: &str) -> Result<(), Unplaced> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Unplaced::io("run nft".into(), &e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| Unplaced::io("write to nft".into(), &e))?;
    }
    let out = child.wait_with_output().map_err(|e| Unplaced::io("run nft".into(), &e))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(Unplaced { why: format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim()), short: false }),
    }
}

/// On the thread that entered the container's namespace: the rule goes
/// (there or not; best effort: the namespace may be going too).
pub(super) fn remove() {
    if let Err(e) = nft(&format!("table ip {TABLE}\ndelete table ip {TABLE}\n")) {
        tracing::debug!(error = e.why, "the DNS rule stays");
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

    /// Out of descriptors is not "no NAT here": the caller must not bind
    /// port 53 behind an earlier agent's rule (`open.rs`).
    #[test]
    fn running_out_of_descriptors_is_told_apart_from_a_kernel_without_nat() {
        use nix::libc::{EADDRINUSE, EMFILE, ENFILE};
        let short = Unplaced::io("bind udp 127.0.0.11".into(), &std::io::Error::from_raw_os_error(EMFILE));
        assert!(short.short && short.why.starts_with("bind udp 127.0.0.11: "), "{short:?}");
        assert!(Unplaced::io("run nft".into(), &std::io::Error::from_raw_os_error(ENFILE)).short);
        assert!(!Unplaced::io("bind tcp".into(), &std::io::Error::from_raw_os_error(EADDRINUSE)).short);
    }

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
