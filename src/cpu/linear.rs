//! Dense linear layer `out = x · Wᵀ (+ bias)` with W in PyTorch layout [N, K] and f32
//! accumulation; weights may be f32, f16 or bf16.

use half::{bf16, f16};

/// Weight element types the dense CPU linear reads directly.
pub trait WeightElem: Copy + Send + Sync {
    fn to_f32(self) -> f32;
}
impl WeightElem for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}
impl WeightElem for f16 {
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}
impl WeightElem for bf16 {
    #[inline]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

#[inline]
fn dot<W: WeightElem>(x: &[f32], w: &[W]) -> f32 {
    // Four partial sums: independent chains the CPU can overlap.
    let mut acc = [0.0f32; 4];
    let chunks = x.len() / 4;
    for c in 0..chunks {
        for l in 0..4 {
            acc[l] += x[4 * c + l] * w[4 * c + l].to_f32();
        }
    }
    for i in chunks * 4..x.len() {
        acc[0] += x[i] * w[i].to_f32();
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
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
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        let or = &mut out[r * n..(r + 1) * n];
        for (c, o) in or.iter_mut().enumerate() {
            let mut v = dot(xr, &w[c * k..(c + 1) * k]);
            if let Some(b) = bias {
                v += b[c];
            }
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
