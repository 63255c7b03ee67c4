//! Rotary embedding fused with the KV-cache write (csrc/rope.cu).

use std::ptr;

use super::{check_tensor, dev_ptr, dev_ptr_mut, dtype_code, upload_bytes};
use crate::cuda::device::ensure_device;
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::cuda::stream::CudaStream;
use crate::vocab::{CacheSlots, RopeStyle, RotaryArgs};
use crate::{DType, Error, Result, Tensor};

/// Bytes of the device table one call uploads: positions (i64, one per token), past lengths
/// (i64, one per sequence) and the rotary frequencies (f32, `rot_dim / 2`).
pub fn rope_meta_bytes(tokens: usize, batch: usize, rot_dim: usize) -> usize {
    8 * (tokens + batch) + 4 * (rot_dim / 2)
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
    check_tensor(cache_k, "cache k", Some(dtype), cache_n, stream)?;
    check_tensor(cache_v, "cache v", Some(dtype), cache_n, stream)?;
    let (style, rot_dim, attn_factor) = match rotary {
        Some(r) => {
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
            (style, r.rot_dim, r.attn_factor)
        }
        None => (0, 0, 1.0),
    };
    let mut bytes = Vec::with_capacity(rope_meta_bytes(tokens, slots.batch, rot_dim));
    if rotary.is_some() {
        bytes.extend(positions.iter().flat_map(|p| p.to_le_bytes()));
    } else {
        bytes.resize(8 * tokens, 0);
    }
    bytes.extend(
        slots
            .past_len
            .iter()
            .flat_map(|&p| (p as i64).to_le_bytes()),
    );
    if let Some(r) = rotary {
        bytes.extend(
            r.inv_freq[..rot_dim / 2]
                .iter()
                .flat_map(|f| f.to_le_bytes()),
        );
    }
    check_tensor(
        meta,
        "rotary meta (scratch)",
        Some(DType::U8),
        bytes.len(),
        stream,
    )?;
    if tokens == 0 || kv_n == 0 {
        return Ok(());
    }
    upload_bytes(meta, "rotary meta (scratch)", &bytes, stream)?;
    let base = dev_ptr(meta) as *const u8;
    // Byte offsets inside the uploaded table (the kernel reads scalars: 8-byte aligned).
    let positions_ptr = if rotary.is_some() {
        base as *const i64
    } else {
        ptr::null()
    };
    let past_ptr = base.wrapping_add(8 * tokens) as *const i64;
    let inv_freq = if rotary.is_some() {
        base.wrapping_add(8 * (tokens + slots.batch)) as *const f32
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
            past_ptr,
            slots.capacity,
            dev_ptr_mut(cache_k),
            dev_ptr_mut(cache_v),
            stream.raw(),
        )
    };
    check_status(status, "paradec_rotary_cache_write")
}
