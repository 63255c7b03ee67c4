//! A whole model directory, loaded and run: config.json + safetensors (one file, or two shards
//! with `model.safetensors.index.json`), dense or GPTQ / EXL2 (with or without a
//! `quantization_config`, so the settings are then detected and inferred from the tensors), and
//! optionally a PEFT adapter. The model is loaded with `Model::load`, the adapter with
//! `Lora::load` and `Model::add_lora`, and one prefill and one decode step run on the CPU.
//!
//! Input (missing bytes read as 0):
//! - byte 0: family; byte 1: flags (bits 0-1 weights: dense f32 / GPTQ / EXL2 / dense f16;
//!   2 keep the quantization config; 3 shard; 4 adapter; 5 tied embeddings; 6 family variant;
//!   7 corrupt one tensor); byte 2: more flags (bit 0 bias, 1 config edits before the weights
//!   are made, 2 rsLoRA, bits 3-4 shard-index corruption, 5 corrupt the adapter);
//! - bytes 3-8: heads, kv-head divisor, head_dim, layers, MLP width, vocabulary (all tiny);
//! - bytes 9-11: quantization settings; bytes 12-13: adapter rank and alpha;
//! - byte 14: number of config edits, then (key, value) byte pairs from `KEYS` × `values()`;
//! - then the corruption selector (2 bytes), the prompt length and token ids, and the bytes the
//!   weights are filled from.
//!
//! Sizes stay tiny (hidden ≤ 32, ≤ 3 layers, vocabulary ≤ 16 unless an edit changes the config,
//! and then the weights follow the edited config only within a budget), so one execution takes
//! a few milliseconds. A load or forward may fail with an error; it must never panic, and a
//! forward that succeeds returns logits of shape [1, q_len, vocab].

use std::path::Path;

use paradec::arch::{ArchParams, MlpKind, QkNorm};
use paradec::layers::lora::Lora;
use paradec::quant::pack::{pack_exl2, pack_gptq, Exl2Recipe};
use paradec::quant::GptqConfig;
use paradec::vocab::QkvLayout;
use paradec::weights::save_safetensors;
use paradec::{
    AttnParams, DType, Device, HostData, KvCache, Model, Stream, Tensor, Weights, Workspace,
};
use serde_json::{json, Value};

use super::common::{self, Bytes};

/// Most weight elements the generated model may have (keeps one execution fast).
const BUDGET: usize = 40_000;

/// Config keys the edits may set.
const KEYS: [&str; 30] = [
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "layer_norm_eps",
    "layer_norm_epsilon",
    "logit_scale",
    "rope_scaling",
    "rotary_dim",
    "rotary_pct",
    "partial_rotary_factor",
    "sliding_window",
    "tie_word_embeddings",
    "quantization_config",
    "n_layer",
    "n_embd",
    "n_head",
    "n_inner",
    "ffn_hidden_size",
    "num_kv_heads",
    "rope_parameters",
    "layer_types",
    "sliding_window_pattern",
    "new_decoder_architecture",
    "use_qk_norm",
];

/// Values the edits may set.
fn values() -> Vec<Value> {
    vec![
        json!(0),
        json!(1),
        json!(2),
        json!(3),
        json!(4),
        json!(8),
        json!(64),
        json!(-1),
        json!(1e39),
        json!(1e-45),
        json!(2_555_551_555_555_555_527u64),
        json!(215_555_552u64),
        json!(0.5),
        json!("x"),
        Value::Null,
        json!(true),
        json!(false),
        json!({"type": "linear", "factor": 2.0}),
        json!({"type": "dynamic", "factor": 2.0}),
        json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}),
        json!({"rope_type": "yarn", "factor": 2.0, "beta_fast": 0.0}),
        json!({"rope_type": "yarn", "factor": 2.0, "mscale": 1.0, "mscale_all_dim": 0.5}),
        json!({"rope_type": "linear", "factor": 1e39}),
        json!({"rope_type": "default", "rope_theta": 1e6}),
        json!({"full_attention": {"rope_type": "default", "rope_theta": 100.0},
               "sliding_attention": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}),
        json!({"quant_method": "gptq", "bits": 4, "group_size": 2}),
        json!({"quant_method": "gptq", "bits": 3, "group_size": -1, "desc_act": true}),
        json!({"quant_method": "exl2"}),
        json!({"bits": 8, "group_size": 1_000_000_000_000i64}),
        json!(["sliding_attention", "full_attention"]),
        json!(["full_attention"]),
        json!(1e300),
    ]
}

