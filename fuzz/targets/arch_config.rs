//! Model config parsing: arbitrary bytes as config.json through `ArchParams` (both the 4.x and
//! 5.x conventions). A config that parses must be self-consistent.

use super::common;

use paradec::arch::Rotary;
use paradec::{limits, ArchParams};

/// One fuzz input through the code this target covers.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = ArchParams::from_json_str(text) {
        assert_eq!(a.layers.len(), a.num_layers);
        assert!(a.heads % a.kv_heads == 0 && a.head_dim > 0 && a.hidden > 0);
        // Every size within paradec::limits, every scalar finite.
        assert!(a.num_layers <= limits::LAYERS && a.hidden <= limits::HIDDEN);
        assert!(a.heads <= limits::HEADS && a.head_dim <= limits::HEAD_DIM);
        assert!(a.intermediate <= limits::INTERMEDIATE && a.vocab <= limits::VOCAB);
        assert!(a.qkv_width() <= limits::ATTN_WIDTH && a.max_positions <= limits::POSITIONS);
        assert!(a.norm_eps.is_finite() && a.norm_eps > 0.0);
        assert!(a.logit_scale.is_finite() && a.logit_scale > 0.0);
        for l in &a.layers {
            assert!(l.rope_index < a.rotary.len());
        }
        for r in &a.rotary {
            if let Rotary::Rope(rc) = r {
                assert!(rc.rot_dim > 0 && rc.rot_dim <= a.head_dim && rc.rot_dim % 2 == 0);
                let f = rc.freqs(4096);
                assert_eq!(f.inv_freq.len(), rc.rot_dim / 2);
            }
        }
        let _ = a.qkv_width();
    }
    // The same bytes as a model directory's config.json.
    let dir = common::scratch_dir("arch");
    let _ = std::fs::write(dir.join("config.json"), data);
    let _ = ArchParams::from_dir(&dir);
}
