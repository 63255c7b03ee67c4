//! Rotary embedding fused with the KV-cache write (csrc/rope.cu).

use std::ffi::c_void;
use std::ptr;

use super::attention::fused_qkv_layout;
use super::{check_tensor, dev_ptr, dev_ptr_mut, dtype_code, upload_bytes};
use crate::cuda::device::ensure_device;
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::cuda::stream::CudaStream;
use crate::vocab::{CacheSlots, QkvLayout, RopeStyle, RotaryArgs};
use crate::{DType, Error, Result, Tensor};

/// Bytes of the device table one call uploads: positions (i64, one per token), past lengths
/// (i64, one per sequence) and the rotary frequencies (f32, `rot_dim / 2`).
pub fn rope_meta_bytes(tokens: usize, batch: usize, rot_dim: usize) -> usize {
    8 * (tokens + batch) + 4 * (rot_dim / 2)
}

/// Device addresses of a step's tables already on the device (staged by the workspace): the
/// positions and past lengths (i64) and, with rotary, the frequencies (f32).
#[derive(Debug, Clone, Copy)]
pub struct RopeTables {
    /// Positions, one per token.
    pub positions: *const i64,
    /// Past lengths, one per sequence.
    pub past_len: *const i64,
    /// Rotary frequencies (`rot_dim / 2`), or NULL without rotary.
    pub inv_freq: *const f32,
}

impl RopeTables {
    /// Checks that the tables a call of rotated width `rot_dim` reads are given.
    pub(super) fn check(&self, rot_dim: usize) -> Result<()> {
        if self.past_len.is_null()
            || (rot_dim > 0 && (self.positions.is_null() || self.inv_freq.is_null()))
        {
            return Err(Error::bad_input("rotary tables: a device table is missing"));
        }
        Ok(())
    }
}

/// Checks the rotary arguments of a call of `tokens` tokens (positions, width, frequencies):
/// the kernel's style code, the rotated width and the attention factor (0, 0, 1 without
/// rotary).
pub(super) fn rotary_style(
    rotary: Option<&RotaryArgs<'_>>,
    positions: &[i64],
    tokens: usize,
    head_dim: usize,
) -> Result<(i32, usize, f32)> {
    let Some(r) = rotary else {
        return Ok((0, 0, 1.0));
    };
    if positions.len() != tokens {
        return Err(Error::bad_input(format!(
            "rotary positions: expected {tokens}, got {}",
            positions.len()
        )));
    }
    if r.rot_dim == 0 || r.rot_dim % 2 != 0 || r.rot_dim > head_dim {
        return Err(Error::bad_input(format!(
            "rotary rot_dim {} must be even and in 1..={head_dim}",
            r.rot_dim
        )));
    }
    if r.inv_freq.len() < r.rot_dim / 2 {
        return Err(Error::bad_input(format!(
            "rotary inv_freq: expected at least {} values, got {}",
            r.rot_dim / 2,
            r.inv_freq.len()
        )));
    }
    let style = match r.style {
        RopeStyle::Interleaved => ffi::paradec_rope_style::PARADEC_ROPE_INTERLEAVED,
        RopeStyle::Half => ffi::paradec_rope_style::PARADEC_ROPE_HALF,
    } as i32;
    Ok((style, r.rot_dim, r.attn_factor))
}

/// The device table of a rotary + cache write (`rope_meta_bytes` long): positions (i64 per
/// token; zeros without rotary), past lengths (i64 per sequence), frequencies (f32, rot_dim / 2).
pub(super) fn rope_table(
    positions: &[i64],
    past_len: &[usize],
    rotary: Option<&RotaryArgs<'_>>,
    tokens: usize,
    rot_dim: usize,
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(rope_meta_bytes(tokens, past_len.len(), rot_dim));
    match rotary {
        Some(_) => bytes.extend(positions.iter().flat_map(|p| p.to_le_bytes())),
        None => bytes.resize(8 * tokens, 0),
    }
    bytes.extend(past_len.iter().flat_map(|&p| (p as i64).to_le_bytes()));
    if let Some(r) = rotary {
        bytes.extend(
            r.inv_freq[..rot_dim / 2]
                .iter()
                .flat_map(|f| f.to_le_bytes()),
        );
    }
    bytes
}

