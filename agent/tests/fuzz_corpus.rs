//! Every saved fuzz input (`fuzz/corpus/<target>/`) replayed once through
//! its target's body (`fuzz/targets/<target>.rs`, the function the cargo fuzz
//! binaries call) in the ordinary test build, with debug assertions and
//! overflow checks on: a regression check of every crash the fuzzers ever
//! found and every input that reached new code, without cargo-fuzz, nightly
//! flags or a second, sanitized build of the dependencies (which cost CI
//! minutes). `bash fuzz/run.sh --replay` replays the same inputs under
//! libFuzzer with AddressSanitizer; the long runs are `bash fuzz/run.sh 600`.
// Both router targets load fuzz/targets/common/router.rs as their own module.
#![allow(dead_code, unreachable_pub, clippy::duplicate_mod)]

use std::{fs, path::Path};

#[path = "../../fuzz/targets/aead.rs"]
mod aead;
#[path = "../../fuzz/targets/cni_config.rs"]
mod cni_config;
#[path = "../../fuzz/targets/dns_query.rs"]
mod dns_query;
#[path = "../../fuzz/targets/local_api_request.rs"]
mod local_api_request;
#[path = "../../fuzz/targets/map_change.rs"]
mod map_change;
#[path = "../../fuzz/targets/router_datagram.rs"]
mod router_datagram;
#[path = "../../fuzz/targets/router_session.rs"]
mod router_session;
#[path = "../../fuzz/targets/token_parse.rs"]
mod token_parse;
#[path = "../../fuzz/targets/tun_gro.rs"]
mod tun_gro;
#[path = "../../fuzz/targets/tun_gso_split.rs"]
mod tun_gso_split;

/// Runs every input of `target`'s corpus; fails naming the inputs that
/// panicked (their panic messages are printed above).
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut inputs: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{target}: no saved inputs in {}", dir.display());
    let failed: Vec<String> = inputs
        .iter()
        .filter(|p| {
            let data = fs::read(p).unwrap();
            std::panic::catch_unwind(|| run(&data)).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: {} of {} saved inputs panic: {failed:?}", failed.len(), inputs.len());
}

/// One test per target, named after it.
macro_rules! replay_each {
    ($($target:ident),* $(,)?) => {$(
        #[test]
        fn $target() {
            replay(stringify!($target), $target::run);
        }
    )*};
}

replay_each!(
    aead,
    cni_config,
    dns_query,
    local_api_request,
    map_change,
    router_datagram,
    router_session,
    token_parse,
    tun_gro,
    tun_gso_split,
);
