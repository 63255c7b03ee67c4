//! Config parsing in both transformers conventions, rejected configs, and bad input: every
//! failure is an error that names what was wrong, never a panic.

mod common;

use std::path::Path;

use common::*;
use paradec::arch::rope::RopeScaling;
use paradec::arch::{Family, Rotary};
use paradec::weights::save_safetensors;
use paradec::{
    ArchParams, AttnParams, DType, Device, Error, KvCache, Model, Stream, Tensor, Weights,
    Workspace,
};
use serde_json::{json, Value};

const ALL: [&str; 10] = [
    "gptj",
    "gpt_neox",
    "gpt_neox_gelu_fast",
    "phi",
    "phi_qk_layernorm",
    "falcon_7b_mqa",
    "falcon_new_2ln_gqa",
    "falcon_new_1ln",
    "cohere",
    "cohere2",
];

fn config(variant: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(variant).join("config.json")).unwrap())
        .unwrap()
}

/// Rewrites a transformers 5.x config the way 4.x checkpoints carry the same settings.
fn to_4x(mut c: Value) -> Value {
    let o = c.as_object_mut().unwrap();
    let rp = o.remove("rope_parameters");
    let rp = rp.as_ref();
    let get = |k: &str| rp.and_then(|r| r.get(k)).cloned();
    match o["model_type"].as_str().unwrap() {
        "gpt_neox" => {
            if let Some(t) = get("rope_theta") {
                o.insert("rotary_emb_base".into(), t);
            }
            if let Some(p) = get("partial_rotary_factor") {
                o.insert("rotary_pct".into(), p);
            }
        }
        "phi" => {
            o.insert("rope_theta".into(), get("rope_theta").unwrap());
            o.insert(
                "partial_rotary_factor".into(),
                get("partial_rotary_factor").unwrap(),
            );
        }
        "cohere2" => {
            o.insert("rope_theta".into(), get("rope_theta").unwrap());
            o.remove("layer_types");
            o.insert("sliding_window_pattern".into(), json!(2));
        }
        "gptj" => {}
        _ => {
            o.insert("rope_theta".into(), get("rope_theta").unwrap());
        }
    }
    c
}

#[test]
fn transformers_4x_configs_give_the_same_params() {
    for v in ALL {
        let five = ArchParams::from_json(&config(v)).unwrap();
        let four_cfg = to_4x(config(v));
        assert!(four_cfg.get("rope_parameters").is_none());
        let four = ArchParams::from_json(&four_cfg).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(four, five, "{v}: 4.x-style config parsed differently");
    }
}

