//! The packet path allocates nothing per packet or per batch: with a counting
//! global allocator, encrypting batches on one router, decrypting them
//! (GRO-sized receives) on another and coalescing the decrypted segments for
//! the TUN write (tun-rs's GRO, as the packet threads run it), with the
//! buffers the packet threads use, counts zero allocations once the tunnel
//! is up. No root, no I/O.
// A global allocator is an `unsafe` trait: the one exception to the
// workspace's `unsafe_code = "deny"`, in this test binary only.
#![allow(unsafe_code)]
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::{Cell, RefCell},
    net::{Ipv4Addr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

use boringtun::x25519::{PublicKey, StaticSecret};
use tun_rs::GROTable;
use weave_agent::{
    dataplane::{
        batch::{self, Encrypted},
        router::{DATAGRAM_LEAD, LEAD, Router, Sink},
    },
    plan::netmap::PeerConfig,
};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[derive(Default)]
struct Wire(RefCell<Vec<(SocketAddr, Vec<u8>)>>);

impl Sink for Wire {
    fn to_network(&self, dst: SocketAddr, datagram: &[u8]) {
        self.0.borrow_mut().push((dst, datagram.to_vec()));
    }
}

struct Node {
    router: Router,
    addr: Ipv4Addr,
    endpoint: SocketAddr,
    public: [u8; 32],
    wire: Wire,
}

fn node(n: u8) -> Node {
    let secret = StaticSecret::from([n; 32]);
    Node {
        public: PublicKey::from(&secret).to_bytes(),
        router: Router::new(secret),
        addr: Ipv4Addr::new(10, 47, 0, n),
        endpoint: SocketAddr::from(([192, 0, 2, 10 + n], 6784)),
        wire: Wire::default(),
    }
}

fn config(of: &Node) -> PeerConfig {
    PeerConfig {
        node_id: of.addr.octets()[3] as u64,
        name: format!("h{}", of.addr.octets()[3]),
        public_key: of.public,
        address: of.addr,
        endpoint: Some(of.endpoint),
        endpoints: vec![of.endpoint],
        routes: vec![],
        segments: Default::default(),
    }
}

/// Room for the virtio-net header in front of each packet (as the packet threads leave).
const OFFSET: usize = tun_rs::VIRTIO_NET_HDR_LEN;
/// A workload's full-size packet under a 1,420-byte TUN.
const SEG: usize = 1370;

/// A TUN write buffer as the packet threads size it: room for a whole
/// super-packet behind the header (tun-rs wants twice the offset more), or
/// GRO silently stops short.
fn write_buffer() -> Vec<u8> {
    Vec::with_capacity(2 * LEAD + 65_535)
}

/// `b` holding `packet` behind the header's room, without reallocating.
fn refill(b: &mut Vec<u8>, packet: &[u8]) {
    b.clear();
    b.resize(OFFSET, 0);
    b.extend_from_slice(packet);
}

/// An IPv4 header (20 bytes, DF, TTL 64, checksum left zero) at the start
/// of `p`, for `p.len()` bytes in all.
fn ipv4_header(p: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, id: u8, protocol: u8) {
    let len = p.len();
    p[..12].copy_from_slice(&[0x45, 0, (len >> 8) as u8, len as u8, 0, id, 0x40, 0, 64, protocol, 0, 0]);
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
}

/// Segment `i` of one TCP flow from `src` to `dst`, `len` bytes in all (IPv4
/// and TCP headers of 20 each), ACK set, in sequence. The checksums are
/// left zero (wrong): the receiving GRO trusts what WireGuard authenticated.
fn tcp_segment(src: Ipv4Addr, dst: Ipv4Addr, len: usize, i: usize) -> Vec<u8> {
    let mut p = vec![i as u8; len];
    ipv4_header(&mut p, src, dst, i as u8, 6);
    let seq = 1_000 + (i * (len - 40)) as u32;
    let mut tcp = [0u8; 20];
    tcp[..4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // ports 40000 -> 5201
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&7u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10; // ACK
    tcp[14..16].copy_from_slice(&512u16.to_be_bytes());
    p[20..40].copy_from_slice(&tcp);
    p
}

/// Hands every control message each node sent to the other until both are quiet.
fn handshake(a: &Node, b: &Node) {
    let mut out = vec![0u8; LEAD + 2048];
    for _ in 0..10 {
        let mut moved = false;
        for (from, to) in [(a, b), (b, a)] {
            let msgs: Vec<_> = from.wire.0.borrow_mut().drain(..).collect();
            for (dst, msg) in msgs {
                assert_eq!(dst, to.endpoint);
                moved = true;
                let mut led = vec![0u8; DATAGRAM_LEAD];
                led.extend_from_slice(&msg);
                to.router.decapsulate(&to.router.table(), from.endpoint, &led, &mut out, &to.wire);
            }
        }
        if !moved {
            return;
        }
    }
    panic!("the handshake did not settle");
}

#[test]
fn encrypting_and_decrypting_batches_allocates_nothing() {
    const MTU: usize = 1420;
    const N: usize = 48; // one 64 KB TSO super-packet of MTU-sized segments
    // OpenSSL's assembly whatever `auto` picks on this CPU (ring without
    // AVX-512): the path that is not boringtun's own is the one to count.
    weave_aead::choose(weave_aead::Choice::Assembly);
    let (a, b) = (node(1), node(2));
    a.router.set_peers(&[config(&b)], &a.wire);
    b.router.set_peers(&[config(&a)], &b.wire);
    handshake(&a, &b);

    // The packet threads' buffers, sized once (as in the TUN and UDP threads).
    // Full-size workload packets (1,370 bytes under a 1,420-byte TUN), in
    // buffers an earlier, longer packet left its bytes in: the pad to 1,376
    // must be zeros, not those. Each after the room the AEAD reads (LEAD), as
    // the TUN reads leave it.
    let mut packets: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let mut p = vec![0xdd; LEAD];
            p.extend_from_slice(&tcp_segment(a.addr, b.addr, SEG, i));
            p.resize(LEAD + MTU + 64, 0xee);
            p
        })
        .collect();
    let sizes = vec![SEG; N];
    let stride = batch::stride(MTU);
    let mut buf = vec![0u8; DATAGRAM_LEAD + N * stride];
    let mut out: Vec<Encrypted> = Vec::with_capacity(N);
    let mut rx: Vec<Vec<u8>> = (0..128).map(|_| write_buffer()).collect();
    let least = MTU + 64 + batch::WG_GROWTH;
    let mut gro = GROTable::trusting_checksums();
    let mut coalesced = 0;

    let mut round = |count_from: &mut usize| {
        let table = a.router.table();
        batch::encrypt(&a.router, &table, &mut packets, &sizes, MTU, &mut buf, stride, &mut out);
        assert_eq!(out.len(), N, "every packet encrypted");
        // What one UDP GRO receive returns: the run of equal-size datagrams, end to end.
        let table = b.router.table();
        let mut count = 0;
        batch::group(&out, |first, _, bytes| {
            let e = out[first];
            // With the room in front that the receive leaves (here the
            // previous datagram's tail, or the buffer's own lead).
            let datagrams = &buf[e.start - DATAGRAM_LEAD..e.start + bytes];
            count =
                batch::decrypt(&b.router, &table, a.endpoint, e.ecn, datagrams, e.len, &mut rx, count, least, &b.wire);
        });
        *count_from = count;
        // The TUN write's coalescing: every segment joins the first.
        gro.apply_gro(&mut rx[..count], LEAD, false).expect("gro");
        coalesced = rx[0].len() - LEAD;
    };
    // The first round may set up lazily initialised state (none is expected).
    let mut decrypted = 0;
    round(&mut decrypted);
    assert_eq!(decrypted, N);
    let counted = allocations(|| {
        for _ in 0..20 {
            round(&mut decrypted);
        }
    });
    assert_eq!(decrypted, N, "every datagram decrypted");
    assert_eq!(coalesced, 40 + N * (SEG - 40), "all {N} segments coalesced into one write");
    assert!(out.iter().all(|e| e.len == 16 + 1376 + 16), "padded to 16 on the wire: {:?}", out[0]);
    assert_eq!(&rx[N - 1][LEAD..], &packets[N - 1][LEAD..LEAD + SEG], "the plaintext came back, cut to its IP length");
    let tail = &packets[N - 1][LEAD + 40..LEAD + SEG];
    assert_eq!(&rx[0][LEAD + 40 + (N - 1) * (SEG - 40)..], tail, "its payload ends the write");
    assert!(packets.iter().all(|p| p[..LEAD].iter().all(|&b| b == 0xdd)), "the packets' leads as they were");
    // What was decrypted past the IP length (the pad) is still in the buffer.
    let last = &rx[N - 1];
    assert!(last.capacity() >= last.len() + 6);
    // SAFETY: `decrypt` resized the buffer past these 6 bytes (to `least`)
    // and wrote the decrypted pad there before cutting the length back; they
    // are initialised and within the capacity.
    let pad = unsafe { std::slice::from_raw_parts(last.as_ptr().add(last.len()), 6) };
    assert_eq!(pad, &[0u8; 6], "the pad is zeros, not an earlier packet's bytes");
    assert!(b.wire.0.borrow().is_empty(), "no control traffic in the data path");
    assert_eq!(counted, 0, "allocations in 20 batches of {N} packets each way");

    // The counter itself works: the check above could fail.
    assert!(allocations(|| drop(std::hint::black_box(vec![0u8; 64]))) >= 1);
}

