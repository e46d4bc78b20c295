//! Adaptive waiting for a queue's two packet threads (TUN -> UDP and
//! UDP -> TUN).
//!
//! A sleeping thread costs a wake-up when its next packet arrives: 40-70 µs
//! on a virtual machine whose idle CPU has halted, four of them per round
//! trip through two agents. So after a packet moved, both threads of the
//! queue keep polling their descriptor (non-blocking reads with a yield in
//! between) for the spin window; a thread that was asleep when its partner
//! moved a packet is woken to poll as well, because the answer to what the
//! partner just sent comes back on its side. When the window has passed
//! without a packet, a thread sleeps in `poll` on its descriptor and its
//! eventfd: an agent with no traffic does not spin.
use std::{
    io,
    os::fd::{AsFd, BorrowedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::eventfd::{EfdFlags, EventFd},
};

use super::cpu_latency::CpuLatencyHold;

/// The spin window by default: none. An interleaved A/B on a quiet 2-core
/// VM (bench/ROUNDS.md, "Spinning, measured on a quiet machine") found a 500 µs
/// window no faster for ping (0.317 vs 0.328 ms median average) and worse
/// for TCP (4.77 vs 5.16 Gbit/s, 2.93 vs 2.55 CPU s per GB): the yielding
/// threads take CPU the workloads and the other agent need. A host with
/// idle cores may still gain from `--spin-us` (a window longer than a round
/// trip through two agents, ~0.1-0.3 ms).
pub const DEFAULT_SPIN: Duration = Duration::ZERO;

/// Which thread of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Tun = 0,
    Udp = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Tun => Side::Udp,
            Side::Udp => Side::Tun,
        }
    }
}

struct Sleeper {
    sleeping: AtomicBool,
    event: EventFd,
}

/// The shared state of one queue's thread pair.
pub struct Pacer {
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last packet either thread moved
    /// (0: none yet).
    last: AtomicU64,
    window: u64,
    sides: [Sleeper; 2],
    /// The agent's CPU-latency request, kept while packets move.
    hold: Arc<CpuLatencyHold>,
}

/// What a wait ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Woke {
    /// Spun once (still inside the window) or the descriptor became readable:
    /// read again.
    Ready,
    /// Slept the whole timeout or was woken by the partner or a stop: check
    /// for stop, then read again.
    Idle,
}

/// Which of a joint thread's descriptors to read after a wait: the ones
/// `poll` found readable, or both after a spin, a wake-up or a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readable {
    pub tun: bool,
    pub udp: bool,
}

impl Readable {
    pub const BOTH: Readable = Readable { tun: true, udp: true };
}

