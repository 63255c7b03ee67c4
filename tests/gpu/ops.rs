//! The `ops` dispatch on CUDA tensors: each op wired to a kernel gives the CPU reference's
//! result (same rounded inputs), needs a CUDA stream, and ops without a kernel yet — and a
//! model moved to the GPU — fail with a clear error instead of crashing.
//!
//! Skips without a device unless `PARADEC_REQUIRE_GPU=1`.
use super::common::*;
use super::gpu_stream;
use paradec::ops;
use paradec::vocab::Activation;
use paradec::vocab::Affine;
use paradec::vocab::NormKind;
use paradec::{DType, Device, Error, Model, Stream, Tensor};

fn stream(test: &str) -> Option<Stream> {
    gpu_stream(test).map(Stream::Cuda)
}

/// A host tensor of `dtype` with random values, and its device copy.
fn pair(rng: &mut Rng, shape: &[usize], dtype: DType) -> (Tensor, Tensor) {
    let n = shape.iter().product();
    let h = Tensor::from_f32_as(&rng.vec(n), shape, dtype).unwrap();
    let d = h.to_device(Device::Cuda(0)).unwrap();
    (h, d)
}

fn poisoned(shape: &[usize], dtype: DType) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32_as(&vec![f32::NAN; n], shape, dtype)
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap()
}

fn close(got: &Tensor, want: &Tensor, budget: f64, what: &str) {
    let (g, w) = (values(got), values(want));
    let rows = got.rows();
    let e = rel_err_rows(&g, &w, got.cols(), &vec![true; rows]);
    assert!(e <= budget, "{what}: rel err {e:.3e} > {budget:.0e}");
}

#[test]
fn wired_ops_match_the_cpu() {
    let Some(s) = stream("wired_ops_match_the_cpu") else {
        return;
    };
    let host = Stream::Host;
    let mut rng = Rng::new(42);
    for dtype in [DType::F16, DType::BF16] {
        let budget = if dtype == DType::F16 { 2e-3 } else { 1.5e-2 };
        for (rows, cols) in [(1, 64), (7, 257), (33, 4096)] {
            let (xh, xd) = pair(&mut rng, &[rows, cols], dtype);
            let (wh, wd) = pair(&mut rng, &[cols], dtype);
            let (bh, bd) = pair(&mut rng, &[cols], dtype);
            let (w2h, w2d) = pair(&mut rng, &[cols], dtype);
            for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
                let bias_h = (kind == NormKind::LayerNorm).then_some(&bh);
                let bias_d = (kind == NormKind::LayerNorm).then_some(&bd);
                let mut want = Tensor::zeros(&[rows, cols], dtype, Device::Cpu).unwrap();
                ops::norm(
                    &host,
                    kind,
                    &xh,
                    &Affine {
                        weight: Some(&wh),
                        bias: bias_h,
                    },
                    1e-5,
                    &mut want,
                )
                .unwrap();
                let mut got = poisoned(&[rows, cols], dtype);
                ops::norm(
                    &s,
                    kind,
                    &xd,
                    &Affine {
                        weight: Some(&wd),
                        bias: bias_d,
                    },
                    1e-5,
                    &mut got,
                )
                .unwrap();
                close(
                    &got,
                    &want,
                    budget,
                    &format!("norm {kind:?} {dtype} {rows}x{cols}"),
                );
                // Two norms from one read.
                let mut want2 = Tensor::zeros(&[rows, cols], dtype, Device::Cpu).unwrap();
                ops::norm(
                    &host,
                    kind,
                    &xh,
                    &Affine {
                        weight: Some(&w2h),
                        bias: None,
                    },
                    1e-5,
                    &mut want2,
                )
                .unwrap();
                let (mut ga, mut gb) = (
                    poisoned(&[rows, cols], dtype),
                    poisoned(&[rows, cols], dtype),
                );
                ops::norm2(
                    &s,
                    kind,
                    &xd,
                    &Affine {
                        weight: Some(&wd),
                        bias: bias_d,
                    },
                    &Affine {
                        weight: Some(&w2d),
                        bias: None,
                    },
                    1e-5,
                    &mut ga,
                    &mut gb,
                )
                .unwrap();
                close(&ga, &want, budget, "norm2 first");
                close(&gb, &want2, budget, "norm2 second");
            }
            for act in [
                Activation::GeluErf,
                Activation::GeluNew,
                Activation::GeluFast,
                Activation::Silu,
            ] {
                let mut want = xh.try_clone().unwrap();
                ops::activate(&host, act, &mut want).unwrap();
                let mut got = xd.try_clone().unwrap();
                ops::activate(&s, act, &mut got).unwrap();
                close(&got, &want, budget, &format!("activate {act:?} {dtype}"));
            }
            let (uh, ud) = pair(&mut rng, &[rows, cols], dtype);
            let mut want = Tensor::zeros(&[rows, cols], dtype, Device::Cpu).unwrap();
            ops::act_mul(&host, Activation::Silu, &xh, &uh, &mut want).unwrap();
            let mut got = poisoned(&[rows, cols], dtype);
            ops::act_mul(&s, Activation::Silu, &xd, &ud, &mut got).unwrap();
            close(&got, &want, budget, "act_mul");
            let mut want = xh.try_clone().unwrap();
            ops::add_inplace(&host, &mut want, &uh).unwrap();
            let mut got = xd.try_clone().unwrap();
            ops::add_inplace(&s, &mut got, &ud).unwrap();
            close(&got, &want, budget, "add_inplace");
        }
    }
}

