//! Norm kernels against the CPU twin; argument checks; graph capture.

use super::*;

fn norm_cols() -> Vec<usize> {
    if small() {
        // scalar path (7, 4095), vec 1 (64), vec 2 (512), vec 4 / one warp (1000),
        // vec 4 / 128 threads (4096), vec 4 / 1024 threads (32768)
        vec![7, 64, 512, 1000, 4095, 4096, 32768]
    } else {
        vec![1, 7, 33, 64, 257, 512, 1000, 2048, 4095, 4096, 8192, 32768]
    }
}

fn norm_rows(cols: usize) -> Vec<usize> {
    if small() {
        vec![3]
    } else if cols >= 8192 {
        vec![1, 2 * 17]
    } else {
        vec![1, 2 * 17, 4 * 33]
    }
}

/// (has weight, has bias) combinations.
const AFFINES: [(bool, bool); 4] = [(true, true), (true, false), (false, false), (false, true)];

struct NormCase {
    kind: NormKind,
    dtype: DType,
    rows: usize,
    cols: usize,
    weight: bool,
    bias: bool,
}

impl std::fmt::Display for NormCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {} {}x{} weight={} bias={}",
            self.kind, self.dtype, self.rows, self.cols, self.weight, self.bias
        )
    }
}

fn norm_cases() -> Vec<NormCase> {
    let mut v = Vec::new();
    for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
        for dtype in DTYPES {
            for cols in norm_cols() {
                for rows in norm_rows(cols) {
                    for (i, &(weight, bias)) in AFFINES.iter().enumerate() {
                        // Every affine combination at small sizes; weight+bias and none above.
                        if cols > 1000 && i % 2 == 1 {
                            continue;
                        }
                        v.push(NormCase {
                            kind,
                            dtype,
                            rows,
                            cols,
                            weight,
                            bias,
                        });
                    }
                }
            }
        }
    }
    v
}

/// An affine pair on the device plus the rounded values for the CPU.
struct Affine {
    w: Option<(Tensor, Vec<f32>)>,
    b: Option<(Tensor, Vec<f32>)>,
}

impl Affine {
    fn new(rng: &mut Rng, c: &NormCase) -> Self {
        let w = c
            .weight
            .then(|| upload(&rng.vec(c.cols, 0.5, 1.5), &[c.cols], c.dtype));
        let b = c
            .bias
            .then(|| upload(&rng.vec(c.cols, -0.5, 0.5), &[c.cols], c.dtype));
        Affine { w, b }
    }
    fn dev(&self) -> DevAffine<'_> {
        DevAffine {
            weight: self.w.as_ref().map(|x| &x.0),
            bias: self.b.as_ref().map(|x| &x.0),
        }
    }
    fn cpu(&self) -> cpu::norm::NormAffine<'_> {
        cpu::norm::NormAffine {
            weight: self.w.as_ref().map(|x| x.1.as_slice()),
            bias: self.b.as_ref().map(|x| x.1.as_slice()),
        }
    }
}

/// Row values with an offset, so that LayerNorm's mean subtraction matters.
fn norm_input(rng: &mut Rng, n: usize) -> Vec<f32> {
    let offset = rng.uniform(-1.0, 1.0);
    rng.vec(n, -2.0, 2.0).iter().map(|v| v + offset).collect()
}

