#![no_main]
//! See `targets/paged_cache.rs` (the body, shared with the regression test `tests/fuzz_regressions.rs`).

#[path = "../targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::paged_cache::run(data));
