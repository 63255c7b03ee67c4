//! Decode steps captured in CUDA graphs (`Model::capture_decode`,
//! `ParallelDecoder::capture_decode`, and their `_paged` twins): captured once, replayed at new
//! lengths, equal to the eager steps to the bit — over a native cache, a quantized one in every
//! mode and a paged one with scrambled pages; and the errors a replay or capture refuses with.

use super::common::*;
use super::gpu_stream;
use paradec::{
    ArchParams, AttnParams, DType, Device, KvCache, KvCacheMode, Model, PagedTable,
    ParallelDecoder, Stream, Tensor, Workspace,
};

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

/// The quantized cache modes, E4M3 with scales other than 1 (per layer and KV head).
fn quantized_modes(a: &ArchParams) -> Vec<KvCacheMode> {
    let n = a.num_layers * a.kv_heads;
    vec![
        KvCacheMode::Fp8E4M3 {
            k_scales: (0..n).map(|i| 0.5 + 0.25 * i as f32).collect(),
            v_scales: (0..n).map(|i| 1.5 - 0.125 * i as f32).collect(),
        },
        KvCacheMode::Fp8E5M2,
        KvCacheMode::Q8,
        KvCacheMode::Q6,
        KvCacheMode::Q4,
    ]
}

/// A batch of 3 of different lengths: a prefill of `prefill` tokens each, then decode steps
/// of one token — growing (the longest sequence from `prefill` on, the others 100 and 200
/// behind), then rewound to 120, 90 and 60 positions and growing again.
fn decode_schedule(prefill: usize) -> (PagedStep, Vec<PagedStep>) {
    let step = |past: Vec<usize>, q_len| PagedStep {
        past,
        q_len,
        mask01: None,
    };
    let steps = (0..10)
        .map(|t| {
            let past = if t < 6 {
                vec![prefill + t, prefill - 100 + t, prefill - 200 + t]
            } else {
                vec![114 + t, 84 + t, 54 + t]
            };
            step(past, 1)
        })
        .collect();
    (step(vec![0; 3], prefill), steps)
}

/// One layer's decode steps over `steps` after a prefill: eager (`ParallelDecoder::forward`,
/// over a cache from `new_cache`, planned at each step's own lengths) and replayed from one
/// graph captured after the same prefill over another such cache (`width`: the block table
/// width of a paged capture, None for `capture_decode`). Over a paged cache both runs get
/// each call's block table from their own copy of `pager`. The hidden states after every
/// step are equal to the bit.
#[allow(clippy::too_many_arguments)]
fn layer_graph_equals_eager(
    s: &Stream,
    layer: &ParallelDecoder,
    a: &ArchParams,
    dt: DType,
    new_cache: &dyn Fn() -> KvCache,
    (prefill, steps): &(PagedStep, Vec<PagedStep>),
    pager: Option<&Pager>,
    width: Option<usize>,
    (eager_ws, graph_ws): (usize, usize),
    what: &str,
) {
    let dev = Device::Cuda(0);
    let batch = prefill.past.len();
    let mut rng = super::common::Rng::new(43);
    let fill = rng.vec(prefill.q_len * batch * a.hidden);
    let inputs: Vec<Vec<f32>> = steps.iter().map(|_| rng.vec(batch * a.hidden)).collect();
    let hidden = |v: &[f32], rows: usize| {
        Tensor::from_f32_as(v, &[rows, a.hidden], dt)
            .unwrap()
            .to_device(dev)
            .unwrap()
    };
    let ws = |bytes| Workspace::with_capacity(dev, dt, bytes).unwrap();
    let params = |step: &PagedStep, pg: &mut Option<Pager>| {
        let p = step.params();
        match pg {
            Some(pg) => p.with_block_table(pg.table_for(step)),
            None => p,
        }
    };
    let run_prefill = |cache: &mut KvCache, pg: &mut Option<Pager>| {
        let mut h = hidden(&fill, prefill.q_len * batch);
        let p = params(prefill, pg);
        layer
            .forward(s, &mut h, Some(cache), &p, &[], &mut ws(eager_ws))
            .unwrap_or_else(|e| panic!("{what}: prefill: {e}"));
    };

    let (mut ce, mut pe) = (new_cache(), pager.cloned());
    run_prefill(&mut ce, &mut pe);
    let mut w = ws(eager_ws);
    let eager: Vec<Vec<f32>> = steps
        .iter()
        .zip(&inputs)
        .map(|(step, x)| {
            let mut h = hidden(x, batch);
            let p = params(step, &mut pe);
            layer.forward(s, &mut h, Some(&mut ce), &p, &[], &mut w).unwrap();
            values(&h)
        })
        .collect();

    let (mut cg, mut pg) = (new_cache(), pager.cloned());
    run_prefill(&mut cg, &mut pg);
    let mut h = Tensor::zeros(&[batch, a.hidden], dt, dev).unwrap();
    let mut g = match width {
        None => layer.capture_decode(s, &mut h, &mut cg, ws(graph_ws), batch, 1, false),
        Some(wd) => layer.capture_decode_paged(s, &mut h, &mut cg, ws(graph_ws), batch, 1, false, wd),
    }
    .unwrap_or_else(|e| panic!("{what}: capture: {e}"));
    for (t, ((step, x), want)) in steps.iter().zip(&inputs).zip(&eager).enumerate() {
        g.hidden_mut().set_f32_values(x).unwrap();
        let p = params(step, &mut pg);
        g.step(&p).unwrap_or_else(|e| panic!("{what}: step {t}: {e}"));
        let got = values(g.hidden_mut());
        assert!(got.iter().all(|v| v.is_finite()), "{what}: step {t}: non-finite");
        assert!(&got == want, "{what}: step {t}: replay ≠ eager (rel err {:.3e})", rel_err(&got, want));
    }
}

