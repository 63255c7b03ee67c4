//! GPU linears (dense, GPTQ, EXL2, LoRA) against the CPU reference, on every kernel path.

use super::*;
use paradec::layers::linear::Linear;
use paradec::layers::lora::LoraAdapter;
use paradec::ops;
use paradec::quant::pack::{exl2_weight, gptq_weight, load_packed, pack_gptq, Exl2Recipe};
use paradec::quant::{GptqConfig, PreparedQuant, QuantConfig, QuantLayout, QuantWeight};
use paradec::vocab::LinearPath;
use paradec::{Stream, Workspace};

const MS: [usize; 12] = [1, 2, 3, 7, 8, 16, 31, 32, 33, 64, 257, 2048];

fn ms() -> Vec<usize> {
    if small() {
        vec![1, 3, 8, 33]
    } else {
        MS.to_vec()
    }
}

type PathChoice = Option<(LinearPath, Option<usize>)>;

/// The paths a test runs: each forced (the streaming paths unsplit and split) and the automatic
/// choice. The small-M path, forced on a weight it does not take (other widths, M > 32), runs
/// the launcher's own choice.
fn paths() -> Vec<PathChoice> {
    vec![
        Some((LinearPath::Gemv, Some(1))),
        Some((LinearPath::Gemv, Some(3))),
        Some((LinearPath::Mma, None)),
        Some((LinearPath::Small, Some(1))),
        Some((LinearPath::Small, Some(3))),
        Some((LinearPath::SmallLean, Some(1))),
        Some((LinearPath::SmallLean, Some(3))),
        Some((LinearPath::SmallStream, Some(5))),
        Some((LinearPath::Wgmma, None)),
        None,
    ]
}

fn path_name(p: PathChoice) -> String {
    match p {
        Some((LinearPath::Gemv, s)) => format!("gemv/{}", s.unwrap_or(0)),
        Some((LinearPath::Small, s)) => format!("small/{}", s.unwrap_or(0)),
        Some((LinearPath::SmallLean, s)) => format!("lean/{}", s.unwrap_or(0)),
        Some((LinearPath::SmallStream, s)) => format!("stream/{}", s.unwrap_or(0)),
        Some((LinearPath::Vendor, _)) => "vendor".into(),
        Some((LinearPath::Mma, _)) => "mma".into(),
        Some((LinearPath::Wgmma, s)) => format!("wgmma/{}", s.unwrap_or(0)),
        None => "auto".into(),
    }
}

/// Runs `x · Wᵀ (+ bias)` of a quantized weight on the GPU for every path and M and compares
/// with `QuantWeight::forward` on the same (rounded) inputs; accumulate mode adds onto a random
/// existing output exactly once.
fn check_quant(what: &str, w: &QuantWeight, dtype: DType, seed: u64) {
    check_quant_on(what, w, dtype, seed, &ms(), &paths());
}

/// `check_quant` over the given row counts and paths; returns the largest relative error seen.
fn check_quant_on(
    what: &str,
    w: &QuantWeight,
    dtype: DType,
    seed: u64,
    ms: &[usize],
    paths: &[PathChoice],
) -> f64 {
    let mut worst = 0f64;
    let Some(s) = gpu_stream(what) else {
        return worst;
    };
    let s = Stream::Cuda(s);
    let (k, n) = (w.in_features(), w.out_features());
    let pw = PreparedQuant::new(w, Device::Cuda(0), dtype).unwrap();
    let mut ws = Workspace::new(Device::Cuda(0), dtype).unwrap();
    let mut rng = Rng::new(seed);
    for &m in ms {
        // The streaming paths are for small M: at large M only the tensor cores and auto run.
        let (xd, xr) = upload(&rng.vec(m * k, -1.0, 1.0), &[m, k], dtype);
        for &p in paths {
            if m > 64
                && matches!(
                    p,
                    Some((
                        LinearPath::Gemv
                            | LinearPath::Small
                            | LinearPath::SmallLean
                            | LinearPath::SmallStream,
                        _
                    ))
                )
            {
                continue;
            }
            ops::set_linear_override(p);
            for accumulate in [false, true] {
                let (mut out, mut want) = if accumulate {
                    let (o, r) = upload(&rng.vec(m * n, -1.0, 1.0), &[m, n], dtype);
                    (o, r)
                } else {
                    (poisoned(&[m, n], dtype), vec![0.0; m * n])
                };
                w.forward(&xr, m, &mut want, accumulate).unwrap();
                ops::prepared_linear(&s, &mut ws, &xd, &pw, &mut out, accumulate).unwrap();
                let got = download(&out);
                worst = worst.max(rel_err(&got, &want));
                assert_close(
                    &format!("{what} m={m} {} acc={accumulate}", path_name(p)),
                    dtype,
                    &got,
                    &want,
                );
            }
            ops::set_linear_override(None);
        }
    }
    worst
}

fn gptq(bits: u32, gs: i64, act: bool, v2: bool, n: usize, k: usize, seed: u64) -> QuantWeight {
    let mut rng = Rng::new(seed);
    let wv = rng.vec(n * k, -1.0, 1.0);
    let bias = rng.vec(n, -0.5, 0.5);
    let cfg = GptqConfig {
        bits,
        group_size: gs,
        desc_act: act,
        sym: false,
        checkpoint_format_v2: v2,
    };
    gptq_weight(&wv, n, k, &cfg, seed.is_multiple_of(2).then_some(&bias[..])).unwrap()
}

#[test]
fn gptq_every_width_group_and_zero_convention() {
    let cases: Vec<(u32, i64, bool, bool, usize, usize)> = if small() {
        vec![(4, 128, true, false, 72, 256), (3, 32, false, true, 67, 96)]
    } else {
        vec![
            (4, 128, false, false, 136, 256),
            (4, 128, true, false, 67, 512),
            (4, 32, false, true, 40, 200),
            (3, 128, false, false, 72, 384),
            (3, 48, true, true, 67, 150),
            (2, 64, true, false, 64, 256),
            (2, -1, false, true, 9, 100),
            (8, 128, false, false, 130, 256),
            (8, 128, true, true, 33, 384),
            (8, -1, false, false, 16, 37),
        ]
    };
    for (i, &(bits, gs, act, v2, n, k)) in cases.iter().enumerate() {
        let w = gptq(bits, gs, act, v2, n, k, i as u64);
        for dt in DTYPES {
            check_quant(
                &format!("gptq{bits} g{gs} act={act} v2={v2} {k}x{n}"),
                &w,
                dt,
                100 + i as u64,
            );
        }
    }
}

