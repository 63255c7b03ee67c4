//! The paged KV cache (`KvCache::paged`) through `ParallelDecoder` and `Model` on the CPU: in
//! every mode, a batch of two sequences of different lengths (prefill, a rewind, decode
//! steps of 1–3 tokens) and a left-padded batch under a mask, with pages handed out in a
//! scrambled order and page sizes that do and do not divide the lengths, give outputs equal to
//! the bit to those of the contiguous cache in the same mode — the CPU computes the same
//! values in the same order for both (the pages are gathered into a contiguous buffer and
//! attended by the same reference loop; a contiguous quantized cache is read by that same
//! gather). Then every error: a paged cache without a table, a table without a paged cache,
//! another page size, a table that does not cover the call — each named, with nothing written.

mod common;

use common::*;
use paradec::kv_quant::RUN;
use paradec::{
    AttnParams, DType, Device, Error, KvCache, KvCacheMode, Model, PagedTable, Stream, Tensor,
    Workspace,
};

const VARIANTS: [&str; 10] = [
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

/// Page sizes: 1 (a page per position), 3, 4 and 7 (dividing some lengths of the schedules,
/// not others), 32 (one page holds a whole sequence).
const PAGE_SIZES: [usize; 5] = [1, 3, 4, 7, 32];

/// Whether `mode` can store heads of `head_dim` (Hadamard runs of 32 need a multiple of 32).
fn fits(mode: &KvCacheMode, head_dim: usize) -> bool {
    let (fk, fv) = mode.formats();
    !(fk.has_run_scales() || fv.has_run_scales()) || head_dim.is_multiple_of(RUN)
}

/// E4M3 with scales other than 1, so a layer's own scales matter.
fn sized(mode: &KvCacheMode, layers: usize, kv_heads: usize) -> KvCacheMode {
    match mode {
        KvCacheMode::Fp8E4M3 { .. } => KvCacheMode::Fp8E4M3 {
            k_scales: (0..layers * kv_heads)
                .map(|i| 0.5 + 0.25 * i as f32)
                .collect(),
            v_scales: (0..layers * kv_heads)
                .map(|i| 1.5 - 0.125 * i as f32)
                .collect(),
        },
        m => m.clone(),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn contiguous(model: &Model, schedule: &[PagedStep], mode: &KvCacheMode) -> KvCache {
    let a = &model.arch;
    KvCache::with_mode(
        a.num_layers,
        2,
        schedule_len(schedule) + 2,
        a.kv_heads,
        a.head_dim,
        DType::F32,
        Device::Cpu,
        mode.clone(),
    )
    .unwrap()
}

fn paged(model: &Model, pager: &Pager, mode: &KvCacheMode) -> KvCache {
    KvCache::paged_for_model(
        &model.arch,
        pager.num_pages,
        pager.page_size,
        DType::F32,
        Device::Cpu,
        mode.clone(),
    )
    .unwrap()
}

/// Each layer of `model` on its own, over `schedule`: every call feeds each layer the same
/// seeded hidden states; returns every layer's output of every call (the odd calls through
/// `forward_interm`, whose attention context is appended).
fn layer_outputs(
    model: &Model,
    cache: &mut KvCache,
    schedule: &[PagedStep],
    mut pager: Option<&mut Pager>,
) -> Vec<Vec<f32>> {
    let (s, mut ws) = (Stream::Host, Workspace::cpu());
    let mut rng = Rng::new(31);
    let hidden = model.arch.hidden;
    let mut out = Vec::new();
    for (i, step) in schedule.iter().enumerate() {
        let mut p = step.params();
        if let Some(pg) = pager.as_deref_mut() {
            p = p.with_block_table(pg.table_for(step));
        }
        for layer in model.layers() {
            let x: Vec<f32> = (0..p.tokens() * hidden).map(|_| rng.uniform()).collect();
            let mut h = Tensor::from_f32(x, &[p.tokens(), hidden]).unwrap();
            if i % 2 == 1 {
                let im = layer
                    .forward_interm(&s, &mut h, Some(cache), &p, &[], &mut ws)
                    .unwrap();
                let mut v = values(&h);
                v.extend(values(&im.attn_output));
                out.push(v);
            } else {
                layer
                    .forward(&s, &mut h, Some(cache), &p, &[], &mut ws)
                    .unwrap();
                out.push(values(&h));
            }
        }
    }
    out
}

/// Every fixture layer, every mode it can store, both schedules, every page size: the paged
/// cache's outputs equal the contiguous cache's to the bit.
#[test]
fn layers_over_a_paged_cache_equal_the_contiguous_cache() {
    let mut cases = 0;
    for variant in VARIANTS {
        let model = Model::load(fixture(variant)).unwrap();
        let a = &model.arch;
        for mode in KvCacheMode::all() {
            if !fits(&mode, a.head_dim) {
                continue;
            }
            let mode = sized(&mode, a.num_layers, a.kv_heads);
            for (name, schedule) in [
                ("staggered", staggered_schedule()),
                ("padded", padded_schedule()),
            ] {
                let mut flat = contiguous(&model, &schedule, &mode);
                let want = layer_outputs(&model, &mut flat, &schedule, None);
                for (i, page_size) in PAGE_SIZES.into_iter().enumerate() {
                    let mut pager = Pager::for_schedule(&schedule, page_size, 7 + i as u64);
                    let mut pool = paged(&model, &pager, &mode);
                    let got = layer_outputs(&model, &mut pool, &schedule, Some(&mut pager));
                    for (c, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            bits(g) == bits(w),
                            "{variant} {} {name} page {page_size}: call {} layer {} differs \
                             (rel err {:.3e})",
                            mode.name(),
                            c / a.num_layers,
                            c % a.num_layers,
                            rel_err(g, w)
                        );
                    }
                    cases += 1;
                }
            }
        }
    }
    // 10 fixtures × (native, fp8e4m3, fp8e5m2) + 2 of head_dim 32 × (q8, q6, q4), 2 schedules,
    // 5 page sizes.
    assert_eq!(cases, (10 * 3 + 2 * 3) * 2 * PAGE_SIZES.len());
}

/// Every fixture model, every mode it can store, both schedules, every page size: the logits
/// over a paged cache equal the contiguous cache's to the bit.
#[test]
fn models_over_a_paged_cache_equal_the_contiguous_cache() {
    let s = Stream::Host;
    let mut ws = Workspace::cpu();
    for variant in VARIANTS {
        let model = Model::load(fixture(variant)).unwrap();
        let a = &model.arch;
        for mode in KvCacheMode::all() {
            if !fits(&mode, a.head_dim) {
                continue;
            }
            let mode = sized(&mode, a.num_layers, a.kv_heads);
            for (name, schedule) in [
                ("staggered", staggered_schedule()),
                ("padded", padded_schedule()),
            ] {
                let mut flat = contiguous(&model, &schedule, &mode);
                let want =
                    model_schedule(&model, &s, &mut flat, &mut ws, &schedule, None, 5).unwrap();
                for (i, page_size) in PAGE_SIZES.into_iter().enumerate() {
                    let mut pager = Pager::for_schedule(&schedule, page_size, 100 + i as u64);
                    let mut pool = paged(&model, &pager, &mode);
                    let got = model_schedule(
                        &model,
                        &s,
                        &mut pool,
                        &mut ws,
                        &schedule,
                        Some(&mut pager),
                        5,
                    )
                    .unwrap();
                    for (c, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(g.iter().all(|x| x.is_finite()), "{variant}: non-finite");
                        assert!(
                            bits(g) == bits(w),
                            "{variant} {} {name} page {page_size}: call {c} logits differ \
                             (rel err {:.3e})",
                            mode.name(),
                            rel_err(g, w)
                        );
                    }
                }
            }
        }
    }
}

/// The fixtures' own left-padded prompt and decode steps (the HF reference's ids and masks)
/// over a paged cache give the contiguous cache's logits, in each mode.
#[test]
fn fixture_steps_over_a_paged_cache() {
    let s = Stream::Host;
    let mut ws = Workspace::cpu();
    for variant in ["gpt_neox", "cohere2", "falcon_7b_mqa"] {
        let model = Model::load(fixture(variant)).unwrap();
        let r = reference(variant);
        let a = &model.arch;
        let steps: Vec<(Vec<u32>, PagedStep)> = (0..4)
            .map(|t| {
                let (ids, shape) = i64s(&r, &format!("step{t}.input_ids"));
                let (mask, mshape) = i64s(&r, &format!("step{t}.attention_mask"));
                let (q, slots) = (shape[1], mshape[1]);
                let step = PagedStep {
                    past: vec![slots - q; 2],
                    q_len: q,
                    mask01: Some(mask),
                };
                (ids.iter().map(|&i| i as u32).collect(), step)
            })
            .collect();
        let schedule: Vec<PagedStep> = steps.iter().map(|(_, s)| s.clone()).collect();
        for mode in KvCacheMode::all() {
            if !fits(&mode, a.head_dim) {
                continue;
            }
            let mut flat = contiguous(&model, &schedule, &mode);
            let mut pager = Pager::for_schedule(&schedule, 3, 9);
            let mut pool = paged(&model, &pager, &mode);
            for (ids, step) in &steps {
                let p = step.params();
                let want = model
                    .forward(&s, ids, &p, Some(&mut flat), &mut ws)
                    .unwrap();
                let p = p.with_block_table(pager.table_for(step));
                let got = model
                    .forward(&s, ids, &p, Some(&mut pool), &mut ws)
                    .unwrap();
                assert!(
                    bits(&values(&got)) == bits(&values(&want)),
                    "{variant} {}",
                    mode.name()
                );
            }
        }
    }
}

/// Prefix caching: a prompt written once into pages that two sequences then share (read
/// only) gives the decode step of a contiguous cache holding the prompt twice. The paged
/// cache takes any batch per call (1 for the prompt, 2 after).
#[test]
fn shared_prefix_pages_read_by_two_sequences() {
    let s = Stream::Host;
    let mut ws = Workspace::cpu();
    let model = Model::load(fixture("gpt_neox")).unwrap();
    let prompt: Vec<u32> = vec![5, 17, 42, 9, 11, 3, 77, 1];
    for mode in KvCacheMode::all() {
        // Contiguous: the prompt for both sequences, then one token each.
        let mut flat = KvCache::with_mode(
            2,
            2,
            12,
            model.arch.kv_heads,
            model.arch.head_dim,
            DType::F32,
            Device::Cpu,
            mode.clone(),
        )
        .unwrap();
        let both: Vec<u32> = prompt.iter().chain(&prompt).copied().collect();
        model
            .forward(&s, &both, &AttnParams::new(2, 8), Some(&mut flat), &mut ws)
            .unwrap();
        let step = AttnParams::with_past(2, 1, vec![8, 8]);
        let want = model
            .forward(&s, &[60, 61], &step, Some(&mut flat), &mut ws)
            .unwrap();
        // Paged, pages of 4: the prompt once in pages 5 and 2; each sequence's token in its
        // own page after them.
        let mut pool =
            KvCache::paged_for_model(&model.arch, 8, 4, DType::F32, Device::Cpu, mode).unwrap();
        let p =
            AttnParams::new(1, 8).with_block_table(PagedTable::new(4, 3, vec![5, 2, -1], vec![2]));
        model
            .forward(&s, &prompt, &p, Some(&mut pool), &mut ws)
            .unwrap();
        let shared = PagedTable::new(4, 3, vec![5, 2, 7, 5, 2, 0], vec![3, 3]);
        let p = step.clone().with_block_table(shared);
        let got = model
            .forward(&s, &[60, 61], &p, Some(&mut pool), &mut ws)
            .unwrap();
        assert_eq!(bits(&values(&got)), bits(&values(&want)));
    }
}

fn err<T>(r: paradec::Result<T>) -> Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Every way a call and a paged cache can disagree is an error naming it, raised before
/// anything is written (the pools' bytes are unchanged), through the layer and the model.
#[test]
fn paged_cache_errors_are_named_and_write_nothing() {
    let s = Stream::Host;
    let mut ws = Workspace::cpu();
    let model = Model::load(fixture("gpt_neox")).unwrap();
    let a = model.arch.clone();
    let layer = &model.layers()[1];
    let mut pool =
        KvCache::paged_for_model(&a, 6, 4, DType::F32, Device::Cpu, KvCacheMode::Q8).unwrap();
    let mut flat = KvCache::for_model(&a, 2, 16, DType::F32, Device::Cpu).unwrap();
    // Something written first, so "unchanged" means something.
    let table = |t: Vec<i32>, c: Vec<usize>| PagedTable::new(4, 3, t, c);
    let prefill =
        AttnParams::new(2, 3).with_block_table(table(vec![4, -1, -1, 1, -1, -1], vec![1, 1]));
    model
        .forward(&s, &[1, 2, 3, 4, 5, 6], &prefill, Some(&mut pool), &mut ws)
        .unwrap();
    let before = cache_bytes(&pool);
    let hidden = |tokens: usize| {
        Tensor::from_f32(vec![0.25; tokens * a.hidden], &[tokens, a.hidden]).unwrap()
    };
    let step = |past: Vec<usize>, q_len: usize| AttnParams::with_past(2, q_len, past);

    // The layer and the model see the same errors; nothing written by either.
    let mut both = |p: &AttnParams, cache: Option<&mut KvCache>| -> (Error, Error) {
        let tokens = p.tokens();
        let mut cache = cache;
        let e1 = err(layer.forward(
            &s,
            &mut hidden(tokens),
            cache.as_deref_mut(),
            p,
            &[],
            &mut ws,
        ));
        let ids = vec![1u32; tokens];
        let e2 = err(model.forward(&s, &ids, p, cache, &mut ws));
        (e1, e2)
    };

    // A paged cache without a block table.
    for e in <[Error; 2]>::from(both(&step(vec![3, 3], 1), Some(&mut pool))) {
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("paged") && m.contains("needs a block table")),
            "{e}"
        );
    }
    // A block table with a contiguous cache, and with no cache.
    let t = table(vec![4, -1, -1, 1, -1, -1], vec![1, 1]);
    for e in <[Error; 2]>::from(both(
        &step(vec![3, 3], 1).with_block_table(t.clone()),
        Some(&mut flat),
    )) {
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("block table") && m.contains("contiguous")),
            "{e}"
        );
    }
    for e in <[Error; 2]>::from(both(&step(vec![3, 3], 1).with_block_table(t.clone()), None)) {
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("block table") && m.contains("no KV cache")),
            "{e}"
        );
    }
    // Another page size than the cache's.
    let other = PagedTable::new(8, 3, vec![4, -1, -1, 1, -1, -1], vec![1, 1]);
    for e in <[Error; 2]>::from(both(
        &step(vec![3, 3], 1).with_block_table(other),
        Some(&mut pool),
    )) {
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("pages of 8 positions") && m.contains("hold 4")),
            "{e}"
        );
    }
    // A page outside the pool of 6.
    let outside = table(vec![4, 9, -1, 1, 3, -1], vec![2, 2]);
    for e in <[Error; 2]>::from(both(
        &step(vec![3, 3], 2).with_block_table(outside),
        Some(&mut pool),
    )) {
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("page 1 is 9") && m.contains("pool of 6")),
            "{e}"
        );
    }
    // Positions past a sequence's pages (sequence 1 owns one page of 4; 3 + 2 > 4).
    let short = table(vec![4, 0, -1, 1, -1, -1], vec![2, 1]);
    for e in <[Error; 2]>::from(both(
        &step(vec![3, 3], 2).with_block_table(short),
        Some(&mut pool),
    )) {
        assert!(
            matches!(&e, Error::CapacityExceeded(m) if m.contains("sequence 1")),
            "{e}"
        );
    }
    // Two sequences writing the same pool row (both at position 3 of page 4).
    let twice = table(vec![4, -1, -1, 4, -1, -1], vec![1, 1]);
    for e in <[Error; 2]>::from(both(
        &step(vec![3, 3], 1).with_block_table(twice),
        Some(&mut pool),
    )) {
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("both write pool row 19")),
            "{e}"
        );
    }
    // A table for another batch, and page counts past the table's width.
    let three = PagedTable::new(4, 3, vec![4, -1, -1, 1, -1, -1, 2, -1, -1], vec![1, 1, 1]);
    for e in <[Error; 2]>::from(both(
        &step(vec![3, 3], 1).with_block_table(three),
        Some(&mut pool),
    )) {
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("9 entries") && m.contains("2 sequences")),
            "{e}"
        );
    }
    let wide = table(vec![4, 0, 2, 1, -1, -1], vec![4, 1]);
    for e in <[Error; 2]>::from(both(
        &step(vec![3, 3], 1).with_block_table(wide),
        Some(&mut pool),
    )) {
        assert!(
            matches!(&e, Error::BadInput(m) if m.contains("owns 4 pages")),
            "{e}"
        );
    }
    assert_eq!(cache_bytes(&pool), before, "a refused call wrote nothing");
    // The validation of the parameters alone names the table too.
    let e = step(vec![3, 3], 1)
        .with_block_table(table(vec![4, 1], vec![1, 1]))
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("2 entries"), "{e}");

    // A call that fits still runs after the refused ones.
    let ok = step(vec![3, 3], 2).with_block_table(table(vec![4, 0, -1, 1, 3, -1], vec![2, 2]));
    model
        .forward(&s, &[7, 8, 9, 10], &ok, Some(&mut pool), &mut ws)
        .unwrap();
    assert_ne!(cache_bytes(&pool), before);
}

