//! paradec's rotary frequencies against HF transformers' own rotary modules (recorded by
//! scripts/make_rope_fixtures.py): default, linear, dynamic NTK (within and beyond the original
//! length) and YaRN (with original_max_position_embeddings, betas, mscale, a given attention
//! factor, truncate off), partial rotary widths included.

mod common;

use common::*;
use paradec::arch::Rotary;
use paradec::ArchParams;
use serde_json::Value;

#[test]
fn rotary_tables_match_hf() {
    let path = fixtures_dir().join("rope/rope_hf.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = all["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let arch = ArchParams::from_json(&c["config"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Rotary::Rope(rope) = &arch.rotary[0] else {
            panic!("{name}: no rope")
        };
        let positions: Vec<i64> = c["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect();
        // HF's dynamic update looks at the largest position of the call, as paradec does.
        let freqs = rope.freqs(*positions.iter().max().unwrap());
        let half = rope.rot_dim / 2;
        let (hf_cos, hf_sin) = (c["cos"].as_array().unwrap(), c["sin"].as_array().unwrap());
        assert_eq!(
            hf_cos[0].as_array().unwrap().len(),
            rope.rot_dim,
            "{name}: rotary width"
        );
        let mut worst = 0.0f64;
        for (i, &p) in positions.iter().enumerate() {
            for j in 0..half {
                let a = p as f32 * freqs.inv_freq[j];
                let (c_ours, s_ours) = (a.cos() * freqs.attn_factor, a.sin() * freqs.attn_factor);
                let c_hf = hf_cos[i][j].as_f64().unwrap();
                let s_hf = hf_sin[i][j].as_f64().unwrap();
                worst = worst
                    .max((c_ours as f64 - c_hf).abs())
                    .max((s_ours as f64 - s_hf).abs());
            }
        }
        // f32 angles up to ~200 rad: a few ulps of the angle.
        assert!(
            worst < 2e-4,
            "{name}: max |Δ| {worst:.2e} between paradec's and HF's cos/sin"
        );
        eprintln!("{name}: max |Δcos|,|Δsin| = {worst:.1e}");
    }
}
