//! `Linear`: a projection `y = x · Wᵀ + b` with W in PyTorch layout [out, in]. The weight is
//! dense (f32, f16, bf16); quantized kinds slot in beside `Dense`.

use crate::ops;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result, Stream, Weights};

#[derive(Debug)]
pub enum LinearWeight {
    Dense(Tensor),
}

#[derive(Debug)]
pub struct Linear {
    /// The module's name in the checkpoint (for messages).
    pub name: String,
    pub in_features: usize,
    pub out_features: usize,
    pub weight: LinearWeight,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.weight` [out, in] and, when `bias`, `{prefix}.bias` [out].
    pub fn load(
        weights: &Weights,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let w = weights.get_float(&format!("{prefix}.weight"), &[out_features, in_features])?;
        let bias = if bias {
            Some(weights.get_float(&format!("{prefix}.bias"), &[out_features])?)
        } else {
            None
        };
        Ok(Linear {
            name: prefix.to_string(),
            in_features,
            out_features,
            weight: LinearWeight::Dense(w),
            bias,
        })
    }

    /// A linear layer from tensors the caller holds.
    pub fn from_tensors(name: &str, weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        if weight.shape().len() != 2 || !weight.dtype().is_float() {
            return Err(Error::bad_input(format!(
                "{name}.weight: expected a float [out, in] matrix, got {} {:?}",
                weight.dtype(),
                weight.shape()
            )));
        }
        let (out_features, in_features) = (weight.shape()[0], weight.shape()[1]);
        if let Some(b) = &bias {
            b.check(&format!("{name}.bias"), None, &[out_features])?;
        }
        Ok(Linear {
            name: name.to_string(),
            in_features,
            out_features,
            weight: LinearWeight::Dense(weight),
            bias,
        })
    }

    /// `out (+)= x · Wᵀ + b` for x [.., in]; out has the same rows and `out_features` columns.
    pub fn forward(
        &self,
        s: &Stream,
        x: &Tensor,
        out: &mut Tensor,
        accumulate: bool,
    ) -> Result<()> {
        match &self.weight {
            LinearWeight::Dense(w) => ops::linear(s, x, w, self.bias.as_ref(), out, accumulate)
                .map_err(|e| prefix_error(&self.name, e)),
        }
    }

    pub fn numel(&self) -> usize {
        self.in_features * self.out_features + self.bias.as_ref().map_or(0, Tensor::numel)
    }

    /// Bytes the weights take where they are stored (for memory budgeting before a load).
    pub fn weight_bytes(&self) -> usize {
        let w = match &self.weight {
            LinearWeight::Dense(w) => w.size_bytes(),
        };
        w + self.bias.as_ref().map_or(0, Tensor::size_bytes)
    }

    pub fn is_quant(&self) -> bool {
        !matches!(self.weight, LinearWeight::Dense(_))
    }

    pub fn to_device(&mut self, device: Device) -> Result<()> {
        match &mut self.weight {
            LinearWeight::Dense(w) => *w = w.to_device(device)?,
        }
        if let Some(b) = &mut self.bias {
            *b = b.to_device(device)?;
        }
        Ok(())
    }
}

/// Prefixes a bad-input message with the module name, so errors say which projection failed.
pub(crate) fn prefix_error(name: &str, e: Error) -> Error {
    match e {
        Error::BadInput(m) => Error::BadInput(format!("{name}: {m}")),
        other => other,
    }
}
