//! What the agent tells Prometheus and probes: `/metrics`, `/healthz` and
//! `/readyz` on `--metrics-listen` (127.0.0.1:6782 by default, Weave Net's
//! status port), served by `weave_proto::observe`.
//!
//! Read at scrape time (nothing to keep current between scrapes): peers and
//! `weave_connections{state}` (Weave Net's name: established = a handshake in
//! the last 180 s and none under way; connecting = a handshake under way, unanswered so far;
//! idle = neither: nothing was sent lately, and without keepalives a tunnel
//! says nothing about its peer then), the oldest handshake, traffic in and out summed over
//! peers, local workload addresses (`weave_ips{state="local"}`), DNS entries,
//! the map revision and whether the watch is open. Kept where they happen:
//! reconcile duration and errors (`control.rs`), firewall repairs
//! (`firewall.rs`), DNS queries by result and what the DNS limits turned
//! away, by reason (`dns/`). No per-peer label: the
//! series count would grow with the square of the cluster.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::watch;
use weave_proto::{
    observe::{Probe, ProbeFuture},
    v1::NetworkMap,
};

use crate::dataplane::{PeerStatus, Transport};

/// A handshake younger than this means a live tunnel (WireGuard re-keys
/// every 120 s while traffic flows; 180 s is REJECT_AFTER_TIME).
use weave_proto::local_api::ESTABLISHED_SECS;