impl Pacer {
    /// `window` zero: never spin (every wait sleeps). `hold`: the agent's
    /// CPU-latency request, renewed whenever a packet moves.
    pub fn new(window: Duration, hold: Arc<CpuLatencyHold>) -> io::Result<Self> {
        let sleeper = || -> io::Result<Sleeper> {
            let event = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
            Ok(Sleeper { sleeping: AtomicBool::new(false), event })
        };
        Ok(Self {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            sides: [sleeper()?, sleeper()?],
            hold,
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a packet moved within the window.
    fn hot(&self) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        self.window > 0 && last > 0 && self.now().saturating_sub(last) < self.window
    }

    /// `me` moved packets: both threads poll for another window, and the
    /// partner, if asleep, is woken to do so.
    pub fn moved(&self, me: Side) {
        if self.window == 0 {
            return;
        }
        self.last.store(self.now().max(1), Ordering::Relaxed);
        let other = &self.sides[me.other() as usize];
        if other.sleeping.load(Ordering::Relaxed) && other.sleeping.swap(false, Ordering::AcqRel) {
            let _ = other.event.write(1);
        }
    }

    /// Packets of real traffic moved: encrypted for a peer (a local
    /// workload's or the host's), or decrypted from one. The CPU-latency request
    /// holds for another window. Not for datagrams that decrypt to nothing:
    /// junk from anyone on the underlay must not keep the host's CPUs polling.
    pub fn carried(&self) {
        self.hold.touch();
    }

    /// Wakes both threads (to notice a stop request).
    pub fn wake_all(&self) {
        for s in &self.sides {
            let _ = s.event.write(1);
        }
    }

    /// A non-blocking read of `me` found nothing. Inside the window this
    /// yields the CPU once and returns; outside it sleeps until `fd` is
    /// readable, the partner wakes it, or `timeout` passes.
    pub fn wait(&self, me: Side, fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<Woke> {
        self.wait_on(me, &[fd], timeout).map(|(woke, _)| woke)
    }

    /// For a thread that serves both sides of the queue: `tun` and `udp`
    /// were read empty (or not read: `poll` had not found them readable).
    /// Spins or sleeps as [`Pacer::wait`], until either is readable; and
    /// which of them to read: only the one that woke it (a read that would
    /// find nothing is a system call on the packet's way), both after a
    /// spin, a wake-up or a timeout.
    pub fn wait_both(
        &self,
        tun: BorrowedFd<'_>,
        udp: BorrowedFd<'_>,
        timeout: Duration,
    ) -> io::Result<(Woke, Readable)> {
        self.wait_on(Side::Tun, &[tun, udp], timeout).map(|(woke, ready)| {
            let readable = match woke {
                Woke::Ready if ready != 0 => Readable { tun: ready & 1 != 0, udp: ready & 2 != 0 },
                _ => Readable::BOTH,
            };
            (woke, readable)
        })
    }

    /// The wait, and a bit per descriptor of `fds` that `poll` found
    /// readable (none after a spin).
    fn wait_on(&self, me: Side, fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<(Woke, u8)> {
        if self.hot() {
            thread::yield_now();
            return Ok((Woke::Ready, 0));
        }
        // A held CPU-latency request is relaxed when its window passes: the
        // sleep ends then (the next wait relaxes it).
        let timeout = self.hold.remaining().map_or(timeout, |left| timeout.min(left));
        let own = &self.sides[me as usize];
        own.sleeping.store(true, Ordering::SeqCst);
        let ms = u16::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        let mut polled_fds = [own.event.as_fd(); 3];
        polled_fds[1..=fds.len()].copy_from_slice(fds);
        let mut polls: [PollFd<'_>; 3] = polled_fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
        let polls = &mut polls[..=fds.len()];
        let polled = poll(polls, PollTimeout::from(ms));
        own.sleeping.store(false, Ordering::Relaxed);
        let ready = polls[1..]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
            .fold(0u8, |bits, (i, _)| bits | 1 << i);
        if polls[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
            // Drained: the counter goes back to zero (non-blocking, never waits).
            let _ = own.event.read();
        }
        match polled {
            Ok(_) if ready != 0 => Ok((Woke::Ready, ready)),
            Ok(_) | Err(Errno::EINTR) => Ok((Woke::Idle, 0)),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    fn off() -> Arc<CpuLatencyHold> {
        Arc::new(CpuLatencyHold::off())
    }

    #[test]
    fn a_cold_pair_sleeps_until_the_descriptor_is_readable_or_the_timeout() {
        let pacer = Pacer::new(Duration::from_micros(500), off()).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = Instant::now();
        assert_eq!(pacer.wait(Side::Udp, sock.as_fd(), Duration::from_millis(50)).unwrap(), Woke::Idle);
        assert!(t.elapsed() >= Duration::from_millis(40), "slept the timeout");
        sock.send_to(b"x", sock.local_addr().unwrap()).unwrap();
        assert_eq!(pacer.wait(Side::Udp, sock.as_fd(), Duration::from_secs(5)).unwrap(), Woke::Ready);
    }

    #[test]
    fn after_a_packet_both_sides_spin_and_a_sleeping_partner_is_woken() {
        let pacer = Arc::new(Pacer::new(Duration::from_secs(30), off()).unwrap());
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Cold: the TUN side sleeps; the UDP side moving a packet wakes it.
        let sleeper = {
            let (pacer, sock) = (pacer.clone(), sock.try_clone().unwrap());
            thread::spawn(move || {
                let t = Instant::now();
                let woke = pacer.wait(Side::Tun, sock.as_fd(), Duration::from_secs(20)).unwrap();
                (woke, t.elapsed())
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pacer.sides[Side::Tun as usize].sleeping.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the cold side went to sleep");
            thread::yield_now();
        }
        pacer.moved(Side::Udp);
        let (woke, took) = sleeper.join().unwrap();
        assert_eq!(woke, Woke::Idle);
        assert!(took < Duration::from_secs(10), "woken, not timed out");
        // Hot: a wait returns at once, on either side, with nothing to read.
        for side in [Side::Tun, Side::Udp] {
            let t = Instant::now();
            assert_eq!(pacer.wait(side, sock.as_fd(), Duration::from_secs(20)).unwrap(), Woke::Ready);
            assert!(t.elapsed() < Duration::from_secs(10));
        }
    }

    #[test]
    fn one_thread_serving_both_sides_wakes_for_either() {
        let pacer = Pacer::new(Duration::ZERO, off()).unwrap();
        let (tun, udp) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        let t = Instant::now();
        assert_eq!(
            pacer.wait_both(tun.as_fd(), udp.as_fd(), Duration::from_millis(50)).unwrap(),
            (Woke::Idle, Readable::BOTH),
            "after a timeout both are read"
        );
        assert!(t.elapsed() >= Duration::from_millis(40), "slept the timeout");
        let only = |tun, udp| (Woke::Ready, Readable { tun, udp });
        for (ready, expected) in [(&udp, only(false, true)), (&tun, only(true, false))] {
            ready.send_to(b"x", ready.local_addr().unwrap()).unwrap();
            assert_eq!(pacer.wait_both(tun.as_fd(), udp.as_fd(), Duration::from_secs(5)).unwrap(), expected);
            ready.recv(&mut [0u8; 4]).unwrap();
        }
        for ready in [&udp, &tun] {
            ready.send_to(b"x", ready.local_addr().unwrap()).unwrap();
        }
        assert_eq!(pacer.wait_both(tun.as_fd(), udp.as_fd(), Duration::from_secs(5)).unwrap(), only(true, true));
        for ready in [&udp, &tun] {
            ready.recv(&mut [0u8; 4]).unwrap();
        }
        // A stop request wakes it too.
        let pacer = Arc::new(pacer);
        let waiter = {
            let (pacer, tun, udp) = (pacer.clone(), tun.try_clone().unwrap(), udp.try_clone().unwrap());
            thread::spawn(move || pacer.wait_both(tun.as_fd(), udp.as_fd(), Duration::from_secs(20)).unwrap().0)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pacer.sides[Side::Tun as usize].sleeping.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "went to sleep");
            thread::yield_now();
        }
        let t = Instant::now();
        pacer.wake_all();
        assert_eq!(waiter.join().unwrap(), Woke::Idle);
        assert!(t.elapsed() < Duration::from_secs(10), "woken, not timed out");
    }

    #[test]
    fn a_held_cpu_latency_request_ends_the_sleep_and_is_relaxed_after_its_window() {
        let (_dir, path, file) = crate::dataplane::cpu_latency::tests::request_file(true);
        let hold = Arc::new(CpuLatencyHold::with_file(Some(file), Duration::from_millis(100)));
        let pacer = Pacer::new(Duration::ZERO, hold.clone()).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        pacer.moved(Side::Udp);
        assert!(!hold.status().held, "a datagram read is not yet traffic");
        pacer.carried();
        assert!(hold.status().held, "a packet carried makes the request");
        // Asleep with a 20 s timeout: back when the window (100 ms) has passed.
        let t = Instant::now();
        assert_eq!(pacer.wait(Side::Udp, sock.as_fd(), Duration::from_secs(20)).unwrap(), Woke::Idle);
        let slept = t.elapsed();
        assert!(slept >= Duration::from_millis(80) && slept < Duration::from_secs(10), "{slept:?}");
        assert!(hold.status().held, "relaxed by the next wait, not before");
        assert_eq!(pacer.wait(Side::Udp, sock.as_fd(), Duration::from_millis(30)).unwrap(), Woke::Idle);
        assert!(!hold.status().held, "relaxed");
        assert_eq!(std::fs::read(&path).unwrap().len(), 8, "made once, relaxed once");
    }

    #[test]
    fn a_zero_window_never_spins() {
        let pacer = Pacer::new(Duration::ZERO, off()).unwrap();
        pacer.moved(Side::Tun);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(pacer.wait(Side::Udp, sock.as_fd(), Duration::from_millis(20)).unwrap(), Woke::Idle);
    }
}
