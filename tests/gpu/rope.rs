//! Rotary + KV-cache write against the CPU twin; argument checks.

use super::*;

struct RopeCase {
    style: Option<RopeStyle>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rot_dim: usize,
    batch: usize,
    q_len: usize,
    dtype: DType,
}

fn rope_cases() -> Vec<RopeCase> {
    // (heads, kv_heads, head_dim, rot_dim): MHA, GQA, MQA with partial rotary, Phi-like partial
    // (80/32), a tiny odd layout (scalar path), rot 24 (vector for interleaved, scalar for half),
    // head_dim 256.
    let heads_sets: &[(usize, usize, usize, usize)] = if small() {
        &[(4, 2, 64, 64), (6, 1, 64, 32), (2, 2, 6, 4), (4, 2, 96, 24)]
    } else {
        &[
            (4, 4, 64, 64),
            (8, 2, 128, 128),
            (6, 1, 64, 32),
            (4, 2, 80, 32),
            (2, 2, 6, 4),
            (4, 2, 96, 24),
            (3, 3, 256, 64),
        ]
    };
    let bq: &[(usize, usize)] = if small() {
        &[(2, 3)]
    } else {
        &[(1, 1), (3, 1), (2, 7), (1, 33)]
    };
    let mut v = Vec::new();
    for style in [Some(RopeStyle::Interleaved), Some(RopeStyle::Half), None] {
        for &(heads, kv_heads, head_dim, rot_dim) in heads_sets {
            for &(batch, q_len) in bq {
                for dtype in DTYPES {
                    v.push(RopeCase {
                        style,
                        heads,
                        kv_heads,
                        head_dim,
                        rot_dim,
                        batch,
                        q_len,
                        dtype,
                    });
                }
            }
        }
    }
    v
}

