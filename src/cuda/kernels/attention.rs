//! QKV split, q/k norms and attention over the KV cache (csrc/kernels/attention.h).

use std::ffi::c_void;
use std::ptr;

use super::{check_tensor, dev_ptr, dev_ptr_mut, dtype_code, opt_ptr, upload_bytes};
use crate::cuda::device::ensure_device;
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::cuda::stream::CudaStream;
use crate::vocab::{Affine, AttnMasking, AttnShape, NormKind, QkvLayout};
use crate::{DType, Error, Result, Tensor};

fn overflow(what: &str) -> Error {
    Error::bad_input(format!("{what}: sizes overflow"))
}

fn prod(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| overflow(what))
}

/// A checked fused QKV projection output: its layout's and dtype's kernel codes and its width,
/// (heads + 2·kv_heads)·head_dim.
pub(super) struct FusedQkv {
    pub layout: i32,
    pub dtype: i32,
    pub width: usize,
}

/// Checks a fused QKV projection output of `tokens` tokens, [tokens, (heads + 2·kv_heads)·
/// head_dim].
pub(super) fn fused_qkv_layout(
    layout: QkvLayout,
    fused: &Tensor,
    tokens: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    stream: &CudaStream,
) -> Result<FusedQkv> {
    let code = match layout {
        QkvLayout::Separate => {
            return Err(Error::bad_input(
                "split_qkv on separate projections (nothing to split)",
            ))
        }
        QkvLayout::FusedPerHead => ffi::paradec_qkv_layout::PARADEC_QKV_PER_HEAD,
        QkvLayout::FusedQueriesFirst => ffi::paradec_qkv_layout::PARADEC_QKV_QUERIES_FIRST,
        QkvLayout::FusedGrouped => ffi::paradec_qkv_layout::PARADEC_QKV_GROUPED,
    } as i32;
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(Error::bad_input(format!(
            "split_qkv: {heads} heads over {kv_heads} kv heads"
        )));
    }
    let width = heads
        .checked_add(2 * kv_heads)
        .and_then(|w| w.checked_mul(head_dim))
        .ok_or_else(|| overflow("split_qkv"))?;
    let dtype = dtype_code(fused.dtype(), "fused qkv")?;
    check_tensor(
        fused,
        "fused qkv",
        None,
        prod("split_qkv", &[tokens, width])?,
        stream,
    )?;
    Ok(FusedQkv {
        layout: code,
        dtype,
        width,
    })
}

/// Splits a fused QKV projection output [tokens, (heads + 2·kv_heads)·head_dim] into q, k and v
/// following `layout`. Twin of the CPU arm of `ops::split_qkv`.
#[allow(clippy::too_many_arguments)]
pub fn split_qkv(
    layout: QkvLayout,
    fused: &Tensor,
    tokens: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let f = fused_qkv_layout(layout, fused, tokens, heads, kv_heads, head_dim, stream)?;
    let dtype = fused.dtype();
    check_tensor(
        q,
        "q",
        Some(dtype),
        prod("q", &[tokens, heads, head_dim])?,
        stream,
    )?;
    let kv_n = prod("k", &[tokens, kv_heads, head_dim])?;
    check_tensor(k, "k", Some(dtype), kv_n, stream)?;
    check_tensor(v, "v", Some(dtype), kv_n, stream)?;
    if tokens == 0 || f.width == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: live device allocations of the checked sizes and dtype on the stream's device;
    // they outlive the kernel (freeing device memory waits for queued work).
    let status = unsafe {
        ffi::paradec_split_qkv(
            f.dtype,
            f.layout,
            dev_ptr(fused),
            tokens,
            heads,
            kv_heads,
            head_dim,
            dev_ptr_mut(q),
            dev_ptr_mut(k),
            dev_ptr_mut(v),
            stream.raw(),
        )
    };
    check_status(status, "paradec_split_qkv")
}

