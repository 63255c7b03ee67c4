//! Dense linear layer `out = x · Wᵀ (+ bias)` with W in PyTorch layout [N, K] and f32
//! accumulation; weights may be f32, f16 or bf16.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Weight element types the dense CPU linear reads: each row is widened to f32 once (with the
/// `half` crate's vectorized conversion) and reused for every input row.
pub trait WeightElem: Copy + Send + Sync {
    /// The row as f32: borrowed when it already is, else converted into `buf`.
    fn row_f32<'a>(row: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];
}
impl WeightElem for f32 {
    #[inline]
    fn row_f32<'a>(row: &'a [f32], _buf: &'a mut [f32]) -> &'a [f32] {
        row
    }
}
impl WeightElem for f16 {
    #[inline]
    fn row_f32<'a>(row: &'a [f16], buf: &'a mut [f32]) -> &'a [f32] {
        row.convert_to_f32_slice(buf);
        buf
    }
}
impl WeightElem for bf16 {
    #[inline]
    fn row_f32<'a>(row: &'a [bf16], buf: &'a mut [f32]) -> &'a [f32] {
        row.convert_to_f32_slice(buf);
        buf
    }
}

#[inline]
fn dot(x: &[f32], w: &[f32]) -> f32 {
    // Eight partial sums: independent chains the compiler vectorizes.
    let mut acc = [0.0f32; 8];
    let (xc, xr) = x.split_at(x.len() / 8 * 8);
    let (wc, wr) = w.split_at(xc.len());
    for (xs, ws) in xc.chunks_exact(8).zip(wc.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += xs[l] * ws[l];
        }
    }
    for (a, b) in xr.iter().zip(wr) {
        acc[0] += a * b;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// `out[m, N] (+)= x[m, K] · w[N, K]ᵀ + bias`. With `accumulate`, adds into `out`.
pub fn linear<W: WeightElem>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    accumulate: bool,
) {
    let mut buf = vec![0.0f32; k];
    for c in 0..n {
        let wc = W::row_f32(&w[c * k..(c + 1) * k], &mut buf);
        let b = bias.map_or(0.0, |b| b[c]);
        for r in 0..m {
            let v = dot(&x[r * k..(r + 1) * k], wc) + b;
            let o = &mut out[r * n + c];
            if accumulate {
                *o += v;
            } else {
                *o = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_by_hand() {
        // x = [[1, 2, 3]], W = [[1, 0, -1], [2, 2, 2]], bias [0.5, -1] → [1-3+0.5, 12-1] = [-1.5, 11]
        let x = [1.0, 2.0, 3.0];
        let w = [1.0f32, 0.0, -1.0, 2.0, 2.0, 2.0];
        let mut out = [100.0, 100.0];
        linear(&x, 1, 3, &w, 2, Some(&[0.5, -1.0]), &mut out, false);
        assert_eq!(out, [-1.5, 11.0]);
        linear(&x, 1, 3, &w, 2, None, &mut out, true);
        assert_eq!(out, [-1.5 - 2.0, 11.0 + 12.0]);
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        linear(&x, 1, 3, &wh, 2, None, &mut out, false);
        assert_eq!(out, [-2.0, 12.0]);
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        linear(&x, 1, 3, &wb, 2, None, &mut out, false);
        assert_eq!(out, [-2.0, 12.0]);
    }
}
