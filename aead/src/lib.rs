//! ChaCha20-Poly1305 (RFC 8439) as WireGuard uses it for data messages: a
//! 32-byte key per direction, the nonce four zero bytes and the message
//! counter (little-endian), no additional data, a 16-byte tag after the
//! ciphertext. One `seal` or `open` per packet, from a source slice into a
//! destination slice (boringtun's shape).
//!
//! Two implementations, the same output bit for bit (tests below, against
//! ring): OpenSSL's x86_64 assembly (`asm`, when built: x86_64 Linux and
//! the BSDs) and ring's ChaCha20-Poly1305. [`Key::new`] picks what
//! [`choose`] set; by default ([`Choice::Auto`]) the assembly on a CPU with
//! AVX-512 and ring elsewhere (see [`assembly_is_faster`]).
use std::sync::atomic::{AtomicU8, Ordering};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

#[cfg(weave_aead_asm)]
mod ahead;
#[cfg(weave_aead_asm)]
mod asm;

/// The Poly1305 tag's length.
pub const TAG_LEN: usize = 16;

/// The room in front of a message that [`Key::seal_led`] and
/// [`Key::open_led`] use (read, and left as it was).
pub const LEAD: usize = 64;

/// A message failed authentication (or was shorter than a tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChaCha20-Poly1305 authentication failed")
    }
}

impl std::error::Error for Error {}

/// Which implementation keys get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The assembly where it is built and [`assembly_is_faster`], else ring.
    Auto = 0,
    Ring = 1,
    /// The assembly where it is built (ring where it is not).
    Assembly = 2,
}

static CHOICE: AtomicU8 = AtomicU8::new(Choice::Auto as u8);

/// Keys made after this call get `choice`.
pub fn choose(choice: Choice) {
    CHOICE.store(choice as u8, Ordering::Relaxed);
}

/// Whether OpenSSL's assembly was built into this binary.
pub const fn assembly_built() -> bool {
    cfg!(weave_aead_asm)
}

/// Whether this CPU runs OpenSSL's assembly faster than ring: where it has
/// AVX-512 (OpenSSL's 16-block ChaCha20 and its AVX-512 Poly1305; ring has
/// neither). Measured per 1,370- and 1,420-byte packet (`bench/aead`): 1.32-1.53x
/// on an AVX-512 AMD EPYC (Zen 4); 0.94-1.01x on an AVX2-only one (Zen 3),
/// where ring's stitched AVX2 code is as fast or faster. Intel CPUs were not
/// measured (some lower their clock under AVX-512).
pub fn assembly_is_faster() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether a key made now runs the assembly.
fn assembly_now() -> bool {
    assembly_built()
        && match CHOICE.load(Ordering::Relaxed) {
            x if x == Choice::Ring as u8 => false,
            x if x == Choice::Assembly as u8 => true,
            _ => assembly_is_faster(),
        }
}

/// The implementation a key made now gets: "openssl-x86_64-asm" or "ring".
pub fn implementation() -> &'static str {
    if assembly_now() { ASM } else { RING }
}

const ASM: &str = "openssl-x86_64-asm";
const RING: &str = "ring";

enum Inner {
    #[cfg_attr(not(weave_aead_asm), allow(dead_code))]
    /// The key's words, and its number for the keystream kept ahead.
    Asm([u32; 8], u64),
    Ring(Box<LessSafeKey>),
}

/// One direction's key.
pub struct Key(Inner);

