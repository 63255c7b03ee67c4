//! Decode steps captured in CUDA graphs (`Model::capture_decode`,
//! `ParallelDecoder::capture_decode`): captured once, replayed at new lengths, equal to the
//! eager steps to the bit; and the errors a replay or capture refuses with.

use super::common::*;
use super::gpu_stream;
use paradec::{AttnParams, DType, Device, KvCache, Model, Stream, Tensor, Workspace};

/// The fixture's left-padded prefill and three decode steps: eager, then again with the decode
/// steps replayed from one graph captured after the prefill. Logits equal to the bit.
fn model_graph_equals_eager(variant: &str, scheme: Option<&str>, dtype: DType) {
    let Some(stream) = gpu_stream(variant) else {
        return;
    };
    let s = Stream::Cuda(stream);
    let qdir = tempfile::tempdir().unwrap();
    let dir = match scheme {
        None => fixture(variant),
        Some(sch) => {
            quantize_fixture(variant, sch, qdir.path());
            qdir.path().to_path_buf()
        }
    };
    let mut model = Model::load(&dir).unwrap();
    model.load_as(Device::Cuda(0), dtype).unwrap();
    let r = reference(variant);
    let capacity = 12;
    let steps: Vec<(Vec<u32>, AttnParams)> = (0..4)
        .map(|t| {
            let (ids, shape) = i64s(&r, &format!("step{t}.input_ids"));
            let (mask, mshape) = i64s(&r, &format!("step{t}.attention_mask"));
            let (q, slots) = (shape[1], mshape[1]);
            let p = AttnParams::with_past(2, q, vec![slots - q; 2])
                .with_attention_mask(&mask, slots)
                .unwrap();
            (ids.iter().map(|&i| i as u32).collect(), p)
        })
        .collect();
    let ws = || Workspace::for_model(&model.arch, 32, capacity, Device::Cuda(0), dtype).unwrap();
    let new_cache = || KvCache::for_model(&model.arch, 2, capacity, dtype, Device::Cuda(0)).unwrap();

    let mut eager_cache = new_cache();
    let mut w = ws();
    let eager: Vec<Vec<f32>> = steps
        .iter()
        .map(|(ids, p)| values(&model.forward(&s, ids, p, Some(&mut eager_cache), &mut w).unwrap()))
        .collect();

    let mut cache = new_cache();
    let (ids0, p0) = &steps[0];
    let prefill = values(&model.forward(&s, ids0, p0, Some(&mut cache), &mut ws()).unwrap());
    assert_eq!(prefill, eager[0]);
    let mut g = model
        .capture_decode(&s, &mut cache, ws(), 2, 1, true)
        .unwrap_or_else(|e| panic!("{variant} {scheme:?} {dtype}: capture: {e}"));
    for (t, (ids, p)) in steps.iter().enumerate().skip(1) {
        let got = values(g.step(ids, p).unwrap());
        assert!(got.iter().all(|v| v.is_finite()), "{variant} step {t}: non-finite logits");
        assert_eq!(got, eager[t], "{variant} {scheme:?} {dtype} step {t}: replay ≠ eager");
    }
    assert_eq!(g.cache().held(0).unwrap(), eager_cache.held(0).unwrap());
}

macro_rules! per_fixture {
    ($($name:ident),*) => { $(
        #[test]
        fn $name() {
            model_graph_equals_eager(stringify!($name), None, DType::F16);
            model_graph_equals_eager(stringify!($name), Some("gptq4_act_order"), DType::BF16);
        }
    )* };
}

mod model_replay_equals_eager {
    use super::*;
    per_fixture!(
        gptj,
        gpt_neox,
        phi_qk_layernorm,
        falcon_7b_mqa,
        falcon_new_2ln_gqa,
        cohere,
        cohere2
    );
}

