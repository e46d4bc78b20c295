//! The ChaCha20 blocks past the first 16 of a message, two messages to one
//! AVX-512 iteration. OpenSSL's 16-block code computes a whole iteration
//! (1,024 bytes of keystream) for any tail: a full-size data message and
//! its 64-byte lead (1,440 bytes, 22.5 blocks) cost two iterations, the
//! second mostly wasted (bench/ROUNDS.md, round sixteen). Here one
//! iteration computes blocks 16-23 of message `counter` (the tail it needs
//! now) and blocks 16-23 of message `counter + 1`, which the thread keeps
//! for the next call with the same key: a run of full-size messages under
//! consecutive counters, as one peer's traffic is sealed and opened, costs
//! one and a half iterations a message instead of two.
//!
//! The keystream kept is what ChaCha20 gives for that key, counter and
//! block whenever it is computed, so using it or computing it again is the
//! same; it is used at most once and never leaves the thread. It is wiped
//! when used, when replaced, when its key is dropped on this thread
//! ([`forget`]) and when the thread exits; an entry whose key was dropped
//! on another thread lasts until this thread replaces it (its next miss
//! with two other keys) or exits. A kept entry names its key by a number
//! no other key of this process gets ([`next_id`]).
use std::{
    arch::x86_64::*,
    cell::RefCell,
    sync::atomic::{AtomicU64, Ordering},
};

/// The first block this module computes; the bytes before it (the lead and
/// 960 of the message) go through OpenSSL's code in one call.
pub(crate) const FROM: usize = 16 * 64;
/// The most tail bytes one call covers: 8 blocks.
pub(crate) const MAX_TAIL: usize = 8 * 64;

static IDS: AtomicU64 = AtomicU64::new(1);

/// A number for a new key, never 0 (an empty entry) and never reused.
pub(crate) fn next_id() -> u64 {
    IDS.fetch_add(1, Ordering::Relaxed)
}

/// Whether this CPU runs the AVX-512 code (checked once by std).
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
}

struct Kept {
    id: u64,
    counter: u64,
    ks: [u8; MAX_TAIL],
}

impl Kept {
    /// Wipes the keystream (`fill` then `black_box`: stores the optimiser
    /// keeps, without a volatile store per byte on the fast path).
    fn clear(&mut self) {
        self.id = 0;
        self.ks.fill(0);
        std::hint::black_box(&self.ks);
    }
}

/// Two entries: a thread that seals for one peer and opens for it (or
/// serves two peers) keeps one for each key.
struct Ahead {
    slots: [Kept; 2],
    /// The slot the next miss replaces.
    next: usize,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.slots.iter_mut().for_each(Kept::clear);
    }
}

/// Wipes this thread's entry for key `id` (its key is being dropped).
pub(crate) fn forget(id: u64) {
    let _ = AHEAD.try_with(|a| {
        if let Ok(mut a) = a.try_borrow_mut() {
            a.slots.iter_mut().filter(|s| s.id == id).for_each(Kept::clear);
        }
    });
}

thread_local! {
    static AHEAD: RefCell<Ahead> = const {
        RefCell::new(Ahead {
            slots: [Kept { id: 0, counter: 0, ks: [0; MAX_TAIL] }, Kept { id: 0, counter: 0, ks: [0; MAX_TAIL] }],
            next: 0,
        })
    };
}

