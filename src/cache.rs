//! `KvCache`: per-layer K and V storage with a capacity, laid out
//! [batch, capacity, kv_heads · head_dim] so one token's keys are contiguous.

use crate::arch::ArchParams;
use crate::tensor::{DType, Device, Tensor};
use crate::{Error, Result};

#[derive(Debug)]
pub struct KvCache {
    pub batch: usize,
    pub capacity: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn new(
        num_layers: usize,
        batch: usize,
        capacity: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        if batch == 0 || capacity == 0 || kv_heads == 0 || head_dim == 0 {
            return Err(Error::bad_input(format!(
                "KV cache: batch {batch}, capacity {capacity}, kv_heads {kv_heads} and head_dim {head_dim} must all be positive"
            )));
        }
        if !dtype.is_float() {
            return Err(Error::bad_input(format!(
                "KV cache: dtype {dtype} is not a float type"
            )));
        }
        let shape = [batch, capacity, kv_heads * head_dim];
        let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if n.is_none_or(|n| n.checked_mul(dtype.size()).is_none()) {
            return Err(Error::bad_input(format!(
                "KV cache: shape {shape:?} overflows"
            )));
        }
        let layers = (0..num_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(&shape, dtype, device)?,
                    Tensor::zeros(&shape, dtype, device)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            batch,
            capacity,
            kv_heads,
            head_dim,
            layers,
        })
    }

    /// A cache for every layer of a model.
    pub fn for_model(
        arch: &ArchParams,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Self::new(
            arch.num_layers,
            batch,
            capacity,
            arch.kv_heads,
            arch.head_dim,
            dtype,
            device,
        )
    }

    /// Bytes a cache of these sizes takes (both K and V, all layers).
    pub fn bytes_needed(
        num_layers: usize,
        batch: usize,
        capacity: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> usize {
        2 * num_layers * batch * capacity * kv_heads * head_dim * dtype.size()
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// K and V of one layer.
    pub fn layer_mut(&mut self, layer: usize) -> Result<(&mut Tensor, &mut Tensor)> {
        let n = self.layers.len();
        self.layers
            .get_mut(layer)
            .map(|(k, v)| (k, v))
            .ok_or_else(|| {
                Error::bad_input(format!("KV cache has {n} layers, layer {layer} requested"))
            })
    }

    pub fn layer(&self, layer: usize) -> Result<(&Tensor, &Tensor)> {
        let n = self.layers.len();
        self.layers.get(layer).map(|(k, v)| (k, v)).ok_or_else(|| {
            Error::bad_input(format!("KV cache has {n} layers, layer {layer} requested"))
        })
    }
}
