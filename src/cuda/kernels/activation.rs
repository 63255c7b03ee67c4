//! Activations, the gated multiply and the in-place add (csrc/activation.cu).

use super::{check_tensor, dev_ptr, dev_ptr_mut, dtype_code};
use crate::cuda::device::ensure_device;
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::cuda::stream::CudaStream;
use crate::vocab::Activation;
use crate::{Result, Tensor};

pub(super) fn act_code(act: Activation) -> i32 {
    use ffi::paradec_activation as a;
    (match act {
        Activation::GeluErf => a::PARADEC_GELU_ERF,
        Activation::GeluNew => a::PARADEC_GELU_NEW,
        Activation::GeluFast => a::PARADEC_GELU_FAST,
        Activation::Silu => a::PARADEC_SILU,
        Activation::Relu => a::PARADEC_RELU,
    }) as i32
}

/// `x = act(x)` in place. Twin of `cpu::activation::activate`.
pub fn activate(act: Activation, x: &mut Tensor, stream: &CudaStream) -> Result<()> {
    let code = dtype_code(x.dtype(), "activate x")?;
    let n = x.numel();
    check_tensor(x, "activate x", None, n, stream)?;
    if n == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: x is a live device allocation of n elements of the given dtype.
    let status =
        unsafe { ffi::paradec_activate(act_code(act), code, dev_ptr_mut(x), n, stream.raw()) };
    check_status(status, "paradec_activate")
}

/// `out = act(gate) · up`. Twin of `cpu::activation::act_mul`.
pub fn act_mul(
    act: Activation,
    gate: &Tensor,
    up: &Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let dtype = gate.dtype();
    let code = dtype_code(dtype, "act_mul gate")?;
    let n = gate.numel();
    check_tensor(gate, "act_mul gate", None, n, stream)?;
    check_tensor(up, "act_mul up", Some(dtype), n, stream)?;
    check_tensor(out, "act_mul out", Some(dtype), n, stream)?;
    if n == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: three live device allocations of n elements of the given dtype.
    let status = unsafe {
        ffi::paradec_act_mul(
            act_code(act),
            code,
            dev_ptr(gate),
            dev_ptr(up),
            dev_ptr_mut(out),
            n,
            stream.raw(),
        )
    };
    check_status(status, "paradec_act_mul")
}

/// `x += y`. Twin of `cpu::activation::add_inplace`.
pub fn add_inplace(x: &mut Tensor, y: &Tensor, stream: &CudaStream) -> Result<()> {
    let dtype = x.dtype();
    let code = dtype_code(dtype, "add_inplace x")?;
    let n = x.numel();
    check_tensor(x, "add_inplace x", None, n, stream)?;
    check_tensor(y, "add_inplace y", Some(dtype), n, stream)?;
    if n == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: two live device allocations of n elements of the given dtype.
    let status =
        unsafe { ffi::paradec_add_inplace(code, dev_ptr_mut(x), dev_ptr(y), n, stream.raw()) };
    check_status(status, "paradec_add_inplace")
}
