//! Kernel level: one op on tensors the caller owns.
//!
//! Every `paradec_op_*` call takes the caller's stream first (`void *`: a `cudaStream_t`, NULL
//! = the legacy default stream; ignored for host tensors). Host tensors (CPU or CUDA-host
//! memory) run the CPU twin in place on the caller's memory, on the calling thread, before the
//! call returns. CUDA tensors run the CUDA kernel, queued on the stream on the tensors' device:
//! the call returns without synchronizing, and a failure inside the kernel surfaces at the
//! caller's next synchronization (or the next paradec call on that device). Every argument is
//! checked before anything runs, so on any error nothing was written.

use std::ffi::c_void;

use super::paradec_status::{self, *};
use super::tensor::*;
#[cfg(not(feature = "cuda"))]
use super::CErr;
use super::{cerr, guard, req, req_mut, CResult};
use crate::cpu;
use crate::cpu::norm::NormAffine;
use crate::tensor::DType;
use crate::vocab::{
    Activation, AttnMasking, AttnShape, CacheSlots, NormKind, QkvLayout, RopeStyle, RotaryArgs,
};

#[cfg(feature = "cuda")]
use super::cuda;

/// LayerNorm: (x − mean)/√(var + eps)·w + b.
pub const PARADEC_NORM_LAYER: i32 = 0;
/// RMSNorm: x/√(mean(x²) + eps)·w (+ b).
pub const PARADEC_NORM_RMS: i32 = 1;

/// Exact GELU, 0.5·x·(1 + erf(x/√2)) (HF "gelu").
pub const PARADEC_ACT_GELU_ERF: i32 = 0;
/// Tanh GELU (HF "gelu_new", "gelu_pytorch_tanh").
pub const PARADEC_ACT_GELU_NEW: i32 = 1;
/// HF "gelu_fast".
pub const PARADEC_ACT_GELU_FAST: i32 = 2;
/// SiLU, x·σ(x).
pub const PARADEC_ACT_SILU: i32 = 3;
/// ReLU.
pub const PARADEC_ACT_RELU: i32 = 4;

/// Rotary pairs (2j, 2j+1): GPT-J, Cohere.
pub const PARADEC_ROPE_STYLE_INTERLEAVED: i32 = 0;
/// Rotary pairs (j, j + rot_dim/2): NeoX, Phi, Falcon.
pub const PARADEC_ROPE_STYLE_HALF: i32 = 1;

/// Fused QKV per head [q_h | k_h | v_h] (GPT-NeoX, Falcon multi-head).
pub const PARADEC_QKV_FUSED_PER_HEAD: i32 = 1;
/// Fused QKV [all q heads | k | v] (Falcon-7B multi-query).
pub const PARADEC_QKV_FUSED_QUERIES_FIRST: i32 = 2;
/// Fused QKV per kv group [q heads of the group | k | v] (Falcon new architecture).
pub const PARADEC_QKV_FUSED_GROUPED: i32 = 3;

/// A norm's optional scale and shift, each a `[cols]` tensor of the input's dtype or NULL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct paradec_affine {
    /// Scale `[cols]`, or NULL.
    pub weight: *const paradec_tensor,
    /// Shift `[cols]`, or NULL.
    pub bias: *const paradec_tensor,
}

/// Rotary settings: pairing, width, inverse frequencies and the factor cos and sin are scaled
/// by (YaRN's attention factor; 1 otherwise).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct paradec_rotary {
    /// `PARADEC_ROPE_STYLE_INTERLEAVED` or `PARADEC_ROPE_STYLE_HALF`.
    pub style: i32,
    /// Rotated features per head: even, 0 < rot_dim ≤ head_dim.
    pub rot_dim: usize,
    /// `[rot_dim / 2]` f32 on the tensors' device.
    pub inv_freq: *const paradec_tensor,
    /// Factor on cos and sin (1 unless YaRN).
    pub attn_factor: f32,
}

#[cfg(not(feature = "cuda"))]
pub(super) fn no_cuda() -> CErr {
    cerr(
        PARADEC_ERR_NO_DEVICE,
        "a tensor is on a CUDA device, but paradec was built without CUDA (the `cuda` feature)",
    )
}

/// Dispatches a call's CUDA arm: compiled with the `cuda` feature, an error without it.
macro_rules! on_cuda {
    ([$($used:ident),*] $e:expr) => {{
        #[cfg(feature = "cuda")]
        let r: CResult<()> = $e;
        #[cfg(not(feature = "cuda"))]
        let r: CResult<()> = {
            let _ = ($(&$used),*);
            Err(no_cuda())
        };
        r
    }};
}
pub(super) use on_cuda;

/// The CUDA kernels compute in f16 or bf16: an f32 tensor on a device is refused by name.
pub(super) fn device_float(v: &View) -> CResult<()> {
    if v.dtype == DType::F32 {
        return Err(cerr(
            PARADEC_ERR_UNSUPPORTED,
            format!(
                "{}: the CUDA kernels take f16 or bf16 tensors, not f32",
                v.name
            ),
        ));
    }
    Ok(())
}

/// Checks that the per-call tables of a `_ws` call are host memory (the host checks them).
pub(super) fn host_tables(tables: &[&View]) -> CResult<()> {
    for t in tables {
        if t.loc != Loc::Host {
            return Err(cerr(
                PARADEC_ERR_DEVICE,
                format!(
                    "{}: expected host memory (CPU or pinned): paradec checks it on the host before launching",
                    t.name
                ),
            ));
        }
    }
    Ok(())
}

/// A checked `paradec_rotary` and the positions it rotates at: (style, rot_dim, inv_freq,
/// attn_factor, positions).
pub(super) type RotArg = (RopeStyle, usize, View, f32, View);

/// Checks `rotary` (NULL: no rotation, and `positions` is not read) and its `positions`
/// (`tokens` int64 values) for heads of `d` features.
pub(super) fn rotary_arg(
    rotary: *const paradec_rotary,
    positions: *const paradec_tensor,
    tokens: usize,
    d: usize,
) -> CResult<Option<RotArg>> {
    if rotary.is_null() {
        return Ok(None);
    }
    let r = req(rotary, "rotary")?;
    let style = match r.style {
        PARADEC_ROPE_STYLE_INTERLEAVED => RopeStyle::Interleaved,
        PARADEC_ROPE_STYLE_HALF => RopeStyle::Half,
        o => {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!("rotary.style: {o} is not a rotary style (0 or 1)"),
            ))
        }
    };
    if r.rot_dim == 0 || r.rot_dim % 2 != 0 || r.rot_dim > d {
        return Err(cerr(
            PARADEC_ERR_INVALID_ARGUMENT,
            format!(
                "rotary.rot_dim: {} must be even and in 1..={d} (head_dim)",
                r.rot_dim
            ),
        ));
    }
    let f = view(r.inv_freq, "rotary.inv_freq")?;
    want_dtype(&f, DType::F32)?;
    want_shape(&f, &[r.rot_dim / 2])?;
    let p = view(positions, "positions")?;
    want_dtype(&p, DType::I64)?;
    if p.numel != tokens {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "positions: expected {tokens} values (batch × q_len), got shape {:?}",
                p.shape
            ),
        ));
    }
    Ok(Some((style, r.rot_dim, f, r.attn_factor, p)))
}

