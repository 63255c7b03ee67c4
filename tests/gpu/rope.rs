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
