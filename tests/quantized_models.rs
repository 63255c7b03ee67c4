//! Every fixture family quantized with paradec's packers — GPTQ-4 with act-order, GPTQ-8,
//! GPTQ-3 and an EXL2 mix using every width 2–8 across the model's projections — runs through
//! the full model; its outputs equal those of the same model with the dequantized weights
//! stored dense in f32. LoRA adapters work over quantized projections the same way.

mod common;

use std::path::Path;

use common::*;
use paradec::layers::lora::Lora;
use paradec::weights::save_safetensors;
use paradec::{DType, Model, Tensor, Weights};

const TOL: f64 = 1e-4;

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
    let quantized = quantize_fixture(variant, scheme, qdir.path());
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
    quantize_fixture("cohere", "exl2_mix", dir.path());
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
