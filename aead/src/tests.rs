//! The assembly against ring, which boringtun used and which is tested
//! against RFC 8439's vectors: the same bytes for every length a packet can
//! have here (and the long path), and nothing opened that was changed.
use rand::{Rng, RngCore};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, UnboundKey};

use super::*;

fn ring_seal(key: &[u8; 32], counter: u64, msg: &[u8]) -> Vec<u8> {
    let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).unwrap());
    let mut v = msg.to_vec();
    k.seal_in_place_append_tag(nonce(counter), Aad::empty(), &mut v).unwrap();
    v
}

fn lengths() -> impl Iterator<Item = usize> {
    (0..=1600).chain([2047, 2048, 4080, 4095, 4096, 4097, 9000, 65535])
}

/// Counters at the edges of the nonce's two 32-bit words.
fn counters(rng: &mut impl Rng) -> [u64; 6] {
    [0, 1, u32::MAX as u64, 1 << 32, u64::MAX - 1, rng.random()]
}

/// Held while the choice is changed and a key made.
static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn key_of(choice: Choice, key: &[u8; 32]) -> Key {
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    choose(choice);
    let k = Key::new(key);
    choose(Choice::Auto);
    k
}

/// The assembly whatever this CPU would pick by default (on an AVX2-only
/// CPU `Auto` picks ring; the assembly's AVX2 and SSE paths are tested too).
fn asm_key(key: &[u8; 32]) -> Key {
    let k = key_of(Choice::Assembly, key);
    if assembly_built() {
        assert_eq!(k.implementation(), "openssl-x86_64-asm");
    }
    k
}

#[test]
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn the_assembly_is_built_on_x86_64_linux() {
    // build.rs falls back to ring without perl; CI must not do so quietly.
    assert!(assembly_built(), "weave-aead was built without OpenSSL's assembly");
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    choose(Choice::Assembly);
    assert_eq!(implementation(), "openssl-x86_64-asm");
    choose(Choice::Auto);
}

#[test]
fn auto_picks_the_assembly_only_where_the_cpu_has_avx512() {
    let k = key_of(Choice::Auto, &[3u8; 32]);
    #[cfg(target_arch = "x86_64")]
    let want =
        if assembly_built() && std::arch::is_x86_feature_detected!("avx512f") { "openssl-x86_64-asm" } else { "ring" };
    #[cfg(not(target_arch = "x86_64"))]
    let want = "ring";
    assert_eq!(k.implementation(), want);
}

#[test]
fn seals_and_opens_what_ring_does_at_every_length() {
    let mut rng = rand::rng();
    for len in lengths() {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let k = asm_key(&key);
        let mut msg = vec![0u8; len];
        rng.fill_bytes(&mut msg);
        for counter in if len <= 64 { counters(&mut rng).to_vec() } else { vec![rng.random()] } {
            let want = ring_seal(&key, counter, &msg);
            let mut got = vec![0xa5u8; len + TAG_LEN + 7];
            assert_eq!(k.seal(counter, &msg, &mut got), len + TAG_LEN);
            assert!(got[..len + TAG_LEN] == want[..], "seal differs from ring at {len} bytes, counter {counter}");
            assert!(got[len + TAG_LEN..].iter().all(|&b| b == 0xa5), "seal wrote past its output");
            let mut plain = vec![0u8; len + TAG_LEN];
            assert_eq!(k.open(counter, &want, &mut plain), Ok(len));
            assert!(plain[..len] == msg[..], "open differs at {len} bytes");
        }
    }
}

#[test]
fn a_changed_bit_a_wrong_counter_or_key_is_refused_and_leaves_the_output_alone() {
    let mut rng = rand::rng();
    let key = [9u8; 32];
    let k = asm_key(&key);
    for len in [0usize, 1, 15, 16, 17, 100, 1370, 5000] {
        let mut msg = vec![0u8; len];
        rng.fill_bytes(&mut msg);
        let sealed = ring_seal(&key, 42, &msg);
        let untouched = vec![0x5au8; sealed.len()];
        let refused = |src: &[u8], counter: u64, k: &Key| {
            let mut out = untouched.clone();
            let r = k.open(counter, src, &mut out);
            r.is_err() && (k.implementation() == "ring" || out == untouched)
        };
        for bit in (0..sealed.len() * 8).step_by(if len > 100 { 97 } else { 1 }) {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(refused(&bad, 42, &k), "a flipped bit {bit} of {len} bytes was accepted");
        }
        assert!(refused(&sealed, 43, &k), "opened under another counter");
        assert!(refused(&sealed, 42, &asm_key(&[8u8; 32])), "opened under another key");
        assert!(refused(&sealed[..sealed.len() - 1], 42, &k), "opened a truncated message");
    }
    let mut out = [0u8; 32];
    assert_eq!(k.open(0, &[0u8; 15], &mut out), Err(Error), "shorter than a tag");
}