impl Key {
    pub fn new(key: &[u8; 32]) -> Key {
        #[cfg(weave_aead_asm)]
        if assembly_now() {
            asm::init();
            return Key(Inner::Asm(asm::key_words(key), ahead::next_id()));
        }
        Key(Inner::Ring(Box::new(LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key")))))
    }

    /// Encrypts `src` into `dst[..src.len()]` and writes the tag after it;
    /// returns `src.len() + TAG_LEN`. Panics if `dst` is shorter than that.
    pub fn seal(&self, counter: u64, src: &[u8], dst: &mut [u8]) -> usize {
        let n = src.len();
        assert!(dst.len() >= n + TAG_LEN, "destination too short");
        match &self.0 {
            #[cfg(weave_aead_asm)]
            Inner::Asm(k, _) => asm::seal(k, counter, src, dst),
            #[cfg(not(weave_aead_asm))]
            Inner::Asm(..) => unreachable!("built without the assembly"),
            Inner::Ring(k) => {
                let (data, rest) = dst.split_at_mut(n);
                data.copy_from_slice(src);
                let tag = k
                    .seal_in_place_separate_tag(nonce(counter), Aad::empty(), data)
                    .expect("a packet under ring's size limit");
                rest[..TAG_LEN].copy_from_slice(tag.as_ref());
            }
        }
        n + TAG_LEN
    }

    /// Checks `src` (ciphertext and tag) and decrypts it into `dst`;
    /// returns the plaintext's length. On failure `dst` is left as it was
    /// with the assembly (ring writes the ciphertext there). Panics if `dst`
    /// is shorter than `src` (ring opens in place).
    pub fn open(&self, counter: u64, src: &[u8], dst: &mut [u8]) -> Result<usize, Error> {
        src.len().checked_sub(TAG_LEN).ok_or(Error)?;
        assert!(dst.len() >= src.len(), "destination too short");
        match &self.0 {
            #[cfg(weave_aead_asm)]
            Inner::Asm(k, _) => asm::open(k, counter, src, dst),
            #[cfg(not(weave_aead_asm))]
            Inner::Asm(..) => unreachable!("built without the assembly"),
            Inner::Ring(k) => {
                let whole = &mut dst[..src.len()];
                whole.copy_from_slice(src);
                k.open_in_place(nonce(counter), Aad::empty(), whole).map(|p| p.len()).map_err(|_| Error)
            }
        }
    }

    /// [`seal`](Self::seal) with room before the message: seals
    /// `src[LEAD..]` into `dst[LEAD..]` (the tag after the ciphertext) and
    /// returns the sealed length. The bytes in front (`src[..LEAD]`,
    /// `dst[..LEAD]`: another packet's tail, a header) are read and left as
    /// they were: the assembly runs the Poly1305 key block over them in the
    /// same ChaCha20 call as the message, without a scratch copy. Panics if
    /// `src` is shorter than `LEAD` or `dst` than `src` plus the tag.
    pub fn seal_led(&self, counter: u64, src: &[u8], dst: &mut [u8]) -> usize {
        assert!(src.len() >= LEAD && dst.len() >= src.len() + TAG_LEN, "no room for the lead");
        match &self.0 {
            #[cfg(weave_aead_asm)]
            Inner::Asm(k, id) => asm::seal_led(k, *id, counter, src, dst),
            _ => self.seal(counter, &src[LEAD..], &mut dst[LEAD..]),
        }
    }

    /// [`open`](Self::open) with room before the message: checks
    /// `src[LEAD..]` (ciphertext and tag), decrypts it into `dst[LEAD..]`
    /// and returns the plaintext's length; `src[..LEAD]` and `dst[..LEAD]`
    /// are left as they were. On failure the plaintext's room in `dst` is
    /// zeroed (ring's `open_in_place` zeroes it too).
    pub fn open_led(&self, counter: u64, src: &[u8], dst: &mut [u8]) -> Result<usize, Error> {
        let n = src.len().checked_sub(LEAD + TAG_LEN).ok_or(Error)?;
        assert!(dst.len() >= LEAD + n + TAG_LEN, "no room for the lead");
        match &self.0 {
            #[cfg(weave_aead_asm)]
            Inner::Asm(k, id) => asm::open_led(k, *id, counter, src, dst),
            _ => self.open(counter, &src[LEAD..], &mut dst[LEAD..]),
        }
    }

    /// Which implementation this key runs.
    pub fn implementation(&self) -> &'static str {
        match self.0 {
            Inner::Asm(..) => ASM,
            Inner::Ring(_) => RING,
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if let Inner::Asm(k, _id) = &mut self.0 {
            wipe(k);
            #[cfg(weave_aead_asm)]
            ahead::forget(*_id);
        }
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Constant-time comparison of two tags.
#[cfg_attr(not(weave_aead_asm), allow(dead_code))]
fn equal(a: &[u8; TAG_LEN], b: &[u8]) -> bool {
    if b.len() != TAG_LEN {
        return false;
    }
    let d = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(d) == 0
}

/// Overwrites key material in a way the optimiser keeps.
fn wipe<T: Copy + Default>(v: &mut [T]) {
    for x in v.iter_mut() {
        // SAFETY: `x` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(x, T::default()) };
    }
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests;
