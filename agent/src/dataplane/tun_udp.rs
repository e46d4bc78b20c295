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
    os::fd::AsRawFd,
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
use tun_rs::{DeviceBuilder, GROTable, InterruptEvent, SyncDevice, VIRTIO_NET_HDR_LEN};

use super::{
    PeerStatus, Transport,
    router::{BUF_SIZE, Router, Sink},
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
/// The kernel's limit on segments in one UDP GSO send (UDP_MAX_SEGMENTS).
const MAX_GSO_SEGMENTS: usize = 64;
/// And on the bytes in it (one IP datagram of either family).
const MAX_GSO_BYTES: usize = 65_000;
/// WireGuard's framing on a data packet (header 16, tag 16) plus padding to 16.
const WG_GROWTH: usize = 32 + 15;

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

/// One encrypted datagram in the send buffer.
struct Encrypted {
    dst: SocketAddr,
    start: usize,
    len: usize,
}

/// Splits a batch into runs that one GSO send can carry: same destination,
/// consecutive, all the same size but the last, within the kernel's limits.
/// Calls `run(first, count, bytes)` for each.
fn group(out: &[Encrypted], mut run: impl FnMut(usize, usize, usize)) {
    let mut i = 0;
    while i < out.len() {
        let (dst, segment) = (out[i].dst, out[i].len);
        let mut total = segment;
        let mut j = i + 1;
        while j < out.len()
            && out[j].dst == dst
            && out[j - 1].len == segment
            && out[j].len <= segment
            && j - i < MAX_GSO_SEGMENTS
            && total + out[j].len <= MAX_GSO_BYTES
        {
            total += out[j].len;
            j += 1;
        }
        run(i, j - i, total);
        i = j;
    }
}

fn flush(io: &Io, buf: &[u8], out: &[Encrypted]) {
    group(out, |first, _, bytes| {
        let e = &out[first];
        io.send_run(e.dst, &buf[e.start..e.start + bytes], e.len);
    });
}

pub struct TunUdp {
    router: Arc<Router>,
    io: Arc<Io>,
    stop: Arc<AtomicBool>,
    interrupt: Arc<InterruptEvent>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl TunUdp {
    /// Creates the TUN `name` (not yet addressed: the netlink module does
    /// that) and binds the UDP port, then starts the packet threads.
    pub fn start(name: &str, mtu: u16, listen: SocketAddr, secret: StaticSecret) -> io::Result<Self> {
        let tun = DeviceBuilder::new().name(name).mtu(mtu).offload(true).enable(false).build_sync()?;
        if !tun.tcp_gso() {
            tracing::warn!("the TUN has no offloads: one packet per read and write");
        }
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
        // The receive thread wakes up this often to notice a stop request.
        udp.set_read_timeout(Some(TICK))?;
        let io = Arc::new(Io { tun, udp, v6, gso: AtomicBool::new(true) });
        let router = Arc::new(Router::new(secret));
        let stop = Arc::new(AtomicBool::new(false));
        let interrupt = Arc::new(InterruptEvent::new()?);
        let mtu = mtu as usize;
        let threads = vec![
            thread::Builder::new().name("wg-tun".into()).spawn({
                let (r, i, s, intr) = (router.clone(), io.clone(), stop.clone(), interrupt.clone());
                move || tun_to_udp(&r, &i, &s, &intr, mtu)
            })?,
            thread::Builder::new().name("wg-udp".into()).spawn({
                let (r, i, s) = (router.clone(), io.clone(), stop.clone());
                move || udp_to_tun(&r, &i, &s, mtu)
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
        Ok(Self { router, io, stop, interrupt, threads })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.udp.local_addr()
    }
}

/// Reads (super-)packets from the TUN, encrypts every segment, sends the batch.
fn tun_to_udp(router: &Router, io: &Io, stop: &AtomicBool, intr: &InterruptEvent, mtu: usize) {
    let mut original = vec![0u8; OFFSET + 65_535];
    let mut packets = vec![vec![0u8; mtu + 64]; TUN_BATCH];
    let mut sizes = vec![0usize; TUN_BATCH];
    let stride = (mtu + 64 + WG_GROWTH).max(148);
    let mut buf = vec![0u8; TUN_BATCH * stride];
    let mut out = Vec::with_capacity(TUN_BATCH);
    let mut failures = 0u32;
    // Reads after the first of a batch must not wait.
    if let Err(e) = io.tun.set_nonblocking(true) {
        tracing::warn!(error = %e, "TUN stays blocking: one read per batch");
    }
    while !stop.load(Ordering::Relaxed) {
        let mut n = match io.tun.recv_multiple_intr(&mut original, &mut packets, &mut sizes, 0, intr) {
            Ok(n) => {
                failures = 0;
                n
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A malformed super-packet costs that packet, and only that one.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput || e.raw_os_error().is_none() => {
                tracing::debug!(error = %e, "tun packet dropped");
                continue;
            }
            Err(e) => {
                // A device that keeps failing is not spun on.
                tracing::debug!(error = %e, "tun read failed");
                failures += 1;
                if failures > 100 {
                    thread::sleep(TICK);
                }
                continue;
            }
        };
        // Whatever else is queued (small packets come one per read) joins the batch.
        while n + TUN_READ_ROOM <= TUN_BATCH {
            match io.tun.recv_multiple(&mut original, &mut packets[n..], &mut sizes[n..], 0) {
                Ok(more) => n += more,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "tun read failed");
                    break;
                }
            }
        }
        let table = router.table();
        let mut cursor = 0;
        out.clear();
        for (packet, &size) in packets.iter().zip(&sizes).take(n) {
            let room = &mut buf[cursor..cursor + stride];
            if let Some((dst, len)) = router.encapsulate(&table, &packet[..size], room) {
                out.push(Encrypted { dst, start: cursor, len });
                cursor += len;
            }
        }
        flush(io, &buf, &out);
    }
}

/// Receives datagrams (coalesced by UDP GRO), decrypts them, writes the
/// batch to the TUN (coalesced again by GRO).
fn udp_to_tun(router: &Router, io: &Io, stop: &AtomicBool, mtu: usize) {
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
        // Block for the first datagrams, then take what else is waiting.
        while count + MAX_GSO_SEGMENTS <= BATCH {
            // Only the first read waits: after a wait the table is taken anew.
            let flags = if table.is_none() { MsgFlags::empty() } else { MsgFlags::MSG_DONTWAIT };
            let (len, src, segment) = match recv_datagrams(&io.udp, &mut datagrams, &mut cmsg, flags) {
                Ok(r) => r,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) {
                        tracing::trace!(error = %e, "udp receive failed");
                    }
                    break;
                }
            };
            // The table as of now, not of before the wait: a handshake from a
            // peer that just joined must find it.
            let table = table.get_or_insert_with(|| router.table());
            for d in datagrams[..len].chunks(segment) {
                let p = &mut packets[count];
                p.clear();
                p.resize(OFFSET + d.len().max(least), 0);
                if let Some(n) = router.decapsulate(table, src, d, &mut p[OFFSET..], io) {
                    p.truncate(OFFSET + n);
                    count += 1;
                }
            }
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
        let _ = self.interrupt.trigger();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_for_gso_break_at_a_new_peer_a_short_datagram_and_the_segment_limit() {
        let a: SocketAddr = "192.0.2.1:6784".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:6784".parse().unwrap();
        let mut out = Vec::new();
        let mut start = 0;
        let mut push = |dst, len| {
            out.push(Encrypted { dst, start, len });
            start += len;
        };
        // a: 3 full + 1 short; then a again (new run: the short one ended it);
        // b: 70 full (split at 64).
        for len in [100, 100, 100, 60, 100] {
            push(a, len);
        }
        for _ in 0..70 {
            push(b, 100);
        }
        let runs = runs(&out);
        assert_eq!(runs, vec![(a, 4, 360), (a, 1, 100), (b, 64, 6400), (b, 6, 600)]);
    }

    /// The runs `flush` would send: (destination, datagrams, bytes).
    fn runs(out: &[Encrypted]) -> Vec<(SocketAddr, usize, usize)> {
        let mut sent = Vec::new();
        group(out, |first, n, bytes| sent.push((out[first].dst, n, bytes)));
        sent
    }
}
