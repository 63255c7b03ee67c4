//! Quantized KV-cache modes on the CPU (the twins of the CUDA kernels): each format's round trip
//! against the exact values, attention over each mode against the exact (f32) cache on random
//! data, and whole-model forwards over the fixtures with each mode against the native cache.
//! The measured errors are printed (`--nocapture`) and recorded in docs/formats.md.

mod common;

use common::*;
use half::f16;
use paradec::kv_quant::{dequantize_row, quantize_row, KvFormat, RUN};
use paradec::ops;
use paradec::vocab::{AttnMasking, AttnShape, CacheSlots, RopeStyle, RotaryArgs};
use paradec::{AttnParams, DType, Device, Error, KvCache, KvCacheMode, Model, Stream, Workspace};

/// Random rows with a spread of magnitudes per head and a few outliers, as real K/V have.
fn kv_values(rng: &mut Rng, rows: usize, kv_dim: usize, head_dim: usize) -> Vec<f32> {
    let scale: Vec<f32> = (0..kv_dim / head_dim)
        .map(|_| 0.2 + 2.0 * rng.uniform().abs())
        .collect();
    (0..rows * kv_dim)
        .map(|i| {
            let out = if rng.below(64) == 0 { 6.0 } else { 1.0 };
            rng.uniform() * scale[(i % kv_dim) / head_dim] * out
        })
        .collect()
}

#[test]
fn each_format_round_trips_within_its_bound() {
    let mut rng = Rng::new(11);
    let (kv_heads, head_dim) = (3, 64);
    let kv_dim = kv_heads * head_dim;
    let head_scale = [0.5f32, 1.0, 3.0];
    for format in [KvFormat::E4M3, KvFormat::E5M2, KvFormat::Q8, KvFormat::Q4] {
        let mut worst = 0.0f32;
        for _ in 0..64 {
            let x = kv_values(&mut rng, 1, kv_dim, head_dim);
            let mut codes = vec![0u8; format.row_bytes(kv_dim)];
            let mut scales = vec![f16::ZERO; kv_dim / RUN];
            quantize_row(format, &x, head_dim, &head_scale, &mut codes, &mut scales);
            let mut back = vec![0.0f32; kv_dim];
            dequantize_row(format, &codes, &scales, head_dim, &head_scale, &mut back);
            for (i, (&a, &b)) in x.iter().zip(&back).enumerate() {
                let err = (a - b).abs();
                // The bound of each format (docs/formats.md):
                let bound = match format {
                    // 3 mantissa bits, nearest: half a unit in the last place (2^-4 relative),
                    // or half the subnormal step 2^-9 (times the head's scale).
                    KvFormat::E4M3 => {
                        let s = head_scale[i / head_dim];
                        (a.abs() / 16.0).max(s / 1024.0) * 1.0001
                    }
                    // fp16 (nearest) then 8 of its 10 mantissa bits dropped: below 2^-2 relative.
                    KvFormat::E5M2 => a.abs() / 4.0 + 1e-7,
                    // One quantization step of the run: s / 128 or s / 8 (kv_quant's docs).
                    KvFormat::Q8 | KvFormat::Q4 => {
                        let c = if format == KvFormat::Q8 { 128.0 } else { 8.0 };
                        scales[i / RUN].to_f32() / c * 1.0001
                    }
                    KvFormat::Native => 0.0,
                };
                assert!(
                    err <= bound,
                    "{format:?}: value {i} {a} came back {b} (error {err:.3e} > {bound:.3e})"
                );
                worst = worst.max(err / a.abs().max(1e-3));
            }
        }
        println!("{format:?}: worst relative round-trip error {worst:.3e}");
    }
}