/// Checks what every rotary + cache write (contiguous or quantized cache) takes: q, k and v of
/// `slots.batch · slots.q_len` tokens in one float dtype, and every sequence's new slots within
/// the capacity. Returns the dtype code, the token count and k's element count.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_new_tokens(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    slots: &CacheSlots<'_>,
    what: &str,
    stream: &CudaStream,
) -> Result<(i32, usize, usize)> {
    let overflow = || Error::bad_input(format!("{what}: sizes overflow"));
    let tokens = slots.batch.checked_mul(slots.q_len).ok_or_else(overflow)?;
    let q_n = tokens
        .checked_mul(heads)
        .and_then(|n| n.checked_mul(head_dim))
        .ok_or_else(overflow)?;
    let kv_n = tokens
        .checked_mul(kv_heads)
        .and_then(|n| n.checked_mul(head_dim))
        .ok_or_else(overflow)?;
    if slots.past_len.len() != slots.batch {
        return Err(Error::bad_input(format!(
            "cache past lengths: expected {}, got {}",
            slots.batch,
            slots.past_len.len()
        )));
    }
    for (b, &p) in slots.past_len.iter().enumerate() {
        if p.checked_add(slots.q_len)
            .is_none_or(|e| e > slots.capacity)
        {
            return Err(Error::CapacityExceeded(format!(
                "sequence {b}: past length {p} + {} new tokens exceeds the cache capacity {}",
                slots.q_len, slots.capacity
            )));
        }
    }
    let dtype = q.dtype();
    let code = dtype_code(dtype, "rotary q")?;
    check_tensor(q, "rotary q", None, q_n, stream)?;
    check_tensor(k, "rotary k", Some(dtype), kv_n, stream)?;
    check_tensor(v, "rotary v", Some(dtype), kv_n, stream)?;
    Ok((code, tokens, kv_n))
}

/// What the argument checks settle: the dtype code, token and K/V element counts, and the
/// rotary style, width and attention factor (0, 0, 1 without rotary).
struct RopeCall {
    code: i32,
    tokens: usize,
    kv_n: usize,
    style: i32,
    rot_dim: usize,
    attn_factor: f32,
}

/// Checks every argument of a rotary + cache write, slots against the capacity included.
#[allow(clippy::too_many_arguments)]
fn check_call(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    cache_k: &Tensor,
    cache_v: &Tensor,
    stream: &CudaStream,
) -> Result<RopeCall> {
    let (code, tokens, kv_n) = check_new_tokens(
        q,
        k,
        v,
        heads,
        kv_heads,
        head_dim,
        slots,
        "rotary_and_cache_write",
        stream,
    )?;
    let dtype = q.dtype();
    let cache_n = slots
        .batch
        .checked_mul(slots.capacity)
        .and_then(|n| n.checked_mul(kv_heads * head_dim))
        .ok_or_else(|| Error::bad_input("rotary_and_cache_write: sizes overflow"))?;
    check_tensor(cache_k, "cache k", Some(dtype), cache_n, stream)?;
    check_tensor(cache_v, "cache v", Some(dtype), cache_n, stream)?;
    let (style, rot_dim, attn_factor) = rotary_style(rotary, positions, tokens, head_dim)?;
    Ok(RopeCall {
        code,
        tokens,
        kv_n,
        style,
        rot_dim,
        attn_factor,
    })
}