/// One layer's graph, replayed over 40 steps of growing and then rewound lengths (batch 3 of
/// different lengths, no mask), equals the eager layer to the bit, with new hidden states
/// written in place before each replay.
#[test]
fn layer_replay_equals_eager_over_changing_lengths() {
    let Some(stream) = gpu_stream("layer_graph") else {
        return;
    };
    let s = Stream::Cuda(stream);
    let mut model = Model::load(fixture("falcon_new_2ln_gqa")).unwrap();
    model.load_as(Device::Cuda(0), DType::F16).unwrap();
    let layer = &model.layers()[1];
    let a = model.arch.clone();
    let (batch, capacity) = (3, 300);
    let new_cache = || KvCache::for_model(&a, batch, capacity, DType::F16, Device::Cuda(0)).unwrap();
    let ws = || Workspace::for_model(&a, batch, capacity, Device::Cuda(0), DType::F16).unwrap();
    let mut rng = super::common::Rng::new(41);
    // Lengths: sequence b starts at 5·b and grows; from step 30 all rewind by 7.
    let past_at = |t: usize, b: usize| if t < 30 { 5 * b + t } else { 5 * b + t - 7 };
    let inputs: Vec<Vec<f32>> = (0..40).map(|_| rng.vec(batch * a.hidden)).collect();

    // Both caches first hold the same 5·b + 40 positions of each sequence (one prefill).
    let fill = rng.vec(batch * 60 * a.hidden);
    let prefill = |cache: &mut KvCache| {
        let mut h = Tensor::from_f32_as(&fill, &[batch * 60, a.hidden], DType::F16)
            .unwrap()
            .to_device(Device::Cuda(0))
            .unwrap();
        layer
            .forward(&s, &mut h, Some(cache), &AttnParams::new(batch, 60), &[], &mut ws())
            .unwrap();
    };
    let (mut ce, mut cg) = (new_cache(), new_cache());
    prefill(&mut ce);
    prefill(&mut cg);
    let mut w = ws();
    let eager: Vec<Vec<f32>> = (0..40)
        .map(|t| {
            let mut h = Tensor::from_f32_as(&inputs[t], &[batch, a.hidden], DType::F16)
                .unwrap()
                .to_device(Device::Cuda(0))
                .unwrap();
            let p = AttnParams::with_past(batch, 1, (0..batch).map(|b| past_at(t, b)).collect());
            layer.forward(&s, &mut h, Some(&mut ce), &p, &[], &mut w).unwrap();
            values(&h)
        })
        .collect();
    let mut hidden = Tensor::zeros(&[batch, a.hidden], DType::F16, Device::Cuda(0)).unwrap();
    let mut g = layer
        .capture_decode(&s, &mut hidden, &mut cg, ws(), batch, 1, false)
        .unwrap();
    for (t, want) in eager.iter().enumerate() {
        g.hidden_mut().set_f32_values(&inputs[t]).unwrap();
        let p = AttnParams::with_past(batch, 1, (0..batch).map(|b| past_at(t, b)).collect());
        g.step(&p).unwrap();
        assert_eq!(&values(g.hidden_mut()), want, "step {t}: replay ≠ eager");
    }
}

