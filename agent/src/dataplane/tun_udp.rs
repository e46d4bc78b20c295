//! The transport: a TUN device holding the node address and one UDP socket,
//! with the [`Router`] between them, both sides batched.
//!
//! - TUN with virtio-net offloads (tun-rs `offload`): the kernel hands over
//!   TCP/UDP super-packets of up to 64 KB (TSO/USO), split here into MTU-sized
//!   packets; going the other way, decrypted packets of one flow are coalesced
//!   (GRO) into one write.
//! - UDP with GSO and GRO: the datagrams encrypted from one read leave in one
//!   `sendmsg` per peer (`UDP_SEGMENT`), and one `recvmsg` returns up to 64
//!   datagrams of a peer (`UDP_GRO`).
//!
//! Each queue (a TUN queue and a UDP socket) has one packet thread that
//! moves packets both ways (or two, one each way: [`Tuning::queue_threads`];
//! in [`super::workers`]); one more thread runs the timers. The kernel keeps
//! a sender on one socket (`SO_REUSEPORT` hash) and a flow's outgoing
//! packets on the TUN queue that last wrote one of it (automq), so a peer's
//! traffic stays on one queue and TCP sees no reordering.
//! Each packet thread takes the peer table once per batch; the only lock
//! per packet is the peer's own.
use std::{
    io,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use boringtun::x25519::StaticSecret;
use nix::{
    errno::Errno,
    sys::socket::{setsockopt, sockopt},
};
use tun_rs::{DeviceBuilder, SyncDevice, VIRTIO_NET_HDR_LEN};

use super::{
    PeerStatus, Transport,
    batch::{Encrypted, group},
    cpu_latency::{self, CpuLatencyHold, HoldStatus},
    ecn,
    router::{BUF_SIZE, NAT_KEEPALIVE, Router, Sink},
    spin::{DEFAULT_SPIN, Pacer},
    udp, workers,
};
use crate::plan::netmap::PeerConfig;

pub(super) const TICK: Duration = Duration::from_millis(250);
/// UDP socket buffers, each way.
const BUFFER_BYTES: usize = 4 << 20;
/// Room for the virtio-net header in front of every packet written to the TUN.
pub(super) const OFFSET: usize = VIRTIO_NET_HDR_LEN;
/// Packets per batch: a 64 KB super-packet of 1,380-byte segments is 48.
pub(super) const BATCH: usize = 128;
/// Packets per batch read from the TUN: reads go on while room is left for
/// one more super-packet of the most segments the TUN accepts.
pub(super) const TUN_BATCH: usize = 256;

/// One queue: a TUN queue and a UDP socket, and the pacer of the thread
/// pair that serves them.
pub(super) struct Io {
    pub(super) tun: SyncDevice,
    pub(super) udp: UdpSocket,
    /// The socket is IPv6 (dual-stack): IPv4 endpoints go out IPv4-mapped.
    v6: bool,
    /// UDP GSO works until a send says otherwise (an underlay without checksum offload).
    gso: AtomicBool,
    pub(super) pacer: Pacer,
}

impl Sink for Io {
    fn to_network(&self, dst: SocketAddr, datagram: &[u8]) {
        self.send_one(dst, datagram, ecn::NOT_ECT);
    }
}

impl Io {
    fn send_one(&self, dst: SocketAddr, datagram: &[u8], ecn: u8) {
        if let Err(e) = udp::send(&self.udp, self.v6, dst, datagram, None, ecn) {
            tracing::trace!(%dst, error = %e, "udp send failed");
        }
    }

    /// Sends `datagrams`, all `segment` bytes long but the last, to `dst`
    /// with the outer ECN field `ecn`: one GSO send, or one send each where
    /// GSO is not available.
    fn send_run(&self, dst: SocketAddr, datagrams: &[u8], segment: usize, ecn: u8) {
        if datagrams.len() > segment && self.gso.load(Ordering::Relaxed) {
            match udp::send(&self.udp, self.v6, dst, datagrams, Some(segment as u16), ecn) {
                Ok(_) => return,
                // The path to this peer is narrower than a segment (a smaller
                // path MTU): this run goes one datagram at a time, which the
                // kernel may fragment; GSO stays on for everyone else.
                Err(Errno::EMSGSIZE | Errno::EINVAL) => {}
                Err(e @ (Errno::EIO | Errno::EOPNOTSUPP)) => {
                    tracing::warn!(error = %e, "UDP GSO refused; sending datagrams one at a time from now on");
                    self.gso.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::trace!(%dst, error = %e, "udp send failed");
                    return;
                }
            }
        }
        for d in datagrams.chunks(segment) {
            self.send_one(dst, d, ecn);
        }
    }
}

pub(super) fn flush(io: &Io, buf: &[u8], out: &[Encrypted]) {
    group(out, |first, _, bytes| {
        let e = &out[first];
        io.send_run(e.dst, &buf[e.start..e.start + bytes], e.len, e.ecn);
    });
}

/// How the packet threads run.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// TUN queues (`IFF_MULTI_QUEUE`), each with its own UDP socket on the
    /// shared port (`SO_REUSEPORT`) and its own packet thread(s).
    pub queues: usize,
    /// Threads per queue: 1 runs both directions of a queue on one thread
    /// (what a workload answers inside a TUN write leaves without waking
    /// another thread), 2 gives each direction its own.
    pub queue_threads: usize,
    /// How long the packet threads keep polling after a packet moved
    /// (zero: they sleep whenever nothing is queued).
    pub spin: Duration,
    /// How long after a packet moved the agent keeps its CPU-latency request
    /// (idle CPUs poll instead of halting; zero: never made).
    pub cpu_latency_hold: Duration,
    /// Seconds between keepalives to every peer while this host is behind
    /// NAT ([`Transport::set_behind_nat`]); 0: none.
    pub nat_keepalive: u16,
    /// `--broadcast-limit`: what each peer's group frames into a segment are
    /// metered at, per workload it hosts there (`router/storm.rs`; 0: not metered).
    pub broadcast_limit: u32,
    /// `--ignore-ipv6-packet-too-big`: IPv6 sends ignore path MTUs ([`udp`]).
    pub ignore_ipv6_packet_too_big: bool,
}

