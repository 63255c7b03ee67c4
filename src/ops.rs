//! The one dispatch point: each op checks shapes, dtypes and devices once, then calls the CPU
//! reference (`cpu::`) or the CUDA backend by the tensors' device. Layers call `ops`, never a
//! backend directly, so a layer is written once for both devices.
//!
//! Tensors are row-major; "rows × cols" ops view a tensor as [numel / cols, cols].

use crate::cpu;
use crate::cpu::norm::NormAffine;
use crate::tensor::{Device, HostData, Tensor};
use crate::vocab::{
    Activation, Affine, AttnMasking, AttnShape, CacheSlots, NormKind, QkvLayout, RotaryArgs,
};
use crate::{Error, Result, Stream};

fn float(name: &str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::bad_input(format!(
            "{name}: expected a float tensor, got {}",
            t.dtype()
        )));
    }
    Ok(())
}

fn numel(name: &str, t: &Tensor, n: usize) -> Result<()> {
    if t.numel() != n {
        return Err(Error::bad_input(format!(
            "{name}: expected {n} elements, got shape {:?}",
            t.shape()
        )));
    }
    Ok(())
}

fn same_device(ts: &[(&str, &Tensor)]) -> Result<Device> {
    let dev = ts[0].1.device();
    for (n, t) in ts {
        if t.device() != dev {
            return Err(Error::bad_input(format!(
                "{n} is on {} but {} is on {dev}",
                t.device(),
                ts[0].0
            )));
        }
    }
    Ok(dev)
}

fn gpu_missing(op: &str) -> Error {
    Error::unsupported(format!("{op} has no CUDA kernel yet; run it on the CPU"))
}

/// The CUDA stream of a call on device tensors.
#[cfg(feature = "cuda")]
fn cuda_stream(s: &Stream) -> Result<&crate::cuda::CudaStream> {
    match s {
        Stream::Cuda(c) => Ok(c),
        Stream::Host => Err(Error::bad_input(
            "an op on CUDA tensors needs a CUDA stream, got the host stream",
        )),
    }
}

/// Runs a CUDA launcher in builds with the `cuda` feature; without it no tensor can be on a
/// device, so the arm only reports that.
macro_rules! on_cuda {
    ($s:ident => $call:expr) => {{
        #[cfg(feature = "cuda")]
        let r: Result<()> = {
            let $s = cuda_stream($s)?;
            $call
        };
        #[cfg(not(feature = "cuda"))]
        let r: Result<()> = {
            let _ = $s;
            Err(Error::NoDevice(
                "paradec was built without the `cuda` feature".into(),
            ))
        };
        r
    }};
}

/// Runs `f` on the f32 values of a host tensor and writes them back (in place for f32).
fn with_f32_mut<R>(t: &mut Tensor, f: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
    if let Ok(s) = t.as_f32_mut() {
        return Ok(f(s));
    }
    let mut v = t.f32_values()?.into_owned();
    let r = f(&mut v);
    t.set_f32_values(&v)?;
    Ok(r)
}

fn opt_values(t: Option<&Tensor>) -> Result<Option<std::borrow::Cow<'_, [f32]>>> {
    t.map(|t| t.f32_values()).transpose()
}

/// Checks a norm's affine tensors against the row width.
fn check_affine(a: &Affine<'_>, what: &str, cols: usize) -> Result<()> {
    for (n, t) in [("weight", a.weight), ("bias", a.bias)] {
        if let Some(t) = t {
            float(&format!("{what} {n}"), t)?;
            numel(&format!("{what} {n}"), t, cols)?;
        }
    }
    Ok(())
}

