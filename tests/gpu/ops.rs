//! The `ops` dispatch on CUDA tensors: each op wired to a kernel gives the CPU reference's
//! result (same rounded inputs) — the attention branch included — needs a CUDA stream, and ops
//! without a kernel yet — and a model moved to the GPU — fail with a clear error instead of
//! crashing.
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

/// The attention branch through `ops` on CUDA tensors — split, q/k norms, rotary + cache write,
/// attention over a cache with a past — against the same calls on the host.
#[test]
fn attention_branch_ops_match_the_cpu() {
    use paradec::vocab::{AttnMasking, AttnShape, CacheSlots, QkvLayout, RopeStyle, RotaryArgs};
    let Some(s) = stream("attention_branch_ops_match_the_cpu") else {
        return;
    };
    let host = Stream::Host;
    let mut rng = Rng::new(7);
    let (heads, kv, d) = (8usize, 2usize, 64usize);
    for dtype in [DType::F16, DType::BF16] {
        let budget = if dtype == DType::F16 { 4e-3 } else { 2.5e-2 };
        for (batch, q_len, past) in [(2usize, 1usize, [9usize, 30]), (1, 40, [5, 5])] {
            let past = &past[..batch];
            let t = batch * q_len;
            let cap = 48;
            let width = (heads + 2 * kv) * d;
            let (fh, fd) = pair(&mut rng, &[t, width], dtype);
            let (wh, wd) = pair(&mut rng, &[heads, d], dtype);
            let (bh, bd) = pair(&mut rng, &[d], dtype);
            let (ckh0, ckd0) = pair(&mut rng, &[batch, cap, kv * d], dtype);
            let (cvh0, cvd0) = pair(&mut rng, &[batch, cap, kv * d], dtype);
            let inv: Vec<f32> = (0..d / 4)
                .map(|j| 1.0 / 10000f32.powf(j as f32 / 16.0))
                .collect();
            let rot = RotaryArgs {
                style: RopeStyle::Half,
                rot_dim: d / 2,
                inv_freq: &inv,
                attn_factor: 1.0,
            };
            let positions: Vec<i64> = (0..batch)
                .flat_map(|b| (0..q_len).map(move |i| (past[b] + i) as i64))
                .collect();
            let slots = CacheSlots {
                batch,
                q_len,
                capacity: cap,
                past_len: past,
            };
            let shape = AttnShape {
                batch,
                q_len,
                heads,
                kv_heads: kv,
                head_dim: d,
                capacity: cap,
            };
            let mask: Vec<f32> = (0..batch * cap)
                .map(|i| if i % cap < 2 { f32::NEG_INFINITY } else { 0.0 })
                .collect();
            let masking = AttnMasking {
                past_len: past,
                window: 0,
                mask: Some(&mask),
                mask_stride: cap,
            };
            let mut outs = Vec::new();
            for (st, dev) in [(&host, Device::Cpu), (&s, Device::Cuda(0))] {
                let on = |x: &Tensor| x.to_device(dev).unwrap();
                let f = if dev == Device::Cpu {
                    fh.try_clone().unwrap()
                } else {
                    fd.try_clone().unwrap()
                };
                let (w, b) = if dev == Device::Cpu {
                    (on(&wh), on(&bh))
                } else {
                    (on(&wd), on(&bd))
                };
                let (mut ck, mut cv) = if dev == Device::Cpu {
                    (ckh0.try_clone().unwrap(), cvh0.try_clone().unwrap())
                } else {
                    (ckd0.try_clone().unwrap(), cvd0.try_clone().unwrap())
                };
                let z = |n: usize| Tensor::zeros(&[t, n], dtype, dev).unwrap();
                let (mut q, mut k, mut v) = (z(heads * d), z(kv * d), z(kv * d));
                let mut ws = paradec::Workspace::new(dev, dtype).unwrap();
                ops::split_qkv(
                    st,
                    QkvLayout::FusedGrouped,
                    &f,
                    heads,
                    kv,
                    d,
                    &mut q,
                    &mut k,
                    &mut v,
                )
                .unwrap();
                let aff = Affine {
                    weight: Some(&w),
                    bias: None,
                };
                ops::head_norm(st, NormKind::LayerNorm, &mut q, heads, d, &aff, 1e-5).unwrap();
                let aff = Affine {
                    weight: None,
                    bias: Some(&b),
                };
                ops::head_norm(st, NormKind::LayerNorm, &mut k, kv, d, &aff, 1e-5).unwrap();
                ops::rotary_and_cache_write(
                    st,
                    &mut ws,
                    &mut q,
                    &mut k,
                    &v,
                    heads,
                    kv,
                    d,
                    &positions,
                    Some(&rot),
                    &slots,
                    &mut ck,
                    &mut cv,
                )
                .unwrap();
                let mut out = z(heads * d);
                ops::attention(st, &mut ws, &q, &ck, &cv, &shape, &masking, 0.125, &mut out)
                    .unwrap();
                outs.push(out.to_host().unwrap());
            }
            close(
                &outs[1],
                &outs[0],
                budget,
                &format!("attention branch {dtype} b{batch} q{q_len}"),
            );
        }
    }
}
