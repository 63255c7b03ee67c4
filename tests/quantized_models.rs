//! Every fixture family quantized with paradec's packers — GPTQ-4 with act-order, GPTQ-8,
//! GPTQ-3 and an EXL2 mix using every width 2–8 across the model's projections — runs through
//! the full model; its outputs equal those of the same model with the dequantized weights
//! stored dense in f32. LoRA adapters work over quantized projections the same way.

mod common;

use std::path::Path;

use common::*;
use paradec::layers::lora::Lora;
use paradec::quant::pack::{quantize_model_dir, Exl2Recipe, QuantSpec};
use paradec::quant::GptqConfig;
use paradec::weights::save_safetensors;
use paradec::{DType, Model, Tensor, Weights};

const TOL: f64 = 1e-4;

/// Decoder-layer projections only: not embeddings, heads, or Cohere's 2-D q/k norm weights.
fn is_projection(name: &str) -> bool {
    (name.contains(".layers.") || name.contains(".h.")) && !name.contains("norm")
}

fn gptq(bits: u32, group_size: i64, desc_act: bool, sym: bool, v2: bool) -> QuantSpec {
    QuantSpec::Gptq(GptqConfig {
        bits,
        group_size,
        desc_act,
        sym,
        checkpoint_format_v2: v2,
    })
}

/// Quantizes a fixture into `dst`. EXL2 runs three passes so that attention, MLP-input and
/// MLP-output projections get different mixes and the model uses every width.
fn quantize(variant: &str, scheme: &str, dst: &Path) -> Vec<String> {
    let src = fixture(variant);
    let mut done = Vec::new();
    let mut one = |src: &Path, dst: &Path, spec: &QuantSpec, which: &dyn Fn(&str) -> bool| {
        done.extend(
            quantize_model_dir(src, dst, spec, which)
                .unwrap_or_else(|e| panic!("{variant} {scheme}: {e}")),
        );
    };
    match scheme {
        "gptq4_act_order" => one(&src, dst, &gptq(4, 32, true, false, false), &is_projection),
        "gptq8" => one(&src, dst, &gptq(8, -1, false, true, true), &is_projection),
        "gptq3" => one(&src, dst, &gptq(3, 32, false, false, true), &is_projection),
        "exl2_mix" => {
            let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let attn =
                |n: &str| is_projection(n) && (n.contains("attn") || n.contains("attention"));
            let mlp_in = |n: &str| {
                is_projection(n)
                    && ["fc_in", "fc1", "dense_h_to_4h", "gate_proj", "up_proj"]
                        .iter()
                        .any(|m| n.contains(m))
            };
            let mlp_out = |n: &str| {
                is_projection(n)
                    && ["fc_out", "fc2", "dense_4h_to_h", "down_proj"]
                        .iter()
                        .any(|m| n.contains(m))
            };
            let recipe = |parts: Vec<(u32, usize, f64)>| {
                QuantSpec::Exl2(Exl2Recipe {
                    parts,
                    permute: true,
                })
            };
            one(
                &src,
                t1.path(),
                &recipe(vec![(8, 32, 0.5), (6, 32, 0.5)]),
                &attn,
            );
            one(
                t1.path(),
                t2.path(),
                &recipe(vec![(5, 32, 0.5), (4, 32, 0.5)]),
                &mlp_in,
            );
            one(
                t2.path(),
                dst,
                &recipe(vec![(3, 32, 0.5), (2, 16, 0.5)]),
                &mlp_out,
            );
        }
        other => panic!("unknown scheme {other}"),
    }
    done
}

/// The same model with every projection dequantized and stored dense in f32.
fn dequantized_twin(qdir: &Path, model: &Model, dst: &Path) {
    let w = Weights::from_dir(qdir).unwrap();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut packed_prefixes = Vec::new();
    for layer in model.layers() {
        for l in layer.linears() {
            tensors.push((format!("{}.weight", l.name), l.dense_weight().unwrap()));
            if let Some(b) = l.bias_values().unwrap() {
                let n = b.len();
                tensors.push((
                    format!("{}.bias", l.name),
                    Tensor::from_f32(b, &[n]).unwrap(),
                ));
            }
            packed_prefixes.push(format!("{}.", l.name));
        }
    }
    for n in w.names() {
        if !packed_prefixes.iter().any(|p| n.starts_with(p.as_str())) {
            tensors.push((
                n.to_string(),
                w.get(n).unwrap().to_dtype(DType::F32).unwrap(),
            ));
        }
    }
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    save_safetensors(dst.join("model.safetensors"), &refs, None).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(qdir.join("config.json")).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("quantization_config");
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
}