/// The trust is what coalesces them: the release's checking table leaves the
/// same segments (zero checksums) apart, one write each; with their
/// checksums right it coalesces them too.
#[test]
fn gro_skips_the_checksum_check_only_when_told_to_trust() {
    let (src, dst) = (Ipv4Addr::new(10, 47, 0, 1), Ipv4Addr::new(10, 47, 0, 2));
    let batch = |fix: bool| -> Vec<Vec<u8>> {
        (0..8)
            .map(|i| {
                let mut p = tcp_segment(src, dst, SEG, i);
                if fix {
                    fix_checksums(&mut p);
                }
                let mut b = write_buffer();
                refill(&mut b, &p);
                b
            })
            .collect()
    };
    let written = |mut gro: GROTable, mut bufs: Vec<Vec<u8>>| {
        gro.apply_gro(&mut bufs, OFFSET, false).expect("gro");
        bufs[0].len() - OFFSET
    };
    let all = 40 + 8 * (SEG - 40);
    assert_eq!(written(GROTable::trusting_checksums(), batch(false)), all);
    assert_eq!(written(GROTable::new(), batch(false)), SEG, "bad checksums: not coalesced when checked");
    assert_eq!(written(GROTable::new(), batch(true)), all, "good checksums: coalesced when checked");
}

