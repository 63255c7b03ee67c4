//! Rotary position embedding applied in place, and its fusion with the KV-cache write.

use crate::vocab::{CacheSlots, QkvLayout, RopeStyle, RotaryArgs};

/// Rotates the first `rot_dim` features of every head of `tokens` rows laid out as
/// [tokens, heads, head_dim]; token t is at position `positions[t]`.
pub fn apply_rotary(
    x: &mut [f32],
    tokens: usize,
    heads: usize,
    head_dim: usize,
    positions: &[i64],
    r: &RotaryArgs<'_>,
) {
    let half = r.rot_dim / 2;
    let mut cos = vec![0.0f32; half];
    let mut sin = vec![0.0f32; half];
    for t in 0..tokens {
        // As HF: angle = float(position) · inv_freq in f32, then cos/sin in f32, times the factor.
        let p = positions[t] as f32;
        for j in 0..half {
            let a = p * r.inv_freq[j];
            cos[j] = a.cos() * r.attn_factor;
            sin[j] = a.sin() * r.attn_factor;
        }
        for h in 0..heads {
            let row = &mut x[(t * heads + h) * head_dim..(t * heads + h + 1) * head_dim];
            for j in 0..half {
                let (i0, i1) = match r.style {
                    RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                    RopeStyle::Half => (j, j + half),
                };
                let (a, b) = (row[i0], row[i1]);
                row[i0] = a * cos[j] - b * sin[j];
                row[i1] = b * cos[j] + a * sin[j];
            }
        }
    }
}

/// Copies k and v ([batch, q_len, kv_dim]) into the cache at each sequence's next slots.
pub fn write_kv(
    k: &[f32],
    v: &[f32],
    kv_dim: usize,
    slots: &CacheSlots<'_>,
    cache_k: &mut [f32],
    cache_v: &mut [f32],
) {
    for b in 0..slots.batch {
        for t in 0..slots.q_len {
            let src = (b * slots.q_len + t) * kv_dim;
            let dst = (b * slots.capacity + slots.past_len[b] + t) * kv_dim;
            cache_k[dst..dst + kv_dim].copy_from_slice(&k[src..src + kv_dim]);
            cache_v[dst..dst + kv_dim].copy_from_slice(&v[src..src + kv_dim]);
        }
    }
}

/// The fused step the CUDA kernel performs in one pass: rotate q and k (at `positions`, one
/// per token of [batch, q_len]) and write k and v into the cache.
pub fn rotary_and_cache_write(
    q: &mut [f32],
    k: &mut [f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    cache_k: &mut [f32],
    cache_v: &mut [f32],
) {
    let tokens = slots.batch * slots.q_len;
    if let Some(r) = rotary {
        apply_rotary(q, tokens, heads, head_dim, positions, r);
        apply_rotary(k, tokens, kv_heads, head_dim, positions, r);
    }
    write_kv(k, v, kv_heads * head_dim, slots, cache_k, cache_v);
}

/// `cpu::qkv::split_qkv` of `fused` [tokens, (heads + 2·kv_heads)·head_dim] in `layout` into q,
/// k and v, then [`rotary_and_cache_write`]: the CPU twin of the CUDA launch that does both.
#[allow(clippy::too_many_arguments)]
pub fn split_rotary_and_cache_write(
    fused: &[f32],
    layout: QkvLayout,
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    cache_k: &mut [f32],
    cache_v: &mut [f32],
) {
    let tokens = slots.batch * slots.q_len;
    crate::cpu::qkv::split_qkv(layout, fused, tokens, heads, kv_heads, head_dim, q, k, v);
    rotary_and_cache_write(
        q, k, v, heads, kv_heads, head_dim, positions, rotary, slots, cache_k, cache_v,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_by_hand() {
        // One head of 6 features, rot_dim 4 (features 4, 5 pass through), position 2.
        // inv_freq [0.5, 0.25] → angles [1.0, 0.5].
        let inv = [0.5, 0.25];
        let x0 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (c1, s1, c2, s2) = (1.0f32.cos(), 1.0f32.sin(), 0.5f32.cos(), 0.5f32.sin());

        // Interleaved: pairs (0,1) angle 1, (2,3) angle 0.5.
        let mut x = x0;
        let r = RotaryArgs {
            style: RopeStyle::Interleaved,
            rot_dim: 4,
            inv_freq: &inv,
            attn_factor: 1.0,
        };
        apply_rotary(&mut x, 1, 1, 6, &[2], &r);
        let want = [
            1.0 * c1 - 2.0 * s1,
            2.0 * c1 + 1.0 * s1,
            3.0 * c2 - 4.0 * s2,
            4.0 * c2 + 3.0 * s2,
            5.0,
            6.0,
        ];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }

        // Half: pairs (0,2) angle 1, (1,3) angle 0.5; attention factor 2 scales both terms.
        let mut x = x0;
        let r = RotaryArgs {
            style: RopeStyle::Half,
            rot_dim: 4,
            inv_freq: &inv,
            attn_factor: 2.0,
        };
        apply_rotary(&mut x, 1, 1, 6, &[2], &r);
        let want = [
            2.0 * (1.0 * c1 - 3.0 * s1),
            2.0 * (2.0 * c2 - 4.0 * s2),
            2.0 * (3.0 * c1 + 1.0 * s1),
            2.0 * (4.0 * c2 + 2.0 * s2),
            5.0,
            6.0,
        ];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{x:?}");
        }
    }

    #[test]
    fn cache_write_uses_each_sequences_past_length() {
        // batch 2, q_len 1, kv_dim 2, capacity 3; sequence 0 has 2 past tokens, sequence 1 none.
        let k = [1.0, 2.0, 3.0, 4.0];
        let v = [5.0, 6.0, 7.0, 8.0];
        let mut ck = [0.0; 12];
        let mut cv = [0.0; 12];
        let slots = CacheSlots {
            batch: 2,
            q_len: 1,
            capacity: 3,
            past_len: &[2, 0],
        };
        write_kv(&k, &v, 2, &slots, &mut ck, &mut cv);
        assert_eq!(
            ck,
            [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(cv[4..6], [5.0, 6.0]);
        assert_eq!(cv[6..8], [7.0, 8.0]);
    }
}