/// The base config.json of a tiny model of `family`.
fn base_config(family: u8, s: &Sizes, variant: bool, bias: bool, tie: bool) -> Value {
    let hidden = s.heads * s.head_dim;
    let mut c = match family % 6 {
        0 => json!({
            "model_type": "gptj", "n_embd": hidden, "n_head": s.heads, "n_layer": s.layers,
            "n_positions": 64, "n_inner": s.inter,
            "rotary_dim": if variant && s.head_dim >= 4 { s.head_dim / 2 / 2 * 2 } else { s.head_dim },
        }),
        1 => json!({
            "model_type": "gpt_neox", "hidden_size": hidden, "num_attention_heads": s.heads,
            "num_hidden_layers": s.layers, "intermediate_size": s.inter,
            "max_position_embeddings": 64, "use_parallel_residual": true,
            "rotary_pct": if variant && s.head_dim.is_multiple_of(4) { 0.5 } else { 1.0 },
            "attention_bias": bias,
        }),
        2 => json!({
            "model_type": "phi", "hidden_size": hidden, "num_attention_heads": s.heads,
            "num_key_value_heads": s.kv_heads, "num_hidden_layers": s.layers,
            "intermediate_size": s.inter, "max_position_embeddings": 64,
            "partial_rotary_factor": if s.head_dim.is_multiple_of(4) { 0.5 } else { 1.0 },
            "qk_layernorm": variant,
        }),
        3 => json!({
            "model_type": "falcon", "hidden_size": hidden, "num_attention_heads": s.heads,
            "num_hidden_layers": s.layers, "new_decoder_architecture": variant,
            "num_kv_heads": s.kv_heads, "multi_query": !bias, "bias": bias,
            "ffn_hidden_size": s.inter, "parallel_attn": true,
        }),
        4 => json!({
            "model_type": "cohere", "hidden_size": hidden, "num_attention_heads": s.heads,
            "num_key_value_heads": s.kv_heads, "num_hidden_layers": s.layers,
            "intermediate_size": s.inter, "use_qk_norm": variant, "logit_scale": 0.25,
            "attention_bias": bias,
        }),
        _ => json!({
            "model_type": "cohere2", "hidden_size": hidden, "num_attention_heads": s.heads,
            "num_key_value_heads": s.kv_heads, "num_hidden_layers": s.layers,
            "intermediate_size": s.inter, "sliding_window": 2, "sliding_window_pattern": 2,
            "head_dim": if variant { Some(s.head_dim) } else { None },
            "attention_bias": bias,
        }),
    };
    c["vocab_size"] = json!(s.vocab);
    c["tie_word_embeddings"] = json!(tie);
    c
}

struct Sizes {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    layers: usize,
    inter: usize,
    vocab: usize,
}

/// Fills `len` small weights from the input bytes (cycled), offset by `base`.
fn weights(src: &[u8], len: usize, seed: usize, base: f32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let b = if src.is_empty() {
                (i * 31 + seed * 7) as u8
            } else {
                src[(i + seed * 13) % src.len()]
            };
            base + (b as i8) as f32 / 128.0
        })
        .collect()
}

