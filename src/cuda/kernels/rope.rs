//! Rotary embedding fused with the KV-cache write (csrc/rope.cu).

use std::ptr;

use super::{check_tensor, dev_ptr, dev_ptr_mut, dtype_code};
use crate::cuda::device::ensure_device;
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::cuda::stream::CudaStream;
use crate::vocab::RopeStyle;
use crate::{DType, Error, Result, Tensor};

/// Rotary settings on the device: the twin of `cpu::rope::RotaryArgs`, with `inv_freq` an f32
/// device tensor of at least `rot_dim / 2` values.
#[derive(Debug, Clone, Copy)]
pub struct RotaryArgs<'a> {
    /// How features are paired.
    pub style: RopeStyle,
    /// Rotated features per head (even, ≤ head_dim).
    pub rot_dim: usize,
    /// rot_dim / 2 inverse frequencies (f32, on the device).
    pub inv_freq: &'a Tensor,
    /// The factor on cos and sin.
    pub attn_factor: f32,
}

/// Where new tokens go in the cache: the twin of `cpu::rope::CacheSlots`, with `past_len` an
/// i64 device tensor of `batch` values. Slot `past_len[b] + t` must lie below `capacity`: the
/// values are on the device, so this cannot be checked here; the kernel skips (does not write)
/// a slot outside the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSlots<'a> {
    /// Sequences.
    pub batch: usize,
    /// New tokens per sequence.
    pub q_len: usize,
    /// Slots per sequence in the cache.
    pub capacity: usize,
    /// Tokens each sequence already holds (i64, on the device).
    pub past_len: &'a Tensor,
}

/// Rotates q and k (at `positions`, an i64 device tensor with one value per token of
/// [batch, q_len]) and writes k and v into the cache at each sequence's next slots. Twin of
/// `cpu::rope::rotary_and_cache_write`; q is [batch, q_len, heads, head_dim], k and v
/// [batch, q_len, kv_heads, head_dim], the caches [batch, capacity, kv_heads·head_dim].
#[allow(clippy::too_many_arguments)]
pub fn rotary_and_cache_write(
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &Tensor,
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let overflow = || Error::bad_input("rotary_and_cache_write: sizes overflow");
    let tokens = slots.batch.checked_mul(slots.q_len).ok_or_else(overflow)?;
    let q_n = tokens
        .checked_mul(heads)
        .and_then(|n| n.checked_mul(head_dim))
        .ok_or_else(overflow)?;
    let kv_n = tokens
        .checked_mul(kv_heads)
        .and_then(|n| n.checked_mul(head_dim))
        .ok_or_else(overflow)?;
    let cache_n = slots
        .batch
        .checked_mul(slots.capacity)
        .and_then(|n| n.checked_mul(kv_heads * head_dim))
        .ok_or_else(overflow)?;
    let dtype = q.dtype();
    let code = dtype_code(dtype, "rotary q")?;
    check_tensor(q, "rotary q", None, q_n, stream)?;
    check_tensor(k, "rotary k", Some(dtype), kv_n, stream)?;
    check_tensor(v, "rotary v", Some(dtype), kv_n, stream)?;
    check_tensor(
        slots.past_len,
        "cache past_len",
        Some(DType::I64),
        slots.batch,
        stream,
    )?;
    check_tensor(cache_k, "cache k", Some(dtype), cache_n, stream)?;
    check_tensor(cache_v, "cache v", Some(dtype), cache_n, stream)?;
    let (style, rot_dim, inv_freq, attn_factor) = match rotary {
        Some(r) => {
            check_tensor(
                positions,
                "rotary positions",
                Some(DType::I64),
                tokens,
                stream,
            )?;
            if r.inv_freq.dtype() != DType::F32 || r.inv_freq.numel() < r.rot_dim / 2 {
                return Err(Error::bad_input(format!(
                    "rotary inv_freq: expected at least {} f32 values, got {} of {}",
                    r.rot_dim / 2,
                    r.inv_freq.numel(),
                    r.inv_freq.dtype()
                )));
            }
            check_tensor(
                r.inv_freq,
                "rotary inv_freq",
                Some(DType::F32),
                r.inv_freq.numel(),
                stream,
            )?;
            if r.rot_dim == 0 || r.rot_dim % 2 != 0 || r.rot_dim > head_dim {
                return Err(Error::bad_input(format!(
                    "rotary rot_dim {} must be even and in 1..={head_dim}",
                    r.rot_dim
                )));
            }
            let style = match r.style {
                RopeStyle::Interleaved => ffi::paradec_rope_style::PARADEC_ROPE_INTERLEAVED,
                RopeStyle::Half => ffi::paradec_rope_style::PARADEC_ROPE_HALF,
            } as i32;
            (
                style,
                r.rot_dim,
                dev_ptr(r.inv_freq) as *const f32,
                r.attn_factor,
            )
        }
        None => (0, 0, ptr::null(), 1.0),
    };
    if tokens == 0 || kv_n == 0 {
        return Ok(());
    }
    let positions_ptr = if rotary.is_some() {
        dev_ptr(positions) as *const i64
    } else {
        ptr::null()
    };
    ensure_device(stream.device())?;
    // SAFETY: every pointer is NULL (where optional) or a live device allocation of the checked
    // size and dtype on the stream's device, alive until the kernel has run (freeing waits).
    let status = unsafe {
        ffi::paradec_rotary_cache_write(
            code,
            dev_ptr_mut(q),
            dev_ptr_mut(k),
            dev_ptr(v),
            slots.batch,
            slots.q_len,
            heads,
            kv_heads,
            head_dim,
            positions_ptr,
            style,
            rot_dim,
            inv_freq,
            attn_factor,
            dev_ptr(slots.past_len) as *const i64,
            slots.capacity,
            dev_ptr_mut(cache_k),
            dev_ptr_mut(cache_v),
            stream.raw(),
        )
    };
    check_status(status, "paradec_rotary_cache_write")
}