/// Norm of each head's `head_dim` features, in place on x [tokens, heads·head_dim]; `affine`'s
/// tensors hold one row per head ([heads, head_dim]) or one shared row (`[head_dim]`). Twin of the
/// CPU arm of `ops::head_norm`.
pub fn head_norm(
    kind: NormKind,
    x: &mut Tensor,
    heads: usize,
    head_dim: usize,
    affine: &Affine<'_>,
    eps: f32,
    stream: &CudaStream,
) -> Result<()> {
    let dtype = x.dtype();
    let code = dtype_code(dtype, "head norm input")?;
    let row = heads
        .checked_mul(head_dim)
        .ok_or_else(|| overflow("head norm"))?;
    if row == 0 || !x.numel().is_multiple_of(row) {
        return Err(Error::bad_input(format!(
            "head norm: shape {:?} is not a whole number of {heads} heads × {head_dim}",
            x.shape()
        )));
    }
    let tokens = x.numel() / row;
    check_tensor(x, "head norm input", None, x.numel(), stream)?;
    let mut per_head = [0i32; 2];
    for (i, (n, t)) in [("weight", affine.weight), ("bias", affine.bias)]
        .into_iter()
        .enumerate()
    {
        if let Some(t) = t {
            let n = format!("head norm {n}");
            if t.numel() == row && row != head_dim {
                check_tensor(t, &n, Some(dtype), row, stream)?;
                per_head[i] = 1;
            } else {
                check_tensor(t, &n, Some(dtype), head_dim, stream)?;
            }
        }
    }
    if tokens == 0 {
        return Ok(());
    }
    let kind = match kind {
        NormKind::LayerNorm => ffi::paradec_norm_kind::PARADEC_LAYER_NORM,
        NormKind::RmsNorm => ffi::paradec_norm_kind::PARADEC_RMS_NORM,
    } as i32;
    ensure_device(stream.device())?;
    // SAFETY: live device allocations of the checked sizes and dtype (or NULL where optional).
    let status = unsafe {
        ffi::paradec_head_norm(
            code,
            kind,
            dev_ptr_mut(x),
            tokens,
            heads,
            head_dim,
            opt_ptr(affine.weight),
            per_head[0],
            opt_ptr(affine.bias),
            per_head[1],
            eps,
            stream.raw(),
        )
    };
    check_status(status, "paradec_head_norm")
}

/// Bytes of the device table `attention` uploads per call: the past lengths (i64 per sequence)
/// and, with a mask, the mask rows (f32, [batch, mask_stride]) at the next 16-byte boundary.
pub fn attention_meta_bytes(shape: &AttnShape, masking: &AttnMasking<'_>) -> usize {
    let past = (8 * shape.batch).div_ceil(16) * 16;
    past + masking
        .mask
        .map_or(0, |_| 4 * shape.batch * masking.mask_stride)
}

/// f32 elements of split-KV scratch `attention` needs (0: none) on the stream's device, for
/// past lengths up to `max_past`.
pub fn attention_scratch_len(
    shape: &AttnShape,
    max_past: usize,
    stream: &CudaStream,
) -> Result<usize> {
    ensure_device(stream.device())?;
    // SAFETY: a pure query of sizes; no pointers.
    let bytes = unsafe {
        ffi::paradec_attention_scratch_bytes(
            shape.batch,
            shape.q_len,
            shape.heads,
            shape.kv_heads,
            shape.head_dim,
            max_past,
        )
    };
    Ok(bytes / 4)
}

/// What the argument checks of an attention call settle.
pub(super) struct AttnCall {
    pub(super) code: i32,
    pub(super) q_n: usize,
}

/// Checks every argument of an attention call: shapes, dtypes, the past lengths against the
/// capacity and `plan_max_past` (≥ each of them), the mask, and the split-KV scratch for a
/// launch planned for `plan_max_past`.
#[allow(clippy::too_many_arguments)]
fn check_call(
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    plan_max_past: usize,
    partials: &Tensor,
    out: &Tensor,
    stream: &CudaStream,
) -> Result<AttnCall> {
    let s = shape;
    let c = check_query(q, out, s, masking, plan_max_past, stream)?;
    let c_n = prod("cache", &[s.batch, s.capacity, s.kv_heads, s.head_dim])?;
    check_tensor(cache_k, "cache k", Some(q.dtype()), c_n, stream)?;
    check_tensor(cache_v, "cache v", Some(q.dtype()), c_n, stream)?;
    let scratch_len = attention_scratch_len(s, plan_max_past, stream)?;
    if partials.dtype() != DType::F32 || partials.numel() < scratch_len {
        return Err(Error::bad_input(format!(
            "attention partials (scratch): expected at least {scratch_len} f32 values, got {} of {}",
            partials.numel(),
            partials.dtype()
        )));
    }
    if partials.numel() > 0 {
        check_tensor(
            partials,
            "attention partials (scratch)",
            Some(DType::F32),
            partials.numel(),
            stream,
        )?;
    }
    Ok(c)
}

