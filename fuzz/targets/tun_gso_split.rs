//! A TUN read with its virtio-net header (GSO split): what
//! agent/src/dataplane/tun_udp.rs gets from tun-rs `recv_multiple` when the
//! kernel hands over a TCP/UDP super-packet. tun-rs keeps the read path
//! (`handle_virtio_read`) crate-private, so this harness repeats its few
//! checks and its header-length rule (tun-rs 2.8.16, device.rs) and then
//! calls the public `gso_split` with the data plane's buffers (256 of
//! MTU + 64 bytes, offset 0). Input: 10-byte virtio-net header, then the
//! packet. Invariants: no panic; every segment fits its buffer, starts with
//! the packet's IP version, and an IPv4 segment's total length is its size.

use std::cell::RefCell;

use tun_rs::{VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

/// tun_udp.rs: TUN_BATCH buffers of mtu + 64 bytes (MTU 1420 by default).
const BUFS: usize = 256;
const BUF_LEN: usize = 1420 + 64;
const GSO_NONE: u8 = 0;

thread_local! {
    static OUT: RefCell<(Vec<Vec<u8>>, Vec<usize>)> = RefCell::new((vec![vec![0u8; BUF_LEN]; BUFS], vec![0; BUFS]));
}

pub fn run(data: &[u8]) {
    if data.len() <= VIRTIO_NET_HDR_LEN {
        return;
    }
    let Ok(mut hdr) = VirtioNetHdr::decode(&data[..VIRTIO_NET_HDR_LEN]) else { return };
    let mut input = data[VIRTIO_NET_HDR_LEN..].to_vec();
    let len = input.len();
    if hdr.gso_type == GSO_NONE || hdr.gso_size == 0 {
        // One packet, copied as is (or refused): nothing to split.
        return;
    }
    let is_v6 = match input[0] >> 4 {
        4 => false,
        6 => true,
        _ => return,
    };
    // handle_virtio_read does not trust hdr_len: it recomputes it from the transport header.
    let udp = hdr.gso_type & 0x7f == VIRTIO_NET_HDR_GSO_UDP_L4;
    if udp {
        let Some(h) = hdr.csum_start.checked_add(8) else { return };
        hdr.hdr_len = h;
    } else {
        if len <= hdr.csum_start as usize + 12 {
            return;
        }
        let tcp_h_len = ((input[hdr.csum_start as usize + 12] as u16) >> 4) * 4;
        if !(20..=60).contains(&tcp_h_len) {
            return;
        }
        let Some(h) = hdr.csum_start.checked_add(tcp_h_len) else { return };
        hdr.hdr_len = h;
    }
    if len < hdr.hdr_len as usize || hdr.hdr_len < hdr.csum_start {
        return;
    }
    let csum_at = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
    if csum_at + 1 > len {
        return;
    }
    OUT.with_borrow_mut(|(bufs, sizes)| {
        let Ok(n) = gso_split(&mut input, hdr, bufs, sizes, 0, is_v6) else { return };
        assert!(n <= BUFS);
        for (buf, &size) in bufs.iter().zip(sizes.iter()).take(n) {
            assert!(size <= BUF_LEN, "segment larger than its buffer");
            let segment = &buf[..size];
            assert_eq!(segment[0] >> 4, if is_v6 { 6 } else { 4 }, "segment keeps the IP version");
            if !is_v6 {
                assert_eq!(u16::from_be_bytes([segment[2], segment[3]]) as usize, size, "IPv4 total length");
            }
        }
    });
}
