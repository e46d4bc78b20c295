//! Seals N packets of each given size, each with its own nonce (a data
//! plane's pattern: one AEAD call per packet), with ring 0.17 (in place),
//! OpenSSL's EVP (the key set once, the nonce set per packet, in place) and
//! weave-aead (source to destination, as boringtun calls it); then opens N
//! packets with ring (copy in, open in place: what boringtun 0.7.1 did) and
//! weave-aead. Prints the median of five rounds per size, in GB/s and ns per
//! packet.
use std::time::Instant;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

const PACKETS: usize = 1_000_000;
const ROUNDS: usize = 5;

fn nonce(i: usize) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&(i as u64).to_le_bytes());
    n
}

fn ring_round(key: &[u8; 32], buf: &mut [u8], len: usize) -> f64 {
    let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a key"));
    let t = Instant::now();
    for i in 0..PACKETS {
        let (data, tag_out) = buf.split_at_mut(len);
        let tag = k.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce(i)), Aad::empty(), data);
        tag_out[..16].copy_from_slice(tag.expect("sealed").as_ref());
    }
    t.elapsed().as_secs_f64()
}

fn openssl_round(key: &[u8; 32], buf: &mut [u8], len: usize) -> f64 {
    use openssl_sys::*;
    // SAFETY: one context, used on this thread only; every pointer is into
    // `buf` (len bytes of data, 16 of tag room after them) or a local.
    unsafe {
        let c = EVP_CIPHER_CTX_new();
        assert!(!c.is_null());
        let null = std::ptr::null_mut();
        assert_eq!(EVP_CipherInit_ex(c, EVP_chacha20_poly1305(), null, key.as_ptr(), std::ptr::null(), 1), 1);
        let t = Instant::now();
        for i in 0..PACKETS {
            let n = nonce(i);
            let mut out = 0;
            assert_eq!(EVP_CipherInit_ex(c, std::ptr::null(), null, std::ptr::null(), n.as_ptr(), 1), 1);
            assert_eq!(EVP_CipherUpdate(c, buf.as_mut_ptr(), &mut out, buf.as_ptr(), len as i32), 1);
            assert_eq!(EVP_CipherFinal(c, buf.as_mut_ptr().add(len), &mut out), 1);
            // EVP_CTRL_AEAD_GET_TAG
            assert_eq!(EVP_CIPHER_CTX_ctrl(c, 0x10, 16, buf.as_mut_ptr().add(len).cast()), 1);
        }
        let secs = t.elapsed().as_secs_f64();
        EVP_CIPHER_CTX_free(c);
        secs
    }
}

fn weave_round(key: &[u8; 32], buf: &mut [u8], len: usize) -> f64 {
    let k = weave_aead::Key::new(key);
    let src = buf[..len].to_vec();
    let t = Instant::now();
    for i in 0..PACKETS {
        k.seal(i as u64, &src, buf);
    }
    t.elapsed().as_secs_f64()
}

fn weave_led_round(key: &[u8; 32], len: usize) -> f64 {
    let k = weave_aead::Key::new(key);
    let src = vec![3u8; weave_aead::LEAD + len];
    let mut buf = vec![0u8; weave_aead::LEAD + len + 16];
    let t = Instant::now();
    for i in 0..PACKETS {
        k.seal_led(i as u64, &src, &mut buf);
    }
    t.elapsed().as_secs_f64()
}

fn weave_led_open_round(key: &[u8; 32], len: usize) -> f64 {
    let k = weave_aead::Key::new(key);
    let mut sealed = vec![0u8; weave_aead::LEAD + len + 16];
    k.seal_led(1, &vec![3u8; weave_aead::LEAD + len], &mut sealed);
    let mut buf = vec![0u8; sealed.len()];
    let t = Instant::now();
    for _ in 0..PACKETS {
        k.open_led(1, &sealed, &mut buf).expect("opened");
    }
    t.elapsed().as_secs_f64()
}