impl Tuning {
    /// The default queue count: one per two CPUs (a busy queue keeps two
    /// threads and the kernel work of its syscalls going), 1 to 4.
    pub fn default_queues() -> usize {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        (cpus / 2).clamp(1, 4)
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            queues: Self::default_queues(),
            queue_threads: 1,
            spin: DEFAULT_SPIN,
            cpu_latency_hold: cpu_latency::DEFAULT_WINDOW,
            nat_keepalive: NAT_KEEPALIVE,
            broadcast_limit: 0,
            ignore_ipv6_packet_too_big: false,
        }
    }
}

pub struct TunUdp {
    router: Arc<Router>,
    /// The queues; the first also carries the control messages (handshakes,
    /// cookies, keepalives).
    queues: Vec<Arc<Io>>,
    hold: Arc<CpuLatencyHold>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl TunUdp {
    /// Creates the TUN `name` (not yet addressed: the netlink module does
    /// that) with `tuning.queues` queues, binds the UDP port once per queue,
    /// then starts the packet threads.
    pub fn start(name: &str, mtu: u16, listen: SocketAddr, secret: StaticSecret, tuning: &Tuning) -> io::Result<Self> {
        let n = tuning.queues.max(1);
        let first =
            DeviceBuilder::new().name(name).mtu(mtu).offload(true).multi_queue(n > 1).enable(false).build_sync()?;
        if !first.tcp_gso() {
            tracing::warn!("the TUN has no offloads: one packet per read and write");
        }
        let mut tuns = vec![first];
        for _ in 1..n {
            tuns.push(tuns[0].try_clone()?);
        }
        udp::ignore_ipv6_packet_too_big(tuning.ignore_ipv6_packet_too_big);
        let udps = udp::bind_queues(listen, n)?;
        let hold = Arc::new(CpuLatencyHold::open(tuning.cpu_latency_hold));
        let mut queues = Vec::with_capacity(n);
        for (tun, udp) in tuns.into_iter().zip(udps) {
            // Reads never block: the pacer waits (spinning or sleeping).
            tun.set_nonblocking(true)?;
            let v6 = udp::is_v6(&udp)?;
            // Bursts of a TCP window arrive faster than one thread decrypts them;
            // the default buffers drop most of such a burst. As root the limit
            // (net.core.rmem_max) does not apply; otherwise keep the default.
            let _ = setsockopt(&udp, sockopt::RcvBufForce, &BUFFER_BYTES);
            let _ = setsockopt(&udp, sockopt::SndBufForce, &BUFFER_BYTES);
            if let Err(e) = setsockopt(&udp, sockopt::UdpGroSegment, &true) {
                tracing::warn!(error = %e, "no UDP GRO: one datagram per receive");
            }
            let pacer = Pacer::new(tuning.spin, hold.clone())?;
            queues.push(Arc::new(Io { tun, udp, v6, gso: AtomicBool::new(true), pacer }));
        }
        let router = Arc::new(Router::new(secret));
        router.set_nat_keepalive(tuning.nat_keepalive);
        router.set_broadcast_limit(tuning.broadcast_limit);
        let stop = Arc::new(AtomicBool::new(false));
        let mtu = mtu as usize;
        let mut threads = Vec::with_capacity(2 * n + 1);
        for (q, io) in queues.iter().enumerate() {
            if tuning.queue_threads < 2 {
                threads.push(thread::Builder::new().name(format!("wg-q{q}")).spawn({
                    let (r, i, s) = (router.clone(), io.clone(), stop.clone());
                    move || workers::joint(&r, &i, &s, mtu)
                })?);
                continue;
            }
            threads.push(thread::Builder::new().name(format!("wg-tun{q}")).spawn({
                let (r, i, s) = (router.clone(), io.clone(), stop.clone());
                move || workers::tun_to_udp(&r, &i, &s, mtu)
            })?);
            threads.push(thread::Builder::new().name(format!("wg-udp{q}")).spawn({
                let (r, i, s) = (router.clone(), io.clone(), stop.clone());
                move || workers::udp_to_tun(&r, &i, &s, mtu)
            })?);
        }
        threads.push(thread::Builder::new().name("wg-timers".into()).spawn({
            let (r, i, s) = (router.clone(), queues[0].clone(), stop.clone());
            move || {
                let mut buf = vec![0u8; BUF_SIZE];
                let mut last_reset = Instant::now();
                while !s.load(Ordering::Relaxed) {
                    thread::sleep(TICK);
                    r.tick(&mut buf, &*i);
                    if last_reset.elapsed() >= Duration::from_secs(1) {
                        r.reset_rate_limit();
                        last_reset = Instant::now();
                    }
                }
            }
        })?);
        Ok(Self { router, queues, hold, stop, threads })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.queues[0].udp.local_addr()
    }
}

impl Transport for TunUdp {
    fn set_peers(&self, peers: &[PeerConfig]) {
        self.router.set_peers(peers, &*self.queues[0]);
    }

    fn set_behind_nat(&self, behind: bool) {
        self.router.set_behind_nat(behind, &*self.queues[0]);
    }

    fn status(&self) -> Vec<PeerStatus> {
        self.router.status()
    }

    fn cpu_latency(&self) -> HoldStatus {
        self.hold.status()
    }

    fn rejected(&self) -> Vec<(&'static str, u64)> {
        self.router.rejected.counts().into_iter().map(|(r, n)| (r.label(), n)).collect()
    }
}

impl Drop for TunUdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for q in &self.queues {
            q.pacer.wake_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