/// Checks what every attention call (contiguous or quantized cache) takes: the head counts
/// and head_dim, q and out, the past lengths against `plan_max_past` (≥ each of them) and the
/// capacity, and the mask.
/// Checks that a staged call's device past lengths are given, and its device mask exactly
/// where the host masking has one.
pub(super) fn check_staged_masking(
    masking: &AttnMasking<'_>,
    past_len: *const i64,
    mask: *const f32,
) -> Result<()> {
    if past_len.is_null() || masking.mask.is_some() == mask.is_null() {
        return Err(Error::bad_input(
            "attention tables: the device past lengths or mask are missing",
        ));
    }
    Ok(())
}

pub(super) fn check_query(
    q: &Tensor,
    out: &Tensor,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    plan_max_past: usize,
    stream: &CudaStream,
) -> Result<AttnCall> {
    let s = shape;
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(Error::bad_input(format!(
            "attention: {} heads over {} kv heads",
            s.heads, s.kv_heads
        )));
    }
    if s.head_dim == 0
        || !s.head_dim.is_multiple_of(8)
        || s.head_dim > ffi::paradec_attention_limits::PARADEC_ATTN_MAX_HEAD_DIM as usize
    {
        return Err(Error::unsupported(format!(
            "attention on CUDA: head_dim {} must be a multiple of 8 up to {}",
            s.head_dim,
            ffi::paradec_attention_limits::PARADEC_ATTN_MAX_HEAD_DIM as usize
        )));
    }
    let dtype = q.dtype();
    let code = dtype_code(dtype, "attention q")?;
    let q_n = prod("attention q", &[s.batch, s.q_len, s.heads, s.head_dim])?;
    check_tensor(q, "attention q", None, q_n, stream)?;
    check_tensor(out, "attention output", Some(dtype), q_n, stream)?;
    if masking.past_len.len() != s.batch {
        return Err(Error::bad_input(format!(
            "past lengths: expected {}, got {}",
            s.batch,
            masking.past_len.len()
        )));
    }
    let max_past = masking.past_len.iter().copied().max().unwrap_or(0);
    if max_past > plan_max_past {
        return Err(Error::bad_input(format!(
            "attention: past length {max_past} exceeds the {plan_max_past} the launch is planned for"
        )));
    }
    if plan_max_past
        .checked_add(s.q_len)
        .is_none_or(|e| e > s.capacity)
    {
        return Err(Error::CapacityExceeded(format!(
            "attention over {plan_max_past} past + {} new slots exceeds the capacity {}",
            s.q_len, s.capacity
        )));
    }
    if let Some(m) = masking.mask {
        if masking.mask_stride < plan_max_past + s.q_len || m.len() < s.batch * masking.mask_stride
        {
            return Err(Error::bad_input(format!(
                "attention mask: needs [{}, ≥{}] values, got {} with row stride {}",
                s.batch,
                plan_max_past + s.q_len,
                m.len(),
                masking.mask_stride
            )));
        }
    }
    Ok(AttnCall { code, q_n })
}

