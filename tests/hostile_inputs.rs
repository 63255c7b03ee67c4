//! Hostile files: sizes and counts over `paradec::limits`, non-finite or nonsensical scalars,
//! oversized tensor headers and adapters. Each is refused with an error naming the field (and,
//! for sizes, the value and the limit) before anything is allocated from it.

mod common;

use common::*;
use paradec::layers::lora::Lora;
use paradec::quant::{GptqConfig, QuantConfig};
use paradec::weights::save_safetensors;
use paradec::{limits, ArchParams, Error, Model, Tensor, Weights};
use serde_json::{json, Value};

const HUGE: u64 = 2_555_551_555_555_555_527;

fn config(variant: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(variant).join("config.json")).unwrap())
        .unwrap()
}

fn format_err(c: &Value) -> String {
    match ArchParams::from_json(c) {
        Err(Error::BadFormat(m)) => m,
        other => panic!("expected a format error for {c}, got {other:?}"),
    }
}

#[test]
fn the_reported_config_is_an_error_not_a_panic() {
    let text = r#"{"model_type":"cohere","hidden_size":28,"num_attention_heads":4,"num_hidden_layers":2555551555555555527}"#;
    let e = ArchParams::from_json_str(text).unwrap_err().to_string();
    assert!(e.contains("num_hidden_layers = 2555551555555555527"), "{e}");
    assert!(e.contains(&limits::LAYERS.to_string()), "{e}");
    // The same through a model directory, as `examples/decode --model DIR` loads it.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), text).unwrap();
    let e = Model::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("num_hidden_layers"), "{e}");
}

#[test]
fn every_size_field_is_bounded() {
    let variants = [
        "gptj",
        "gpt_neox",
        "phi",
        "falcon_7b_mqa",
        "falcon_new_2ln_gqa",
        "cohere",
        "cohere2",
    ];
    let mut checked = 0;
    for v in variants {
        let base = config(v);
        for &(field, max) in limits::CONFIG_FIELDS {
            // Falcon without the new architecture has one KV head and ignores num_kv_heads.
            let unread = v == "falcon_7b_mqa" && field == "num_kv_heads";
            if unread || base.get(field).is_none_or(Value::is_null) {
                continue;
            }
            for value in [HUGE, max as u64 + 1] {
                let mut c = base.clone();
                c[field] = json!(value);
                let m = format_err(&c);
                assert!(
                    m.contains(&format!("{field} = {value}")) && m.contains(&max.to_string()),
                    "{v}.{field}: {m}"
                );
                checked += 1;
            }
        }
        // Within the rope settings too.
        let mut c = base.clone();
        c["rope_scaling"] = json!({"type": "dynamic", "factor": 2.0,
                                   "original_max_position_embeddings": HUGE});
        c.as_object_mut().unwrap().remove("rope_parameters");
        if v != "gptj" {
            let m = format_err(&c);
            assert!(m.contains("original_max_position_embeddings"), "{v}: {m}");
        }
    }
    assert!(checked >= 40, "{checked}");
}

#[test]
fn zero_hidden_size_is_refused() {
    // Found by the model_dir fuzzer: Cohere2 with an explicit head_dim took hidden_size 0, and
    // packing its 0-input projections as EXL2 underflowed.
    let mut c = config("cohere2");
    c["hidden_size"] = json!(0);
    c["head_dim"] = json!(16);
    let m = format_err(&c);
    assert!(m.contains("hidden size (0)"), "{m}");
    let recipe = paradec::quant::pack::Exl2Recipe {
        parts: vec![(4, 16, 0.5), (3, 32, 1.0)],
        permute: false,
    };
    let e = recipe.layout(0).unwrap_err().to_string();
    assert!(e.contains("in_features"), "{e}");
}

#[test]
fn derived_sizes_are_bounded() {
    // head_dim = hidden / heads.
    let mut c = config("gpt_neox");
    c["hidden_size"] = json!(65536);
    c["num_attention_heads"] = json!(2);
    let m = format_err(&c);
    assert!(m.contains("head_dim = 32768"), "{m}");
    // (heads + 2 · kv heads) · head_dim with an explicit head_dim.
    let mut c = config("cohere2");
    c["num_attention_heads"] = json!(1024);
    c["num_key_value_heads"] = json!(1024);
    c["head_dim"] = json!(1024);
    let m = format_err(&c);
    assert!(m.contains("head_dim") && m.contains("262144"), "{m}");
}

