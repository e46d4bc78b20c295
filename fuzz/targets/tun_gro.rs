//! GRO coalescing of decrypted packets before the TUN write
//! (agent/src/dataplane/tun_udp.rs `udp_to_tun`: tun-rs `send_multiple`
//! coalesces with `GROTable` when the TUN has offloads). The packets are
//! what peers sent, so untrusted. The harness builds the batch as the data
//! plane does (virtio-net header room in front, buffers with room for a
//! super-packet) and runs the table's public `apply_gro`, on the table the
//! agent uses (`GROTable::trusting_checksums`: segments are coalesced
//! without their checksums checked, so crafted ones reach every coalescing
//! path) or on the release's checking one. Input: one flag byte (bit 0: UDP
//! GRO on; bit 1: the checking table), then records of a 2-byte length and
//! a packet.
//! Invariants: no panic; every buffer still starts with a decodable header
//! and none grew past a super-packet.

use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN, VirtioNetHdr};

/// tun_udp.rs BATCH.
const BATCH: usize = 128;
const OFFSET: usize = VIRTIO_NET_HDR_LEN;

pub fn run(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let mut packets: Vec<Vec<u8>> = Vec::new();
    while let [hi, lo, tail @ ..] = rest {
        if packets.len() == BATCH {
            break;
        }
        let len = (u16::from_be_bytes([*hi, *lo]) as usize).min(tail.len());
        let mut p = Vec::with_capacity(2 * OFFSET + 65_535);
        p.resize(OFFSET, 0);
        p.extend_from_slice(&tail[..len]);
        packets.push(p);
        rest = &tail[len..];
    }
    if packets.is_empty() {
        return;
    }
    let mut gro = if flags & 2 == 0 { GROTable::trusting_checksums() } else { GROTable::default() };
    if gro.apply_gro(&mut packets, OFFSET, flags & 1 == 1).is_err() {
        return;
    }
    for p in &packets {
        assert!(p.len() <= 2 * OFFSET + 65_535, "a coalesced packet grew past a super-packet");
        if p.len() >= OFFSET {
            VirtioNetHdr::decode(&p[..OFFSET]).expect("header decodes");
        }
    }
}