/// The dense tensors `arch` loads (names and shapes as the model loader expects them), and the
/// names of the projections (LoRA and quantization targets) with their [out, in] sizes.
#[allow(clippy::type_complexity)]
fn model_tensors(
    a: &ArchParams,
) -> Option<(Vec<(String, Vec<usize>, f32)>, Vec<(String, usize, usize)>)> {
    let n = &a.names;
    let h = a.hidden;
    let mut t: Vec<(String, Vec<usize>, f32)> = Vec::new();
    let mut lin: Vec<(String, usize, usize)> = Vec::new();
    t.push((format!("{}.weight", n.embed), vec![a.vocab, h], 0.0));
    t.push((format!("{}.weight", n.final_norm), vec![h], 1.0));
    if a.norm_bias {
        t.push((format!("{}.bias", n.final_norm), vec![h], 0.0));
    }
    if !a.tie_embeddings {
        t.push((format!("{}.weight", n.head), vec![a.vocab, h], 0.0));
        if a.head_bias {
            t.push((format!("{}.bias", n.head), vec![a.vocab], 0.0));
        }
    }
    let (qd, kvd) = (a.heads * a.head_dim, a.kv_heads * a.head_dim);
    for i in 0..a.num_layers {
        let p = format!("{}.{i}", n.layer_prefix);
        let mut norm = |name: &str, shape: Vec<usize>, bias: bool| {
            t.push((format!("{p}.{name}.weight"), shape.clone(), 1.0));
            if bias {
                t.push((format!("{p}.{name}.bias"), shape, 0.0));
            }
        };
        norm(n.norm_attn, vec![h], a.norm_bias);
        if let (true, Some(m)) = (a.two_norms, n.norm_mlp) {
            norm(m, vec![h], a.norm_bias);
        }
        match (a.qk_norm, n.q_norm, n.k_norm) {
            (QkNorm::SharedLayerNorm, Some(q), Some(k)) => {
                norm(q, vec![a.head_dim], true);
                norm(k, vec![a.head_dim], true);
            }
            (QkNorm::PerHead, Some(q), Some(k)) => {
                norm(q, vec![a.heads, a.head_dim], false);
                norm(k, vec![a.kv_heads, a.head_dim], false);
            }
            _ => {}
        }
        let mut proj = |name: &str, out_f: usize, in_f: usize, bias: bool| {
            let m = format!("{p}.{name}");
            t.push((format!("{m}.weight"), vec![out_f, in_f], 0.0));
            if bias {
                t.push((format!("{m}.bias"), vec![out_f], 0.0));
            }
            lin.push((m, out_f, in_f));
        };
        if a.qkv_layout == QkvLayout::Separate {
            proj(n.qkv.first()?, qd, h, a.qkv_bias);
            proj(n.qkv.get(1)?, kvd, h, a.qkv_bias);
            proj(n.qkv.get(2)?, kvd, h, a.qkv_bias);
        } else {
            proj(n.qkv.first()?, a.qkv_width(), h, a.qkv_bias);
        }
        proj(n.out_proj, h, qd, a.out_bias);
        match a.mlp {
            MlpKind::Plain(_) => {
                proj(n.mlp.first()?, a.intermediate, h, a.mlp_bias);
                proj(n.mlp.get(1)?, h, a.intermediate, a.mlp_bias);
            }
            MlpKind::Gated(_) => {
                proj(n.mlp.first()?, a.intermediate, h, a.mlp_bias);
                proj(n.mlp.get(1)?, a.intermediate, h, a.mlp_bias);
                proj(n.mlp.get(2)?, h, a.intermediate, a.mlp_bias);
            }
        }
    }
    let total = t
        .iter()
        .try_fold(0usize, |acc, (_, s, _)| acc.checked_add(s.iter().product()))?;
    (total <= BUDGET).then_some((t, lin))
}

fn write_json(path: &Path, v: &Value) -> bool {
    std::fs::write(path, v.to_string()).is_ok()
}

fn save(path: &Path, tensors: &[(String, Tensor)]) -> bool {
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    save_safetensors(path, &refs, None).is_ok()
}