/// Attention over a cache in `mode` (written through `rotary_and_cache_write_quant`) and over
/// the exact f32 cache (native ops); returns (the mode's output, the exact output).
#[allow(clippy::too_many_arguments)]
fn attention_pair(
    mode: &KvCacheMode,
    rng: &mut Rng,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    past: &[usize],
    q_len: usize,
    fp16_kv: bool,
) -> (Vec<f32>, Vec<f32>) {
    let s = Stream::Host;
    let mut ws = Workspace::cpu();
    let kv_dim = kv_heads * head_dim;
    let capacity = past.iter().max().unwrap() + q_len + 3;
    let mut cache_q = KvCache::with_mode(
        1,
        batch,
        capacity,
        kv_heads,
        head_dim,
        DType::F32,
        Device::Cpu,
        mode.clone(),
    )
    .unwrap();
    let mut cache_n = KvCache::new(
        1,
        batch,
        capacity,
        kv_heads,
        head_dim,
        DType::F32,
        Device::Cpu,
    )
    .unwrap();
    let inv: Vec<f32> = (0..head_dim / 4)
        .map(|j| 10000f32.powf(-(2.0 * j as f32) / (head_dim as f32 / 2.0)))
        .collect();
    let rot = RotaryArgs {
        style: RopeStyle::Half,
        rot_dim: head_dim / 2,
        inv_freq: &inv,
        attn_factor: 1.0,
    };
    // Fill the past in one write per sequence length, then the call's tokens.
    let mut q_out = Vec::new();
    for (step, (lens, ql)) in [(vec![0; batch], 0usize), (past.to_vec(), q_len)]
        .into_iter()
        .enumerate()
    {
        let (p_now, n_new) = if step == 0 {
            (vec![0; batch], *past.iter().max().unwrap())
        } else {
            (lens.clone(), ql)
        };
        if n_new == 0 {
            continue;
        }
        let tokens = batch * n_new;
        let mut k = kv_values(rng, tokens, kv_dim, head_dim);
        let mut v = kv_values(rng, tokens, kv_dim, head_dim);
        if fp16_kv {
            for x in k.iter_mut().chain(v.iter_mut()) {
                *x = f16::from_f32(*x).to_f32();
            }
        }
        let qv: Vec<f32> = (0..tokens * heads * head_dim)
            .map(|_| rng.uniform() * 2.0)
            .collect();
        let pn = &p_now;
        let positions: Vec<i64> = (0..batch)
            .flat_map(|b| (0..n_new).map(move |t| (pn[b] + t) as i64))
            .collect();
        let at = CacheSlots {
            batch,
            q_len: n_new,
            capacity,
            past_len: &p_now,
        };
        let t = |v: &[f32], w: usize| paradec::Tensor::from_f32(v.to_vec(), &[tokens, w]).unwrap();
        let (mut q1, mut k1, v1) = (t(&qv, heads * head_dim), t(&k, kv_dim), t(&v, kv_dim));
        let (mut q2, mut k2, v2) = (t(&qv, heads * head_dim), t(&k, kv_dim), t(&v, kv_dim));
        if mode.is_quantized() {
            let layer = cache_q.quant_layer_mut(0).unwrap();
            ops::rotary_and_cache_write_quant(
                &s,
                &mut ws,
                &mut q1,
                &mut k1,
                &v1,
                heads,
                kv_heads,
                head_dim,
                &positions,
                Some(&rot),
                &at,
                layer,
            )
            .unwrap();
        } else {
            let (ck, cv) = cache_q.layer_mut(0).unwrap();
            ops::rotary_and_cache_write(
                &s,
                &mut ws,
                &mut q1,
                &mut k1,
                &v1,
                heads,
                kv_heads,
                head_dim,
                &positions,
                Some(&rot),
                &at,
                ck,
                cv,
            )
            .unwrap();
        }
        let (ck, cv) = cache_n.layer_mut(0).unwrap();
        ops::rotary_and_cache_write(
            &s,
            &mut ws,
            &mut q2,
            &mut k2,
            &v2,
            heads,
            kv_heads,
            head_dim,
            &positions,
            Some(&rot),
            &at,
            ck,
            cv,
        )
        .unwrap();
        assert_eq!(
            q1.as_f32().unwrap(),
            q2.as_f32().unwrap(),
            "q rotates alike"
        );
        q_out = q1.as_f32().unwrap().to_vec();
    }
    let shape = AttnShape {
        batch,
        q_len,
        heads,
        kv_heads,
        head_dim,
        capacity,
    };
    let masking = AttnMasking {
        past_len: past,
        window: 0,
        mask: None,
        mask_stride: 0,
    };
    let q = paradec::Tensor::from_f32(q_out, &[batch * q_len, heads * head_dim]).unwrap();
    let n = batch * q_len * heads * head_dim;
    let mut o1 = paradec::Tensor::from_f32(vec![0.0; n], &[n]).unwrap();
    let mut o2 = paradec::Tensor::from_f32(vec![0.0; n], &[n]).unwrap();
    let scale = 1.0 / (head_dim as f32).sqrt();
    if mode.is_quantized() {
        let layer = cache_q.quant_layer(0).unwrap();
        ops::attention_quant(&s, &mut ws, &q, layer, &shape, &masking, scale, &mut o1).unwrap();
    } else {
        let (ck, cv) = cache_q.layer(0).unwrap();
        ops::attention(&s, &mut ws, &q, ck, cv, &shape, &masking, scale, &mut o1).unwrap();
    }
    let (ck, cv) = cache_n.layer(0).unwrap();
    ops::attention(&s, &mut ws, &q, ck, cv, &shape, &masking, scale, &mut o2).unwrap();
    (o1.as_f32().unwrap().to_vec(), o2.as_f32().unwrap().to_vec())
}