#[test]
fn a_4x_neox_checkpoint_runs_and_matches_hf() {
    // 4.x GPT-NeoX reads rotary_emb_base and rotary_pct only; a stray rope_theta is ignored.
    let tmp = tempfile::tempdir().unwrap();
    let mut c = to_4x(config("gpt_neox"));
    c["rope_theta"] = json!(1234.0);
    std::fs::write(tmp.path().join("config.json"), c.to_string()).unwrap();
    std::fs::copy(
        fixture("gpt_neox").join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let model = Model::load(tmp.path()).unwrap();
    let r = reference("gpt_neox");
    let (ids, shape) = i64s(&r, "step0.input_ids");
    let (mask, _) = i64s(&r, "step0.attention_mask");
    let q = shape[1];
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let p = AttnParams::new(2, q).with_attention_mask(&mask, q).unwrap();
    let logits = model
        .forward(&Stream::Host, &ids, &p, None, &mut Workspace::cpu())
        .unwrap();
    let keep: Vec<bool> = mask.iter().map(|&m| m == 1).collect();
    let e = rel_err_rows(
        &values(&logits),
        r.get("step0.logits").unwrap().as_f32().unwrap(),
        model.arch.vocab,
        &keep,
    );
    assert!(e < 1e-4, "rel err {e}");
}

#[test]
fn hand_written_4x_configs() {
    // Phi-2 as published: partial_rotary_factor 0.4 of head_dim 80 → 32; linear scaling.
    let phi = json!({"model_type": "phi", "hidden_size": 2560, "num_attention_heads": 32, "num_hidden_layers": 2,
        "intermediate_size": 10240, "vocab_size": 51200, "partial_rotary_factor": 0.4, "rope_theta": 10000.0,
        "rope_scaling": {"type": "linear", "factor": 2.0}, "layer_norm_eps": 1e-5, "hidden_act": "gelu_new"});
    let a = ArchParams::from_json(&phi).unwrap();
    let Rotary::Rope(r) = &a.rotary[0] else {
        panic!()
    };
    assert_eq!((a.head_dim, r.rot_dim), (80, 32));
    assert_eq!(r.scaling, RopeScaling::Linear { factor: 2.0 });

    // Pythia: rotary_pct 0.25, rotary_emb_base 10000, dynamic scaling in 4.x's "type" key.
    let neox = json!({"model_type": "gpt_neox", "hidden_size": 512, "num_attention_heads": 8, "num_hidden_layers": 6,
        "intermediate_size": 2048, "vocab_size": 50304, "rotary_pct": 0.25, "rotary_emb_base": 10000,
        "max_position_embeddings": 2048, "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "use_parallel_residual": true, "hidden_act": "gelu"});
    let a = ArchParams::from_json(&neox).unwrap();
    let Rotary::Rope(r) = &a.rotary[0] else {
        panic!()
    };
    assert_eq!(r.rot_dim, 16);
    assert_eq!(
        r.scaling,
        RopeScaling::Dynamic {
            factor: 2.0,
            original_max: 2048
        }
    );

    // Falcon-7B: multi-query, one norm, tied head; YaRN in rope_scaling.
    let falcon = json!({"model_type": "falcon", "hidden_size": 4544, "num_attention_heads": 71, "num_hidden_layers": 2,
        "vocab_size": 65024, "multi_query": true, "parallel_attn": true, "new_decoder_architecture": false,
        "alibi": false, "bias": false, "rope_theta": 10000.0, "max_position_embeddings": 2048,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
    let a = ArchParams::from_json(&falcon).unwrap();
    assert_eq!((a.kv_heads, a.head_dim, a.two_norms), (1, 64, false));
    assert!(
        matches!(&a.rotary[0], Rotary::Rope(r) if matches!(r.scaling, RopeScaling::Yarn { factor, .. } if factor == 4.0))
    );

    // Command-R 4.x: top-level rope_theta, qk-norm off; Cohere2 with sliding_window_pattern 4.
    let cohere2 = json!({"model_type": "cohere2", "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 1,
        "num_hidden_layers": 8, "intermediate_size": 512, "vocab_size": 1000, "rope_theta": 50000.0,
        "sliding_window": 4096, "sliding_window_pattern": 4, "logit_scale": 0.25});
    let a = ArchParams::from_json(&cohere2).unwrap();
    assert_eq!(a.family, Family::Cohere2);
    let global: Vec<usize> = a
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| l.sliding_window == 0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(global, vec![3, 7]);
    assert!(a
        .layers
        .iter()
        .all(|l| (l.sliding_window == 0) == (a.rotary[l.rope_index] == Rotary::None)));
}

#[test]
fn rope_parameters_keyed_by_layer_type() {
    let c = json!({"model_type": "cohere2", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
        "intermediate_size": 128, "vocab_size": 100, "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {"sliding_attention": {"rope_type": "linear", "factor": 3.0, "rope_theta": 777.0},
                            "full_attention": {"rope_type": "default", "rope_theta": 999.0}}});
    let a = ArchParams::from_json(&c).unwrap();
    let Rotary::Rope(r) = &a.rotary[a.layers[0].rope_index] else {
        panic!()
    };
    assert_eq!(
        (r.theta, r.scaling.clone()),
        (777.0, RopeScaling::Linear { factor: 3.0 })
    );
    assert_eq!(a.rotary[a.layers[1].rope_index], Rotary::None);
}

fn err_of(c: Value) -> Error {
    ArchParams::from_json(&c).expect_err("config should be rejected")
}

#[test]
fn rejected_configs_name_the_field() {
    let mut c = config("gpt_neox");
    c["use_parallel_residual"] = json!(false);
    assert!(matches!(err_of(c), Error::Unsupported(m) if m.contains("use_parallel_residual")));

    let mut c = config("falcon_7b_mqa");
    c["parallel_attn"] = json!(false);
    assert!(matches!(err_of(c), Error::Unsupported(m) if m.contains("parallel_attn")));

    let mut c = config("falcon_7b_mqa");
    c["alibi"] = json!(true);
    assert!(matches!(err_of(c), Error::Unsupported(m) if m.contains("alibi")));

    for ty in ["longrope", "llama3", "su"] {
        let mut c = config("phi");
        c["rope_parameters"]["rope_type"] = json!(ty);
        assert!(
            matches!(err_of(c), Error::Unsupported(m) if m.contains(ty)),
            "{ty}"
        );
    }

    let mut c = config("cohere");
    c["model_type"] = json!("llama");
    assert!(matches!(err_of(c), Error::Unsupported(m) if m.contains("llama")));

    let mut c = config("cohere");
    c["hidden_size"] = json!("wide");
    assert!(matches!(err_of(c), Error::BadFormat(m) if m.contains("hidden_size")));

    let mut c = config("gpt_neox");
    c["rope_parameters"]["partial_rotary_factor"] = json!(1.5);
    assert!(matches!(err_of(c), Error::BadFormat(m) if m.contains("partial_rotary_factor")));

    let mut c = config("cohere2");
    c.as_object_mut().unwrap().remove("sliding_window");
    assert!(matches!(err_of(c), Error::BadFormat(m) if m.contains("sliding_window")));

    assert!(matches!(
        ArchParams::from_json_str("{not json"),
        Err(Error::BadFormat(_))
    ));
}

/// A copy of a fixture model whose tensors were changed by `edit`.
fn edited_model(variant: &str, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let w = Weights::from_files(&[fixture(variant).join("model.safetensors")]).unwrap();
    let mut ts: Vec<(String, Tensor)> = w
        .names()
        .iter()
        .map(|n| (n.to_string(), w.get(n).unwrap()))
        .collect();
    edit(&mut ts);
    let refs: Vec<(String, &Tensor)> = ts.iter().map(|(n, t)| (n.clone(), t)).collect();
    save_safetensors(tmp.path().join("model.safetensors"), &refs, None).unwrap();
    std::fs::copy(
        fixture(variant).join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    tmp
}

fn load_err(dir: &Path) -> Error {
    Model::load(dir).expect_err("load should fail")
}

#[test]
fn missing_tensor_is_named() {
    let name = "model.layers.1.self_attn.k_norm.weight";
    let dir = edited_model("cohere", |ts| ts.retain(|(n, _)| n != name));
    assert!(matches!(load_err(dir.path()), Error::NotFound(m) if m.contains(name)));
}

#[test]
fn wrong_shape_is_named() {
    let name = "gpt_neox.layers.0.attention.query_key_value.weight";
    let dir = edited_model("gpt_neox", |ts| {
        let t = &mut ts.iter_mut().find(|(n, _)| n == name).unwrap().1;
        let v = values(t);
        *t = Tensor::from_f32(v[..v.len() - 96].to_vec(), &[t.shape()[0] - 1, 96]).unwrap();
    });
    let e = load_err(dir.path());
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains(name) && m.contains("shape")),
        "{e}"
    );
}

#[test]
fn wrong_dtype_is_named() {
    let name = "transformer.h.0.mlp.fc_in.weight";
    let dir = edited_model("gptj", |ts| {
        let t = &mut ts.iter_mut().find(|(n, _)| n == name).unwrap().1;
        let ints: Vec<i32> = values(t).iter().map(|&x| x as i32).collect();
        *t = Tensor::from_host(paradec::HostData::I32(ints), t.shape()).unwrap();
    });
    let e = load_err(dir.path());
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains(name) && m.contains("i32")),
        "{e}"
    );
}

#[test]
fn truncated_safetensors_is_a_format_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("phi").join("model.safetensors")).unwrap();
    std::fs::copy(
        fixture("phi").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 100, 7, 0] {
        std::fs::write(tmp.path().join("model.safetensors"), &bytes[..cut]).unwrap();
        let e = load_err(tmp.path());
        assert!(
            matches!(&e, Error::BadFormat(m) if m.contains("model.safetensors")),
            "cut {cut}: {e}"
        );
    }
    // Garbage header length.
    let mut bad = bytes.clone();
    bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(tmp.path().join("model.safetensors"), &bad).unwrap();
    assert!(matches!(load_err(tmp.path()), Error::BadFormat(_)));
}

