//! Linear layers: dense and quantized (GPTQ / EXL2) `out (+)= x · Wᵀ + b`.

use std::cell::Cell;

use super::*;
use crate::quant::PreparedQuant;
use crate::vocab::{Activation, LinearPath};
use crate::workspace::STREAM_MAX_BLOCKS;

/// What a linear multiplies by, for kernel selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearFormat {
    /// Dense f16 / bf16.
    Dense,
    /// Quantized in the device layout; `bits` is the width of every tile, 0 when mixed.
    Quant {
        /// The width of every tile, 0 when mixed.
        bits: u32,
    },
}

/// A kernel choice: the path and, for the quantized GEMV and small-M paths, how many ways K is
/// split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearPlan {
    /// The kernel path.
    pub path: LinearPath,
    /// Ways K is split (quantized GEMV and small-M paths; 1 otherwise). On `Wgmma`, 32, 64, 128
    /// or 256 forces the rows of x per block (tests and benches run every tile so); any other
    /// value leaves them to the launcher.
    pub split: usize,
}

/// The largest M the tensor-core small-M path takes (four n8 tiles of x rows).
pub(crate) const SMALL_MAX_M: usize = 32;

/// Whether the small-M kernels take this format at m rows (uniform 4-bit, m ≤ 32): the
/// launcher's own condition, which a forced path does not change.
fn small_path_takes(format: LinearFormat, m: usize) -> bool {
    format == (LinearFormat::Quant { bits: 4 }) && m <= SMALL_MAX_M
}

/// The largest M the small-M path's lean loop takes (x staged in shared memory once, weights
/// loaded straight to registers); beyond it, its ring loop. Measured on an H200, the lean loop
/// is 10–20% faster than the ring at M = 1, 8 and 16, and 8–13% at 32 for one linear
/// (docs/gpu-bench-linear-h200.md).
pub(crate) const LEAN_MAX_M: usize = 32;

/// The largest M the small-M path's stream loop takes (`kStreamMaxM`).
const STREAM_MAX_M: usize = 16;

/// The largest M at which grouped and summed launches take the lean loop (`kLeanGroupMaxM`);
/// past it, the ring loop and its splits. At 32 rows their lean kernels spilled 48–68 bytes a
/// thread and the decoder steps at batch 32 took 7–11% longer (H200, same run: GPT-J-6B GPTQ-4
/// 325.9 → 349.5 µs, Command-R 519.0 → 575.9).
pub(crate) const GROUP_LEAN_MAX_M: usize = 16;

/// Picks the kernel for `out[m, n] = x[m, k] · Wᵀ` on a device with `sms` multiprocessors of
/// compute capability `cc`, where a device of compute capability 9.0 runs the warpgroup-MMA
/// kernel (a build with sm_90a code): [`select_linear_with`] with `wgmma` so.
pub fn select_linear(
    m: usize,
    k: usize,
    n: usize,
    format: LinearFormat,
    sms: usize,
    cc: (u32, u32),
) -> LinearPlan {
    select_linear_with(m, k, n, format, sms, cc, cc == (9, 0))
}

/// Picks the kernel for `out[m, n] = x[m, k] · Wᵀ` on a device with `sms` multiprocessors of
/// compute capability `cc`, `wgmma` telling whether the warpgroup-MMA kernel runs there.
/// Uniform 4-bit weights at m ≤ 32 on sm_80 and later take the tensor-core small-M path
/// (weights streamed once, dequantized to exact integers in f16/bf16 registers), on its lean
/// loop where a block's x fits its staging, else its ring loop — but past 16 rows, where the
/// warpgroup-MMA kernel runs, that kernel (`small_m_on_wgmma`; grouped launches of such calls
/// run it too, one grid for all, whose K splits are planned for the calls together, so a call
/// grouped equals the call alone within rounding). Other small
/// m streams the weights on CUDA cores (a bandwidth-bound GEMV); larger m, on sm_80 and later,
/// runs on tensor cores (`Wgmma`: the warpgroup MMA where the launcher finds it, the mma.sync
/// tiles elsewhere). Both streaming paths split K so that enough blocks run to keep many
/// 16-byte loads in flight on every SM. Dense weights on sm_80 and later take the vendor GEMM.
/// Grouped and summed launches plan with `group_plan`.
pub fn select_linear_with(
    m: usize,
    k: usize,
    n: usize,
    format: LinearFormat,
    sms: usize,
    cc: (u32, u32),
    wgmma: bool,
) -> LinearPlan {
    if small_path_takes(format, m) && cc.0 >= 8 {
        if wgmma && small_m_on_wgmma(m, k, n, sms) {
            return LinearPlan {
                path: LinearPath::Wgmma,
                split: 1,
            };
        }
        if m <= STREAM_MAX_M && lean_tail_is_short(m, k, n, sms) {
            return LinearPlan {
                path: LinearPath::SmallStream,
                split: stream_grid(sms),
            };
        }
        // The lean loop where its block's x fits the staging at its split, else the ring.
        let split = lean_split(m, k, n, sms);
        if m <= LEAN_MAX_M && lean_x_fits(m, k.div_ceil(32).div_ceil(split)) {
            return LinearPlan {
                path: LinearPath::SmallLean,
                split,
            };
        }
        return LinearPlan {
            path: LinearPath::Small,
            split: small_split(m, k, n, sms),
        };
    }
    // Dense weights: the vendor GEMM (measured on an H200: as fast as the GEMV at one row,
    // 2–3× paradec's tiles from 16 rows up); its launcher takes the GEMV or the tiles where the
    // library is absent or declines the shape.
    if format == LinearFormat::Dense && cc.0 >= 8 {
        return LinearPlan {
            path: LinearPath::Vendor,
            split: 1,
        };
    }
    let gemv_max = 8;
    if m <= gemv_max || cc.0 < 8 {
        let split = match format {
            LinearFormat::Dense => 1,
            LinearFormat::Quant { .. } => gemv_split(m, k, n, sms),
        };
        return LinearPlan {
            path: LinearPath::Gemv,
            split,
        };
    }
    // Larger m on tensor cores: wgmma where the launcher finds it (one width for every tile, an
    // sm_90a build and chip), the mma.sync tiles elsewhere.
    LinearPlan {
        path: LinearPath::Wgmma,
        split: 1,
    }
}

/// K split of the quantized GEMV: eight blocks of 4 warps per SM, so that enough 16-byte loads
/// are in flight to cover the memory latency, with at least 8 tiles (two per warp) per block.
fn gemv_split(m: usize, k: usize, n: usize, sms: usize) -> usize {
    let mt = match m {
        0..=1 => 1,
        2 => 2,
        3..=4 => 4,
        _ => 8,
    };
    let blocks = n.div_ceil(128).max(1) * m.div_ceil(mt).max(1);
    let tiles = k.div_ceil(32);
    let want = (8 * sms.max(1)).div_ceil(blocks);
    want.min((tiles / 8).max(1)).clamp(1, 64)
}

/// Blocks of the small-M path (128 threads) resident on one SM at once, at every m: the grid
/// the K splits aim for and the stream loop's grid per SM.
const SMALL_BLOCKS_PER_SM: usize = 4;

/// K split of the small-M path (blocks of 128 columns): enough blocks to fill the GPU (up to
/// four per SM, what is resident at once at every m), and at most about 32 tiles (1024 rows of
/// K) per block — measured on an H200 (docs/gpu-bench-linear-h200.md), a block's share of K
/// near 32 tiles was fastest at every m whatever the grid, so long K splits further even when
/// that takes more than one wave. Each block keeps at least 8 tiles (the depth of its load
/// ring).
fn small_split(_m: usize, k: usize, n: usize, sms: usize) -> usize {
    let tiles = k.div_ceil(32);
    small_fill(n, sms)
        .max(tiles / 32)
        .min(tiles / 8)
        .clamp(1, 64)
}

/// K splits that give the small-M path's column blocks (of 128) one wave of four blocks per SM.
fn small_fill(n: usize, sms: usize) -> usize {
    (SMALL_BLOCKS_PER_SM * sms.max(1)) / n.div_ceil(128).max(1)
}