/// ‖a − b‖ / ‖b‖.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Tolerances of attention over each mode against the exact cache, relative L2 (measured
/// figures are in docs/formats.md; these leave about 1.5–2× margin over the worst seen).
fn tolerance(mode: &KvCacheMode) -> f64 {
    match mode {
        KvCacheMode::Native => 1e-6,
        KvCacheMode::Fp8E4M3 { .. } => 0.08,
        KvCacheMode::Fp8E5M2 => 0.40,
        KvCacheMode::Q8 => 0.02,
        KvCacheMode::Q6 => 0.20,
        KvCacheMode::Q4 => 0.30,
    }
}

#[test]
fn attention_over_each_mode_against_the_exact_cache() {
    let mut rng = Rng::new(2024);
    // (batch, heads, kv_heads, head_dim, past lengths, q_len)
    type Shape<'a> = (usize, usize, usize, usize, &'a [usize], usize);
    let shapes: &[Shape] = &[
        (1, 4, 4, 32, &[0], 1),
        (2, 8, 2, 64, &[37, 5], 1),
        (2, 8, 1, 128, &[129, 300], 3),
        (1, 4, 2, 96, &[17], 9),
        (3, 2, 2, 64, &[1, 0, 63], 20),
    ];
    for mode in KvCacheMode::all() {
        let mut worst = 0.0f64;
        for &(batch, heads, kv, d, past, q_len) in shapes {
            let (got, want) =
                attention_pair(&mode, &mut rng, batch, heads, kv, d, past, q_len, false);
            assert!(
                got.iter().all(|x| x.is_finite()),
                "{mode:?}: non-finite output"
            );
            let e = rel_l2(&got, &want);
            worst = worst.max(e);
            assert!(
                e <= tolerance(&mode),
                "{} b{batch} h{heads}/{kv} d{d} past {past:?} q{q_len}: rel L2 {e:.3e}",
                mode.name()
            );
        }
        println!(
            "{:8}: attention rel L2 vs exact cache, worst {worst:.3e}",
            mode.name()
        );
    }
}

/// The figures of docs/formats.md: attention over each mode against the exact cache and
/// against an fp16 cache (the values rounded to fp16 before they are written), on random
/// data, decode (q_len 1) over 1024 past positions, 32 query heads over 8 KV heads of 128.
#[test]
fn measured_attention_error_per_mode() {
    for mode in KvCacheMode::all() {
        let mut rng = Rng::new(77);
        let (got, exact) = attention_pair(&mode, &mut rng, 2, 32, 8, 128, &[1024, 700], 1, true);
        // The native cache over the same fp16-rounded values is "the fp16 cache".
        let mut rng = Rng::new(77);
        let (fp16, _) = attention_pair(
            &KvCacheMode::Native,
            &mut rng,
            2,
            32,
            8,
            128,
            &[1024, 700],
            1,
            true,
        );
        // And the fp16 cache against the exact one (the same draws, not rounded).
        if !mode.is_quantized() {
            let mut rng = Rng::new(77);
            let (f32_out, _) = attention_pair(
                &KvCacheMode::Native,
                &mut rng,
                2,
                32,
                8,
                128,
                &[1024, 700],
                1,
                false,
            );
            println!(
                "random, decode over 1024: the fp16 cache vs the exact f32 one: rel L2 {:.3e}",
                rel_l2(&got, &f32_out)
            );
        }
        let e_exact = rel_l2(&got, &exact);
        let e16 = rel_l2(&got, &fp16);
        println!(
            "random, decode over 1024: {:8} rel L2 vs fp16 cache {e16:.3e}, max rel {:.3e}",
            mode.name(),
            rel_err(&got, &fp16)
        );
        assert!(e_exact <= tolerance(&mode).max(1e-6));
    }
}