/// The workspace of a `_ws` call on CUDA tensors: required, and on their device.
pub(super) fn cuda_workspace<'a>(
    ws: Option<*mut super::paradec_workspace>,
    dev: usize,
) -> CResult<&'a mut crate::workspace::Workspace> {
    let w = &mut req_mut(ws.unwrap_or(std::ptr::null_mut()), "workspace")?.inner;
    if w.device() != crate::Device::Cuda(dev) {
        return Err(cerr(
            PARADEC_ERR_DEVICE,
            format!(
                "workspace: on {}, but the tensors are on cuda:{dev}",
                w.device()
            ),
        ));
    }
    Ok(w)
}

pub(crate) fn norm_kind(k: i32) -> CResult<NormKind> {
    match k {
        PARADEC_NORM_LAYER => Ok(NormKind::LayerNorm),
        PARADEC_NORM_RMS => Ok(NormKind::RmsNorm),
        o => Err(cerr(
            PARADEC_ERR_INVALID_ARGUMENT,
            format!("kind: {o} is not a norm kind (PARADEC_NORM_LAYER = 0, PARADEC_NORM_RMS = 1)"),
        )),
    }
}

fn activation(a: i32) -> CResult<Activation> {
    Ok(match a {
        PARADEC_ACT_GELU_ERF => Activation::GeluErf,
        PARADEC_ACT_GELU_NEW => Activation::GeluNew,
        PARADEC_ACT_GELU_FAST => Activation::GeluFast,
        PARADEC_ACT_SILU => Activation::Silu,
        PARADEC_ACT_RELU => Activation::Relu,
        o => {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!("act: {o} is not an activation (PARADEC_ACT_*: 0 to 4)"),
            ))
        }
    })
}

/// Checks that `v` is a float tensor of `dtype` (the call's input dtype).
pub(super) fn same_float(v: &View, dtype: DType) -> CResult<()> {
    want_float(v)?;
    want_dtype(v, dtype)
}

/// A validated affine pair: each `[cols]` of the input's dtype.
struct Aff {
    weight: Option<View>,
    bias: Option<View>,
}

fn affine(a: *const paradec_affine, what: &str, dtype: DType, cols: usize) -> CResult<Aff> {
    if a.is_null() {
        return Ok(Aff {
            weight: None,
            bias: None,
        });
    }
    let a = req(a, what)?;
    let mut out = Aff {
        weight: opt_view(a.weight, &format!("{what}.weight"))?,
        bias: opt_view(a.bias, &format!("{what}.bias"))?,
    };
    for v in [&mut out.weight, &mut out.bias].into_iter().flatten() {
        same_float(v, dtype)?;
        if v.numel != cols {
            return Err(cerr(
                PARADEC_ERR_SHAPE,
                format!("{}: expected [{cols}], got shape {:?}", v.name, v.shape),
            ));
        }
    }
    Ok(out)
}

impl Aff {
    fn views(&self) -> impl Iterator<Item = &View> {
        self.weight.iter().chain(self.bias.iter())
    }
}

/// The engine of the three norm exports.
#[allow(unused_variables)]
fn norm_impl(
    stream: *mut c_void,
    kind: i32,
    eps: f32,
    x: *const paradec_tensor,
    residual: *const paradec_tensor,
    affine_a: *const paradec_affine,
    out_a: *const paradec_tensor,
    second: Option<(*const paradec_affine, *const paradec_tensor)>,
) -> CResult<()> {
    let kind = norm_kind(kind)?;
    let x = view(x, "x")?;
    want_float(&x)?;
    if x.shape.is_empty() {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            "x: expected [rows, cols], got a scalar",
        ));
    }
    let cols = *x.shape.last().unwrap_or(&1);
    let rows = x.numel.checked_div(cols).unwrap_or(0);
    let residual = opt_view(residual, "residual")?;
    let out_a = view(out_a, if second.is_some() { "out_a" } else { "out" })?;
    let aff_a = affine(
        affine_a,
        if second.is_some() {
            "affine_a"
        } else {
            "affine"
        },
        x.dtype,
        cols,
    )?;
    let second = match second {
        Some((a, o)) => {
            let o = view(o, "out_b")?;
            Some((affine(a, "affine_b", x.dtype, cols)?, o))
        }
        None => None,
    };
    let mut all: Vec<&View> = vec![&x, &out_a];
    for v in residual.iter().chain(second.as_ref().map(|s| &s.1)) {
        all.push(v);
    }
    for v in all.iter().skip(1) {
        same_float(v, x.dtype)?;
        want_shape(v, &x.shape)?;
    }
    all.extend(aff_a.views());
    if let Some((a, _)) = &second {
        all.extend(a.views());
    }
    let loc = one_device(&all)?;
    let mut outs: Vec<&View> = vec![&out_a];
    if residual.is_some() {
        outs.push(&x);
    }
    if let Some((_, o)) = &second {
        outs.push(o);
    }
    disjoint(&outs)?;
    match loc {
        Loc::Host => {
            if let Some(r) = &residual {
                let rv = r.floats(&outs);
                x.with_floats_mut(|xv| cpu::activation::add_inplace(xv, &rv));
            }
            // x is read against the outputs other than itself (which `disjoint` kept off x
            // when x is written): an output over a read-only x gets a copy of x first.
            let readers: Vec<&View> = outs
                .iter()
                .copied()
                .filter(|o| !std::ptr::eq(*o, &x))
                .collect();
            let xv = x.floats(&readers);
            let run = |aff: &Aff, out: &View| {
                let w = aff.weight.as_ref().map(|w| w.floats(&outs));
                let b = aff.bias.as_ref().map(|b| b.floats(&outs));
                let a = NormAffine {
                    weight: w.as_deref(),
                    bias: b.as_deref(),
                };
                out.with_floats_mut(|o| cpu::norm::norm(kind, &xv, rows, cols, a, eps, o));
            };
            run(&aff_a, &out_a);
            if let Some((a, o)) = &second {
                run(a, o);
            }
            Ok(())
        }
        Loc::Cuda(dev) => on_cuda!([dev, stream] cuda::norm_fused(
            dev,
            stream,
            kind,
            &x,
            residual.as_ref(),
            (aff_a.weight.as_ref(), aff_a.bias.as_ref()),
            &out_a,
            second
                .as_ref()
                .map(|(a, o)| (a.weight.as_ref(), a.bias.as_ref(), o)),
            rows,
            cols,
            eps,
        )),
    }
}