/// `out = norm(x)` over rows of `x.cols()`.
pub fn norm(
    s: &Stream,
    kind: NormKind,
    x: &Tensor,
    affine: &Affine<'_>,
    eps: f32,
    out: &mut Tensor,
) -> Result<()> {
    float("norm input", x)?;
    let cols = x.cols();
    check_affine(affine, "norm", cols)?;
    numel("norm output", out, x.numel())?;
    match same_device(&[("norm input", x), ("norm output", out)])? {
        Device::Cpu => {
            let xv = x.f32_values()?;
            let (w, b) = (opt_values(affine.weight)?, opt_values(affine.bias)?);
            let a = NormAffine {
                weight: w.as_deref(),
                bias: b.as_deref(),
            };
            with_f32_mut(out, |o| {
                cpu::norm::norm(kind, &xv, x.rows(), cols, a, eps, o)
            })
        }
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::norm(
            kind,
            x,
            x.rows(),
            cols,
            *affine,
            eps,
            out,
            s
        )),
    }
}

/// Two norms of the same rows: `out_a = norm_a(x)`, `out_b = norm_b(x)`.
pub fn norm2(
    s: &Stream,
    kind: NormKind,
    x: &Tensor,
    affine_a: &Affine<'_>,
    affine_b: &Affine<'_>,
    eps: f32,
    out_a: &mut Tensor,
    out_b: &mut Tensor,
) -> Result<()> {
    if x.device() == Device::Cpu {
        norm(s, kind, x, affine_a, eps, out_a)?;
        return norm(s, kind, x, affine_b, eps, out_b);
    }
    float("norm input", x)?;
    let cols = x.cols();
    check_affine(affine_a, "first norm", cols)?;
    check_affine(affine_b, "second norm", cols)?;
    numel("first norm output", out_a, x.numel())?;
    numel("second norm output", out_b, x.numel())?;
    // One read of x for both outputs.
    on_cuda!(s => crate::cuda::kernels::norm2(
        kind,
        x,
        x.rows(),
        cols,
        *affine_a,
        *affine_b,
        eps,
        out_a,
        out_b,
        s
    ))
}

/// Norm of each head's `head_dim` features; `weight`/`bias` hold either one row shared by all
/// heads ([head_dim]) or one row per head ([heads, head_dim]). In place on x [tokens, heads·head_dim].
pub fn head_norm(
    _s: &Stream,
    kind: NormKind,
    x: &mut Tensor,
    heads: usize,
    head_dim: usize,
    affine: &Affine<'_>,
    eps: f32,
) -> Result<()> {
    float("head norm input", x)?;
    if heads == 0 || head_dim == 0 || !x.numel().is_multiple_of(heads * head_dim) {
        return Err(Error::bad_input(format!(
            "head norm: shape {:?} is not a whole number of {heads} heads × {head_dim}",
            x.shape()
        )));
    }
    for (n, t) in [("weight", affine.weight), ("bias", affine.bias)] {
        if let Some(t) = t {
            float(&format!("head norm {n}"), t)?;
            if t.numel() != head_dim && t.numel() != heads * head_dim {
                return Err(Error::bad_input(format!(
                    "head norm {n}: expected [{head_dim}] or [{heads}, {head_dim}], got {:?}",
                    t.shape()
                )));
            }
        }
    }
    match x.device() {
        Device::Cpu => {
            let (w, b) = (opt_values(affine.weight)?, opt_values(affine.bias)?);
            let rows = x.numel() / head_dim;
            with_f32_mut(x, |xv| {
                let mut tmp = vec![0.0f32; head_dim];
                for r in 0..rows {
                    let h = r % heads;
                    let a = NormAffine {
                        weight: head_row(w.as_deref(), h, head_dim),
                        bias: head_row(b.as_deref(), h, head_dim),
                    };
                    let row = &mut xv[r * head_dim..(r + 1) * head_dim];
                    cpu::norm::norm(kind, row, 1, head_dim, a, eps, &mut tmp);
                    row.copy_from_slice(&tmp);
                }
            })
        }
        Device::Cuda(_) => Err(gpu_missing("head_norm")),
    }
}

/// Head `h`'s row of a per-head parameter, or the shared row.
fn head_row(v: Option<&[f32]>, h: usize, head_dim: usize) -> Option<&[f32]> {
    v.map(|v| {
        if v.len() == head_dim {
            v
        } else {
            &v[h * head_dim..(h + 1) * head_dim]
        }
    })
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
pub fn linear(
    _s: &Stream,
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
        Device::Cuda(_) => Err(gpu_missing("linear")),
    }
}

