//! PEFT LoRA adapters against HF transformers + PEFT references (made by the fixture script),
//! on every family — including fused `query_key_value` targets and rsLoRA — plus several
//! adapters at once, inactive and removed adapters.

mod common;

use common::*;
use paradec::layers::lora::Lora;
use paradec::{Error, Model};

const TOL: f64 = 1e-4;

fn check_variant(variant: &str) {
    let mut model = Model::load(fixture(variant)).unwrap();
    let lora =
        Lora::load(fixture(variant).join("lora")).unwrap_or_else(|e| panic!("{variant}: {e}"));
    model.add_lora(&lora).unwrap();
    let r = paradec::Weights::from_files(&[fixture(variant).join("lora/reference.safetensors")])
        .unwrap();
    let base = reference(variant);
    let (h, v) = (model.arch.hidden, model.arch.vocab);
    for (t, (logits, hidden, keep)) in run_fixture_steps(&model, variant, &[&lora])
        .into_iter()
        .enumerate()
    {
        for (l, hs) in hidden.iter().enumerate() {
            let want = r.get(&format!("step{t}.layer{l}.hidden_states")).unwrap();
            let e = rel_err_rows(hs, want.as_f32().unwrap(), h, &keep);
            assert!(
                e <= TOL,
                "{variant} step {t} layer {l} hidden_states with LoRA: rel err {e:.3e}"
            );
        }
        let want = r.get(&format!("step{t}.logits")).unwrap();
        let e = rel_err_rows(&logits, want.as_f32().unwrap(), v, &keep);
        assert!(
            e <= TOL,
            "{variant} step {t} logits with LoRA: rel err {e:.3e}"
        );
        // The adapter really changes the output: the base reference is far away.
        let b = base.get(&format!("step{t}.logits")).unwrap();
        assert!(rel_err_rows(&logits, b.as_f32().unwrap(), v, &keep) > 0.05);
    }
    // Registered but not active: the base model's outputs.
    for (t, (logits, _, keep)) in run_fixture_steps(&model, variant, &[])
        .into_iter()
        .enumerate()
    {
        let want = base.get(&format!("step{t}.logits")).unwrap();
        let e = rel_err_rows(&logits, want.as_f32().unwrap(), v, &keep);
        assert!(
            e <= TOL,
            "{variant} step {t}: inactive adapter changed the logits ({e:.3e})"
        );
    }
}

fixture_tests!(check_variant);

#[test]
fn two_adapters_add_up_and_removal_restores() {
    let variant = "gpt_neox";
    let dir = fixture(variant).join("lora");
    let mut model = Model::load(fixture(variant)).unwrap();
    let (a, b) = (Lora::load(&dir).unwrap(), Lora::load(&dir).unwrap());
    assert_ne!(a.id(), b.id());
    model.add_lora(&a).unwrap();
    model.add_lora(&b).unwrap();
    // One copy of the adapter with lora_alpha doubled is the same update as two copies.
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    cfg["lora_alpha"] = serde_json::json!(cfg["lora_alpha"].as_f64().unwrap() * 2.0);
    std::fs::write(tmp.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        dir.join("adapter_model.safetensors"),
        tmp.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let double = Lora::load(tmp.path()).unwrap();
    let mut model2 = Model::load(fixture(variant)).unwrap();
    model2.add_lora(&double).unwrap();
    let both = run_fixture_steps(&model, variant, &[&a, &b]);
    let one = run_fixture_steps(&model2, variant, &[&double]);
    for ((x, _, keep), (y, _, _)) in both.iter().zip(&one) {
        assert!(rel_err_rows(x, y, model.arch.vocab, keep) < 1e-5);
    }
    // Removing both gives the base model back.
    model.remove_lora(&a);
    model.remove_lora(&b);
    let base = reference(variant);
    for (t, (x, _, keep)) in run_fixture_steps(&model, variant, &[&a, &b])
        .iter()
        .enumerate()
    {
        let want = base.get(&format!("step{t}.logits")).unwrap();
        assert!(rel_err_rows(x, want.as_f32().unwrap(), model.arch.vocab, keep) < TOL);
    }
}

#[test]
fn adapters_that_do_not_fit_are_refused() {
    // An adapter for another model: its modules are not this model's projections.
    let mut model = Model::load(fixture("cohere")).unwrap();
    let foreign = Lora::load(fixture("gpt_neox").join("lora")).unwrap();
    assert!(
        matches!(model.add_lora(&foreign), Err(Error::Unsupported(m)) if m.contains("gpt_neox.layers.0.attention"))
    );
    // Same module names, other shapes (phi and phi_qk_layernorm share names; gptj's hidden differs).
    let mut phi = Model::load(fixture("phi")).unwrap();
    let ok = Lora::load(fixture("phi_qk_layernorm").join("lora")).unwrap();
    phi.add_lora(&ok).unwrap();
    // Unsupported adapter settings are named.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("cohere").join("lora");
    std::fs::copy(
        dir.join("adapter_model.safetensors"),
        tmp.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    cfg["use_dora"] = serde_json::json!(true);
    std::fs::write(tmp.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    assert!(matches!(Lora::load(tmp.path()), Err(Error::Unsupported(m)) if m.contains("use_dora")));
    cfg["use_dora"] = serde_json::json!(false);
    cfg["r"] = serde_json::json!(0);
    std::fs::write(tmp.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    assert!(matches!(Lora::load(tmp.path()), Err(Error::BadFormat(m)) if m.contains("r must be")));
    cfg["r"] = serde_json::json!(8);
    std::fs::write(tmp.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    assert!(matches!(Lora::load(tmp.path()), Err(Error::BadFormat(m)) if m.contains("rank r = 8")));
}