/// A fixture's 4 steps (left-padded prefill and 3 decode steps) over a cache in `mode`;
/// returns each step's logits with the rows that are not padding.
fn fixture_steps(
    model: &Model,
    variant: &str,
    mode: &KvCacheMode,
) -> paradec::Result<Vec<(Vec<f32>, Vec<bool>)>> {
    let r = reference(variant);
    let a = &model.arch;
    let mut cache = KvCache::with_mode(
        a.num_layers,
        2,
        10,
        a.kv_heads,
        a.head_dim,
        DType::F32,
        Device::Cpu,
        mode.clone(),
    )?;
    let mut ws = Workspace::cpu();
    (0..4)
        .map(|t| {
            let (ids, shape) = i64s(&r, &format!("step{t}.input_ids"));
            let (mask, mshape) = i64s(&r, &format!("step{t}.attention_mask"));
            let (q, slots) = (shape[1], mshape[1]);
            let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
            let p = AttnParams::with_past(2, q, vec![slots - q; 2])
                .with_attention_mask(&mask, slots)?;
            let keep: Vec<bool> = (0..2)
                .flat_map(|b| (0..q).map(move |i| (b, i)))
                .map(|(b, i)| mask[b * slots + slots - q + i] == 1)
                .collect();
            let logits = model.forward(&Stream::Host, &ids, &p, Some(&mut cache), &mut ws)?;
            Ok((values(&logits), keep))
        })
        .collect()
}

