//! Replays committed fuzz inputs through the fuzz targets' own bodies (`fuzz/targets/`), on the
//! stable toolchain: every crash the fuzzers found (`fuzz/regressions/<target>/`) and the
//! minimized corpora (`fuzz/corpus/<target>/`). An input that panics fails the test, naming
//! the file.

#[path = "../fuzz/targets/mod.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for folder in ["regressions", "corpus"] {
        let Ok(rd) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.iter().filter(|f| f.is_file()) {
            let data = std::fs::read(f).unwrap();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panic!("fuzz input {} panicked", f.display());
            }
            count += 1;
        }
    }
    assert!(count > 0, "no committed inputs for {target}");
}

#[test]
fn arch_config() {
    replay("arch_config", targets::arch_config::run);
}

#[test]
fn quant_config() {
    replay("quant_config", targets::quant_config::run);
}

#[test]
fn safetensors_load() {
    replay("safetensors_load", targets::safetensors_load::run);
}

#[test]
fn gptq_load() {
    replay("gptq_load", targets::gptq_load::run);
}

#[test]
fn exl2_load() {
    replay("exl2_load", targets::exl2_load::run);
}

#[test]
fn lora_load() {
    replay("lora_load", targets::lora_load::run);
}

#[test]
fn model_dir() {
    replay("model_dir", targets::model_dir::run);
}

#[test]
fn paged_cache() {
    replay("paged_cache", targets::paged_cache::run);
}