#[test]
fn device_ops_need_a_cuda_stream_and_missing_kernels_say_so() {
    let Some(s) = stream("device_ops_need_a_cuda_stream") else {
        return;
    };
    let mut rng = Rng::new(3);
    let (_, xd) = pair(&mut rng, &[4, 64], DType::F16);
    let mut out = poisoned(&[4, 64], DType::F16);
    let none = Affine {
        weight: None,
        bias: None,
    };
    let e = ops::norm(&Stream::Host, NormKind::RmsNorm, &xd, &none, 1e-5, &mut out).unwrap_err();
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains("CUDA stream")),
        "{e}"
    );
    // Mixed devices are named.
    let (xh, _) = pair(&mut rng, &[4, 64], DType::F16);
    let e = ops::norm(&s, NormKind::RmsNorm, &xh, &none, 1e-5, &mut out).unwrap_err();
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains("cuda:0")),
        "{e}"
    );
    // A dense linear runs on the device; a weight of another dtype is named.
    let (_, wd) = pair(&mut rng, &[8, 64], DType::F16);
    let mut y = poisoned(&[4, 8], DType::F16);
    let mut ws = paradec::Workspace::new(Device::Cuda(0), DType::F16).unwrap();
    ops::linear(&s, &mut ws, &xd, &wd, None, &mut y, false).unwrap();
    let (_, wb) = pair(&mut rng, &[8, 64], DType::BF16);
    let e = ops::linear(&s, &mut ws, &xd, &wb, None, &mut y, false).unwrap_err();
    assert!(
        matches!(&e, Error::BadInput(m) if m.contains("linear weight")),
        "{e}"
    );
}

#[test]
fn a_model_on_the_gpu_fails_cleanly_until_the_gpu_decoder_lands() {
    if stream("a_model_on_the_gpu").is_none() {
        return;
    }
    // Zeros are allocated and cleared on the device itself.
    let z = Tensor::zeros(&[3, 5], DType::BF16, Device::Cuda(0)).unwrap();
    assert_eq!(z.device(), Device::Cuda(0));
    assert_eq!(values(&z), vec![0.0; 15]);
    let mut model = Model::load(fixture("cohere")).unwrap();
    model.load_to(Device::Cuda(0)).unwrap();
    let p = paradec::AttnParams::new(1, 2);
    let mut ws = paradec::Workspace::new(Device::Cuda(0), DType::F16).unwrap();
    assert!(model
        .forward(&Stream::Host, &[1, 2], &p, None, &mut ws)
        .is_err());
    // Back on the host it runs and still matches itself.
    model.load_to(Device::Cpu).unwrap();
    model
        .forward(
            &Stream::Host,
            &[1, 2],
            &p,
            None,
            &mut paradec::Workspace::cpu(),
        )
        .unwrap();
}
