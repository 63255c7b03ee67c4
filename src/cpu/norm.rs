//! LayerNorm (with or without weight / bias) and RMSNorm over the last dimension, in f32.

use crate::vocab::NormKind;

/// The affine part of a norm: optional weight and bias, each of length `cols`.
#[derive(Debug, Clone, Copy)]
pub struct NormAffine<'a> {
    /// Scale per column, or none.
    pub weight: Option<&'a [f32]>,
    /// Shift per column, or none.
    pub bias: Option<&'a [f32]>,
}

fn norm_row(kind: NormKind, x: &[f32], affine: NormAffine<'_>, eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let (mean, inv) = match kind {
        NormKind::LayerNorm => {
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
            (mean, 1.0 / (var + eps).sqrt())
        }
        NormKind::RmsNorm => {
            let ms = x.iter().map(|&v| v * v).sum::<f32>() / n;
            (0.0, 1.0 / (ms + eps).sqrt())
        }
    };
    for (c, o) in out.iter_mut().enumerate() {
        let mut v = (x[c] - mean) * inv;
        if let Some(w) = affine.weight {
            v *= w[c];
        }
        if let Some(b) = affine.bias {
            v += b[c];
        }
        *o = v;
    }
}

/// `out[r] = norm(x[r])` for each of `rows` rows of `cols` values.
pub fn norm(
    kind: NormKind,
    x: &[f32],
    rows: usize,
    cols: usize,
    affine: NormAffine<'_>,
    eps: f32,
    out: &mut [f32],
) {
    for r in 0..rows {
        let s = r * cols..(r + 1) * cols;
        norm_row(kind, &x[s.clone()], affine, eps, &mut out[s]);
    }
}

/// Two norms of the same rows (GPT-NeoX, Falcon with two input norms): the same statistics,
/// two affine transforms, two outputs.
pub fn norm2(
    kind: NormKind,
    x: &[f32],
    rows: usize,
    cols: usize,
    affine_a: NormAffine<'_>,
    affine_b: NormAffine<'_>,
    eps: f32,
    out_a: &mut [f32],
    out_b: &mut [f32],
) {
    norm(kind, x, rows, cols, affine_a, eps, out_a);
    norm(kind, x, rows, cols, affine_b, eps, out_b);
}

/// Fused residual add then norm: `x += residual; out = norm(x)`.
pub fn add_norm(
    kind: NormKind,
    x: &mut [f32],
    residual: &[f32],
    rows: usize,
    cols: usize,
    affine: NormAffine<'_>,
    eps: f32,
    out: &mut [f32],
) {
    for (a, &b) in x.iter_mut().zip(residual) {
        *a += b;
    }
    norm(kind, x, rows, cols, affine, eps, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: NormAffine<'static> = NormAffine {
        weight: None,
        bias: None,
    };

    #[test]
    fn layer_norm_by_hand() {
        // x = [1, 2, 3, 6]: mean 3, deviations [-2,-1,0,3], var (4+1+0+9)/4 = 3.5.
        let x = [1.0, 2.0, 3.0, 6.0];
        let mut out = [0.0; 4];
        norm(NormKind::LayerNorm, &x, 1, 4, NONE, 0.5, &mut out);
        let inv = 1.0 / 4.0f32.sqrt(); // var + eps = 4
        let want = [-2.0 * inv, -inv, 0.0, 3.0 * inv];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
        // With weight [1,2,3,4] and bias [0.5,0,0,-1]:
        let w = [1.0, 2.0, 3.0, 4.0];
        let b = [0.5, 0.0, 0.0, -1.0];
        norm(
            NormKind::LayerNorm,
            &x,
            1,
            4,
            NormAffine {
                weight: Some(&w),
                bias: Some(&b),
            },
            0.5,
            &mut out,
        );
        let want = [-1.0 + 0.5, -1.0, 0.0, 6.0 - 1.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn rms_norm_by_hand() {
        // x = [3, 4]: mean square 12.5, + eps 3.5 = 16, rms 4.
        let x = [3.0, 4.0, -1.0, 1.0];
        let mut out = [0.0; 4];
        let w = [2.0, 1.0, 1.0, 1.0];
        // second row: [-1, 1]: mean square 1, + 3.5 = 4.5
        norm(
            NormKind::RmsNorm,
            &x[..2],
            1,
            2,
            NormAffine {
                weight: Some(&w[..2]),
                bias: None,
            },
            3.5,
            &mut out[..2],
        );
        assert!(
            (out[0] - 1.5).abs() < 1e-6 && (out[1] - 1.0).abs() < 1e-6,
            "{out:?}"
        );
        norm(NormKind::RmsNorm, &x, 2, 2, NONE, 3.5, &mut out);
        let r = 1.0 / 4.5f32.sqrt();
        assert!((out[2] + r).abs() < 1e-6 && (out[3] - r).abs() < 1e-6);
    }

    #[test]
    fn add_norm_updates_x() {
        let mut x = [1.0, 1.0];
        let res = [0.0, 2.0];
        let mut out = [0.0; 2];
        add_norm(NormKind::LayerNorm, &mut x, &res, 1, 2, NONE, 0.0, &mut out);
        assert_eq!(x, [1.0, 3.0]);
        assert!((out[0] + 1.0).abs() < 1e-6 && (out[1] - 1.0).abs() < 1e-6);
    }
}