/// The tensor-core small-M path (uniform 4-bit, M ≤ 32) on GPTQ-4 with and without act-order,
/// classic and v2 zeros, groups that do and do not fill whole tiles, K that is not a whole
/// number of groups, odd N, bias and accumulate; and EXL2-4 with its permutation. Split 1, an
/// uneven split and the automatic one, on both loops (ring and lean); the stream loop on one
/// block, on grids whose blocks share column blocks unevenly and on the automatic grid (past 16
/// rows it runs the lean loop's fallback); a split run repeated gives the same bits.
#[test]
fn small_m_path_gptq4_and_exl2_4() {
    let ms: Vec<usize> = if small() {
        vec![1, 3, 8, 16, 32]
    } else {
        vec![1, 2, 3, 7, 8, 16, 31, 32]
    };
    let paths = [
        Some((LinearPath::Small, Some(1))),
        Some((LinearPath::Small, Some(3))),
        Some((LinearPath::Small, None)),
        Some((LinearPath::SmallLean, Some(1))),
        Some((LinearPath::SmallLean, Some(3))),
        Some((LinearPath::SmallLean, None)),
        Some((LinearPath::SmallStream, Some(1))),
        Some((LinearPath::SmallStream, Some(3))),
        Some((LinearPath::SmallStream, Some(7))),
        Some((LinearPath::SmallStream, None)),
    ];
    let mut weights: Vec<(String, QuantWeight)> = Vec::new();
    let gptq_cases: Vec<(i64, bool, bool, usize, usize)> = if small() {
        vec![(128, true, false, 67, 512), (32, false, true, 40, 200)]
    } else {
        vec![
            (128, false, false, 136, 256),
            (128, true, false, 67, 512),
            (128, false, true, 33, 1000),
            (32, false, true, 40, 200),
            (64, true, true, 9, 320),
            (-1, false, false, 17, 100),
            (128, true, true, 264, 1408),
        ]
    };
    for (i, &(gs, act, v2, n, k)) in gptq_cases.iter().enumerate() {
        weights.push((
            format!("gptq4 g{gs} act={act} v2={v2} {k}x{n}"),
            gptq(4, gs, act, v2, n, k, 300 + i as u64),
        ));
    }
    let exl2_cases: Vec<(usize, bool, usize, usize)> = if small() {
        vec![(128, true, 67, 384)]
    } else {
        vec![(128, false, 64, 256), (128, true, 67, 384), (32, true, 31, 200)]
    };
    for (i, &(gs, permute, n, k)) in exl2_cases.iter().enumerate() {
        let mut rng = Rng::new(400 + i as u64);
        let wv = rng.vec(n * k, -1.0, 1.0);
        let bias = rng.vec(n, -0.5, 0.5);
        let r = Exl2Recipe {
            parts: vec![(4, gs, 1.0)],
            permute,
        };
        let w = exl2_weight(&wv, n, k, &r, (i % 2 == 0).then_some(&bias[..])).unwrap();
        weights.push((format!("exl2-4 g{gs} permute={permute} {k}x{n}"), w));
    }
    if gpu_stream("small_m_path_gptq4_and_exl2_4").is_none() {
        return;
    }
    let mut worst = [0f64; 2];
    for (i, (what, w)) in weights.iter().enumerate() {
        for (d, dt) in DTYPES.into_iter().enumerate() {
            let pw = PreparedQuant::new(w, Device::Cuda(0), dt).unwrap();
            // The path really runs: every tile is 4-bit, which the launcher takes at M ≤ 32.
            assert_eq!(pw.bits, 4, "{what}");
            let fmt = ops::LinearFormat::Quant { bits: pw.bits };
            let plan = ops::select_linear(1, w.in_features(), w.out_features(), fmt, 132, (9, 0));
            assert_eq!(plan.path, LinearPath::SmallLean, "{what}");
            let e = check_quant_on(what, w, dt, 500 + i as u64, &ms, &paths);
            worst[d] = worst[d].max(e);
            check_deterministic(what, w, &pw, dt);
        }
    }
    eprintln!(
        "small_m_path: {} weights, worst relative error f16 {:.2e}, bf16 {:.2e}",
        weights.len(),
        worst[0],
        worst[1]
    );
}

/// The lean and stream loops stage a block's scales by the groups they expect from its first
/// tile when the tiles divide evenly into the groups; a GPTQ act-order weight whose groups have
/// unequal rows (here 64, 192, 96 and 160 of K = 512: 2, 6, 3 and 5 tiles, 16 tiles for 4
/// groups) breaks that guess, so a block's group starts outside the staged groups load their
/// own scales. Results must not change: forced K splits of 1, 2, 3 and 5 (ranges that start and
/// end inside groups), the stream loop on 3 and 7 blocks, the ring loop, and the automatic path.
#[test]
fn lean_loop_groups_of_unequal_rows() {
    let (n, k) = (136, 512);
    let sizes = [64usize, 192, 96, 160];
    let mut rng = Rng::new(77);
    let wv = rng.vec(n * k, -1.0, 1.0);
    let bias = rng.vec(n, -0.5, 0.5);
    // Group g takes `sizes[g]` rows, scattered over K (act-order): row r's group by a shuffle.
    let mut g_idx: Vec<i32> = sizes
        .iter()
        .enumerate()
        .flat_map(|(g, &rows)| std::iter::repeat_n(g as i32, rows))
        .collect();
    for i in (1..g_idx.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        g_idx.swap(i, j);
    }
    let cfg = GptqConfig {
        bits: 4,
        group_size: 128,
        desc_act: true,
        sym: false,
        checkpoint_format_v2: false,
    };
    let t = pack_gptq(&wv, n, k, &cfg, Some(&g_idx), Some(&bias), "w").unwrap();
    let w = load_packed(&t, "w", k, n, &QuantConfig::Gptq(cfg)).unwrap();
    // 16 tiles in 4 groups: the kernels' guess (4 tiles a group) is wrong for 3 of them.
    let layout = QuantLayout::new(&w).unwrap();
    assert_eq!((layout.bits, layout.ntiles, layout.groups), (4, 16, 4));
    let tile_groups: Vec<usize> = (0..16).map(|t| layout.tile(t).1).collect();
    assert_eq!(tile_groups, [0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]);
    if gpu_stream("lean_loop_groups_of_unequal_rows").is_none() {
        return;
    }
    let paths = [
        Some((LinearPath::SmallLean, Some(1))),
        Some((LinearPath::SmallLean, Some(2))),
        Some((LinearPath::SmallLean, Some(3))),
        Some((LinearPath::SmallLean, Some(5))),
        Some((LinearPath::SmallStream, Some(3))),
        Some((LinearPath::SmallStream, Some(7))),
        Some((LinearPath::Small, Some(2))),
        None,
    ];
    for (d, dt) in DTYPES.into_iter().enumerate() {
        let pw = PreparedQuant::new(&w, Device::Cuda(0), dt).unwrap();
        check_quant_on("gptq4 unequal groups", &w, dt, 90 + d as u64, &[1, 3, 8, 16], &paths);
        check_deterministic("gptq4 unequal groups", &w, &pw, dt);
    }
}

/// The wgmma GEMM (weights of one width, on Hopper) with each of its row tiles (32, 64, 128 and
/// 256 rows of x per block, and the launcher's choice) at M from 1 to 700: GPTQ-4 with and
/// without act-order, classic and v2 zeros, groups of 32 and 128, N that fills no whole column
/// block; GPTQ-8; EXL2 of each width (2, 3, 4, 5, 6, 8) with and without its permutation; bias
/// and accumulate; K split over 2–4 blocks at 32 and 64 rows where the tiles leave SMs idle
/// (every weight here but the 128-row K), the same bits twice. K is a whole number of 64-row steps (the
/// kernel's condition; others run the mma.sync tiles, tested above).
#[test]
fn wgmma_path_every_row_tile() {
    let ms: Vec<usize> = if small() {
        vec![1, 17, 33, 130]
    } else {
        vec![1, 5, 17, 32, 33, 64, 100, 128, 257, 700]
    };
    let paths = [
        Some((LinearPath::Wgmma, Some(32))),
        Some((LinearPath::Wgmma, Some(64))),
        Some((LinearPath::Wgmma, Some(128))),
        Some((LinearPath::Wgmma, Some(256))),
        Some((LinearPath::Wgmma, None)),
    ];
    let mut weights: Vec<(String, QuantWeight)> = Vec::new();
    let gptq_cases: Vec<(u32, i64, bool, bool, usize, usize)> = if small() {
        vec![(4, 128, true, false, 264, 512), (8, 128, false, false, 130, 256)]
    } else {
        vec![
            (4, 128, false, false, 136, 256),
            (4, 128, true, false, 264, 512),
            (4, 32, false, true, 67, 192),
            (8, 128, false, false, 130, 256),
            (8, 64, true, true, 33, 384),
        ]
    };
    for (i, &(bits, gs, act, v2, n, k)) in gptq_cases.iter().enumerate() {
        weights.push((
            format!("gptq{bits} g{gs} act={act} v2={v2} {k}x{n}"),
            gptq(bits, gs, act, v2, n, k, 700 + i as u64),
        ));
    }
    let exl2_cases: &[(u32, bool, usize, usize)] = if small() {
        &[(4, true, 67, 384), (3, true, 40, 256)]
    } else {
        &[
            (4, true, 67, 384),
            (8, true, 40, 256),
            (4, false, 256, 128),
            (3, true, 72, 256),
            (5, false, 33, 128),
            (6, true, 130, 384),
            (2, true, 64, 256),
        ]
    };
    for (i, &(bits, permute, n, k)) in exl2_cases.iter().enumerate() {
        let mut rng = Rng::new(750 + i as u64);
        let wv = rng.vec(n * k, -1.0, 1.0);
        let bias = rng.vec(n, -0.5, 0.5);
        let r = Exl2Recipe {
            parts: vec![(bits, 128, 1.0)],
            permute,
        };
        let w = exl2_weight(&wv, n, k, &r, (i % 2 == 0).then_some(&bias[..])).unwrap();
        weights.push((format!("exl2-{bits} permute={permute} {k}x{n}"), w));
    }
    if gpu_stream("wgmma_path_every_row_tile").is_none() {
        return;
    }
    let hopper = paradec::cuda::properties(0).unwrap().compute_capability == (9, 0);
    eprintln!(
        "wgmma_path: kernel available {} (device is {}sm_90)",
        paradec::cuda::kernels::wgmma_available(),
        if hopper { "" } else { "not " }
    );
    let mut worst = [0f64; 2];
    for (i, (what, w)) in weights.iter().enumerate() {
        for (d, dt) in DTYPES.into_iter().enumerate() {
            let pw = PreparedQuant::new(w, Device::Cuda(0), dt).unwrap();
            // The kernel's condition holds: one width, whole 64-row steps.
            assert!(pw.bits != 0 && pw.kp.is_multiple_of(64), "{what}");
            let e = check_quant_on(what, w, dt, 800 + i as u64, &ms, &paths);
            worst[d] = worst[d].max(e);
            // K split where the tiles leave SMs idle (these small weights always do): its
            // partials are summed in split order, so a run repeated gives the same bits.
            let Some(cs) = gpu_stream(what) else { continue };
            let s = Stream::Cuda(cs);
            let mut ws = Workspace::new(Device::Cuda(0), dt).unwrap();
            let mut rng = Rng::new(31 + i as u64);
            let m = 40;
            let (xd, _) = upload(&rng.vec(m * w.in_features(), -1.0, 1.0), &[m, w.in_features()], dt);
            ops::set_linear_override(Some((LinearPath::Wgmma, Some(64))));
            let runs: Vec<Vec<u32>> = (0..2)
                .map(|_| {
                    let mut out = poisoned(&[m, w.out_features()], dt);
                    ops::prepared_linear(&s, &mut ws, &xd, &pw, &mut out, false).unwrap();
                    download(&out).iter().map(|v| v.to_bits()).collect()
                })
                .collect();
            ops::set_linear_override(None);
            assert_eq!(runs[0], runs[1], "{what} {dt}: wgmma runs differ");
        }
    }
    eprintln!(
        "wgmma_path: {} weights, worst relative error f16 {:.2e}, bf16 {:.2e}",
        weights.len(),
        worst[0],
        worst[1]
    );
}