/// Every fixture model, every mode: the logits of each step against the native cache's. A mode
/// that cannot store the model's heads (Hadamard runs of 32 over head_dim 16 or 80) is refused
/// with `Unsupported` when the cache is made.
#[test]
fn fixture_forwards_per_mode_against_the_native_cache() {
    let variants = [
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
    for variant in variants {
        let model = Model::load(fixture(variant)).unwrap();
        let native = fixture_steps(&model, variant, &KvCacheMode::Native).unwrap();
        let vocab = model.arch.vocab;
        for mode in KvCacheMode::all().into_iter().skip(1) {
            let got = match fixture_steps(&model, variant, &mode) {
                Ok(g) => g,
                Err(Error::Unsupported(m)) => {
                    assert!(
                        !model.arch.head_dim.is_multiple_of(RUN),
                        "{variant} {}: {m}",
                        mode.name()
                    );
                    continue;
                }
                Err(e) => panic!("{variant} {}: {e}", mode.name()),
            };
            let mut worst = 0.0f64;
            for ((g, keep), (n, _)) in got.iter().zip(&native) {
                worst = worst.max(rel_err_rows(g, n, vocab, keep));
            }
            println!(
                "fixture {variant:20} {:8} logits max rel err vs native {worst:.3e}",
                mode.name()
            );
            assert!(
                worst <= 2.0 * tolerance(&mode),
                "{variant} {}: {worst:.3e}",
                mode.name()
            );
        }
    }
}

#[test]
fn bad_modes_and_writes_are_named_errors() {
    let cpu = Device::Cpu;
    // Hadamard runs would cross heads of 80.
    let e = KvCache::with_mode(1, 1, 8, 2, 80, DType::F32, cpu, KvCacheMode::Q4).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(_)) && e.to_string().contains("80"),
        "{e}"
    );
    // E5M2 truncates fp16: not for bf16.
    let e = KvCache::with_mode(1, 1, 8, 2, 64, DType::BF16, cpu, KvCacheMode::Fp8E5M2).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    // E4M3 scales: one per layer and KV head, positive.
    let bad = KvCacheMode::Fp8E4M3 {
        k_scales: vec![1.0; 3],
        v_scales: vec![],
    };
    let e = KvCache::with_mode(2, 1, 8, 2, 64, DType::F32, cpu, bad).unwrap_err();
    assert!(e.to_string().contains("k_scales"), "{e}");
    let bad = KvCacheMode::Fp8E4M3 {
        k_scales: vec![],
        v_scales: vec![1.0, 0.0],
    };
    let e = KvCache::with_mode(1, 1, 8, 2, 64, DType::F32, cpu, bad).unwrap_err();
    assert!(e.to_string().contains("v_scales[1]"), "{e}");
    assert!(KvCacheMode::parse("q5").is_err());
    // A quantized cache has no native tensors, and a write past the capacity is refused.
    let mut c = KvCache::with_mode(1, 1, 4, 1, 32, DType::F32, cpu, KvCacheMode::Q8).unwrap();
    assert!(c.layer(0).is_err());
    let (s, mut ws) = (Stream::Host, Workspace::cpu());
    let mut q = paradec::Tensor::from_f32(vec![0.5; 64], &[2, 32]).unwrap();
    let mut k = paradec::Tensor::from_f32(vec![0.5; 64], &[2, 32]).unwrap();
    let v = paradec::Tensor::from_f32(vec![0.5; 64], &[2, 32]).unwrap();
    let at = CacheSlots {
        batch: 1,
        q_len: 2,
        capacity: 4,
        past_len: &[3],
    };
    let e = ops::rotary_and_cache_write_quant(
        &s,
        &mut ws,
        &mut q,
        &mut k,
        &v,
        1,
        1,
        32,
        &[3, 4],
        None,
        &at,
        c.quant_layer_mut(0).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::CapacityExceeded(_)), "{e}");
    // Pages of another shape than the call's are named.
    let at = CacheSlots {
        capacity: 5,
        past_len: &[0],
        ..at
    };
    let e = ops::rotary_and_cache_write_quant(
        &s,
        &mut ws,
        &mut q,
        &mut k,
        &v,
        1,
        1,
        32,
        &[0, 1],
        None,
        &at,
        c.quant_layer_mut(0).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("cache k codes"), "{e}");
}

