//! Truncated SVD of a dense weight: the best rank-r approximation in the Frobenius norm
//! (Eckart–Young), computed in f64 with nalgebra.

use nalgebra::DMatrix;

use crate::{Error, Result};

/// The rank `rank_reduce(k)` keeps for an [n, k] matrix: ⌊k · min(n, k)⌋.
pub fn kept_rank(fraction: f32, rows: usize, cols: usize) -> Result<usize> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(Error::bad_input(format!(
            "rank_reduce: fraction {fraction} must be in (0, 1]"
        )));
    }
    Ok((fraction as f64 * rows.min(cols) as f64).floor() as usize)
}

/// Replaces `w` ([rows, cols], row-major) by its best rank-`rank` approximation; returns the
/// singular values of `w`, largest first.
pub fn truncate_svd(w: &mut [f32], rows: usize, cols: usize, rank: usize) -> Result<Vec<f64>> {
    if w.len() != rows * cols {
        return Err(Error::bad_input(format!(
            "rank_reduce: {} values for a {rows} × {cols} matrix",
            w.len()
        )));
    }
    let m = DMatrix::<f64>::from_row_iterator(rows, cols, w.iter().map(|&x| x as f64));
    let svd = m.svd(true, true);
    let (Some(u), Some(vt)) = (svd.u.as_ref(), svd.v_t.as_ref()) else {
        return Err(Error::bad_input("rank_reduce: the SVD did not converge"));
    };
    // nalgebra does not promise sorted singular values: order them.
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let mut approx = DMatrix::<f64>::zeros(rows, cols);
    for &i in order.iter().take(rank) {
        let s = svd.singular_values[i];
        approx += (u.column(i) * s) * vt.row(i);
    }
    for r in 0..rows {
        for c in 0..cols {
            w[r * cols + c] = approx[(r, c)] as f32;
        }
    }
    Ok(order.iter().map(|&i| svd.singular_values[i]).collect())
}