/// What a paged cache is and refuses when it is made; what it answers about itself.
#[test]
fn paged_cache_construction_and_queries() {
    let cpu = Device::Cpu;
    let c = KvCache::paged(3, 10, 16, 2, 32, DType::F32, cpu, KvCacheMode::Q4).unwrap();
    assert!(c.is_paged());
    assert_eq!((c.page_size(), c.num_pages()), (Some(16), Some(10)));
    assert_eq!((c.batch, c.capacity, c.num_layers()), (0, 160, 3));
    assert_eq!(c.held(2).unwrap(), &[] as &[usize]);
    let q = c.quant_layer(2).unwrap();
    assert_eq!(q.k.codes.shape(), &[10, 16, 32]); // Q4: two values a byte
    let e = c.layer(0).unwrap_err();
    assert!(e.to_string().contains("paged"), "{e}");
    let e = c.check_positions(0, &[0], 1).unwrap_err();
    assert!(e.to_string().contains("block table"), "{e}");
    let n = KvCache::paged(1, 4, 8, 2, 16, DType::F32, cpu, KvCacheMode::Native).unwrap();
    assert_eq!(n.quant_layer(0).unwrap().k.codes.dtype(), DType::F32);
    let flat = KvCache::new(1, 2, 8, 2, 16, DType::F32, cpu).unwrap();
    assert!(!flat.is_paged() && flat.page_size().is_none() && flat.num_pages().is_none());

    // Sizes must be positive; a native pool on the CPU holds f32; a mode must fit the heads.
    let e = KvCache::paged(1, 0, 8, 2, 16, DType::F32, cpu, KvCacheMode::Native).unwrap_err();
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains("0 pages")),
        "{e}"
    );
    let e = KvCache::paged(1, 4, 0, 2, 16, DType::F32, cpu, KvCacheMode::Native).unwrap_err();
    assert!(matches!(&e, Error::BadInput(_)), "{e}");
    let e = KvCache::paged(1, 4, 8, 2, 16, DType::F16, cpu, KvCacheMode::Native).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("f32")),
        "{e}"
    );
    let e = KvCache::paged(1, 4, 8, 2, 80, DType::F32, cpu, KvCacheMode::Q8).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("80")),
        "{e}"
    );
    let e = KvCache::paged(1, 1 << 31, 8, 2, 16, DType::F32, cpu, KvCacheMode::Native).unwrap_err();
    assert!(e.to_string().contains("int32"), "{e}");

    // Bytes: a pool is laid out as a contiguous cache of num_pages × page_size.
    assert_eq!(
        KvCache::bytes_needed_paged(2, 10, 16, 2, 32, DType::F16, &KvCacheMode::Native),
        2 * 2 * 10 * 16 * 64 * 2
    );
    // Q8: a byte a value and an fp16 scale per 32 values, K and V.
    assert_eq!(
        KvCache::bytes_needed_paged(2, 10, 16, 2, 32, DType::F16, &KvCacheMode::Q8),
        2 * 10 * 16 * 2 * (64 + 2 * 2)
    );
}