#[test]
fn missing_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(load_err(tmp.path()), Error::Io(m) if m.contains("config.json")));
    std::fs::copy(
        fixture("phi").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    assert!(matches!(load_err(tmp.path()), Error::NotFound(m) if m.contains("safetensors")));
}

#[test]
fn sharded_checkpoint_with_index_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let w =
        Weights::from_files(&[fixture("falcon_new_2ln_gqa").join("model.safetensors")]).unwrap();
    let names = w.names();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let ts: Vec<(String, Tensor)> = part
            .iter()
            .map(|n| (n.to_string(), w.get(n).unwrap()))
            .collect();
        let refs: Vec<(String, &Tensor)> = ts.iter().map(|(n, t)| (n.clone(), t)).collect();
        save_safetensors(tmp.path().join(file), &refs, None).unwrap();
        for n in part {
            map.insert(n.to_string(), json!(file));
        }
    }
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    std::fs::copy(
        fixture("falcon_new_2ln_gqa").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let sharded = Model::load(tmp.path()).unwrap();
    let whole = Model::load(fixture("falcon_new_2ln_gqa")).unwrap();
    let ids = [3u32, 17, 99, 5];
    let p = AttnParams::new(1, 4);
    let mut ws = Workspace::cpu();
    assert_eq!(
        values(
            &sharded
                .forward(&Stream::Host, &ids, &p, None, &mut ws)
                .unwrap()
        ),
        values(
            &whole
                .forward(&Stream::Host, &ids, &p, None, &mut ws)
                .unwrap()
        )
    );
    // An index naming a shard outside the directory is refused.
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        json!({"weight_map": {"x": "../evil.safetensors"}}).to_string(),
    )
    .unwrap();
    assert!(matches!(load_err(tmp.path()), Error::BadFormat(m) if m.contains("evil")));
}

