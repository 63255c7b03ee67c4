//! Activations, gated multiply and add against the CPU twins.

use super::*;

const ACTS: [Activation; 5] = [
    Activation::GeluErf,
    Activation::GeluNew,
    Activation::GeluFast,
    Activation::Silu,
    Activation::Relu,
];

fn ew_sizes() -> Vec<usize> {
    if small() {
        vec![7, 4096 + 3]
    } else {
        vec![1, 7, 8, 1000, 4095, 65536 + 3, 1 << 20]
    }
}

#[test]
fn activations_match_cpu() {
    let Some(s) = gpu("activations_match_cpu") else {
        return;
    };
    let mut rng = Rng::new(31);
    let mut count = 0;
    for act in ACTS {
        for dtype in DTYPES {
            for n in ew_sizes() {
                let tag = format!("{act:?} {dtype} n={n}");
                // activate in place
                let (mut x, xv) = upload(&rng.vec(n, -6.0, 6.0), &[n], dtype);
                kernels::activate(act, &mut x, &s).unwrap();
                let mut want = xv.clone();
                cpu::activation::activate(act, &mut want);
                stream_sync(&s);
                assert_close(&format!("activate {tag}"), dtype, &download(&x), &want);
                // gated
                let (g, gv) = upload(&rng.vec(n, -6.0, 6.0), &[n], dtype);
                let (u, uv) = upload(&rng.vec(n, -2.0, 2.0), &[n], dtype);
                let mut out = poisoned(&[n], dtype);
                kernels::act_mul(act, &g, &u, &mut out, &s).unwrap();
                let mut want = vec![0f32; n];
                cpu::activation::act_mul(act, &gv, &uv, &mut want);
                stream_sync(&s);
                assert_close(&format!("act_mul {tag}"), dtype, &download(&out), &want);
                count += 2;
            }
        }
    }
    eprintln!("activations_match_cpu: {count} cases");
}

#[test]
fn add_inplace_matches_cpu() {
    let Some(s) = gpu("add_inplace_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(32);
    for dtype in DTYPES {
        for n in ew_sizes() {
            let (mut x, xv) = upload(&rng.vec(n, -2.0, 2.0), &[n], dtype);
            let (y, yv) = upload(&rng.vec(n, -2.0, 2.0), &[n], dtype);
            kernels::add_inplace(&mut x, &y, &s).unwrap();
            let mut want = xv.clone();
            cpu::activation::add_inplace(&mut want, &yv);
            stream_sync(&s);
            assert_close(&format!("add {dtype} n={n}"), dtype, &download(&x), &want);
        }
    }
}

/// Misaligned pointers take the scalar path everywhere.
#[test]
fn elementwise_misaligned() {
    let Some(s) = gpu("elementwise_misaligned") else {
        return;
    };
    let mut rng = Rng::new(33);
    let n = 1003;
    for dtype in DTYPES {
        let code = dtype_code(dtype);
        let (g, gv) = upload(&rng.vec(n + 1, -4.0, 4.0), &[n + 1], dtype);
        let (u, uv) = upload(&rng.vec(n + 1, -2.0, 2.0), &[n + 1], dtype);
        let mut out = poisoned(&[n + 1], dtype);
        // SAFETY: offsets of one element stay inside buffers of n + 1 elements.
        let st = unsafe {
            ffi::paradec_act_mul(
                ffi::paradec_activation::PARADEC_SILU as i32,
                code,
                (dptr(&g) as *const u16).add(1).cast(),
                (dptr(&u) as *const u16).add(1).cast(),
                (dptr_mut(&mut out) as *mut u16).add(1).cast(),
                n,
                s.raw(),
            )
        };
        assert_eq!(st, 0);
        stream_sync(&s);
        let mut want = vec![0f32; n];
        cpu::activation::act_mul(Activation::Silu, &gv[1..], &uv[1..], &mut want);
        let got = download(&out);
        assert!(got[0].is_nan(), "wrote before the output");
        assert_close("misaligned act_mul", dtype, &got[1..], &want);
    }
}

#[test]
fn elementwise_rejects_bad_arguments() {
    let Some(s) = gpu("elementwise_rejects_bad_arguments") else {
        return;
    };
    use ffi::paradec_kstatus as k;
    let mut x = upload(&[0.5; 16], &[16], DType::F16).0;
    let xp = dptr_mut(&mut x);
    let f16 = dtype_code(DType::F16);
    let silu = ffi::paradec_activation::PARADEC_SILU as i32;
    // SAFETY: pointers are NULL or a live buffer of 16 elements; rejected calls launch nothing.
    unsafe {
        assert_eq!(
            ffi::paradec_activate(silu, f16, xp, 16, s.raw()),
            k::PARADEC_K_OK
        );
        assert_eq!(
            ffi::paradec_activate(silu, f16, ptr::null_mut(), 16, s.raw()),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_activate(9, f16, xp, 16, s.raw()),
            k::PARADEC_K_BAD_ENUM
        );
        assert_eq!(
            ffi::paradec_activate(silu, 2, xp, 16, s.raw()),
            k::PARADEC_K_BAD_DTYPE
        );
        assert_eq!(
            ffi::paradec_activate(silu, f16, xp, 0, s.raw()),
            k::PARADEC_K_ZERO_DIM
        );
        assert_eq!(
            ffi::paradec_activate(silu, f16, xp, usize::MAX, s.raw()),
            k::PARADEC_K_DIM_TOO_LARGE
        );
        assert_eq!(
            ffi::paradec_act_mul(silu, f16, xp, ptr::null(), xp, 16, s.raw()),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_add_inplace(f16, xp, ptr::null(), 16, s.raw()),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_add_inplace(f16, xp, xp, 0, s.raw()),
            k::PARADEC_K_ZERO_DIM
        );
    }
    let y = upload(&[0.5; 15], &[15], DType::F16).0;
    let e = kernels::add_inplace(&mut x, &y, &s).unwrap_err();
    assert!(e.to_string().contains("add_inplace y"), "{e}");
    let yb = upload(&[0.5; 16], &[16], DType::BF16).0;
    let e = kernels::add_inplace(&mut x, &yb, &s).unwrap_err();
    assert!(e.to_string().contains("dtype"), "{e}");
    let mut x32 = upload(&[0.5; 16], &[16], DType::F32).0;
    let e = kernels::activate(Activation::Silu, &mut x32, &s).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    stream_sync(&s);
}