/// Replaces one tensor (picked by `which`) by a broken version: dropped, one row longer,
/// integer-typed, holding a NaN, or 1-D.
fn corrupt(tensors: &mut Vec<(String, Tensor)>, which: u8, how: u8) {
    if tensors.is_empty() {
        return;
    }
    let i = which as usize % tensors.len();
    let t = &tensors[i].1;
    let shape = t.shape().to_vec();
    let numel = t.numel();
    let replacement = match how % 5 {
        0 => {
            tensors.remove(i);
            return;
        }
        1 => {
            let mut s = shape.clone();
            if let Some(d) = s.first_mut() {
                *d += 1;
            }
            let len = s.iter().product();
            Tensor::from_f32(vec![0.5; len], &s)
        }
        2 => Tensor::from_host(HostData::I32(vec![1; numel]), &shape),
        3 => {
            let mut v = vec![0.25f32; numel];
            if let Some(x) = v.first_mut() {
                *x = f32::NAN;
            }
            Tensor::from_f32(v, &shape)
        }
        _ => Tensor::from_f32(vec![0.5; numel], &[numel]),
    };
    if let Ok(r) = replacement {
        tensors[i].1 = r;
    }
}

/// Writes the tensors as two shards and an index; `mode` 1-3 breaks the index (a missing
/// shard, a tensor in both shards, a shard name that leaves the directory).
fn write_shards(dir: &Path, tensors: &[(String, Tensor)], mode: u8) -> bool {
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut parts: [Vec<(String, Tensor)>; 2] = [Vec::new(), Vec::new()];
    let mut map = serde_json::Map::new();
    for (i, (n, t)) in tensors.iter().enumerate() {
        let Ok(c) = t.try_clone() else { return false };
        parts[i % 2].push((n.clone(), c));
        map.insert(n.clone(), json!(names[i % 2]));
    }
    match mode % 4 {
        1 => {
            if let Some((_, v)) = map.iter_mut().next() {
                *v = json!("model-00003-of-00002.safetensors");
            }
        }
        2 => {
            if let Some((n, t)) = tensors.first() {
                if let Ok(c) = t.try_clone() {
                    parts[1].push((n.clone(), c));
                }
            }
        }
        3 => {
            if let Some((_, v)) = map.iter_mut().next() {
                *v = json!("../model.safetensors");
            }
        }
        _ => {}
    }
    save(&dir.join(names[0]), &parts[0])
        && save(&dir.join(names[1]), &parts[1])
        && write_json(
            &dir.join("model.safetensors.index.json"),
            &json!({"metadata": {}, "weight_map": map}),
        )
}

