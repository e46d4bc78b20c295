//! The packet work of one queue, in two halves: TUN -> UDP (read, encrypt,
//! GSO send) and UDP -> TUN (GRO receive, decrypt, GRO write). Neither half
//! blocks in a read: each reads whatever is queued and leaves the waiting
//! to the queue's [`super::spin::Pacer`] (poll briefly after traffic, then sleep).
//!
//! By default one thread runs both halves of a queue ([`joint`]): after it
//! writes decrypted packets to the TUN it reads the TUN again at once, and
//! what a workload answered inside that write (the kernel delivers a TUN
//! write, and the workload's ping reply or TCP ACK, before the write
//! returns) leaves without waking another thread. `--queue-threads 2` runs
//! each half on a thread of its own ([`tun_to_udp`], [`udp_to_tun`]).
//!
//! A thread waits as soon as its halves read their descriptors empty (`poll`
//! is level-triggered: what came meanwhile ends the wait at once), not after
//! one more turn that finds nothing; a half that stopped on a full batch
//! keeps both halves going. After a wait the joint thread reads only what
//! `poll` found readable (and the TUN after it wrote to it). A ping's round
//! trip through two agents took 20 system calls besides the waits, 12 of
//! them reads that found nothing (5 on the packet's way); now 13, 5 of them
//! (4 on the way). No change of the RTT, TCP or UDP was measurable on a
//! 2-core VM (bench/ROUNDS.md, round eighteen).
use std::{
    io,
    os::fd::AsFd,
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use nix::sys::socket::MsgFlags;
use tun_rs::{GROTable, SyncDevice};

use super::{
    batch::{self, Encrypted, MAX_GSO_SEGMENTS, WG_GROWTH},
    router::{DATAGRAM_LEAD, LEAD, Router},
    spin::{Readable, Side, Woke},
    tun_udp::{BATCH, Io, OFFSET, TICK, TUN_BATCH, flush},
    udp::{self, Received, recv_datagrams},
};
use crate::plan::kernel::TUN_READ_ROOM;

/// What one half's turn did.
#[derive(Clone, Copy, Default)]
struct Turn {
    /// The turn ended because the descriptor had nothing more (or failed),
    /// not because a batch was full: reading it again before a wait would
    /// find nothing.
    drained: bool,
    /// Packets were written to the TUN (the UDP half).
    wrote: bool,
}

impl Turn {
    /// A half not read in this turn.
    const SKIPPED: Turn = Turn { drained: true, wrote: false };
}

/// The buffers of the TUN -> UDP half, sized once.
struct TunHalf {
    original: Vec<u8>,
    packets: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    stride: usize,
    buf: Vec<u8>,
    out: Vec<Encrypted>,
    failures: u32,
    mtu: usize,
}

impl TunHalf {
    fn new(mtu: usize) -> Self {
        let stride = batch::stride(mtu);
        Self {
            original: vec![0u8; OFFSET + 65_535],
            // Each packet after room for the AEAD's lead (batch::encrypt).
            packets: vec![vec![0u8; LEAD + mtu + 64]; TUN_BATCH],
            sizes: vec![0usize; TUN_BATCH],
            stride,
            buf: vec![0u8; DATAGRAM_LEAD + TUN_BATCH * stride],
            out: Vec::with_capacity(TUN_BATCH),
            failures: 0,
            mtu,
        }
    }

    /// Reads (super-)packets from the TUN until it is empty or a batch is
    /// full, encrypts every segment, sends the batch.
    fn step(&mut self, router: &Router, io: &Io) -> Turn {
        // Whatever is queued (small packets come one per read) joins the batch.
        let mut n = 0;
        let mut drained = false;
        while n + TUN_READ_ROOM <= TUN_BATCH {
            match io.tun.recv_multiple(&mut self.original, &mut self.packets[n..], &mut self.sizes[n..], LEAD) {
                Ok(more) => {
                    self.failures = 0;
                    n += more;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A malformed super-packet costs that packet, and only that one.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput || e.raw_os_error().is_none() => {
                    tracing::debug!(error = %e, "tun packet dropped");
                }
                Err(e) => {
                    // A device that keeps failing is not spun on.
                    tracing::debug!(error = %e, "tun read failed");
                    self.failures += 1;
                    if self.failures > 100 {
                        thread::sleep(TICK);
                    }
                    drained = true;
                    break;
                }
            }
        }
        if n == 0 {
            return Turn { drained, wrote: false };
        }
        // First, so that the partner wakes while this batch is encrypted.
        io.pacer.moved(Side::Tun);
        let table = router.table();
        batch::encrypt(
            router,
            &table,
            &mut self.packets[..n],
            &self.sizes[..n],
            self.mtu,
            &mut self.buf,
            self.stride,
            &mut self.out,
        );
        // Traffic for a peer; not what goes nowhere (the host's own IPv6
        // chatter on the TUN, packets for no peer).
        if !self.out.is_empty() {
            io.pacer.carried();
        }
        flush(io, &self.buf, &self.out);
        Turn { drained, wrote: false }
    }
}

/// The buffers of the UDP -> TUN half, sized once.
struct UdpHalf {
    datagrams: Vec<u8>,
    cmsg: Vec<u8>,
    packets: Vec<Vec<u8>>,
    gro: GROTable,
    least: usize,
}

impl UdpHalf {
    fn new(mtu: usize) -> Self {
        Self {
            // The datagrams after room for the AEAD's lead (batch::decrypt).
            datagrams: vec![0u8; DATAGRAM_LEAD + 65_535],
            cmsg: udp::cmsg_buffer(),
            // GRO appends a flow's packets to the first buffer of it: each needs
            // room for a whole super-packet, or GRO silently does nothing.
            // Each packet at LEAD, which holds the virtio-net header in front;
            // tun-rs coalesces while the capacity holds twice the offset more.
            packets: (0..BATCH).map(|_| Vec::with_capacity(2 * LEAD + 65_535)).collect(),
            // What this thread writes was authenticated by WireGuard's AEAD:
            // GRO coalesces it without re-checking each segment's checksum.
            gro: GROTable::trusting_checksums(),
            // Room for a queued packet flushed after a handshake, whatever the datagram.
            least: mtu + 64 + WG_GROWTH,
        }
    }

    /// Receives datagrams (coalesced by UDP GRO) until the socket is empty,
    /// a batch is full or a batch's worth of datagrams was read, decrypts
    /// them, writes the batch to this queue's TUN queue (coalesced again by
    /// GRO).
    ///
    /// This queue's own TUN queue, whatever the flow: the kernel sends a
    /// flow's packets the other way to the TUN queue that last wrote one of
    /// it (tun "automq"), and this socket receives all of one peer's
    /// datagrams (`SO_REUSEPORT` hashes the sender), so a peer's traffic both
    /// ways stays on one queue: its `Tunn` is not fought over, and its
    /// answers come back to the thread that just wrote (the joint thread's
    /// shortcut). Peers, not flows, spread over the queues.
    ///
    /// The turn ends after [`BATCH`] datagrams read whatever became of them:
    /// junk, forgeries that fail the AEAD, replays and handshakes decrypt to
    /// nothing, and a flood of them that keeps the socket from emptying must
    /// not keep this thread from its TUN half (the joint thread's outgoing
    /// traffic) or from a stop.
    fn step(&mut self, router: &Router, io: &Io) -> Turn {
        let mut count = 0;
        let mut read = 0;
        let mut table = None;
        let mut drained = false;
        while count + MAX_GSO_SEGMENTS <= BATCH && read < BATCH {
            let Received { len, src, segment, ecn } = match recv_datagrams(
                &io.udp,
                &mut self.datagrams[DATAGRAM_LEAD..],
                &mut self.cmsg,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(r) => r,
                Err(e) => {
                    if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                        tracing::trace!(error = %e, "udp receive failed");
                    }
                    // Interrupted as well: the wait's poll tells whether more came.
                    drained = true;
                    break;
                }
            };
            read += len.div_ceil(segment.max(1)).max(1);
            // The table as of now, not of before the wait: a handshake from a
            // peer that just joined must find it.
            let table = table.get_or_insert_with(|| {
                io.pacer.moved(Side::Udp);
                router.table()
            });
            count = batch::decrypt(
                router,
                table,
                src,
                ecn,
                &self.datagrams[..DATAGRAM_LEAD + len],
                segment,
                &mut self.packets,
                count,
                self.least,
                io,
            );
        }
        if table.is_none() {
            return Turn { drained, wrote: false };
        }
        if count > 0 {
            io.pacer.carried();
            write(&io.tun, &mut self.gro, &mut self.packets[..count]);
        }
        Turn { drained, wrote: count > 0 }
    }
}

/// Both halves of a queue on one thread: a batch each way in turn, the
/// TUN read right after the TUN write; sleeps (in the pacer) only when
/// both sides were read empty, and after a wait reads only the side that
/// woke it (and the TUN after writing to it).
pub(super) fn joint(router: &Router, io: &Io, stop: &AtomicBool, mtu: usize) {
    let (mut tun, mut udp) = (TunHalf::new(mtu), UdpHalf::new(mtu));
    let mut read = Readable::BOTH;
    while !stop.load(Ordering::Relaxed) {
        let received = if read.udp { udp.step(router, io) } else { Turn::SKIPPED };
        // What a workload answered inside the TUN write is there already; and
        // after a full batch of datagrams the TUN gets its turn whatever
        // `poll` said before it (a flood must not delay it by two batches).
        let sent = if read.tun || received.wrote || !received.drained { tun.step(router, io) } else { Turn::SKIPPED };
        read = Readable::BOTH;
        if received.drained && sent.drained {
            match io.pacer.wait_both(io.tun.as_fd(), io.udp.as_fd(), TICK) {
                Ok((_, readable)) => read = readable,
                Err(e) => failed_wait(&e),
            }
        }
    }
}

/// The TUN -> UDP half on a thread of its own.
pub(super) fn tun_to_udp(router: &Router, io: &Io, stop: &AtomicBool, mtu: usize) {
    let mut tun = TunHalf::new(mtu);
    turns(stop, || tun.step(router, io), || io.pacer.wait(Side::Tun, io.tun.as_fd(), TICK));
}

/// The UDP -> TUN half on a thread of its own.
pub(super) fn udp_to_tun(router: &Router, io: &Io, stop: &AtomicBool, mtu: usize) {
    let mut udp = UdpHalf::new(mtu);
    turns(stop, || udp.step(router, io), || io.pacer.wait(Side::Udp, io.udp.as_fd(), TICK));
}

/// A packet thread's loop until `stop`: a `turn`, and when it read its
/// descriptor empty, a `wait` in the pacer.
fn turns(stop: &AtomicBool, mut turn: impl FnMut() -> Turn, mut wait: impl FnMut() -> io::Result<Woke>) {
    while !stop.load(Ordering::Relaxed) {
        if turn().drained
            && let Err(e) = wait()
        {
            failed_wait(&e);
        }
    }
}

/// A failing wait sleeps a tick instead of spinning.
fn failed_wait(e: &io::Error) {
    tracing::debug!(error = %e, "packet thread wait failed");
    thread::sleep(TICK);
}

fn write(tun: &SyncDevice, gro: &mut GROTable, packets: &mut [Vec<u8>]) {
    if let Err(e) = tun.send_multiple(gro, packets, LEAD) {
        tracing::trace!(error = %e, "tun write failed");
    }
}
