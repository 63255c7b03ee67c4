//! Quant-config JSON parsing: `QuantConfig` / `GptqConfig` / `Exl2Config` from arbitrary JSON,
//! and `QuantConfig::from_model_dir` on a directory holding the bytes as config.json.

use super::common;

use paradec::quant::{Exl2Config, GptqConfig, QuantConfig};

/// One fuzz input through the code this target covers.
pub fn run(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = QuantConfig::from_json(&v);
        let _ = QuantConfig::from_config_json(&v);
        if let Ok(c) = GptqConfig::from_json(&v) {
            assert!([2, 3, 4, 8].contains(&c.bits));
            assert!(c.group_size == -1 || c.group_size > 0);
            let _ = c.groups(4096);
        }
        let _ = Exl2Config::from_json(&v);
        if let Some(qc) = v.get("quantization_config") {
            let _ = GptqConfig::from_json(qc);
        }
    }
    // The same bytes as a model directory's config.json (and as quantize_config.json).
    let dir = common::scratch_dir("cfg");
    let _ = std::fs::write(dir.join("config.json"), data);
    let _ = QuantConfig::from_model_dir(&dir);
    let _ = GptqConfig::from_model_dir(&dir);
    let _ = std::fs::remove_file(dir.join("config.json"));
    let _ = std::fs::write(dir.join("quantize_config.json"), data);
    let _ = QuantConfig::from_model_dir(&dir);
    let _ = std::fs::remove_file(dir.join("quantize_config.json"));
}