/// A segment that arrives before the one it precedes is prepended (the
/// kernel's GRO rules), also without allocating: the release copied the later
/// segment's payload through a new `Vec` there.
#[test]
fn gro_of_a_reordered_pair_prepends_without_allocating() {
    let (src, dst) = (Ipv4Addr::new(10, 47, 0, 1), Ipv4Addr::new(10, 47, 0, 2));
    // Segments 1, 0, 2: 0 goes in front of 1, then 2 after both.
    let segments: Vec<Vec<u8>> = [1, 0, 2].iter().map(|&i| tcp_segment(src, dst, SEG, i)).collect();
    let mut bufs: Vec<Vec<u8>> = (0..3).map(|_| write_buffer()).collect();
    let mut gro = GROTable::trusting_checksums();
    let mut round = |bufs: &mut Vec<Vec<u8>>| {
        for (b, s) in bufs.iter_mut().zip(&segments) {
            refill(b, s);
        }
        gro.apply_gro(bufs, OFFSET, false).expect("gro");
    };
    round(&mut bufs);
    let counted = allocations(|| {
        for _ in 0..20 {
            round(&mut bufs);
        }
    });
    // The coalesced packet is in the first buffer: 0's payload, 1's, 2's.
    let payload = |i: usize| tcp_segment(src, dst, SEG, i)[40..].to_vec();
    let all = &bufs[0][OFFSET..];
    assert_eq!(all.len(), 40 + 3 * (SEG - 40), "three segments in one write");
    assert_eq!(all[40..SEG], payload(0));
    assert_eq!(all[SEG..2 * SEG - 40], payload(1));
    assert_eq!(all[2 * SEG - 40..], payload(2));
    assert_eq!(counted, 0, "allocations in 20 reordered batches");
}

/// The same trust for UDP (the TUN takes UDP GSO where the kernel has it):
/// datagrams with a wrong checksum coalesce only in a trusting table.
#[test]
fn udp_gro_trusts_checksums_only_when_told_to() {
    const LEN: usize = SEG;
    let batch = || -> Vec<Vec<u8>> {
        (0..8u8)
            .map(|i| {
                let mut p = vec![i; LEN];
                ipv4_header(&mut p, Ipv4Addr::new(10, 47, 0, 1), Ipv4Addr::new(10, 47, 0, 2), i, 17);
                let udp_len = (LEN - 20) as u16;
                p[20..28].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51, (udp_len >> 8) as u8, udp_len as u8, 0x12, 0x34]);
                let mut b = write_buffer();
                refill(&mut b, &p);
                b
            })
            .collect()
    };
    let written = |mut gro: GROTable| {
        let mut bufs = batch();
        gro.apply_gro(&mut bufs, OFFSET, true).expect("gro");
        bufs[0].len() - OFFSET
    };
    assert_eq!(written(GROTable::trusting_checksums()), 28 + 8 * (LEN - 28));
    assert_eq!(written(GROTable::new()), LEN, "a wrong UDP checksum: not coalesced when checked");
}

/// Fills in the IPv4 header and TCP checksums of `p` (20-byte headers).
fn fix_checksums(p: &mut [u8]) {
    fn sum(data: &[u8], mut acc: u32) -> u32 {
        for c in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        acc
    }
    fn fold(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }
    let ip = fold(sum(&p[..20], 0));
    p[10..12].copy_from_slice(&ip.to_be_bytes());
    let mut pseudo = Vec::from(&p[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
    let tcp = fold(sum(&p[20..], sum(&pseudo, 0)));
    p[36..38].copy_from_slice(&tcp.to_be_bytes());
}