/// `out = norm(x)` over rows of `x`'s last dimension.
///
/// - `stream`: a `cudaStream_t` for CUDA tensors (NULL = legacy default stream); ignored for
///   host tensors.
/// - `kind`: `PARADEC_NORM_LAYER` or `PARADEC_NORM_RMS`.
/// - `x`: `[..., cols]` float (f32 on the host; f16 or bf16 on either device). Borrowed.
/// - `affine`: NULL (no scale, no shift) or weight / bias `[cols]` (each may be NULL).
/// - `out`: same shape and dtype as `x`; may be `x` itself. Written.
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_norm(
    stream: *mut c_void,
    kind: i32,
    eps: f32,
    x: *const paradec_tensor,
    affine: *const paradec_affine,
    out: *const paradec_tensor,
) -> paradec_status {
    guard(|| norm_impl(stream, kind, eps, x, std::ptr::null(), affine, out, None))
}

/// The fused residual form: `x += residual` (written back to `x`, rounded to its dtype), then
/// `out = norm(x)`.
///
/// - `x`: `[..., cols]` float, read and written; `residual`: same shape and dtype, read.
/// - `out`: same shape and dtype; must not overlap `x`.
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_add_norm(
    stream: *mut c_void,
    kind: i32,
    eps: f32,
    x: *const paradec_tensor,
    residual: *const paradec_tensor,
    affine: *const paradec_affine,
    out: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        if residual.is_null() {
            return Err(cerr(
                PARADEC_ERR_NULL_ARGUMENT,
                "argument `residual` is NULL (use paradec_op_norm for no residual)",
            ));
        }
        norm_impl(stream, kind, eps, x, residual, affine, out, None)
    })
}

/// The two-output form (GPT-NeoX, two-norm Falcon): one pass over `x` gives
/// `out_a = norm_a(x)` and `out_b = norm_b(x)` — the same statistics, two affine transforms.
/// With a non-NULL `residual`, `x += residual` first (written back to `x`).
///
/// - `x`: `[..., cols]` float (read; also written when `residual` is given).
/// - `out_a`, `out_b`: same shape and dtype as `x`; must not overlap each other (nor `x` when
///   there is a residual).
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_norm2(
    stream: *mut c_void,
    kind: i32,
    eps: f32,
    x: *const paradec_tensor,
    residual: *const paradec_tensor,
    affine_a: *const paradec_affine,
    out_a: *const paradec_tensor,
    affine_b: *const paradec_affine,
    out_b: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        norm_impl(
            stream,
            kind,
            eps,
            x,
            residual,
            affine_a,
            out_a,
            Some((affine_b, out_b)),
        )
    })
}

/// Rotary position embedding of q and k, fused with the KV-cache write.
///
/// - `q`: `[batch, q_len, heads, head_dim]` float, rotated in place.
/// - `k`: `[batch, q_len, kv_heads, head_dim]`, rotated in place; `v`: same shape, read.
/// - `positions`: `[batch · q_len]` int64 (any shape of that many elements): each token's
///   position; may be NULL when `rotary` is NULL.
/// - `rotary`: NULL (no rotation: only the cache write) or the settings.
/// - `past_len`: `[batch]` int64: sequence b's token t goes to cache slot `past_len[b] + t`.
/// - `cache_k`, `cache_v`: `[batch, capacity, kv_heads, head_dim]`, written at those slots.
///
/// Host tensors: a slot past the capacity is `PARADEC_ERR_CAPACITY` before anything is written.
/// CUDA tensors: `positions` and `past_len` are device memory the kernel reads, so they cannot
/// be checked here: a slot outside the cache is skipped (never written out of bounds).
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_rotary_cache_write(
    stream: *mut c_void,
    q: *const paradec_tensor,
    k: *const paradec_tensor,
    v: *const paradec_tensor,
    positions: *const paradec_tensor,
    rotary: *const paradec_rotary,
    past_len: *const paradec_tensor,
    cache_k: *const paradec_tensor,
    cache_v: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        rotary_impl(
            stream, None, q, k, v, positions, rotary, past_len, cache_k, cache_v,
        )
    })
}

/// The checked form of `paradec_op_rotary_cache_write`, for tensors on either device: the small
/// per-call tables — `positions`, `past_len` and `rotary->inv_freq` — are **host** tensors
/// (CPU or pinned memory), so every cache slot is checked before anything runs (a slot past
/// the capacity is `PARADEC_ERR_CAPACITY`, nothing written, on the GPU too); for CUDA tensors
/// the tables are queued to the device in scratch from `workspace`, on `stream`.
///
/// - `workspace`: a workspace on the tensors' CUDA device whose arena
///   (`paradec_workspace_reserve`) holds the tables (a few hundred bytes; too small:
///   `PARADEC_ERR_CAPACITY` naming the bytes); may be NULL for host tensors. Its scratch is
///   reused by the next call: use one workspace per stream.
/// - the other arguments as in `paradec_op_rotary_cache_write`.
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; `workspace` stays the caller's (the call must not overlap other calls
/// on it).
#[no_mangle]
pub extern "C" fn paradec_op_rotary_cache_write_ws(
    stream: *mut c_void,
    workspace: *mut super::paradec_workspace,
    q: *const paradec_tensor,
    k: *const paradec_tensor,
    v: *const paradec_tensor,
    positions: *const paradec_tensor,
    rotary: *const paradec_rotary,
    past_len: *const paradec_tensor,
    cache_k: *const paradec_tensor,
    cache_v: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        rotary_impl(
            stream,
            Some(workspace),
            q,
            k,
            v,
            positions,
            rotary,
            past_len,
            cache_k,
            cache_v,
        )
    })
}