/// Quantized linear: `out[m, N] (+)= x[m, K] · Wᵀ + bias` straight from GPTQ / EXL2 data.
pub fn quant_linear(
    _s: &Stream,
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
        Device::Cuda(_) => Err(gpu_missing("quant_linear")),
    }
}

/// `x = act(x)` in place.
pub fn activate(s: &Stream, act: Activation, x: &mut Tensor) -> Result<()> {
    float("activation input", x)?;
    match x.device() {
        Device::Cpu => with_f32_mut(x, |v| cpu::activation::activate(act, v)),
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::activate(act, x, s)),
    }
}

/// `out = act(gate) · up`.
pub fn act_mul(
    s: &Stream,
    act: Activation,
    gate: &Tensor,
    up: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    float("gate", gate)?;
    float("up", up)?;
    numel("up", up, gate.numel())?;
    numel("gated output", out, gate.numel())?;
    match same_device(&[("gate", gate), ("up", up), ("gated output", out)])? {
        Device::Cpu => {
            let (g, u) = (gate.f32_values()?, up.f32_values()?);
            with_f32_mut(out, |o| cpu::activation::act_mul(act, &g, &u, o))
        }
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::act_mul(
            act,
            gate,
            up,
            out,
            s
        )),
    }
}

/// `x += y`.
pub fn add_inplace(s: &Stream, x: &mut Tensor, y: &Tensor) -> Result<()> {
    float("sum", x)?;
    float("addend", y)?;
    numel("addend", y, x.numel())?;
    match same_device(&[("sum", x), ("addend", y)])? {
        Device::Cpu => {
            let yv = y.f32_values()?;
            with_f32_mut(x, |xv| cpu::activation::add_inplace(xv, &yv))
        }
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::add_inplace(x, y, s)),
    }
}

/// Splits a fused QKV projection output [tokens, (heads + 2·kv_heads)·head_dim] into q, k, v
/// ([tokens, heads·head_dim], [tokens, kv_heads·head_dim] ×2) following `layout`.
pub fn split_qkv(
    _s: &Stream,
    layout: QkvLayout,
    fused: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &mut Tensor,
) -> Result<()> {
    let width = (heads + 2 * kv_heads) * head_dim;
    if fused.cols() != width {
        return Err(Error::bad_input(format!(
            "fused qkv: expected {width} features per token, got shape {:?}",
            fused.shape()
        )));
    }
    let t = fused.rows();
    numel("q", q, t * heads * head_dim)?;
    numel("k", k, t * kv_heads * head_dim)?;
    numel("v", v, t * kv_heads * head_dim)?;
    if layout == QkvLayout::FusedPerHead && heads != kv_heads {
        return Err(Error::bad_input(
            "fused per-head qkv needs as many kv heads as heads",
        ));
    }
    let d = head_dim;
    match fused.device() {
        Device::Cpu => {
            let f = fused.f32_values()?;
            let (mut qv, mut kv, mut vv) = (
                vec![0.0; t * heads * d],
                vec![0.0; t * kv_heads * d],
                vec![0.0; t * kv_heads * d],
            );
            for r in 0..t {
                let row = &f[r * width..(r + 1) * width];
                let qr = &mut qv[r * heads * d..(r + 1) * heads * d];
                let kr = &mut kv[r * kv_heads * d..(r + 1) * kv_heads * d];
                let vr = &mut vv[r * kv_heads * d..(r + 1) * kv_heads * d];
                match layout {
                    QkvLayout::Separate => {
                        return Err(Error::bad_input("split_qkv on separate projections"))
                    }
                    QkvLayout::FusedPerHead => {
                        for h in 0..heads {
                            let src = &row[h * 3 * d..(h + 1) * 3 * d];
                            qr[h * d..(h + 1) * d].copy_from_slice(&src[..d]);
                            kr[h * d..(h + 1) * d].copy_from_slice(&src[d..2 * d]);
                            vr[h * d..(h + 1) * d].copy_from_slice(&src[2 * d..]);
                        }
                    }
                    QkvLayout::FusedQueriesFirst => {
                        qr.copy_from_slice(&row[..heads * d]);
                        kr.copy_from_slice(&row[heads * d..(heads + kv_heads) * d]);
                        vr.copy_from_slice(&row[(heads + kv_heads) * d..]);
                    }
                    QkvLayout::FusedGrouped => {
                        let per = heads / kv_heads;
                        let gw = (per + 2) * d;
                        for g in 0..kv_heads {
                            let src = &row[g * gw..(g + 1) * gw];
                            qr[g * per * d..(g + 1) * per * d].copy_from_slice(&src[..per * d]);
                            kr[g * d..(g + 1) * d].copy_from_slice(&src[per * d..(per + 1) * d]);
                            vr[g * d..(g + 1) * d].copy_from_slice(&src[(per + 1) * d..]);
                        }
                    }
                }
            }
            q.set_f32_values(&qv)?;
            k.set_f32_values(&kv)?;
            v.set_f32_values(&vv)
        }
        Device::Cuda(_) => Err(gpu_missing("split_qkv")),
    }
}