/// XORs the keystream of message `counter`'s blocks 16 on into
/// `inp[..n]`, writing `out[..n]` (`n` = their length, at most
/// [`MAX_TAIL`]); keeps message `counter + 1`'s for the next call.
/// Only where [`available`].
pub(crate) fn xor_tail(key: &[u32; 8], id: u64, counter: u64, inp: &[u8], out: &mut [u8]) {
    let n = inp.len();
    assert!(n <= MAX_TAIL && out.len() >= n && available());
    let kept = AHEAD.try_with(|a| {
        let mut a = a.borrow_mut();
        if let Some(hit) = a.slots.iter_mut().find(|s| s.id == id && s.counter == counter) {
            // SAFETY: AVX-512F and BW are there (asserted); `inp`, `out` and
            // the kept keystream hold at least n bytes.
            unsafe { xor_kept(inp.as_ptr(), out.as_mut_ptr(), &hit.ks, n) };
            hit.clear();
            return;
        }
        // This key's slot, else an empty one, else the one not replaced last.
        let slot = match a.slots.iter().position(|s| s.id == id).or_else(|| a.slots.iter().position(|s| s.id == 0)) {
            Some(i) => i,
            None => {
                a.next ^= 1;
                a.next
            }
        };
        a.next = slot;
        let s = &mut a.slots[slot];
        // SAFETY: as above; the slot's keystream is the 512 bytes written.
        unsafe { two_tails(key, counter, inp.as_ptr(), out.as_mut_ptr(), n, &mut s.ks) };
        s.id = id;
        s.counter = counter.wrapping_add(1);
    });
    if kept.is_err() {
        // The thread is exiting (its entries are gone): nothing is kept.
        let mut s = Kept { id: 0, counter: 0, ks: [0; MAX_TAIL] };
        // SAFETY: as above.
        unsafe { two_tails(key, counter, inp.as_ptr(), out.as_mut_ptr(), n, &mut s.ks) };
        s.clear();
    }
}

/// The mask of the first `n` bytes of 64 (n ≤ 64).
fn first(n: usize) -> __mmask64 {
    if n >= 64 { !0 } else { (1u64 << n) - 1 }
}

/// `out[at..at + 64] = inp[at..at + 64] ^ ks`, cut at `n` bytes (at < n).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn xor_block(inp: *const u8, out: *mut u8, at: usize, n: usize, ks: __m512i) {
    let k = first(n - at);
    // SAFETY: the mask keeps every access within the first n bytes.
    unsafe {
        let v = _mm512_maskz_loadu_epi8(k, inp.add(at).cast());
        _mm512_mask_storeu_epi8(out.add(at).cast(), k, _mm512_xor_si512(v, ks));
    }
}

/// `out[..n] = inp[..n] ^ ks[..n]`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn xor_kept(inp: *const u8, out: *mut u8, ks: &[u8; MAX_TAIL], n: usize) {
    for at in (0..n).step_by(64) {
        // SAFETY: at < n <= MAX_TAIL: 64 bytes of `ks` from `at`; the rest
        // as `xor_block` says.
        unsafe { xor_block(inp, out, at, n, _mm512_loadu_si512(ks.as_ptr().add(at).cast())) };
    }
}

const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

macro_rules! quarter {
    ($x:ident, $a:literal, $b:literal, $c:literal, $d:literal) => {
        $x[$a] = _mm512_add_epi32($x[$a], $x[$b]);
        $x[$d] = _mm512_rol_epi32::<16>(_mm512_xor_si512($x[$d], $x[$a]));
        $x[$c] = _mm512_add_epi32($x[$c], $x[$d]);
        $x[$b] = _mm512_rol_epi32::<12>(_mm512_xor_si512($x[$b], $x[$c]));
        $x[$a] = _mm512_add_epi32($x[$a], $x[$b]);
        $x[$d] = _mm512_rol_epi32::<8>(_mm512_xor_si512($x[$d], $x[$a]));
        $x[$c] = _mm512_add_epi32($x[$c], $x[$d]);
        $x[$b] = _mm512_rol_epi32::<7>(_mm512_xor_si512($x[$b], $x[$c]));
    };
}