/// Dynamic shared memory a block of the lean loop may take (`kLeanMaxSmem` in
/// `csrc/linear_small.cu`).
const LEAN_MAX_SMEM: usize = 48 * 1024 - 256;

/// Whether a lean block's x rows and tile group words for `count` tiles fit its staging (the
/// launcher's `lean_x_bytes`: 16-byte vectors, rows of 4 per tile plus 4 where `count` is even,
/// then one per 4 tiles).
fn lean_x_fits(m: usize, count: usize) -> bool {
    lean_x_bytes(m, count) <= LEAN_MAX_SMEM
}

/// Bytes of a lean block's staged x rows and tile group words for `count` tiles at m rows (the
/// launcher's `lean_x_bytes`).
fn lean_x_bytes(m: usize, count: usize) -> usize {
    let stride = 4 * count + if count % 2 == 1 { 0 } else { 4 };
    (m * stride + count.div_ceil(4)) * 16
}

/// K split of the lean loop (m ≤ 32). At m ≤ 8, where the column blocks alone would leave most
/// of the GPU idle (4 or more splits to fill it), the splits that fill one wave of four blocks
/// per SM, however long each block's share of K (as long as its x fits its staging): with the
/// scales and group words staged once per block a long share costs nothing more per tile, and
/// one wave beat two and a half of 32-tile blocks — 22528×8192 on an H100
/// (docs/gpu-bench-linear-h200.md): 8 splits 41.6 / 46.0 µs at m = 1 / 8 against 45.5 / 57.1
/// with 22. At 9–32 rows (x of long shares fills the staging; 15 splits took 78.6 µs against
/// 74.7 with 22 at 16 rows) and with wide N, the small path's rule. Either way, more splits
/// where a share's x would not fit (past 16 rows, a 32-tile share's does not).
fn lean_split(m: usize, k: usize, n: usize, sms: usize) -> usize {
    let tiles = k.div_ceil(32);
    let fill = small_fill(n, sms);
    let most = (tiles / 8).clamp(1, 64);
    let mut split = if fill < 4 || m > 8 {
        small_split(m, k, n, sms)
    } else {
        fill.clamp(1, most)
    };
    while split < most && !lean_x_fits(m, tiles.div_ceil(split)) {
        split += 1;
    }
    split
}

/// Whether the lean loop's grid (column blocks × K splits) would end in a last wave less than a
/// quarter full (four blocks resident per SM): there the stream loop, which shares the same
/// work evenly over one resident grid, was 10–18% faster on an H100 (Falcon-7B's 18176×4544 at
/// 1–16 rows; docs/gpu-bench-linear-h200.md); where the lean grid fills its waves the lean loop
/// was as fast or faster (up to 1.5× at 4096×4096, where 17 blocks share each column block).
/// Judged on the grid of ~32-tile blocks those measurements had (`small_split`), not on
/// `lean_split`'s one wave of longer blocks, which was not measured against the stream loop.
fn lean_tail_is_short(m: usize, k: usize, n: usize, sms: usize) -> bool {
    let slots = SMALL_BLOCKS_PER_SM * sms.max(1);
    let blocks = n.div_ceil(128).max(1) * small_split(m, k, n, sms);
    let tail = blocks % slots;
    blocks > slots && tail != 0 && tail * 4 < slots
}

/// The rows past which a uniform 4-bit call may take the warpgroup-MMA kernel.
const WGMMA_MIN_M: usize = 16;

/// Whether a uniform 4-bit linear at m ≤ 32 rows runs faster on the warpgroup-MMA kernel (its
/// 32-row tile and K split) than on the small-M path: past 16 rows, where K is a whole number
/// of its 64-row steps, except at 17–20 rows where N's column blocks of 128 outnumber the SMs
/// and K is long (8192 and more: the lean loop's blocks then each take a long share of K).
/// H100, one run, µs from a graph, lean loop / ring loop / wgmma at its 64-row tile, before the
/// 32-row one (docs/gpu-bench-linear-h200.md): 4096×4096 at 32 rows 35.2 / 32.1 / 17.8,
/// 8192×8192 52.7 / 58.2 / 38.1, 22528×8192 132.6 / 142.1 / 88.3, 8192×28672 135.7 / 146.4 /
/// 112.6. On the 32-row tile (H100, one run, lean / wgmma): 8192×28672 at 17 rows 94.6 / 100.8
/// and at 20 rows 100.0 / 101.0 (the lean loop kept), 4096×28672 at 17 rows 55.7 / 53.8 and at
/// 20 rows 58.7 / 52.6 (wgmma).
fn small_m_on_wgmma(m: usize, k: usize, n: usize, sms: usize) -> bool {
    let wide_and_long = n.div_ceil(128) > sms.max(1) && k >= WIDE_LEAN_MIN_K;
    m > WGMMA_MIN_M && k.is_multiple_of(64) && !(m <= 20 && wide_and_long)
}

/// The K from which a wide linear at 17–20 rows stays on the lean loop (`small_m_on_wgmma`).
const WIDE_LEAN_MIN_K: usize = 8192;

/// The plan of a call that joins a grouped or summed small-M launch, from its own plan: past 16
/// rows the ring loop at the same split where the single call takes the lean loop (the lean
/// loop's grouped and summed kernels spilled there: batch-32 decoder steps 7–11% slower on an
/// H200). The ring and lean loops give the same bits at the same split, so a grouped call still
/// equals the call alone; a call on the warpgroup MMA keeps it (its grouped launch runs each
/// call's own tiles, at K splits planned for the grid: within rounding of the call alone).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn group_plan(plan: LinearPlan, m: usize) -> LinearPlan {
    if m > GROUP_LEAN_MAX_M && plan.path == LinearPath::SmallLean {
        LinearPlan {
            path: LinearPath::Small,
            split: plan.split,
        }
    } else {
        plan
    }
}

/// Blocks of the small-M path's stream loop on a device of `sms` multiprocessors: what is
/// resident at once (its kernel is built for four blocks per SM).
pub fn stream_grid(sms: usize) -> usize {
    (SMALL_BLOCKS_PER_SM * sms.max(1)).min(STREAM_MAX_BLOCKS)
}

thread_local! {
    static OVERRIDE: Cell<Option<(LinearPath, Option<usize>)>> = const { Cell::new(None) };
}

/// Forces the path (and the K split of the quantized GEMV or small-M path, when given) of this
/// thread's linears on a device; `None` returns to `select_linear`. The environment variable
/// `PARADEC_LINEAR_PATH` (`gemv`, `mma`, `small`, `lean` — the small-M path's lean loop —,
/// `stream` — its stream loop —, `vendor` or `wgmma`, optionally `gemv:SPLIT` / `small:SPLIT` /
/// `lean:SPLIT` / `stream:BLOCKS`) does the same for every thread.
pub fn set_linear_override(o: Option<(LinearPath, Option<usize>)>) {
    OVERRIDE.with(|c| c.set(o));
}

/// Parses `PARADEC_LINEAR_PATH`'s value.
pub fn parse_linear_override(v: &str) -> Option<(LinearPath, Option<usize>)> {
    let (p, s) = match v.split_once(':') {
        Some((p, s)) => (p, s.trim().parse().ok()),
        None => (v, None),
    };
    match p.trim().to_ascii_lowercase().as_str() {
        "gemv" => Some((LinearPath::Gemv, s)),
        "mma" => Some((LinearPath::Mma, s)),
        "small" => Some((LinearPath::Small, s)),
        "lean" => Some((LinearPath::SmallLean, s)),
        "stream" => Some((LinearPath::SmallStream, s)),
        "vendor" => Some((LinearPath::Vendor, s)),
        "wgmma" => Some((LinearPath::Wgmma, s)),
        _ => None,
    }
}

#[cfg(feature = "cuda")]
fn env_override() -> Option<(LinearPath, Option<usize>)> {
    static ENV: std::sync::OnceLock<Option<(LinearPath, Option<usize>)>> =
        std::sync::OnceLock::new();
    *ENV.get_or_init(|| {
        std::env::var("PARADEC_LINEAR_PATH")
            .ok()
            .and_then(|v| parse_linear_override(&v))
    })
}

/// A device's SM count and compute capability (cached per ordinal).
#[cfg(feature = "cuda")]
fn device_props(dev: usize) -> Result<(usize, (u32, u32))> {
    device_facts(dev).map(|(sms, cc, _)| (sms, cc))
}