/// A paged pool holds what a contiguous cache holds: the same tokens written through a block
/// table (pages shuffled, odd page sizes) give attention outputs equal to the contiguous
/// cache's, in every mode.
#[test]
fn paged_pool_equals_the_contiguous_cache() {
    use paradec::kv_quant::{BlockTable, QuantLayer};
    let (s, mut ws) = (Stream::Host, Workspace::cpu());
    let mut rng = Rng::new(5150);
    for mode in KvCacheMode::all() {
        for (page_size, kv_heads, d) in [(16usize, 2usize, 64usize), (5, 1, 32), (1, 4, 32)] {
            let (heads, batch, q_len) = (2 * kv_heads, 3, 2);
            let past = [9usize, 0, 17];
            let kv_dim = kv_heads * d;
            let need: Vec<usize> = past
                .iter()
                .map(|p| (p + q_len).div_ceil(page_size))
                .collect();
            let max_pages = *need.iter().max().unwrap();
            let num_pages: usize = need.iter().sum::<usize>() + 3;
            let mut order: Vec<i32> = (0..num_pages as i32).rev().collect();
            order.rotate_left(2);
            let mut table = vec![-1i32; batch * max_pages];
            let mut next = 0;
            for b in 0..batch {
                for i in 0..need[b] {
                    table[b * max_pages + i] = order[next];
                    next += 1;
                }
            }
            let bt = BlockTable {
                page_size,
                max_pages,
                table: &table,
                page_count: &need,
            };
            let capacity = 20;
            let mut pool = QuantLayer::new(
                &mode,
                0,
                1,
                num_pages,
                page_size,
                kv_heads,
                d,
                DType::F32,
                Device::Cpu,
            )
            .unwrap();
            let mut flat = QuantLayer::new(
                &mode,
                0,
                1,
                batch,
                capacity,
                kv_heads,
                d,
                DType::F32,
                Device::Cpu,
            )
            .unwrap();
            // The whole history in one write (positions 0 … past + q_len − 1).
            let lens: Vec<usize> = past.iter().map(|p| p + q_len).collect();
            let n_new = *lens.iter().max().unwrap();
            // Each sequence writes only its own length: one call per sequence.
            for b in 0..batch {
                let n = lens[b];
                let k = kv_values(&mut rng, n, kv_dim, d);
                let v = kv_values(&mut rng, n, kv_dim, d);
                let t = |x: &[f32], w| paradec::Tensor::from_f32(x.to_vec(), &[n, w]).unwrap();
                let pos = vec![0i64; n];
                let t1 = BlockTable {
                    table: &table[b * max_pages..(b + 1) * max_pages],
                    page_count: &need[b..b + 1],
                    ..bt
                };
                let mut q0 = t(&vec![0.0; n * kv_dim], kv_dim);
                let (mut k1, v1) = (t(&k, kv_dim), t(&v, kv_dim));
                ops::paged_rotary_and_cache_write(
                    &s,
                    &mut ws,
                    &mut q0,
                    &mut k1,
                    &v1,
                    kv_heads,
                    kv_heads,
                    d,
                    &pos,
                    None,
                    &[0],
                    n,
                    &t1,
                    &mut pool,
                )
                .unwrap();
                // The contiguous cache: sequence b alone, as a batch of 1 at its row.
                let mut one = QuantLayer::new(
                    &mode,
                    0,
                    1,
                    1,
                    capacity,
                    kv_heads,
                    d,
                    DType::F32,
                    Device::Cpu,
                )
                .unwrap();
                let at = CacheSlots {
                    batch: 1,
                    q_len: n,
                    capacity,
                    past_len: &[0],
                };
                let (mut k2, v2) = (t(&k, kv_dim), t(&v, kv_dim));
                ops::rotary_and_cache_write_quant(
                    &s, &mut ws, &mut q0, &mut k2, &v2, kv_heads, kv_heads, d, &pos, None, &at,
                    &mut one,
                )
                .unwrap();
                copy_row(&one, &mut flat, b, capacity, kv_dim);
            }
            let _ = n_new;
            let shape = AttnShape {
                batch,
                q_len,
                heads,
                kv_heads,
                head_dim: d,
                capacity,
            };
            let masking = AttnMasking {
                past_len: &past,
                window: 0,
                mask: None,
                mask_stride: 0,
            };
            let q = paradec::Tensor::from_f32(
                (0..batch * q_len * heads * d)
                    .map(|_| rng.uniform())
                    .collect(),
                &[batch * q_len, heads * d],
            )
            .unwrap();
            let n = batch * q_len * heads * d;
            let mut o1 = paradec::Tensor::from_f32(vec![0.0; n], &[n]).unwrap();
            let mut o2 = paradec::Tensor::from_f32(vec![0.0; n], &[n]).unwrap();
            ops::paged_attention(
                &s, &mut ws, &q, &pool, &bt, &shape, &masking, 0.125, &mut o1,
            )
            .unwrap();
            ops::attention_quant(&s, &mut ws, &q, &flat, &shape, &masking, 0.125, &mut o2).unwrap();
            assert_eq!(
                o1.as_f32().unwrap(),
                o2.as_f32().unwrap(),
                "{} page {page_size}",
                mode.name()
            );
        }
    }
}