/// The engine of the two rotary exports: `ws` is `Some` for the checked form (host tables).
#[allow(clippy::too_many_arguments, unused_variables)]
fn rotary_impl(
    stream: *mut c_void,
    ws: Option<*mut super::paradec_workspace>,
    q: *const paradec_tensor,
    k: *const paradec_tensor,
    v: *const paradec_tensor,
    positions: *const paradec_tensor,
    rotary: *const paradec_rotary,
    past_len: *const paradec_tensor,
    cache_k: *const paradec_tensor,
    cache_v: *const paradec_tensor,
) -> CResult<()> {
    {
        let q = view(q, "q")?;
        let k = view(k, "k")?;
        let v = view(v, "v")?;
        let past = view(past_len, "past_len")?;
        let ck = view(cache_k, "cache_k")?;
        let cv = view(cache_v, "cache_v")?;
        want_float(&q)?;
        want_ndim(&q, 4, "[batch, q_len, heads, head_dim]")?;
        let (batch, q_len, heads, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        want_ndim(&k, 4, "[batch, q_len, kv_heads, head_dim]")?;
        let kvh = k.shape[2];
        let kv_shape = [batch, q_len, kvh, d];
        for t in [&k, &v] {
            same_float(t, q.dtype)?;
            want_shape(t, &kv_shape)?;
        }
        want_ndim(&ck, 4, "[batch, capacity, kv_heads, head_dim]")?;
        let capacity = ck.shape[1];
        for t in [&ck, &cv] {
            same_float(t, q.dtype)?;
            want_shape(t, &[batch, capacity, kvh, d])?;
        }
        want_dtype(&past, DType::I64)?;
        want_shape(&past, &[batch])?;
        let mut all = vec![&q, &k, &v, &ck, &cv];
        let mut tables = vec![&past];
        let rot = rotary_arg(rotary, positions, batch * q_len, d)?;
        if let Some((.., f, _, p)) = &rot {
            tables.push(f);
            tables.push(p);
        }
        if ws.is_some() {
            host_tables(&tables)?;
        } else {
            all.extend(tables);
        }
        let loc = one_device(&all)?;
        // k counts as written even without rotation (the CPU twin takes it mutably).
        let outs = vec![&q, &k, &ck, &cv];
        disjoint(&outs)?;
        let checked_past = || -> CResult<Vec<usize>> {
            past
                    .ints()
                    .iter()
                    .enumerate()
                    .map(|(b, &p)| {
                        usize::try_from(p)
                            .ok()
                            .filter(|&p| p + q_len <= capacity)
                            .ok_or_else(|| {
                                cerr(
                                    PARADEC_ERR_CAPACITY,
                                    format!("past_len[{b}] = {p}: {p} + {q_len} new tokens do not fit the cache capacity {capacity}"),
                                )
                            })
                    })
                    .collect::<CResult<_>>()
        };
        match loc {
            Loc::Host => {
                let past = checked_past()?;
                let positions = rot.as_ref().map(|r| r.4.ints()).unwrap_or_default();
                let inv = rot.as_ref().map(|r| r.2.floats(&outs));
                let args = rot.as_ref().map(|r| RotaryArgs {
                    style: r.0,
                    rot_dim: r.1,
                    inv_freq: inv.as_deref().unwrap_or(&[]),
                    attn_factor: r.3,
                });
                let slots = CacheSlots {
                    batch,
                    q_len,
                    capacity,
                    past_len: &past,
                };
                let vv = v.floats(&outs);
                let positions = if rot.is_some() {
                    positions
                } else {
                    vec![0; batch * q_len]
                };
                ck.with_floats_mut(|ckv| {
                    cv.with_floats_mut(|cvv| {
                        k.with_floats_mut(|kk| {
                            q.with_floats_mut(|qq| {
                                cpu::rope::rotary_and_cache_write(
                                    qq,
                                    kk,
                                    &vv,
                                    heads,
                                    kvh,
                                    d,
                                    &positions,
                                    args.as_ref(),
                                    &slots,
                                    ckv,
                                    cvv,
                                )
                            })
                        })
                    })
                });
                Ok(())
            }
            Loc::Cuda(dev) if ws.is_some() => {
                let ws = cuda_workspace(ws, dev)?;
                let past = checked_past()?;
                let positions = match &rot {
                    Some(r) => r.4.ints(),
                    None => vec![0; batch * q_len],
                };
                let inv = rot.as_ref().map(|r| r.2.floats(&[]));
                let args = rot.as_ref().map(|r| RotaryArgs {
                    style: r.0,
                    rot_dim: r.1,
                    inv_freq: inv.as_deref().unwrap_or(&[]),
                    attn_factor: r.3,
                });
                let slots = CacheSlots {
                    batch,
                    q_len,
                    capacity,
                    past_len: &past,
                };
                on_cuda!([dev, stream, ws, positions, args, slots] cuda::rotary_checked(
                    dev,
                    stream,
                    ws,
                    (&q, &k, &v),
                    [heads, kvh, d],
                    &positions,
                    args.as_ref(),
                    &slots,
                    (&ck, &cv),
                ))
            }
            Loc::Cuda(dev) => on_cuda!([dev, stream] cuda::rotary_cache_write(
                dev,
                stream,
                &q,
                &k,
                &v,
                [batch, q_len, heads, kvh, d, capacity],
                rot.as_ref().map(|r| (r.0, r.1, &r.2, r.3, &r.4)),
                &past,
                &ck,
                &cv,
            )),
        }
    }
}

/// Causal scaled-dot-product attention of q over the cache (multi-head, grouped-query,
/// multi-query), with an optional sliding window and additive padding mask. Host tensors only
/// for now (`PARADEC_ERR_UNSUPPORTED` for CUDA ones until the GPU attention lands).
///
/// - `q`: `[batch, q_len, heads, head_dim]` float; `out`: same shape and dtype, written.
/// - `cache_k`, `cache_v`: `[batch, capacity, kv_heads, head_dim]`; heads % kv_heads == 0.
/// - `past_len`: `[batch]` int64: sequence b's query t sits in slot `past_len[b] + t` and sees
///   slots up to it (and, with `window` > 0, the last `window` of them).
/// - `mask`: NULL or `[batch, stride]` f32 added to the scores (0 attend, -inf hide), stride ≥
///   max(past_len) + q_len.
/// - `scale`: the score scale, usually 1/√head_dim.
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_attention(
    stream: *mut c_void,
    q: *const paradec_tensor,
    cache_k: *const paradec_tensor,
    cache_v: *const paradec_tensor,
    past_len: *const paradec_tensor,
    mask: *const paradec_tensor,
    window: usize,
    scale: f32,
    out: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        attention_impl(
            stream, None, q, cache_k, cache_v, past_len, mask, window, scale, out,
        )
    })
}