/// The agent's readiness and scrape-time gauges.
pub struct AgentProbe {
    pub node_id: u64,
    pub transport: Arc<dyn Transport>,
    pub maps: watch::Receiver<NetworkMap>,
    /// A watch on the coordinator is open.
    pub connected: Arc<AtomicBool>,
    /// Byte counters per peer at the last scrape, so that totals stay
    /// monotonic (counters) while peers come and go.
    seen: Mutex<HashMap<u64, Traffic>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Traffic {
    tx: u64,
    rx: u64,
    spoofed: u64,
    foreign_segment: u64,
    storm: u64,
}

impl AgentProbe {
    pub fn new(
        node_id: u64,
        transport: Arc<dyn Transport>,
        maps: watch::Receiver<NetworkMap>,
        connected: Arc<AtomicBool>,
    ) -> Self {
        Self { node_id, transport, maps, connected, seen: Mutex::default() }
    }
}

/// HELP texts (Prometheus' linter wants one per metric).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    // Descriptions go to the installed recorder: install it first.
    weave_proto::observe::recorder();
    describe_gauge!("weave_peers", "Peers (other nodes) this agent has a tunnel to.");
    describe_gauge!(
        "weave_connections",
        "Peers by state: established (handshake within 180 s), connecting (a handshake sent and not yet \
         answered) or idle (neither: nothing sent to it lately)."
    );
    describe_gauge!("weave_handshake_age_max_seconds", Unit::Seconds, "Age of the oldest live handshake.");
    describe_counter!("weave_traffic_bytes_total", Unit::Bytes, "Bytes through the tunnels, by direction.");
    describe_counter!(
        "weave_spoofed_packets_dropped_total",
        "Decrypted packets dropped for a source the peer may not use."
    );
    describe_counter!(
        "weave_segment_frames_dropped_total",
        "VXLAN frames dropped from a peer with no workload in their segment (a host's first attach \
         in a subnet also sends some before this host has its allocation)."
    );
    describe_counter!(
        "weave_storm_frames_dropped_total",
        "Broadcast and multicast VXLAN frames dropped from a peer past what its workloads' ports in \
         that segment let through together (--broadcast-limit a second per workload, up to 16, and for \
         its bridge)."
    );
    describe_counter!(
        "weave_port_frames_dropped_total",
        "Frames a workload's port sent that its source guard dropped: reason guard (another address or MAC \
         than the workload's, a VLAN tag), storm (past --broadcast-limit). Read every 10 s."
    );
    describe_gauge!(
        "weave_cpu_latency_hold",
        "1 while the agent holds its CPU wake-up latency request (idle CPUs poll; --cpu-latency-hold-ms)."
    );
    describe_counter!(
        "weave_cpu_latency_hold_seconds_total",
        Unit::Seconds,
        "Time the CPU wake-up latency request was in force (whole seconds)."
    );
    describe_counter!("weave_cpu_latency_holds_total", "Times the CPU wake-up latency request was made.");
    describe_gauge!("weave_ips", "Workload addresses on this host (state local; not the host's exposed addresses).");
    describe_gauge!(
        "weave_workload_ports_missing",
        "Addresses containers weave attached here hold whose interface is gone (deleted behind the agent's back)."
    );
    metrics::gauge!("weave_workload_ports_missing").set(0.0);
    describe_gauge!("weave_dns_entries", "DNS records this agent answers from.");
    describe_gauge!("weave_map_revision", "Revision of the network map applied.");
    describe_gauge!("weave_coordinator_connected", "1 while a watch on the coordinator is open.");
    describe_histogram!(
        "weave_reconcile_duration_seconds",
        Unit::Seconds,
        "Duration of reconcile passes, by pass: full (the kernel read) or incremental."
    );
    describe_counter!("weave_reconcile_errors_total", "Reconcile passes that failed.");
    describe_counter!(
        "weave_firewall_repairs_total",
        "Times the nftables tables were found missing or stale and put back."
    );
    describe_counter!(
        "weave_segment_repairs_total",
        "Times a segment's bridge or VXLAN device this agent had made was found deleted or changed and made again."
    );
    describe_counter!(
        "weave_flows_refused_total",
        "New connections dropped because their source address already held --flow-limit tracked \
         connections on this host (read every 60 s)."
    );
    describe_counter!(
        "weave_tunnel_rejected_total",
        "Datagrams on the WireGuard port no peer's tunnel took, by reason (malformed, bad_mac, under_load, \
         unknown_peer, failed): outsiders, removed members, handshake floods; and ecn_not_ect: a packet \
         whose sender does not do ECN in a datagram the underlay marked CE, dropped (RFC 6040)."
    );
    describe_counter!(
        "weave_dns_queries_total",
        "DNS queries answered by the agent, by result (forward_failed: forwarded, and no upstream answered; \
         malformed: FORMERR or NOTIMP, unparsed past the header where it is misshapen)."
    );
    describe_counter!(
        "weave_dns_dropped_total",
        "DNS work refused by the limits, by proto and reason: UDP queries dropped, TCP queries answered \
         SERVFAIL, TCP connections closed (namespace_forwards, namespace_rate, host_rate, agent_forwards, namespace_connections, \
         agent_connections, idle_evicted, accept_error)."
    );
    // Every counter from 0 at start, as the coordinator's: a series that
    // appears with its first increment has no rate, so an alert on
    // `increase(weave_firewall_repairs_total[5m]) > 0` missed the first
    // repair (found by a review, 2026-12-05).
    for counter in [
        "weave_spoofed_packets_dropped_total",
        "weave_segment_frames_dropped_total",
        "weave_storm_frames_dropped_total",
        "weave_reconcile_errors_total",
        "weave_firewall_repairs_total",
        "weave_segment_repairs_total",
        "weave_flows_refused_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    for direction in ["in", "out"] {
        metrics::counter!("weave_traffic_bytes_total", "direction" => direction).increment(0);
    }
    for reason in crate::plan::l2::GUARD_DROP_REASONS {
        metrics::counter!("weave_port_frames_dropped_total", "reason" => reason).increment(0);
    }
    for result in ["answered", "empty", "nxdomain", "forwarded", "forward_failed", "malformed"] {
        metrics::counter!("weave_dns_queries_total", "result" => result).increment(0);
    }
    for proto in ["udp", "tcp"] {
        for refused in super::dns::limits::Refused::ALL {
            metrics::counter!("weave_dns_dropped_total", "proto" => proto, "reason" => refused.reason()).increment(0);
        }
    }
}