/// Copies sequence 0 of `one` (pages of one sequence) into sequence b of `flat`.
fn copy_row(
    one: &paradec::kv_quant::QuantLayer,
    flat: &mut paradec::kv_quant::QuantLayer,
    b: usize,
    capacity: usize,
    kv_dim: usize,
) {
    for (src, dst) in [(&one.k, &mut flat.k), (&one.v, &mut flat.v)] {
        if let Ok(x) = src.codes.as_f32() {
            let n = capacity * kv_dim;
            dst.codes.as_f32_mut().unwrap()[b * n..(b + 1) * n].copy_from_slice(x);
            continue;
        }
        let pairs = [
            (Some(&src.codes), Some(&mut dst.codes)),
            (src.scales.as_ref(), dst.scales.as_mut()),
        ];
        for (s, d) in pairs {
            if let (Some(s), Some(d)) = (s, d) {
                let bytes = s.host().unwrap().to_le_bytes();
                let mut all = d.host().unwrap().to_le_bytes();
                all[b * bytes.len()..(b + 1) * bytes.len()].copy_from_slice(&bytes);
                *d.host_mut().unwrap() = paradec::HostData::from_le_bytes(d.dtype(), &all).unwrap();
            }
        }
    }
}

/// A block table that does not cover a call is refused before anything is written, with an
/// error naming the sequence and page.
#[test]
fn bad_block_tables_are_named_errors() {
    use paradec::kv_quant::{BlockTable, QuantLayer};
    let (s, mut ws) = (Stream::Host, Workspace::cpu());
    let mut pool =
        QuantLayer::new(&KvCacheMode::Q8, 0, 1, 4, 8, 1, 32, DType::F32, Device::Cpu).unwrap();
    let before = pool.k.codes.host().unwrap().to_le_bytes();
    let mut call = |table: &[i32], page_count: &[usize], past: &[usize], q_len: usize| {
        let tokens = past.len() * q_len;
        let mut q = paradec::Tensor::from_f32(vec![0.5; tokens * 32], &[tokens, 32]).unwrap();
        let mut k = paradec::Tensor::from_f32(vec![0.5; tokens * 32], &[tokens, 32]).unwrap();
        let v = paradec::Tensor::from_f32(vec![0.5; tokens * 32], &[tokens, 32]).unwrap();
        let bt = BlockTable {
            page_size: 8,
            max_pages: 2,
            table,
            page_count,
        };
        ops::paged_rotary_and_cache_write(
            &s,
            &mut ws,
            &mut q,
            &mut k,
            &v,
            1,
            1,
            32,
            &vec![0; tokens],
            None,
            past,
            q_len,
            &bt,
            &mut pool,
        )
        .map(|_| ())
    };
    // A page outside the pool of 4.
    let e = call(&[0, 7], &[2], &[6], 4).unwrap_err();
    assert!(e.to_string().contains("page 1 is 7"), "{e}");
    // A length past the sequence's pages.
    let e = call(&[0, 1], &[1], &[6], 4).unwrap_err();
    assert!(
        matches!(e, Error::CapacityExceeded(_)) && e.to_string().contains("sequence 0"),
        "{e}"
    );
    // More pages than the table has room for.
    let e = call(&[0, 1], &[3], &[0], 1).unwrap_err();
    assert!(e.to_string().contains("owns 3 pages"), "{e}");
    // A table of the wrong size.
    let e = call(&[0, 1, 2], &[1], &[0], 1).unwrap_err();
    assert!(e.to_string().contains("3 entries"), "{e}");
    // Two sequences writing the same row.
    let e = call(&[0, 1, 0, 2], &[1, 1], &[3, 3], 1).unwrap_err();
    assert!(e.to_string().contains("both write pool row 3"), "{e}");
    assert_eq!(
        pool.k.codes.host().unwrap().to_le_bytes(),
        before,
        "nothing written"
    );
    // Reading a shared page is fine (prefix sharing).
    let q = paradec::Tensor::from_f32(vec![0.5; 64], &[2, 32]).unwrap();
    let mut o = paradec::Tensor::from_f32(vec![0.0; 64], &[2, 32]).unwrap();
    let bt = BlockTable {
        page_size: 8,
        max_pages: 2,
        table: &[0, 1, 0, 2],
        page_count: &[2, 2],
    };
    let shape = AttnShape {
        batch: 2,
        q_len: 1,
        heads: 1,
        kv_heads: 1,
        head_dim: 32,
        capacity: 0,
    };
    let masking = AttnMasking {
        past_len: &[9, 12],
        window: 0,
        mask: None,
        mask_stride: 0,
    };
    ops::paged_attention(&s, &mut ws, &q, &pool, &bt, &shape, &masking, 1.0, &mut o).unwrap();
}
