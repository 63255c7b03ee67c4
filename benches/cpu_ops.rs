//! Criterion benches of the CPU reference ops (norm, rotary, attention, linear, activation) at a
//! few sizes, with short measurement times: the CPU path is the oracle and the no-GPU backend,
//! so this tracks that it stays usable, not that it is fast.
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use paradec::cpu::activation::act_mul;
use paradec::cpu::attention::attention;
use paradec::cpu::linear::linear;
use paradec::cpu::norm::{norm, NormAffine};
use paradec::cpu::rope::apply_rotary;
use paradec::vocab::{Activation, AttnMasking, AttnShape, NormKind, RopeStyle, RotaryArgs};

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect()
}

fn short(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("cpu");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    g
}

fn bench_norm(c: &mut Criterion) {
    let mut g = short(c);
    for &(rows, cols) in &[(1usize, 4096usize), (64, 4096), (16, 8192)] {
        let x = values(rows * cols, 1);
        let w = values(cols, 2);
        let b = values(cols, 3);
        let mut out = vec![0f32; rows * cols];
        g.throughput(Throughput::Elements((rows * cols) as u64));
        for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
            g.bench_with_input(
                BenchmarkId::new(format!("{kind:?}"), format!("{rows}x{cols}")),
                &(),
                |bch, _| {
                    bch.iter(|| {
                        let aff = NormAffine {
                            weight: Some(&w),
                            bias: Some(&b),
                        };
                        norm(kind, &x, rows, cols, aff, 1e-5, &mut out)
                    })
                },
            );
        }
    }
    g.finish();
}

fn bench_rope(c: &mut Criterion) {
    let mut g = short(c);
    let (heads, d) = (32usize, 128usize);
    let inv: Vec<f32> = (0..d / 2)
        .map(|j| 1.0 / 10000f32.powf(2.0 * j as f32 / d as f32))
        .collect();
    for &tokens in &[1usize, 64] {
        let mut x = values(tokens * heads * d, 4);
        let pos: Vec<i64> = (0..tokens as i64).map(|t| 1000 + t).collect();
        g.throughput(Throughput::Elements((tokens * heads * d) as u64));
        for style in [RopeStyle::Interleaved, RopeStyle::Half] {
            let r = RotaryArgs {
                style,
                rot_dim: d,
                inv_freq: &inv,
                attn_factor: 1.0,
            };
            g.bench_function(
                BenchmarkId::new(format!("rope_{style:?}"), format!("{tokens}x{heads}x{d}")),
                |b| b.iter(|| apply_rotary(&mut x, tokens, heads, d, &pos, &r)),
            );
        }
    }
    g.finish();
}

fn bench_attention(c: &mut Criterion) {
    let mut g = short(c);
    let (heads, kv_heads, d) = (8usize, 2usize, 64usize);
    for &(q_len, past) in &[(1usize, 1023usize), (16, 240)] {
        let cap = past + q_len;
        let s = AttnShape {
            batch: 1,
            q_len,
            heads,
            kv_heads,
            head_dim: d,
            capacity: cap,
        };
        let q = values(q_len * heads * d, 5);
        let k = values(cap * kv_heads * d, 6);
        let v = values(cap * kv_heads * d, 7);
        let mut out = vec![0f32; q_len * heads * d];
        let past_len = [past];
        let m = AttnMasking {
            past_len: &past_len,
            window: 0,
            mask: None,
            mask_stride: 0,
        };
        g.bench_function(
            BenchmarkId::new("attention", format!("q{q_len}_kv{cap}_h{heads}/{kv_heads}")),
            |b| b.iter(|| attention(&q, &k, &v, &s, &m, 0.125, &mut out)),
        );
    }
    g.finish();
}

fn bench_linear(c: &mut Criterion) {
    let mut g = short(c);
    for &(m, k, n) in &[(1usize, 1024usize, 1024usize), (8, 1024, 1024)] {
        let x = values(m * k, 8);
        let w: Vec<f16> = values(n * k, 9).iter().map(|&v| f16::from_f32(v)).collect();
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((m * k * n) as u64));
        g.bench_function(
            BenchmarkId::new("linear_f16", format!("{m}x{k}x{n}")),
            |b| b.iter(|| linear(&x, m, k, &w, n, None, &mut out, false)),
        );
    }
    g.finish();
}

fn bench_activation(c: &mut Criterion) {
    let mut g = short(c);
    let n = 64 * 4096;
    let gate = values(n, 10);
    let up = values(n, 11);
    let mut out = vec![0f32; n];
    g.throughput(Throughput::Elements(n as u64));
    for act in [Activation::GeluErf, Activation::GeluNew, Activation::Silu] {
        g.bench_function(BenchmarkId::new(format!("act_mul_{act:?}"), n), |b| {
            b.iter(|| act_mul(act, &gate, &up, &mut out))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_norm,
    bench_rope,
    bench_attention,
    bench_linear,
    bench_activation
);
criterion_main!(benches);
