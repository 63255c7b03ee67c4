#![no_main]
//! See `targets/model_dir.rs` (the body, shared with the regression test `tests/fuzz_regressions.rs`).

#[path = "../targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::model_dir::run(data));
