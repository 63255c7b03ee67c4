//! The fuzz targets' bodies. `fuzz_targets/<name>.rs` hands each input to `<name>::run`; the
//! regression test `tests/fuzz_regressions.rs` replays committed inputs through the same
//! functions on the stable toolchain.
#![allow(dead_code)]

pub mod arch_config;
pub mod common;
pub mod exl2_load;
pub mod gptq_load;
pub mod lora_load;
pub mod model_dir;
pub mod paged_cache;
pub mod quant_config;
pub mod safetensors_load;
