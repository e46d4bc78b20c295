//! OpenSSL's x86_64 ChaCha20 and Poly1305 assembly (build.rs), driven per
//! WireGuard data message. What makes it faster per packet than OpenSSL's
//! own EVP (and than ring's stitched AVX2 code on AVX-512 machines): the
//! Poly1305 key block and the message go through one ChaCha20 call (a lone
//! 64-byte block costs about as much as a quarter of a 1,420-byte packet),
//! and Poly1305's wide code gets whole 128-byte runs, its tail a call of its
//! own (ragged tails made its vector set-up cost up to twice the MAC).
use std::{mem::MaybeUninit, sync::Once};

use crate::{Error, LEAD, TAG_LEN, ahead};

unsafe extern "C" {
    fn weave_aead_ChaCha20_ctr32(out: *mut u8, inp: *const u8, len: usize, key: *const u32, counter: *const u32);
    fn weave_aead_poly1305_init(ctx: *mut Poly1305, key: *const u8, func: *mut Funcs) -> i32;
    fn weave_aead_poly1305_blocks(ctx: *mut Poly1305, inp: *const u8, len: usize, padbit: u32);
    fn weave_aead_poly1305_emit(ctx: *mut Poly1305, mac: *mut u8, nonce: *const u32);
    fn weave_aead_OPENSSL_ia32_cpuid(cap: *mut u32) -> u64;
    static mut weave_aead_OPENSSL_ia32cap_P: [u32; 10];
}

type BlocksFn = unsafe extern "C" fn(*mut Poly1305, *const u8, usize, u32);
type EmitFn = unsafe extern "C" fn(*mut Poly1305, *mut u8, *const u32);

#[repr(C)]
struct Funcs {
    blocks: BlocksFn,
    emit: EmitFn,
}

/// The assembly's opaque state: OpenSSL's `double opaque[24]`.
#[repr(C, align(64))]
struct Poly1305([u64; 24]);

/// Messages up to this long take the one-call path on a stack buffer;
/// longer ones (not on a 1,500-byte underlay) make the key block apart.
const SCRATCH: usize = 4096;

#[repr(C, align(64))]
struct Scratch([u8; 64 + SCRATCH]);

static CPUID: Once = Once::new();

/// Fills OpenSSL's capability vector (OpenSSL_cpuid_setup without the
/// environment override), which the assembly reads to pick its code path.
pub(crate) fn init() {
    CPUID.call_once(|| {
        // SAFETY: runs once, before any key exists (so before any reader);
        // the vector is the assembly's 40-byte .comm symbol.
        unsafe {
            let cap = (&raw mut weave_aead_OPENSSL_ia32cap_P).cast::<u32>();
            let vec = weave_aead_OPENSSL_ia32_cpuid(cap);
            *cap = vec as u32 | (1 << 10);
            *cap.add(1) = (vec >> 32) as u32;
        }
    });
}

pub(crate) fn key_words(key: &[u8; 32]) -> [u32; 8] {
    let mut w = [0u32; 8];
    for (i, c) in key.chunks_exact(4).enumerate() {
        w[i] = u32::from_le_bytes(c.try_into().expect("4 bytes"));
    }
    w
}

fn counter_block(block: u32, counter: u64) -> [u32; 4] {
    [block, 0, counter as u32, (counter >> 32) as u32]
}

/// ChaCha20 of `len` bytes at `buf` in place, from block `block`.
fn chacha(key: &[u32; 8], counter: u64, block: u32, buf: *mut u8, len: usize) {
    let ctr = counter_block(block, counter);
    // SAFETY: `buf` is valid for `len` bytes (callers pass slices); the
    // assembly reads and writes exactly those, in place allowed.
    unsafe { weave_aead_ChaCha20_ctr32(buf, buf, len, key.as_ptr(), ctr.as_ptr()) }
}

