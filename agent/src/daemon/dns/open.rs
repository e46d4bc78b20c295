//! Opening a namespace's resolver sockets: on a thread that entered it,
//! behind the DNAT rule of [`super::redirect`] where it can be placed.
use std::{net::SocketAddr, path::Path};

use super::{LISTEN, redirect};
use crate::{
    error::Error,
    host::{netlink::Netlink, netns},
};

/// The sockets, and the namespace (kept to take the rule away) when a DNAT
/// rule leads 127.0.0.11:53 to them.
pub(super) type Opened = (std::net::UdpSocket, std::net::TcpListener, Option<std::fs::File>);

/// On a thread of its own (setns changes only the calling thread): enter the
/// namespace, bring `lo` up, bind both sockets. They stay in that namespace.
pub(super) fn open_in_netns(netns: &Path, addr: SocketAddr) -> Result<Opened, Error> {
    let file = std::fs::File::open(netns).map_err(|e| Error::Io(netns.display().to_string(), e))?;
    open_in_file(file, netns.display().to_string(), addr)
}

/// The sockets, opened inside the namespace `file` (`label` names it in errors).
pub(super) fn open_in_file(file: std::fs::File, label: String, addr: SocketAddr) -> Result<Opened, Error> {
    let kept = file.try_clone().ok();
    let what = {
        let label = label.clone();
        move |w: &str| format!("{w} in {label}")
    };
    let shown = label.clone();
    netns::run_in(&file, &label, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io(what("runtime"), e))?;
        rt.block_on(async { Netlink::connect()?.set_up("lo").await })?;
        // Port 53 left to the container where the rule can be placed; a
        // Docker sandbox's 127.0.0.12:53 is what dockerd's `--dns` names.
        // Err: bind port 53 itself, saying why where a rule was wanted.
        let redirected = match addr == LISTEN {
            true => match redirect::bind(addr.ip()) {
                Ok(pair) => Ok(pair),
                // Out of descriptors: an earlier agent's rule may still lead
                // port 53 to a port of its own, so a socket on 53 would
                // answer nothing; tried again later (`again.rs`). A restart
                // short of descriptors left containers without DNS, the log
                // saying "serving" (found by a review, 2026-12-07).
                Err(e) if e.short => return Err(Error::Dns(format!("{} in {shown}", e.why))),
                Err(e) => Err(Some(e.why)),
            },
            false => Err(None),
        };
        let ruled = redirected.is_ok();
        let (udp, tcp) = match redirected {
            Ok(pair) => pair,
            Err(why) => {
                let why = why.map(|w| format!(" (no DNAT rule: {w})")).unwrap_or_default();
                let udp = std::net::UdpSocket::bind(addr)
                    .map_err(|e| Error::Io(what(&format!("bind udp {addr}{why}")), e))?;
                let tcp = std::net::TcpListener::bind(addr)
                    .map_err(|e| Error::Io(what(&format!("bind tcp {addr}{why}")), e))?;
                // Said once it serves: a failure is the caller's to say, once
                // (`again.rs`; it was said here on every try).
                if !why.is_empty() {
                    tracing::warn!(netns = shown, "DNS at port 53 itself{why}");
                }
                (udp, tcp)
            }
        };
        udp.set_nonblocking(true).map_err(|e| Error::Io(what("udp"), e))?;
        tcp.set_nonblocking(true).map_err(|e| Error::Io(what("tcp"), e))?;
        Ok((udp, tcp, ruled))
    })
    .map(|(udp, tcp, ruled)| (udp, tcp, kept.filter(|_| ruled)))
}