fn check(variant: &str, scheme: &str) {
    let qdir = tempfile::tempdir().unwrap();
    let quantized = quantize(variant, scheme, qdir.path());
    let mut qmodel = Model::load(qdir.path()).unwrap_or_else(|e| panic!("{variant} {scheme}: {e}"));
    let n_linears: usize = qmodel.layers().iter().map(|l| l.linears().len()).sum();
    assert_eq!(
        quantized.len(),
        n_linears,
        "{variant} {scheme}: every projection quantized"
    );
    assert!(qmodel.layers().iter().all(|l| l.is_quant()));
    let ddir = tempfile::tempdir().unwrap();
    dequantized_twin(qdir.path(), &qmodel, ddir.path());
    let mut dmodel = Model::load(ddir.path()).unwrap();
    assert!(!dmodel.layers()[0].is_quant());

    let compare = |a: &[StepOut], b: &[StepOut], what: &str| {
        for (t, ((la, ha, keep), (lb, hb, _))) in a.iter().zip(b).enumerate() {
            for (l, (x, y)) in ha.iter().zip(hb).enumerate() {
                let e = rel_err_rows(x, y, x.len() / keep.len(), keep);
                assert!(
                    e <= TOL,
                    "{variant} {scheme}{what}: step {t} layer {l} hidden rel err {e:.3e}"
                );
            }
            let e = rel_err_rows(la, lb, la.len() / keep.len(), keep);
            assert!(
                e <= TOL,
                "{variant} {scheme}{what}: step {t} logits rel err {e:.3e}"
            );
        }
    };
    let (q_out, d_out) = (
        run_fixture_steps(&qmodel, variant, &[]),
        run_fixture_steps(&dmodel, variant, &[]),
    );
    compare(&q_out, &d_out, "");
    // Quantization really happened: the outputs moved away from the f32 model's.
    let base = reference(variant);
    let moved = rel_err_rows(
        &q_out[0].0,
        base.get("step0.logits").unwrap().as_f32().unwrap(),
        qmodel.arch.vocab,
        &q_out[0].2,
    );
    assert!(
        moved > 1e-5,
        "{variant} {scheme}: outputs identical to the unquantized model"
    );

    // LoRA over the quantized projections (EXL2's permutation included) = LoRA over the dense twin.
    let lora = Lora::load(fixture(variant).join("lora")).unwrap();
    qmodel.add_lora(&lora).unwrap();
    dmodel.add_lora(&lora).unwrap();
    compare(
        &run_fixture_steps(&qmodel, variant, &[&lora]),
        &run_fixture_steps(&dmodel, variant, &[&lora]),
        " + LoRA",
    );
    // rank_reduce refuses quantized layers and changes nothing.
    assert!(qmodel.rank_reduce(0.5).is_err());
}

fn check_all_schemes(variant: &str) {
    for scheme in ["gptq4_act_order", "gptq8", "gptq3", "exl2_mix"] {
        check(variant, scheme);
    }
}

fixture_tests!(check_all_schemes);

#[test]
fn exl2_mix_uses_every_width() {
    let dir = tempfile::tempdir().unwrap();
    quantize("cohere", "exl2_mix", dir.path());
    let model = Model::load(dir.path()).unwrap();
    let mut widths = std::collections::BTreeSet::new();
    let w = Weights::from_dir(dir.path()).unwrap();
    for layer in model.layers() {
        for l in layer.linears() {
            let g = w.get(&format!("{}.q_groups", l.name)).unwrap();
            let paradec::HostData::I16(v) = g.host().unwrap() else {
                panic!("q_groups dtype")
            };
            widths.extend(v.iter().step_by(2).map(|&b| b as u16));
        }
    }
    assert_eq!(
        widths.into_iter().collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6, 8]
    );
}