/// One layer's graph over a quantized contiguous cache, in each mode (f16; a fixture of
/// head_dim 32, which every mode can store), batch 3 of different lengths growing past 128 and
/// 256 keys and then rewound: the graph, planned for the cache's capacity, cuts the keys as
/// each eager step does (1, 2 or 3 splits) and equals it to the bit.
#[test]
fn layer_replay_equals_eager_in_every_quantized_mode() {
    let Some(stream) = gpu_stream("graph_quantized") else {
        return;
    };
    let s = Stream::Cuda(stream);
    let (dev, dt) = (Device::Cuda(0), DType::F16);
    let mut model = Model::load(fixture("gpt_neox")).unwrap();
    model.load_as(dev, dt).unwrap();
    let a = model.arch.clone();
    let (batch, capacity) = (3, 300);
    let schedule = decode_schedule(254);
    for mode in quantized_modes(&a) {
        let new_cache = || {
            KvCache::with_mode(a.num_layers, batch, capacity, a.kv_heads, a.head_dim, dt, dev, mode.clone())
                .unwrap()
        };
        let plan = |tokens| Workspace::bytes_needed_for_mode(&a, tokens, capacity, dt, &mode).unwrap();
        layer_graph_equals_eager(
            &s,
            &model.layers()[1],
            &a,
            dt,
            &new_cache,
            &schedule,
            None,
            None,
            (plan(batch * 254), plan(batch)),
            mode.name(),
        );
    }
}

/// One layer's graph over a paged cache, pages of 16 handed out in a scrambled order as the
/// sequences grow (kept when they rewind): native pages with the pool's page count as the
/// table width (`capture_decode`), Q8 and E4M3 pages with a width fixed at capture wider than
/// the calls' own tables (`capture_decode_paged`: each step's table restaged at that width).
/// Equal to the eager steps to the bit.
#[test]
fn layer_replay_equals_eager_over_a_paged_cache() {
    let Some(stream) = gpu_stream("graph_paged_layer") else {
        return;
    };
    let s = Stream::Cuda(stream);
    let (dev, dt) = (Device::Cuda(0), DType::F16);
    let mut model = Model::load(fixture("gpt_neox")).unwrap();
    model.load_as(dev, dt).unwrap();
    let a = model.arch.clone();
    let (prefill, page_size) = (254, 16);
    let schedule = decode_schedule(prefill);
    let all: Vec<PagedStep> = std::iter::once(schedule.0.clone()).chain(schedule.1.clone()).collect();
    let pager = Pager::for_schedule(&all, page_size, 29);
    let e4m3 = quantized_modes(&a).remove(0);
    for (mode, width) in [
        (KvCacheMode::Native, None),
        (KvCacheMode::Q8, Some(pager.max_pages + 2)),
        (e4m3, Some(pager.max_pages + 2)),
    ] {
        let new_cache = || {
            KvCache::paged_for_model(&a, pager.num_pages, page_size, dt, dev, mode.clone()).unwrap()
        };
        let w = width.unwrap_or(pager.num_pages);
        let plan = |tokens, pages| Workspace::bytes_needed_paged(&a, tokens, pages, page_size, dt).unwrap();
        layer_graph_equals_eager(
            &s,
            &model.layers()[0],
            &a,
            dt,
            &new_cache,
            &schedule,
            Some(&pager),
            width,
            (plan(3 * prefill, pager.max_pages), plan(3, w)),
            &format!("paged {} width {w}", mode.name()),
        );
    }
}

