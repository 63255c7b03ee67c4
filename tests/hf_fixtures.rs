//! Every fixture model against HF transformers (fp32, eager): each layer's intermediates and the
//! logits for the left-padded prefill and three cached decode steps, on non-pad positions; and
//! decoding through the cache equals a full recompute.

mod common;

use common::*;
use paradec::layers::norm::Norm;
use paradec::{AttnParams, DType, Device, KvCache, Model, Stream, Tensor, Workspace};

const TOL: f64 = 1e-4;

struct Step {
    ids: Vec<u32>,
    q_len: usize,
    mask: Vec<i64>,
    slots: usize,
}

fn load_steps(r: &paradec::Weights) -> Vec<Step> {
    (0..4)
        .map(|t| {
            let (ids, shape) = i64s(r, &format!("step{t}.input_ids"));
            let (mask, mshape) = i64s(r, &format!("step{t}.attention_mask"));
            Step {
                ids: ids.iter().map(|&i| i as u32).collect(),
                q_len: shape[1],
                mask,
                slots: mshape[1],
            }
        })
        .collect()
}

fn check_variant(variant: &str) {
    let dir = fixture(variant);
    let model = Model::load(&dir).unwrap_or_else(|e| panic!("{variant}: {e}"));
    let weights = paradec::Weights::from_dir(&dir).unwrap();
    let r = reference(variant);
    let steps = load_steps(&r);
    let batch = 2;
    let capacity = steps.last().unwrap().slots;
    let mut cache =
        KvCache::for_model(&model.arch, batch, capacity, DType::F32, Device::Cpu).unwrap();
    let mut ws = Workspace::cpu();
    let mut worst = 0.0f64;
    for (t, st) in steps.iter().enumerate() {
        let past = st.slots - st.q_len;
        let params = AttnParams::with_past(batch, st.q_len, vec![past; batch])
            .with_attention_mask(&st.mask, st.slots)
            .unwrap();
        // Non-pad query rows, and the positions HF used there must be ours.
        let keep: Vec<bool> = (0..batch)
            .flat_map(|b| (0..st.q_len).map(move |i| (b, i)))
            .map(|(b, i)| st.mask[b * st.slots + past + i] == 1)
            .collect();
        let (hf_pos, _) = i64s(&r, &format!("step{t}.position_ids"));
        for (i, (&ours, &theirs)) in params.positions().iter().zip(&hf_pos).enumerate() {
            if keep[i] {
                assert_eq!(ours, theirs, "{variant} step {t}: position of token {i}");
            }
        }
        let emb = model.embed_tokens(&Stream::Host, &st.ids, &mut ws).unwrap();
        let want = r.get(&format!("step{t}.embeddings")).unwrap();
        let e = rel_err_rows(
            &values(&emb),
            want.as_f32().unwrap(),
            model.arch.hidden,
            &keep,
        );
        assert!(e <= TOL, "{variant} step {t} embeddings: rel err {e:.3e}");

        let mut failures = Vec::new();
        let mut last_layer_out = None;
        let out = model
            .forward_inspect(
                &Stream::Host,
                &st.ids,
                &params,
                Some(&mut cache),
                &[],
                &mut ws,
                true,
                &mut |rep| {
                    let i = rep.interm.unwrap();
                    let l = rep.layer;
                    let mut check = |name: &str, got: Option<&paradec::Tensor>| {
                        let key = format!("step{t}.layer{l}.{name}");
                        match (got, r.contains(&key)) {
                            (Some(g), true) => {
                                let w = r.get(&key).unwrap();
                                let cols = *w.shape().last().unwrap();
                                let e = rel_err_rows(&values(g), w.as_f32().unwrap(), cols, &keep);
                                worst = worst.max(e);
                                if e > TOL {
                                    failures.push(format!("{key}: rel err {e:.3e}"));
                                }
                            }
                            (None, false) => {}
                            (Some(_), false) => {
                                failures.push(format!("{key}: paradec has it, HF does not"))
                            }
                            (None, true) => {
                                failures.push(format!("{key}: HF has it, paradec does not"))
                            }
                        }
                    };
                    check("post_norm", Some(&i.post_norm));
                    check("post_norm_mlp", i.post_norm_mlp.as_ref());
                    check("attn_output", Some(&i.attn_output));
                    check("pre_down", Some(&i.pre_down));
                    check("hidden_states_attn", Some(&i.hidden_states_attn));
                    check("hidden_states_mlp", Some(&i.hidden_states_mlp));
                    check("hidden_states", Some(&i.hidden_states));
                    last_layer_out = Some(values(&i.hidden_states));
                },
            )
            .unwrap_or_else(|e| panic!("{variant} step {t}: {e}"));
        assert!(failures.is_empty(), "{variant}:\n{}", failures.join("\n"));
        // The returned hidden states are the final norm of the last layer's output.
        let a = &model.arch;
        let final_norm = Norm::load(
            &weights,
            a.names.final_norm,
            a.norm,
            &[a.hidden],
            a.norm_bias,
            a.norm_eps,
        )
        .unwrap();
        let last =
            Tensor::from_f32(last_layer_out.take().unwrap(), &[st.ids.len(), a.hidden]).unwrap();
        let mut want_final =
            Tensor::zeros(&[st.ids.len(), a.hidden], DType::F32, Device::Cpu).unwrap();
        final_norm
            .forward(&Stream::Host, &last, &mut want_final)
            .unwrap();
        assert_eq!(
            values(&out.hidden_states),
            values(&want_final),
            "{variant} step {t}: final-norm hidden states"
        );
        let logits = out.logits;
        let want = r.get(&format!("step{t}.logits")).unwrap();
        let e = rel_err_rows(
            &values(&logits),
            want.as_f32().unwrap(),
            model.arch.vocab,
            &keep,
        );
        assert!(e <= TOL, "{variant} step {t} logits: rel err {e:.3e}");
        worst = worst.max(e);
    }
    eprintln!("{variant}: worst relative error {worst:.2e}");

    // Decode through the cache = a full recompute of the whole sequence without a cache.
    let last = steps.last().unwrap();
    let total = last.slots;
    let mut ids = vec![0u32; batch * total];
    for b in 0..batch {
        let mut col = 0;
        for st in &steps {
            for i in 0..st.q_len {
                ids[b * total + col] = st.ids[b * st.q_len + i];
                col += 1;
            }
        }
    }
    let params = AttnParams::new(batch, total)
        .with_attention_mask(&last.mask, total)
        .unwrap();
    let full = values(
        &model
            .forward(&Stream::Host, &ids, &params, None, &mut ws)
            .unwrap(),
    );
    let want = r.get("step3.logits").unwrap();
    let vocab = model.arch.vocab;
    for b in 0..batch {
        let got = &full[(b * total + total - 1) * vocab..(b * total + total) * vocab];
        let exp = &want.as_f32().unwrap()[b * vocab..(b + 1) * vocab];
        let e = rel_err_rows(got, exp, vocab, &[true]);
        assert!(
            e <= TOL,
            "{variant}: full recompute vs cached decode, sequence {b}: rel err {e:.3e}"
        );
    }
}

fixture_tests!(check_variant);

/// A model placed in f16 or bf16 (`Model::load_as` on the CPU: weights rounded, arithmetic
/// still f32) stays within those dtypes' budgets of HF's fp32 logits: the oracle the GPU tests
/// compare against is itself close to HF.
fn check_rounded(variant: &str) {
    let r = reference(variant);
    for (dtype, budget) in [(DType::F16, 1e-2), (DType::BF16, 4e-2)] {
        let mut model = Model::load(fixture(variant)).unwrap();
        model.load_as(Device::Cpu, dtype).unwrap();
        assert_eq!(model.layers()[0].dtype(), dtype);
        let steps = run_fixture_steps(&model, variant, &[]);
        for (t, (logits, _, keep)) in steps.iter().enumerate() {
            let want = r.get(&format!("step{t}.logits")).unwrap();
            let e = rel_err_rows(logits, want.as_f32().unwrap(), model.arch.vocab, keep);
            assert!(
                e <= budget,
                "{variant} {dtype} step {t}: logits rel err {e:.2e}"
            );
        }
    }
}

mod rounded {
    use super::*;
    fixture_tests!(check_rounded);
}