/// What a capture or a replay refuses, each with an error that names the problem; a refused
/// replay leaves the graph usable.
#[test]
fn graph_errors_are_named() {
    fn err<T>(r: paradec::Result<T>) -> String {
        r.map(|_| ()).unwrap_err().to_string()
    }
    let Some(stream) = gpu_stream("graph_errors") else {
        return;
    };
    let s = Stream::Cuda(stream);
    let mut model = Model::load(fixture("cohere2")).unwrap();
    model.load_as(Device::Cuda(0), DType::F16).unwrap();
    let a = model.arch.clone();
    let mut cache = KvCache::for_model(&a, 2, 8, DType::F16, Device::Cuda(0)).unwrap();
    let ws = || Workspace::for_model(&a, 2, 8, Device::Cuda(0), DType::F16).unwrap();

    // The legacy default stream cannot be captured; a query of 17 tokens is not a decode step;
    // a workspace whose arena cannot hold the step fails at capture, not later.
    let legacy = Stream::Cuda(paradec::cuda::CudaStream::legacy_default(0));
    assert!(err(model.capture_decode(&legacy, &mut cache, ws(), 2, 1, false)).contains("legacy default stream"));
    assert!(err(model.capture_decode(&s, &mut cache, ws(), 2, 17, false)).contains("at most 16"));
    let tiny = Workspace::with_capacity(Device::Cuda(0), DType::F16, 1024).unwrap();
    assert!(err(model.capture_decode(&s, &mut cache, tiny, 2, 1, false)).contains("arena"));
    assert!(err(model.capture_decode(&s, &mut cache, ws(), 3, 1, false)).contains("batch"));

    // Prefill 3 tokens eagerly, then capture.
    let ids: Vec<u32> = (0..6).map(|i| i * 3 + 1).collect();
    model
        .forward(&s, &ids, &AttnParams::new(2, 3), Some(&mut cache), &mut ws())
        .unwrap();
    let mut g = model.capture_decode(&s, &mut cache, ws(), 2, 1, false).unwrap();
    let step = |past: Vec<usize>| AttnParams::with_past(2, 1, past);
    // Reads never-written slots; past the capacity; another batch; a mask it was not captured
    // with; an id outside the vocabulary.
    assert!(err(g.step(&[1, 2], &step(vec![4, 3]))).contains("only 3 were written"));
    assert!(err(g.step(&[1, 2], &step(vec![3, 8]))).contains("capacity"));
    assert!(err(g.step(&[1], &AttnParams::with_past(1, 1, vec![3]))).contains("batch"));
    let masked = step(vec![3, 3]).with_attention_mask(&[1; 8], 4).unwrap();
    assert!(err(g.step(&[1, 2], &masked)).contains("without a padding mask"));
    assert!(err(g.step(&[1, 1_000_000], &step(vec![3, 3]))).contains("vocabulary"));
    // Still usable, and nothing was recorded by the refused steps.
    assert_eq!(g.cache().held(0).unwrap(), &[3, 3]);
    let l = values(g.step(&[1, 2], &step(vec![3, 3])).unwrap());
    assert!(l.iter().all(|v| v.is_finite()));
    assert_eq!(g.cache().held(0).unwrap(), &[4, 4]);
}

/// A decode-step graph over a paged cache is refused at capture (its block table changes at
/// every step and is not staged); a replay of a graph over a contiguous cache refuses a step
/// carrying a block table.
#[test]
fn graph_capture_refuses_a_paged_cache() {
    fn err<T>(r: paradec::Result<T>) -> paradec::Error {
        r.map(|_| ()).unwrap_err()
    }
    let Some(stream) = gpu_stream("graph_paged") else {
        return;
    };
    let s = Stream::Cuda(stream);
    let (dev, dt) = (Device::Cuda(0), DType::F16);
    let mut model = Model::load(fixture("cohere2")).unwrap();
    model.load_as(dev, dt).unwrap();
    let a = model.arch.clone();
    let ws = || Workspace::for_model(&a, 2, 8, dev, dt).unwrap();
    let mut pool =
        KvCache::paged_for_model(&a, 8, 4, dt, dev, paradec::KvCacheMode::Native).unwrap();
    let named = |e: paradec::Error| {
        assert!(
            matches!(&e, paradec::Error::Unsupported(m) if m.contains("paged") && m.contains("block table")),
            "{e}"
        )
    };
    named(err(model.capture_decode(&s, &mut pool, ws(), 2, 1, false)));
    let mut hidden = Tensor::zeros(&[2, a.hidden], dt, dev).unwrap();
    named(err(model.layers()[0].capture_decode(&s, &mut hidden, &mut pool, ws(), 2, 1, false)));

    let mut cache = KvCache::for_model(&a, 2, 8, dt, dev).unwrap();
    let ids: Vec<u32> = (0..6).map(|i| i * 3 + 1).collect();
    model
        .forward(&s, &ids, &AttnParams::new(2, 3), Some(&mut cache), &mut ws())
        .unwrap();
    let mut g = model.capture_decode(&s, &mut cache, ws(), 2, 1, false).unwrap();
    let table = paradec::PagedTable::new(4, 2, vec![0, 1, 2, 3], vec![1, 1]);
    let p = AttnParams::with_past(2, 1, vec![3, 3]).with_block_table(table);
    let e = err(g.step(&[1, 2], &p));
    assert!(e.to_string().contains("block table"), "{e}");
    assert_eq!(g.cache().held(0).unwrap(), &[3, 3]);
}