/// Opens a run of messages under consecutive counters (one peer's data
/// arriving in order), 1,024 of them sealed beforehand, PACKETS times over.
fn weave_led_open_run_round(key: &[u8; 32], len: usize) -> f64 {
    const RUN: usize = 1024;
    let k = weave_aead::Key::new(key);
    let size = weave_aead::LEAD + len + 16;
    let mut sealed = vec![0u8; RUN * size];
    for (i, m) in sealed.chunks_exact_mut(size).enumerate() {
        k.seal_led(i as u64, &vec![3u8; weave_aead::LEAD + len], m);
    }
    let mut buf = vec![0u8; size];
    let t = Instant::now();
    for i in 0..PACKETS {
        let at = (i % RUN) * size;
        k.open_led((i % RUN) as u64, &sealed[at..at + size], &mut buf).expect("opened");
    }
    t.elapsed().as_secs_f64()
}

fn ring_open_round(key: &[u8; 32], len: usize) -> f64 {
    let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a key"));
    let mut sealed = vec![3u8; len];
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce(1)), Aad::empty(), &mut sealed).expect("sealed");
    let mut buf = vec![0u8; sealed.len()];
    let t = Instant::now();
    for _ in 0..PACKETS {
        buf.copy_from_slice(&sealed);
        k.open_in_place(Nonce::assume_unique_for_key(nonce(1)), Aad::empty(), &mut buf).expect("opened");
    }
    t.elapsed().as_secs_f64()
}

fn weave_open_round(key: &[u8; 32], len: usize) -> f64 {
    let k = weave_aead::Key::new(key);
    let mut sealed = vec![0u8; len + 16];
    k.seal(1, &vec![3u8; len], &mut sealed);
    let mut buf = vec![0u8; sealed.len()];
    let t = Instant::now();
    for _ in 0..PACKETS {
        k.open(1, &sealed, &mut buf).expect("opened");
    }
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().expect("a packet size")).collect();
    let sizes = if sizes.is_empty() { vec![1420] } else { sizes };
    openssl::init();
    // weave-aead's assembly whatever `auto` would pick on this CPU (ring
    // without AVX-512): ring is measured in its own column.
    weave_aead::choose(weave_aead::Choice::Assembly);
    let key = [7u8; 32];
    for len in sizes {
        let mut buf = vec![3u8; len + 16];
        let (mut r, mut o, mut w, mut ro, mut wo) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut wl, mut wlo, mut wlr) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            r.push(ring_round(&key, &mut buf, len));
            o.push(openssl_round(&key, &mut buf, len));
            w.push(weave_round(&key, &mut buf, len));
            ro.push(ring_open_round(&key, len));
            wo.push(weave_open_round(&key, len));
            wl.push(weave_led_round(&key, len));
            wlo.push(weave_led_open_round(&key, len));
            wlr.push(weave_led_open_run_round(&key, len));
        }
        let gbps = |secs: f64| (PACKETS * len) as f64 / secs / 1e9;
        let ns = |secs: f64| secs * 1e9 / PACKETS as f64;
        let (r, o, w) = (median(r), median(o), median(w));
        println!(
            "{len:>6} bytes: ring {:.2} GB/s ({:.0} ns/packet), OpenSSL EVP {:.2} GB/s ({:.0} ns/packet), \
             weave-aead ({}) {:.2} GB/s ({:.0} ns/packet); EVP/ring {:.2}, weave-aead/ring {:.2}",
            gbps(r),
            ns(r),
            gbps(o),
            ns(o),
            weave_aead::implementation(),
            gbps(w),
            ns(w),
            r / o,
            r / w
        );
        let (wl, wlo, wlr) = (median(wl), median(wlo), median(wlr));
        println!(
            "{len:>6} bytes with a lead (no scratch): seal {:.0} ns/packet (consecutive counters), \
             open {:.0} ns/packet (one counter), {:.0} ns/packet (consecutive counters)",
            ns(wl),
            ns(wlo),
            ns(wlr)
        );
        let (ro, wo) = (median(ro), median(wo));
        println!(
            "{len:>6} bytes open: ring {:.2} GB/s ({:.0} ns/packet), weave-aead {:.2} GB/s ({:.0} ns/packet); \
             weave-aead/ring {:.2}",
            gbps(ro),
            ns(ro),
            gbps(wo),
            ns(wo),
            ro / wo
        );
    }
}
