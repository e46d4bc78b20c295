//! cargo fuzz target `local_api_request`: each input goes to `run` in
//! `../targets/local_api_request.rs`, which says what it fuzzes and checks (the test
//! build replays the saved corpus through it too: agent/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../targets/local_api_request.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