/// SM count, compute capability and shared memory per SM (a block's opt-in limit plus the 1 KiB
/// the runtime keeps per block) of device `dev`, queried once.
#[cfg(feature = "cuda")]
fn device_facts(dev: usize) -> Result<(usize, (u32, u32), usize)> {
    type Facts = Vec<(usize, (usize, (u32, u32), usize))>;
    static FACTS: std::sync::Mutex<Facts> = std::sync::Mutex::new(Vec::new());
    let mut g = FACTS.lock().unwrap_or_else(|e| e.into_inner());
    Ok(match g.iter().find(|p| p.0 == dev) {
        Some(p) => p.1,
        None => {
            let p = crate::cuda::properties(dev)?;
            let e = (
                p.multiprocessors as usize,
                p.compute_capability,
                p.shared_memory_per_block_optin + BLOCK_SMEM_RESERVED,
            );
            g.push((dev, e));
            e
        }
    })
}

/// The plan for a call: the override if any, else `select_linear` with the device's properties.
#[cfg(feature = "cuda")]
fn plan_for(dev: usize, m: usize, k: usize, n: usize, format: LinearFormat) -> Result<LinearPlan> {
    let (sms, cc) = device_props(dev)?;
    Ok(match OVERRIDE.with(Cell::get).or_else(env_override) {
        Some((path, split)) => {
            let default = match (path, format) {
                (LinearPath::Mma | LinearPath::Vendor | LinearPath::Wgmma, _)
                | (_, LinearFormat::Dense) => 1,
                (LinearPath::Gemv, _) => gemv_split(m, k, n, sms),
                (LinearPath::Small, _) => small_split(m, k, n, sms),
                (LinearPath::SmallLean, _) => lean_split(m, k, n, sms),
                (LinearPath::SmallStream, _) => stream_grid(sms),
            };
            LinearPlan {
                path,
                split: if matches!(path, LinearPath::Mma | LinearPath::Vendor) {
                    1
                } else {
                    split.unwrap_or(default).max(1)
                },
            }
        }
        // The warpgroup-MMA kernel runs on compute capability 9.0 where the build holds its
        // sm_90a code.
        None => select_linear_with(
            m,
            k,
            n,
            format,
            sms,
            cc,
            cc == (9, 0) && crate::cuda::kernels::wgmma_built(),
        ),
    })
}

/// The plan for a call joining a grouped or summed launch: the override if any, else
/// [`group_plan`] of the single call's.
#[cfg(feature = "cuda")]
fn group_plan_for(
    dev: usize,
    m: usize,
    k: usize,
    n: usize,
    format: LinearFormat,
) -> Result<LinearPlan> {
    let plan = plan_for(dev, m, k, n, format)?;
    if OVERRIDE.with(Cell::get).or_else(env_override).is_some() {
        return Ok(plan);
    }
    Ok(group_plan(plan, m))
}

/// Checks a linear's input against K and its output against [m, N]; returns m.
fn linear_rows(x: &Tensor, k: usize, n: usize, out: &Tensor) -> Result<usize> {
    if x.cols() != k {
        return Err(Error::bad_input(format!(
            "linear input: last dimension {} does not match the weight's K = {k}",
            x.cols()
        )));
    }
    let m = x.rows();
    numel("linear output", out, m * n)?;
    Ok(m)
}

/// Dense linear: `out[m, N] (+)= x[m, K] · w[N, K]ᵀ + bias`.
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
///
/// Device scratch (split-K partials) comes from `ws`; the CPU reference needs none.
pub fn linear(
    s: &Stream,
    _ws: &mut Workspace,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: &mut Tensor,
    accumulate: bool,
) -> Result<()> {
    float("linear input", x)?;
    float("linear weight", w)?;
    if w.shape().len() != 2 {
        return Err(Error::bad_input(format!(
            "linear weight: expected [N, K], got {:?}",
            w.shape()
        )));
    }
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let m = linear_rows(x, k, n, out)?;
    if let Some(b) = bias {
        float("linear bias", b)?;
        numel("linear bias", b, n)?;
    }
    match same_device(&[
        ("linear input", x),
        ("linear weight", w),
        ("linear output", out),
    ])? {
        Device::Cpu => {
            let xv = x.f32_values()?;
            let bv = opt_values(bias)?;
            let wh = w.host()?;
            with_f32_mut(out, |o| match wh {
                HostData::F32(wv) => {
                    cpu::linear::linear(&xv, m, k, wv, n, bv.as_deref(), o, accumulate)
                }
                HostData::F16(wv) => {
                    cpu::linear::linear(&xv, m, k, wv, n, bv.as_deref(), o, accumulate)
                }
                HostData::BF16(wv) => {
                    cpu::linear::linear(&xv, m, k, wv, n, bv.as_deref(), o, accumulate)
                }
                _ => unreachable!("checked float above"),
            })
        }
        Device::Cuda(dev) => on_cuda!(s => {
            let plan = plan_for(dev, m, k, n, LinearFormat::Dense)?;
            crate::cuda::kernels::linear(x, m, k, w, n, bias, out, accumulate, plan.path, s)
        }),
    }
}

/// Quantized linear: `out[m, N] (+)= x[m, K] · Wᵀ + bias` straight from GPTQ / EXL2 data.
///
/// Device scratch (split-K partials, permuted activations) comes from `ws`.
pub fn quant_linear(
    _s: &Stream,
    _ws: &mut Workspace,
    x: &Tensor,
    w: &crate::quant::QuantWeight,
    out: &mut Tensor,
    accumulate: bool,
) -> Result<()> {
    float("linear input", x)?;
    let m = linear_rows(x, w.in_features(), w.out_features(), out)?;
    match same_device(&[("linear input", x), ("linear output", out)])? {
        Device::Cpu => {
            let xv = x.f32_values()?;
            with_f32_mut(out, |o| w.forward(&xv, m, o, accumulate))?
        }
        Device::Cuda(_) => Err(Error::bad_input(format!(
            "quant_linear: the weight {} is in host memory; prepare it for the device first \
             (Linear::to_device_as)",
            w.prefix()
        ))),
    }
}

/// Quantized linear on a device: `out[m, N] (+)= x[m, K] · Wᵀ + bias` from a weight in the
/// device layout (`Linear::to_device_as` builds it). Scratch (gathered x, split-K partials)
/// comes from `ws`.
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
pub fn prepared_linear(
    s: &Stream,
    ws: &mut Workspace,
    x: &Tensor,
    w: &PreparedQuant,
    out: &mut Tensor,
    accumulate: bool,
) -> Result<()> {
    float("linear input", x)?;
    let m = linear_rows(x, w.k, w.n, out)?;
    if x.dtype() != w.dtype {
        return Err(Error::bad_input(format!(
            "linear input: dtype {} but the weight was prepared for {}",
            x.dtype(),
            w.dtype
        )));
    }
    match same_device(&[("linear input", x), ("linear output", out)])? {
        Device::Cpu => Err(Error::bad_input(
            "linear input: on the CPU, but the quantized weight is prepared on a device",
        )),
        Device::Cuda(dev) => on_cuda!(s => prepared_cuda(s, ws, dev, x, m, w, out, accumulate)),
    }
}

#[cfg(feature = "cuda")]
#[allow(clippy::too_many_arguments)]
fn prepared_cuda(
    s: &crate::cuda::CudaStream,
    ws: &mut Workspace,
    dev: usize,
    x: &Tensor,
    m: usize,
    w: &PreparedQuant,
    out: &mut Tensor,
    accumulate: bool,
) -> Result<()> {
    if w.device() != Device::Cuda(dev) {
        return Err(Error::bad_input(format!(
            "linear weight is on {}, the input on cuda:{dev}",
            w.device()
        )));
    }
    let plan = plan_for(dev, m, w.k, w.n, LinearFormat::Quant { bits: w.bits })?;
    let args = crate::cuda::kernels::QuantWeightArgs::of(w);
    let need = args.scratch_bytes(x.dtype(), m, plan.path, plan.split);
    let mut scratch = if need > 0 {
        Some(ws.scratch(&[need], crate::DType::U8)?)
    } else {
        None
    };
    crate::cuda::kernels::quant_linear(
        x,
        m,
        &args,
        w.bias.as_ref(),
        out,
        accumulate,
        plan.path,
        plan.split,
        scratch.as_mut(),
        ws.zeroed_counters(),
        s,
    )
}