/// RFC 8439's tag over `ct` with no additional data.
fn tag(poly_key: &[u8], ct: &[u8]) -> [u8; TAG_LEN] {
    let mut st = Poly1305([0; 24]);
    let mut f = Funcs { blocks: weave_aead_poly1305_blocks, emit: weave_aead_poly1305_emit };
    let nonce: [u32; 4] =
        std::array::from_fn(|i| u32::from_le_bytes(poly_key[16 + 4 * i..20 + 4 * i].try_into().expect("4")));
    let mut mac = [0u8; TAG_LEN];
    // SAFETY: `st` is the 192-byte state OpenSSL allocates; every input
    // pointer covers the length passed with it, in whole 16-byte blocks.
    unsafe {
        if weave_aead_poly1305_init(&mut st, poly_key.as_ptr(), &mut f) == 0 {
            f = Funcs { blocks: weave_aead_poly1305_blocks, emit: weave_aead_poly1305_emit };
        }
        let whole = ct.len() / 16 * 16;
        let wide = whole / 128 * 128;
        if wide > 0 {
            (f.blocks)(&mut st, ct.as_ptr(), wide, 1);
        }
        if whole > wide {
            (f.blocks)(&mut st, ct.as_ptr().add(wide), whole - wide, 1);
        }
        let mut last = [0u8; 32];
        let tail = ct.len() - whole;
        let lens = if tail > 0 {
            last[..tail].copy_from_slice(&ct[whole..]);
            &mut last[16..]
        } else {
            &mut last[..16]
        };
        lens[8..].copy_from_slice(&(ct.len() as u64).to_le_bytes());
        let n = if tail > 0 { 32 } else { 16 };
        (f.blocks)(&mut st, last.as_ptr(), n, 1);
        (f.emit)(&mut st, mac.as_mut_ptr(), nonce.as_ptr());
    }
    // r, its powers and s: with them a message under this counter could be
    // forged (OpenSSL's Poly1305_Final wipes its state too).
    crate::wipe(&mut st.0);
    let mut nonce = nonce;
    crate::wipe(&mut nonce);
    mac
}

/// Runs block 0 (the Poly1305 key) and the message through one ChaCha20
/// call on `scratch` ([zeros(64) | msg]); hands back the whole run: the key
/// in its first 32 bytes, the message's ChaCha20 image from byte 64.
fn keystream_with_key<'a>(
    key: &[u32; 8],
    counter: u64,
    msg: &[u8],
    scratch: &'a mut MaybeUninit<Scratch>,
) -> &'a mut [u8] {
    let n = msg.len();
    assert!(n <= SCRATCH);
    let base = scratch.as_mut_ptr().cast::<u8>();
    // SAFETY: 64 + n <= the scratch's size; both writes initialise the
    // bytes the slice then covers, and msg cannot overlap a local.
    unsafe {
        std::ptr::write_bytes(base, 0, 64);
        std::ptr::copy_nonoverlapping(msg.as_ptr(), base.add(64), n);
        chacha(key, counter, 0, base, 64 + n);
        std::slice::from_raw_parts_mut(base, 64 + n)
    }
}

/// Zeroes the scratch run (the key block, and the message's ChaCha20 image,
/// which is keystream to whoever knows the message) with stores the
/// optimiser keeps: `fill` then `black_box`, not byte-wise volatile writes.
fn wipe_scratch(s: &mut [u8]) {
    s.fill(0);
    std::hint::black_box(&*s);
}

pub(crate) fn seal(key: &[u32; 8], counter: u64, src: &[u8], dst: &mut [u8]) {
    let n = src.len();
    let (ct, tag_out) = dst[..n + TAG_LEN].split_at_mut(n);
    let mut poly_key = [0u8; 32];
    if n <= SCRATCH {
        let mut scratch = MaybeUninit::<Scratch>::uninit();
        let s = keystream_with_key(key, counter, src, &mut scratch);
        poly_key.copy_from_slice(&s[..32]);
        ct.copy_from_slice(&s[64..]);
        wipe_scratch(s);
    } else {
        chacha(key, counter, 0, poly_key.as_mut_ptr(), 32);
        ct.copy_from_slice(src);
        chacha(key, counter, 1, ct.as_mut_ptr(), n);
    }
    tag_out.copy_from_slice(&tag(&poly_key, ct));
    crate::wipe(&mut poly_key);
}