/// Attention for tensors on either device: as `paradec_op_attention`, with the per-call tables
/// — `past_len` and `mask` — in **host** memory (CPU or pinned), so every length is checked
/// against the capacity (and the mask's width) before anything runs; for CUDA tensors they are
/// queued to the device in scratch from `workspace` (with the split-KV partials), on `stream`.
/// CUDA: f16 or bf16, head_dim a multiple of 8 up to 256; `out` must not overlap q or the cache.
///
/// - `workspace`: a workspace on the tensors' CUDA device whose arena
///   (`paradec_workspace_reserve`) holds the tables and the partials — about
///   batch·heads·q_len·64·(head_dim + 2)·4 bytes plus the mask; too small:
///   `PARADEC_ERR_CAPACITY` naming the bytes, before any launch; may be NULL for host tensors.
///   Its scratch is reused by the next call: use one workspace per stream.
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; `workspace` stays the caller's (the call must not overlap other calls
/// on it).
#[no_mangle]
pub extern "C" fn paradec_op_attention_ws(
    stream: *mut c_void,
    workspace: *mut super::paradec_workspace,
    q: *const paradec_tensor,
    cache_k: *const paradec_tensor,
    cache_v: *const paradec_tensor,
    past_len: *const paradec_tensor,
    mask: *const paradec_tensor,
    window: usize,
    scale: f32,
    out: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        attention_impl(
            stream,
            Some(workspace),
            q,
            cache_k,
            cache_v,
            past_len,
            mask,
            window,
            scale,
            out,
        )
    })
}

/// The engine of the two attention exports: `ws` is `Some` for the form with host tables.
#[allow(clippy::too_many_arguments, unused_variables)]
fn attention_impl(
    stream: *mut c_void,
    ws: Option<*mut super::paradec_workspace>,
    q: *const paradec_tensor,
    cache_k: *const paradec_tensor,
    cache_v: *const paradec_tensor,
    past_len: *const paradec_tensor,
    mask: *const paradec_tensor,
    window: usize,
    scale: f32,
    out: *const paradec_tensor,
) -> CResult<()> {
    {
        let q = view(q, "q")?;
        let ck = view(cache_k, "cache_k")?;
        let cv = view(cache_v, "cache_v")?;
        let past = view(past_len, "past_len")?;
        let mask = opt_view(mask, "mask")?;
        let out = view(out, "out")?;
        want_float(&q)?;
        want_ndim(&q, 4, "[batch, q_len, heads, head_dim]")?;
        let (batch, q_len, heads, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        want_ndim(&ck, 4, "[batch, capacity, kv_heads, head_dim]")?;
        let (capacity, kvh) = (ck.shape[1], ck.shape[2]);
        for t in [&ck, &cv] {
            same_float(t, q.dtype)?;
            want_shape(t, &[batch, capacity, kvh, d])?;
        }
        same_float(&out, q.dtype)?;
        want_shape(&out, &q.shape)?;
        if kvh == 0 || !heads.is_multiple_of(kvh) {
            return Err(cerr(
                PARADEC_ERR_SHAPE,
                format!("cache_k: {kvh} kv heads do not divide q's {heads} heads"),
            ));
        }
        want_dtype(&past, DType::I64)?;
        want_shape(&past, &[batch])?;
        let mut all = vec![&q, &ck, &cv, &out];
        let mut tables = vec![&past];
        if let Some(m) = &mask {
            want_dtype(m, DType::F32)?;
            want_ndim(m, 2, "[batch, stride]")?;
            tables.push(m);
        }
        if ws.is_some() {
            host_tables(&tables)?;
        } else {
            all.extend(tables);
        }
        let loc = one_device(&all)?;
        if let Loc::Cuda(_) = loc {
            if ws.is_none() {
                return Err(cerr(
                    PARADEC_ERR_UNSUPPORTED,
                    "attention on CUDA tensors takes host past lengths and scratch from a workspace: call paradec_op_attention_ws",
                ));
            }
            disjoint(&[&out, &q])?;
            disjoint(&[&out, &ck])?;
            disjoint(&[&out, &cv])?;
        }
        let past: Vec<usize> = past
            .ints()
            .iter()
            .enumerate()
            .map(|(b, &p)| {
                usize::try_from(p)
                    .ok()
                    .filter(|&p| p + q_len <= capacity)
                    .ok_or_else(|| {
                        cerr(
                            PARADEC_ERR_CAPACITY,
                            format!("past_len[{b}] = {p}: {p} + {q_len} queries exceed the cache capacity {capacity}"),
                        )
                    })
            })
            .collect::<CResult<_>>()?;
        let need = past.iter().map(|p| p + q_len).max().unwrap_or(0);
        if let Some(m) = &mask {
            if m.shape[0] != batch || m.shape[1] < need {
                return Err(cerr(
                    PARADEC_ERR_SHAPE,
                    format!("mask: expected [{batch}, ≥{need}], got shape {:?}", m.shape),
                ));
            }
        }
        let outs = [&out];
        let mv = mask.as_ref().map(|m| m.floats(&outs));
        let shape = AttnShape {
            batch,
            q_len,
            heads,
            kv_heads: kvh,
            head_dim: d,
            capacity,
        };
        let masking = AttnMasking {
            past_len: &past,
            window,
            mask: mv.as_deref(),
            mask_stride: mask.as_ref().map_or(0, |m| m.shape[1]),
        };
        if let Loc::Cuda(dev) = loc {
            let ws = cuda_workspace(ws, dev)?;
            return on_cuda!([dev, stream, ws, shape, masking] cuda::attention(
                dev, stream, ws, &q, &ck, &cv, &shape, &masking, scale, &out,
            ));
        }
        let (qv, kv, vv) = (q.floats(&outs), ck.floats(&outs), cv.floats(&outs));
        out.with_floats_mut(|o| {
            cpu::attention::attention(&qv, &kv, &vv, &shape, &masking, scale, o)
        });
        Ok(())
    }
}

/// `x = act(x)` in place over every element.
///
/// - `act`: a `PARADEC_ACT_*` value; `x`: float, read and written.
///
/// Ownership: `x` is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_activate(
    stream: *mut c_void,
    act: i32,
    x: *const paradec_tensor,
) -> paradec_status {
    let _ = stream;
    guard(|| {
        let act = activation(act)?;
        let x = view(x, "x")?;
        want_float(&x)?;
        match x.loc {
            Loc::Host => {
                x.with_floats_mut(|v| cpu::activation::activate(act, v));
                Ok(())
            }
            Loc::Cuda(dev) => on_cuda!([dev, stream] cuda::activate(dev, stream, act, &x)),
        }
    })
}