fn weight_args(p: &PreparedQuant) -> paradec::cuda::kernels::QuantWeightArgs<'_> {
    paradec::cuda::kernels::QuantWeightArgs::of(p)
}

/// Several 4-bit linears of three inputs (as a block's q/k/v and MLP input projections over two
/// norms) in one grouped launch: every output equal to the bit to the same weight run alone on
/// the small-M path, with the same K split (on the stream loop, where the group shares its
/// blocks across calls, equal within rounding), or on the warpgroup-MMA path (its one grid plans
/// the calls' K splits together: within rounding, the same bits twice); and
/// the op that picks the grouped launch gives the same.
#[test]
fn grouped_small_m_launch_equals_each_alone() {
    let Some(cs) = gpu_stream("grouped_small_m") else {
        return;
    };
    let s = Stream::Cuda(cs);
    let Stream::Cuda(cs) = &s else { unreachable!() };
    // (weight, which input): K 512 for input 0, 320 for input 1.
    let mut rng = Rng::new(77);
    let wv = rng.vec(64 * 512, -1.0, 1.0);
    let bias = rng.vec(64, -0.5, 0.5);
    let exl2 = exl2_weight(
        &wv,
        64,
        512,
        &Exl2Recipe {
            parts: vec![(4, 128, 1.0)],
            permute: true,
        },
        Some(&bias[..]),
    )
    .unwrap();
    let weights: Vec<(QuantWeight, usize)> = vec![
        (gptq(4, 128, true, false, 67, 512, 601), 0),
        (gptq(4, 128, false, true, 136, 512, 602), 0),
        (exl2, 0),
        (gptq(4, 64, true, true, 9, 320, 604), 1),
        (gptq(4, -1, false, false, 40, 320, 605), 1),
        // K 4096: at 17–32 rows the warpgroup MMA's one grid splits it more than it splits
        // alone (its 64 K steps would run on after the short calls' blocks).
        (gptq(4, 128, false, false, 40, 4096, 606), 2),
    ];
    let ks = [512usize, 320, 4096];
    let ms: Vec<usize> = if small() { vec![1, 17] } else { vec![1, 3, 8, 17, 32] };
    for dt in DTYPES {
        let pws: Vec<PreparedQuant> = weights
            .iter()
            .map(|(w, _)| PreparedQuant::new(w, Device::Cuda(0), dt).unwrap())
            .collect();
        let mut ws = Workspace::new(Device::Cuda(0), dt).unwrap();
        // Split counters kept zero between calls: the single calls of the lean loop and the
        // grouped calls of the ring loop count there (the others zero their own per call), and
        // every call must leave them zero.
        let mut kept = paradec::cuda::DeviceBuffer::zeroed(0, 4096 * 4).unwrap();
        for &m in &ms {
            let xs: Vec<Tensor> = ks
                .iter()
                .map(|&k| upload(&rng.vec(m * k, -1.0, 1.0), &[m, k], dt).0)
                .collect();
            for (split, path) in [
                (1usize, LinearPath::Small),
                (3, LinearPath::Small),
                (1, LinearPath::SmallLean),
                (3, LinearPath::SmallLean),
                (3, LinearPath::SmallStream),
                (7, LinearPath::SmallStream),
                // The warpgroup-MMA GEMM (one grid for every call where it runs, else each
                // call alone): its own rows per block, and 32 and 64 forced.
                (1, LinearPath::Wgmma),
                (32, LinearPath::Wgmma),
                (64, LinearPath::Wgmma),
            ] {
                let lean = path == LinearPath::SmallLean;
                let stream = path == LinearPath::SmallStream;
                // Each alone.
                let mut alone = Vec::new();
                for (p, (_, xi)) in pws.iter().zip(&weights) {
                    let mut out = poisoned(&[m, p.n], dt);
                    let a = weight_args(p);
                    let need = a.scratch_bytes(dt, m, path, split);
                    let mut sc = Tensor::zeros(&[need.max(1)], DType::U8, Device::Cuda(0)).unwrap();
                    paradec::cuda::kernels::quant_linear(
                        &xs[*xi], m, &a, p.bias.as_ref(), &mut out, false, path, split,
                        Some(&mut sc), (lean || stream).then_some(&mut kept), cs,
                    )
                    .unwrap();
                    alone.push(download(&out));
                }
                // Together (the kept counters where the loop counts there).
                let together = |kept: Option<&mut paradec::cuda::DeviceBuffer>| {
                    let mut outs: Vec<Tensor> =
                        pws.iter().map(|p| poisoned(&[m, p.n], dt)).collect();
                    let mut calls: Vec<paradec::cuda::kernels::QuantLinearCall<'_>> = pws
                        .iter()
                        .zip(&weights)
                        .zip(outs.iter_mut())
                        .map(|((p, (_, xi)), out)| group_call(&xs[*xi], p, out, split, path, None))
                        .collect();
                    group_launch(dt, m, &mut calls, kept, cs);
                    drop(calls);
                    outs.iter().map(download).collect::<Vec<_>>()
                };
                let outs = together((!lean).then_some(&mut kept));
                // The warpgroup MMA's one grid plans its own K splits for the calls together
                // (equal within rounding to each alone, the same bits every time).
                let wgmma_grid = path == LinearPath::Wgmma;
                let again = if wgmma_grid { together(Some(&mut kept)) } else { Vec::new() };
                for (i, out) in outs.iter().enumerate() {
                    let what = format!("{dt} m={m} split={split} {path:?} call {i}");
                    if (stream && m <= 16) || wgmma_grid {
                        assert_close(&what, dt, out, &alone[i]);
                    } else {
                        assert_eq!(*out, alone[i], "{what}");
                    }
                    if wgmma_grid {
                        assert_eq!(*out, again[i], "{what}: two grouped runs differ");
                    }
                }
            }
            // The op: grouped where it applies, the same values as one call at a time (within
            // rounding up to 8 rows, where the group cuts every call's K in its own splits, and
            // past 16, where the warpgroup MMA's grid plans the calls' splits together).
            let mut outs: Vec<Tensor> = pws.iter().map(|p| poisoned(&[m, p.n], dt)).collect();
            {
                let mut calls: Vec<(&Tensor, &PreparedQuant, &mut Tensor)> = pws
                    .iter()
                    .zip(&weights)
                    .zip(outs.iter_mut())
                    .map(|((p, (_, xi)), out)| (&xs[*xi], p, out))
                    .collect();
                ops::prepared_linear_group(&s, &mut ws, &mut calls, &[]).unwrap();
            }
            for (i, (p, (_, xi))) in pws.iter().zip(&weights).enumerate() {
                let mut want = poisoned(&[m, p.n], dt);
                ops::prepared_linear(&s, &mut ws, &xs[*xi], p, &mut want, false).unwrap();
                let what = format!("{dt} m={m} op call {i}");
                if m <= 8 || m > 16 {
                    assert_close(&what, dt, &download(&outs[i]), &download(&want));
                } else {
                    assert_eq!(download(&outs[i]), download(&want), "{what}");
                }
            }
        }
        let left = kept.to_host_bytes().unwrap();
        assert!(
            left.iter().all(|&b| b == 0),
            "{dt}: the kept split counters were not left zero"
        );
    }
}