#[test]
fn rotary_cache_write_matches_cpu() {
    let Some(s) = gpu("rotary_cache_write_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(21);
    let cases = rope_cases();
    for c in &cases {
        let tokens = c.batch * c.q_len;
        let kv_dim = c.kv_heads * c.head_dim;
        let capacity = c.q_len + 4 + rng.below(5) as usize;
        let tag = format!(
            "rope {:?} {} b{}×{} h{}/{} d{} rot{}",
            c.style, c.dtype, c.batch, c.q_len, c.heads, c.kv_heads, c.head_dim, c.rot_dim
        );
        let (mut q, qv) = upload(
            &rng.vec(tokens * c.heads * c.head_dim, -2.0, 2.0),
            &[c.batch, c.q_len, c.heads, c.head_dim],
            c.dtype,
        );
        let kshape = [c.batch, c.q_len, c.kv_heads, c.head_dim];
        let (mut k, kv) = upload(&rng.vec(tokens * kv_dim, -2.0, 2.0), &kshape, c.dtype);
        let (v, vv) = upload(&rng.vec(tokens * kv_dim, -2.0, 2.0), &kshape, c.dtype);
        // Per-token positions (as with left padding they need not be past + t).
        let positions: Vec<i64> = (0..tokens).map(|_| rng.below(8192) as i64).collect();
        let past: Vec<usize> = (0..c.batch)
            .map(|_| rng.below((capacity - c.q_len + 1) as u64) as usize)
            .collect();
        let base = 10000f32;
        let inv_freq: Vec<f32> = (0..c.rot_dim / 2)
            .map(|j| 1.0 / base.powf(2.0 * j as f32 / c.rot_dim as f32))
            .collect();
        let attn_factor = if c.heads % 2 == 0 { 1.0 } else { 1.25 };
        let cshape = [c.batch, capacity, kv_dim];
        let mut ck = poisoned(&cshape, c.dtype);
        let mut cv = poisoned(&cshape, c.dtype);
        let rot_c = c.style.map(|style| paradec::vocab::RotaryArgs {
            style,
            rot_dim: c.rot_dim,
            inv_freq: &inv_freq,
            attn_factor,
        });
        let slots_c = paradec::vocab::CacheSlots {
            batch: c.batch,
            q_len: c.q_len,
            capacity,
            past_len: &past,
        };
        let rd = c.style.map_or(0, |_| c.rot_dim);
        let mut meta = Tensor::zeros(
            &[kernels::rope_meta_bytes(tokens, c.batch, rd)],
            DType::U8,
            Device::Cuda(0),
        )
        .unwrap();
        kernels::rotary_and_cache_write(
            &mut q,
            &mut k,
            &v,
            c.heads,
            c.kv_heads,
            c.head_dim,
            &positions,
            rot_c.as_ref(),
            &slots_c,
            &mut meta,
            &mut ck,
            &mut cv,
            &s,
        )
        .unwrap();
        stream_sync(&s);

        let (mut q_ref, mut k_ref) = (qv.clone(), kv.clone());
        let cache_n = c.batch * capacity * kv_dim;
        let (mut ck_ref, mut cv_ref) = (vec![f32::NAN; cache_n], vec![f32::NAN; cache_n]);
        cpu::rope::rotary_and_cache_write(
            &mut q_ref,
            &mut k_ref,
            &vv,
            c.heads,
            c.kv_heads,
            c.head_dim,
            &positions,
            rot_c.as_ref(),
            &slots_c,
            &mut ck_ref,
            &mut cv_ref,
        );
        assert_close(&format!("{tag} q"), c.dtype, &download(&q), &q_ref);
        assert_close(&format!("{tag} k"), c.dtype, &download(&k), &k_ref);
        assert_close_masked(&format!("{tag} cache k"), c.dtype, &download(&ck), &ck_ref);
        assert_close_masked(&format!("{tag} cache v"), c.dtype, &download(&cv), &cv_ref);
        assert_eq!(download(&v), vv, "{tag}: v changed");
    }
    eprintln!("rotary_cache_write_matches_cpu: {} cases", cases.len());
}

#[test]
fn rotary_rejects_bad_arguments() {
    let Some(s) = gpu("rotary_rejects_bad_arguments") else {
        return;
    };
    use ffi::paradec_kstatus as k;
    let (b, t, h, kvh, d, cap) = (1usize, 2usize, 2usize, 1usize, 8usize, 4usize);
    let mut q = upload(&vec![0.5; b * t * h * d], &[b * t * h * d], DType::F16).0;
    let mut kk = upload(&vec![0.5; b * t * kvh * d], &[b * t * kvh * d], DType::F16).0;
    let v = upload(&vec![0.5; b * t * kvh * d], &[b * t * kvh * d], DType::F16).0;
    let mut ck = poisoned(&[b * cap * kvh * d], DType::F16);
    let mut cv = poisoned(&[b * cap * kvh * d], DType::F16);
    let pos = Tensor::from_host(paradec::HostData::I64(vec![0, 1]), &[2])
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap();
    let past = Tensor::from_host(paradec::HostData::I64(vec![0]), &[1])
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap();
    let inv = Tensor::from_f32(vec![1.0, 0.5, 0.25, 0.125], &[4])
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap();
    let (qp, kp, vp) = (dptr_mut(&mut q), dptr_mut(&mut kk), dptr(&v));
    let (ckp, cvp) = (dptr_mut(&mut ck), dptr_mut(&mut cv));
    let (pp, lp, ip) = (
        dptr(&pos) as *const i64,
        dptr(&past) as *const i64,
        dptr(&inv) as *const f32,
    );
    let f16 = dtype_code(DType::F16);
    let half = ffi::paradec_rope_style::PARADEC_ROPE_HALF as i32;
    #[allow(clippy::too_many_arguments)]
    let call = |dtype: i32,
                q: *mut c_void,
                batch: usize,
                head_dim: usize,
                style: i32,
                rot: usize,
                ckp: *mut c_void,
                cvp: *mut c_void| {
        // SAFETY: pointers are NULL or live device buffers sized for the accepted shapes;
        // rejected calls launch nothing.
        unsafe {
            ffi::paradec_rotary_cache_write(
                dtype,
                q,
                kp,
                vp,
                batch,
                t,
                h,
                kvh,
                head_dim,
                pp,
                style,
                rot,
                ip,
                1.0,
                lp,
                cap,
                ckp,
                cvp,
                s.raw(),
            )
        }
    };
    assert_eq!(call(f16, qp, b, d, half, d, ckp, cvp), k::PARADEC_K_OK);
    assert_eq!(
        call(f16, ptr::null_mut(), b, d, half, d, ckp, cvp),
        k::PARADEC_K_NULL_POINTER
    );
    assert_eq!(
        call(f16, qp, b, d, half, d, ckp, ptr::null_mut()),
        k::PARADEC_K_NULL_POINTER
    );
    assert_eq!(call(f16, qp, b, d, 5, d, ckp, cvp), k::PARADEC_K_BAD_ENUM);
    assert_eq!(call(3, qp, b, d, half, d, ckp, cvp), k::PARADEC_K_BAD_DTYPE);
    assert_eq!(
        call(f16, qp, 0, d, half, d, ckp, cvp),
        k::PARADEC_K_ZERO_DIM
    );
    assert_eq!(
        call(f16, qp, b, d, half, 0, ckp, cvp),
        k::PARADEC_K_ZERO_DIM
    );
    assert_eq!(
        call(f16, qp, b, 2048, half, d, ckp, cvp),
        k::PARADEC_K_DIM_TOO_LARGE
    );
    assert_eq!(
        call(f16, qp, b, d, half, 5, ckp, cvp),
        k::PARADEC_K_BAD_SHAPE
    );
    assert_eq!(
        call(f16, qp, b, d, half, 10, ckp, cvp),
        k::PARADEC_K_BAD_SHAPE
    );

    // The safe layer (host positions, past lengths and frequencies; checked before launch).
    let inv_h = [1.0f32, 0.5, 0.25, 0.125];
    let pos_h = [0i64, 1];
    let past_h = [0usize];
    let slots = CacheSlots {
        batch: b,
        q_len: t,
        capacity: cap,
        past_len: &past_h,
    };
    let rot = RotaryArgs {
        style: RopeStyle::Half,
        rot_dim: 7,
        inv_freq: &inv_h,
        attn_factor: 1.0,
    };
    let mut meta = Tensor::zeros(
        &[kernels::rope_meta_bytes(b * t, b, d)],
        DType::U8,
        Device::Cuda(0),
    )
    .unwrap();
    let mut run = |heads: usize, rot: Option<&RotaryArgs<'_>>, slots: &CacheSlots<'_>| {
        kernels::rotary_and_cache_write(
            &mut q, &mut kk, &v, heads, kvh, d, &pos_h, rot, slots, &mut meta, &mut ck, &mut cv, &s,
        )
    };
    let e = run(h, Some(&rot), &slots).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e:?}");
    let rot = RotaryArgs { rot_dim: 12, ..rot };
    let e = run(h, Some(&rot), &slots).unwrap_err();
    assert!(e.to_string().contains("rot_dim"), "{e}");
    let e = run(h + 1, None, &slots).unwrap_err();
    assert!(e.to_string().contains("rotary q"), "{e}");
    // A write past the cache's end is an error before launch, never a silently dropped write.
    let past_far = [3usize];
    let far = CacheSlots {
        past_len: &past_far,
        ..slots
    };
    let e = run(h, None, &far).unwrap_err();
    assert!(matches!(e, Error::CapacityExceeded(_)), "{e:?}");
    let rot = RotaryArgs { rot_dim: 8, ..rot };
    run(h, Some(&rot), &slots).unwrap();
    stream_sync(&s);
}