#[test]
fn cache_capacity_and_call_shapes_are_checked() {
    let model = Model::load(fixture("cohere2")).unwrap();
    let mut ws = Workspace::cpu();
    let mut cache = KvCache::for_model(&model.arch, 1, 4, DType::F32, Device::Cpu).unwrap();
    model
        .forward(
            &Stream::Host,
            &[4, 5, 6],
            &AttnParams::new(1, 3),
            Some(&mut cache),
            &mut ws,
        )
        .unwrap();
    // 3 cached + 2 new > capacity 4.
    let p = AttnParams::with_past(1, 2, vec![3]);
    let e = model
        .forward(&Stream::Host, &[1, 2], &p, Some(&mut cache), &mut ws)
        .unwrap_err();
    assert!(
        matches!(&e, Error::CapacityExceeded(m) if m.contains("capacity 4")),
        "{e}"
    );
    // Exactly full is fine.
    model
        .forward(
            &Stream::Host,
            &[1],
            &AttnParams::with_past(1, 1, vec![3]),
            Some(&mut cache),
            &mut ws,
        )
        .unwrap();
    // Past without a cache, wrong id count, ids outside the vocabulary, batch mismatch.
    assert!(matches!(
        model.forward(
            &Stream::Host,
            &[1],
            &AttnParams::with_past(1, 1, vec![2]),
            None,
            &mut ws
        ),
        Err(Error::BadInput(_))
    ));
    assert!(
        matches!(model.forward(&Stream::Host, &[1, 2, 3], &AttnParams::new(1, 2), None, &mut ws), Err(Error::BadInput(m)) if m.contains("token ids"))
    );
    assert!(
        matches!(model.forward(&Stream::Host, &[100_000], &AttnParams::new(1, 1), None, &mut ws), Err(Error::BadInput(m)) if m.contains("100000"))
    );
    let mut two = KvCache::for_model(&model.arch, 2, 8, DType::F32, Device::Cpu).unwrap();
    assert!(
        matches!(model.forward(&Stream::Host, &[1], &AttnParams::new(1, 1), Some(&mut two), &mut ws), Err(Error::BadInput(m)) if m.contains("batch"))
    );
    assert!(KvCache::new(2, 0, 4, 2, 16, DType::F32, Device::Cpu).is_err());
    assert!(KvCache::new(2, 1, 4, 2, 16, DType::I32, Device::Cpu).is_err());
    // A device this build cannot reach is an error, not a crash.
    #[cfg(not(feature = "cuda"))]
    assert!(matches!(
        KvCache::new(1, 1, 4, 2, 16, DType::F16, Device::Cuda(0)),
        Err(Error::NoDevice(_))
    ));
}