/// The fixture's left-padded prefill and three decode steps through the whole model over a Q6
/// contiguous cache and over a paged E4M3 cache (pages of 3, scrambled): the decode steps
/// replayed from one graph give the eager steps' logits to the bit (the eager forwards stage
/// their tables too, planned at their own lengths).
#[test]
fn model_replay_equals_eager_over_quantized_and_paged_caches() {
    let Some(stream) = gpu_stream("graph_model_quant_paged") else {
        return;
    };
    let s = Stream::Cuda(stream);
    let (dev, dt) = (Device::Cuda(0), DType::F16);
    let variant = "gpt_neox";
    let mut model = Model::load(fixture(variant)).unwrap();
    model.load_as(dev, dt).unwrap();
    let a = model.arch.clone();
    let r = reference(variant);
    let (steps, ids): (Vec<PagedStep>, Vec<Vec<u32>>) = (0..4)
        .map(|t| {
            let (ids, shape) = i64s(&r, &format!("step{t}.input_ids"));
            let (mask, mshape) = i64s(&r, &format!("step{t}.attention_mask"));
            let (q, slots) = (shape[1], mshape[1]);
            let step = PagedStep {
                past: vec![slots - q; 2],
                q_len: q,
                mask01: Some(mask),
            };
            (step, ids.iter().map(|&i| i as u32).collect())
        })
        .unzip();
    let capacity = 12;
    let page_size = 3;
    let pager = Pager::for_schedule(&steps, page_size, 7);
    let e4m3 = quantized_modes(&a).remove(0);
    for (mode, paged) in [(KvCacheMode::Q6, false), (e4m3, true)] {
        let what = format!("{variant} {}{}", mode.name(), if paged { " paged" } else { "" });
        let new_cache = || match paged {
            false => KvCache::with_mode(a.num_layers, 2, capacity, a.kv_heads, a.head_dim, dt, dev, mode.clone()),
            true => KvCache::paged_for_model(&a, pager.num_pages, page_size, dt, dev, mode.clone()),
        }
        .unwrap();
        let ws = || {
            let bytes = match paged {
                false => Workspace::bytes_needed_for_mode(&a, 32, capacity, dt, &mode),
                true => Workspace::bytes_needed_paged(&a, 32, pager.num_pages, page_size, dt),
            };
            Workspace::with_capacity(dev, dt, bytes.unwrap()).unwrap()
        };
        let params = |step: &PagedStep, pg: &mut Pager| {
            let p = step.params();
            if paged {
                p.with_block_table(pg.table_for(step))
            } else {
                p
            }
        };

        let (mut ce, mut pe) = (new_cache(), pager.clone());
        let mut w = ws();
        let eager: Vec<Vec<f32>> = steps
            .iter()
            .zip(&ids)
            .map(|(step, ids)| {
                let p = params(step, &mut pe);
                values(&model.forward(&s, ids, &p, Some(&mut ce), &mut w).unwrap())
            })
            .collect();

        let (mut cache, mut pg) = (new_cache(), pager.clone());
        let p0 = params(&steps[0], &mut pg);
        let prefill = values(&model.forward(&s, &ids[0], &p0, Some(&mut cache), &mut ws()).unwrap());
        assert_eq!(prefill, eager[0], "{what}: prefill");
        let mut g = model
            .capture_decode(&s, &mut cache, ws(), 2, 1, true)
            .unwrap_or_else(|e| panic!("{what}: capture: {e}"));
        for (t, (step, ids)) in steps.iter().zip(&ids).enumerate().skip(1) {
            let p = params(step, &mut pg);
            let got = values(g.step(ids, &p).unwrap_or_else(|e| panic!("{what}: step {t}: {e}")));
            assert!(got.iter().all(|v| v.is_finite()), "{what}: step {t}: non-finite logits");
            assert!(got == eager[t], "{what}: step {t}: replay ≠ eager (rel err {:.3e})", rel_err(&got, &eager[t]));
        }
        if !paged {
            assert_eq!(g.cache().held(0).unwrap(), ce.held(0).unwrap());
        }
    }
}

