//! The quantized KV cache on the GPU against its CPU twins (`cpu::kv_quant`), every mode:
//! the quantizing rotary + cache write (codes and scales against the CPU's from the same
//! rotated values), decode attention reading the pages (over the very pages the CPU reads:
//! the oracle is the CPU twin of the same mode, within the dtype's budget — 2e-3 relative for
//! f16), the dequantizing prefill path, and the fixture model through a quantized cache.
//! Cache slots a call must not read hold codes that decode to NaN (FP8) or NaN run scales.

use super::*;
use half::f16;
use paradec::cpu::kv_quant::{PagesMut, PagesRef};
use paradec::kv_quant::{BlockTable, KvFormat, QuantLayer, QuantPages, RUN};
use paradec::{KvCache, KvCacheMode, Workspace};

fn modes() -> Vec<KvCacheMode> {
    let mut m = KvCacheMode::all().into_iter().skip(1).collect::<Vec<_>>();
    // E4M3 with scales other than 1 (two layers × up to 8 KV heads).
    m[0] = KvCacheMode::Fp8E4M3 {
        k_scales: (0..16).map(|i| 0.25 + 0.1 * i as f32).collect(),
        v_scales: (0..16).map(|i| 2.0 - 0.1 * i as f32).collect(),
    };
    m
}

/// `mode` with its E4M3 scale lists cut to `layers` × `kv_heads`.
fn sized(mode: &KvCacheMode, layers: usize, kv_heads: usize) -> KvCacheMode {
    match mode {
        KvCacheMode::Fp8E4M3 { k_scales, v_scales } => KvCacheMode::Fp8E4M3 {
            k_scales: k_scales[..layers * kv_heads].to_vec(),
            v_scales: v_scales[..layers * kv_heads].to_vec(),
        },
        m => m.clone(),
    }
}

fn fits(mode: &KvCacheMode, d: usize, dtype: DType) -> bool {
    let (fk, fv) = mode.formats();
    !((fk.has_run_scales() || fv.has_run_scales()) && !d.is_multiple_of(RUN)
        || matches!(mode, KvCacheMode::Fp8E5M2) && dtype == DType::BF16)
}

fn to_gpu(p: &QuantPages) -> QuantPages {
    let g = |t: &Tensor| t.to_device(Device::Cuda(0)).unwrap();
    QuantPages {
        format: p.format,
        codes: g(&p.codes),
        scales: p.scales.as_ref().map(g),
        head_scales: p.head_scales.as_ref().map(g),
    }
}

fn host_ref(p: &QuantPages) -> PagesRef<'_> {
    PagesRef {
        format: p.format,
        codes: match p.codes.host().unwrap() {
            paradec::HostData::U8(v) => v,
            _ => unreachable!(),
        },
        scales: match p.scales.as_ref().map(|s| s.host().unwrap()) {
            Some(paradec::HostData::F16(v)) => v,
            _ => &[],
        },
        head_scale: p.head_scales.as_ref().map_or(&[][..], |s| s.as_f32().unwrap()),
        native: &[],
    }
}

fn host_mut(p: &mut QuantPages) -> PagesMut<'_> {
    let head_scale = p.head_scales.as_ref().map_or(&[][..], |s| s.as_f32().unwrap());
    PagesMut {
        format: p.format,
        codes: match p.codes.host_mut().unwrap() {
            paradec::HostData::U8(v) => v,
            _ => unreachable!(),
        },
        scales: match p.scales.as_mut().map(|s| s.host_mut().unwrap()) {
            Some(paradec::HostData::F16(v)) => v,
            _ => &mut [],
        },
        head_scale,
        native: &mut [],
    }
}

/// Makes slots [from, capacity) of sequence b decode to NaN.
fn poison_slots(p: &mut QuantPages, b: usize, from: usize, capacity: usize, kv_dim: usize) {
    let rb = p.format.row_bytes(kv_dim);
    let ns = kv_dim / RUN;
    let fmt = p.format;
    let h = host_mut(p);
    for j in from..capacity {
        let slot = b * capacity + j;
        match fmt {
            KvFormat::Q8 | KvFormat::Q4 => h.scales[slot * ns..(slot + 1) * ns].fill(f16::NAN),
            _ => h.codes[slot * rb..(slot + 1) * rb].fill(0x7f),
        }
    }
}