/// One fuzz input through config parsing, checkpoint loading, adapters and the forward.
pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let family = b.u8();
    let flags = b.u8();
    let flags2 = b.u8();
    let heads = 1 + b.u8() as usize % 4;
    let kv_sel = b.u8() as usize;
    let divisors: Vec<usize> = (1..=heads).filter(|d| heads.is_multiple_of(*d)).collect();
    let kv_heads = divisors[kv_sel % divisors.len()];
    let sizes = Sizes {
        heads,
        kv_heads,
        head_dim: 2 * (1 + b.u8() as usize % 4),
        layers: 1 + b.u8() as usize % 3,
        inter: 1 + b.u8() as usize % 16,
        vocab: 1 + b.u8() as usize % 16,
    };
    let quant_sel = [b.u8(), b.u8(), b.u8()];
    let (lora_rank, lora_alpha) = (1 + b.u8() as usize % 4, b.u8());
    let edits = b.u8() % 4;
    let all_values = values();
    let edit_list: Vec<(&str, Value)> = (0..edits)
        .map(|_| {
            let k = KEYS[b.u8() as usize % KEYS.len()];
            let v = all_values[b.u8() as usize % all_values.len()].clone();
            (k, v)
        })
        .collect();
    let (corrupt_which, corrupt_how) = (b.u8(), b.u8());
    let q_len = 1 + b.u8() as usize % 4;
    let ids_raw: Vec<u8> = (0..q_len + 1).map(|_| b.u8()).collect();
    let src = b.rest();

    let bias = flags2 & 1 != 0;
    let base = base_config(family, &sizes, flags & 64 != 0, bias, flags & 32 != 0);
    let mut edited = base.clone();
    for (k, v) in &edit_list {
        edited[*k] = v.clone();
    }
    // The weights follow the edited config when it parses and fits the budget (so odd but
    // valid settings reach the forward), else the base config (so the edits meet weights
    // they may not fit).
    let follow_edits = flags2 & 2 != 0;
    let arch = if follow_edits {
        ArchParams::from_json(&edited)
            .ok()
            .filter(|a| model_tensors(a).is_some())
            .or_else(|| ArchParams::from_json(&base).ok())
    } else {
        ArchParams::from_json(&base).ok()
    };
    let Some(arch) = arch else { return };
    let Some((specs, linears)) = model_tensors(&arch) else {
        return;
    };
    let f16_weights = flags & 3 == 3;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (i, (name, shape, base)) in specs.iter().enumerate() {
        let v = weights(src, shape.iter().product(), i, *base);
        let t = if f16_weights {
            Tensor::from_f32_as(&v, shape, DType::F16)
        } else {
            Tensor::from_f32(v, shape)
        };
        match t {
            Ok(t) => tensors.push((name.clone(), t)),
            Err(_) => return,
        }
    }

    // Quantization of the projections.
    let mut config = edited;
    let quant = flags & 3;
    if quant == 1 || quant == 2 {
        let (gptq, exl2) = if quant == 1 {
            let cfg = GptqConfig {
                bits: [2, 3, 4, 8][quant_sel[0] as usize % 4],
                group_size: [-1, 2, 4, 8, 3][quant_sel[1] as usize % 5],
                desc_act: quant_sel[0] & 4 != 0,
                sym: quant_sel[0] & 8 != 0,
                checkpoint_format_v2: quant_sel[0] & 16 != 0,
            };
            (Some(cfg), None)
        } else {
            let widths = [8u32, 6, 5, 4, 3, 2];
            let mut w = [
                widths[quant_sel[0] as usize % 6],
                widths[quant_sel[1] as usize % 6],
            ];
            w.sort_by(|a, b| b.cmp(a));
            let recipe = Exl2Recipe {
                parts: vec![(w[0], 16, 0.5), (w[1], 32, 1.0)],
                permute: quant_sel[2] & 1 != 0,
            };
            (None, Some(recipe))
        };
        let mut out: Vec<(String, Tensor)> = Vec::new();
        for (name, t) in tensors {
            let prefix = name.strip_suffix(".weight").unwrap_or(&name).to_string();
            let Some(&(_, n, k)) = linears.iter().find(|(m, ..)| *m == prefix) else {
                out.push((name, t));
                continue;
            };
            let Ok(w) = t.f32_values() else { return };
            let packed = match (&gptq, &exl2) {
                (Some(cfg), _) => {
                    let g_idx = cfg.desc_act.then(|| {
                        // Rows in reverse order of groups: an unsorted g_idx (act-order).
                        let groups = cfg.groups(k) as i32;
                        (0..k as i32)
                            .map(|r| groups - 1 - r % groups)
                            .collect::<Vec<_>>()
                    });
                    pack_gptq(&w, n, k, cfg, g_idx.as_deref(), None, &prefix)
                }
                (_, Some(recipe)) => match recipe.layout(k) {
                    Ok(layout) => {
                        let perm: Option<Vec<usize>> =
                            recipe.permute.then(|| (0..k).rev().collect());
                        pack_exl2(&w, n, k, &layout, perm.as_deref(), None, &prefix)
                    }
                    Err(_) => return,
                },
                _ => return,
            };
            match packed {
                Ok(p) => out.extend(p),
                Err(_) => return,
            }
        }
        tensors = out;
        if flags & 4 != 0 {
            let qc = match &gptq {
                Some(c) => json!({
                    "quant_method": "gptq", "bits": c.bits, "group_size": c.group_size,
                    "desc_act": c.desc_act, "sym": c.sym,
                    "checkpoint_format": if c.checkpoint_format_v2 { "gptq_v2" } else { "gptq" },
                }),
                None => json!({"quant_method": "exl2", "bits": 4.0}),
            };
            if config.get("quantization_config").is_none_or(Value::is_null) {
                config["quantization_config"] = qc;
            }
        }
    }
    if flags & 128 != 0 {
        corrupt(&mut tensors, corrupt_which, corrupt_how);
    }

    // The directory.
    let dir = common::scratch_dir("model");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() || !write_json(&dir.join("config.json"), &config) {
        return;
    }
    let written = if flags & 8 != 0 {
        write_shards(&dir, &tensors, flags2 >> 3)
    } else {
        save(&dir.join("model.safetensors"), &tensors)
    };
    if !written {
        return;
    }

    // The adapter: A [r, in], B [out, r] on every other projection.
    let adapter = if flags & 16 != 0 {
        let adir = dir.join("adapter");
        let _ = std::fs::create_dir_all(&adir);
        let alpha = match lora_alpha % 6 {
            0 => json!(16),
            1 => json!(1e39),
            2 => json!(-8.5),
            3 => json!(0),
            4 => json!(f64::MAX),
            _ => json!(lora_alpha as f64 / 8.0),
        };
        let acfg = json!({"peft_type": "LORA", "r": lora_rank, "lora_alpha": alpha,
                          "use_rslora": flags2 & 4 != 0});
        let mut at: Vec<(String, Tensor)> = Vec::new();
        for (i, (m, n, k)) in linears.iter().enumerate().step_by(2) {
            let (mut r_a, r_b) = (lora_rank, lora_rank);
            if flags2 & 32 != 0 && i == 0 {
                r_a += 1;
            }
            let a = Tensor::from_f32(weights(src, r_a * k, i + 1, 0.0), &[r_a, *k]);
            let bt = Tensor::from_f32(weights(src, n * r_b, i + 2, 0.0), &[*n, r_b]);
            let (Ok(a), Ok(bt)) = (a, bt) else { return };
            at.push((format!("base_model.model.{m}.lora_A.weight"), a));
            at.push((format!("base_model.model.{m}.lora_B.weight"), bt));
        }
        if !write_json(&adir.join("adapter_config.json"), &acfg)
            || !save(&adir.join("adapter_model.safetensors"), &at)
        {
            return;
        }
        Some(adir)
    } else {
        None
    };

    // Load and run.
    let loaded = Model::load(&dir);
    common::debug(&loaded);
    let Ok(mut model) = loaded else { return };
    if let Ok(w) = Weights::from_dir(&dir) {
        let _ = paradec::quant::QuantConfig::detect(&w);
    }
    let lora = match &adapter {
        Some(adir) => match Lora::load(adir) {
            Ok(l) => {
                let r = model.add_lora(&l);
                common::debug(&r);
                if r.is_err() {
                    return;
                }
                Some(l)
            }
            Err(e) => {
                common::debug::<()>(&Err(e));
                return;
            }
        },
        None => None,
    };
    let loras: Vec<&Lora> = lora.iter().collect();
    let sane = edit_list.is_empty() && flags & 128 == 0;
    let vocab = model.arch.vocab;
    let Ok(mut cache) = KvCache::for_model(&model.arch, 1, 8, DType::F32, Device::Cpu) else {
        return;
    };
    let mut ws = Workspace::cpu();
    // Ids mostly in range; a byte ≥ 250 gives one past the vocabulary.
    let id = |x: u8| {
        if x >= 250 {
            vocab as u32
        } else {
            x as u32 % vocab as u32
        }
    };
    let prompt: Vec<u32> = ids_raw[..q_len].iter().map(|&x| id(x)).collect();
    let steps = [
        (prompt, AttnParams::new(1, q_len)),
        (
            vec![id(ids_raw[q_len])],
            AttnParams::with_past(1, 1, vec![q_len]),
        ),
    ];
    for (ids, p) in &steps {
        let out = model.forward_inspect(
            &Stream::Host,
            ids,
            p,
            Some(&mut cache),
            &loras,
            &mut ws,
            false,
            &mut |_| {},
        );
        common::debug(&out);
        match out {
            Ok(out) => {
                let logits = out.logits;
                assert_eq!(logits.shape(), &[1, ids.len(), vocab]);
                // An unedited config with intact weights (all in [-1, 2]) gives finite logits.
                if sane {
                    let v = logits.f32_values().unwrap_or_default();
                    assert!(v.iter().all(|x| x.is_finite()), "non-finite logits");
                }
            }
            Err(_) => return,
        }
    }
}
