//! The attention branch against its CPU twins: QKV split (every fused layout), per-head norms,
//! and attention over the KV cache — decode (split-KV) and tensor-core paths, head dims tuned
//! and generic, MHA/GQA/MQA, lengths 1 … 8192 (odd ones), per-sequence past lengths, left
//! padding masks, sliding windows. Cache slots a call must not read hold NaN.

use super::*;
use paradec::ops;

fn host(vals: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_f32_as(vals, shape, dtype).unwrap()
}

#[test]
fn split_qkv_matches_cpu() {
    let Some(s) = gpu("split_qkv_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(111);
    let layouts = [
        (QkvLayout::FusedPerHead, 4, 4),
        (QkvLayout::FusedQueriesFirst, 8, 1),
        (QkvLayout::FusedQueriesFirst, 8, 2),
        (QkvLayout::FusedGrouped, 8, 2),
        (QkvLayout::FusedGrouped, 6, 3),
    ];
    let mut n = 0;
    for (layout, heads, kv) in layouts {
        for d in [64usize, 80, 6] {
            for tokens in [1usize, 7] {
                for dtype in DTYPES {
                    let width = (heads + 2 * kv) * d;
                    let (f, fv) =
                        upload(&rng.vec(tokens * width, -2.0, 2.0), &[tokens, width], dtype);
                    let mut q = poisoned(&[tokens, heads * d], dtype);
                    let mut k = poisoned(&[tokens, kv * d], dtype);
                    let mut v = poisoned(&[tokens, kv * d], dtype);
                    kernels::split_qkv(
                        layout, &f, tokens, heads, kv, d, &mut q, &mut k, &mut v, &s,
                    )
                    .unwrap();
                    let fh = host(&fv, &[tokens, width], DType::F32);
                    let mut qh = host(
                        &vec![0.0; tokens * heads * d],
                        &[tokens, heads * d],
                        DType::F32,
                    );
                    let mut kh = host(&vec![0.0; tokens * kv * d], &[tokens, kv * d], DType::F32);
                    let mut vh = host(&vec![0.0; tokens * kv * d], &[tokens, kv * d], DType::F32);
                    ops::split_qkv(
                        &paradec::Stream::Host,
                        layout,
                        &fh,
                        heads,
                        kv,
                        d,
                        &mut qh,
                        &mut kh,
                        &mut vh,
                    )
                    .unwrap();
                    // A copy: exact.
                    assert_eq!(download(&q), qh.as_f32().unwrap(), "{layout:?} q d{d}");
                    assert_eq!(download(&k), kh.as_f32().unwrap(), "{layout:?} k d{d}");
                    assert_eq!(download(&v), vh.as_f32().unwrap(), "{layout:?} v d{d}");
                    n += 1;
                }
            }
        }
    }
    // Separate projections have nothing to split; per-head needs as many kv heads as heads.
    let (f, _) = upload(&rng.vec(6 * 8, -1.0, 1.0), &[1, 48], DType::F16);
    let mut q = poisoned(&[1, 32], DType::F16);
    let mut k = poisoned(&[1, 8], DType::F16);
    let mut v = poisoned(&[1, 8], DType::F16);
    let e = kernels::split_qkv(
        QkvLayout::Separate,
        &f,
        1,
        4,
        1,
        8,
        &mut q,
        &mut k,
        &mut v,
        &s,
    )
    .unwrap_err();
    assert!(e.to_string().contains("separate"), "{e}");
    let code = dtype_code(DType::F16);
    // SAFETY: rejected before launch.
    let st = unsafe {
        ffi::paradec_split_qkv(
            code,
            ffi::paradec_qkv_layout::PARADEC_QKV_PER_HEAD as i32,
            dptr(&f),
            1,
            4,
            1,
            8,
            dptr_mut(&mut q),
            dptr_mut(&mut k),
            dptr_mut(&mut v),
            s.raw(),
        )
    };
    assert_eq!(st, ffi::paradec_kstatus::PARADEC_K_BAD_SHAPE);
    stream_sync(&s);
    eprintln!("split_qkv_matches_cpu: {n} cases");
}

#[test]
fn head_norm_matches_cpu() {
    let Some(s) = gpu("head_norm_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(112);
    let mut n = 0;
    for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
        for (heads, d) in [(4usize, 64usize), (2, 80), (3, 128), (2, 256), (5, 20)] {
            for (per_head, bias) in [(true, false), (false, true), (false, false), (true, true)] {
                for dtype in DTYPES {
                    let tokens = 5;
                    let wn = if per_head { heads * d } else { d };
                    let (mut x, xv) = upload(
                        &rng.vec(tokens * heads * d, -2.0, 3.0),
                        &[tokens, heads * d],
                        dtype,
                    );
                    let (w, wv) = upload(&rng.vec(wn, 0.5, 1.5), &[wn], dtype);
                    let (bt, bv) = upload(&rng.vec(wn, -0.5, 0.5), &[wn], dtype);
                    let aff = DevAffine {
                        weight: Some(&w),
                        bias: bias.then_some(&bt),
                    };
                    kernels::head_norm(kind, &mut x, heads, d, &aff, 1e-5, &s).unwrap();
                    let mut xh = host(&xv, &[tokens, heads * d], DType::F32);
                    let (wh, bh) = (host(&wv, &[wn], DType::F32), host(&bv, &[wn], DType::F32));
                    ops::head_norm(
                        &paradec::Stream::Host,
                        kind,
                        &mut xh,
                        heads,
                        d,
                        &DevAffine {
                            weight: Some(&wh),
                            bias: bias.then_some(&bh),
                        },
                        1e-5,
                    )
                    .unwrap();
                    assert_close(
                        &format!("head_norm {kind:?} h{heads} d{d} per_head {per_head}"),
                        dtype,
                        &download(&x),
                        xh.as_f32().unwrap(),
                    );
                    n += 1;
                }
            }
        }
    }
    stream_sync(&s);
    eprintln!("head_norm_matches_cpu: {n} cases");
}

#[derive(Debug, Clone)]
struct AttnCase {
    batch: usize,
    q_len: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Past length of each sequence.
    past: Vec<usize>,
    window: usize,
    /// Left padding (masked slots) of each sequence, when a mask is given.
    pad: Option<Vec<usize>>,
    dtype: DType,
}

fn run_case(s: &CudaStream, rng: &mut Rng, c: &AttnCase) {
    let d = c.head_dim;
    let max_past = *c.past.iter().max().unwrap();
    let capacity = max_past + c.q_len + rng.below(3) as usize;
    let kv_dim = c.kv_heads * d;
    let q_n = c.batch * c.q_len * c.heads * d;
    let (q, qv) = upload(
        &rng.vec(q_n, -2.0, 2.0),
        &[c.batch, c.q_len, c.heads * d],
        c.dtype,
    );
    // Slots past each sequence's length hold NaN: the kernels must never read them.
    let mut kh = rng.vec(c.batch * capacity * kv_dim, -2.0, 2.0);
    let mut vh = rng.vec(c.batch * capacity * kv_dim, -2.0, 2.0);
    for b in 0..c.batch {
        for j in c.past[b] + c.q_len..capacity {
            let r = (b * capacity + j) * kv_dim..(b * capacity + j + 1) * kv_dim;
            kh[r.clone()].fill(f32::NAN);
            vh[r].fill(f32::NAN);
        }
    }
    let (ck, kv) = upload(&kh, &[c.batch, capacity, kv_dim], c.dtype);
    let (cv, vv) = upload(&vh, &[c.batch, capacity, kv_dim], c.dtype);
    let stride = max_past + c.q_len + 3;
    let mask: Option<Vec<f32>> = c.pad.as_ref().map(|pad| {
        (0..c.batch * stride)
            .map(|i| {
                if i % stride < pad[i / stride] {
                    f32::NEG_INFINITY
                } else {
                    rng.uniform(-0.5, 0.5)
                }
            })
            .collect()
    });
    let shape = AttnShape {
        batch: c.batch,
        q_len: c.q_len,
        heads: c.heads,
        kv_heads: c.kv_heads,
        head_dim: d,
        capacity,
    };
    let masking = AttnMasking {
        past_len: &c.past,
        window: c.window,
        mask: mask.as_deref(),
        mask_stride: if mask.is_some() { stride } else { 0 },
    };
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = poisoned(&[c.batch, c.q_len, c.heads * d], c.dtype);
    let mut meta = Tensor::zeros(
        &[kernels::attention_meta_bytes(&shape, &masking)],
        DType::U8,
        Device::Cuda(0),
    )
    .unwrap();
    let mut partials = Tensor::zeros(
        &[kernels::attention_scratch_len(&shape, max_past, s).unwrap()],
        DType::F32,
        Device::Cuda(0),
    )
    .unwrap();
    kernels::attention(
        &q,
        &ck,
        &cv,
        &shape,
        &masking,
        scale,
        &mut meta,
        &mut partials,
        &mut out,
        s,
    )
    .unwrap();
    stream_sync(s);
    let mut want = vec![0.0f32; q_n];
    cpu::attention::attention(&qv, &kv, &vv, &shape, &masking, scale, &mut want);
    let got = download(&out);
    assert_close(&format!("attention {c:?}"), c.dtype, &got, &want);
    // Pad queries (every key masked) output exact zeros.
    if let Some(pad) = &c.pad {
        for (b, &pb) in pad.iter().enumerate() {
            for t in 0..c.q_len {
                if c.past[b] + t < pb {
                    let r =
                        ((b * c.q_len + t) * c.heads) * d..((b * c.q_len + t + 1) * c.heads) * d;
                    assert!(
                        got[r].iter().all(|&x| x == 0.0),
                        "pad query not zero: {c:?}"
                    );
                }
            }
        }
    }
}

fn attention_cases(rng: &mut Rng) -> Vec<AttnCase> {
    let mut v = Vec::new();
    let mut add = |batch: usize,
                   q_len: usize,
                   heads: usize,
                   kv_heads: usize,
                   head_dim: usize,
                   past: Vec<usize>,
                   window: usize,
                   pad: Option<Vec<usize>>| {
        for dtype in DTYPES {
            v.push(AttnCase {
                batch,
                q_len,
                heads,
                kv_heads,
                head_dim,
                past: past.clone(),
                window,
                pad: pad.clone(),
                dtype,
            });
        }
    };
    if small() {
        // Decode: one split and several; 1 or 2 rows per KV head (CUDA cores) and more (tensor
        // cores, chunks of 16 rows); generic dims.
        add(2, 1, 4, 4, 64, vec![5, 300], 0, None);
        add(1, 1, 8, 2, 128, vec![700], 0, Some(vec![3]));
        add(1, 3, 8, 1, 40, vec![130], 50, None);
        add(2, 2, 4, 2, 256, vec![0, 9], 0, None);
        add(1, 16, 2, 2, 16, vec![40], 0, None);
        add(1, 2, 4, 4, 32, vec![77], 0, None);
        add(1, 1, 4, 4, 80, vec![200], 30, Some(vec![3]));
        // Tensor cores: prefill, chunked prefill over a past, padding, window, padded dims.
        add(2, 70, 4, 2, 64, vec![0, 0], 0, Some(vec![0, 5]));
        add(1, 33, 2, 1, 80, vec![100], 20, None);
        add(1, 20, 2, 2, 24, vec![3], 0, None);
        add(1, 17, 1, 1, 256, vec![0], 0, None);
        // Several key tiles of 128 (the warpgroup kernel's pipeline), padding, a window.
        add(1, 300, 2, 1, 128, vec![0], 0, Some(vec![4]));
        add(1, 260, 2, 2, 64, vec![140], 100, None);
        add(1, 200, 2, 1, 256, vec![30], 0, Some(vec![3]));
        // MHA decode at head dim 128 (the fragment kernel, one and two rows per KV head).
        add(2, 1, 4, 4, 128, vec![700, 5], 0, Some(vec![0, 2]));
        add(1, 2, 4, 4, 128, vec![300], 0, None);
        // More (sequence, KV head) units than two per SM: the CUDA-core kernel's several-waves
        // split rule.
        add(2, 1, 160, 160, 256, vec![600, 3], 0, None);
        // More than 8 query rows per KV head (MQA): the fragment kernel's 8-row blocks at so
        // few (sequence, KV head) pairs; its 16-row blocks (the last one part empty) under
        // PARADEC_FRAG_ROWS=16.
        add(2, 1, 20, 1, 64, vec![300, 5], 0, Some(vec![0, 2]));
        add(1, 1, 12, 1, 128, vec![200], 0, None);
        return v;
    }
    // Decode, q_len 1 … 16: head dims tuned and generic, MHA/GQA/MQA, lengths 1 … 8191.
    for &(heads, kv) in &[(4usize, 4usize), (8, 2), (6, 1), (32, 8)] {
        for &d in &[16usize, 32, 64, 80, 96, 128, 256, 40] {
            let q_len = [1usize, 1, 2, 5, 16][rng.below(5) as usize];
            let batch = 1 + rng.below(3) as usize;
            let past: Vec<usize> = (0..batch)
                .map(|_| [0usize, 1, 37, 999, 4097][rng.below(5) as usize])
                .collect();
            add(batch, q_len, heads, kv, d, past, 0, None);
        }
    }
    add(1, 1, 32, 8, 128, vec![8191], 0, None);
    add(
        3,
        1,
        4,
        1,
        128,
        vec![8000, 1, 2047],
        0,
        Some(vec![7, 0, 100]),
    );
    add(2, 4, 8, 8, 64, vec![1500, 10], 256, None);
    add(2, 1, 8, 2, 128, vec![3000, 40], 0, Some(vec![0, 41]));
    add(1, 9, 16, 1, 64, vec![600], 100, Some(vec![2]));
    // MQA at Falcon-7B's 71 query heads, and 12 rows of 128 with a window (8-row blocks at so
    // few pairs; 16-row blocks, the last part empty, under PARADEC_FRAG_ROWS=16) …
    add(3, 1, 71, 1, 64, vec![1000, 37, 4096], 0, Some(vec![0, 5, 0]));
    add(2, 1, 12, 1, 128, vec![2000, 130], 300, None);
    // … and more than 8 rows per KV head over enough (sequence, KV head) pairs that 16-row
    // blocks still fill an H100's or H200's SMs: 16-row blocks by default.
    add(4, 1, 480, 40, 64, vec![300, 5, 77, 1000], 0, Some(vec![0, 3, 0, 9]));
    add(3, 2, 360, 60, 128, vec![500, 0, 129], 0, None);
    // … and over a capacity long enough that an 8-row block's split would hold 4,096 keys or
    // more (6 sequences of 64 rows over one KV head, 8,192 slots): 16-row blocks by default,
    // each sequence on its own split count.
    add(6, 1, 64, 1, 64, vec![8191, 5, 300, 4000, 8000, 17], 0, None);
    // MHA decode at head dim 128 (the fragment kernel, one and two rows per KV head).
    add(2, 1, 8, 8, 128, vec![4097, 37], 0, Some(vec![0, 3]));
    add(1, 2, 4, 4, 128, vec![999], 50, None);
    // More (sequence, KV head) units than two per SM (CUDA cores at head dim 256, the fragment
    // kernel at 64).
    add(3, 1, 96, 96, 256, vec![1000, 1, 299], 0, Some(vec![0, 0, 7]));
    add(4, 1, 80, 80, 64, vec![700, 2000, 5, 129], 0, None);
    // Tensor cores: prefill from empty, chunked prefill over a past, odd lengths.
    for &d in &[16usize, 32, 64, 80, 96, 128, 160, 192, 256, 40, 72] {
        let q_len = [17usize, 64, 100, 333][rng.below(4) as usize];
        let (heads, kv) = [(4usize, 4usize), (4, 2), (3, 1)][rng.below(3) as usize];
        let batch = 1 + rng.below(2) as usize;
        let past: Vec<usize> = (0..batch)
            .map(|_| [0usize, 0, 7, 500][rng.below(4) as usize])
            .collect();
        add(batch, q_len, heads, kv, d, past, 0, None);
    }
    add(2, 129, 4, 2, 128, vec![0, 0], 0, Some(vec![0, 60]));
    add(1, 300, 2, 1, 64, vec![50], 64, None);
    add(2, 257, 2, 2, 128, vec![0, 31], 100, Some(vec![10, 0]));
    add(1, 1024, 2, 2, 128, vec![0], 0, None);
    add(1, 2047, 1, 1, 64, vec![1], 0, None);
    add(1, 700, 2, 1, 256, vec![100], 0, Some(vec![5]));
    add(2, 300, 2, 2, 256, vec![0, 70], 90, None);
    // One long sequence (CPU reference time grows as length²).
    v.push(AttnCase {
        batch: 1,
        q_len: 8192,
        heads: 1,
        kv_heads: 1,
        head_dim: 128,
        past: vec![0],
        window: 0,
        pad: None,
        dtype: DType::BF16,
    });
    v
}

#[test]
fn attention_matches_cpu() {
    let Some(s) = gpu("attention_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(113);
    let cases = attention_cases(&mut rng);
    for c in &cases {
        run_case(&s, &mut rng, c);
    }
    eprintln!("attention_matches_cpu: {} cases", cases.len());
}

#[test]
fn attention_rejects_bad_arguments() {
    let Some(s) = gpu("attention_rejects_bad_arguments") else {
        return;
    };
    let (b, t, h, kvh, d, cap) = (1usize, 2usize, 4usize, 2usize, 64usize, 8usize);
    let q = upload(&vec![0.5; b * t * h * d], &[b * t, h * d], DType::F16).0;
    let ck = upload(
        &vec![0.5; b * cap * kvh * d],
        &[b, cap, kvh * d],
        DType::F16,
    )
    .0;
    let cv = ck.try_clone().unwrap();
    let mut out = poisoned(&[b * t, h * d], DType::F16);
    let mut shape = AttnShape {
        batch: b,
        q_len: t,
        heads: h,
        kv_heads: kvh,
        head_dim: d,
        capacity: cap,
    };
    let past = [7usize];
    let masking = AttnMasking {
        past_len: &past,
        window: 0,
        mask: None,
        mask_stride: 0,
    };
    let mut meta = Tensor::zeros(&[16], DType::U8, Device::Cuda(0)).unwrap();
    let mut part = Tensor::zeros(&[0], DType::F32, Device::Cuda(0)).unwrap();
    // Past 7 + 2 new > capacity 8: an error before launch.
    let e = kernels::attention(
        &q, &ck, &cv, &shape, &masking, 1.0, &mut meta, &mut part, &mut out, &s,
    )
    .unwrap_err();
    assert!(matches!(e, Error::CapacityExceeded(_)), "{e:?}");
    // A head dim the kernels do not take is Unsupported, by name.
    shape.head_dim = 6;
    let past = [0usize];
    let m0 = AttnMasking {
        past_len: &past,
        ..masking
    };
    let e = kernels::attention(
        &q, &ck, &cv, &shape, &m0, 1.0, &mut meta, &mut part, &mut out, &s,
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("head_dim")),
        "{e:?}"
    );
    shape.head_dim = d;
    // Wrong output size is named.
    let mut small_out = poisoned(&[1, h * d], DType::F16);
    let e = kernels::attention(
        &q,
        &ck,
        &cv,
        &shape,
        &m0,
        1.0,
        &mut meta,
        &mut part,
        &mut small_out,
        &s,
    )
    .unwrap_err();
    assert!(e.to_string().contains("attention output"), "{e}");
    // The C launcher's own checks.
    let code = dtype_code(DType::F16);
    let call = |max_past: usize, hd: usize, kvh: usize| {
        // SAFETY: every call here is rejected before launching.
        unsafe {
            ffi::paradec_attention(
                code,
                dptr(&q),
                dptr(&ck),
                dptr(&cv),
                dptr(&out) as *mut c_void,
                b,
                t,
                h,
                kvh,
                hd,
                cap,
                dptr(&meta) as *const i64,
                max_past,
                0,
                ptr::null(),
                0,
                1.0,
                ptr::null_mut(),
                0,
                s.raw(),
            )
        }
    };
    use ffi::paradec_kstatus as k;
    assert_eq!(call(7, d, kvh), k::PARADEC_K_BAD_SHAPE);
    assert_eq!(call(0, 12, kvh), k::PARADEC_K_BAD_SHAPE);
    assert_eq!(call(0, 512, kvh), k::PARADEC_K_DIM_TOO_LARGE);
    assert_eq!(call(0, d, 3), k::PARADEC_K_BAD_SHAPE);
    assert_eq!(call(0, d, 0), k::PARADEC_K_ZERO_DIM);
    stream_sync(&s);
}
