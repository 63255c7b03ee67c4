//! rank_reduce: the truncated SVD's error equals the discarded singular values
//! (Eckart–Young), the result has the kept rank, k = 1 changes nothing, bad k is refused.

mod common;

use common::*;
use nalgebra::DMatrix;
use paradec::layers::linear::Linear;
use paradec::layers::rank_reduce::truncate_svd;
use paradec::{AttnParams, Error, Model, Stream, Tensor, Workspace};

/// Singular values by an independent route: square roots of the eigenvalues of WᵀW.
fn singular_values(w: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let m = DMatrix::<f64>::from_row_iterator(rows, cols, w.iter().map(|&x| x as f64));
    let g = m.transpose() * &m;
    let mut ev: Vec<f64> = g
        .symmetric_eigen()
        .eigenvalues
        .iter()
        .map(|&e| e.max(0.0).sqrt())
        .collect();
    ev.sort_by(|a, b| b.total_cmp(a));
    ev.truncate(rows.min(cols));
    ev
}

#[test]
fn error_matches_discarded_singular_values() {
    let mut rng = Rng::new(7);
    for (rows, cols, k) in [
        (24, 40, 0.5f32),
        (33, 17, 0.3),
        (16, 16, 0.9),
        (9, 50, 0.12),
    ] {
        let w = rng.vec(rows * cols);
        let sv = singular_values(&w, rows, cols);
        let mut lin = Linear::from_tensors(
            "test.proj",
            Tensor::from_f32(w.clone(), &[rows, cols]).unwrap(),
            None,
        )
        .unwrap();
        lin.rank_reduce(k).unwrap();
        let r = values(&lin.dense_weight().unwrap());
        let rank = (k as f64 * rows.min(cols) as f64).floor() as usize;
        let err: f64 = w
            .iter()
            .zip(&r)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let discarded: f64 = sv[rank..].iter().map(|s| s * s).sum::<f64>().sqrt();
        assert!(
            (err - discarded).abs() <= 1e-4 * discarded.max(1.0),
            "{rows}×{cols} k={k}: {err} vs {discarded}"
        );
        // The approximation has rank `rank`: its singular values past it vanish.
        let svr = singular_values(&r, rows, cols);
        assert!(
            svr[rank..].iter().all(|&s| s < 1e-3 * sv[0]),
            "{rows}×{cols}: {:?}",
            &svr[rank..]
        );
        assert!(svr[rank - 1] > 1e-2 * sv[0]);
    }
}

#[test]
fn full_rank_changes_nothing() {
    let mut rng = Rng::new(11);
    let mut w = rng.vec(12 * 20);
    let orig = w.clone();
    truncate_svd(&mut w, 12, 20, 12).unwrap();
    let e = rel_err_rows(&w, &orig, 20, &[true; 12]);
    assert!(e < 1e-6, "{e}");

    // k = 1 on a whole model: the logits stay the same.
    let mut model = Model::load(fixture("falcon_new_2ln_gqa")).unwrap();
    let ids = [5u32, 9, 77, 3, 12];
    let p = AttnParams::new(1, 5);
    let mut ws = Workspace::cpu();
    let before = values(
        &model
            .forward(&Stream::Host, &ids, &p, None, &mut ws)
            .unwrap(),
    );
    model.rank_reduce(1.0).unwrap();
    let after = values(
        &model
            .forward(&Stream::Host, &ids, &p, None, &mut ws)
            .unwrap(),
    );
    let e = rel_err_rows(&after, &before, model.arch.vocab, &[true; 5]);
    assert!(e < 1e-5, "{e}");
    // A real reduction does change them.
    model.rank_reduce(0.25).unwrap();
    let reduced = values(
        &model
            .forward(&Stream::Host, &ids, &p, None, &mut ws)
            .unwrap(),
    );
    assert!(rel_err_rows(&reduced, &before, model.arch.vocab, &[true; 5]) > 1e-3);
}

#[test]
fn bad_fractions_are_refused() {
    let mut model = Model::load(fixture("gptj")).unwrap();
    for k in [0.0, -0.5, 1.5, f32::NAN] {
        assert!(
            matches!(model.rank_reduce(k), Err(Error::BadInput(m)) if m.contains("fraction")),
            "{k}"
        );
    }
    let x = Tensor::from_f32(vec![1.0; 4], &[1, 4]).unwrap();
    let lin =
        Linear::from_tensors("p", Tensor::from_f32(vec![1.0; 8], &[2, 4]).unwrap(), None).unwrap();
    let mut out = Tensor::from_f32(vec![0.0; 2], &[1, 2]).unwrap();
    lin.forward(
        &Stream::Host,
        &mut Workspace::cpu(),
        &x,
        &mut out,
        false,
        &[],
    )
    .unwrap();
    assert_eq!(values(&out), vec![4.0, 4.0]);
}