/// A call of a grouped launch: x · Wᵀ + bias of the prepared weight into `out` (no
/// accumulation), with this K split, path and activation.
fn group_call<'a>(
    x: &'a Tensor,
    p: &'a PreparedQuant,
    out: &'a mut Tensor,
    split: usize,
    path: LinearPath,
    act: Option<Activation>,
) -> paradec::cuda::kernels::QuantLinearCall<'a> {
    paradec::cuda::kernels::QuantLinearCall {
        x,
        w: weight_args(p),
        bias: p.bias.as_ref(),
        out,
        accumulate: false,
        split,
        path,
        act,
    }
}

/// One grouped launch of `calls` at m rows with its scratch (and kept split counters, if any).
fn group_launch(
    dt: DType,
    m: usize,
    calls: &mut [paradec::cuda::kernels::QuantLinearCall<'_>],
    kept: Option<&mut DeviceBuffer>,
    cs: &CudaStream,
) {
    let need = paradec::cuda::kernels::quant_linear_group_scratch(dt, m, calls);
    let mut sc = Tensor::zeros(&[need.max(1)], DType::U8, Device::Cuda(0)).unwrap();
    paradec::cuda::kernels::quant_linear_group(m, calls, Some(&mut sc), kept, cs).unwrap();
}

/// A grouped launch applies each call's activation to `x · Wᵀ + bias` as it stores it (an MLP's
/// first projection): every activation, on the ring, lean and stream loops, split and unsplit,
/// beside a call without one, against the CPU reference `act(x · Wᵀ + b)`; and the op gives the
/// same, grouped or (a forced path off the small-M path) one call at a time.
#[test]
fn grouped_launch_applies_activations_as_it_stores() {
    let Some(cs) = gpu_stream("grouped_activation") else {
        return;
    };
    let s = Stream::Cuda(cs);
    let Stream::Cuda(cs) = &s else { unreachable!() };
    let acts = [
        Activation::GeluErf,
        Activation::GeluNew,
        Activation::GeluFast,
        Activation::Silu,
        Activation::Relu,
    ];
    let k = 512;
    // Call 0 (act-order, odd N, with a bias) takes the activation; call 1 none.
    let weights = [
        gptq(4, 128, true, false, 67, k, 611),
        gptq(4, 64, false, true, 136, k, 612),
    ];
    let ms: Vec<usize> = if small() { vec![1, 17] } else { vec![1, 3, 8, 17, 32] };
    let mut rng = Rng::new(78);
    for dt in DTYPES {
        let pws: Vec<PreparedQuant> = weights
            .iter()
            .map(|w| PreparedQuant::new(w, Device::Cuda(0), dt).unwrap())
            .collect();
        let mut ws = Workspace::new(Device::Cuda(0), dt).unwrap();
        for &m in &ms {
            let (xd, xr) = upload(&rng.vec(m * k, -2.0, 2.0), &[m, k], dt);
            for (ai, &act) in acts.iter().enumerate() {
                let want: Vec<Vec<f32>> = weights
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let mut y = vec![0.0; m * w.out_features()];
                        w.forward(&xr, m, &mut y, false).unwrap();
                        if i == 0 {
                            cpu::activation::activate(act, &mut y);
                        }
                        y
                    })
                    .collect();
                // Every loop for the first activation, the lean loop for the others.
                let paths: &[(usize, LinearPath)] = if ai == 0 {
                    &[
                        (1, LinearPath::Small),
                        (3, LinearPath::Small),
                        (1, LinearPath::SmallLean),
                        (3, LinearPath::SmallLean),
                        (5, LinearPath::SmallStream),
                    ]
                } else {
                    &[(3, LinearPath::SmallLean)]
                };
                for &(split, path) in paths {
                    let mut outs: Vec<Tensor> =
                        pws.iter().map(|p| poisoned(&[m, p.n], dt)).collect();
                    {
                        let mut calls: Vec<paradec::cuda::kernels::QuantLinearCall<'_>> = pws
                            .iter()
                            .zip(outs.iter_mut())
                            .enumerate()
                            .map(|(i, (p, out))| {
                                group_call(&xd, p, out, split, path, (i == 0).then_some(act))
                            })
                            .collect();
                        group_launch(dt, m, &mut calls, None, cs);
                    }
                    for (i, out) in outs.iter().enumerate() {
                        let what = format!("{act:?} m={m} split={split} {path:?} call {i}");
                        assert_close(&what, dt, &download(out), &want[i]);
                    }
                }
                // The op, grouped (automatic path) and one call at a time (the GEMV forced).
                for forced in [None, Some((LinearPath::Gemv, None))] {
                    ops::set_linear_override(forced);
                    let mut outs: Vec<Tensor> =
                        pws.iter().map(|p| poisoned(&[m, p.n], dt)).collect();
                    {
                        let mut calls: Vec<(&Tensor, &PreparedQuant, &mut Tensor)> = pws
                            .iter()
                            .zip(outs.iter_mut())
                            .map(|(p, out)| (&xd, p, out))
                            .collect();
                        ops::prepared_linear_group(&s, &mut ws, &mut calls, &[Some(act), None])
                            .unwrap();
                    }
                    ops::set_linear_override(None);
                    for (i, out) in outs.iter().enumerate() {
                        let what = format!("{act:?} m={m} op {forced:?} call {i}");
                        assert_close(&what, dt, &download(out), &want[i]);
                    }
                }
            }
        }
    }
    // A count of activations other than the calls' is refused, naming both.
    let dt = DTYPES[0];
    let mut ws = Workspace::new(Device::Cuda(0), dt).unwrap();
    let pw = PreparedQuant::new(&weights[0], Device::Cuda(0), dt).unwrap();
    let (xd, _) = upload(&rng.vec(k, -1.0, 1.0), &[1, k], dt);
    let mut out = poisoned(&[1, pw.n], dt);
    let mut calls = vec![(&xd, &pw, &mut out)];
    let e = ops::prepared_linear_group(&s, &mut ws, &mut calls, &[None, None]).unwrap_err();
    assert!(e.to_string().contains("2 activations for 1 calls"), "{e}");
}

