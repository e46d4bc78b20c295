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
//! Two blocking threads move packets (TUN -> UDP and UDP -> TUN), a third
//! runs the timers. Each packet thread takes the peer table once per batch;
//! the only lock per packet is the peer's own.
use std::{
    io::{self, IoSlice},
    net::{SocketAddr, UdpSocket},
    os::fd::{AsFd, AsRawFd},
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
    sys::socket::{self, ControlMessage, MsgFlags, SockaddrStorage, setsockopt, sockopt},
};
use tun_rs::{DeviceBuilder, GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use super::{
    PeerStatus, Transport,
    batch::{self, Encrypted, MAX_GSO_SEGMENTS, WG_GROWTH, group},
    router::{BUF_SIZE, Router, Sink},
    spin::{DEFAULT_SPIN, Pacer, Side},
    udp::{self, recv_datagrams},
};
use crate::plan::{kernel::TUN_READ_ROOM, netmap::PeerConfig};

const TICK: Duration = Duration::from_millis(250);
/// UDP socket buffers, each way.
const BUFFER_BYTES: usize = 4 << 20;
/// Room for the virtio-net header in front of every packet written to the TUN.
const OFFSET: usize = VIRTIO_NET_HDR_LEN;
/// Packets per batch: a 64 KB super-packet of 1,380-byte segments is 48.
const BATCH: usize = 128;
/// Packets per batch read from the TUN: reads go on while room is left for
/// one more super-packet of the most segments the TUN accepts.
const TUN_BATCH: usize = 256;

struct Io {
    tun: SyncDevice,
    udp: UdpSocket,
    /// The socket is IPv6 (dual-stack): IPv4 endpoints go out IPv4-mapped.
    v6: bool,
    /// UDP GSO works until a send says otherwise (an underlay without checksum offload).
    gso: AtomicBool,
}

impl Sink for Io {
    fn to_network(&self, dst: SocketAddr, datagram: &[u8]) {
        if let Err(e) = self.udp.send_to(datagram, udp::wire(dst, self.v6)) {
            tracing::trace!(%dst, error = %e, "udp send failed");
        }
    }
}

impl Io {
    /// Sends `datagrams`, all `segment` bytes long but the last, to `dst`:
    /// one GSO send, or one send each where GSO is not available.
    fn send_run(&self, dst: SocketAddr, datagrams: &[u8], segment: usize) {
        if datagrams.len() > segment && self.gso.load(Ordering::Relaxed) {
            let size = segment as u16;
            let addr = SockaddrStorage::from(udp::wire(dst, self.v6));
            let sent = socket::sendmsg(
                self.udp.as_raw_fd(),
                &[IoSlice::new(datagrams)],
                &[ControlMessage::UdpGsoSegments(&size)],
                MsgFlags::empty(),
                Some(&addr),
            );
            match sent {
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
            self.to_network(dst, d);
        }
    }
}

fn flush(io: &Io, buf: &[u8], out: &[Encrypted]) {
    group(out, |first, _, bytes| {
        let e = &out[first];
        io.send_run(e.dst, &buf[e.start..e.start + bytes], e.len);
    });
}

/// How the packet threads run.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How long the packet threads keep polling after a packet moved
    /// (zero: they sleep whenever nothing is queued).
    pub spin: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self { spin: DEFAULT_SPIN }
    }
}