/// Launches the kernel of a checked call over tables on the device.
///
/// # Safety
/// The tables' pointers are device memory on the stream's device holding what `RopeTables`
/// says (NULL positions and frequencies without rotary), written before the kernel runs.
#[allow(clippy::too_many_arguments)]
unsafe fn launch(
    c: &RopeCall,
    fused: Option<(&Tensor, i32)>,
    q: &mut Tensor,
    k: &mut Tensor,
    v: *mut c_void,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    slots: &CacheSlots<'_>,
    tables: RopeTables,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    ensure_device(stream.device())?;
    let (positions, inv_freq) = if c.rot_dim > 0 {
        (tables.positions, tables.inv_freq)
    } else {
        (ptr::null(), ptr::null())
    };
    let (src, layout) = fused.map_or((ptr::null(), 0), |(t, l)| (dev_ptr(t), l));
    // SAFETY: every tensor is a live device allocation of the checked size and dtype on the
    // stream's device, alive until the kernel has run (freeing waits); v is such a tensor's,
    // written only with a fused source (whose callers hold v mutably, fused another tensor);
    // the tables as the function's contract says.
    let status = unsafe {
        ffi::paradec_split_rotary_cache_write(
            c.code,
            src,
            layout,
            dev_ptr_mut(q),
            dev_ptr_mut(k),
            v,
            slots.batch,
            slots.q_len,
            heads,
            kv_heads,
            head_dim,
            positions,
            c.style,
            c.rot_dim,
            inv_freq,
            c.attn_factor,
            tables.past_len,
            slots.capacity,
            dev_ptr_mut(cache_k),
            dev_ptr_mut(cache_v),
            stream.raw(),
        )
    };
    check_status(status, "paradec_split_rotary_cache_write")
}

/// Uploads a checked call's positions, past lengths and frequencies into `meta` (exactly
/// `rope_meta_bytes(tokens, batch, rot_dim)` bytes) on `stream` and returns their device
/// addresses; None when the call has nothing to do.
fn upload_tables(
    c: &RopeCall,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    meta: &mut Tensor,
    stream: &CudaStream,
) -> Result<Option<RopeTables>> {
    let (tokens, rot_dim) = (c.tokens, c.rot_dim);
    let bytes = rope_table(positions, slots.past_len, rotary, tokens, rot_dim);
    check_tensor(
        meta,
        "rotary meta (scratch)",
        Some(DType::U8),
        bytes.len(),
        stream,
    )?;
    if tokens == 0 || c.kv_n == 0 {
        return Ok(None);
    }
    upload_bytes(meta, "rotary meta (scratch)", &bytes, stream)?;
    let base = dev_ptr(meta) as *const u8;
    // Byte offsets inside the uploaded table (the kernel reads scalars: 8-byte aligned).
    Ok(Some(RopeTables {
        positions: base as *const i64,
        past_len: base.wrapping_add(8 * tokens) as *const i64,
        inv_freq: base.wrapping_add(8 * (tokens + slots.batch)) as *const f32,
    }))
}

/// Where a rotary + cache write reads its positions, past lengths and frequencies: an upload
/// into `meta`, a U8 device tensor of exactly `rope_meta_bytes(tokens, batch, rot_dim)` bytes
/// (rot_dim 0 without rotary) queued on the stream before the kernel, or tables already on the
/// device (the workspace's staged step).
pub(crate) enum RopeMeta<'a> {
    /// Uploaded here into this scratch.
    Upload(&'a mut Tensor),
    /// Staged before the call (see [`rotary_and_cache_write_staged`]'s safety contract).
    Staged(RopeTables),
}

/// Every contiguous-cache rotary launcher: the call's checks (with `fused`, the fused
/// projection's too), then its tables (uploaded, or the staged ones checked), then the launch.
/// Nothing runs for a call without tokens or KV features.
///
/// # Safety
/// Staged tables as [`rotary_and_cache_write_staged`] says. With `fused`, v is written (the
/// split's output): the caller holds it mutably and `fused` is another tensor than q, k and v;
/// without, v is only read.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rope_call(
    fused: Option<(&Tensor, QkvLayout)>,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    meta: RopeMeta<'_>,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let c = check_call(
        q, k, v, heads, kv_heads, head_dim, positions, rotary, slots, cache_k, cache_v, stream,
    )?;
    let src = match fused {
        Some((f, layout)) => Some(fused_source(
            f, layout, &c, q, heads, kv_heads, head_dim, stream,
        )?),
        None => None,
    };
    let tables = match meta {
        RopeMeta::Upload(m) => match upload_tables(&c, positions, rotary, slots, m, stream)? {
            Some(t) => t,
            None => return Ok(()),
        },
        RopeMeta::Staged(t) => {
            if c.tokens == 0 || c.kv_n == 0 {
                return Ok(());
            }
            t.check(c.rot_dim)?;
            t
        }
    };
    // SAFETY: the tables are uploaded just above on the stream or staged per the caller's
    // contract; v is written only with a fused source, as the contract allows (a device
    // address: the kernel writes device memory, no Rust value).
    unsafe {
        launch(
            &c,
            src,
            q,
            k,
            dev_ptr(v).cast_mut(),
            heads,
            kv_heads,
            head_dim,
            slots,
            tables,
            cache_k,
            cache_v,
            stream,
        )
    }
}