/// Rotates q [tokens, heads·D] and k [tokens, kv_heads·D] at `positions` (when `rotary` is
/// given) and writes k, v into the cache tensors [batch, capacity, kv_heads·D].
pub fn rotary_and_cache_write(
    _s: &Stream,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    at: &CacheSlots<'_>,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
) -> Result<()> {
    let tokens = at.batch * at.q_len;
    numel("q", q, tokens * heads * head_dim)?;
    numel("k", k, tokens * kv_heads * head_dim)?;
    numel("v", v, tokens * kv_heads * head_dim)?;
    numel(
        "cache k",
        cache_k,
        at.batch * at.capacity * kv_heads * head_dim,
    )?;
    numel(
        "cache v",
        cache_v,
        at.batch * at.capacity * kv_heads * head_dim,
    )?;
    if positions.len() != tokens {
        return Err(Error::bad_input(format!(
            "positions: expected {tokens}, got {}",
            positions.len()
        )));
    }
    if at.past_len.len() != at.batch {
        return Err(Error::bad_input(format!(
            "past lengths: expected {}, got {}",
            at.batch,
            at.past_len.len()
        )));
    }
    for (b, &p) in at.past_len.iter().enumerate() {
        if p + at.q_len > at.capacity {
            return Err(Error::CapacityExceeded(format!(
                "sequence {b}: past length {p} + {} new tokens exceeds the cache capacity {}",
                at.q_len, at.capacity
            )));
        }
    }
    if let Some(r) = rotary {
        if r.rot_dim > head_dim || r.rot_dim % 2 != 0 || r.inv_freq.len() != r.rot_dim / 2 {
            return Err(Error::bad_input(format!(
                "rotary: width {} with {} frequencies does not fit head_dim {head_dim}",
                r.rot_dim,
                r.inv_freq.len()
            )));
        }
    }
    match same_device(&[
        ("q", q),
        ("k", k),
        ("v", v),
        ("cache k", cache_k),
        ("cache v", cache_v),
    ])? {
        Device::Cpu => {
            // In place on f32 tensors: the cache is written, never copied whole per call.
            let vv = v.f32_values()?;
            with_f32_mut(cache_k, |ck| {
                with_f32_mut(cache_v, |cv| {
                    with_f32_mut(k, |kk| {
                        with_f32_mut(q, |qq| {
                            cpu::rope::rotary_and_cache_write(
                                qq, kk, &vv, heads, kv_heads, head_dim, positions, rotary, at, ck,
                                cv,
                            )
                        })
                    })
                })
            })????;
            Ok(())
        }
        Device::Cuda(_) => Err(gpu_missing("rotary_and_cache_write")),
    }
}

