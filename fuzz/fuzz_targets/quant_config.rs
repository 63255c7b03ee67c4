#![no_main]
//! See `targets/quant_config.rs` (the body, shared with the regression test `tests/fuzz_regressions.rs`).

#[path = "../targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::quant_config::run(data));