/// Peers by state (established, connecting, idle), and the oldest live
/// handshake (seconds). An idle tunnel is no alarm: hosts not behind NAT
/// send no keepalives, so a tunnel nothing crossed lately has no session,
/// and counting it "connecting" made an alert on a dead peer fire for every
/// quiet one (found by a review, 2026-12-05).
/// A handshake under way is connecting whatever the age of the last one: a
/// peer that stopped answering (its host died) is re-handshaken 15 s after
/// data went unanswered, and stayed "established" until its last session
/// was 180 s old (found by a review, 2026-12-06). A rekey of a live tunnel
/// is under way for one round trip.
fn connections(peers: &[PeerStatus]) -> (usize, usize, usize, f64) {
    let live = |p: &PeerStatus| p.handshake_age_secs.is_some_and(|age| age < ESTABLISHED_SECS);
    // One whose answers go unused (this host unheard) is not up either.
    let connecting = |p: &PeerStatus| p.handshake_in_progress || p.unheard_secs.is_some();
    let established = peers.iter().filter(|p| live(p) && !connecting(p)).count();
    let connecting = peers.iter().filter(|p| connecting(p)).count();
    let oldest = peers.iter().filter(|p| live(p)).filter_map(|p| p.handshake_age_secs).fold(0.0, f64::max);
    (established, connecting, peers.len() - established - connecting, oldest)
}

/// How much each counter grew since `seen` (a peer whose counters went
/// backwards got a new tunnel: its whole count is new), updating `seen` to
/// the peers present now.
fn growth(seen: &mut HashMap<u64, Traffic>, peers: &[PeerStatus]) -> Traffic {
    let mut grown = Traffic::default();
    let mut now = HashMap::with_capacity(peers.len());
    for p in peers {
        let cur = Traffic {
            tx: p.tx_bytes,
            rx: p.rx_bytes,
            spoofed: p.dropped_spoofed,
            foreign_segment: p.dropped_foreign_segment,
            storm: p.dropped_storm,
        };
        let before = seen.get(&p.node_id).copied().unwrap_or_default();
        let delta = |c: u64, b: u64| if c >= b { c - b } else { c };
        grown.tx += delta(cur.tx, before.tx);
        grown.rx += delta(cur.rx, before.rx);
        grown.spoofed += delta(cur.spoofed, before.spoofed);
        grown.foreign_segment += delta(cur.foreign_segment, before.foreign_segment);
        grown.storm += delta(cur.storm, before.storm);
        now.insert(p.node_id, cur);
    }
    *seen = now;
    grown
}