/// 4-bit linears of one N summed into one output in one launch (a parallel block's
/// `x += attn · W_oᵀ + act · W_downᵀ`): against the CPU reference (each weight's product, the
/// summed bias, the existing output once), on the lean and ring loops and the warpgroup MMA
/// (one grid, or its terms one at a time where a K is not whole 64-row steps), with gathered
/// inputs (act-order, EXL2's permutation) and several splits per term; the same bits twice; the op
/// equal to two accumulating calls within rounding, declining past 32 rows without touching
/// the output; the kept counters left zero.
#[test]
fn summed_small_m_launch_matches_cpu() {
    let Some(cs) = gpu_stream("summed_small_m") else {
        return;
    };
    let s = Stream::Cuda(cs);
    let Stream::Cuda(cs) = &s else { unreachable!() };
    let n = 72;
    let mut rng = Rng::new(91);
    let wv = rng.vec(n * 320, -1.0, 1.0);
    let exl2 = exl2_weight(
        &wv,
        n,
        320,
        &Exl2Recipe {
            parts: vec![(4, 128, 1.0)],
            permute: true,
        },
        None,
    )
    .unwrap();
    // Odd seeds: no bias of their own (the sum's bias is its own argument).
    let weights = [
        gptq(4, 128, true, false, n, 512, 611),
        exl2,
        // K 4096: the warpgroup MMA's one grid splits it more than it splits alone.
        gptq(4, 128, false, false, n, 4096, 615),
        gptq(4, 64, false, true, n, 96, 613),
    ];
    let ms: Vec<usize> = if small() { vec![1, 17] } else { vec![1, 3, 8, 16, 17, 32] };
    for dt in DTYPES {
        let pws: Vec<PreparedQuant> = weights
            .iter()
            .map(|w| PreparedQuant::new(w, Device::Cuda(0), dt).unwrap())
            .collect();
        let mut ws = Workspace::new(Device::Cuda(0), dt).unwrap();
        let mut kept = paradec::cuda::DeviceBuffer::zeroed(0, 4096 * 4).unwrap();
        let (bias_d, bias_r) = upload(&rng.vec(n, -0.5, 0.5), &[n], dt);
        for &m in &ms {
            let xs: Vec<(Tensor, Vec<f32>)> = weights
                .iter()
                .map(|w| {
                    let k = w.in_features();
                    upload(&rng.vec(m * k, -1.0, 1.0), &[m, k], dt)
                })
                .collect();
            let (old_d, old_r) = upload(&rng.vec(m * n, -1.0, 1.0), &[m, n], dt);
            // Σ of the first c terms (prefix[c]). K 512, 320 and 4096 are whole 64-row steps,
            // which the warpgroup MMA's one grid needs; with the fourth, K 96, its terms run
            // one at a time.
            let mut prefix = vec![vec![0f32; m * n]];
            for (w, (_, xr)) in weights.iter().zip(&xs) {
                let mut next = prefix.last().unwrap().clone();
                w.forward(xr, m, &mut next, true).unwrap();
                prefix.push(next);
            }
            for (path, splits, count) in [
                (LinearPath::SmallLean, [1usize, 1, 1, 1], 4),
                (LinearPath::SmallLean, [3, 2, 5, 1], 4),
                (LinearPath::Small, [1, 1, 1, 1], 4),
                (LinearPath::Small, [4, 3, 6, 2], 4),
                (LinearPath::Wgmma, [1, 1, 1, 1], 2),
                (LinearPath::Wgmma, [1, 1, 1, 1], 3),
                (LinearPath::Wgmma, [1, 1, 1, 1], 4),
            ] {
                let products = &prefix[count];
                for (accumulate, with_bias) in [(false, true), (true, false), (true, true)] {
                    let terms: Vec<paradec::cuda::kernels::QuantLinearTerm<'_>> = pws
                        .iter()
                        .zip(&xs)
                        .zip(splits)
                        .take(count)
                        .map(|((p, (x, _)), split)| paradec::cuda::kernels::QuantLinearTerm {
                            x,
                            w: weight_args(p),
                            split,
                        })
                        .collect();
                    let need = paradec::cuda::kernels::quant_linear_sum_scratch(dt, m, &terms);
                    let mut sc = Tensor::zeros(&[need], DType::U8, Device::Cuda(0)).unwrap();
                    let mut run = |counters: Option<&mut paradec::cuda::DeviceBuffer>| {
                        let mut out = if accumulate {
                            old_d.try_clone().unwrap()
                        } else {
                            poisoned(&[m, n], dt)
                        };
                        paradec::cuda::kernels::quant_linear_sum(
                            m,
                            &terms,
                            with_bias.then_some(&bias_d),
                            &mut out,
                            accumulate,
                            path,
                            &mut sc,
                            counters,
                            cs,
                        )
                        .unwrap();
                        download(&out)
                    };
                    let got = run(Some(&mut kept));
                    let again = run(None);
                    let what = format!("{dt} m={m} {path:?} terms={count} splits={splits:?} acc={accumulate} bias={with_bias}");
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&again), "{what}: two runs differ");
                    let want: Vec<f32> = (0..m * n)
                        .map(|i| {
                            products[i]
                                + if with_bias { bias_r[i % n] } else { 0.0 }
                                + if accumulate { old_r[i] } else { 0.0 }
                        })
                        .collect();
                    assert_close(&what, dt, &got, &want);
                }
            }
            // The op: one launch, equal within rounding to accumulating one term at a time
            // (the first two or three terms: at 17–32 rows on Hopper the warpgroup MMA's sum).
            for count in [4, 3, 2] {
                let terms: Vec<(&Tensor, &PreparedQuant)> =
                    xs.iter().zip(&pws).take(count).map(|((x, _), p)| (x, p)).collect();
                let mut summed = old_d.try_clone().unwrap();
                assert!(
                    ops::prepared_linear_sum(&s, &mut ws, &terms, Some(&bias_d), &mut summed, true)
                        .unwrap()
                );
                let mut each = old_d.try_clone().unwrap();
                for (x, p) in &terms {
                    ops::prepared_linear(&s, &mut ws, x, p, &mut each, true).unwrap();
                }
                let mut each = download(&each);
                for (i, v) in each.iter_mut().enumerate() {
                    *v += bias_r[i % n];
                }
                assert_close(&format!("{dt} m={m} op, {count} terms"), dt, &download(&summed), &each);
            }
        }
        // Past 32 rows the op declines and leaves the output alone.
        let m = 33;
        let xs: Vec<Tensor> = weights
            .iter()
            .map(|w| upload(&rng.vec(m * w.in_features(), -1.0, 1.0), &[m, w.in_features()], dt).0)
            .collect();
        let terms: Vec<(&Tensor, &PreparedQuant)> = xs.iter().zip(&pws).collect();
        let (mut out, before) = upload(&rng.vec(m * n, -1.0, 1.0), &[m, n], dt);
        assert!(!ops::prepared_linear_sum(&s, &mut ws, &terms, None, &mut out, true).unwrap());
        assert_eq!(download(&out), before, "{dt}: a declined sum wrote its output");
        let left = kept.to_host_bytes().unwrap();
        assert!(left.iter().all(|&b| b == 0), "{dt}: the kept split counters were not left zero");
    }
}

/// Restores `set_split_sum`'s setting when dropped (a failed assertion included).
struct SplitSumGuard(paradec::cuda::kernels::SplitSum);

impl Drop for SplitSumGuard {
    fn drop(&mut self) {
        paradec::cuda::kernels::set_split_sum(self.0);
    }
}