/// Several quantized linears on a device, `out_i = act_i(x_i · W_iᵀ + bias_i)`, each result as
/// [`prepared_linear`] gives it (no accumulation), followed by [`activate`] where `acts[i]` names
/// an activation (`acts` empty: none). Where every call takes the small-M path (uniform 4-bit,
/// the same m ≤ 32) they run as one grouped launch (plus one that gathers permuted inputs), the
/// activations applied in f32 as the outputs are stored up to 16 rows (one rounding fewer than
/// activating the stored output: results agree within it); otherwise one after the other.
pub fn prepared_linear_group(
    s: &Stream,
    ws: &mut Workspace,
    calls: &mut [(&Tensor, &PreparedQuant, &mut Tensor)],
    acts: &[Option<Activation>],
) -> Result<()> {
    if !acts.is_empty() && acts.len() != calls.len() {
        return Err(Error::bad_input(format!(
            "grouped linear: {} activations for {} calls",
            acts.len(),
            calls.len()
        )));
    }
    // The activations go into the launch up to 16 rows (the lean and stream loops). Past them
    // the ring loop's kernel with activations in its store holds more registers (142 against
    // 126 at 32 rows) and made batch-32 decode steps 1–2% slower than an activation launch
    // (H100, docs/gpu-decoder.md).
    let rows = calls.first().map_or(0, |c| c.0.rows());
    let in_launch: &[Option<Activation>] = if rows <= GROUP_LEAN_MAX_M { acts } else { &[] };
    #[cfg(feature = "cuda")]
    let grouped = try_group(s, ws, calls, in_launch)?;
    #[cfg(not(feature = "cuda"))]
    let grouped = false;
    for (i, (x, w, out)) in calls.iter_mut().enumerate() {
        if !grouped {
            prepared_linear(s, ws, x, w, out, false)?;
        }
        let done = grouped && !in_launch.is_empty();
        if let (Some(act), false) = (acts.get(i).copied().flatten(), done) {
            activate(s, act, out)?;
        }
    }
    Ok(())
}

/// Lean blocks resident per SM at m ≤ 8 (`lean_blocks_per_sm` in `csrc/linear_small.cu`).
const LEAN_RESIDENT_M8: usize = 5;

/// Shared memory the runtime keeps beside each block's own.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
const BLOCK_SMEM_RESERVED: usize = 1024;

/// Bytes of one group's staged scales in a lean block (`kSzVectors` 16-byte vectors).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
const SZ_GROUP_BYTES: usize = 1024;

/// Dynamic shared memory of a lean block of `count` tiles at m rows (its range starting at a
/// multiple of count), of a weight of `groups` groups whose tiles change group every `tpg`
/// tiles (0: not known), and whether the scales of every group the range spans are staged: its
/// x and tile group words, then those scales where they fit beside them — the launcher's
/// `lean_smem_bytes` with `lean_sz_slots`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn lean_block_smem(m: usize, count: usize, tpg: usize, groups: usize) -> (usize, bool) {
    let x = lean_x_bytes(m, count);
    let room = LEAN_MAX_SMEM.saturating_sub(x) / SZ_GROUP_BYTES;
    let need = if tpg > 0 && count.is_multiple_of(tpg) {
        count / tpg
    } else if tpg > 0 {
        count.min(count.saturating_sub(1).div_ceil(tpg) + 1)
    } else {
        count
    }
    .min(groups);
    if room >= need {
        (x + need * SZ_GROUP_BYTES, true)
    } else {
        (x, false)
    }
}

/// A term of a sum as the lean loop's staging sees it: tiles of K, tiles per group (0: not
/// known) and groups.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct StagedTerm {
    pub tiles: usize,
    pub tiles_per_group: usize,
    pub groups: usize,
}

#[cfg(feature = "cuda")]
impl StagedTerm {
    /// A prepared weight's: tiles per group where every group could hold as many (the
    /// launcher's `tiles_per_group`, set where the groups divide the tiles).
    fn of(w: &PreparedQuant) -> Self {
        let whole = w.groups > 0 && w.ntiles.is_multiple_of(w.groups);
        StagedTerm {
            tiles: w.ntiles,
            tiles_per_group: if whole { w.ntiles / w.groups } else { 0 },
            groups: w.groups,
        }
    }
}

/// The K splits of a summed launch on the lean loop at m ≤ 8 (`splits`, from [`sum_plan`]),
/// shortened where its blocks would not stage x and all their groups' scales within what
/// `LEAN_RESIDENT_M8` of them may take on an SM of `smem_per_sm` bytes: long shares of x at 8
/// rows and the scales of small groups overflow it. Falcon-7B's output and down projections at
/// 8 rows (groups of 64, 36 column blocks) took 48 tiles a block, whose 24 groups' scales did
/// not fit beside x, and 48.8 KB of staging each (4 blocks an SM, so 540 blocks ran in two
/// waves): 56 µs, 3.5× the bytes' time (H100, Nsight Compute). Shares shorten one tile at a
/// time while the grid still fits one wave of `LEAN_RESIDENT_M8` blocks per SM. Where none
/// fits, `None`: the sum is declined and its terms run one at a time, each on its own plan —
/// Command-R's output and down projections (K 8192 + 22528, N 8192) at 3–6 rows, whose long
/// shares could stage x only, took 2–12% longer a decoder step summed than in two launches
/// (H100, same run: batch 4 224.5 against 198.5 µs, batch 6 233.6 against 209.2).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn fit_lean_staging(
    m: usize,
    splits: &[usize],
    terms: &[StagedTerm],
    col_blocks: usize,
    sms: usize,
    smem_per_sm: usize,
) -> Option<Vec<usize>> {
    let budget = (smem_per_sm / LEAN_RESIDENT_M8).saturating_sub(BLOCK_SMEM_RESERVED);
    let fits = |sp: &[usize]| {
        terms.iter().zip(sp).all(|(t, &s)| {
            let count = t.tiles.div_ceil(s.max(1));
            let (bytes, staged) = lean_block_smem(m, count, t.tiles_per_group, t.groups);
            staged && bytes <= budget
        })
    };
    if m > 8 || fits(splits) {
        return Some(splits.to_vec());
    }
    let tiles: usize = terms.iter().map(|t| t.tiles).sum();
    let mut per = tiles.div_ceil(splits.iter().sum::<usize>().max(1));
    while per > 8 {
        per -= 1;
        let sp: Vec<usize> = terms.iter().map(|t| t.tiles.div_ceil(per).max(1)).collect();
        if col_blocks * sp.iter().sum::<usize>() > LEAN_RESIDENT_M8 * sms.max(1) {
            break;
        }
        if fits(&sp) {
            return Some(sp);
        }
    }
    None
}

/// How a sum of linears of one N is cut ([`prepared_linear_sum`]): the path (`SmallLean`: the
/// lean loop where every term's x fits it, `Small`: the ring loop, `Wgmma`: the warpgroup MMA,
/// each term split as alone) and each term's K split; `None` where the sum does not apply (a
/// term off these paths, rows past 32, a term's K not a whole number of the warpgroup MMA's
/// 64-row steps on it, or a forced path outside them). The combined shape (K = Σ K_i) is
/// planned as one linear would be, and its split's length in tiles cuts every term, so that
/// each block streams about as much as in that one linear.
/// Also `None` where the lean loop at m ≤ 8, meant to run one wave, would need more blocks than
/// fit at once because long shares' x overflow their staging: Command-R's output and down
/// projections at 8 rows (K 8192 + 22528, N 8192: 704 blocks for 660 places) took 237.0 µs a
/// decoder step summed against 226.5 in two launches (H100, same run).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn sum_plan(
    plan: LinearPlan,
    m: usize,
    ks: &[usize],
    n: usize,
    sms: usize,
) -> Option<(LinearPath, Vec<usize>)> {
    let k: usize = ks.iter().sum();
    let (path, split) = match plan.path {
        LinearPath::SmallLean | LinearPath::Small => (plan.path, plan.split),
        LinearPath::SmallStream => (LinearPath::SmallLean, lean_split(m, k, n, sms)),
        LinearPath::Wgmma if m <= SMALL_MAX_M && ks.iter().all(|k| k.is_multiple_of(64)) => {
            return Some((LinearPath::Wgmma, vec![1; ks.len()]));
        }
        _ => return None,
    };
    let tiles: usize = ks.iter().map(|k| k.div_ceil(32)).sum();
    let per_split = tiles.div_ceil(split.max(1)).max(1);
    let splits: Vec<usize> = ks
        .iter()
        .map(|k| k.div_ceil(32).div_ceil(per_split).max(1))
        .collect();
    let blocks = n.div_ceil(128) * splits.iter().sum::<usize>();
    if path == LinearPath::SmallLean && m <= 8 && blocks > LEAN_RESIDENT_M8 * sms.max(1) {
        return None;
    }
    Some((path, splits))
}