/// Launches a checked call over past lengths (i64) and mask (f32 or NULL) on the device.
///
/// # Safety
/// `past_len` and `mask` are device memory on the stream's device holding the call's past
/// lengths and mask rows, written before the kernel runs and alive until it has.
#[allow(clippy::too_many_arguments)]
unsafe fn launch(
    c: &AttnCall,
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
    s: &AttnShape,
    masking: &AttnMasking<'_>,
    plan_max_past: usize,
    past_len: *const i64,
    mask: *const f32,
    scale: f32,
    partials: &mut Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let (scratch, scratch_bytes): (*mut c_void, usize) = if partials.numel() > 0 {
        (dev_ptr_mut(partials), 4 * partials.numel())
    } else {
        (ptr::null_mut(), 0)
    };
    ensure_device(stream.device())?;
    // SAFETY: live device allocations of the checked sizes and dtypes on the stream's device
    // (NULL where optional), outliving the kernel (freeing device memory waits for queued
    // work); the tables as the function's contract says.
    let status = unsafe {
        ffi::paradec_attention(
            c.code,
            dev_ptr(q),
            dev_ptr(cache_k),
            dev_ptr(cache_v),
            dev_ptr_mut(out),
            s.batch,
            s.q_len,
            s.heads,
            s.kv_heads,
            s.head_dim,
            s.capacity,
            past_len,
            plan_max_past,
            masking.window,
            mask,
            masking.mask_stride,
            scale,
            scratch,
            scratch_bytes,
            stream.raw(),
        )
    };
    check_status(status, "paradec_attention")
}

/// Attention of q [batch, q_len, heads·D] over the cache [batch, capacity, kv_heads·D]; writes
/// out [batch, q_len, heads·D]. Twin of `cpu::attention::attention`, with the same host
/// masking. Every past length is checked against the capacity and the mask here. `meta` is a U8
/// device tensor of exactly `attention_meta_bytes` (the past lengths and mask travel in it,
/// queued on `stream`); `partials` an f32 device tensor of at least `attention_scratch_len`
/// elements (may be empty when that is 0).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    meta: &mut Tensor,
    partials: &mut Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let s = shape;
    let max_past = masking.past_len.iter().copied().max().unwrap_or(0);
    let c = check_call(
        q, cache_k, cache_v, s, masking, max_past, partials, out, stream,
    )?;
    let mut bytes = Vec::with_capacity(attention_meta_bytes(s, masking));
    bytes.extend(
        masking
            .past_len
            .iter()
            .flat_map(|&p| (p as i64).to_le_bytes()),
    );
    bytes.resize((8 * s.batch).div_ceil(16) * 16, 0);
    let mask_off = bytes.len();
    if let Some(m) = masking.mask {
        bytes.extend(
            m[..s.batch * masking.mask_stride]
                .iter()
                .flat_map(|f| f.to_le_bytes()),
        );
    }
    check_tensor(
        meta,
        "attention meta (scratch)",
        Some(DType::U8),
        bytes.len(),
        stream,
    )?;
    if c.q_n == 0 {
        return Ok(());
    }
    upload_bytes(meta, "attention meta (scratch)", &bytes, stream)?;
    let base = dev_ptr(meta) as *const u8;
    let mask_ptr = if masking.mask.is_some() {
        base.wrapping_add(mask_off) as *const f32
    } else {
        ptr::null()
    };
    // SAFETY: the table was queued on the stream just above, in a live device tensor.
    unsafe {
        launch(
            &c,
            q,
            cache_k,
            cache_v,
            s,
            masking,
            max_past,
            base as *const i64,
            mask_ptr,
            scale,
            partials,
            out,
            stream,
        )
    }
}

/// As [`attention`], reading the past lengths and mask from device copies (the workspace's
/// staged step) instead of uploading them, and planning the launch for past lengths up to
/// `plan_max_past` (≥ each of them): a captured graph keeps its launch shape while the
/// lengths it reads change. The host masking is still checked.
///
/// # Safety
/// `past_len` (i64) and `mask` (f32, NULL without a mask) are device copies of exactly
/// `masking.past_len` and `masking.mask`, on the stream's device, queued on `stream` (or
/// complete) before this call and alive until the kernel has run.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_staged(
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    plan_max_past: usize,
    past_len: *const i64,
    mask: *const f32,
    partials: &mut Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let c = check_call(
        q,
        cache_k,
        cache_v,
        shape,
        masking,
        plan_max_past,
        partials,
        out,
        stream,
    )?;
    if c.q_n == 0 {
        return Ok(());
    }
    check_staged_masking(masking, past_len, mask)?;
    // SAFETY: the function's contract.
    unsafe {
        launch(
            &c,
            q,
            cache_k,
            cache_v,
            shape,
            masking,
            plan_max_past,
            past_len,
            mask,
            scale,
            partials,
            out,
            stream,
        )
    }
}
