//! Linear layers: dense and quantized (GPTQ / EXL2) `out (+)= x · Wᵀ + b`.

use super::*;

/// Checks a linear's input against K and its output against [m, N]; returns m.
fn linear_rows(x: &Tensor, k: usize, n: usize, out: &Tensor) -> Result<usize> {
    if x.cols() != k {
        return Err(Error::bad_input(format!(
            "linear input: last dimension {} does not match the weight's K = {k}",
            x.cols()
        )));
    }
    let m = x.rows();
    numel("linear output", out, m * n)?;
    Ok(m)
}

/// Dense linear: `out[m, N] (+)= x[m, K] · w[N, K]ᵀ + bias`.
///
/// Device scratch (split-K partials) comes from `ws`; the CPU reference needs none.
pub fn linear(
    _s: &Stream,
    _ws: &mut Workspace,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: &mut Tensor,
    accumulate: bool,
) -> Result<()> {
    float("linear input", x)?;
    float("linear weight", w)?;
    if w.shape().len() != 2 {
        return Err(Error::bad_input(format!(
            "linear weight: expected [N, K], got {:?}",
            w.shape()
        )));
    }
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let m = linear_rows(x, k, n, out)?;
    if let Some(b) = bias {
        float("linear bias", b)?;
        numel("linear bias", b, n)?;
    }
    match same_device(&[
        ("linear input", x),
        ("linear weight", w),
        ("linear output", out),
    ])? {
        Device::Cpu => {
            let xv = x.f32_values()?;
            let bv = opt_values(bias)?;
            let wh = w.host()?;
            with_f32_mut(out, |o| match wh {
                HostData::F32(wv) => {
                    cpu::linear::linear(&xv, m, k, wv, n, bv.as_deref(), o, accumulate)
                }
                HostData::F16(wv) => {
                    cpu::linear::linear(&xv, m, k, wv, n, bv.as_deref(), o, accumulate)
                }
                HostData::BF16(wv) => {
                    cpu::linear::linear(&xv, m, k, wv, n, bv.as_deref(), o, accumulate)
                }
                _ => unreachable!("checked float above"),
            })
        }
        Device::Cuda(_) => Err(gpu_missing("linear")),
    }
}

/// Quantized linear: `out[m, N] (+)= x[m, K] · Wᵀ + bias` straight from GPTQ / EXL2 data.
///
/// Device scratch (split-K partials, permuted activations) comes from `ws`.
pub fn quant_linear(
    _s: &Stream,
    _ws: &mut Workspace,
    x: &Tensor,
    w: &crate::quant::QuantWeight,
    out: &mut Tensor,
    accumulate: bool,
) -> Result<()> {
    float("linear input", x)?;
    let m = linear_rows(x, w.in_features(), w.out_features(), out)?;
    match same_device(&[("linear input", x), ("linear output", out)])? {
        Device::Cpu => {
            let xv = x.f32_values()?;
            with_f32_mut(out, |o| w.forward(&xv, m, o, accumulate))?
        }
        Device::Cuda(_) => Err(gpu_missing("quant_linear")),
    }
}
