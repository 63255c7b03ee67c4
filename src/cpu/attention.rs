//! Causal scaled-dot-product attention over a KV cache: multi-head, grouped-query and
//! multi-query; optional sliding window; optional additive mask over cache slots; f32 softmax.

use crate::vocab::{AttnMasking, AttnShape};

/// `out = softmax(q·kᵀ·scale + mask) · v` per query over the cache slots it sees (module docs).
pub fn attention(
    q: &[f32],
    cache_k: &[f32],
    cache_v: &[f32],
    s: &AttnShape,
    m: &AttnMasking<'_>,
    scale: f32,
    out: &mut [f32],
) {
    let d = s.head_dim;
    let group = s.heads / s.kv_heads;
    let kv_row = s.kv_heads * d;
    let mut scores = vec![0.0f32; s.capacity];
    for b in 0..s.batch {
        for t in 0..s.q_len {
            let p = m.past_len[b] + t;
            let first = if m.window > 0 {
                (p + 1).saturating_sub(m.window)
            } else {
                0
            };
            for h in 0..s.heads {
                let kvh = h / group;
                let qrow = &q[((b * s.q_len + t) * s.heads + h) * d..][..d];
                let orow = &mut out[((b * s.q_len + t) * s.heads + h) * d..][..d];
                let mut max = f32::NEG_INFINITY;
                for j in first..=p {
                    let krow = &cache_k[(b * s.capacity + j) * kv_row + kvh * d..][..d];
                    let mut dot = 0.0f32;
                    for (a, c) in qrow.iter().zip(krow) {
                        dot += a * c;
                    }
                    let mut sc = dot * scale;
                    if let Some(mask) = m.mask {
                        sc += mask[b * m.mask_stride + j];
                    }
                    scores[j] = sc;
                    max = max.max(sc);
                }
                orow.fill(0.0);
                if max == f32::NEG_INFINITY {
                    // Every key is masked (a pad query): no defined output, write zeros.
                    continue;
                }
                let mut sum = 0.0f32;
                for sc in &mut scores[first..=p] {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                let inv = 1.0 / sum;
                for j in first..=p {
                    let w = scores[j] * inv;
                    let vrow = &cache_v[(b * s.capacity + j) * kv_row + kvh * d..][..d];
                    for (o, v) in orow.iter_mut().zip(vrow) {
                        *o += w * v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_keys_by_hand() {
        // One sequence, head_dim 1, two cached slots, query at slot 1 sees both keys.
        // q = 1, k = [0, ln 3], scale 1 → softmax [1/4, 3/4]; v = [4, 8] → 1 + 6 = 7.
        let q = [0.0, 1.0]; // query 0 (slot 0) and query 1 (slot 1)
        let ck = [0.0, 3.0f32.ln()];
        let cv = [4.0, 8.0];
        let s = AttnShape {
            batch: 1,
            q_len: 2,
            heads: 1,
            kv_heads: 1,
            head_dim: 1,
            capacity: 2,
        };
        let m = AttnMasking {
            past_len: &[0],
            window: 0,
            mask: None,
            mask_stride: 0,
        };
        let mut out = [0.0; 2];
        attention(&q, &ck, &cv, &s, &m, 1.0, &mut out);
        assert!(
            (out[0] - 4.0).abs() < 1e-6,
            "slot 0 sees only itself: {out:?}"
        );
        assert!((out[1] - 7.0).abs() < 1e-5, "{out:?}");

        // A window of 1 makes every query see only its own slot.
        let m1 = AttnMasking { window: 1, ..m };
        attention(&q, &ck, &cv, &s, &m1, 1.0, &mut out);
        assert_eq!(out, [4.0, 8.0]);

        // A mask hiding slot 0 does the same for query 1.
        let mask = [f32::NEG_INFINITY, 0.0];
        let m2 = AttnMasking {
            mask: Some(&mask),
            mask_stride: 2,
            ..m
        };
        attention(&q, &ck, &cv, &s, &m2, 1.0, &mut out);
        assert_eq!(out, [0.0, 8.0]);
    }

    #[test]
    fn grouped_query_heads_share_kv() {
        // 4 query heads, 2 kv heads: heads 0,1 read kv head 0; heads 2,3 read kv head 1.
        let s = AttnShape {
            batch: 1,
            q_len: 1,
            heads: 4,
            kv_heads: 2,
            head_dim: 1,
            capacity: 1,
        };
        let m = AttnMasking {
            past_len: &[0],
            window: 0,
            mask: None,
            mask_stride: 0,
        };
        let q = [1.0, 2.0, 3.0, 4.0];
        let ck = [0.5, 0.5];
        let cv = [10.0, 20.0];
        let mut out = [0.0; 4];
        attention(&q, &ck, &cv, &s, &m, 1.0, &mut out);
        assert_eq!(out, [10.0, 10.0, 20.0, 20.0]);
    }
}