/// Whether a and b (values of `dtype`) are equal, both NaN, or one rounding of the dtype apart.
fn within_one_ulp(dtype: DType, a: f32, b: f32) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    let m = a.abs().max(b.abs());
    let bits = if dtype == DType::F16 { 10 } else { 7 };
    let ulp = 2f32.powi(m.log2().floor() as i32 - bits);
    (a - b).abs() <= ulp
}

/// The split of a fused q/k/v projection inside the rotary + cache write's launch
/// (`split_rotary_and_cache_write`) against `split_qkv` then `rotary_and_cache_write` on the
/// GPU (within one rounding, element by element: q, k, v and both caches, unwritten slots left
/// alone) and against the CPU twin: every layout (per head, queries first, per KV group), both
/// styles and none, odd head dims and partial rotary, several batches and query lengths.
#[test]
fn split_rotary_cache_write_matches_split_then_rotary() {
    let Some(s) = gpu("split_rotary_cache_write_matches_split_then_rotary") else {
        return;
    };
    let mut rng = Rng::new(23);
    // (layout, heads, kv_heads, head_dim, rot_dim)
    let sets = [
        (QkvLayout::FusedPerHead, 3, 3, 40, 16),
        (QkvLayout::FusedQueriesFirst, 5, 1, 72, 24),
        (QkvLayout::FusedGrouped, 6, 2, 64, 64),
        (QkvLayout::FusedPerHead, 4, 4, 64, 64),
    ];
    let bq: &[(usize, usize)] = if small() { &[(2, 3)] } else { &[(1, 1), (3, 1), (2, 5)] };
    let mut n = 0;
    for &(layout, heads, kv_heads, d, rot) in &sets {
        for style in [Some(RopeStyle::Interleaved), Some(RopeStyle::Half), None] {
            for &(batch, q_len) in bq {
                for dtype in DTYPES {
                    let tag = format!("{layout:?} {style:?} {dtype} b{batch}×{q_len} h{heads}/{kv_heads} d{d} rot{rot}");
                    let tokens = batch * q_len;
                    let width = (heads + 2 * kv_heads) * d;
                    let kv_dim = kv_heads * d;
                    let capacity = q_len + 3 + rng.below(4) as usize;
                    let (fused, fv) =
                        upload(&rng.vec(tokens * width, -2.0, 2.0), &[tokens, width], dtype);
                    let positions: Vec<i64> = (0..tokens).map(|_| rng.below(4096) as i64).collect();
                    let past: Vec<usize> = (0..batch)
                        .map(|_| rng.below((capacity - q_len + 1) as u64) as usize)
                        .collect();
                    let inv_freq: Vec<f32> = (0..rot / 2)
                        .map(|j| 1.0 / 10000f32.powf(2.0 * j as f32 / rot as f32))
                        .collect();
                    let rotary = style.map(|style| RotaryArgs {
                        style,
                        rot_dim: rot,
                        inv_freq: &inv_freq,
                        attn_factor: 1.0,
                    });
                    let slots = CacheSlots {
                        batch,
                        q_len,
                        capacity,
                        past_len: &past,
                    };
                    let rd = style.map_or(0, |_| rot);
                    let meta = || {
                        Tensor::zeros(
                            &[kernels::rope_meta_bytes(tokens, batch, rd)],
                            DType::U8,
                            Device::Cuda(0),
                        )
                        .unwrap()
                    };
                    let qshape = [tokens, heads * d];
                    let kshape = [tokens, kv_dim];
                    let cshape = [batch, capacity, kv_dim];
                    let outs = || {
                        (
                            poisoned(&qshape, dtype),
                            poisoned(&kshape, dtype),
                            poisoned(&kshape, dtype),
                            poisoned(&cshape, dtype),
                            poisoned(&cshape, dtype),
                        )
                    };

                    // One launch.
                    let (mut q1, mut k1, mut v1, mut ck1, mut cv1) = outs();
                    kernels::split_rotary_and_cache_write(
                        &fused, layout, &mut q1, &mut k1, &mut v1, heads, kv_heads, d,
                        &positions, rotary.as_ref(), &slots, &mut meta(), &mut ck1, &mut cv1, &s,
                    )
                    .unwrap();
                    // The split, then the rotary + cache write.
                    let (mut q2, mut k2, mut v2, mut ck2, mut cv2) = outs();
                    kernels::split_qkv(
                        layout, &fused, tokens, heads, kv_heads, d, &mut q2, &mut k2, &mut v2, &s,
                    )
                    .unwrap();
                    kernels::rotary_and_cache_write(
                        &mut q2, &mut k2, &v2, heads, kv_heads, d, &positions, rotary.as_ref(),
                        &slots, &mut meta(), &mut ck2, &mut cv2, &s,
                    )
                    .unwrap();
                    stream_sync(&s);
                    for (what, a, b) in [
                        ("q", &q1, &q2),
                        ("k", &k1, &k2),
                        ("v", &v1, &v2),
                        ("cache k", &ck1, &ck2),
                        ("cache v", &cv1, &cv2),
                    ] {
                        let (a, b) = (download(a), download(b));
                        if let Some(i) = (0..a.len()).find(|&i| !within_one_ulp(dtype, a[i], b[i])) {
                            panic!("{tag} {what}[{i}]: one launch {} against two {}", a[i], b[i]);
                        }
                    }

                    // The CPU twin.
                    let (mut qr, mut kr, mut vr) = (
                        vec![0.0; tokens * heads * d],
                        vec![0.0; tokens * kv_dim],
                        vec![0.0; tokens * kv_dim],
                    );
                    let cache_n = batch * capacity * kv_dim;
                    let (mut ckr, mut cvr) = (vec![f32::NAN; cache_n], vec![f32::NAN; cache_n]);
                    cpu::rope::split_rotary_and_cache_write(
                        &fv, layout, &mut qr, &mut kr, &mut vr, heads, kv_heads, d, &positions,
                        rotary.as_ref(), &slots, &mut ckr, &mut cvr,
                    );
                    assert_close(&format!("{tag} q"), dtype, &download(&q1), &qr);
                    assert_close(&format!("{tag} k"), dtype, &download(&k1), &kr);
                    assert_eq!(download(&v1), vr, "{tag}: v is a copy");
                    assert_close_masked(&format!("{tag} cache k"), dtype, &download(&ck1), &ckr);
                    assert_close_masked(&format!("{tag} cache v"), dtype, &download(&cv1), &cvr);
                    n += 1;
                }
            }
        }
    }
    eprintln!("split_rotary_cache_write_matches_split_then_rotary: {n} cases");
}