/// The gated MLP product `out = act(gate) · up`, elementwise.
///
/// - `gate`, `up`, `out`: float, same shape and dtype; `out` may be `gate` or `up`.
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_act_mul(
    stream: *mut c_void,
    act: i32,
    gate: *const paradec_tensor,
    up: *const paradec_tensor,
    out: *const paradec_tensor,
) -> paradec_status {
    let _ = stream;
    guard(|| {
        let act = activation(act)?;
        let gate = view(gate, "gate")?;
        let up = view(up, "up")?;
        let out = view(out, "out")?;
        want_float(&gate)?;
        for t in [&up, &out] {
            same_float(t, gate.dtype)?;
            want_shape(t, &gate.shape)?;
        }
        match one_device(&[&gate, &up, &out])? {
            Loc::Host => {
                let (g, u) = (gate.floats(&[&out]), up.floats(&[&out]));
                out.with_floats_mut(|o| cpu::activation::act_mul(act, &g, &u, o));
                Ok(())
            }
            Loc::Cuda(dev) => {
                on_cuda!([dev, stream] cuda::act_mul(dev, stream, act, &gate, &up, &out))
            }
        }
    })
}

/// `x += y`, elementwise.
///
/// - `x`: float, read and written; `y`: same shape and dtype, read.
///
/// Ownership: both tensors are the caller's and are used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_add(
    stream: *mut c_void,
    x: *const paradec_tensor,
    y: *const paradec_tensor,
) -> paradec_status {
    let _ = stream;
    guard(|| {
        let x = view(x, "x")?;
        let y = view(y, "y")?;
        want_float(&x)?;
        same_float(&y, x.dtype)?;
        want_shape(&y, &x.shape)?;
        match one_device(&[&x, &y])? {
            Loc::Host => {
                let yv = y.floats(&[&x]);
                x.with_floats_mut(|xv| cpu::activation::add_inplace(xv, &yv));
                Ok(())
            }
            Loc::Cuda(dev) => on_cuda!([dev, stream] cuda::add(dev, stream, &x, &y)),
        }
    })
}

/// `x *= factor`, elementwise (the LM head's logit scale).
///
/// Ownership: `x` is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_scale(
    stream: *mut c_void,
    x: *const paradec_tensor,
    factor: f32,
) -> paradec_status {
    let _ = stream;
    guard(|| {
        let x = view(x, "x")?;
        want_float(&x)?;
        if let Loc::Cuda(dev) = x.loc {
            return on_cuda!([dev, stream] cuda::scale(dev, stream, &x, factor));
        }
        x.with_floats_mut(|v| v.iter_mut().for_each(|a| *a *= factor));
        Ok(())
    })
}

/// Token embedding: `out[t] = table[ids[t]]`.
///
/// - `table`: `[vocab, hidden]` float.
/// - `ids`: n token ids, any shape: int32 or int64 on the host, int32 on a CUDA device. Host ids
///   are checked (an id outside the vocabulary is `PARADEC_ERR_INVALID_ARGUMENT` naming it);
///   device ids cannot be, and an id outside gives a row of zeros.
/// - `out`: `[..., hidden]` with n·hidden elements, the table's dtype. Written.
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_embedding(
    stream: *mut c_void,
    table: *const paradec_tensor,
    ids: *const paradec_tensor,
    out: *const paradec_tensor,
) -> paradec_status {
    let _ = stream;
    guard(|| {
        let table = view(table, "table")?;
        let ids = view(ids, "ids")?;
        let out = view(out, "out")?;
        want_float(&table)?;
        want_ndim(&table, 2, "[vocab, hidden]")?;
        let (vocab, hidden) = (table.shape[0], table.shape[1]);
        same_float(&out, table.dtype)?;
        if out.numel != ids.numel * hidden || out.shape.last() != Some(&hidden) {
            return Err(cerr(
                PARADEC_ERR_SHAPE,
                format!(
                    "out: expected [..., {hidden}] holding {} ids × {hidden}, got shape {:?}",
                    ids.numel, out.shape
                ),
            ));
        }
        let loc = one_device(&[&table, &ids, &out])?;
        match loc {
            Loc::Host => {
                if ids.dtype != DType::I32 && ids.dtype != DType::I64 {
                    return Err(cerr(
                        PARADEC_ERR_DTYPE,
                        format!("ids: expected int32 or int64, got {}", ids.dtype),
                    ));
                }
                let idv = ids.ints();
                if let Some((i, &bad)) = idv
                    .iter()
                    .enumerate()
                    .find(|(_, &x)| x < 0 || x as u64 >= vocab as u64)
                {
                    return Err(cerr(
                        PARADEC_ERR_INVALID_ARGUMENT,
                        format!("ids[{i}] = {bad} is outside the vocabulary of {vocab}"),
                    ));
                }
                let tv = table.floats(&[&out]);
                let idu: Vec<u32> = idv.iter().map(|&x| x as u32).collect();
                out.with_floats_mut(|o| cpu::embedding::embedding(&tv, hidden, &idu, o));
                Ok(())
            }
            Loc::Cuda(dev) => {
                want_dtype(&ids, DType::I32)?;
                on_cuda!([dev, stream] cuda::embedding(dev, stream, &table, vocab, hidden, &ids, &out))
            }
        }
    })
}

/// Checks a linear's input and output against K and N; returns the row count m.
fn linear_rows(x: &View, k: usize, n: usize, out: &View) -> CResult<usize> {
    if x.shape.last() != Some(&k) {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "x: expected [..., {k}] (the weight's K), got shape {:?}",
                x.shape
            ),
        ));
    }
    let m = x.numel.checked_div(k).unwrap_or(0);
    if out.shape.last() != Some(&n) || out.numel != m * n {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "out: expected [..., {n}] with {m} rows, got shape {:?}",
                out.shape
            ),
        ));
    }
    Ok(m)
}