/// `out (+)= Σ x_i · W_iᵀ + bias` for quantized linears of one N, in one launch (plus one that
/// gathers permuted inputs) where every term takes the small-M path (uniform 4-bit, the same
/// m ≤ 32; at 17–32 rows on Hopper the warpgroup MMA, its K splits as each term's alone): the
/// terms' K splits are summed in a fixed order by the last block of each column block (of
/// each tile), then `bias` (not the weights' own biases) is added, and with `accumulate` the
/// existing output — a parallel block's residual update, `x += attn · W_oᵀ + act · W_downᵀ`,
/// without a second pass over x. Ok(false) where the launch does not apply: nothing ran, and
/// the caller runs the terms one by one.
pub fn prepared_linear_sum(
    s: &Stream,
    ws: &mut Workspace,
    terms: &[(&Tensor, &PreparedQuant)],
    bias: Option<&Tensor>,
    out: &mut Tensor,
    accumulate: bool,
) -> Result<bool> {
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (s, ws, terms, bias, out, accumulate);
        Ok(false)
    }
    #[cfg(feature = "cuda")]
    {
        // PARADEC_LINEAR_SUM=off declines every sum (its callers then launch one term at a time),
        // for comparisons.
        static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *OFF.get_or_init(|| std::env::var("PARADEC_LINEAR_SUM").is_ok_and(|v| v == "off")) {
            return Ok(false);
        }
        let max = crate::cuda::ffi::paradec_linear_group_limits::PARADEC_LINEAR_GROUP_MAX as usize;
        let (Stream::Cuda(cs), Some((x0, w0))) = (s, terms.first()) else {
            return Ok(false);
        };
        let Device::Cuda(dev) = out.device() else {
            return Ok(false);
        };
        let (m, dtype, n) = (x0.rows(), x0.dtype(), w0.n);
        if terms.len() > max || out.dtype() != dtype || out.numel() != m * n {
            return Ok(false);
        }
        for (x, w) in terms {
            if x.dtype() != dtype || w.n != n || !small_launch_fits(x, w, m, out) {
                return Ok(false);
            }
        }
        let ks: Vec<usize> = terms.iter().map(|(_, w)| w.k).collect();
        let k: usize = ks.iter().sum();
        let plan = group_plan_for(dev, m, k, n, LinearFormat::Quant { bits: 4 })?;
        let (sms, _, smem_per_sm) = device_facts(dev)?;
        let Some((path, splits)) = sum_plan(plan, m, &ks, n, sms) else {
            return Ok(false);
        };
        let splits = if path == LinearPath::SmallLean {
            let staged: Vec<StagedTerm> = terms.iter().map(|(_, w)| StagedTerm::of(w)).collect();
            match fit_lean_staging(m, &splits, &staged, n.div_ceil(128), sms, smem_per_sm) {
                Some(fitted) => fitted,
                None => return Ok(false),
            }
        } else {
            splits
        };
        let kterms: Vec<crate::cuda::kernels::QuantLinearTerm<'_>> = terms
            .iter()
            .zip(&splits)
            .map(|((x, w), &split)| crate::cuda::kernels::QuantLinearTerm {
                x,
                w: crate::cuda::kernels::QuantWeightArgs::of(w),
                split,
            })
            .collect();
        let need = crate::cuda::kernels::quant_linear_sum_scratch(dtype, m, &kterms);
        let mut scratch = ws.scratch(&[need.max(1)], crate::DType::U8)?;
        crate::cuda::kernels::quant_linear_sum(
            m,
            &kterms,
            bias,
            out,
            accumulate,
            path,
            &mut scratch,
            ws.zeroed_counters(),
            cs,
        )?;
        Ok(true)
    }
}

/// Tiles a block of a grouped lean launch takes at 1–8 rows (`group_lean_splits`).
const GROUP_TILES: usize = 64;

/// The K splits of a grouped launch on the lean loop, whose calls of K `ks` would each take
/// `own` alone: blocks of about 64 tiles for every call at 1–8 rows — in a group the calls
/// together fill the GPU, and each one's own split (a wave's worth of blocks for it alone: 16
/// of 8 tiles for GPT-J's q, k and v) leaves many short blocks. From H100 sweeps of the decoder
/// step over 13–64 tiles (docs/gpu-decoder.md, "The grouped input projections at 64 tiles a
/// block up to 8 rows"): 64 is the best or within 0.6% of it at every batch of 1–8 rows.
/// Past 8 rows (another kernel, not swept) the calls keep their own splits. `forced` (tiles)
/// overrides the rule.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn group_lean_splits(m: usize, ks: &[usize], own: &[usize], forced: Option<usize>) -> Vec<usize> {
    let tiles = match forced {
        Some(t) => t,
        None if m <= 8 => GROUP_TILES,
        None => return own.to_vec(),
    };
    ks.iter()
        .map(|k| k.div_ceil(32).div_ceil(tiles.max(1)).max(1))
        .collect()
}

/// Whether x · Wᵀ into `out` can join a grouped or summed small-M launch of m rows: x of m rows
/// and K columns, of the weight's dtype, x, the weight and `out` on one device, and the weight
/// on the small-M path.
#[cfg(feature = "cuda")]
fn small_launch_fits(x: &Tensor, w: &PreparedQuant, m: usize, out: &Tensor) -> bool {
    x.rows() == m
        && x.dtype() == w.dtype
        && w.device() == x.device()
        && out.device() == x.device()
        && x.cols() == w.k
        && small_path_takes(LinearFormat::Quant { bits: w.bits }, m)
}

/// The grouped launch of [`prepared_linear_group`] when it applies (false: it does not), with
/// the activations of `acts` (empty: none) in its store. Calls whose plan is the warpgroup MMA
/// (17–32 rows on Hopper) go in one grouped launch of that kernel, the others in one of the
/// small-M path's: each call's result is its single call's either way.
#[cfg(feature = "cuda")]
fn try_group(
    s: &Stream,
    ws: &mut Workspace,
    calls: &mut [(&Tensor, &PreparedQuant, &mut Tensor)],
    acts: &[Option<Activation>],
) -> Result<bool> {
    let max = crate::cuda::ffi::paradec_linear_group_limits::PARADEC_LINEAR_GROUP_MAX as usize;
    let (Stream::Cuda(cs), Some((x0, _, _))) = (s, calls.first()) else {
        return Ok(false);
    };
    let (m, dtype) = (x0.rows(), x0.dtype());
    if calls.len() < 2 || calls.len() > max {
        return Ok(false);
    }
    let mut plans = Vec::with_capacity(calls.len());
    for (x, w, out) in calls.iter() {
        let dev = match x.device() {
            Device::Cuda(d) => d,
            Device::Cpu => return Ok(false),
        };
        if x.dtype() != dtype || !small_launch_fits(x, w, m, out) {
            return Ok(false);
        }
        let plan = group_plan_for(dev, m, w.k, w.n, LinearFormat::Quant { bits: w.bits })?;
        if !matches!(
            plan.path,
            LinearPath::Small | LinearPath::SmallLean | LinearPath::SmallStream | LinearPath::Wgmma
        ) {
            return Ok(false);
        }
        plans.push((plan, dev, w.k, w.n));
    }
    let on_wgmma: Vec<bool> = plans
        .iter()
        .map(|p| p.0.path == LinearPath::Wgmma)
        .collect();
    // The warpgroup MMA has no activation in its store.
    if on_wgmma.contains(&true) && acts.iter().any(Option::is_some) {
        return Ok(false);
    }
    let Some(small) = small_group_splits(m, &mut plans, &on_wgmma)? else {
        return Ok(false);
    };
    let mut wgmma_calls = Vec::new();
    let mut small_calls = Vec::new();
    for (i, (x, w, out)) in calls.iter_mut().enumerate() {
        let (path, split, group) = match on_wgmma[i] {
            true => (LinearPath::Wgmma, plans[i].0.split, &mut wgmma_calls),
            false => (small.0, small.1[i], &mut small_calls),
        };
        group.push(crate::cuda::kernels::QuantLinearCall {
            x,
            w: crate::cuda::kernels::QuantWeightArgs::of(w),
            bias: w.bias.as_ref(),
            out,
            accumulate: false,
            split,
            path,
            act: acts.get(i).copied().flatten(),
        });
    }
    for mut group in [wgmma_calls, small_calls] {
        if group.is_empty() {
            continue;
        }
        let need = crate::cuda::kernels::quant_linear_group_scratch(dtype, m, &group);
        let mut scratch = if need > 0 {
            Some(ws.scratch(&[need], crate::DType::U8)?)
        } else {
            None
        };
        crate::cuda::kernels::quant_linear_group(
            m,
            &mut group,
            scratch.as_mut(),
            ws.zeroed_counters(),
            cs,
        )?;
    }
    Ok(true)
}

