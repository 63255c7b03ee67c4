//! LayerNorm / RMSNorm launchers (csrc/norm.cu), with fused residual add and two outputs.

use std::ffi::c_void;
use std::ptr;

use super::{check_tensor, dev_ptr, dev_ptr_mut, dtype_code, opt_ptr};
use crate::cuda::device::ensure_device;
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::cuda::stream::CudaStream;
use crate::vocab::{Affine, NormKind};
use crate::{DType, Error, Result, Tensor};

/// Checks an optional `[cols]` affine tensor.
fn check_affine(
    a: &Affine<'_>,
    name: &str,
    dtype: DType,
    cols: usize,
    stream: &CudaStream,
) -> Result<()> {
    if let Some(w) = a.weight {
        check_tensor(w, &format!("{name} weight"), Some(dtype), cols, stream)?;
    }
    if let Some(b) = a.bias {
        check_tensor(b, &format!("{name} bias"), Some(dtype), cols, stream)?;
    }
    Ok(())
}

fn norm_kind_code(kind: NormKind) -> i32 {
    match kind {
        NormKind::LayerNorm => ffi::paradec_norm_kind::PARADEC_LAYER_NORM as i32,
        NormKind::RmsNorm => ffi::paradec_norm_kind::PARADEC_RMS_NORM as i32,
    }
}

/// The one entry behind `norm`, `add_norm` and `norm2`.
#[allow(clippy::too_many_arguments)]
fn norm_fused(
    kind: NormKind,
    x: *mut c_void,
    x_tensor: &Tensor,
    residual: Option<&Tensor>,
    rows: usize,
    cols: usize,
    affine_a: Affine<'_>,
    out_a: &mut Tensor,
    second: Option<(Affine<'_>, &mut Tensor)>,
    eps: f32,
    stream: &CudaStream,
) -> Result<()> {
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| Error::bad_input(format!("norm: {rows} × {cols} overflows")))?;
    let dtype = x_tensor.dtype();
    let code = dtype_code(dtype, "norm x")?;
    check_tensor(x_tensor, "norm x", None, n, stream)?;
    if let Some(r) = residual {
        check_tensor(r, "norm residual", Some(dtype), n, stream)?;
    }
    check_affine(&affine_a, "norm", dtype, cols, stream)?;
    check_tensor(out_a, "norm out", Some(dtype), n, stream)?;
    let (wb, bb, ob) = match second {
        Some((aff, out)) => {
            check_affine(&aff, "norm (second)", dtype, cols, stream)?;
            check_tensor(out, "norm out (second)", Some(dtype), n, stream)?;
            (opt_ptr(aff.weight), opt_ptr(aff.bias), dev_ptr_mut(out))
        }
        None => (ptr::null(), ptr::null(), ptr::null_mut()),
    };
    if n == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: every pointer is NULL (optional) or a live device allocation of the checked
    // element count and dtype on the stream's device; the allocations outlive the kernel
    // because freeing device memory waits for queued work. The launcher validates the rest.
    let status = unsafe {
        ffi::paradec_norm_fused(
            norm_kind_code(kind),
            code,
            x,
            opt_ptr(residual),
            opt_ptr(affine_a.weight),
            opt_ptr(affine_a.bias),
            dev_ptr_mut(out_a),
            wb,
            bb,
            ob,
            rows,
            cols,
            eps,
            stream.raw(),
        )
    };
    check_status(status, "paradec_norm")
}

/// `out[r] = norm(x[r])` for `rows` rows of `cols` values. Twin of `cpu::norm::norm`.
#[allow(clippy::too_many_arguments)]
pub fn norm(
    kind: NormKind,
    x: &Tensor,
    rows: usize,
    cols: usize,
    affine: Affine<'_>,
    eps: f32,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    // The kernel only reads x here.
    let xp = dev_ptr(x) as *mut c_void;
    norm_fused(
        kind, xp, x, None, rows, cols, affine, out, None, eps, stream,
    )
}

/// `x += residual; out = norm(x)` (x written back, rounded to its dtype). Twin of
/// `cpu::norm::add_norm`.
#[allow(clippy::too_many_arguments)]
pub fn add_norm(
    kind: NormKind,
    x: &mut Tensor,
    residual: &Tensor,
    rows: usize,
    cols: usize,
    affine: Affine<'_>,
    eps: f32,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let xp = dev_ptr_mut(x);
    norm_fused(
        kind,
        xp,
        x,
        Some(residual),
        rows,
        cols,
        affine,
        out,
        None,
        eps,
        stream,
    )
}

/// Two norms of the same rows from one read of x. Twin of `cpu::norm::norm2`.
#[allow(clippy::too_many_arguments)]
pub fn norm2(
    kind: NormKind,
    x: &Tensor,
    rows: usize,
    cols: usize,
    affine_a: Affine<'_>,
    affine_b: Affine<'_>,
    eps: f32,
    out_a: &mut Tensor,
    out_b: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let xp = dev_ptr(x) as *mut c_void;
    norm_fused(
        kind,
        xp,
        x,
        None,
        rows,
        cols,
        affine_a,
        out_a,
        Some((affine_b, out_b)),
        eps,
        stream,
    )
}

/// `x += residual; out_a, out_b = norm_a(x), norm_b(x)`: the residual add and both norms of a
/// two-norm block in one pass.
#[allow(clippy::too_many_arguments)]
pub fn add_norm2(
    kind: NormKind,
    x: &mut Tensor,
    residual: &Tensor,
    rows: usize,
    cols: usize,
    affine_a: Affine<'_>,
    affine_b: Affine<'_>,
    eps: f32,
    out_a: &mut Tensor,
    out_b: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let xp = dev_ptr_mut(x);
    norm_fused(
        kind,
        xp,
        x,
        Some(residual),
        rows,
        cols,
        affine_a,
        out_a,
        Some((affine_b, out_b)),
        eps,
        stream,
    )
}