/// Dense linear: `out[m, N] (+)= x[m, K] · weightᵀ + bias`, weight in PyTorch layout [N, K].
///
/// - `x`: `[..., K]` float; `out`: `[..., N]`, x's dtype, written (added to when
///   `accumulate`). `out` must not overlap `x` (nor the weight or bias).
/// - `weight`: `[N, K]`; `bias`: NULL or `[N]`. Host tensors: f32, f16 or bf16 (may differ
///   from x's dtype). CUDA tensors: f16 or bf16, all of x's dtype (f32 accumulation; a GEMV
///   for m ≤ 8, tensor cores above); no scratch.
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_linear(
    stream: *mut c_void,
    x: *const paradec_tensor,
    weight: *const paradec_tensor,
    bias: *const paradec_tensor,
    out: *const paradec_tensor,
    accumulate: bool,
) -> paradec_status {
    let _ = stream;
    guard(|| {
        let x = view(x, "x")?;
        let w = view(weight, "weight")?;
        let bias = opt_view(bias, "bias")?;
        let out = view(out, "out")?;
        want_float(&x)?;
        want_float(&w)?;
        want_ndim(&w, 2, "[N, K]")?;
        let (n, k) = (w.shape[0], w.shape[1]);
        same_float(&out, x.dtype)?;
        let m = linear_rows(&x, k, n, &out)?;
        let mut all = vec![&x, &w, &out];
        if let Some(b) = &bias {
            want_float(b)?;
            want_shape(b, &[n])?;
            all.push(b);
        }
        let loc = one_device(&all)?;
        disjoint(&[&out, &x])?;
        disjoint(&[&out, &w])?;
        if let Loc::Cuda(dev) = loc {
            if let Some(b) = &bias {
                disjoint(&[&out, b])?;
            }
            device_float(&x)?;
            same_float(&w, x.dtype)?;
            if let Some(b) = &bias {
                same_float(b, x.dtype)?;
            }
            return on_cuda!([dev, stream, accumulate] cuda::linear(
                dev,
                stream,
                &x,
                &w,
                bias.as_ref(),
                &out,
                accumulate,
            ));
        }
        let outs = [&out];
        let xv = x.floats(&outs);
        let bv = bias.as_ref().map(|b| b.floats(&outs));
        let bv = bv.as_deref();
        let wv = w.host_bytes();
        out.with_floats_mut(|o| match w.dtype {
            DType::F32 => cpu::linear::linear(&xv, m, k, as_typed::<f32>(wv), n, bv, o, accumulate),
            DType::F16 => {
                cpu::linear::linear(&xv, m, k, as_typed::<half::f16>(wv), n, bv, o, accumulate)
            }
            _ => cpu::linear::linear(&xv, m, k, as_typed::<half::bf16>(wv), n, bv, o, accumulate),
        });
        Ok(())
    })
}

/// Reinterprets the bytes of a checked host view as its element type.
fn as_typed<T>(b: &[u8]) -> &[T] {
    if b.is_empty() {
        return &[];
    }
    // SAFETY: `b` is a view's memory, whose start `view_of` checked to be aligned to the
    // element size (size_of::<T>() here) and whose length is a whole number of elements; every
    // bit pattern is a valid f32 / f16 / bf16.
    unsafe {
        std::slice::from_raw_parts(b.as_ptr().cast::<T>(), b.len() / std::mem::size_of::<T>())
    }
}

/// Quantized linear: `out[m, N] (+)= x[m, K] · Wᵀ + bias` from a prepared quantized weight
/// (see `paradec_quant_weight_create`), on host tensors. CUDA tensors take their scratch
/// (gathered activations, split-K partials) from a workspace: `paradec_op_quant_linear_ws`
/// (this call returns `PARADEC_ERR_UNSUPPORTED` naming it for CUDA tensors).
///
/// - `x`: `[..., K]` float; `out`: `[..., N]`, x's dtype, written (added to when `accumulate`).
/// - `weight`: a prepared weight; borrowed for the call.
///
/// Ownership: the tensors are the caller's, used in place; `weight` stays the caller's.
#[no_mangle]
pub extern "C" fn paradec_op_quant_linear(
    stream: *mut c_void,
    x: *const paradec_tensor,
    weight: *const super::paradec_quant_weight,
    out: *const paradec_tensor,
    accumulate: bool,
) -> paradec_status {
    guard(|| quant_linear_impl(stream, None, x, weight, out, accumulate))
}

/// Quantized linear on tensors of either device: as `paradec_op_quant_linear`; for CUDA
/// tensors the weight must have been placed on their device in their dtype
/// (`paradec_quant_weight_to_device`; otherwise `PARADEC_ERR_DEVICE` / `PARADEC_ERR_DTYPE`),
/// and the kernel (a split-K GEMV for m ≤ 8, tensor cores above; f32 accumulation) runs on
/// `stream` with its scratch from `workspace`.
///
/// - `workspace`: a workspace on the tensors' CUDA device whose arena
///   (`paradec_workspace_reserve`) holds the scratch — at most m·K·2 bytes of gathered
///   activations (act-order) plus split-K partials of up to 64·m·N·4 bytes; too small:
///   `PARADEC_ERR_CAPACITY` naming the bytes, before any launch. May be NULL for host tensors.
///   Its scratch is reused by the next call: use one workspace per stream.
///
/// Ownership: the tensors are the caller's, used in place; `weight` stays the caller's;
/// `workspace` stays the caller's (the call must not overlap other calls on it).
#[no_mangle]
pub extern "C" fn paradec_op_quant_linear_ws(
    stream: *mut c_void,
    workspace: *mut super::paradec_workspace,
    x: *const paradec_tensor,
    weight: *const super::paradec_quant_weight,
    out: *const paradec_tensor,
    accumulate: bool,
) -> paradec_status {
    guard(|| quant_linear_impl(stream, Some(workspace), x, weight, out, accumulate))
}

#[allow(unused_variables)]
fn quant_linear_impl(
    stream: *mut c_void,
    ws: Option<*mut super::paradec_workspace>,
    x: *const paradec_tensor,
    weight: *const super::paradec_quant_weight,
    out: *const paradec_tensor,
    accumulate: bool,
) -> CResult<()> {
    let x = view(x, "x")?;
    let handle = req(weight, "weight")?;
    let w = &handle.inner;
    let out = view(out, "out")?;
    want_float(&x)?;
    same_float(&out, x.dtype)?;
    let m = linear_rows(&x, w.in_features(), w.out_features(), &out)?;
    let loc = one_device(&[&x, &out])?;
    disjoint(&[&out, &x])?;
    if let Loc::Cuda(dev) = loc {
        if ws.is_none() {
            return Err(cerr(
                PARADEC_ERR_UNSUPPORTED,
                "quant_linear on CUDA tensors takes its scratch from a workspace: call paradec_op_quant_linear_ws",
            ));
        }
        device_float(&x)?;
        let p = match &handle.prepared {
            Some(p) if p.device() == crate::Device::Cuda(dev) => p,
            Some(p) => {
                return Err(cerr(
                    PARADEC_ERR_DEVICE,
                    format!(
                        "weight: placed on {}, but x is on cuda:{dev} (paradec_quant_weight_to_device)",
                        p.device()
                    ),
                ))
            }
            None => {
                return Err(cerr(
                    PARADEC_ERR_DEVICE,
                    format!(
                        "weight: in host memory, but x is on cuda:{dev}; place it there first with paradec_quant_weight_to_device"
                    ),
                ))
            }
        };
        if p.dtype != x.dtype {
            return Err(cerr(
                PARADEC_ERR_DTYPE,
                format!(
                    "x: {} but the weight was placed for {} (paradec_quant_weight_to_device)",
                    x.dtype, p.dtype
                ),
            ));
        }
        let ws = cuda_workspace(ws, dev)?;
        let _ = m;
        return on_cuda!([dev, stream, ws, p, accumulate] cuda::prepared_linear(
            dev, stream, ws, &x, p, &out, accumulate,
        ));
    }
    let xv = x.floats(&[&out]);
    out.with_floats_mut(|o| w.forward(&xv, m, o, accumulate))?;
    Ok(())
}