#[test]
fn sizes_before_loading() {
    let model = Model::load(fixture("gptj")).unwrap();
    let file = std::fs::metadata(fixture("gptj").join("model.safetensors"))
        .unwrap()
        .len() as usize;
    // Every stored tensor is a weight of the model (fp32); the header is the only difference.
    assert!(
        model.weight_bytes() <= file && model.weight_bytes() > file - 16 * 1024,
        "{} vs {file}",
        model.weight_bytes()
    );
    let l = &model.layers()[0];
    let a = &model.arch;
    let want = 4 * a.hidden * a.hidden
        + 2 * a.hidden * a.intermediate
        + a.intermediate
        + a.hidden
        + 2 * a.hidden;
    assert_eq!(l.numel(), want);
    assert!(!l.is_quant());
    assert_eq!(
        KvCache::bytes_needed(2, 1, 10, 4, 16, DType::F16),
        2 * 2 * 10 * 4 * 16 * 2
    );
}

#[test]
fn impossible_allocations_are_errors_not_aborts() {
    // 2^55 bytes of cache: the host refuses, paradec reports it.
    let e = KvCache::new(1, 1 << 20, 1 << 20, 64, 128, DType::F32, Device::Cpu).unwrap_err();
    assert!(
        matches!(&e, Error::OutOfMemory(m) if m.contains("host")),
        "{e}"
    );
    // A shape whose element count overflows.
    let e = Tensor::zeros(&[usize::MAX, 3], DType::F16, Device::Cpu).unwrap_err();
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains("overflows")),
        "{e}"
    );
}

