//! Norms over rows: one, or two of the same rows.

use super::*;

/// `out = norm(x)` over rows of `x.cols()`.
pub fn norm(
    s: &Stream,
    kind: NormKind,
    x: &Tensor,
    affine: &Affine<'_>,
    eps: f32,
    out: &mut Tensor,
) -> Result<()> {
    float("norm input", x)?;
    let cols = x.cols();
    check_affine(affine, "norm", cols)?;
    numel("norm output", out, x.numel())?;
    match same_device(&[("norm input", x), ("norm output", out)])? {
        Device::Cpu => {
            let xv = x.f32_values()?;
            let (w, b) = (opt_values(affine.weight)?, opt_values(affine.bias)?);
            let a = NormAffine {
                weight: w.as_deref(),
                bias: b.as_deref(),
            };
            with_f32_mut(out, |o| {
                cpu::norm::norm(kind, &xv, x.rows(), cols, a, eps, o)
            })
        }
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::norm(
            kind,
            x,
            x.rows(),
            cols,
            *affine,
            eps,
            out,
            s
        )),
    }
}

/// Two norms of the same rows: `out_a = norm_a(x)`, `out_b = norm_b(x)`.
pub fn norm2(
    s: &Stream,
    kind: NormKind,
    x: &Tensor,
    affine_a: &Affine<'_>,
    affine_b: &Affine<'_>,
    eps: f32,
    out_a: &mut Tensor,
    out_b: &mut Tensor,
) -> Result<()> {
    if x.device() == Device::Cpu {
        norm(s, kind, x, affine_a, eps, out_a)?;
        return norm(s, kind, x, affine_b, eps, out_b);
    }
    float("norm input", x)?;
    let cols = x.cols();
    check_affine(affine_a, "first norm", cols)?;
    check_affine(affine_b, "second norm", cols)?;
    numel("first norm output", out_a, x.numel())?;
    numel("second norm output", out_b, x.numel())?;
    // One read of x for both outputs.
    on_cuda!(s => crate::cuda::kernels::norm2(
        kind,
        x,
        x.rows(),
        cols,
        *affine_a,
        *affine_b,
        eps,
        out_a,
        out_b,
        s
    ))
}