/// CPU pages of one layer in `mode` holding random K/V in every slot, the slots past each
/// sequence's length poisoned.
#[allow(clippy::too_many_arguments)]
fn random_pages(
    rng: &mut Rng,
    mode: &KvCacheMode,
    batch: usize,
    capacity: usize,
    kv_heads: usize,
    d: usize,
    dtype: DType,
    lens: &[usize],
) -> KvCache {
    let mut c = KvCache::with_mode(
        2,
        batch,
        capacity,
        kv_heads,
        d,
        DType::F32,
        Device::Cpu,
        sized(mode, 2, kv_heads),
    )
    .unwrap();
    let kv_dim = kv_heads * d;
    let slots = CacheSlots {
        batch,
        q_len: capacity,
        capacity,
        past_len: &vec![0; batch],
    };
    let layer = c.quant_layer_mut(1).unwrap();
    for p in [&mut layer.k, &mut layer.v] {
        // Values as the GPU would write them (rounded to its dtype), with a spread per head.
        let raw: Vec<f32> = (0..batch * capacity * kv_dim)
            .map(|i| {
                let h = (i % kv_dim) / d;
                let v = rng.uniform(-1.0, 1.0) * (0.3 + h as f32 * 0.4);
                if rng.below(50) == 0 {
                    v * 5.0
                } else {
                    v
                }
            })
            .collect();
        let x = host_vals(&raw, dtype);
        paradec::cpu::kv_quant::write_rows(&x, kv_heads, d, &slots, &mut host_mut(p));
        for (b, &l) in lens.iter().enumerate() {
            poison_slots(p, b, l, capacity, kv_dim);
        }
    }
    c
}

