//! Elementwise ops: activations, the gated multiply, add and scale.

use super::*;

/// `x = act(x)` in place.
pub fn activate(s: &Stream, act: Activation, x: &mut Tensor) -> Result<()> {
    float("activation input", x)?;
    match x.device() {
        Device::Cpu => with_f32_mut(x, |v| cpu::activation::activate(act, v)),
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::activate(act, x, s)),
    }
}

/// `out = act(gate) · up`.
pub fn act_mul(
    s: &Stream,
    act: Activation,
    gate: &Tensor,
    up: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    float("gate", gate)?;
    float("up", up)?;
    numel("up", up, gate.numel())?;
    numel("gated output", out, gate.numel())?;
    match same_device(&[("gate", gate), ("up", up), ("gated output", out)])? {
        Device::Cpu => {
            let (g, u) = (gate.f32_values()?, up.f32_values()?);
            with_f32_mut(out, |o| cpu::activation::act_mul(act, &g, &u, o))
        }
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::act_mul(
            act,
            gate,
            up,
            out,
            s
        )),
    }
}

/// `x += y`.
pub fn add_inplace(s: &Stream, x: &mut Tensor, y: &Tensor) -> Result<()> {
    float("sum", x)?;
    float("addend", y)?;
    numel("addend", y, x.numel())?;
    match same_device(&[("sum", x), ("addend", y)])? {
        Device::Cpu => {
            let yv = y.f32_values()?;
            with_f32_mut(x, |xv| cpu::activation::add_inplace(xv, &yv))
        }
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::add_inplace(x, y, s)),
    }
}

/// `x *= factor`.
pub fn scale_inplace(s: &Stream, x: &mut Tensor, factor: f32) -> Result<()> {
    float("scaled tensor", x)?;
    match x.device() {
        Device::Cpu => with_f32_mut(x, |v| v.iter_mut().for_each(|a| *a *= factor)),
        Device::Cuda(_) => on_cuda!(s => crate::cuda::kernels::scale_inplace(x, factor, s)),
    }
}
