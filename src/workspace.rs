//! `Workspace`: the scratch a forward needs, owned by the caller (one per stream). It hands
//! out the temporaries of a forward on its device and dtype and says how large they get, so
//! a caller can budget memory before loading.

use crate::arch::ArchParams;
use crate::tensor::{DType, Device, Tensor};
use crate::{Error, Result};

#[derive(Debug)]
/// The scratch a forward needs (see the module docs).
pub struct Workspace {
    device: Device,
    dtype: DType,
}

impl Workspace {
    /// A workspace for `device` computing in `dtype` (a float type).
    pub fn new(device: Device, dtype: DType) -> Result<Self> {
        if !dtype.is_float() {
            return Err(Error::bad_input(format!(
                "workspace dtype {dtype} is not a float type"
            )));
        }
        Ok(Workspace { device, dtype })
    }

    /// A CPU workspace computing in f32 (the reference path).
    pub fn cpu() -> Self {
        Workspace {
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }

    /// Where the temporaries live.
    pub fn device(&self) -> Device {
        self.device
    }
    /// The dtype of `tensor`'s temporaries.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A zero-filled temporary of the workspace's dtype and device.
    pub fn tensor(&mut self, shape: &[usize]) -> Result<Tensor> {
        Tensor::zeros(shape, self.dtype, self.device)
    }

    /// A zero-filled temporary of another dtype on the workspace's device: the scratch an op
    /// needs beside its inputs and outputs (f32 split-K or split-KV partials, index tables).
    /// Ops take every such temporary from here, never allocating themselves.
    pub fn scratch(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::zeros(shape, dtype, self.device)
    }

    /// Peak bytes of temporaries one decoder layer's forward takes for `tokens` tokens with
    /// no cache (the temporary K/V then hold the call's own tokens).
    pub fn bytes_needed(arch: &ArchParams, tokens: usize, dtype: DType) -> usize {
        let norms = if arch.two_norms { 2 } else { 1 } * arch.hidden;
        let qkv = 2 * arch.qkv_width(); // fused output and split copies
        let attn = arch.heads * arch.head_dim + 2 * arch.hidden; // context, both branch outputs
        let mlp = 2 * arch.intermediate;
        tokens * (norms + qkv + attn + mlp + arch.hidden) * dtype.size()
    }
}