/// The lean loop's K splits summed inside a thread-block cluster (compute capability 9.0 and
/// later; elsewhere every mode takes the global path) give the same bits as through global
/// memory, in every `SplitSum` mode, and each mode takes clusters where it should (one call,
/// counted on this thread): one call at 2 … 16 splits, odd N, rows 1 … 31, with and without accumulation (also
/// against the CPU reference); a grouped launch whose calls split K 13, 8 and 10 ways (blocks
/// past a call's split compute nothing and help sum); summed launches of 7 and 16 splits in all.
/// The setting is process-wide: other tests running meanwhile see the same bits either way.
#[test]
fn cluster_split_sum_equals_global() {
    use paradec::cuda::kernels::{cluster_sum_launches, set_split_sum, SplitSum};
    let Some(cs) = gpu_stream("cluster_split_sum") else {
        return;
    };
    // Clusters need compute capability 9.0; elsewhere every mode is the global sum.
    let hopper = paradec::cuda::properties(0).unwrap().compute_capability.0 >= 9;
    let cs = &cs;
    let _restore = SplitSumGuard(set_split_sum(SplitSum::Env));
    let path = LinearPath::SmallLean;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    // One call: K 4096 (128 tiles, act-order), N 200.
    let w = gptq(4, 128, true, false, 200, 4096, 622);
    // A grouped launch: K 4096, 512 and 320 (128, 16 and 10 tiles) at split 13.
    let group_w = [
        gptq(4, 128, false, false, 136, 4096, 623),
        gptq(4, 128, true, true, 67, 512, 624),
        gptq(4, 64, false, false, 9, 320, 626),
    ];
    // Summed launches over N 136 of the same three K.
    let sum_w = [
        gptq(4, 128, false, false, 136, 4096, 627),
        gptq(4, 128, true, false, 136, 512, 629),
        gptq(4, 64, false, true, 136, 320, 631),
    ];
    let prepare = |ws: &[QuantWeight], dt| -> Vec<PreparedQuant> {
        ws.iter().map(|w| PreparedQuant::new(w, Device::Cuda(0), dt).unwrap()).collect()
    };
    // Random m-row inputs for each weight.
    let inputs = |rng: &mut Rng, ws: &[QuantWeight], m: usize, dt| -> Vec<Tensor> {
        ws.iter()
            .map(|w| upload(&rng.vec(m * w.in_features(), -1.0, 1.0), &[m, w.in_features()], dt).0)
            .collect()
    };
    let ms: Vec<usize> = if small() { vec![1, 8, 13] } else { vec![1, 3, 8, 13, 16, 31] };
    let mut rng = Rng::new(93);
    for dt in DTYPES {
        // Whether any single call summed inside clusters (it must, on sm_90 and later).
        let mut any_clustered = false;
        let pw = PreparedQuant::new(&w, Device::Cuda(0), dt).unwrap();
        let a = weight_args(&pw);
        for &m in &ms {
            let (x, xr) = upload(&rng.vec(m * 4096, -1.0, 1.0), &[m, 4096], dt);
            let (old, old_r) = upload(&rng.vec(m * 200, -1.0, 1.0), &[m, 200], dt);
            for split in [2usize, 3, 5, 8, 11, 16] {
                for accumulate in [false, true] {
                    let mut want = if accumulate { old_r.clone() } else { vec![0.0; m * 200] };
                    w.forward(&xr, m, &mut want, accumulate).unwrap();
                    let run = |mode| {
                        set_split_sum(mode);
                        let need = a.scratch_bytes(dt, m, path, split);
                        let mut sc =
                            Tensor::zeros(&[need.max(1)], DType::U8, Device::Cuda(0)).unwrap();
                        let mut out =
                            if accumulate { old.try_clone().unwrap() } else { poisoned(&[m, 200], dt) };
                        paradec::cuda::kernels::quant_linear(
                            &x, m, &a, pw.bias.as_ref(), &mut out, accumulate, path, split,
                            Some(&mut sc), None, cs,
                        )
                        .unwrap();
                        download(&out)
                    };
                    // The output, and whether the launch summed inside clusters.
                    let run_counted = |mode| {
                        let before = cluster_sum_launches();
                        let out = run(mode);
                        (out, cluster_sum_launches() > before)
                    };
                    let what = format!("{dt} m={m} split={split} acc={accumulate}");
                    let (global, in_clusters) = run_counted(SplitSum::Global);
                    assert!(!in_clusters, "{what}: global took clusters");
                    // Clusters serve the lean loop, where x's share fits in shared memory (not
                    // 13 or more rows at 2 splits), on compute capability 9.0 and later.
                    let (cluster, clustered) = run_counted(SplitSum::Cluster);
                    assert_eq!(bits(&cluster), bits(&global), "{what}: cluster ≠ global");
                    assert!(hopper || !clustered, "{what}: clusters before sm_90");
                    any_clustered |= clustered;
                    // Resident: where clusters serve, these two fit at once, so clusters again
                    // (through the occupancy query); auto, the default, the same from 8 rows.
                    let (resident, in_clusters) = run_counted(SplitSum::Resident);
                    assert_eq!(bits(&resident), bits(&global), "{what}: resident");
                    assert_eq!(in_clusters, clustered, "{what}: resident took clusters");
                    let (auto, in_clusters) = run_counted(SplitSum::Auto);
                    assert_eq!(bits(&auto), bits(&global), "{what}: auto");
                    assert_eq!(in_clusters, clustered && m >= 8, "{what}: auto took clusters");
                    assert_close(&what, dt, &cluster, &want);
                }
            }
        }
        assert_eq!(any_clustered, hopper, "{dt}: single calls summed inside clusters");
        let pws = prepare(&group_w, dt);
        for &m in &[1usize, 5, 16] {
            let xs = inputs(&mut rng, &group_w, m, dt);
            let run = |mode| {
                set_split_sum(mode);
                let mut outs: Vec<Tensor> = pws.iter().map(|p| poisoned(&[m, p.n], dt)).collect();
                let mut calls: Vec<paradec::cuda::kernels::QuantLinearCall<'_>> = pws
                    .iter()
                    .zip(&xs)
                    .zip(outs.iter_mut())
                    .map(|((p, x), out)| group_call(x, p, out, 13, path, None))
                    .collect();
                group_launch(dt, m, &mut calls, None, cs);
                drop(calls);
                outs.iter().map(|o| bits(&download(o))).collect::<Vec<_>>()
            };
            let global = run(SplitSum::Global);
            assert_eq!(run(SplitSum::Cluster), global, "{dt} m={m}: grouped, cluster ≠ global");
            assert_eq!(run(SplitSum::Resident), global, "{dt} m={m}: grouped, resident");
            assert_eq!(run(SplitSum::Auto), global, "{dt} m={m}: grouped, auto");
        }
        // Summed launches: splits (2, 2, 3) and (11, 3, 2), 7 and 16 in all.
        let tws = prepare(&sum_w, dt);
        for &m in &[1usize, 7, 16] {
            let xs = inputs(&mut rng, &sum_w, m, dt);
            let (old, _) = upload(&rng.vec(m * 136, -1.0, 1.0), &[m, 136], dt);
            for splits in [[2usize, 2, 3], [11, 3, 2]] {
                let terms: Vec<paradec::cuda::kernels::QuantLinearTerm<'_>> = tws
                    .iter()
                    .zip(&xs)
                    .zip(splits)
                    .map(|((p, x), split)| paradec::cuda::kernels::QuantLinearTerm {
                        x,
                        w: weight_args(p),
                        split,
                    })
                    .collect();
                let need = paradec::cuda::kernels::quant_linear_sum_scratch(dt, m, &terms);
                let mut sc = Tensor::zeros(&[need.max(1)], DType::U8, Device::Cuda(0)).unwrap();
                let mut run = |mode| {
                    set_split_sum(mode);
                    let mut out = old.try_clone().unwrap();
                    paradec::cuda::kernels::quant_linear_sum(
                        m, &terms, None, &mut out, true, path, &mut sc, None, cs,
                    )
                    .unwrap();
                    bits(&download(&out))
                };
                let global = run(SplitSum::Global);
                assert_eq!(
                    run(SplitSum::Cluster),
                    global,
                    "{dt} m={m} splits={splits:?}: summed, cluster ≠ global"
                );
                assert_eq!(
                    run(SplitSum::Resident),
                    global,
                    "{dt} m={m} splits={splits:?}: summed, resident"
                );
                assert_eq!(run(SplitSum::Auto), global, "{dt} m={m} splits={splits:?}: summed, auto");
            }
        }
    }
}

/// The split small-M path gives the same bits twice (the partials are summed in split order),
/// and the same on its lean and ring loops; the stream loop gives the same bits twice.
fn check_deterministic(what: &str, w: &QuantWeight, pw: &PreparedQuant, dt: DType) {
    let Some(s) = gpu_stream(what) else {
        return;
    };
    let s = Stream::Cuda(s);
    let (k, n) = (w.in_features(), w.out_features());
    let mut ws = Workspace::new(Device::Cuda(0), dt).unwrap();
    let mut rng = Rng::new(9);
    let m = 5;
    let (xd, _) = upload(&rng.vec(m * k, -1.0, 1.0), &[m, k], dt);
    // Twice on the ring loop, then twice on the lean loop: the two loops run the same products
    // in the same order, so all four agree to the bit.
    let paths = [
        LinearPath::Small,
        LinearPath::Small,
        LinearPath::SmallLean,
        LinearPath::SmallLean,
        LinearPath::SmallStream,
        LinearPath::SmallStream,
    ];
    let runs: Vec<Vec<u32>> = paths
        .iter()
        .map(|&p| {
            ops::set_linear_override(Some((p, Some(4))));
            let mut out = poisoned(&[m, n], dt);
            ops::prepared_linear(&s, &mut ws, &xd, pw, &mut out, false).unwrap();
            download(&out).iter().map(|v| v.to_bits()).collect()
        })
        .collect();
    ops::set_linear_override(None);
    assert_eq!(runs[0], runs[1], "{what}: split runs differ");
    assert_eq!(runs[2], runs[3], "{what}: split runs of the lean loop differ");
    assert_eq!(runs[0], runs[2], "{what}: the lean and ring loops differ");
    assert_eq!(runs[4], runs[5], "{what}: runs of the stream loop differ");
}