pub struct TunUdp {
    router: Arc<Router>,
    io: Arc<Io>,
    stop: Arc<AtomicBool>,
    pacer: Arc<Pacer>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl TunUdp {
    /// Creates the TUN `name` (not yet addressed: the netlink module does
    /// that) and binds the UDP port, then starts the packet threads.
    pub fn start(name: &str, mtu: u16, listen: SocketAddr, secret: StaticSecret, tuning: &Tuning) -> io::Result<Self> {
        let tun = DeviceBuilder::new().name(name).mtu(mtu).offload(true).enable(false).build_sync()?;
        if !tun.tcp_gso() {
            tracing::warn!("the TUN has no offloads: one packet per read and write");
        }
        // Reads never block: the pacer waits (spinning or sleeping).
        tun.set_nonblocking(true)?;
        let udp = udp::bind(listen)?;
        let v6 = udp::is_v6(&udp)?;
        // Bursts of a TCP window arrive faster than one thread decrypts them;
        // the default buffers drop most of such a burst. As root the limit
        // (net.core.rmem_max) does not apply; otherwise keep the default.
        let _ = setsockopt(&udp, sockopt::RcvBufForce, &BUFFER_BYTES);
        let _ = setsockopt(&udp, sockopt::SndBufForce, &BUFFER_BYTES);
        if let Err(e) = setsockopt(&udp, sockopt::UdpGroSegment, &true) {
            tracing::warn!(error = %e, "no UDP GRO: one datagram per receive");
        }
        let io = Arc::new(Io { tun, udp, v6, gso: AtomicBool::new(true) });
        let router = Arc::new(Router::new(secret));
        let stop = Arc::new(AtomicBool::new(false));
        let pacer = Arc::new(Pacer::new(tuning.spin)?);
        let mtu = mtu as usize;
        let threads = vec![
            thread::Builder::new().name("wg-tun".into()).spawn({
                let (r, i, p, s) = (router.clone(), io.clone(), pacer.clone(), stop.clone());
                move || tun_to_udp(&r, &i, &p, &s, mtu)
            })?,
            thread::Builder::new().name("wg-udp".into()).spawn({
                let (r, i, p, s) = (router.clone(), io.clone(), pacer.clone(), stop.clone());
                move || udp_to_tun(&r, &i, &p, &s, mtu)
            })?,
            thread::Builder::new().name("wg-timers".into()).spawn({
                let (r, i, s) = (router.clone(), io.clone(), stop.clone());
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
            })?,
        ];
        Ok(Self { router, io, stop, pacer, threads })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.udp.local_addr()
    }
}

/// Reads (super-)packets from the TUN, encrypts every segment, sends the batch.
fn tun_to_udp(router: &Router, io: &Io, pacer: &Pacer, stop: &AtomicBool, mtu: usize) {
    let mut original = vec![0u8; OFFSET + 65_535];
    let mut packets = vec![vec![0u8; mtu + 64]; TUN_BATCH];
    let mut sizes = vec![0usize; TUN_BATCH];
    let stride = batch::stride(mtu);
    let mut buf = vec![0u8; TUN_BATCH * stride];
    let mut out = Vec::with_capacity(TUN_BATCH);
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // Whatever is queued (small packets come one per read) joins the batch.
        let mut n = 0;
        while n + TUN_READ_ROOM <= TUN_BATCH {
            match io.tun.recv_multiple(&mut original, &mut packets[n..], &mut sizes[n..], 0) {
                Ok(more) => {
                    failures = 0;
                    n += more;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A malformed super-packet costs that packet, and only that one.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput || e.raw_os_error().is_none() => {
                    tracing::debug!(error = %e, "tun packet dropped");
                }
                Err(e) => {
                    // A device that keeps failing is not spun on.
                    tracing::debug!(error = %e, "tun read failed");
                    failures += 1;
                    if failures > 100 {
                        thread::sleep(TICK);
                    }
                    break;
                }
            }
        }
        if n == 0 {
            if let Err(e) = pacer.wait(Side::Tun, io.tun.as_fd(), TICK) {
                tracing::debug!(error = %e, "tun wait failed");
                thread::sleep(TICK);
            }
            continue;
        }
        // First, so that the partner wakes while this batch is encrypted.
        pacer.moved(Side::Tun);
        let table = router.table();
        batch::encrypt(router, &table, &packets[..n], &sizes[..n], &mut buf, stride, &mut out);
        flush(io, &buf, &out);
    }
}

/// Receives datagrams (coalesced by UDP GRO), decrypts them, writes the
/// batch to the TUN (coalesced again by GRO).
fn udp_to_tun(router: &Router, io: &Io, pacer: &Pacer, stop: &AtomicBool, mtu: usize) {
    let mut datagrams = vec![0u8; 65_535];
    let mut cmsg = nix::cmsg_space!(i32);
    // GRO appends a flow's packets to the first buffer of it: each needs
    // room for a whole super-packet, or GRO silently does nothing.
    let mut packets: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(2 * OFFSET + 65_535)).collect();
    let mut gro = GROTable::default();
    // Room for a queued packet flushed after a handshake, whatever the datagram.
    let least = mtu + 64 + WG_GROWTH;
    while !stop.load(Ordering::Relaxed) {
        let mut count = 0;
        let mut table = None;
        // Whatever is waiting, without blocking: the pacer does the waiting.
        while count + MAX_GSO_SEGMENTS <= BATCH {
            let (len, src, segment) = match recv_datagrams(&io.udp, &mut datagrams, &mut cmsg, MsgFlags::MSG_DONTWAIT) {
                Ok(r) => r,
                Err(e) => {
                    if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                        tracing::trace!(error = %e, "udp receive failed");
                    }
                    break;
                }
            };
            // The table as of now, not of before the wait: a handshake from a
            // peer that just joined must find it.
            let table = table.get_or_insert_with(|| {
                pacer.moved(Side::Udp);
                router.table()
            });
            count =
                batch::decrypt(router, table, src, &datagrams[..len], segment, &mut packets, count, OFFSET, least, io);
        }
        if table.is_none() {
            if let Err(e) = pacer.wait(Side::Udp, io.udp.as_fd(), TICK) {
                tracing::debug!(error = %e, "udp wait failed");
                thread::sleep(TICK);
            }
            continue;
        }
        if count > 0
            && let Err(e) = io.tun.send_multiple(&mut gro, &mut packets[..count], OFFSET)
        {
            tracing::trace!(error = %e, "tun write failed");
        }
    }
}

impl Transport for TunUdp {
    fn set_peers(&self, peers: &[PeerConfig]) {
        self.router.set_peers(peers, &*self.io);
    }

    fn status(&self) -> Vec<PeerStatus> {
        self.router.status()
    }
}

impl Drop for TunUdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.pacer.wake_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