/// Attention of q [batch, q_len, heads·D] over the cache; writes [batch, q_len, heads·D].
pub fn attention(
    _s: &Stream,
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    out: &mut Tensor,
) -> Result<()> {
    let s = shape;
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(Error::bad_input(format!(
            "attention: {} heads over {} kv heads",
            s.heads, s.kv_heads
        )));
    }
    numel("attention q", q, s.batch * s.q_len * s.heads * s.head_dim)?;
    numel(
        "attention output",
        out,
        s.batch * s.q_len * s.heads * s.head_dim,
    )?;
    numel(
        "cache k",
        cache_k,
        s.batch * s.capacity * s.kv_heads * s.head_dim,
    )?;
    numel(
        "cache v",
        cache_v,
        s.batch * s.capacity * s.kv_heads * s.head_dim,
    )?;
    if masking.past_len.len() != s.batch {
        return Err(Error::bad_input(format!(
            "past lengths: expected {}, got {}",
            s.batch,
            masking.past_len.len()
        )));
    }
    let max_kv = masking
        .past_len
        .iter()
        .map(|p| p + s.q_len)
        .max()
        .unwrap_or(0);
    if max_kv > s.capacity {
        return Err(Error::CapacityExceeded(format!(
            "attention over {max_kv} cache slots exceeds the capacity {}",
            s.capacity
        )));
    }
    if let Some(m) = masking.mask {
        if masking.mask_stride < max_kv || m.len() < s.batch * masking.mask_stride {
            return Err(Error::bad_input(format!(
                "attention mask: needs [{}, ≥{max_kv}] values, got {} with row stride {}",
                s.batch,
                m.len(),
                masking.mask_stride
            )));
        }
    }
    match same_device(&[
        ("attention q", q),
        ("cache k", cache_k),
        ("cache v", cache_v),
        ("attention output", out),
    ])? {
        Device::Cpu => {
            let (qv, kv, vv) = (
                q.f32_values()?,
                cache_k.f32_values()?,
                cache_v.f32_values()?,
            );
            with_f32_mut(out, |o| {
                cpu::attention::attention(&qv, &kv, &vv, s, masking, scale, o)
            })
        }
        Device::Cuda(_) => Err(gpu_missing("attention")),
    }
}

/// `out[t] = table[ids[t]]`; every id must be below the table's row count.
pub fn embedding(_s: &Stream, table: &Tensor, ids: &[u32], out: &mut Tensor) -> Result<()> {
    float("embedding table", table)?;
    if table.shape().len() != 2 {
        return Err(Error::bad_input(format!(
            "embedding table: expected [vocab, hidden], got {:?}",
            table.shape()
        )));
    }
    let (vocab, hidden) = (table.shape()[0], table.shape()[1]);
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::bad_input(format!(
            "token id {bad} is outside the vocabulary of {vocab}"
        )));
    }
    numel("embedding output", out, ids.len() * hidden)?;
    match same_device(&[("embedding table", table), ("embedding output", out)])? {
        Device::Cpu => {
            let tv = table.f32_values()?;
            with_f32_mut(out, |o| cpu::embedding::embedding(&tv, hidden, ids, o))
        }
        Device::Cuda(_) => Err(gpu_missing("embedding")),
    }
}