#[test]
fn ring_is_used_when_chosen() {
    let k = key_of(Choice::Ring, &[1u8; 32]);
    assert_eq!(k.implementation(), "ring");
    let mut out = [0u8; 64];
    assert_eq!(k.seal(5, b"hello", &mut out), 5 + TAG_LEN);
    assert_eq!(out[..5 + TAG_LEN], ring_seal(&[1u8; 32], 5, b"hello")[..]);
    let _g = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(Key::new(&[1u8; 32]).implementation(), implementation());
}

/// `seal_led` and `open_led` give what `seal` and `open` give, for both
/// implementations and every length, and leave both leads as they were.
#[test]
fn with_a_lead_the_same_bytes_and_the_lead_left_alone() {
    let mut rng = rand::rng();
    for choice in [Choice::Assembly, Choice::Ring] {
        for len in lengths().filter(|&l| l <= 1600 || l == 9000) {
            let mut key = [0u8; 32];
            rng.fill_bytes(&mut key);
            let k = key_of(choice, &key);
            let counter = rng.random();
            let mut src = vec![0u8; LEAD + len];
            rng.fill_bytes(&mut src);
            let src_lead = src[..LEAD].to_vec();
            let mut dst = vec![0u8; LEAD + len + TAG_LEN + 7];
            rng.fill_bytes(&mut dst);
            let (dst_lead, dst_tail) = (dst[..LEAD].to_vec(), dst[LEAD + len + TAG_LEN..].to_vec());
            assert_eq!(k.seal_led(counter, &src, &mut dst), len + TAG_LEN);
            let want = ring_seal(&key, counter, &src[LEAD..]);
            assert!(dst[LEAD..LEAD + len + TAG_LEN] == want[..], "{choice:?}: seal_led differs at {len} bytes");
            assert_eq!(src[..LEAD], src_lead[..], "{choice:?}: the source's lead changed");
            assert_eq!(dst[..LEAD], dst_lead[..], "{choice:?}: the destination's lead was not put back");
            assert_eq!(dst[LEAD + len + TAG_LEN..], dst_tail[..], "{choice:?}: seal_led wrote past its output");

            let sealed = dst[..LEAD + len + TAG_LEN].to_vec();
            let mut plain = vec![0u8; LEAD + len + TAG_LEN];
            rng.fill_bytes(&mut plain);
            let plain_lead = plain[..LEAD].to_vec();
            assert_eq!(k.open_led(counter, &sealed, &mut plain), Ok(len));
            assert_eq!(plain[LEAD..LEAD + len], src[LEAD..], "{choice:?}: open_led differs at {len} bytes");
            assert_eq!(plain[..LEAD], plain_lead[..], "{choice:?}: open_led's lead was not put back");

            // A changed bit: refused, the lead put back, nothing of the
            // unauthenticated plaintext left (assembly: zeroed).
            let mut bad = sealed.clone();
            let at = LEAD + rng.random_range(0..len + TAG_LEN);
            bad[at] ^= 1 << rng.random_range(0..8);
            let mut out = vec![0x5au8; LEAD + len + TAG_LEN];
            assert_eq!(k.open_led(counter, &bad, &mut out), Err(Error), "{choice:?}: a flipped bit at {at} passed");
            assert!(out[..LEAD].iter().all(|&b| b == 0x5a), "{choice:?}: lead not put back after a refusal");
            assert!(out[LEAD..LEAD + len].iter().all(|&b| b == 0), "{choice:?}: plaintext of a forgery left behind");
            // A different lead in front of the same message changes nothing.
            let mut other = sealed.clone();
            other[..LEAD].fill(0xff);
            let mut again = vec![0u8; LEAD + len + TAG_LEN];
            assert_eq!(k.open_led(counter, &other, &mut again), Ok(len));
            assert_eq!(again[LEAD..LEAD + len], src[LEAD..]);
        }
    }
    let k = asm_key(&[2u8; 32]);
    assert_eq!(k.open_led(0, &[0u8; LEAD + TAG_LEN - 1], &mut [0u8; 128]), Err(Error), "shorter than lead and tag");
}