/// A workspace planned for a paged cache holds what its forwards take beyond the contiguous
/// plan: the gathered K and V of a prefill (in every mode, the native one included) and the
/// block tables each layer uploads.
#[test]
fn workspace_plan_counts_the_paged_cache() {
    let arch = paradec::ArchParams::from_dir(fixture("cohere")).unwrap();
    let (tokens, max_pages, page_size) = (64, 25, 4);
    let kv_len = max_pages * page_size;
    let native = Workspace::bytes_needed(&arch, tokens, kv_len, DType::F16).unwrap();
    let quant =
        Workspace::bytes_needed_for_mode(&arch, tokens, kv_len, DType::F16, &KvCacheMode::Q8)
            .unwrap();
    let paged =
        Workspace::bytes_needed_paged(&arch, tokens, max_pages, page_size, DType::F16).unwrap();
    // Up to tokens / 17 + 1 = 4 sequences × kv_len × K and V × kv_heads · head_dim in f16,
    // and two int32 tables of tokens × max_pages.
    let gather = 4 * kv_len * 2 * arch.kv_heads * arch.head_dim * 2;
    let tables = 2 * 4 * tokens * max_pages;
    assert!(
        paged >= native + gather + tables,
        "{paged} < {native} + {gather} + {tables}"
    );
    assert!(paged >= quant, "{paged} < {quant}");
    assert!(Workspace::bytes_needed_paged(&arch, tokens, usize::MAX, 2, DType::F16).is_err());
}