#[test]
fn non_finite_and_nonsensical_scalars_are_refused() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "phi",
            Box::new(|c| c["rope_parameters"]["rope_theta"] = json!(1e39)),
            "rope_theta",
        ),
        (
            "gpt_neox",
            Box::new(|c| c["layer_norm_eps"] = json!(1e39)),
            "layer_norm_eps",
        ),
        (
            "gpt_neox",
            Box::new(|c| c["layer_norm_eps"] = json!(0.0)),
            "layer_norm_eps",
        ),
        (
            "falcon_7b_mqa",
            Box::new(|c| c["layer_norm_epsilon"] = json!(-1e-5)),
            "layer_norm_epsilon",
        ),
        (
            "gptj",
            Box::new(|c| c["layer_norm_epsilon"] = json!(1e300)),
            "layer_norm_epsilon",
        ),
        (
            "cohere",
            Box::new(|c| c["logit_scale"] = json!(1e39)),
            "logit_scale",
        ),
        (
            "cohere",
            Box::new(|c| c["logit_scale"] = json!(-0.25)),
            "logit_scale",
        ),
        (
            "phi",
            Box::new(|c| {
                c["rope_parameters"] = json!({"rope_type": "linear", "factor": 1e39,
                                              "partial_rotary_factor": 0.5})
            }),
            "factor",
        ),
        (
            "phi",
            Box::new(|c| {
                c["rope_parameters"] = json!({"rope_type": "yarn", "factor": 2.0,
                                              "beta_fast": 0.0, "partial_rotary_factor": 0.5})
            }),
            "beta_fast",
        ),
        (
            "phi",
            Box::new(|c| {
                c["rope_parameters"] = json!({"rope_type": "yarn", "factor": 2.0,
                                              "beta_slow": -1.0, "partial_rotary_factor": 0.5})
            }),
            "beta_slow",
        ),
        (
            "phi",
            Box::new(|c| {
                c["rope_parameters"] = json!({"rope_type": "yarn", "factor": 2.0,
                                              "attention_factor": 0.0, "partial_rotary_factor": 0.5})
            }),
            "attention_factor",
        ),
        (
            "phi",
            Box::new(|c| {
                c["rope_parameters"] = json!({"rope_type": "yarn", "factor": 2.0,
                                              "mscale": 1e39, "partial_rotary_factor": 0.5})
            }),
            "mscale",
        ),
    ];
    for (variant, edit, field) in cases {
        let mut c = config(variant);
        edit(&mut c);
        let m = format_err(&c);
        assert!(m.contains(field), "{variant}/{field}: {m}");
    }
}

/// A copy of a fixture's adapter with `edit` applied to adapter_config.json.
fn edited_adapter(variant: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let src = fixture(variant).join("lora");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        tmp.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    edit(&mut c);
    std::fs::write(tmp.path().join("adapter_config.json"), c.to_string()).unwrap();
    tmp
}

#[test]
fn lora_alpha_and_rank_are_checked() {
    for alpha in [json!(1e39), json!(-1e300), json!(f64::MAX)] {
        let dir = edited_adapter("gpt_neox", |c| c["lora_alpha"] = alpha.clone());
        let e = Lora::load(dir.path()).unwrap_err();
        assert!(
            matches!(&e, Error::BadFormat(m) if m.contains("lora_alpha")),
            "{alpha}: {e}"
        );
    }
    let dir = edited_adapter("gpt_neox", |c| c["r"] = json!(HUGE));
    let e = Lora::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains(&format!("r = {HUGE}")) && e.contains(&limits::LORA_RANK.to_string()),
        "{e}"
    );
    // A finite alpha still loads, and the scale is finite.
    let dir = edited_adapter("gpt_neox", |c| c["lora_alpha"] = json!(1e30));
    let l = Lora::load(dir.path()).unwrap();
    assert!(l.modules.values().all(|m| m.scale.is_finite()));
}

/// Raw safetensors bytes with one header entry (no data).
fn header_only(name: &str, shape: Value) -> Vec<u8> {
    let h = json!({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}).to_string();
    let mut h = h.into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out
}

#[test]
fn tensor_headers_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    for (shape, want) in [
        (json!([0, 1u64 << 62]), "elements"),
        (json!([0, 1u64 << 30, 1u64 << 30, 4]), "elements"),
        (
            json!([1, 1, 1, 1, 1, 1, 1, 1, 0]),
            "number of dimensions = 9",
        ),
    ] {
        std::fs::write(&path, header_only("big.weight", shape.clone())).unwrap();
        let e = Weights::from_files(std::slice::from_ref(&path))
            .err()
            .unwrap_or_else(|| panic!("{shape} accepted"))
            .to_string();
        assert!(e.contains("big.weight") && e.contains(want), "{shape}: {e}");
    }
    // A zero-sized tensor of ordinary dimensions is fine.
    std::fs::write(&path, header_only("empty", json!([0, 4096]))).unwrap();
    assert!(Weights::from_files(&[path]).is_ok());
}

#[test]
fn gptq_group_size_is_bounded() {
    for qc in [
        json!({"quant_method": "gptq", "bits": 4, "group_size": 1_000_000_000_000i64}),
        json!({"bits": 4, "group_size": limits::GROUP_SIZE + 1}),
    ] {
        let e = GptqConfig::from_json(&qc).unwrap_err().to_string();
        assert!(e.contains("group_size") && e.contains("limit"), "{e}");
        let e = QuantConfig::from_json(&qc).unwrap_err().to_string();
        assert!(e.contains("group_size"), "{e}");
    }
}

#[test]
fn norm_weights_must_be_float() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Weights::from_files(&[fixture("gpt_neox").join("model.safetensors")]).unwrap();
    let name = "gpt_neox.final_layer_norm.weight";
    let ts: Vec<(String, Tensor)> = w
        .names()
        .iter()
        .map(|n| {
            let t = w.get(n).unwrap();
            let t = if *n == name {
                Tensor::from_host(paradec::HostData::I32(vec![1; t.numel()]), t.shape()).unwrap()
            } else {
                t
            };
            (n.to_string(), t)
        })
        .collect();
    let refs: Vec<(String, &Tensor)> = ts.iter().map(|(n, t)| (n.clone(), t)).collect();
    save_safetensors(tmp.path().join("model.safetensors"), &refs, None).unwrap();
    std::fs::copy(
        fixture("gpt_neox").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let e = Model::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains(name) && e.contains("float"), "{e}");
}