/// What the split launcher refuses, by its status: an unknown layout, a per-head layout with
/// fewer KV heads than heads, no KV heads; without a fused input it is the in-place launcher
/// (here nothing to rotate or write).
#[test]
fn split_rotary_rejects_bad_arguments() {
    let Some(s) = gpu("split_rotary_rejects_bad_arguments") else {
        return;
    };
    use ffi::paradec_kstatus as st;
    let (t, h, kvh, d) = (2usize, 2usize, 1usize, 8usize);
    let fused = upload(&vec![0.5; t * (h + 2 * kvh) * d], &[t * (h + 2 * kvh) * d], DType::F16).0;
    let mut q = poisoned(&[t * h * d], DType::F16);
    let mut k = poisoned(&[t * kvh * d], DType::F16);
    let mut v = poisoned(&[t * kvh * d], DType::F16);
    let (fp, qp, kp, vp) = (dptr(&fused), dptr_mut(&mut q), dptr_mut(&mut k), dptr_mut(&mut v));
    let call = |fused: *const c_void, layout: i32, kv_heads: usize| {
        // SAFETY: live device buffers sized for the accepted shapes (nothing with a cache or
        // rotary); refused calls launch nothing.
        unsafe {
            ffi::paradec_split_rotary_cache_write(
                dtype_code(DType::F16),
                fused,
                layout,
                qp,
                kp,
                vp,
                1,
                t,
                h,
                kv_heads,
                d,
                ptr::null(),
                0,
                0,
                ptr::null(),
                1.0,
                ptr::null(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                s.raw(),
            )
        }
    };
    let qf = ffi::paradec_qkv_layout::PARADEC_QKV_QUERIES_FIRST as i32;
    let per_head = ffi::paradec_qkv_layout::PARADEC_QKV_PER_HEAD as i32;
    assert_eq!(call(fp, 7, kvh), st::PARADEC_K_BAD_ENUM);
    assert_eq!(call(fp, per_head, kvh), st::PARADEC_K_BAD_SHAPE);
    assert_eq!(call(fp, qf, 0), st::PARADEC_K_ZERO_DIM);
    assert_eq!(call(ptr::null(), qf, kvh), st::PARADEC_K_OK);
    stream_sync(&s);
    assert!(download(&v).iter().all(|x| x.is_nan()), "in place: v untouched");
    assert_eq!(call(fp, qf, kvh), st::PARADEC_K_OK);
    stream_sync(&s);
    assert_eq!(download(&v), vec![0.5; t * kvh * d], "v split out");
}