/// The small-M path's loop and every call's K split (by call index; the warpgroup-MMA calls,
/// `on_wgmma`, are left out) for a grouped launch of the calls' `plans` (plan, device, K, N);
/// `None` where their loops cannot share one launch.
#[cfg(feature = "cuda")]
fn small_group_splits(
    m: usize,
    plans: &mut [(LinearPlan, usize, usize, usize)],
    on_wgmma: &[bool],
) -> Result<Option<(LinearPath, Vec<usize>)>> {
    let small: Vec<usize> = (0..plans.len()).filter(|&i| !on_wgmma[i]).collect();
    let Some(&first) = small.first() else {
        return Ok(Some((LinearPath::Small, vec![1; plans.len()])));
    };
    // One loop for the whole group. Where the plans mix the lean and stream loops (each call's
    // own grid chose), the stream calls take the lean loop and its K split: the group's grid is
    // the sum of its calls'.
    let lean_and_stream = small
        .iter()
        .any(|&i| plans[i].0.path == LinearPath::SmallLean)
        && small
            .iter()
            .any(|&i| plans[i].0.path == LinearPath::SmallStream);
    if lean_and_stream {
        for &i in &small {
            let (plan, dev, k, n) = &mut plans[i];
            if plan.path == LinearPath::SmallStream {
                *plan = LinearPlan {
                    path: LinearPath::SmallLean,
                    split: lean_split(m, *k, *n, device_props(*dev)?.0),
                };
            }
        }
    }
    let path = plans[first].0.path;
    if small.iter().any(|&i| plans[i].0.path != path) {
        return Ok(None);
    }
    // PARADEC_GROUP_TILES=T (for comparisons): every lean call's blocks take about T tiles.
    static GROUP_TILES: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = *GROUP_TILES.get_or_init(|| {
        std::env::var("PARADEC_GROUP_TILES")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&t| t > 0)
    });
    let mut splits = vec![1; plans.len()];
    let chosen = if path == LinearPath::SmallLean {
        let ks: Vec<usize> = small.iter().map(|&i| plans[i].2).collect();
        let own: Vec<usize> = small.iter().map(|&i| plans[i].0.split).collect();
        group_lean_splits(m, &ks, &own, forced)
    } else {
        small.iter().map(|&i| plans[i].0.split).collect()
    };
    for (&i, split) in small.iter().zip(chosen) {
        splits[i] = split;
    }
    Ok(Some((path, splits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H200: (usize, (u32, u32)) = (132, (9, 0));

    #[test]
    fn small_m_streams_large_m_uses_tensor_cores() {
        let q4 = LinearFormat::Quant { bits: 4 };
        // Uniform 4-bit up to 32 rows: the tensor-core small-M path.
        for m in [1, 2, 3, 7, 8, 16, 17, 31, 32] {
            // The lean loop where its x fits (4096 columns of x: every m), but past 16 rows
            // the warpgroup MMA where it runs.
            let want = if m <= 16 {
                LinearPath::SmallLean
            } else {
                LinearPath::Wgmma
            };
            let p = select_linear(m, 4096, 4096, q4, H200.0, H200.1);
            assert_eq!(p.path, want, "m = {m}");
            // Without the wgmma kernel (an sm_80 A100, or a build without sm_90a code), the
            // lean loop at every m: mma.sync.
            let lean = LinearPath::SmallLean;
            assert_eq!(select_linear(m, 4096, 4096, q4, 108, (8, 0)).path, lean);
            let p = select_linear_with(m, 4096, 4096, q4, H200.0, H200.1, false);
            assert_eq!(p.path, lean, "m = {m}");
        }
        // At 17–20 rows, N wider than the SMs' column blocks stays on the lean loop where K is
        // long; K that is not a whole number of 64-row steps too.
        assert_eq!(
            select_linear(20, 8192, 28672, q4, H200.0, H200.1).path,
            LinearPath::SmallLean
        );
        for m in [17, 20] {
            let p = select_linear(m, 4096, 28672, q4, H200.0, H200.1);
            assert_eq!(p.path, LinearPath::Wgmma, "m = {m}");
        }
        assert_eq!(
            select_linear(24, 8192, 28672, q4, H200.0, H200.1).path,
            LinearPath::Wgmma
        );
        assert_eq!(
            select_linear(32, 4128, 4096, q4, H200.0, H200.1).path,
            LinearPath::SmallLean
        );
        // Other widths and mixed widths stream on CUDA cores up to 8 rows.
        for fmt in [
            LinearFormat::Quant { bits: 3 },
            LinearFormat::Quant { bits: 8 },
            LinearFormat::Quant { bits: 0 },
        ] {
            for m in 1..=8 {
                let p = select_linear(m, 4096, 4096, fmt, H200.0, H200.1);
                assert_eq!(p.path, LinearPath::Gemv, "{fmt:?} m = {m}");
            }
            for m in [9, 16, 32] {
                let p = select_linear(m, 4096, 4096, fmt, H200.0, H200.1);
                assert_eq!(p.path, LinearPath::Wgmma, "{fmt:?} m = {m}");
            }
        }
        // Beyond: the tensor-core GEMM (its launcher takes wgmma where it applies).
        for m in [33, 64, 2048] {
            assert_eq!(
                select_linear(m, 4096, 4096, q4, H200.0, H200.1),
                LinearPlan {
                    path: LinearPath::Wgmma,
                    split: 1
                }
            );
        }
        // Dense weights take the vendor GEMM at every m on sm_80 and later, the GEMV before.
        for m in [1, 8, 9, 64, 2048] {
            let p = select_linear(m, 4096, 4096, LinearFormat::Dense, H200.0, H200.1);
            assert_eq!((p.path, p.split), (LinearPath::Vendor, 1), "m = {m}");
            let p = select_linear(m, 4096, 4096, LinearFormat::Dense, 80, (7, 5));
            assert_eq!(p.path, LinearPath::Gemv, "m = {m}");
        }
        // Before sm_80 there are no mma.sync tiles: always the GEMV.
        assert_eq!(
            select_linear(512, 4096, 4096, q4, 80, (7, 5)).path,
            LinearPath::Gemv
        );
        assert_eq!(
            select_linear(1, 4096, 4096, q4, 80, (7, 5)).path,
            LinearPath::Gemv
        );
    }

    #[test]
    fn small_path_split_fills_the_gpu() {
        let q4 = LinearFormat::Quant { bits: 4 };
        for (k, n) in [
            (1024, 1024),
            (4096, 4096),
            (4096, 12288),
            (16384, 4096),
            (8192, 28672),
            (32768, 1024),
            (4096, 32768),
        ] {
            for m in [1, 8, 16, 32] {
                let p = select_linear_with(m, k, n, q4, H200.0, H200.1, false);
                assert!(matches!(p.path, LinearPath::Small | LinearPath::SmallLean));
                let blocks = n.div_ceil(128) * p.split;
                let tiles_per_block = k.div_ceil(32).div_ceil(p.split);
                // Every SM gets a block, unless K is too short to split further.
                assert!(
                    blocks >= H200.0 || tiles_per_block < 16,
                    "{k}×{n} m={m}: {blocks} blocks of {tiles_per_block} tiles"
                );
                // Each block keeps its load ring (8 tiles) busy.
                assert!(tiles_per_block >= 8 || p.split == 1, "{k}×{n}: {p:?}");
                assert!(p.split <= 64);
            }
            // More rows, no more split (the partials grow with m) than x's staging needs.
            let s1 = select_linear_with(1, k, n, q4, H200.0, H200.1, false).split;
            let s32 = select_linear_with(32, k, n, q4, H200.0, H200.1, false).split;
            let staged = s32 > s1 && !lean_x_fits(32, k.div_ceil(32).div_ceil(s32 - 1));
            assert!(s32 <= s1 || staged, "{k}×{n}: {s32} > {s1}");
            // A block's share of K stays near 32 tiles (the measured best), whatever the grid.
            let per_block = k.div_ceil(32).div_ceil(s1);
            assert!(
                per_block <= 32 || s1 == 64,
                "{k}×{n}: {per_block} tiles per block"
            );
        }
        // Wide N alone fills the GPU: only K's length splits it (about 32 tiles a block).
        assert_eq!(select_linear(1, 1024, 131072, q4, H200.0, H200.1).split, 1);
        assert_eq!(select_linear(1, 8192, 131072, q4, H200.0, H200.1).split, 8);
    }

    #[test]
    fn lean_split_fills_one_wave_with_long_shares() {
        let q4 = LinearFormat::Quant { bits: 4 };
        // Command-R's down projection: 64 column blocks, 8 splits fill one wave of 4 blocks
        // per SM (88 tiles a block); past 8 rows the ~32-tile blocks (22 splits).
        for (m, split) in [(1, 8), (4, 8), (8, 8), (9, 22), (16, 22)] {
            let p = select_linear(m, 22528, 8192, q4, H200.0, H200.1);
            assert_eq!((p.path, p.split), (LinearPath::SmallLean, split), "m = {m}");
        }
        // Wide N (fewer than 4 splits fill the GPU) keeps the small path's ~32-tile shares.
        assert_eq!(select_linear(1, 8192, 28672, q4, H200.0, H200.1).split, 8);
        // Whatever the shape, the lean loop's x fits its staging at the split it is given.
        for (k, n) in [
            (1024, 1024),
            (4096, 4096),
            (16384, 4096),
            (22528, 8192),
            (32768, 1024),
            (65536, 512),
            (8192, 28672),
        ] {
            for m in 1..=LEAN_MAX_M {
                let p = select_linear_with(m, k, n, q4, H200.0, H200.1, false);
                if p.path != LinearPath::SmallLean {
                    continue;
                }
                let per = k.div_ceil(32).div_ceil(p.split);
                assert!(lean_x_fits(m, per), "{k}×{n} m = {m}: {per} tiles a block");
            }
        }
    }

    #[test]
    fn stream_loop_where_the_lean_grid_ends_in_a_short_wave() {
        let q4 = LinearFormat::Quant { bits: 4 };
        // Falcon-7B's dense_4h_to_h: 36 column blocks × 17 splits = 612 blocks, 84 in a second
        // wave of 528.
        for m in [1, 8, 16] {
            let p = select_linear(m, 18176, 4544, q4, H200.0, H200.1);
            assert_eq!((p.path, p.split), (LinearPath::SmallStream, 528), "m = {m}");
        }
        // Past 16 rows (no stream loop there) the lean loop, whatever the grid, where the
        // warpgroup MMA does not run.
        assert_eq!(
            select_linear_with(17, 18176, 4544, q4, H200.0, H200.1, false).path,
            LinearPath::SmallLean
        );
        // Grids that fill their waves, or most of the last one, stay on the lean loop.
        for (k, n) in [
            (4096, 4096),
            (4096, 12288),
            (16384, 4096),
            (22528, 8192),
            (8192, 28672),
        ] {
            for m in [1, 8, 16] {
                let p = select_linear_with(m, k, n, q4, H200.0, H200.1, false);
                assert_eq!(p.path, LinearPath::SmallLean, "{k}×{n} m = {m}");
            }
        }
    }

    #[test]
    fn split_fills_the_gpu_at_decode() {
        // The CUDA-core GEMV's split (3-bit weights take it).
        let q3 = LinearFormat::Quant { bits: 3 };
        for (k, n) in [
            (1024, 1024),
            (4096, 4096),
            (16384, 4096),
            (32768, 1024),
            (4096, 32768),
        ] {
            let p = select_linear(1, k, n, q3, H200.0, H200.1);
            let blocks = n.div_ceil(128) * p.split;
            let tiles_per_block = k.div_ceil(32).div_ceil(p.split);
            assert!(
                blocks >= H200.0 || tiles_per_block <= 15,
                "{k}×{n}: {blocks} blocks of {tiles_per_block} tiles"
            );
            assert!(tiles_per_block >= 8 || p.split == 1, "{k}×{n}: {p:?}");
        }
        // Wide N needs little split; dense never splits.
        assert!(select_linear(1, 4096, 32768, q3, 132, (9, 0)).split <= 8);
        assert_eq!(
            select_linear(1, 32768, 1024, LinearFormat::Dense, 132, (9, 0)).split,
            1
        );
    }

    #[test]
    fn group_lean_splits_take_64_tiles_up_to_8_rows() {
        // GPT-J's q, k, v (K 4096) and fc_in (K 4096), each alone 16, 16, 16 and 4 splits.
        let ks = [4096, 4096, 4096, 4096];
        let own = [16, 16, 16, 4];
        assert_eq!(group_lean_splits(1, &ks, &own, None), vec![2, 2, 2, 2]);
        assert_eq!(group_lean_splits(8, &ks, &own, None), vec![2, 2, 2, 2]);
        assert_eq!(group_lean_splits(9, &ks, &own, Some(32)), vec![4, 4, 4, 4]);
        assert_eq!(group_lean_splits(9, &ks, &own, None), own.to_vec());
        assert_eq!(group_lean_splits(9, &ks, &own, Some(64)), vec![2, 2, 2, 2]);
        // Short K: one split; K not a whole number of blocks: rounded up.
        assert_eq!(group_lean_splits(1, &[96, 4544], &[1, 9], None), vec![1, 3]);
    }

    #[test]
    fn lean_staging_keeps_five_blocks_an_sm_at_eight_rows() {
        // An H100: 132 SMs, 228 KiB of shared memory each.
        let (sms, smem) = (132, 228 * 1024);
        let term = |k: usize, group: usize| StagedTerm {
            tiles: k / 32,
            tiles_per_group: group / 32,
            groups: k / group,
        };
        // The launcher's staging: x of 8 rows, the group words, the scales of the groups a
        // share spans where they all fit (Falcon-7B's 48-tile shares of groups of 64: 24 of
        // them do not fit beside x, so none are staged).
        assert_eq!(lean_block_smem(8, 48, 2, 284), (25_280, false));
        assert_eq!(lean_block_smem(8, 41, 2, 284), (21_168 + 21 * 1024, true));
        assert_eq!(lean_block_smem(8, 36, 2, 71), (19_088 + 18 * 1024, true));
        assert_eq!(
            lean_block_smem(1, 48, 4, 284),
            ((196 + 12) * 16 + 12 * 1024, true)
        );
        // Falcon-7B's output and down projections at 8 rows (36 column blocks): the plan's
        // [3, 12] splits need 48.8 KB a block; shorter shares fit five blocks an SM in one wave.
        let falcon = [term(4544, 64), term(18176, 64)];
        let sp = fit_lean_staging(8, &[3, 12], &falcon, 36, sms, smem).unwrap();
        assert_eq!(sp, vec![4, 14]);
        let budget = smem / LEAN_RESIDENT_M8 - BLOCK_SMEM_RESERVED;
        for (t, s) in falcon.iter().zip(&sp) {
            let (bytes, staged) = lean_block_smem(8, t.tiles.div_ceil(*s), 2, t.groups);
            assert!(staged && bytes <= budget);
        }
        assert!(36 * sp.iter().sum::<usize>() <= LEAN_RESIDENT_M8 * sms);
        // At one row, and GPT-J-6B's groups of 128 at 8 rows, the staging already fits: kept.
        let keep = Some(vec![3, 12]);
        assert_eq!(fit_lean_staging(1, &[3, 12], &falcon, 36, sms, smem), keep);
        let gptj = [term(4096, 128), term(16384, 128)];
        let fitted = fit_lean_staging(8, &[4, 13], &gptj, 32, sms, smem);
        assert_eq!(fitted, Some(vec![4, 13]));
        // Past 8 rows (other kernels), untouched.
        assert_eq!(fit_lean_staging(9, &[3, 12], &falcon, 36, sms, smem), keep);
        // Where no split stages every scale within one wave: none (the sum is declined) —
        // fewer SMs, or Command-R's output and down projections at 3 and 4 rows (64 column
        // blocks), but not at 2.
        assert_eq!(fit_lean_staging(8, &[3, 12], &falcon, 36, 100, smem), None);
        let command_r = [term(8192, 128), term(22528, 128)];
        assert_eq!(
            fit_lean_staging(3, &[3, 6], &command_r, 64, sms, smem),
            None
        );
        assert_eq!(
            fit_lean_staging(4, &[3, 6], &command_r, 64, sms, smem),
            None
        );
        assert!(fit_lean_staging(2, &[3, 6], &command_r, 64, sms, smem).is_some());
    }

    #[test]
    fn sum_plan_cuts_every_term_by_the_combined_split() {
        let q4 = LinearFormat::Quant { bits: 4 };
        // GPT-J's output and down projections (K 4096 + 16384, N 4096) at one row on an H200.
        // (Alone, the combined shape would take the stream loop; a sum takes the lean loop's
        // one wave.)
        let plan = select_linear(1, 20480, 4096, q4, H200.0, H200.1);
        let split = match plan.path {
            LinearPath::SmallStream => lean_split(1, 20480, 4096, H200.0),
            LinearPath::SmallLean => plan.split,
            p => panic!("{p:?}"),
        };
        let (path, splits) = sum_plan(plan, 1, &[4096, 16384], 4096, H200.0).unwrap();
        assert_eq!(path, LinearPath::SmallLean);
        let per = 640usize.div_ceil(split);
        assert_eq!(splits, vec![128usize.div_ceil(per), 512usize.div_ceil(per)]);
        // About the combined split in all, each term at least one.
        let total: usize = splits.iter().sum();
        assert!(total >= split && total <= split + 1, "{total} vs {split}");
        let (_, tiny) = sum_plan(plan, 1, &[32, 16384], 4096, H200.0).unwrap();
        assert_eq!(tiny[0], 1);
        // The ring loop past 16 rows; the stream loop's plan becomes the lean loop's split.
        let ring = LinearPlan {
            path: LinearPath::Small,
            split: 7,
        };
        assert_eq!(
            sum_plan(ring, 20, &[4096, 4096], 4096, 132),
            Some((LinearPath::Small, vec![4, 4]))
        );
        // Past 16 rows a sum takes the ring loop and its split, even where one linear of the
        // combined shape takes the lean loop: GPT-J's at 32 rows.
        let one = select_linear_with(32, 20480, 4096, q4, H200.0, H200.1, false);
        assert_eq!(one.path, LinearPath::SmallLean);
        let plan = group_plan(one, 32);
        assert_eq!(
            plan,
            LinearPlan {
                path: LinearPath::Small,
                split: one.split
            }
        );
        let (path, splits) = sum_plan(plan, 32, &[4096, 16384], 4096, H200.0).unwrap();
        let per = 640usize.div_ceil(one.split);
        assert_eq!(path, LinearPath::Small);
        assert_eq!(splits, vec![128usize.div_ceil(per), 512usize.div_ceil(per)]);
        let stream = LinearPlan {
            path: LinearPath::SmallStream,
            split: 528,
        };
        let (path, splits) = sum_plan(stream, 1, &[4544, 18176], 4544, 132).unwrap();
        let want = lean_split(1, 4544 + 18176, 4544, 132);
        assert!(
            path == LinearPath::SmallLean && splits.iter().sum::<usize>() <= want + 1,
            "{splits:?} vs {want}"
        );
        // More lean blocks at 8 rows than fit at once (x of long shares overflows the
        // staging): none. Command-R's output and down projections on an H100.
        let plan = select_linear(8, 30720, 8192, q4, 132, (9, 0));
        assert_eq!(sum_plan(plan, 8, &[8192, 22528], 8192, 132), None);
        let plan = select_linear(1, 30720, 8192, q4, 132, (9, 0));
        assert!(sum_plan(plan, 1, &[8192, 22528], 8192, 132).is_some());
        // The warpgroup MMA up to 32 rows where every term's K is a whole number of its 64-row
        // steps (each term split as alone); past 32 rows none.
        let wgmma = LinearPlan {
            path: LinearPath::Wgmma,
            split: 1,
        };
        assert_eq!(
            sum_plan(wgmma, 32, &[4096, 16384], 4096, 132),
            Some((LinearPath::Wgmma, vec![1, 1]))
        );
        assert_eq!(sum_plan(wgmma, 32, &[4096, 4128], 4096, 132), None);
        assert_eq!(sum_plan(wgmma, 64, &[4096, 16384], 4096, 132), None);
    }

    #[test]
    fn grouped_and_summed_launches_past_16_rows() {
        let q4 = LinearFormat::Quant { bits: 4 };
        let (k, n) = (4096, 12288);
        // A call on the warpgroup MMA keeps it (its grouped and summed launches run each
        // call's own grid and splits).
        for m in [17, 24, 32] {
            let one = select_linear(m, k, n, q4, H200.0, H200.1);
            assert_eq!(one.path, LinearPath::Wgmma, "m = {m}");
            assert_eq!(group_plan(one, m), one, "m = {m}");
            let (path, _) = sum_plan(one, m, &[k / 2, k / 2], n, H200.0).unwrap();
            assert_eq!(path, LinearPath::Wgmma, "m = {m}");
        }
        // Where it does not run, the lean loop's calls take the ring.
        for m in [1, 8, 16, 17, 24, 32, 33, 64] {
            let one = select_linear_with(m, k, n, q4, H200.0, H200.1, false);
            let grouped = group_plan(one, m);
            if (17..=32).contains(&m) {
                // The ring at the single call's own split: the same bits as the call alone.
                let want = LinearPlan {
                    path: LinearPath::Small,
                    split: one.split,
                };
                assert_eq!(one.path, LinearPath::SmallLean, "m = {m}");
                assert_eq!(grouped, want, "m = {m}");
            } else {
                assert_eq!(grouped, one, "m = {m}");
            }
        }
    }

    #[test]
    fn override_parses() {
        assert_eq!(
            parse_linear_override("gemv"),
            Some((LinearPath::Gemv, None))
        );
        assert_eq!(parse_linear_override("MMA"), Some((LinearPath::Mma, None)));
        assert_eq!(
            parse_linear_override("wgmma"),
            Some((LinearPath::Wgmma, None))
        );
        assert_eq!(
            parse_linear_override("gemv:4"),
            Some((LinearPath::Gemv, Some(4)))
        );
        assert_eq!(
            parse_linear_override("small:6"),
            Some((LinearPath::Small, Some(6)))
        );
        assert_eq!(
            parse_linear_override("Small"),
            Some((LinearPath::Small, None))
        );
        assert_eq!(
            parse_linear_override("lean:2"),
            Some((LinearPath::SmallLean, Some(2)))
        );
        assert_eq!(
            parse_linear_override("stream"),
            Some((LinearPath::SmallStream, None))
        );
        assert_eq!(
            parse_linear_override("vendor"),
            Some((LinearPath::Vendor, None))
        );
        assert_eq!(parse_linear_override("cublas"), None);
    }
}
