//! The packet threads of one queue: TUN -> UDP (read, encrypt, GSO send)
//! and UDP -> TUN (GRO receive, decrypt, GRO write). Neither blocks in a
//! read: both read without waiting and leave the waiting to the queue's
//! [`Pacer`] (poll briefly after traffic, then sleep).
use std::{
    io,
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use nix::sys::socket::MsgFlags;
use tun_rs::{GROTable, SyncDevice};

use super::{
    batch::{self, MAX_GSO_SEGMENTS, WG_GROWTH},
    router::Router,
    spin::Side,
    tun_udp::{BATCH, Io, OFFSET, TICK, TUN_BATCH, flush},
    udp::recv_datagrams,
};
use crate::plan::kernel::TUN_READ_ROOM;

/// Reads (super-)packets from the TUN, encrypts every segment, sends the batch.
pub(super) fn tun_to_udp(router: &Router, io: &Io, stop: &AtomicBool, mtu: usize) {
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
            if let Err(e) = io.pacer.wait(Side::Tun, io.tun.as_fd(), TICK) {
                tracing::debug!(error = %e, "tun wait failed");
                thread::sleep(TICK);
            }
            continue;
        }
        // First, so that the partner wakes while this batch is encrypted.
        io.pacer.moved(Side::Tun);
        let table = router.table();
        batch::encrypt(router, &table, &packets[..n], &sizes[..n], &mut buf, stride, &mut out);
        flush(io, &buf, &out);
    }
}

/// Receives datagrams (coalesced by UDP GRO), decrypts them, writes the
/// batch to the TUN (coalesced again by GRO).
/// With several queues, each packet goes out through the TUN queue of its
/// flow ([`batch::queue_of`]) rather than this thread's own.
pub(super) fn udp_to_tun(router: &Router, io: &Io, all: &[Arc<Io>], stop: &AtomicBool, mtu: usize) {
    let mut datagrams = vec![0u8; 65_535];
    let mut cmsg = nix::cmsg_space!(i32);
    // GRO appends a flow's packets to the first buffer of it: each needs
    // room for a whole super-packet, or GRO silently does nothing.
    let mut packets: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(2 * OFFSET + 65_535)).collect();
    let mut gro = GROTable::default();
    // Room for a queued packet flushed after a handshake, whatever the datagram.
    let least = mtu + 64 + WG_GROWTH;
    let mut keys = [0u8; BATCH];
    let mut counts = vec![0usize; all.len()];
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
                io.pacer.moved(Side::Udp);
                router.table()
            });
            count =
                batch::decrypt(router, table, src, &datagrams[..len], segment, &mut packets, count, OFFSET, least, io);
        }
        if table.is_none() {
            if let Err(e) = io.pacer.wait(Side::Udp, io.udp.as_fd(), TICK) {
                tracing::debug!(error = %e, "udp wait failed");
                thread::sleep(TICK);
            }
            continue;
        }
        if count == 0 {
            continue;
        }
        if all.len() == 1 {
            write(&io.tun, &mut gro, &mut packets[..count]);
            continue;
        }
        for (k, p) in keys.iter_mut().zip(&packets[..count]) {
            *k = batch::queue_of(&p[OFFSET..], all.len()) as u8;
        }
        batch::group_by_queue(&mut packets[..count], &keys[..count], &mut counts);
        let mut at = 0;
        for (q, &n) in all.iter().zip(&counts) {
            if n > 0 {
                write(&q.tun, &mut gro, &mut packets[at..at + n]);
            }
            at += n;
        }
    }
}

fn write(tun: &SyncDevice, gro: &mut GROTable, packets: &mut [Vec<u8>]) {
    if let Err(e) = tun.send_multiple(gro, packets, OFFSET) {
        tracing::trace!(error = %e, "tun write failed");
    }
}