#[test]
fn exl2_uniform_and_mixed_widths_with_permutation() {
    type Recipe = (Vec<(u32, usize, f64)>, bool, usize, usize);
    let recipes: Vec<Recipe> = vec![
        (vec![(4, 128, 1.0)], false, 64, 256),
        (vec![(3, 128, 1.0)], true, 67, 384),
        (vec![(6, 128, 1.0)], true, 40, 256),
        (
            vec![
                (8, 32, 0.1),
                (6, 64, 0.2),
                (5, 32, 0.2),
                (4, 64, 0.2),
                (3, 32, 0.2),
                (2, 32, 1.0),
            ],
            true,
            72,
            512,
        ),
        (vec![(6, 16, 0.5), (2, 32, 1.0)], true, 33, 200),
    ];
    let recipes = if small() {
        recipes.into_iter().skip(3).collect()
    } else {
        recipes
    };
    for (i, (parts, permute, n, k)) in recipes.into_iter().enumerate() {
        let mut rng = Rng::new(40 + i as u64);
        let wv = rng.vec(n * k, -1.0, 1.0);
        let bias = rng.vec(n, -0.5, 0.5);
        let r = Exl2Recipe {
            parts: parts.clone(),
            permute,
        };
        let w = exl2_weight(&wv, n, k, &r, (i % 2 == 1).then_some(&bias[..])).unwrap();
        for dt in DTYPES {
            check_quant(&format!("exl2 {parts:?} {k}x{n}"), &w, dt, 200 + i as u64);
        }
    }
}

#[test]
fn dense_f16_bf16_every_path() {
    let Some(s) = gpu_stream("dense_f16_bf16_every_path") else {
        return;
    };
    let s = Stream::Cuda(s);
    eprintln!(
        "dense linears: vendor GEMM {}",
        if paradec::cuda::kernels::vendor_gemm_available() {
            "loaded (the vendor path runs it)"
        } else {
            "absent (the vendor path runs paradec's GEMM)"
        }
    );
    let mut rng = Rng::new(7);
    let shapes: &[(usize, usize)] = if small() {
        &[(64, 72), (37, 9)]
    } else {
        &[(256, 136), (37, 9), (512, 67), (100, 256)]
    };
    for &(k, n) in shapes {
        for dt in DTYPES {
            let (wd, wr) = upload(&rng.vec(n * k, -1.0, 1.0), &[n, k], dt);
            let (bd, br) = upload(&rng.vec(n, -0.5, 0.5), &[n], dt);
            let mut ws = Workspace::new(Device::Cuda(0), dt).unwrap();
            for m in ms() {
                let (xd, xr) = upload(&rng.vec(m * k, -1.0, 1.0), &[m, k], dt);
                for p in [
                    Some((LinearPath::Gemv, None)),
                    Some((LinearPath::Mma, None)),
                    Some((LinearPath::Vendor, None)),
                    None,
                ] {
                    if m > 64 && matches!(p, Some((LinearPath::Gemv, _))) {
                        continue;
                    }
                    ops::set_linear_override(p);
                    for (accumulate, bias) in [(false, true), (true, false), (true, true)] {
                        let (mut out, mut want) = if accumulate {
                            upload(&rng.vec(m * n, -1.0, 1.0), &[m, n], dt)
                        } else {
                            (poisoned(&[m, n], dt), vec![0.0; m * n])
                        };
                        cpu::linear::linear(
                            &xr,
                            m,
                            k,
                            &wr[..],
                            n,
                            bias.then_some(&br[..]),
                            &mut want,
                            accumulate,
                        );
                        ops::linear(
                            &s,
                            &mut ws,
                            &xd,
                            &wd,
                            bias.then_some(&bd),
                            &mut out,
                            accumulate,
                        )
                        .unwrap();
                        assert_close(
                            &format!(
                                "dense {k}x{n} m={m} {} acc={accumulate} bias={bias}",
                                path_name(p)
                            ),
                            dt,
                            &download(&out),
                            &want,
                        );
                    }
                    ops::set_linear_override(None);
                }
            }
        }
    }
}

/// A Linear with LoRA adapters on a dense, a GPTQ and an EXL2 base: moved to the GPU with a
/// compute dtype, its forward equals the CPU's (several adapters at once, accumulate mode too).
#[test]
fn lora_on_dense_gptq_and_exl2_bases() {
    let Some(cs) = gpu_stream("lora_on_dense_gptq_and_exl2_bases") else {
        return;
    };
    let s = Stream::Cuda(cs);
    let (k, n, r) = (256usize, 72usize, 8usize);
    let mut rng = Rng::new(11);
    let wv = rng.vec(n * k, -1.0, 1.0);
    type Make<'a> = Box<dyn Fn() -> Linear + 'a>;
    let bases: Vec<(&str, Make)> = vec![
        (
            "dense",
            Box::new(|| {
                Linear::from_tensors(
                    "dense",
                    Tensor::from_f32(wv.clone(), &[n, k]).unwrap(),
                    Some(Tensor::from_f32(vec![0.25; n], &[n]).unwrap()),
                )
                .unwrap()
            }),
        ),
        (
            "gptq",
            Box::new(|| {
                let q = gptq(4, 128, true, false, n, k, 3);
                let mut l = Linear::from_tensors(
                    "gptq",
                    Tensor::from_f32(vec![0.0; n * k], &[n, k]).unwrap(),
                    None,
                )
                .unwrap();
                l.weight = paradec::layers::linear::LinearWeight::Quant(std::sync::Arc::new(q));
                l
            }),
        ),
        (
            "exl2",
            Box::new(|| {
                let rcp = Exl2Recipe {
                    parts: vec![(6, 64, 0.5), (3, 32, 1.0)],
                    permute: true,
                };
                let q = exl2_weight(&wv, n, k, &rcp, None).unwrap();
                let mut l = Linear::from_tensors(
                    "exl2",
                    Tensor::from_f32(vec![0.0; n * k], &[n, k]).unwrap(),
                    None,
                )
                .unwrap();
                l.weight = paradec::layers::linear::LinearWeight::Quant(std::sync::Arc::new(q));
                l
            }),
        ),
    ];
    let adapters: Vec<LoraAdapter> = (0..2)
        .map(|i| LoraAdapter {
            a: Tensor::from_f32(rng.vec(r * k, -0.2, 0.2), &[r, k]).unwrap(),
            b: Tensor::from_f32(rng.vec(n * r, -0.2, 0.2), &[n, r]).unwrap(),
            scale: 0.5 + i as f32,
        })
        .collect();
    for (name, make) in &bases {
        for dt in DTYPES {
            for m in [1usize, 5, 33] {
                let x = rng.vec(m * k, -1.0, 1.0);
                let xh = Tensor::from_f32_as(&x, &[m, k], dt).unwrap();
                let xr = xh.f32_values().unwrap().into_owned();
                let init = rng.vec(m * n, -1.0, 1.0);
                let inh = Tensor::from_f32_as(&init, &[m, n], dt).unwrap();
                let init_r = inh.f32_values().unwrap().into_owned();
                // CPU reference: f32 everywhere, weights as the device will hold them.
                let mut cpu_l = make();
                for (i, a) in adapters.iter().enumerate() {
                    let ad = LoraAdapter {
                        a: a.a.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap(),
                        b: a.b.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap(),
                        scale: a.scale,
                    };
                    cpu_l.add_lora(i as u64 + 1, &ad).unwrap();
                }
                if *name == "dense" {
                    let w16 = Tensor::from_f32_as(&wv, &[n, k], dt)
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap();
                    cpu_l.weight = paradec::layers::linear::LinearWeight::Dense(w16);
                }
                let mut want = Tensor::from_f32(init_r.clone(), &[m, n]).unwrap();
                cpu_l
                    .forward(
                        &Stream::Host,
                        &mut Workspace::cpu(),
                        &Tensor::from_f32(xr.clone(), &[m, k]).unwrap(),
                        &mut want,
                        true,
                        &[1, 2],
                    )
                    .unwrap();
                let mut gl = make();
                for (i, a) in adapters.iter().enumerate() {
                    gl.add_lora(i as u64 + 1, a).unwrap();
                }
                gl.to_device_as(Device::Cuda(0), dt).unwrap();
                assert_eq!(gl.compute_dtype(), dt);
                let mut out = inh.to_device(Device::Cuda(0)).unwrap();
                let mut ws = Workspace::new(Device::Cuda(0), dt).unwrap();
                gl.forward(
                    &s,
                    &mut ws,
                    &xh.to_device(Device::Cuda(0)).unwrap(),
                    &mut out,
                    true,
                    &[1, 2],
                )
                .unwrap();
                assert_close(
                    &format!("lora on {name} m={m}"),
                    dt,
                    &download(&out),
                    want.as_f32().unwrap(),
                );
                // And back on the host it is the packed weight again.
                gl.to_device(Device::Cpu).unwrap();
                assert_eq!(gl.device(), Device::Cpu);
            }
        }
    }
}