/// Rotates q and k (at `positions`, one per token of [batch, q_len]) and writes k and v into
/// the cache at each sequence's next slots. Twin of `cpu::rope::rotary_and_cache_write`, with
/// the same host arguments; q is [batch, q_len, heads, head_dim], k and v
/// [batch, q_len, kv_heads, head_dim], the caches [batch, capacity, kv_heads·head_dim].
/// Every slot is checked against the capacity here, before launching (an error, never a
/// silently skipped write). The positions, past lengths and frequencies travel to the device
/// in `meta`, a U8 device tensor of exactly `rope_meta_bytes(tokens, batch, rot_dim)` bytes
/// (rot_dim 0 without rotary), queued on `stream` before the kernel.
#[allow(clippy::too_many_arguments)]
pub fn rotary_and_cache_write(
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    meta: &mut Tensor,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    // SAFETY: uploaded tables; no fused source, so v is only read.
    unsafe {
        rope_call(
            None,
            q,
            k,
            v,
            heads,
            kv_heads,
            head_dim,
            positions,
            rotary,
            slots,
            RopeMeta::Upload(meta),
            cache_k,
            cache_v,
            stream,
        )
    }
}

/// As [`rotary_and_cache_write`], reading positions, past lengths and frequencies from tables
/// already on the device (the workspace's staged step) instead of uploading them. The host
/// `positions`, `rotary` and `slots` are still checked, slots against the capacity included.
///
/// # Safety
/// `tables` holds device copies of exactly these host `positions`, `slots.past_len` and
/// `rotary.inv_freq`, on the stream's device, queued on `stream` (or complete) before this
/// call, and alive until the kernel has run.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rotary_and_cache_write_staged(
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    tables: RopeTables,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    // SAFETY: the function's contract; no fused source, so v is only read.
    unsafe {
        rope_call(
            None,
            q,
            k,
            v,
            heads,
            kv_heads,
            head_dim,
            positions,
            rotary,
            slots,
            RopeMeta::Staged(tables),
            cache_k,
            cache_v,
            stream,
        )
    }
}

/// Checks a split call's fused projection (its layout, size, device and q's dtype) and returns
/// it with its layout's kernel code.
#[allow(clippy::too_many_arguments)]
fn fused_source<'a>(
    fused: &'a Tensor,
    layout: QkvLayout,
    c: &RopeCall,
    q: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    stream: &CudaStream,
) -> Result<(&'a Tensor, i32)> {
    let f = fused_qkv_layout(layout, fused, c.tokens, heads, kv_heads, head_dim, stream)?;
    if fused.dtype() != q.dtype() {
        return Err(Error::bad_input(format!(
            "fused qkv: dtype {}, q {}",
            fused.dtype(),
            q.dtype()
        )));
    }
    Ok((fused, f.layout))
}

/// `split_qkv` then [`rotary_and_cache_write`] in one launch: `fused` [tokens, (heads +
/// 2·kv_heads)·head_dim] in `layout` is split into q, k and v (outputs), q and k rotated, k and
/// v written into the cache — the same values to the bit. Twin of
/// `cpu::rope::split_rotary_and_cache_write`; the other arguments as [`rotary_and_cache_write`].
#[allow(clippy::too_many_arguments)]
pub fn split_rotary_and_cache_write(
    fused: &Tensor,
    layout: QkvLayout,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &mut Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    meta: &mut Tensor,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    // SAFETY: uploaded tables; v is held mutably and fused is another tensor (the borrows say
    // so).
    unsafe {
        rope_call(
            Some((fused, layout)),
            q,
            k,
            v,
            heads,
            kv_heads,
            head_dim,
            positions,
            rotary,
            slots,
            RopeMeta::Upload(meta),
            cache_k,
            cache_v,
            stream,
        )
    }
}
