//! cargo fuzz target `dns_query`: each input goes to `run` in
//! `../targets/dns_query.rs`, which says what it fuzzes and checks (the test
//! build replays the saved corpus through it too: agent/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../targets/dns_query.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