/// `x *= factor`.
pub fn scale_inplace(_s: &Stream, x: &mut Tensor, factor: f32) -> Result<()> {
    float("scaled tensor", x)?;
    match x.device() {
        Device::Cpu => with_f32_mut(x, |v| v.iter_mut().for_each(|a| *a *= factor)),
        Device::Cuda(_) => Err(gpu_missing("scale_inplace")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_f32(v.to_vec(), shape).unwrap()
    }

    #[test]
    fn split_qkv_layouts_by_hand() {
        // head_dim 1; feature values name their role: 10+h = q of head h, 20+g = k, 30+g = v.
        let s = Stream::Host;
        let run = |layout, fused: &[f32], heads, kv| {
            let (mut q, mut k, mut v) = (
                t(&vec![0.0; heads], &[1, heads]),
                t(&vec![0.0; kv], &[1, kv]),
                t(&vec![0.0; kv], &[1, kv]),
            );
            split_qkv(
                &s,
                layout,
                &t(fused, &[1, fused.len()]),
                heads,
                kv,
                1,
                &mut q,
                &mut k,
                &mut v,
            )
            .unwrap();
            (
                q.as_f32().unwrap().to_vec(),
                k.as_f32().unwrap().to_vec(),
                v.as_f32().unwrap().to_vec(),
            )
        };
        // NeoX per head [q0 k0 v0 | q1 k1 v1].
        let (q, k, v) = run(
            QkvLayout::FusedPerHead,
            &[10., 20., 30., 11., 21., 31.],
            2,
            2,
        );
        assert_eq!((q, k, v), (vec![10., 11.], vec![20., 21.], vec![30., 31.]));
        // Falcon-7B [q0 q1 q2 q3 | k | v].
        let (q, k, v) = run(
            QkvLayout::FusedQueriesFirst,
            &[10., 11., 12., 13., 20., 30.],
            4,
            1,
        );
        assert_eq!((q, k, v), (vec![10., 11., 12., 13.], vec![20.], vec![30.]));
        // Falcon new architecture, 4 heads in 2 groups: [q0 q1 k0 v0 | q2 q3 k1 v1].
        let (q, k, v) = run(
            QkvLayout::FusedGrouped,
            &[10., 11., 20., 30., 12., 13., 21., 31.],
            4,
            2,
        );
        assert_eq!(
            (q, k, v),
            (vec![10., 11., 12., 13.], vec![20., 21.], vec![30., 31.])
        );
    }

    #[test]
    fn head_norm_per_head_and_shared_by_hand() {
        // Two heads of [1, 3] (mean 2, var 1 → normalized [-1, 1] with eps 0).
        let s = Stream::Host;
        let mut x = t(&[1., 3., 1., 3.], &[1, 4]);
        let per_head = t(&[1., 2., 10., 20.], &[2, 2]);
        head_norm(
            &s,
            NormKind::LayerNorm,
            &mut x,
            2,
            2,
            &Affine {
                weight: Some(&per_head),
                bias: None,
            },
            0.0,
        )
        .unwrap();
        assert_eq!(x.as_f32().unwrap(), &[-1., 2., -10., 20.]);
        let mut x = t(&[1., 3., 1., 3.], &[1, 4]);
        let (w, b) = (t(&[2., 2.], &[2]), t(&[0.5, -0.5], &[2]));
        head_norm(
            &s,
            NormKind::LayerNorm,
            &mut x,
            2,
            2,
            &Affine {
                weight: Some(&w),
                bias: Some(&b),
            },
            0.0,
        )
        .unwrap();
        assert_eq!(x.as_f32().unwrap(), &[-1.5, 1.5, -1.5, 1.5]);
        let bad = t(&[1., 2., 3.], &[3]);
        assert!(head_norm(
            &s,
            NormKind::LayerNorm,
            &mut x,
            2,
            2,
            &Affine {
                weight: Some(&bad),
                bias: None
            },
            0.0
        )
        .is_err());
    }

    #[test]
    fn ops_reject_mismatched_shapes() {
        let s = Stream::Host;
        let x = t(&[1.; 6], &[2, 3]);
        let w = t(&[1.; 8], &[2, 4]);
        let mut out = t(&[0.; 4], &[2, 2]);
        let e = linear(&s, &x, &w, None, &mut out, false).unwrap_err();
        assert!(e.to_string().contains("K = 4"), "{e}");
        let mut small = t(&[0.; 5], &[5]);
        assert!(norm(
            &s,
            NormKind::RmsNorm,
            &x,
            &Affine {
                weight: None,
                bias: None
            },
            1e-5,
            &mut small
        )
        .is_err());
        let table = t(&[0.; 6], &[3, 2]);
        let mut emb = t(&[0.; 2], &[1, 2]);
        assert!(embedding(&s, &table, &[3], &mut emb)
            .unwrap_err()
            .to_string()
            .contains("token id 3"));
    }
}
