//! Rotary embedding fused with the KV-cache write.

use super::*;

/// Rotates q [tokens, heads·D] and k [tokens, kv_heads·D] at `positions` (when `rotary` is
/// given) and writes k, v into the cache tensors [batch, capacity, kv_heads·D]. On CUDA the
/// positions, past lengths and frequencies travel to the device in scratch from `ws`.
pub fn rotary_and_cache_write(
    s: &Stream,
    ws: &mut Workspace,
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
    #[cfg(not(feature = "cuda"))]
    let _ = &ws; // device scratch only
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
    check_new_tokens(
        q, k, v, heads, kv_heads, head_dim, positions, rotary, at, true,
    )?;
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
        Device::Cuda(_) => on_cuda!(s => {
            use crate::cuda::kernels;
            // The forward's staged tables, when these are they; else this call's own upload.
            let staged = ws.staged().and_then(|st| {
                let (positions, past_len) = st.positions_and_past(positions, at.past_len)?;
                let inv_freq = match rotary {
                    Some(r) => st.freqs(r.inv_freq)?,
                    None => std::ptr::null(),
                };
                Some(kernels::RopeTables { positions, past_len, inv_freq })
            });
            if let Some(tables) = staged {
                // SAFETY: the workspace staged exactly these host slices into its step region,
                // queued on this forward's stream before any of its ops, and keeps the region
                // alive and unchanged until the next stage, which waits for this forward.
                return unsafe {
                    kernels::rotary_and_cache_write_staged(
                        q, k, v, heads, kv_heads, head_dim, positions, rotary, at, tables,
                        cache_k, cache_v, s,
                    )
                };
            }
            let rot_dim = rotary.map_or(0, |r| r.rot_dim);
            let mut meta = ws.scratch(
                &[kernels::rope_meta_bytes(at.batch * at.q_len, at.batch, rot_dim)],
                crate::tensor::DType::U8,
            )?;
            kernels::rotary_and_cache_write(
                q, k, v, heads, kv_heads, head_dim, positions, rotary, at, &mut meta, cache_k,
                cache_v, s,
            )
        }),
    }
}

/// Checks the new tokens of a rotary + cache write (contiguous or quantized cache): q, k and v
/// of `at.batch · at.q_len` tokens, one position per token, one past length per sequence, with
/// `slots_in_capacity` every sequence's new slots within the capacity (a paged cache checks its
/// pages instead), and the rotary width.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_new_tokens(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    at: &CacheSlots<'_>,
    slots_in_capacity: bool,
) -> Result<()> {
    let tokens = at.batch * at.q_len;
    numel("q", q, tokens * heads * head_dim)?;
    numel("k", k, tokens * kv_heads * head_dim)?;
    numel("v", v, tokens * kv_heads * head_dim)?;
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
    if slots_in_capacity {
        for (b, &p) in at.past_len.iter().enumerate() {
            if p.checked_add(at.q_len).is_none_or(|e| e > at.capacity) {
                return Err(Error::CapacityExceeded(format!(
                    "sequence {b}: past length {p} + {} new tokens exceeds the cache capacity {}",
                    at.q_len, at.capacity
                )));
            }
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
    Ok(())
}
