//! The first transport: a TUN device holding the node address and one UDP
//! socket, with the [`Router`] between them. Two blocking threads move
//! packets (TUN -> UDP and UDP -> TUN), a third runs the timers.
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
use nix::sys::socket::{setsockopt, sockopt};
use tun_rs::{DeviceBuilder, InterruptEvent, SyncDevice};

use super::{
    PeerStatus, Transport,
    router::{BUF_SIZE, Router, Sink},
};
use crate::netmap::PeerConfig;

const TICK: Duration = Duration::from_millis(250);
/// UDP socket buffers, each way.
const BUFFER_BYTES: usize = 4 << 20;

struct Io {
    tun: SyncDevice,
    udp: UdpSocket,
}

impl Sink for Io {
    fn to_network(&self, dst: SocketAddr, datagram: &[u8]) {
        if let Err(e) = self.udp.send_to(datagram, dst) {
            tracing::trace!(%dst, error = %e, "udp send failed");
        }
    }

    fn to_tunnel(&self, packet: &[u8]) {
        if let Err(e) = self.tun.send(packet) {
            tracing::trace!(error = %e, "tun write failed");
        }
    }
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
        let tun = DeviceBuilder::new().name(name).mtu(mtu).enable(false).build_sync()?;
        let udp = UdpSocket::bind(listen)?;
        // Bursts of a TCP window arrive faster than one thread decrypts them;
        // the default buffers drop most of such a burst. As root the limit
        // (net.core.rmem_max) does not apply; otherwise keep the default.
        let _ = setsockopt(&udp, sockopt::RcvBufForce, &BUFFER_BYTES);
        let _ = setsockopt(&udp, sockopt::SndBufForce, &BUFFER_BYTES);
        // The receive thread wakes up this often to notice a stop request.
        udp.set_read_timeout(Some(TICK))?;
        let io = Arc::new(Io { tun, udp });
        let router = Arc::new(Router::new(secret));
        let stop = Arc::new(AtomicBool::new(false));
        let interrupt = Arc::new(InterruptEvent::new()?);
        let mut threads = Vec::new();

        let (r, i, s, intr) = (router.clone(), io.clone(), stop.clone(), interrupt.clone());
        threads.push(thread::Builder::new().name("wg-tun".into()).spawn(move || {
            let (mut packet, mut buf) = (vec![0u8; BUF_SIZE], vec![0u8; BUF_SIZE]);
            while !s.load(Ordering::Relaxed) {
                match i.tun.recv_intr(&mut packet, &intr) {
                    Ok(n) => r.from_tunnel(&packet[..n], &mut buf, &*i),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "tun read failed");
                        thread::sleep(TICK);
                    }
                }
            }
        })?);

        let (r, i, s) = (router.clone(), io.clone(), stop.clone());
        threads.push(thread::Builder::new().name("wg-udp".into()).spawn(move || {
            let (mut datagram, mut buf) = (vec![0u8; BUF_SIZE], vec![0u8; BUF_SIZE]);
            while !s.load(Ordering::Relaxed) {
                match i.udp.recv_from(&mut datagram) {
                    Ok((n, src)) => r.from_network(src, &datagram[..n], &mut buf, &*i),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => tracing::trace!(error = %e, "udp receive failed"),
                }
            }
        })?);

        let (r, i, s) = (router.clone(), io.clone(), stop.clone());
        threads.push(thread::Builder::new().name("wg-timers".into()).spawn(move || {
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
        })?);

        Ok(Self { router, io, stop, interrupt, threads })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.udp.local_addr()
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
