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
    check_contiguous(
        q, k, v, heads, kv_heads, head_dim, positions, rotary, at, cache_k, cache_v,
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
        Device::Cuda(_) => on_cuda!(s => device_rope(
            s, ws, Values::Read(v), q, k, heads, kv_heads, head_dim, positions, rotary, at,
            cache_k, cache_v,
        )),
    }
}

/// What a rotary + cache write does with v: reads it (the in-place op), or splits it with q and
/// k out of a fused projection into the caller's v.
#[cfg(feature = "cuda")]
enum Values<'a> {
    Read(&'a Tensor),
    Split {
        fused: &'a Tensor,
        layout: QkvLayout,
        v: &'a mut Tensor,
    },
}

/// Both rotary ops on a device: one launch, reading the forward's staged step tables when
/// these are they, else this call's own upload into scratch from `ws`.
#[cfg(feature = "cuda")]
#[allow(clippy::too_many_arguments)]
fn device_rope(
    s: &crate::cuda::CudaStream,
    ws: &mut Workspace,
    values: Values<'_>,
    q: &mut Tensor,
    k: &mut Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    at: &CacheSlots<'_>,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
) -> Result<()> {
    use crate::cuda::kernels;
    let staged = ws.staged().and_then(|st| {
        let (positions, past_len) = st.positions_and_past(positions, at.past_len)?;
        let inv_freq = match rotary {
            Some(r) => st.freqs(r.inv_freq)?,
            None => std::ptr::null(),
        };
        Some(kernels::RopeTables {
            positions,
            past_len,
            inv_freq,
        })
    });
    let mut scratch;
    let meta = match staged {
        Some(tables) => kernels::RopeMeta::Staged(tables),
        None => {
            let rot_dim = rotary.map_or(0, |r| r.rot_dim);
            let bytes = kernels::rope_meta_bytes(at.batch * at.q_len, at.batch, rot_dim);
            scratch = ws.scratch(&[bytes], crate::tensor::DType::U8)?;
            kernels::RopeMeta::Upload(&mut scratch)
        }
    };
    let (fused, v) = match values {
        Values::Read(v) => (None, v),
        Values::Split { fused, layout, v } => (Some((fused, layout)), &*v),
    };
    // SAFETY: staged tables hold exactly these host slices, staged by the workspace into its
    // step region, queued on this forward's stream before any of its ops, and kept alive and
    // unchanged until the next stage, which waits for this forward. With a fused source v is
    // the caller's mutable borrow (`Values::Split`) and fused another tensor (the borrows say
    // so); without, v is only read.
    unsafe {
        kernels::rope_call(
            fused, q, k, v, heads, kv_heads, head_dim, positions, rotary, at, meta, cache_k,
            cache_v, s,
        )
    }
}

/// [`super::split_qkv`] of `fused` [tokens, (heads + 2·kv_heads)·D] in `layout` into q, k and
/// v, then [`rotary_and_cache_write`] — on CUDA one launch (the same values to the bit), on the
/// CPU the two ops.
#[allow(clippy::too_many_arguments)]
pub fn split_rotary_and_cache_write(
    s: &Stream,
    ws: &mut Workspace,
    layout: QkvLayout,
    fused: &Tensor,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &mut Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    at: &CacheSlots<'_>,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
) -> Result<()> {
    if fused.device() == Device::Cpu {
        super::split_qkv(s, layout, fused, heads, kv_heads, head_dim, q, k, v)?;
        return rotary_and_cache_write(
            s, ws, q, k, v, heads, kv_heads, head_dim, positions, rotary, at, cache_k, cache_v,
        );
    }
    #[cfg(not(feature = "cuda"))]
    let _ = (&ws, &layout);
    check_contiguous(
        q, k, v, heads, kv_heads, head_dim, positions, rotary, at, cache_k, cache_v,
    )?;
    super::attention::check_per_head(layout, heads, kv_heads)?;
    same_device(&[
        ("fused qkv", fused),
        ("q", q),
        ("k", k),
        ("v", v),
        ("cache k", cache_k),
        ("cache v", cache_v),
    ])?;
    on_cuda!(s => device_rope(
        s,
        ws,
        Values::Split { fused, layout, v },
        q,
        k,
        heads,
        kv_heads,
        head_dim,
        positions,
        rotary,
        at,
        cache_k,
        cache_v,
    ))
}

/// Checks a rotary + write into a contiguous cache: the caches' sizes, then the new tokens.
#[allow(clippy::too_many_arguments)]
fn check_contiguous(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    at: &CacheSlots<'_>,
    cache_k: &Tensor,
    cache_v: &Tensor,
) -> Result<()> {
    let cache_n = at.batch * at.capacity * kv_heads * head_dim;
    numel("cache k", cache_k, cache_n)?;
    numel("cache v", cache_v, cache_n)?;
    check_new_tokens(
        q, k, v, heads, kv_heads, head_dim, positions, rotary, at, true,
    )
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