/// Every quantized projection of the fixture models (their dense weights packed as GPTQ-4
/// act-order and an EXL2 mix) gives the CPU's output on the GPU.
#[test]
fn fixture_projections_quantized() {
    let Some(cs) = gpu_stream("fixture_projections_quantized") else {
        return;
    };
    let s = Stream::Cuda(cs);
    let variants = if small() {
        vec!["gpt_neox"]
    } else {
        vec!["gpt_neox", "falcon_new_2ln_gqa", "phi", "cohere"]
    };
    let mut count = 0;
    for v in variants {
        let w = paradec::Weights::from_dir(common::fixture(v)).unwrap();
        let names: Vec<String> = w
            .names()
            .iter()
            .filter(|n| n.ends_with(".weight") && n.contains(".0."))
            .map(|n| n.to_string())
            .collect();
        for name in names {
            let t = w.get(&name).unwrap();
            if t.shape().len() != 2 {
                continue;
            }
            let (n, k) = (t.shape()[0], t.shape()[1]);
            let vals = t.f32_values().unwrap().into_owned();
            let cfg = GptqConfig {
                bits: 4,
                group_size: 32,
                desc_act: true,
                sym: true,
                checkpoint_format_v2: false,
            };
            let recipe = Exl2Recipe {
                parts: vec![(8, 32, 0.25), (4, 32, 0.5), (3, 32, 1.0)],
                permute: true,
            };
            let qs = [
                gptq_weight(&vals, n, k, &cfg, None).unwrap(),
                exl2_weight(&vals, n, k, &recipe, None).unwrap(),
            ];
            for q in &qs {
                let pw = PreparedQuant::new(q, Device::Cuda(0), DType::F16).unwrap();
                let mut ws = Workspace::new(Device::Cuda(0), DType::F16).unwrap();
                let mut rng = Rng::new(count as u64);
                for m in [1usize, 7, 40] {
                    let (xd, xr) = upload(&rng.vec(m * k, -1.0, 1.0), &[m, k], DType::F16);
                    let mut want = vec![0.0; m * n];
                    q.forward(&xr, m, &mut want, false).unwrap();
                    let mut out = poisoned(&[m, n], DType::F16);
                    ops::prepared_linear(&s, &mut ws, &xd, &pw, &mut out, false).unwrap();
                    assert_close(
                        &format!("{v} {name} m={m}"),
                        DType::F16,
                        &download(&out),
                        &want,
                    );
                }
                count += 1;
            }
        }
    }
    assert!(count > 0, "no projections found");
    eprintln!("fixture_projections_quantized: {count} quantized projections match");
}

#[test]
fn bad_arguments_are_named() {
    let Some(cs) = gpu_stream("linear bad_arguments") else {
        return;
    };
    let s = Stream::Cuda(cs);
    let q = gptq(4, 128, false, false, 16, 128, 1);
    let pw = PreparedQuant::new(&q, Device::Cuda(0), DType::F16).unwrap();
    let mut ws = Workspace::new(Device::Cuda(0), DType::F16).unwrap();
    let (xd, _) = upload(&[0.5; 2 * 96], &[2, 96], DType::F16);
    let mut out = poisoned(&[2, 16], DType::F16);
    let e = ops::prepared_linear(&s, &mut ws, &xd, &pw, &mut out, false).unwrap_err();
    assert!(matches!(&e, Error::BadInput(m) if m.contains("K = 128")), "{e}");
    let (xb, _) = upload(&[0.5; 2 * 128], &[2, 128], DType::BF16);
    let e = ops::prepared_linear(&s, &mut ws, &xb, &pw, &mut out, false).unwrap_err();
    assert!(matches!(&e, Error::BadInput(m) if m.contains("prepared for f16")), "{e}");
    // A host QuantWeight with device tensors asks for preparation.
    let (xh, _) = upload(&[0.5; 2 * 128], &[2, 128], DType::F16);
    let e = ops::quant_linear(&s, &mut ws, &xh, &q, &mut out, false).unwrap_err();
    assert!(matches!(&e, Error::BadInput(m) if m.contains("prepare")), "{e}");
    // scale_inplace on the device.
    let (mut t, r) = upload(&[1.0, -2.0, 3.5], &[3], DType::F16);
    ops::scale_inplace(&s, &mut t, 0.5).unwrap();
    let want: Vec<f32> = r.iter().map(|v| v * 0.5).collect();
    assert_eq!(download(&t), want);
}

/// The bench's access-pattern probe (`paradec_read_tiles`) reads exactly each block's tiles:
/// every block's XOR equals the host's over the same words, in both layouts, with a ragged last
/// split; bad arguments are refused before launch.
#[test]
fn tile_read_probe_reads_each_blocks_tiles() {
    let Some(s) = gpu("tile_read_probe_reads_each_blocks_tiles") else {
        return;
    };
    let (np, ntiles, tps) = (384usize, 7usize, 3usize);
    let splits = ntiles.div_ceil(tps);
    let mut rng = Rng::new(41);
    let words: Vec<u32> = (0..ntiles * 4 * np).map(|_| rng.next_u64() as u32).collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let dev = DeviceBuffer::from_host(0, &bytes).unwrap();
    for rows in [1, 0] {
        let mut sink = DeviceBuffer::zeroed(0, np / 128 * splits * 4).unwrap();
        // SAFETY: `dev` holds ntiles·4 rows of np words, `sink` one u32 per block.
        let code = unsafe {
            ffi::paradec_read_tiles(dev.as_ptr(), np, ntiles, tps, rows, sink.as_mut_ptr(), s.raw())
        };
        assert_eq!(code, ffi::paradec_kstatus::PARADEC_K_OK);
        stream_sync(&s);
        let got: Vec<u32> = sink
            .to_host_bytes()
            .unwrap()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for by in 0..splits {
            for bx in 0..np / 128 {
                let mut want = 0u32;
                for t in by * tps..((by + 1) * tps).min(ntiles) {
                    if rows == 1 {
                        // Tile t: word rows 4t … 4t + 3, columns of block bx.
                        for r in 4 * t..4 * t + 4 {
                            for c in bx * 128..(bx + 1) * 128 {
                                want ^= words[r * np + c];
                            }
                        }
                    } else {
                        // Block bx's tiles lie contiguously, 512 words a tile.
                        let base = (bx * ntiles + t) * 512;
                        want = words[base..base + 512].iter().fold(want, |a, &w| a ^ w);
                    }
                }
                assert_eq!(
                    got[by * (np / 128) + bx],
                    want,
                    "layout rows={rows}, block ({bx}, {by})"
                );
            }
        }
    }
    use ffi::paradec_kstatus as k;
    let mut sink = DeviceBuffer::zeroed(0, 64).unwrap();
    let out = sink.as_mut_ptr();
    // SAFETY: rejected calls launch nothing.
    unsafe {
        assert_eq!(
            ffi::paradec_read_tiles(ptr::null(), np, ntiles, tps, 1, out, s.raw()),
            k::PARADEC_K_NULL_POINTER
        );
        assert_eq!(
            ffi::paradec_read_tiles(dev.as_ptr(), np, ntiles, 0, 1, out, s.raw()),
            k::PARADEC_K_ZERO_DIM
        );
        assert_eq!(
            ffi::paradec_read_tiles(dev.as_ptr(), 200, ntiles, tps, 1, out, s.raw()),
            k::PARADEC_K_BAD_SHAPE
        );
    }
}