#[test]
fn a_cache_cannot_be_read_past_what_was_written_but_can_rewind() {
    let model = Model::load(fixture("gpt_neox")).unwrap();
    let mut ws = Workspace::cpu();
    let s = Stream::Host;
    let mut cache = KvCache::for_model(&model.arch, 2, 8, DType::F32, Device::Cpu).unwrap();
    // Nothing written yet: a decode step claiming 2 past positions is refused, naming them.
    let e = model
        .forward(
            &s,
            &[1, 2],
            &AttnParams::with_past(2, 1, vec![2, 2]),
            Some(&mut cache),
            &mut ws,
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains("sequence 0") && m.contains("reads 2") && m.contains("only 0")),
        "{e}"
    );
    assert_eq!(
        cache.held(0).unwrap(),
        &[0, 0],
        "a refused call records nothing"
    );
    model
        .forward(
            &s,
            &[1, 2, 3, 4, 5, 6],
            &AttnParams::new(2, 3),
            Some(&mut cache),
            &mut ws,
        )
        .unwrap();
    for l in 0..model.arch.num_layers {
        assert_eq!(cache.held(l).unwrap(), &[3, 3]);
    }
    // One sequence claiming more than it holds is named.
    let e = model
        .forward(
            &s,
            &[1, 2],
            &AttnParams::with_past(2, 1, vec![3, 4]),
            Some(&mut cache),
            &mut ws,
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains("sequence 1") && m.contains("reads 4")),
        "{e}"
    );
    // Rewinding (a shorter past, as when drafted tokens are rejected) is allowed and equals a
    // fresh cache fed the same tokens.
    let rewound = model
        .forward(
            &s,
            &[7, 8],
            &AttnParams::with_past(2, 1, vec![2, 2]),
            Some(&mut cache),
            &mut ws,
        )
        .unwrap();
    assert_eq!(cache.held(0).unwrap(), &[3, 3]);
    let mut fresh = KvCache::for_model(&model.arch, 2, 8, DType::F32, Device::Cpu).unwrap();
    model
        .forward(
            &s,
            &[1, 2, 4, 5],
            &AttnParams::new(2, 2),
            Some(&mut fresh),
            &mut ws,
        )
        .unwrap();
    let direct = model
        .forward(
            &s,
            &[7, 8],
            &AttnParams::with_past(2, 1, vec![2, 2]),
            Some(&mut fresh),
            &mut ws,
        )
        .unwrap();
    assert_eq!(rewound.f32_values().unwrap(), direct.f32_values().unwrap());
    // A single layer called directly is checked the same way.
    let layer = &model.layers()[1];
    let mut hidden = Tensor::zeros(&[2, model.arch.hidden], DType::F32, Device::Cpu).unwrap();
    let mut small = KvCache::for_model(&model.arch, 2, 8, DType::F32, Device::Cpu).unwrap();
    let e = layer
        .forward(
            &s,
            &mut hidden,
            Some(&mut small),
            &AttnParams::with_past(2, 1, vec![0, 1]),
            &[],
            &mut ws,
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains("layer 1") && m.contains("sequence 1")),
        "{e}"
    );
    small.clear();
    assert_eq!(small.held(1).unwrap(), &[0, 0]);
}

/// A workspace planned for a quantized cache also holds the dequantized K and V a prefill
/// over it reads; for the native cache the plan is unchanged.
#[test]
fn workspace_plan_counts_the_quantized_cache_prefill() {
    let arch = paradec::ArchParams::from_dir(fixture("cohere")).unwrap();
    let (tokens, kv_len) = (64, 100);
    let native = paradec::Workspace::bytes_needed(&arch, tokens, kv_len, DType::F16).unwrap();
    let same = paradec::Workspace::bytes_needed_for_mode(
        &arch,
        tokens,
        kv_len,
        DType::F16,
        &paradec::KvCacheMode::Native,
    )
    .unwrap();
    assert_eq!(native, same);
    let q8 = paradec::Workspace::bytes_needed_for_mode(
        &arch,
        tokens,
        kv_len,
        DType::F16,
        &paradec::KvCacheMode::Q8,
    )
    .unwrap();
    // Up to tokens / 17 + 1 = 4 sequences × kv_len × K and V × kv_heads · head_dim in f16.
    let gather = 4 * kv_len * 2 * arch.kv_heads * arch.head_dim * 2;
    assert!(q8 >= native + gather, "{q8} < {native} + {gather}");
}