/// What a graph over a paged or quantized cache refuses, each with an error naming it: at
/// capture, a pool too small for one step's pages and a table width over a contiguous cache;
/// at replay, a step without a block table, one of another page size, one wider than the
/// capture's, one touching a page outside the pool, two sequences writing one pool row, one
/// past its pages (within the captured width a table cannot reach further), and (over a
/// contiguous quantized cache) a read of unwritten slots or a block table. A refused step
/// queues nothing and leaves the graph usable.
#[test]
fn paged_and_quantized_graph_errors_are_named() {
    fn err<T>(r: paradec::Result<T>) -> paradec::Error {
        r.map(|_| ()).unwrap_err()
    }
    let Some(stream) = gpu_stream("graph_paged_errors") else {
        return;
    };
    let s = Stream::Cuda(stream);
    let (dev, dt) = (Device::Cuda(0), DType::F16);
    let mut model = Model::load(fixture("cohere2")).unwrap();
    model.load_as(dev, dt).unwrap();
    let a = model.arch.clone();
    let ws = || Workspace::with_capacity(dev, dt, Workspace::bytes_needed_paged(&a, 8, 8, 4, dt).unwrap()).unwrap();
    let mut pool = KvCache::paged_for_model(&a, 8, 4, dt, dev, KvCacheMode::Fp8E5M2).unwrap();

    // A step of 3 × 16 tokens needs 12 pages of 4; a width is for a paged cache.
    let e = err(model.capture_decode(&s, &mut pool, ws(), 3, 16, false));
    assert!(matches!(&e, paradec::Error::CapacityExceeded(m) if m.contains("the pool has 8")), "{e}");
    let mut flat = KvCache::with_mode(a.num_layers, 2, 8, a.kv_heads, a.head_dim, dt, dev, KvCacheMode::Fp8E5M2).unwrap();
    let e = err(model.capture_decode_paged(&s, &mut flat, ws(), 2, 1, false, 4));
    assert!(e.to_string().contains("contiguous"), "{e}");
    let mut hidden = Tensor::zeros(&[2, a.hidden], dt, dev).unwrap();
    let e = err(model.layers()[0].capture_decode_paged(&s, &mut hidden, &mut flat, ws(), 2, 1, false, 4));
    assert!(e.to_string().contains("contiguous"), "{e}");

    // A prefill of 3 tokens over pages 5 and 2, then a graph of width 3 (12 positions).
    let table = |max_pages, t: Vec<i32>, counts: Vec<usize>| PagedTable::new(4, max_pages, t, counts);
    let step = |past: Vec<usize>, t: PagedTable| AttnParams::with_past(2, 1, past).with_block_table(t);
    let ids: Vec<u32> = (0..6).map(|i| i * 3 + 1).collect();
    let p0 = AttnParams::new(2, 3).with_block_table(table(2, vec![5, -1, 2, -1], vec![1, 1]));
    model.forward(&s, &ids, &p0, Some(&mut pool), &mut ws()).unwrap();
    let mut g = model.capture_decode_paged(&s, &mut pool, ws(), 2, 1, false, 3).unwrap();
    let good = || step(vec![3, 3], table(2, vec![5, -1, 2, -1], vec![1, 1]));
    let cases: Vec<(AttnParams, &str)> = vec![
        (AttnParams::with_past(2, 1, vec![3, 3]), "needs its block table"),
        (step(vec![1, 1], PagedTable::new(2, 2, vec![5, 6, 2, 3], vec![1, 1])), "hold 2 positions"),
        (step(vec![3, 3], table(4, vec![5, -1, -1, -1, 2, -1, -1, -1], vec![1, 1])), "wider than the 3"),
        (step(vec![3, 3], table(2, vec![8, -1, 2, -1], vec![1, 1])), "outside the pool of 8 pages"),
        (step(vec![3, 3], table(2, vec![5, -1, 5, -1], vec![1, 1])), "both write pool row"),
        (step(vec![12, 3], table(3, vec![5, 1, 3, 2, -1, -1], vec![3, 1])), "reaches position 13"),
    ];
    for (p, want) in &cases {
        let e = err(g.step(&[1, 2], p));
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
    let l = values(g.step(&[1, 2], &good()).unwrap());
    assert!(l.iter().all(|v| v.is_finite()));

    // A contiguous quantized cache: unwritten slots, a block table.
    model.forward(&s, &ids, &AttnParams::new(2, 3), Some(&mut flat), &mut ws()).unwrap();
    let mut g = model.capture_decode(&s, &mut flat, ws(), 2, 1, false).unwrap();
    let e = err(g.step(&[1, 2], &AttnParams::with_past(2, 1, vec![4, 3])));
    assert!(e.to_string().contains("only 3 were written"), "{e}");
    let e = err(g.step(&[1, 2], &good()));
    assert!(e.to_string().contains("block table"), "{e}");
    assert_eq!(g.cache().held(0).unwrap(), &[3, 3]);
    let l = values(g.step(&[1, 2], &AttnParams::with_past(2, 1, vec![3, 3])).unwrap());
    assert!(l.iter().all(|v| v.is_finite()));
    assert_eq!(g.cache().held(0).unwrap(), &[4, 4]);
}