#[test]
fn quantizing_cache_write_matches_cpu() {
    let Some(s) = gpu("quantizing_cache_write_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(1101);
    let mut n = 0;
    let mut worst_codes = 0usize;
    for mode in modes() {
        for (heads, kv_heads, d) in [(4, 4, 32), (8, 2, 64), (8, 8, 128), (4, 1, 96), (2, 2, 80), (4, 2, 16), (4, 4, 256)] {
            for dtype in DTYPES {
                if !fits(&mode, d, dtype) {
                    continue;
                }
                for (batch, q_len) in [(1, 1), (3, 5), (2, 16)] {
                    let capacity = 40;
                    let past: Vec<usize> = (0..batch).map(|b| (b * 7 + 3) % 20).collect();
                    let tokens = batch * q_len;
                    let kv_dim = kv_heads * d;
                    let (mut q, _) = upload(&rng.vec(tokens * heads * d, -2.0, 2.0), &[tokens, heads * d], dtype);
                    let (mut k, _) = upload(&rng.vec(tokens * kv_dim, -2.0, 2.0), &[tokens, kv_dim], dtype);
                    let (v, vv) = upload(&rng.vec(tokens * kv_dim, -2.0, 2.0), &[tokens, kv_dim], dtype);
                    let positions: Vec<i64> = (0..batch)
                        .flat_map(|b| (0..q_len).map(move |t| (b * 3 + t + 11) as i64))
                        .collect();
                    let inv: Vec<f32> = (0..d / 4).map(|j| 1e4f32.powf(-(j as f32) / (d as f32 / 4.0))).collect();
                    let rot = RotaryArgs {
                        style: if d % 64 == 0 { RopeStyle::Half } else { RopeStyle::Interleaved },
                        rot_dim: d / 2,
                        inv_freq: &inv,
                        attn_factor: 1.0,
                    };
                    let at = CacheSlots {
                        batch,
                        q_len,
                        capacity,
                        past_len: &past,
                    };
                    let mut gc = KvCache::with_mode(2, batch, capacity, kv_heads, d, dtype, Device::Cuda(0), sized(&mode, 2, kv_heads)).unwrap();
                    let mut meta = Tensor::zeros(&[kernels::rope_meta_bytes(tokens, batch, d / 2)], DType::U8, Device::Cuda(0)).unwrap();
                    kernels::rotary_and_cache_write_quant(
                        &mut q, &mut k, &v, heads, kv_heads, d, &positions, Some(&rot), &at, None, &mut meta,
                        gc.quant_layer_mut(1).unwrap(), &s,
                    )
                    .unwrap();
                    stream_sync(&s);
                    // The CPU twin from the GPU's rotated k (so both quantize the same values).
                    let kr = download(&k);
                    let mut cc = KvCache::with_mode(2, batch, capacity, kv_heads, d, DType::F32, Device::Cpu, sized(&mode, 2, kv_heads)).unwrap();
                    {
                        let l = cc.quant_layer_mut(1).unwrap();
                        paradec::cpu::kv_quant::write_rows(&kr, kv_heads, d, &at, &mut host_mut(&mut l.k));
                        paradec::cpu::kv_quant::write_rows(&vv, kv_heads, d, &at, &mut host_mut(&mut l.v));
                    }
                    let gl = gc.quant_layer(1).unwrap();
                    let cl = cc.quant_layer(1).unwrap();
                    for (name, gp, cp) in [("k", &gl.k, &cl.k), ("v", &gl.v, &cl.v)] {
                        let gh = QuantPages {
                            format: gp.format,
                            codes: gp.codes.to_host().unwrap(),
                            scales: gp.scales.as_ref().map(|t| t.to_host().unwrap()),
                            head_scales: gp.head_scales.as_ref().map(|t| t.to_host().unwrap()),
                        };
                        let (g, c) = (host_ref(&gh), host_ref(cp));
                        // Codes: the same arithmetic step for step; count any that differ.
                        let diff = g.codes.iter().zip(c.codes).filter(|(a, b)| a != b).count();
                        worst_codes = worst_codes.max(diff);
                        assert!(
                            diff * 1000 <= g.codes.len(),
                            "{} {name} {dtype} d{d}: {diff} of {} codes differ",
                            mode.name(),
                            g.codes.len()
                        );
                        // What they decode to, over the written slots.
                        let lens: Vec<usize> = past.iter().map(|p| p + q_len).collect();
                        let mut a = vec![0.0f32; batch * capacity * kv_dim];
                        let mut bv = vec![0.0f32; batch * capacity * kv_dim];
                        paradec::cpu::kv_quant::dequantize_slots(&g, kv_heads, d, capacity, &lens, capacity, &mut a);
                        paradec::cpu::kv_quant::dequantize_slots(&c, kv_heads, d, capacity, &lens, capacity, &mut bv);
                        assert_close(&format!("{} {name} pages d{d}", mode.name()), DType::F16, &a, &bv);
                        // Nothing outside the call's slots was written.
                        for (b, &p0) in past.iter().enumerate() {
                            for j in (0..p0).chain(p0 + q_len..capacity) {
                                let rb = gp.format.row_bytes(kv_dim);
                                let slot = b * capacity + j;
                                assert!(g.codes[slot * rb..(slot + 1) * rb].iter().all(|&x| x == 0), "slot {j} of sequence {b} written");
                            }
                        }
                    }
                    n += 1;
                }
            }
        }
    }
    eprintln!("quantizing_cache_write_matches_cpu: {n} cases, at most {worst_codes} codes differ in a case");
}

struct QCase {
    batch: usize,
    q_len: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    past: Vec<usize>,
    window: usize,
    pad: Option<Vec<usize>>,
}

fn decode_cases() -> Vec<QCase> {
    let mut v = Vec::new();
    let lens: &[usize] = if small() { &[0, 1, 37, 300] } else { &[0, 1, 37, 300, 1025, 4097] };
    for &(heads, kv_heads, d) in &[(4, 4, 32), (8, 2, 64), (32, 8, 128), (8, 1, 128), (4, 4, 128), (2, 2, 64), (16, 1, 64), (4, 4, 256), (4, 2, 80), (6, 3, 16), (4, 2, 96)] {
        for &l in lens {
            // The longest past with one query token only (the CPU reference is the slow part).
            let qs: &[usize] = if l > 2000 { &[1] } else { &[1, 3, 16] };
            for &q_len in qs {
                v.push(QCase { batch: 2, q_len, heads, kv_heads, d, past: vec![l, l / 2 + 1], window: 0, pad: None });
            }
        }
        v.push(QCase { batch: 3, q_len: 2, heads, kv_heads, d, past: vec![9, 130, 64], window: 0, pad: Some(vec![3, 0, 70]) });
        v.push(QCase { batch: 2, q_len: 1, heads, kv_heads, d, past: vec![700, 33], window: 64, pad: None });
    }
    v
}

/// Runs attention over `pages` (CPU) on the GPU (decode kernel, or via ops for a prefill) and on
/// the CPU; returns the relative error.
fn run_decode(s: &CudaStream, rng: &mut Rng, mode: &KvCacheMode, c: &QCase, dtype: DType, via_ops: bool) -> f64 {
    let d = c.d;
    let max_past = *c.past.iter().max().unwrap();
    let capacity = max_past + c.q_len + 2;
    let lens: Vec<usize> = c.past.iter().map(|p| p + c.q_len).collect();
    let cc = random_pages(rng, mode, c.batch, capacity, c.kv_heads, d, dtype, &lens);
    let cl = cc.quant_layer(1).unwrap();
    let gl = QuantLayer { k: to_gpu(&cl.k), v: to_gpu(&cl.v) };
    let q_n = c.batch * c.q_len * c.heads * d;
    let (q, qv) = upload(&rng.vec(q_n, -2.0, 2.0), &[c.batch * c.q_len, c.heads * d], dtype);
    let stride = max_past + c.q_len + 3;
    let mask: Option<Vec<f32>> = c.pad.as_ref().map(|pad| {
        (0..c.batch * stride)
            .map(|i| if i % stride < pad[i / stride] { f32::NEG_INFINITY } else { rng.uniform(-0.5, 0.5) })
            .collect()
    });
    let shape = AttnShape { batch: c.batch, q_len: c.q_len, heads: c.heads, kv_heads: c.kv_heads, head_dim: d, capacity };
    let masking = AttnMasking {
        past_len: &c.past,
        window: c.window,
        mask: mask.as_deref(),
        mask_stride: if mask.is_some() { stride } else { 0 },
    };
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = poisoned(&[c.batch * c.q_len, c.heads * d], dtype);
    if via_ops {
        let mut ws = Workspace::new(Device::Cuda(0), dtype).unwrap();
        let st = paradec::Stream::Cuda(CudaStream::new(0).unwrap());
        paradec::ops::attention_quant(&st, &mut ws, &q, &gl, &shape, &masking, scale, &mut out)
            .unwrap();
        if let paradec::Stream::Cuda(cs) = &st {
            cs.synchronize().unwrap();
        }
    } else {
        let mut meta = Tensor::zeros(&[kernels::attention_meta_bytes(&shape, &masking)], DType::U8, Device::Cuda(0)).unwrap();
        let mut partials = Tensor::zeros(&[kernels::attention_quant_scratch_len(&shape, max_past, s).unwrap()], DType::F32, Device::Cuda(0)).unwrap();
        kernels::attention_quant(&q, &gl, None, &shape, &masking, scale, &mut meta, &mut partials, &mut out, s).unwrap();
    }
    stream_sync(s);
    let got = download(&out);
    let mut want = vec![0.0f32; q_n];
    paradec::cpu::kv_quant::attention_quant(&qv, &host_ref(&cl.k), &host_ref(&cl.v), &shape, &masking, scale, &mut want);
    let what = format!(
        "{} {dtype} b{} q{} h{}/{} d{d} past {:?} window {} pad {:?}",
        mode.name(), c.batch, c.q_len, c.heads, c.kv_heads, c.past, c.window, c.pad
    );
    assert!(got.iter().all(|x| x.is_finite()), "{what}: a poisoned slot was read");
    assert_close(&what, dtype, &got, &want);
    rel_err(&got, &want)
}

#[test]
fn quantized_decode_attention_matches_cpu() {
    let Some(s) = gpu("quantized_decode_attention_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(1102);
    let mut report = Vec::new();
    for mode in modes() {
        let mut n = 0;
        let mut worst = [0.0f64; 2];
        for c in decode_cases() {
            for (i, dtype) in DTYPES.into_iter().enumerate() {
                if !fits(&mode, c.d, dtype) {
                    continue;
                }
                worst[i] = worst[i].max(run_decode(&s, &mut rng, &mode, &c, dtype, false));
                n += 1;
            }
        }
        report.push(format!("{}: {n} cases, worst rel err f16 {:.2e}, bf16 {:.2e}", mode.name(), worst[0], worst[1]));
    }
    eprintln!("quantized_decode_attention_matches_cpu:\n{}", report.join("\n"));
}

#[test]
fn quantized_prefill_attention_dequantizes_and_matches_cpu() {
    let Some(s) = gpu("quantized_prefill_attention_dequantizes_and_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(1103);
    let mut n = 0;
    for mode in modes() {
        for (heads, kv_heads, d) in [(8, 2, 64), (4, 4, 128), (4, 2, 80)] {
            for (q_len, past) in [(17, vec![0, 5]), (40, vec![100, 3])] {
                let c = QCase { batch: 2, q_len, heads, kv_heads, d, past, window: 0, pad: None };
                for dtype in DTYPES {
                    if !fits(&mode, d, dtype) {
                        continue;
                    }
                    run_decode(&s, &mut rng, &mode, &c, dtype, true);
                    // And a decode through ops as well.
                    let c1 = QCase { q_len: 2, ..QCase { batch: 2, q_len, heads, kv_heads, d, past: vec![50, 9], window: 0, pad: None } };
                    run_decode(&s, &mut rng, &mode, &c1, dtype, true);
                    n += 1;
                }
            }
        }
    }
    eprintln!("quantized_prefill_attention_dequantizes_and_matches_cpu: {n} cases");
}

#[test]
fn quantized_pages_bad_input_is_named() {
    let Some(s) = gpu("quantized_pages_bad_input_is_named") else {
        return;
    };
    let mut gc = KvCache::with_mode(1, 1, 8, 2, 32, DType::F16, Device::Cuda(0), KvCacheMode::Q4).unwrap();
    let (mut q, _) = upload(&[0.5; 64], &[1, 64], DType::F16);
    let (mut k, _) = upload(&[0.5; 64], &[1, 64], DType::F16);
    let (v, _) = upload(&[0.5; 64], &[1, 64], DType::F16);
    let mut meta = Tensor::zeros(&[kernels::rope_meta_bytes(1, 1, 0)], DType::U8, Device::Cuda(0)).unwrap();
    let at = CacheSlots { batch: 1, q_len: 1, capacity: 8, past_len: &[8] };
    let e = kernels::rotary_and_cache_write_quant(&mut q, &mut k, &v, 2, 2, 32, &[0], None, &at, None, &mut meta, gc.quant_layer_mut(0).unwrap(), &s).unwrap_err();
    assert!(matches!(e, Error::CapacityExceeded(_)), "{e}");
    let at = CacheSlots { capacity: 9, past_len: &[0], ..at };
    let e = kernels::rotary_and_cache_write_quant(&mut q, &mut k, &v, 2, 2, 32, &[0], None, &at, None, &mut meta, gc.quant_layer_mut(0).unwrap(), &s).unwrap_err();
    assert!(e.to_string().contains("cache k codes"), "{e}");
    // A bf16 call into E5M2 pages (only fp16 truncates) is refused.
    let mut e5 = KvCache::with_mode(1, 1, 8, 2, 32, DType::F16, Device::Cuda(0), KvCacheMode::Fp8E5M2).unwrap();
    let (mut qb, _) = upload(&[0.5; 64], &[1, 64], DType::BF16);
    let (mut kb, _) = upload(&[0.5; 64], &[1, 64], DType::BF16);
    let (vb, _) = upload(&[0.5; 64], &[1, 64], DType::BF16);
    let at = CacheSlots { capacity: 8, ..at };
    let e = kernels::rotary_and_cache_write_quant(&mut qb, &mut kb, &vb, 2, 2, 32, &[0], None, &at, None, &mut meta, e5.quant_layer_mut(0).unwrap(), &s).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}

/// Fixture models with head_dim 32 (GPT-NeoX) through a quantized cache on the GPU against the
/// CPU reference with the same cache mode (weights rounded to the GPU's dtype): the logits of
/// the left-padded prefill and three decode steps. The two backends may round a K/V value to
/// a neighbouring code (the GPU quantizes its fp16 k, the CPU its f32 one), so the budget is
/// looser than the decoder's.
#[test]
fn fixture_models_through_a_quantized_cache() {
    let Some(stream) = gpu_stream("fixture_models_through_a_quantized_cache") else {
        return;
    };
    let s = paradec::Stream::Cuda(stream);
    let mut report = Vec::new();
    for variant in ["gpt_neox", "gpt_neox_gelu_fast", "falcon_new_2ln_gqa"] {
        for mode in modes() {
            for dtype in DTYPES {
                let load = |dev| {
                    let mut m = paradec::Model::load(common::fixture(variant)).unwrap();
                    m.load_as(dev, dtype).unwrap();
                    m
                };
                let (cpu_m, gpu_m) = (load(Device::Cpu), load(Device::Cuda(0)));
                if !fits(&mode, cpu_m.arch.head_dim, dtype) {
                    continue;
                }
                let mode = sized(&mode, cpu_m.arch.num_layers, cpu_m.arch.kv_heads);
                let want = steps(&cpu_m, variant, &mode, &paradec::Stream::Host);
                let got = steps(&gpu_m, variant, &mode, &s);
                let mut worst = 0.0f64;
                for ((g, keep), (w, _)) in got.iter().zip(&want) {
                    worst = worst.max(common::rel_err_rows(g, w, g.len() / keep.len(), keep));
                }
                report.push(format!("{variant} {} {dtype}: logits rel err {worst:.2e}", mode.name()));
                let budget = if dtype == DType::F16 { 2e-2 } else { 6e-2 };
                assert!(worst <= budget, "{variant} {} {dtype}: {worst:.2e}", mode.name());
            }
        }
    }
    eprintln!("fixture_models_through_a_quantized_cache:\n{}", report.join("\n"));
}

fn steps(model: &paradec::Model, variant: &str, mode: &KvCacheMode, s: &paradec::Stream) -> Vec<(Vec<f32>, Vec<bool>)> {
    let r = common::reference(variant);
    let a = &model.arch;
    let (dev, dt) = (model.device(), model.dtype());
    let mut cache = KvCache::with_mode(a.num_layers, 2, 10, a.kv_heads, a.head_dim, dt, dev, mode.clone()).unwrap();
    let mut ws = Workspace::for_model(a, 32, 10, dev, dt).unwrap();
    (0..4)
        .map(|t| {
            let (ids, shape) = common::i64s(&r, &format!("step{t}.input_ids"));
            let (mask, mshape) = common::i64s(&r, &format!("step{t}.attention_mask"));
            let (q, slots) = (shape[1], mshape[1]);
            let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
            let p = paradec::AttnParams::with_past(2, q, vec![slots - q; 2]).with_attention_mask(&mask, slots).unwrap();
            let keep: Vec<bool> = (0..2)
                .flat_map(|b| (0..q).map(move |i| (b, i)))
                .map(|(b, i)| mask[b * slots + slots - q + i] == 1)
                .collect();
            let logits = model.forward(s, &ids, &p, Some(&mut cache), &mut ws).unwrap();
            (common::values(&logits), keep)
        })
        .collect()
}

/// A paged pool (vLLM-style block table, pages in a shuffled order, page sizes 16 and 7) in
/// every mode, the native one included: the GPU's cache write against the CPU twin's from the
/// same rotated k (codes and values equal), then decode (q_len 1, 3) and prefill (q_len 20,
/// through the gather) attention against the CPU twin over the same pool.
#[test]
fn paged_cache_matches_cpu() {
    let Some(_g) = gpu("paged_cache_matches_cpu") else {
        return;
    };
    let st = paradec::Stream::Cuda(CudaStream::new(0).unwrap());
    let cs = match &st {
        paradec::Stream::Cuda(c) => c,
        _ => unreachable!(),
    };
    let host = paradec::Stream::Host;
    let mut rng = Rng::new(1104);
    let mut all = vec![KvCacheMode::Native];
    all.extend(modes());
    let mut report = Vec::new();
    for mode in all {
        let mut n = 0;
        let mut worst = 0.0f64;
        for (heads, kv_heads, d) in [(8, 2, 64), (4, 4, 128), (4, 2, 80)] {
            for dtype in DTYPES {
                if !fits(&mode, d, dtype) {
                    continue;
                }
                let mode = sized(&mode, 1, kv_heads);
                let mut ws = Workspace::new(Device::Cuda(0), dtype).unwrap();
                let mut cws = Workspace::cpu();
                for (page_size, q_len, past) in [
                    (16usize, 1usize, vec![40usize, 0, 77]),
                    (7, 3, vec![13, 30, 1]),
                    (16, 20, vec![5, 33, 0]),
                ] {
                    let batch = past.len();
                    let kv_dim = kv_heads * d;
                    let need: Vec<usize> = past.iter().map(|p| (p + q_len).div_ceil(page_size)).collect();
                    let max_pages = need.iter().max().unwrap() + 1;
                    let page_count: Vec<usize> = need.iter().enumerate().map(|(b, &n)| n + (b == 0) as usize).collect();
                    let num_pages = page_count.iter().sum::<usize>() + 2;
                    let mut order: Vec<i32> = (0..num_pages as i32).collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    let mut table = vec![-1i32; batch * max_pages];
                    let mut next = 0;
                    for b in 0..batch {
                        for i in 0..page_count[b] {
                            table[b * max_pages + i] = order[next];
                            next += 1;
                        }
                    }
                    let bt = BlockTable { page_size, max_pages, table: &table, page_count: &page_count };
                    // The past, written on the CPU one sequence at a time.
                    let mut cpool = QuantLayer::new(&mode, 0, 1, num_pages, page_size, kv_heads, d, DType::F32, Device::Cpu).unwrap();
                    for b in 0..batch {
                        if past[b] == 0 {
                            continue;
                        }
                        let t1 = BlockTable { max_pages, table: &table[b * max_pages..(b + 1) * max_pages], page_count: &page_count[b..b + 1], page_size };
                        let r = |rng: &mut Rng| host_vals(&rng.vec(past[b] * kv_dim, -1.5, 1.5), dtype);
                        let (kk, vv) = (r(&mut rng), r(&mut rng));
                        let mut qd = Tensor::from_f32(vec![0.0; past[b] * kv_heads * d], &[past[b], kv_dim]).unwrap();
                        let mut kt = Tensor::from_f32(kk, &[past[b], kv_dim]).unwrap();
                        let vt = Tensor::from_f32(vv, &[past[b], kv_dim]).unwrap();
                        paradec::ops::paged_rotary_and_cache_write(
                            &host, &mut cws, &mut qd, &mut kt, &vt, kv_heads, kv_heads, d, &vec![0; past[b]], None, &[0], past[b], &t1, &mut cpool,
                        )
                        .unwrap();
                    }
                    let up = |p: &QuantPages| {
                        if p.format == KvFormat::Native {
                            QuantPages { format: p.format, codes: p.codes.to_dtype(dtype).unwrap().to_device(Device::Cuda(0)).unwrap(), scales: None, head_scales: None }
                        } else {
                            to_gpu(p)
                        }
                    };
                    let mut gpool = QuantLayer { k: up(&cpool.k), v: up(&cpool.v) };
                    // This call's tokens: rotated and written on the GPU; the CPU writes the
                    // GPU's rotated k.
                    let tokens = batch * q_len;
                    let (mut qg, _) = upload(&rng.vec(tokens * heads * d, -2.0, 2.0), &[tokens, heads * d], dtype);
                    let (mut kg, _) = upload(&rng.vec(tokens * kv_dim, -1.5, 1.5), &[tokens, kv_dim], dtype);
                    let (vg, vv) = upload(&rng.vec(tokens * kv_dim, -1.5, 1.5), &[tokens, kv_dim], dtype);
                    let positions: Vec<i64> = (0..batch).flat_map(|b| (0..q_len).map(move |t| (b + t + 3) as i64)).collect();
                    let inv: Vec<f32> = (0..d / 4).map(|j| 1e4f32.powf(-(j as f32) / (d as f32 / 4.0))).collect();
                    let rot = RotaryArgs { style: RopeStyle::Half, rot_dim: d / 2, inv_freq: &inv, attn_factor: 1.0 };
                    paradec::ops::paged_rotary_and_cache_write(
                        &st, &mut ws, &mut qg, &mut kg, &vg, heads, kv_heads, d, &positions, Some(&rot), &past, q_len, &bt, &mut gpool,
                    )
                    .unwrap();
                    cs.synchronize().unwrap();
                    let (qr, kr) = (download(&qg), download(&kg));
                    let mut qc = Tensor::from_f32(qr.clone(), &[tokens, heads * d]).unwrap();
                    let mut kc = Tensor::from_f32(kr, &[tokens, kv_dim]).unwrap();
                    let vc = Tensor::from_f32(vv, &[tokens, kv_dim]).unwrap();
                    paradec::ops::paged_rotary_and_cache_write(
                        &host, &mut cws, &mut qc, &mut kc, &vc, heads, kv_heads, d, &positions, None, &past, q_len, &bt, &mut cpool,
                    )
                    .unwrap();
                    let tag = format!("{} {dtype} h{heads}/{kv_heads} d{d} page {page_size} q{q_len} past {past:?}", mode.name());
                    for (name, gp, cp) in [("k", &gpool.k, &cpool.k), ("v", &gpool.v, &cpool.v)] {
                        if gp.format == KvFormat::Native {
                            assert_eq!(download(&gp.codes), cp.codes.as_f32().unwrap(), "{tag}: {name} pool");
                        } else {
                            let h = QuantPages { format: gp.format, codes: gp.codes.to_host().unwrap(), scales: gp.scales.as_ref().map(|t| t.to_host().unwrap()), head_scales: gp.head_scales.as_ref().map(|t| t.to_host().unwrap()) };
                            assert_eq!(host_ref(&h).codes, host_ref(cp).codes, "{tag}: {name} codes");
                            assert_eq!(host_ref(&h).scales, host_ref(cp).scales, "{tag}: {name} scales");
                        }
                    }
                    // Attention over the pool.
                    let shape = AttnShape { batch, q_len, heads, kv_heads, head_dim: d, capacity: bt.capacity() };
                    let masking = AttnMasking { past_len: &past, window: 0, mask: None, mask_stride: 0 };
                    let scale = 1.0 / (d as f32).sqrt();
                    let mut out = poisoned(&[tokens, heads * d], dtype);
                    paradec::ops::paged_attention(&st, &mut ws, &qg, &gpool, &bt, &shape, &masking, scale, &mut out).unwrap();
                    cs.synchronize().unwrap();
                    let got = download(&out);
                    let mut oc = Tensor::from_f32(vec![0.0; tokens * heads * d], &[tokens, heads * d]).unwrap();
                    paradec::ops::paged_attention(&host, &mut cws, &Tensor::from_f32(qr, &[tokens, heads * d]).unwrap(), &cpool, &bt, &shape, &masking, scale, &mut oc).unwrap();
                    let want = oc.as_f32().unwrap();
                    assert_close(&tag, dtype, &got, want);
                    worst = worst.max(rel_err(&got, want));
                    n += 1;
                }
            }
        }
        report.push(format!("{}: {n} cases, worst rel err {worst:.2e}", mode.name()));
    }
    eprintln!("paged_cache_matches_cpu:\n{}", report.join("\n"));
}

fn host_vals(v: &[f32], dtype: DType) -> Vec<f32> {
    Tensor::from_f32_as(v, &[v.len()], dtype)
        .unwrap()
        .f32_values()
        .unwrap()
        .into_owned()
}
