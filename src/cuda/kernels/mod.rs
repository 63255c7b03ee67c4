//! Safe launchers of paradec's CUDA kernels over device tensors. Each is the twin of a `cpu::`
//! function and takes the same arguments (device tensors where the CPU takes slices), plus the
//! stream it queues on. They check dtypes, element counts and devices, launch, and return
//! without synchronizing. Float tensors are f16 or bf16, all of one dtype per call; f32 gives
//! `Error::Unsupported`. A call with nothing to do (zero elements) is a no-op, as on the CPU.
//!
//! One file per kernel family (norm, rope, activation, embedding, linear, attention), each the
//! twin of `csrc/kernels/<family>.h`; this file holds the argument checks they share.

use std::ffi::c_void;
use std::ptr;

use super::ffi;
use super::stream::CudaStream;
mod activation;
mod attention;
mod embedding;
mod kv_quant;
mod linear;
mod norm;
mod rope;

pub use activation::{act_mul, activate, add_inplace};
pub use attention::{
    attention, attention_meta_bytes, attention_scratch_len, attention_staged, head_norm, split_qkv,
};
pub use embedding::{check_ids, embedding, embedding_host_ids, embedding_staged_ids};
pub use kv_quant::{
    attention_quant, attention_quant_scratch_len, attention_quant_staged, gather_meta_bytes,
    kv_dequantize, rotary_and_cache_write_quant, rotary_and_cache_write_quant_staged,
    table_meta_bytes, DECODE_MAX_Q,
};
pub use linear::{
    cluster_sum_launches, linear, quant_linear, quant_linear_group, quant_linear_group_scratch,
    quant_linear_sum, quant_linear_sum_scratch, scale_inplace, set_split_sum,
    vendor_gemm_available, wgmma_available, wgmma_built, zeroed_counters_ffi, QuantLinearCall,
    QuantLinearTerm, QuantWeightArgs, SplitSum,
};
pub use norm::{add_norm, add_norm2, norm, norm2};
pub(crate) use rope::{rope_call, RopeMeta};
pub use rope::{
    rope_meta_bytes, rotary_and_cache_write, rotary_and_cache_write_staged,
    split_rotary_and_cache_write, RopeTables,
};

use crate::tensor::Storage;
use crate::{DType, Device, Error, Result, Tensor};

/// The dtype code of a float tensor the kernels accept.
pub(super) fn dtype_code(dtype: DType, name: &str) -> Result<i32> {
    match dtype {
        DType::F16 => Ok(ffi::paradec_dtype::PARADEC_F16 as i32),
        DType::BF16 => Ok(ffi::paradec_dtype::PARADEC_BF16 as i32),
        DType::F32 => Err(Error::unsupported(format!(
            "{name}: the CUDA kernels take f16 or bf16 tensors, not f32"
        ))),
        other => Err(Error::bad_input(format!(
            "{name}: expected an f16 or bf16 tensor, got {other}"
        ))),
    }
}

/// Checks one tensor argument: on the stream's device, of `dtype` (when given), with `numel`
/// elements.
pub(super) fn check_tensor(
    t: &Tensor,
    name: &str,
    dtype: Option<DType>,
    numel: usize,
    stream: &CudaStream,
) -> Result<()> {
    if t.device() != Device::Cuda(stream.device()) {
        return Err(Error::bad_input(format!(
            "{name}: on {}, but the stream is on cuda:{}",
            t.device(),
            stream.device()
        )));
    }
    if let Some(dt) = dtype {
        if t.dtype() != dt {
            return Err(Error::bad_input(format!(
                "{name}: expected dtype {dt}, got {}",
                t.dtype()
            )));
        }
    }
    if t.numel() != numel {
        return Err(Error::bad_input(format!(
            "{name}: expected {numel} elements, got shape {:?}",
            t.shape()
        )));
    }
    Ok(())
}

pub(super) fn dev_ptr(t: &Tensor) -> *const c_void {
    match t.storage() {
        Storage::Cuda(b) => b.as_ptr(),
        // Unreachable after check_tensor; a NULL makes the launcher reject the call.
        Storage::Host(_) => ptr::null(),
    }
}

pub(super) fn dev_ptr_mut(t: &mut Tensor) -> *mut c_void {
    match t.storage_mut() {
        Storage::Cuda(b) => b.as_mut_ptr(),
        Storage::Host(_) => ptr::null_mut(),
    }
}

pub(super) fn opt_ptr(t: Option<&Tensor>) -> *const c_void {
    t.map_or(ptr::null(), dev_ptr)
}

/// Queues a copy of `bytes` into the U8 device tensor `t` (exactly `bytes.len()` elements):
/// the small per-call tables (positions, past lengths, masks) the kernels read on the device.
pub(super) fn upload_bytes(
    t: &mut Tensor,
    name: &str,
    bytes: &[u8],
    stream: &CudaStream,
) -> Result<()> {
    check_tensor(t, name, Some(DType::U8), bytes.len(), stream)?;
    if stream.is_capturing()? {
        // A graph would replay a copy of these bytes as they are now, never the next call's.
        return Err(Error::bad_input(format!(
            "{name}: a per-call table cannot be uploaded inside a CUDA graph capture \
             (a captured step reads the workspace's staged step tables)"
        )));
    }
    match t.storage_mut() {
        // SAFETY: `bytes` is pageable host memory, which CUDA copies to a staging buffer before
        // cudaMemcpyAsync returns, so it may be dropped afterwards; the device tensor outlives
        // the copy (freeing device memory waits for queued work).
        Storage::Cuda(b) => unsafe { b.copy_from_host_async(bytes, stream) },
        Storage::Host(_) => Err(Error::bad_input(format!("{name}: not on the device"))),
    }
}