/// ChaCha20 (RFC 8439, nonce = 4 zero bytes and `counter` little-endian)
/// blocks 16-23 of message `counter` XORed into `inp[..n]`, written to
/// `out[..n]`, and those of message `counter + 1` into `next_ks`: one block
/// per 32-bit lane.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn two_tails(
    key: &[u32; 8],
    counter: u64,
    inp: *const u8,
    out: *mut u8,
    n: usize,
    next_ks: &mut [u8; MAX_TAIL],
) {
    let next = counter.wrapping_add(1);
    let second: __mmask16 = 0xff00;
    macro_rules! pick {
        ($a:expr, $b:expr) => {
            _mm512_mask_blend_epi32(second, _mm512_set1_epi32($a as i32), _mm512_set1_epi32($b as i32))
        };
    }
    let mut start = [_mm512_setzero_si512(); 16];
    for (w, &c) in SIGMA.iter().enumerate() {
        start[w] = _mm512_set1_epi32(c as i32);
    }
    for (w, &k) in key.iter().enumerate() {
        start[4 + w] = _mm512_set1_epi32(k as i32);
    }
    start[12] = _mm512_setr_epi32(16, 17, 18, 19, 20, 21, 22, 23, 16, 17, 18, 19, 20, 21, 22, 23);
    // Word 13 (the nonce's first 4 bytes) stays 0.
    start[14] = pick!(counter as u32, next as u32);
    start[15] = pick!((counter >> 32) as u32, (next >> 32) as u32);
    let mut x = start;
    for _ in 0..10 {
        quarter!(x, 0, 4, 8, 12);
        quarter!(x, 1, 5, 9, 13);
        quarter!(x, 2, 6, 10, 14);
        quarter!(x, 3, 7, 11, 15);
        quarter!(x, 0, 5, 10, 15);
        quarter!(x, 1, 6, 11, 12);
        quarter!(x, 2, 7, 8, 13);
        quarter!(x, 3, 4, 9, 14);
    }
    for i in 0..16 {
        x[i] = _mm512_add_epi32(x[i], start[i]);
    }
    // x[w] holds word w of the 16 blocks (lane j: block j). Transpose: within
    // each 128-bit lane L first (4 words of blocks 4L..4L+3), then the
    // 128-bit lanes, so that block j's 16 words end up in one register.
    let mut u = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let t0 = _mm512_unpacklo_epi32(x[4 * g], x[4 * g + 1]);
        let t1 = _mm512_unpackhi_epi32(x[4 * g], x[4 * g + 1]);
        let t2 = _mm512_unpacklo_epi32(x[4 * g + 2], x[4 * g + 3]);
        let t3 = _mm512_unpackhi_epi32(x[4 * g + 2], x[4 * g + 3]);
        // u[4r + g], lane L: block 4L + r, words 4g..4g+3.
        u[g] = _mm512_unpacklo_epi64(t0, t2);
        u[4 + g] = _mm512_unpackhi_epi64(t0, t2);
        u[8 + g] = _mm512_unpacklo_epi64(t1, t3);
        u[12 + g] = _mm512_unpackhi_epi64(t1, t3);
    }
    let keep = next_ks.as_mut_ptr();
    for r in 0..4 {
        let (a, b, c, d) = (u[4 * r], u[4 * r + 1], u[4 * r + 2], u[4 * r + 3]);
        let v0 = _mm512_shuffle_i32x4::<0x44>(a, b);
        let v1 = _mm512_shuffle_i32x4::<0xee>(a, b);
        let v2 = _mm512_shuffle_i32x4::<0x44>(c, d);
        let v3 = _mm512_shuffle_i32x4::<0xee>(c, d);
        // Blocks r, 4 + r, 8 + r, 12 + r.
        let blocks = [
            _mm512_shuffle_i32x4::<0x88>(v0, v2),
            _mm512_shuffle_i32x4::<0xdd>(v0, v2),
            _mm512_shuffle_i32x4::<0x88>(v1, v3),
            _mm512_shuffle_i32x4::<0xdd>(v1, v3),
        ];
        for (l, block) in blocks.into_iter().enumerate() {
            let (b, at) = (4 * l + r, 64 * ((4 * l + r) % 8));
            // SAFETY: `next_ks` holds 8 blocks; `xor_block` stays within
            // the first n bytes of `inp` and `out`.
            unsafe {
                if b >= 8 {
                    _mm512_storeu_si512(keep.add(at).cast(), block);
                } else if at < n {
                    xor_block(inp, out, at, n, block);
                }
            }
        }
    }
}
