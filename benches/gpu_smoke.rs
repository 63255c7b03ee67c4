//! GPU smoke benches (feature `cuda`): a few kernels through the safe launchers, timed by
//! criterion with a synchronize per iteration — a check that the path works end to end and
//! a coarse number. The real GPU table comes from examples/gpu_bench.rs (events, back-to-back
//! launches, L2-busting input rotation). Without a device it prints why and does nothing.
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use paradec::cuda::kernels;
use paradec::cuda::{self, CudaStream};
use paradec::vocab::Activation;
use paradec::vocab::Affine;
use paradec::vocab::NormKind;
use paradec::{DType, Device, Tensor};

fn dev(vals: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_f32_as(vals, shape, DType::F16)
        .unwrap()
        .to_device(Device::Cuda(0))
        .unwrap()
}

fn smoke(c: &mut Criterion) {
    if let Err(e) = cuda::device_count() {
        eprintln!("gpu_smoke: skipped: no CUDA device ({e})");
        return;
    }
    let s = CudaStream::new(0).unwrap();
    let mut g = c.benchmark_group("gpu_smoke");
    g.warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    let (rows, cols) = (64usize, 4096usize);
    let vals: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let x = dev(&vals, &[rows, cols]);
    let w = dev(&vals[..cols], &[cols]);
    let mut out = dev(&vals, &[rows, cols]);
    g.bench_function("rms_norm_64x4096_f16", |b| {
        b.iter(|| {
            let aff = Affine {
                weight: Some(&w),
                bias: None,
            };
            kernels::norm(NormKind::RmsNorm, &x, rows, cols, aff, 1e-5, &mut out, &s).unwrap();
            s.synchronize().unwrap();
        })
    });
    let up = dev(&vals, &[rows, cols]);
    g.bench_function("silu_mul_64x4096_f16", |b| {
        b.iter(|| {
            kernels::act_mul(Activation::Silu, &x, &up, &mut out, &s).unwrap();
            s.synchronize().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, smoke);
criterion_main!(benches);