impl Probe for AgentProbe {
    fn ready(&self) -> ProbeFuture<'_, Result<(), String>> {
        let revision = self.maps.borrow().revision;
        let connected = self.connected.load(Ordering::Relaxed);
        Box::pin(async move {
            match (revision, connected) {
                (0, _) => Err("no network map yet".into()),
                (_, false) => Err("no watch open on the coordinator (attach cannot allocate)".into()),
                _ => Ok(()),
            }
        })
    }

    fn refresh(&self) -> ProbeFuture<'_, ()> {
        let peers = self.transport.status();
        let (established, connecting, idle, oldest) = connections(&peers);
        metrics::gauge!("weave_peers").set(peers.len() as f64);
        metrics::gauge!("weave_connections", "state" => "established").set(established as f64);
        metrics::gauge!("weave_connections", "state" => "connecting").set(connecting as f64);
        metrics::gauge!("weave_connections", "state" => "idle").set(idle as f64);
        metrics::gauge!("weave_handshake_age_max_seconds").set(oldest);
        let grown = growth(&mut self.seen.lock().unwrap_or_else(|p| p.into_inner()), &peers);
        metrics::counter!("weave_traffic_bytes_total", "direction" => "out").increment(grown.tx);
        metrics::counter!("weave_traffic_bytes_total", "direction" => "in").increment(grown.rx);
        metrics::counter!("weave_spoofed_packets_dropped_total").increment(grown.spoofed);
        metrics::counter!("weave_segment_frames_dropped_total").increment(grown.foreign_segment);
        metrics::counter!("weave_storm_frames_dropped_total").increment(grown.storm);
        for (reason, n) in self.transport.rejected() {
            metrics::counter!("weave_tunnel_rejected_total", "reason" => reason).absolute(n);
        }
        let hold = self.transport.cpu_latency();
        metrics::gauge!("weave_cpu_latency_hold").set(f64::from(u8::from(hold.held)));
        metrics::counter!("weave_cpu_latency_hold_seconds_total").absolute(hold.held_seconds as u64);
        metrics::counter!("weave_cpu_latency_holds_total").absolute(hold.holds);
        {
            let map = self.maps.borrow();
            // Workloads' addresses: not the host's own (`expose`), which is no workload.
            let local = map
                .allocations
                .iter()
                .filter(|a| a.node_id == self.node_id && !a.container.starts_with("host:"))
                .count();
            metrics::gauge!("weave_ips", "state" => "local").set(local as f64);
            metrics::gauge!("weave_dns_entries").set(map.dns_records.len() as f64);
            metrics::gauge!("weave_map_revision").set(map.revision as f64);
        }
        metrics::gauge!("weave_coordinator_connected").set(f64::from(u8::from(self.connected.load(Ordering::Relaxed))));
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn peer(id: u64, age: Option<f64>, tx: u64, rx: u64) -> PeerStatus {
        PeerStatus {
            node_id: id,
            name: format!("h{id}"),
            address: Ipv4Addr::new(10, 47, 0, id as u8),
            endpoint: None,
            handshake_age_secs: age,
            handshake_in_progress: false,
            unheard_secs: None,
            tx_bytes: tx,
            rx_bytes: rx,
            dropped_spoofed: 0,
            dropped_foreign_segment: 0,
            dropped_storm: 0,
        }
    }

    #[test]
    fn peers_are_established_only_with_a_recent_handshake() {
        let mut peers = vec![
            peer(1, Some(3.0), 0, 0),
            peer(2, Some(500.0), 0, 0),
            peer(3, None, 0, 0),
            peer(4, Some(90.0), 0, 0),
            peer(5, None, 0, 0),
            peer(6, Some(400.0), 0, 0),
        ];
        // Trying to reach 5 and 6 (a handshake sent, not answered): connecting; 2 and 3 idle.
        peers[4].handshake_in_progress = true;
        peers[5].handshake_in_progress = true;
        assert_eq!(connections(&peers), (2, 2, 2, 90.0));
        // 4 stopped answering: its session is 90 s old, its handshake unanswered.
        peers[3].handshake_in_progress = true;
        assert_eq!(connections(&peers), (1, 3, 2, 90.0));
        // 1's handshakes arrive and this host's answers go unused: not up.
        peers[0].unheard_secs = Some(30.0);
        assert_eq!(connections(&peers), (0, 4, 2, 90.0));
        assert_eq!(connections(&[]), (0, 0, 0, 0.0));
    }

    #[test]
    fn traffic_totals_stay_monotonic_as_peers_come_go_and_rekey() {
        let mut seen = HashMap::new();
        assert_eq!(
            growth(&mut seen, &[peer(1, None, 100, 10)]),
            Traffic { tx: 100, rx: 10, spoofed: 0, foreign_segment: 0, storm: 0 }
        );
        assert_eq!(
            growth(&mut seen, &[peer(1, None, 150, 10), peer(2, None, 5, 5)]),
            Traffic { tx: 55, rx: 5, spoofed: 0, foreign_segment: 0, storm: 0 }
        );
        // Peer 1 gone, peer 2's tunnel rebuilt (its counters restarted).
        assert_eq!(
            growth(&mut seen, &[peer(2, None, 3, 1)]),
            Traffic { tx: 3, rx: 1, spoofed: 0, foreign_segment: 0, storm: 0 }
        );
        // Peer 1 back: all of its count is new.
        assert_eq!(
            growth(&mut seen, &[peer(1, None, 7, 0), peer(2, None, 3, 1)]),
            Traffic { tx: 7, rx: 0, spoofed: 0, foreign_segment: 0, storm: 0 }
        );
    }
}
