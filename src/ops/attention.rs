//! The attention branch around the cache: QKV split, per-head q/k norms, attention.

use super::*;

/// Norm of each head's `head_dim` features; `weight`/`bias` hold either one row shared by all
/// heads (`[head_dim]`) or one row per head ([heads, head_dim]). In place on x [tokens, heads·head_dim].
pub fn head_norm(
    s: &Stream,
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
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::head_norm(
            kind, x, heads, head_dim, affine, eps, s
        )),
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

/// Splits a fused QKV projection output [tokens, (heads + 2·kv_heads)·head_dim] into q, k, v
/// ([tokens, heads·head_dim], [tokens, kv_heads·head_dim] ×2) following `layout`.
pub fn split_qkv(
    s: &Stream,
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
    check_per_head(layout, heads, kv_heads)?;
    let d = head_dim;
    match fused.device() {
        Device::Cpu => {
            if layout == QkvLayout::Separate {
                return Err(Error::bad_input("split_qkv on separate projections"));
            }
            let f = fused.f32_values()?;
            let (mut qv, mut kv, mut vv) = (
                vec![0.0; t * heads * d],
                vec![0.0; t * kv_heads * d],
                vec![0.0; t * kv_heads * d],
            );
            cpu::qkv::split_qkv(layout, &f, t, heads, kv_heads, d, &mut qv, &mut kv, &mut vv);
            q.set_f32_values(&qv)?;
            k.set_f32_values(&kv)?;
            v.set_f32_values(&vv)
        }
        Device::Cuda(_) => {
            if layout == QkvLayout::Separate {
                return Err(Error::bad_input("split_qkv on separate projections"));
            }
            same_device(&[("fused qkv", fused), ("q", q), ("k", k), ("v", v)])?;
            on_cuda!(s => crate::cuda::kernels::split_qkv(
                layout, fused, t, heads, kv_heads, head_dim, q, k, v, s
            ))
        }
    }
}

/// A per-head fused q/k/v projection ([q_h | k_h | v_h] per head) needs one KV head per head.
pub(super) fn check_per_head(layout: QkvLayout, heads: usize, kv_heads: usize) -> Result<()> {
    if layout == QkvLayout::FusedPerHead && heads != kv_heads {
        return Err(Error::bad_input(
            "fused per-head qkv needs as many kv heads as heads",
        ));
    }
    Ok(())
}

/// Attention of q [batch, q_len, heads·D] over the cache; writes [batch, q_len, heads·D].
///
/// Device scratch (split-KV partials) comes from `ws`; the CPU reference needs none.
pub fn attention(
    st: &Stream,
    ws: &mut Workspace,
    q: &Tensor,
    cache_k: &Tensor,
    cache_v: &Tensor,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    out: &mut Tensor,
) -> Result<()> {
    #[cfg(not(feature = "cuda"))]
    let _ = &ws; // device scratch only
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
        Device::Cuda(_) => on_cuda!(st => {
            use crate::cuda::kernels;
            let max_past = masking.past_len.iter().copied().max().unwrap_or(0);
            // The forward's staged tables, when these are they (planned for the staged bound);
            // else this call's own upload.
            let staged = ws.staged().and_then(|stg| {
                let past = stg.past(masking.past_len)?;
                let mask = stg.mask(masking.mask)?;
                Some((past, mask, stg.tables.plan_max_past.max(max_past)))
            });
            if let Some((past, mask, plan)) = staged {
                let mut partials = ws.scratch(
                    &[kernels::attention_scratch_len(s, plan, st)?],
                    crate::tensor::DType::F32,
                )?;
                // SAFETY: the workspace staged exactly these past lengths and mask into its
                // step region, queued on this forward's stream before any of its ops, and keeps
                // the region alive and unchanged until the next stage.
                return unsafe {
                    kernels::attention_staged(
                        q, cache_k, cache_v, s, masking, scale, plan, past, mask, &mut partials,
                        out, st,
                    )
                };
            }
            let mut meta = ws.scratch(&[kernels::attention_meta_bytes(s, masking)], crate::tensor::DType::U8)?;
            let mut partials = ws.scratch(
                &[kernels::attention_scratch_len(s, max_past, st)?],
                crate::tensor::DType::F32,
            )?;
            kernels::attention(
                q, cache_k, cache_v, s, masking, scale, &mut meta, &mut partials, out, st,
            )
        }),
    }
}
