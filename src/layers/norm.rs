//! `Norm`: a LayerNorm or RMSNorm with its weights, loaded from `{prefix}.weight` / `.bias`.

use crate::ops;
use crate::tensor::{DType, Device, Tensor};
use crate::vocab::{Affine, NormKind};
use crate::{Result, Stream, Weights};

#[derive(Debug)]
/// A norm with its affine weights.
pub struct Norm {
    /// LayerNorm or RMSNorm.
    pub kind: NormKind,
    /// Scale per column (`[hidden]`, or [heads, head_dim] for per-head q/k norms).
    pub weight: Option<Tensor>,
    /// Shift per column, when the norm has one.
    pub bias: Option<Tensor>,
    /// Epsilon.
    pub eps: f32,
}

impl Norm {
    /// Loads a norm of width `dim` (or `shape` for per-head norms). The weight is required;
    /// the bias is required when `bias` is true.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        kind: NormKind,
        shape: &[usize],
        bias: bool,
        eps: f32,
    ) -> Result<Self> {
        let weight = Some(weights.get_float(&format!("{prefix}.weight"), shape)?);
        let bias = if bias {
            Some(weights.get_float(&format!("{prefix}.bias"), shape)?)
        } else {
            None
        };
        Ok(Norm {
            kind,
            weight,
            bias,
            eps,
        })
    }

    /// The weight and bias as op arguments.
    pub fn affine(&self) -> Affine<'_> {
        Affine {
            weight: self.weight.as_ref(),
            bias: self.bias.as_ref(),
        }
    }

    /// `out = norm(x)` over rows of x, queued on `s`.
    pub fn forward(&self, s: &Stream, x: &Tensor, out: &mut Tensor) -> Result<()> {
        ops::norm(s, self.kind, x, &self.affine(), self.eps, out)
    }

    /// Parameters (weight and bias elements).
    pub fn numel(&self) -> usize {
        self.weight.as_ref().map_or(0, Tensor::numel) + self.bias.as_ref().map_or(0, Tensor::numel)
    }

    /// Bytes of the weight and bias.
    pub fn weight_bytes(&self) -> usize {
        self.weight.as_ref().map_or(0, Tensor::size_bytes)
            + self.bias.as_ref().map_or(0, Tensor::size_bytes)
    }

    /// A copy on `device` with weight and bias in `dtype`; `self` is left as it was.
    pub fn placed(&self, device: Device, dtype: DType) -> Result<Norm> {
        let mv = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
            t.as_ref()
                .map(|t| {
                    if t.dtype() == dtype {
                        t.to_device(device)
                    } else {
                        t.to_dtype(dtype)?.to_device(device)
                    }
                })
                .transpose()
        };
        Ok(Norm {
            kind: self.kind,
            weight: mv(&self.weight)?,
            bias: mv(&self.bias)?,
            eps: self.eps,
        })
    }

    /// Moves the weight and bias to `device`.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        for t in [&mut self.weight, &mut self.bias].into_iter().flatten() {
            *t = t.to_device(device)?;
        }
        Ok(())
    }
}