/// Splits a fused QKV projection output into q, k and v (on either device; no scratch).
///
/// - `layout`: a `PARADEC_QKV_FUSED_*` value.
/// - `fused`: `[tokens, (heads + 2·kv_heads)·head_dim]` float.
/// - `q`: `[tokens, heads, head_dim]`; `k`, `v`: `[tokens, kv_heads, head_dim]`; written.
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_split_qkv(
    stream: *mut c_void,
    layout: i32,
    fused: *const paradec_tensor,
    q: *const paradec_tensor,
    k: *const paradec_tensor,
    v: *const paradec_tensor,
) -> paradec_status {
    let _ = stream;
    guard(|| {
        let layout = match layout {
            PARADEC_QKV_FUSED_PER_HEAD => QkvLayout::FusedPerHead,
            PARADEC_QKV_FUSED_QUERIES_FIRST => QkvLayout::FusedQueriesFirst,
            PARADEC_QKV_FUSED_GROUPED => QkvLayout::FusedGrouped,
            o => {
                return Err(cerr(
                    PARADEC_ERR_INVALID_ARGUMENT,
                    format!("layout: {o} is not a fused QKV layout (1, 2 or 3)"),
                ))
            }
        };
        let f = view(fused, "fused")?;
        let q = view(q, "q")?;
        let k = view(k, "k")?;
        let v = view(v, "v")?;
        want_float(&f)?;
        want_ndim(&q, 3, "[tokens, heads, head_dim]")?;
        want_ndim(&k, 3, "[tokens, kv_heads, head_dim]")?;
        let (t, heads, d, kvh) = (q.shape[0], q.shape[1], q.shape[2], k.shape[1]);
        same_float(&q, f.dtype)?;
        for x in [&k, &v] {
            same_float(x, f.dtype)?;
            want_shape(x, &[t, kvh, d])?;
        }
        want_shape(&f, &[t, (heads + 2 * kvh) * d])?;
        let ok = match layout {
            QkvLayout::FusedPerHead => heads == kvh,
            _ => kvh > 0 && heads.is_multiple_of(kvh),
        };
        if !ok {
            return Err(cerr(
                PARADEC_ERR_SHAPE,
                format!("k: {kvh} kv heads do not fit {heads} heads in this layout"),
            ));
        }
        let loc = one_device(&[&f, &q, &k, &v])?;
        let outs = [&q, &k, &v];
        disjoint(&outs)?;
        if let Loc::Cuda(dev) = loc {
            for o in outs {
                disjoint(&[o, &f])?;
            }
            device_float(&f)?;
            return on_cuda!([dev, stream, layout] cuda::split_qkv(
                dev,
                stream,
                layout,
                &f,
                [heads, kvh, d],
                (&q, &k, &v),
            ));
        }
        let fv = f.floats(&outs);
        q.with_floats_mut(|qq| {
            k.with_floats_mut(|kk| {
                v.with_floats_mut(|vv| {
                    cpu::qkv::split_qkv(layout, &fv, t, heads, kvh, d, qq, kk, vv)
                })
            })
        });
        Ok(())
    })
}

/// Norm of each head's features in place (Phi's and Cohere's q/k norms), on either device (no
/// scratch).
///
/// - `x`: `[tokens, heads, head_dim]` float, read and written.
/// - `affine`: NULL, or weight / bias each NULL, `[head_dim]` (shared by all heads) or
///   `[heads, head_dim]` (one row per head).
///
/// Ownership: every tensor is the caller's and is used in place; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_head_norm(
    stream: *mut c_void,
    kind: i32,
    eps: f32,
    x: *const paradec_tensor,
    affine: *const paradec_affine,
) -> paradec_status {
    let _ = stream;
    guard(|| {
        let kind = norm_kind(kind)?;
        let x = view(x, "x")?;
        want_float(&x)?;
        want_ndim(&x, 3, "[tokens, heads, head_dim]")?;
        let (heads, d) = (x.shape[1], x.shape[2]);
        let (w, b) = if affine.is_null() {
            (None, None)
        } else {
            let a = req(affine, "affine")?;
            (
                opt_view(a.weight, "affine.weight")?,
                opt_view(a.bias, "affine.bias")?,
            )
        };
        let mut all = vec![&x];
        for t in w.iter().chain(b.iter()) {
            same_float(t, x.dtype)?;
            if t.numel != d && t.numel != heads * d {
                return Err(cerr(
                    PARADEC_ERR_SHAPE,
                    format!(
                        "{}: expected [{d}] or [{heads}, {d}], got shape {:?}",
                        t.name, t.shape
                    ),
                ));
            }
            all.push(t);
        }
        if let Loc::Cuda(dev) = one_device(&all)? {
            device_float(&x)?;
            for t in w.iter().chain(b.iter()) {
                disjoint(&[&x, t])?;
            }
            return on_cuda!([dev, stream, kind, eps] cuda::head_norm(
                dev,
                stream,
                kind,
                &x,
                [heads, d],
                w.as_ref(),
                b.as_ref(),
                eps,
            ));
        }
        let (wv, bv) = (
            w.as_ref().map(|t| t.floats(&[&x])),
            b.as_ref().map(|t| t.floats(&[&x])),
        );
        fn row(v: Option<&[f32]>, h: usize, d: usize) -> Option<&[f32]> {
            v.map(|v| {
                if v.len() == d {
                    v
                } else {
                    &v[h * d..(h + 1) * d]
                }
            })
        }
        x.with_floats_mut(|xv| {
            let mut tmp = vec![0.0f32; d];
            if d == 0 {
                return;
            }
            for (r, chunk) in xv.chunks_exact_mut(d).enumerate() {
                let h = r % heads;
                let a = NormAffine {
                    weight: row(wv.as_deref(), h, d),
                    bias: row(bv.as_deref(), h, d),
                };
                cpu::norm::norm(kind, chunk, 1, d, a, eps, &mut tmp);
                chunk.copy_from_slice(&tmp);
            }
        });
        Ok(())
    })
}
