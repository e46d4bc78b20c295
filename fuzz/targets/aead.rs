//! weave-aead (aead/: OpenSSL's x86_64 assembly, what boringtun's sessions
//! seal and open data messages with) against ring's ChaCha20-Poly1305 on
//! the same key, counter and bytes. Input: 32 bytes of key, 8 of counter,
//! one mode byte, then the message. Even mode: seal with both, the same
//! bytes; the assembly opens ring's output back to the message. Odd mode:
//! the message is a received datagram body (ciphertext and tag): both open
//! it or both refuse it, with the same plaintext, and a refusal leaves the
//! assembly's output buffer untouched. With bit 1 of the mode byte set,
//! the data path's `seal_led`/`open_led` too, under `counter` and then
//! `counter + 1` (so the second finds the ChaCha20 blocks the first kept
//! ahead for it, when the message is 961-1,472 bytes): the same bytes as
//! ring, the same verdicts, a refusal's plaintext room zeroed.

use weave_aead::{Choice, Key, LEAD, TAG_LEN, choose};

fn keys(key: &[u8; 32]) -> (Key, Key) {
    choose(Choice::Ring);
    let ring = Key::new(key);
    // The assembly whatever this CPU would pick by default.
    choose(Choice::Assembly);
    (Key::new(key), ring)
}

pub fn run(data: &[u8]) {
    if data.len() < 41 {
        return;
    }
    let key: [u8; 32] = data[..32].try_into().unwrap();
    let counter = u64::from_le_bytes(data[32..40].try_into().unwrap());
    let (mode, msg) = (data[40], &data[41..]);
    let (asm, ring) = keys(&key);
    assert_eq!(ring.implementation(), "ring");
    if mode & 2 != 0 {
        led(&asm, &ring, counter, mode % 2 == 0, msg);
    }
    if mode % 2 == 0 {
        let mut a = vec![0u8; msg.len() + TAG_LEN];
        let mut r = vec![0u8; msg.len() + TAG_LEN];
        asm.seal(counter, msg, &mut a);
        ring.seal(counter, msg, &mut r);
        assert_eq!(a, r, "seal differs from ring");
        let mut back = vec![0u8; r.len()];
        assert_eq!(asm.open(counter, &r, &mut back), Ok(msg.len()));
        assert_eq!(&back[..msg.len()], msg);
    } else {
        let mut a = vec![0xa5u8; msg.len().max(TAG_LEN)];
        let mut r = vec![0u8; msg.len().max(TAG_LEN)];
        let (ga, gr) = (asm.open(counter, msg, &mut a), ring.open(counter, msg, &mut r));
        assert_eq!(ga, gr, "open's verdict differs from ring's");
        match ga {
            Ok(n) => assert_eq!(a[..n], r[..n], "open's plaintext differs from ring's"),
            Err(_) => assert!(a.iter().all(|&b| b == 0xa5), "a refused open wrote its output"),
        }
    }
}

/// `seal_led` (or `open_led`) under `counter` and `counter + 1` against ring.
fn led(asm: &Key, ring: &Key, counter: u64, seal: bool, msg: &[u8]) {
    for c in [counter, counter.wrapping_add(1)] {
        let mut src = vec![0x5au8; LEAD];
        src.extend_from_slice(msg);
        if seal {
            let mut a = vec![0u8; LEAD + msg.len() + TAG_LEN];
            let mut r = vec![0u8; msg.len() + TAG_LEN];
            assert_eq!(asm.seal_led(c, &src, &mut a), msg.len() + TAG_LEN);
            ring.seal(c, msg, &mut r);
            assert_eq!(a[LEAD..], r[..], "seal_led differs from ring");
            let mut back = vec![0u8; a.len()];
            assert_eq!(asm.open_led(c, &a, &mut back), Ok(msg.len()));
            assert_eq!(&back[LEAD..LEAD + msg.len()], msg);
        } else {
            let mut a = vec![0xa5u8; src.len().max(LEAD + TAG_LEN)];
            let mut r = vec![0u8; msg.len().max(TAG_LEN)];
            let (ga, gr) = (asm.open_led(c, &src, &mut a), ring.open(c, msg, &mut r));
            assert_eq!(ga, gr, "open_led's verdict differs from ring's");
            match ga {
                Ok(n) => assert_eq!(a[LEAD..LEAD + n], r[..n], "open_led's plaintext differs from ring's"),
                Err(_) => {
                    let room = msg.len().saturating_sub(TAG_LEN);
                    assert!(a[LEAD..LEAD + room].iter().all(|&b| b == 0), "a refused open_led left plaintext");
                }
            }
            assert!(a[..LEAD].iter().all(|&b| b == 0xa5), "open_led changed its lead");
        }
    }
}