#[test]
fn norm_matches_cpu() {
    let Some(s) = gpu("norm_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(11);
    let cases = norm_cases();
    for c in &cases {
        let n = c.rows * c.cols;
        let shape = [c.rows, c.cols];
        let (x, xv) = upload(&norm_input(&mut rng, n), &shape, c.dtype);
        let aff = Affine::new(&mut rng, c);
        let mut out = poisoned(&shape, c.dtype);
        let eps = 1e-5;
        kernels::norm(c.kind, &x, c.rows, c.cols, aff.dev(), eps, &mut out, &s).unwrap();
        stream_sync(&s);
        let mut want = vec![0f32; n];
        cpu::norm::norm(c.kind, &xv, c.rows, c.cols, aff.cpu(), eps, &mut want);
        assert_close(&format!("norm {c}"), c.dtype, &download(&out), &want);
        assert_eq!(download(&x), xv, "norm {c}: x changed");
    }
    eprintln!("norm_matches_cpu: {} cases", cases.len());
}

#[test]
fn add_norm_matches_cpu() {
    let Some(s) = gpu("add_norm_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(12);
    let cases = norm_cases();
    for c in &cases {
        let n = c.rows * c.cols;
        let shape = [c.rows, c.cols];
        let (mut x, xv) = upload(&norm_input(&mut rng, n), &shape, c.dtype);
        let (r, rv) = upload(&rng.vec(n, -1.0, 1.0), &shape, c.dtype);
        let aff = Affine::new(&mut rng, c);
        let mut out = poisoned(&shape, c.dtype);
        let eps = 1e-6;
        kernels::add_norm(
            c.kind,
            &mut x,
            &r,
            c.rows,
            c.cols,
            aff.dev(),
            eps,
            &mut out,
            &s,
        )
        .unwrap();
        stream_sync(&s);
        let mut want_x = xv.clone();
        let mut want = vec![0f32; n];
        cpu::norm::add_norm(
            c.kind,
            &mut want_x,
            &rv,
            c.rows,
            c.cols,
            aff.cpu(),
            eps,
            &mut want,
        );
        assert_close(
            &format!("add_norm out {c}"),
            c.dtype,
            &download(&out),
            &want,
        );
        assert_close(&format!("add_norm x {c}"), c.dtype, &download(&x), &want_x);
    }
    eprintln!("add_norm_matches_cpu: {} cases", cases.len());
}

#[test]
fn norm2_matches_cpu() {
    let Some(s) = gpu("norm2_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(13);
    let cases = norm_cases();
    for (i, c) in cases.iter().enumerate() {
        let n = c.rows * c.cols;
        let shape = [c.rows, c.cols];
        let (mut x, xv) = upload(&norm_input(&mut rng, n), &shape, c.dtype);
        let aff_a = Affine::new(&mut rng, c);
        // The second norm's affine differs in which parts it has.
        let c_b = NormCase {
            weight: !c.bias,
            bias: c.weight,
            ..*c
        };
        let aff_b = Affine::new(&mut rng, &c_b);
        let mut out_a = poisoned(&shape, c.dtype);
        let mut out_b = poisoned(&shape, c.dtype);
        let eps = 1e-5;
        // Every other case also fuses a residual add (add_norm2).
        let with_residual = i % 2 == 1;
        let mut xv_used = xv.clone();
        if with_residual {
            let (r, rv) = upload(&rng.vec(n, -1.0, 1.0), &shape, c.dtype);
            kernels::add_norm2(
                c.kind,
                &mut x,
                &r,
                c.rows,
                c.cols,
                aff_a.dev(),
                aff_b.dev(),
                eps,
                &mut out_a,
                &mut out_b,
                &s,
            )
            .unwrap();
            cpu::activation::add_inplace(&mut xv_used, &rv);
        } else {
            kernels::norm2(
                c.kind,
                &x,
                c.rows,
                c.cols,
                aff_a.dev(),
                aff_b.dev(),
                eps,
                &mut out_a,
                &mut out_b,
                &s,
            )
            .unwrap();
        }
        stream_sync(&s);
        let mut want_a = vec![0f32; n];
        let mut want_b = vec![0f32; n];
        cpu::norm::norm2(
            c.kind,
            &xv_used,
            c.rows,
            c.cols,
            aff_a.cpu(),
            aff_b.cpu(),
            eps,
            &mut want_a,
            &mut want_b,
        );
        let tag = format!("norm2 {c} residual={with_residual}");
        assert_close(&format!("{tag} out_a"), c.dtype, &download(&out_a), &want_a);
        assert_close(&format!("{tag} out_b"), c.dtype, &download(&out_b), &want_b);
        assert_close(&format!("{tag} x"), c.dtype, &download(&x), &xv_used);
    }
    eprintln!("norm2_matches_cpu: {} cases", cases.len());
}

/// Misaligned pointers take the scalar path; the output may alias x (in place).
#[test]
fn norm_misaligned_and_in_place() {
    let Some(s) = gpu("norm_misaligned_and_in_place") else {
        return;
    };
    let mut rng = Rng::new(14);
    let (rows, cols) = (5, 1024);
    let n = rows * cols;
    for dtype in DTYPES {
        // x starts one element into its buffer: 2-byte aligned, not 16.
        let (xbuf, xv_all) = upload(&norm_input(&mut rng, n + 1), &[n + 1], dtype);
        let xv = &xv_all[1..];
        let (w, wv) = upload(&rng.vec(cols, 0.5, 1.5), &[cols], dtype);
        let mut out = poisoned(&[n + 1], dtype);
        let code = if dtype == DType::F16 {
            ffi::paradec_dtype::PARADEC_F16
        } else {
            ffi::paradec_dtype::PARADEC_BF16
        } as i32;
        // SAFETY: pointers into live device buffers with n (+1) elements; offsets stay inside.
        let st = unsafe {
            ffi::paradec_norm(
                ffi::paradec_norm_kind::PARADEC_LAYER_NORM as i32,
                code,
                (dptr(&xbuf) as *const u16).add(1).cast(),
                dptr(&w),
                ptr::null(),
                (dptr_mut(&mut out) as *mut u16).add(1).cast(),
                rows,
                cols,
                1e-5,
                s.raw(),
            )
        };
        assert_eq!(st, 0, "{}", cuda::error::kstatus_str(st));
        stream_sync(&s);
        let aff = cpu::norm::NormAffine {
            weight: Some(&wv),
            bias: None,
        };
        let mut want = vec![0f32; n];
        cpu::norm::norm(NormKind::LayerNorm, xv, rows, cols, aff, 1e-5, &mut want);
        assert_close("misaligned norm", dtype, &download(&out)[1..], &want);

        // In place: out == x (aligned, vector path).
        let (mut x, xv) = upload(&norm_input(&mut rng, n), &[rows, cols], dtype);
        let xp = dptr_mut(&mut x);
        // SAFETY: x is a live device buffer of n elements; in-place is allowed.
        let st = unsafe {
            ffi::paradec_norm(
                ffi::paradec_norm_kind::PARADEC_RMS_NORM as i32,
                code,
                xp,
                dptr(&w),
                ptr::null(),
                xp,
                rows,
                cols,
                1e-5,
                s.raw(),
            )
        };
        assert_eq!(st, 0);
        stream_sync(&s);
        let mut want = vec![0f32; n];
        cpu::norm::norm(NormKind::RmsNorm, &xv, rows, cols, aff, 1e-5, &mut want);
        assert_close("in-place norm", dtype, &download(&x), &want);
    }
}

#[test]
fn norm_rejects_bad_arguments() {
    let Some(s) = gpu("norm_rejects_bad_arguments") else {
        return;
    };
    use ffi::paradec_kstatus as k;
    let (rows, cols) = (4, 64);
    let x = upload(&[0.5; 256], &[rows, cols], DType::F16).0;
    let mut out = poisoned(&[rows, cols], DType::F16);
    let f16 = ffi::paradec_dtype::PARADEC_F16 as i32;
    let ln = ffi::paradec_norm_kind::PARADEC_LAYER_NORM as i32;
    let (xp, op) = (dptr(&x), dptr_mut(&mut out));
    let call = |kind: i32, dtype: i32, x: *const c_void, out: *mut c_void, r: usize, c: usize| {
        // SAFETY: every pointer is NULL or a live device buffer large enough for the sizes the
        // launcher accepts; rejected calls launch nothing.
        unsafe {
            ffi::paradec_norm(
                kind,
                dtype,
                x,
                ptr::null(),
                ptr::null(),
                out,
                r,
                c,
                1e-5,
                s.raw(),
            )
        }
    };
    assert_eq!(call(ln, f16, xp, op, rows, cols), k::PARADEC_K_OK);
    assert_eq!(
        call(ln, f16, ptr::null(), op, rows, cols),
        k::PARADEC_K_NULL_POINTER
    );
    assert_eq!(
        call(ln, f16, xp, ptr::null_mut(), rows, cols),
        k::PARADEC_K_NULL_POINTER
    );
    assert_eq!(call(7, f16, xp, op, rows, cols), k::PARADEC_K_BAD_ENUM);
    assert_eq!(call(ln, 9, xp, op, rows, cols), k::PARADEC_K_BAD_DTYPE);
    assert_eq!(call(ln, f16, xp, op, 0, cols), k::PARADEC_K_ZERO_DIM);
    assert_eq!(call(ln, f16, xp, op, rows, 0), k::PARADEC_K_ZERO_DIM);
    assert_eq!(call(ln, f16, xp, op, 1, 32769), k::PARADEC_K_DIM_TOO_LARGE);
    assert_eq!(
        call(ln, f16, xp, op, 1usize << 40, 1),
        k::PARADEC_K_DIM_TOO_LARGE
    );
    // SAFETY: rejected before any pointer is used.
    unsafe {
        assert_eq!(
            ffi::paradec_add_norm(
                ln,
                f16,
                op,
                ptr::null(),
                ptr::null(),
                ptr::null(),
                op,
                rows,
                cols,
                1e-5,
                s.raw()
            ),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_norm2(
                ln,
                f16,
                xp,
                ptr::null(),
                ptr::null(),
                ptr::null(),
                ptr::null(),
                op,
                ptr::null_mut(),
                rows,
                cols,
                1e-5,
                s.raw()
            ),
            k::PARADEC_K_NULL_POINTER
        );
    }
    assert!(cuda::error::kstatus_str(k::PARADEC_K_DIM_TOO_LARGE).contains("limit"));

    // The safe layer: dtypes, element counts, devices.
    let kind = NormKind::LayerNorm;
    let none = DevAffine::NONE;
    let e = kernels::norm(kind, &x, rows, cols + 1, none, 1e-5, &mut out, &s).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e:?}");
    let x32 = upload(&[0.5; 256], &[rows, cols], DType::F32).0;
    let mut o32 = poisoned(&[rows, cols], DType::F32);
    let e = kernels::norm(kind, &x32, rows, cols, none, 1e-5, &mut o32, &s).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    let mut obf = poisoned(&[rows, cols], DType::BF16);
    let e = kernels::norm(kind, &x, rows, cols, none, 1e-5, &mut obf, &s).unwrap_err();
    assert!(e.to_string().contains("dtype"), "{e}");
    let xh = Tensor::from_f32_as(&[0.5; 256], &[rows, cols], DType::F16).unwrap();
    let e = kernels::norm(kind, &xh, rows, cols, none, 1e-5, &mut out, &s).unwrap_err();
    assert!(e.to_string().contains("cpu"), "{e}");
    let w_bad = upload(&[1.0; 63], &[63], DType::F16).0;
    let aff = DevAffine {
        weight: Some(&w_bad),
        bias: None,
    };
    let e = kernels::norm(kind, &x, rows, cols, aff, 1e-5, &mut out, &s).unwrap_err();
    assert!(e.to_string().contains("weight"), "{e}");
    let e = kernels::norm(kind, &x, 1, 40000, none, 1e-5, &mut out, &s).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e:?}");
    stream_sync(&s);
}

/// A captured graph replays the same kernels.
#[test]
fn graph_capture_replays_kernels() {
    let _exclusive = CAPTURE.write().unwrap_or_else(|e| e.into_inner());
    let Some(s) = gpu_stream("graph_capture_replays_kernels") else {
        return;
    };
    let mut rng = Rng::new(15);
    let (rows, cols) = (8, 4096);
    let (x, xv) = upload(
        &norm_input(&mut rng, rows * cols),
        &[rows, cols],
        DType::F16,
    );
    let mut out = poisoned(&[rows, cols], DType::F16);
    let g = CudaGraph::capture(&s, |st| {
        kernels::norm(
            NormKind::RmsNorm,
            &x,
            rows,
            cols,
            DevAffine::NONE,
            1e-5,
            &mut out,
            st,
        )
    })
    .unwrap();
    // Nothing ran during capture.
    assert!(download(&out).iter().all(|v| v.is_nan()));
    for _ in 0..3 {
        g.launch(&s).unwrap();
    }
    stream_sync(&s);
    let mut want = vec![0f32; rows * cols];
    cpu::norm::norm(
        NormKind::RmsNorm,
        &xv,
        rows,
        cols,
        cpu::norm::NormAffine {
            weight: None,
            bias: None,
        },
        1e-5,
        &mut want,
    );
    assert_close("graph replay", DType::F16, &download(&out), &want);
    let legacy = CudaStream::legacy_default(0);
    assert!(CudaGraph::capture(&legacy, |_| Ok(())).is_err());
}