pub(crate) fn open(key: &[u32; 8], counter: u64, src: &[u8], dst: &mut [u8]) -> Result<usize, Error> {
    let n = src.len().checked_sub(TAG_LEN).ok_or(Error)?;
    let (ct, got) = src.split_at(n);
    let mut poly_key = [0u8; 32];
    let ok;
    if n <= SCRATCH {
        let mut scratch = MaybeUninit::<Scratch>::uninit();
        let s = keystream_with_key(key, counter, ct, &mut scratch);
        poly_key.copy_from_slice(&s[..32]);
        ok = crate::equal(&tag(&poly_key, ct), got);
        if ok {
            dst[..n].copy_from_slice(&s[64..]);
        }
        wipe_scratch(s);
    } else {
        chacha(key, counter, 0, poly_key.as_mut_ptr(), 32);
        ok = crate::equal(&tag(&poly_key, ct), got);
        if ok {
            dst[..n].copy_from_slice(ct);
            chacha(key, counter, 1, dst.as_mut_ptr(), n);
        }
    }
    crate::wipe(&mut poly_key);
    if ok { Ok(n) } else { Err(Error) }
}

// The lead is exactly block 0: its output is the key block XOR the lead.
const _: () = assert!(LEAD == 64);

/// ChaCha20 from block 0 over `inp[..LEAD + n]` into `out[..LEAD + n]`;
/// returns the Poly1305 key, `out[..LEAD]` restored.
/// A run of more than 16 blocks and at most 24 takes its last blocks from
/// [`crate::ahead`] (kept from the previous counter's call, or computed
/// with the next counter's).
fn led_keystream(key: &[u32; 8], id: u64, counter: u64, inp: &[u8], out: &mut [u8], n: usize) -> [u8; 32] {
    assert!(inp.len() >= LEAD + n && out.len() >= LEAD + n);
    let mut saved = [0u8; LEAD];
    saved.copy_from_slice(&out[..LEAD]);
    let ctr = counter_block(0, counter);
    let total = LEAD + n;
    let ahead = total > ahead::FROM && total - ahead::FROM <= ahead::MAX_TAIL && ahead::available();
    let first = if ahead { ahead::FROM } else { total };
    // SAFETY: both slices hold LEAD + n >= first bytes (asserted); they do
    // not overlap (a shared and an exclusive borrow).
    unsafe { weave_aead_ChaCha20_ctr32(out.as_mut_ptr(), inp.as_ptr(), first, key.as_ptr(), ctr.as_ptr()) }
    if ahead {
        ahead::xor_tail(key, id, counter, &inp[first..total], &mut out[first..total]);
    }
    let mut poly_key = [0u8; 32];
    for i in 0..32 {
        poly_key[i] = out[i] ^ inp[i];
    }
    // The rest of block 0 is keystream nobody uses; the lead goes back.
    out[..LEAD].copy_from_slice(&saved);
    poly_key
}

/// Seals `src[LEAD..]` into `dst[LEAD..]`, the tag after it; both leads
/// are left as they were.
pub(crate) fn seal_led(key: &[u32; 8], id: u64, counter: u64, src: &[u8], dst: &mut [u8]) -> usize {
    let n = src.len() - LEAD;
    assert!(dst.len() >= LEAD + n + TAG_LEN, "destination too short");
    let mut poly_key = led_keystream(key, id, counter, src, dst, n);
    let (ct, tag_out) = dst[LEAD..LEAD + n + TAG_LEN].split_at_mut(n);
    tag_out.copy_from_slice(&tag(&poly_key, ct));
    crate::wipe(&mut poly_key);
    n + TAG_LEN
}

/// Checks `src[LEAD..]` (ciphertext and tag) and decrypts it into
/// `dst[LEAD..]`; both leads are left as they were. On failure the
/// plaintext's room in `dst` is zeroed.
pub(crate) fn open_led(key: &[u32; 8], id: u64, counter: u64, src: &[u8], dst: &mut [u8]) -> Result<usize, Error> {
    let n = src.len().checked_sub(LEAD + TAG_LEN).ok_or(Error)?;
    assert!(dst.len() >= LEAD + n, "destination too short");
    let mut poly_key = led_keystream(key, id, counter, &src[..LEAD + n], dst, n);
    let ok = crate::equal(&tag(&poly_key, &src[LEAD..LEAD + n]), &src[LEAD + n..]);
    crate::wipe(&mut poly_key);
    if ok {
        Ok(n)
    } else {
        dst[LEAD..LEAD + n].fill(0);
        Err(Error)
    }
}