/// Seals `msg` (with a random lead) under `counter` by `seal_led`, opens it
/// back by `open_led`, and checks both against ring.
fn led_round_trip(k: &Key, key: &[u8; 32], counter: u64, msg: &[u8]) {
    let len = msg.len();
    let mut src = vec![0x11u8; LEAD];
    src.extend_from_slice(msg);
    let mut dst = vec![0x22u8; LEAD + len + TAG_LEN];
    assert_eq!(k.seal_led(counter, &src, &mut dst), len + TAG_LEN);
    assert!(dst[LEAD..] == ring_seal(key, counter, msg)[..], "seal_led differs at {len} bytes, counter {counter}");
    let mut plain = vec![0x33u8; LEAD + len + TAG_LEN];
    assert_eq!(k.open_led(counter, &dst, &mut plain), Ok(len), "open_led refused {len} bytes, counter {counter}");
    assert!(plain[LEAD..LEAD + len] == msg[..], "open_led differs at {len} bytes, counter {counter}");
}

/// The blocks past the first 16 of a message are kept from the previous
/// counter's call (crate::ahead): runs of consecutive counters, lengths
/// that change from one message to the next, counters repeated, skipped
/// and going back, two keys taking turns on one thread, a forgery that
/// takes the kept blocks before the real message, and threads sharing a
/// key: every message what ring makes of it.
#[test]
fn keystream_kept_ahead_gives_what_ring_does() {
    #[cfg(weave_aead_asm)]
    if !crate::ahead::available() {
        eprintln!("this CPU lacks AVX-512F/BW: nothing is kept ahead, only the plain path is tested");
    }
    let mut rng = rand::rng();
    let (mut key_a, mut key_b) = ([0u8; 32], [0u8; 32]);
    rng.fill_bytes(&mut key_a);
    rng.fill_bytes(&mut key_b);
    let (a, b) = (asm_key(&key_a), asm_key(&key_b));
    let mut msg = vec![0u8; 1600];
    rng.fill_bytes(&mut msg);
    // Around the ahead path's edges (a lead and 960 bytes = 16 blocks,
    // 1,472 = 24) and inside it, under consecutive counters.
    let base: u64 = rng.random_range(0..u64::MAX / 2);
    for (i, len) in (940..=1500).enumerate() {
        led_round_trip(&a, &key_a, base + i as u64, &msg[..len]);
    }
    // Every counter twice in a row (seal, open, seal, open), the length
    // changing each time.
    for i in 0..200u64 {
        let len = rng.random_range(961..=1472);
        led_round_trip(&a, &key_a, base + 10_000 + i / 2, &msg[..len]);
    }
    // Repeated, skipped and backward counters; two keys in turn.
    for c in [5u64, 6, 6, 7, 9, 8, 9, 10, 10, 11, u32::MAX as u64, 1 << 32, u64::MAX - 1, u64::MAX, 0] {
        led_round_trip(&a, &key_a, c, &msg[..1376]);
        led_round_trip(&b, &key_b, c, &msg[..1300]);
        led_round_trip(&a, &key_a, c.wrapping_add(1), &msg[..1100]);
    }
    // A forgery under the next counter takes the kept blocks; the real
    // message still opens (the blocks are made again).
    let seal = |k: &Key, c: u64, m: &[u8]| {
        let mut src = vec![0u8; LEAD];
        src.extend_from_slice(m);
        let mut dst = vec![0u8; LEAD + m.len() + TAG_LEN];
        k.seal_led(c, &src, &mut dst);
        dst
    };
    let real = seal(&a, 501, &msg[..1376]);
    let _ = seal(&a, 500, &msg[..1376]);
    let mut forged = real.clone();
    forged[LEAD + 1200] ^= 1;
    let mut out = vec![0x77u8; real.len()];
    assert_eq!(a.open_led(501, &forged, &mut out), Err(Error));
    assert!(out[LEAD..LEAD + 1376].iter().all(|&x| x == 0), "a forgery's plaintext was left");
    assert_eq!(a.open_led(501, &real, &mut out), Ok(1376));
    assert_eq!(out[LEAD..LEAD + 1376], msg[..1376]);
    // Opened in order, all sealed first (how a receiver meets them): the
    // open path's kept blocks.
    let lens: Vec<usize> = (0..64).map(|_| rng.random_range(961..=1472)).collect();
    let sealed: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &l)| seal(&b, 700 + i as u64, &msg[..l])).collect();
    for (i, (m, &l)) in sealed.iter().zip(&lens).enumerate() {
        let mut out = vec![0u8; m.len()];
        assert_eq!(b.open_led(700 + i as u64, m, &mut out), Ok(l));
        assert!(out[LEAD..LEAD + l] == msg[..l], "open_led differs at {l} bytes, counter {}", 700 + i);
    }
    // Threads with one key, each its own counters, interleaved.
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (a, key_a, msg) = (&a, &key_a, &msg);
            s.spawn(move || {
                for i in 0..300u64 {
                    led_round_trip(a, key_a, 1_000 * t + i, &msg[..1376]);
                }
            });
        }
    });
}
