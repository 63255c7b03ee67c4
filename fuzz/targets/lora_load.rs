//! PEFT adapter loading: the input is split into adapter_config.json (length in the first two
//! bytes) and adapter_model.safetensors (the rest). A loaded adapter must be rank-consistent.

use super::common;

use paradec::layers::lora::Lora;

/// One fuzz input through the code this target covers.
pub fn run(data: &[u8]) {
    let mut b = common::Bytes::new(data);
    let n = b.u16() as usize;
    let rest = b.rest();
    let (cfg, tensors) = rest.split_at(n.min(rest.len()));
    let dir = common::scratch_dir("lora");
    if std::fs::write(dir.join("adapter_config.json"), cfg).is_err()
        || std::fs::write(dir.join("adapter_model.safetensors"), tensors).is_err()
    {
        return;
    }
    if let Ok(l) = Lora::load(&dir) {
        assert!(l.rank > 0);
        for ad in l.modules.values() {
            assert_eq!(ad.a.shape()[0], l.rank);
            assert_eq!(ad.b.shape()[1], l.rank);
            assert!(ad.scale.is_finite(), "LoRA scale {}", ad.scale);
        }
    }
}
