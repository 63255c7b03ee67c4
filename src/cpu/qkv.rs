//! Splitting a fused QKV projection output into q, k and v, over f32 slices.
//!
//! `ops::split_qkv` runs it on tensors, the C ABI's host path on the caller's memory.

use crate::vocab::QkvLayout;

/// Splits `fused` [tokens, (heads + 2·kv_heads)·head_dim] into q [tokens, heads·head_dim] and
/// k, v [tokens, kv_heads·head_dim] following `layout` (not `Separate`; for `FusedPerHead`
/// heads == kv_heads, for `FusedGrouped` heads is a multiple of kv_heads — checked by callers).
pub fn split_qkv(
    layout: QkvLayout,
    fused: &[f32],
    tokens: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
) {
    let width = (heads + 2 * kv_heads) * d;
    for r in 0..tokens {
        let row = &fused[r * width..(r + 1) * width];
        let qr = &mut q[r * heads * d..(r + 1) * heads * d];
        let kr = &mut k[r * kv_heads * d..(r + 1) * kv_heads * d];
        let vr = &mut v[r * kv_heads * d..(r + 1) * kv_heads * d];
        match layout {
            QkvLayout::Separate => {}
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
}
