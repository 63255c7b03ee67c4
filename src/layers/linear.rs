//! `Linear`: a projection `y = x · Wᵀ + b` with W in PyTorch layout [out, in]. The weight is
//! dense (f32, f16, bf16) or quantized (GPTQ, EXL2); LoRA adapters add to the output.

use std::sync::Arc;

use crate::layers::lora::LoraAdapter;
use crate::ops;
use crate::quant::{PreparedQuant, QuantConfig, QuantWeight};
use crate::tensor::{DType, Device, Tensor};
use crate::vocab::Activation;
use crate::workspace::Workspace;
use crate::{Error, Result, Stream, Weights};

#[derive(Debug)]
/// What a projection multiplies by.
pub enum LinearWeight {
    /// A dense [out, in] matrix (f32, f16 or bf16).
    Dense(Tensor),
    /// Packed GPTQ / EXL2 weights (host memory; the bias, if any, lives inside). Shared, not
    /// copied, with the device layouts prepared from them (gigabytes in a 7B model).
    Quant(Arc<QuantWeight>),
    /// Packed weights in the device layout for one compute dtype (with their bias), plus the
    /// host copy they came from.
    Prepared(Box<PreparedQuant>),
}

#[derive(Debug)]
/// One projection (see the module docs).
pub struct Linear {
    /// The module's name in the checkpoint (for messages).
    pub name: String,
    /// K: the input width.
    pub in_features: usize,
    /// N: the output width.
    pub out_features: usize,
    /// The weight, dense or packed.
    pub weight: LinearWeight,
    /// The bias of a dense weight (a packed weight keeps its own).
    pub bias: Option<Tensor>,
    /// LoRA adapters registered on this projection, by `Lora::id`.
    loras: Vec<(u64, LoraAdapter)>,
}

impl Linear {
    /// Loads `{prefix}.weight` [out, in] (and, when `bias`, `{prefix}.bias` `[out]`); or, when
    /// the checkpoint holds no dense weight there and `quant` is given, the packed tensors under
    /// `{prefix}` (whose bias is optional: quantizers drop all-zero biases).
    pub fn load(
        weights: &Weights,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        quant: Option<&QuantConfig>,
    ) -> Result<Self> {
        let dense_name = format!("{prefix}.weight");
        let (weight, bias) = match quant {
            Some(qc) if !weights.contains(&dense_name) => (
                LinearWeight::Quant(Arc::new(QuantWeight::load(
                    weights,
                    prefix,
                    in_features,
                    out_features,
                    qc,
                )?)),
                None,
            ),
            _ => {
                let w = weights.get_float(&dense_name, &[out_features, in_features])?;
                let b = if bias {
                    Some(weights.get_float(&format!("{prefix}.bias"), &[out_features])?)
                } else {
                    None
                };
                (LinearWeight::Dense(w), b)
            }
        };
        Ok(Linear {
            name: prefix.to_string(),
            in_features,
            out_features,
            weight,
            bias,
            loras: Vec::new(),
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
            loras: Vec::new(),
        })
    }

    /// `out (+)= x · Wᵀ + b + Σ B(A(x))·scale` for x [.., in], over the registered adapters whose
    /// id is in `active`; out has the same rows and `out_features` columns. Temporaries (the
    /// adapters' x·A, the kernels' scratch) come from `ws`.
    pub fn forward(
        &self,
        s: &Stream,
        ws: &mut Workspace,
        x: &Tensor,
        out: &mut Tensor,
        accumulate: bool,
        active: &[u64],
    ) -> Result<()> {
        let r = match &self.weight {
            LinearWeight::Dense(w) => ops::linear(s, ws, x, w, self.bias.as_ref(), out, accumulate),
            LinearWeight::Quant(q) => ops::quant_linear(s, ws, x, q, out, accumulate),
            LinearWeight::Prepared(q) => ops::prepared_linear(s, ws, x, q, out, accumulate),
        };
        r.and_then(|_| self.apply_loras(s, ws, x, out, active))
            .map_err(|e| prefix_error(&self.name, e))
    }

    /// `out_i = act_i(x_i · W_iᵀ + b_i + Σ B(A(x_i))·scale)` for several linears (no
    /// accumulation; `acts[i]` none or `acts` empty: no activation), each result as `forward`
    /// then `ops::activate` give it; on a device their quantized products launch together where
    /// the kernels allow (`ops::prepared_linear_group`: one launch for a block's input
    /// projections), with the activation in that launch unless an active adapter must add its
    /// update before it.
    pub fn forward_group(
        s: &Stream,
        ws: &mut Workspace,
        calls: &mut [(&Linear, &Tensor, &mut Tensor)],
        acts: &[Option<Activation>],
        active: &[u64],
    ) -> Result<()> {
        if !acts.is_empty() && acts.len() != calls.len() {
            return Err(Error::bad_input(format!(
                "{}: {} activations for {} calls",
                joined_names(calls.iter().map(|c| c.0)),
                acts.len(),
                calls.len()
            )));
        }
        let act_of = |i: usize| acts.get(i).copied().flatten();
        let prepared = calls.iter().all(|(l, _, _)| l.prepared().is_some());
        if !prepared || calls.len() < 2 {
            for (i, (l, x, out)) in calls.iter_mut().enumerate() {
                l.forward(s, ws, x, out, false, active)?;
                if let Some(act) = act_of(i) {
                    ops::activate(s, act, out).map_err(|e| prefix_error(&l.name, e))?;
                }
            }
            return Ok(());
        }
        // An activation waits for the adapters of its call where any is active.
        let in_launch: Vec<Option<Activation>> = calls
            .iter()
            .enumerate()
            .map(|(i, (l, _, _))| act_of(i).filter(|_| !l.has_active_lora(active)))
            .collect();
        {
            let mut base: Vec<(&Tensor, &PreparedQuant, &mut Tensor)> = calls
                .iter_mut()
                .filter_map(|(l, x, out)| Some((&**x, l.prepared()?, &mut **out)))
                .collect();
            ops::prepared_linear_group(s, ws, &mut base, &in_launch)
                .map_err(|e| prefix_error(&joined_names(calls.iter().map(|c| c.0)), e))?;
        }
        for (i, (l, x, out)) in calls.iter_mut().enumerate() {
            l.apply_loras(s, ws, x, out, active)
                .map_err(|e| prefix_error(&l.name, e))?;
            if let (Some(act), None) = (act_of(i), in_launch[i]) {
                ops::activate(s, act, out).map_err(|e| prefix_error(&l.name, e))?;
            }
        }
        Ok(())
    }

    /// The weight prepared on a device for the kernels, if that is what this linear holds.
    fn prepared(&self) -> Option<&PreparedQuant> {
        match &self.weight {
            LinearWeight::Prepared(q) => Some(q),
            _ => None,
        }
    }

    /// Whether any adapter registered on this linear is among `active`.
    fn has_active_lora(&self, active: &[u64]) -> bool {
        self.loras.iter().any(|(id, _)| active.contains(id))
    }

    /// `out += Σ x_i · W_iᵀ + bias + Σ B(A(x_i))·scale` for linears of one output width in one
    /// launch of their products, where every weight is quantized, prepared on a device and
    /// takes the small-M path (`ops::prepared_linear_sum`); `bias` replaces the linears' own
    /// biases (the caller passes their sum). Ok(false): the launch does not apply and nothing
    /// ran — the caller runs each `forward` with accumulation instead.
    pub fn forward_sum(
        s: &Stream,
        ws: &mut Workspace,
        terms: &[(&Linear, &Tensor)],
        bias: Option<&Tensor>,
        out: &mut Tensor,
        active: &[u64],
    ) -> Result<bool> {
        let base: Option<Vec<(&Tensor, &PreparedQuant)>> = terms
            .iter()
            .map(|(l, x)| Some((*x, l.prepared()?)))
            .collect();
        let Some(base) = base else {
            return Ok(false);
        };
        if !ops::prepared_linear_sum(s, ws, &base, bias, out, true)
            .map_err(|e| prefix_error(&joined_names(terms.iter().map(|t| t.0)), e))?
        {
            return Ok(false);
        }
        for (l, x) in terms {
            l.apply_loras(s, ws, x, out, active)
                .map_err(|e| prefix_error(&l.name, e))?;
        }
        Ok(true)
    }

    fn apply_loras(
        &self,
        s: &Stream,
        ws: &mut Workspace,
        x: &Tensor,
        out: &mut Tensor,
        active: &[u64],
    ) -> Result<()> {
        for (id, ad) in &self.loras {
            if !active.contains(id) {
                continue;
            }
            // As PEFT: lora_B(lora_A(x)) * scaling, then added to the base output.
            let rows = x.rows();
            let mut down = ws.scratch(&[rows, ad.rank()], out.dtype())?;
            ops::linear(s, ws, x, &ad.a, None, &mut down, false)?;
            let mut up = ws.scratch(&[rows, self.out_features], out.dtype())?;
            ops::linear(s, ws, &down, &ad.b, None, &mut up, false)?;
            ops::scale_inplace(s, &mut up, ad.scale)?;
            ops::add_inplace(s, out, &up)?;
        }
        Ok(())
    }

    /// Registers an adapter (a copy on this layer's device) under `id`, replacing one with the same id.
    pub fn add_lora(&mut self, id: u64, adapter: &LoraAdapter) -> Result<()> {
        let (a, b) = (adapter.a.shape(), adapter.b.shape());
        if a.len() != 2
            || b.len() != 2
            || a[1] != self.in_features
            || b[0] != self.out_features
            || a[0] != b[1]
        {
            return Err(Error::bad_input(format!(
                "LoRA for {}: lora_A {a:?} and lora_B {b:?} do not fit a {} → {} projection",
                self.name, self.in_features, self.out_features
            )));
        }
        let copy = adapter.to_device_as(self.device(), self.lora_dtype())?;
        self.loras.retain(|(i, _)| *i != id);
        self.loras.push((id, copy));
        Ok(())
    }

    /// Drops the adapter registered under `id` (nothing when there is none).
    pub fn remove_lora(&mut self, id: u64) {
        self.loras.retain(|(i, _)| *i != id);
    }

    /// The dtype adapters take: the layer's compute dtype on a device; on the CPU, as given.
    fn lora_dtype(&self) -> Option<DType> {
        (self.device() != Device::Cpu).then(|| self.compute_dtype())
    }

    /// Moves registered adapters to the weights' device and compute dtype (after a load or
    /// unload).
    pub fn update_loras(&mut self) -> Result<()> {
        let dev = self.device();
        let dt = self.lora_dtype();
        for (_, ad) in &mut self.loras {
            if ad.a.device() != dev || dt.is_some_and(|d| ad.a.dtype() != d) {
                *ad = ad.to_device_as(dev, dt)?;
            }
        }
        Ok(())
    }

    /// Replaces the dense weight by its best rank-⌊k·min(in, out)⌋ approximation (truncated
    /// SVD), kept dense in its dtype and on its device. Quantized weights are refused.
    pub fn rank_reduce(&mut self, k: f32) -> Result<()> {
        let rank = crate::layers::rank_reduce::kept_rank(k, self.out_features, self.in_features)?;
        match &mut self.weight {
            LinearWeight::Dense(w) => {
                let host = w.to_host()?;
                let mut v = host.f32_values()?.into_owned();
                crate::layers::rank_reduce::truncate_svd(
                    &mut v,
                    self.out_features,
                    self.in_features,
                    rank,
                )?;
                let reduced =
                    Tensor::from_f32_as(&v, w.shape(), w.dtype())?.to_device(w.device())?;
                *w = reduced;
                Ok(())
            }
            LinearWeight::Quant(_) | LinearWeight::Prepared(_) => Err(Error::unsupported(format!(
                "rank_reduce: {} is quantized; truncated SVD needs dense weights",
                self.name
            ))),
        }
    }

    /// Where the weight lives.
    pub fn device(&self) -> Device {
        match &self.weight {
            LinearWeight::Dense(w) => w.device(),
            LinearWeight::Quant(_) => Device::Cpu,
            LinearWeight::Prepared(q) => q.device(),
        }
    }

    /// Logical parameters (a quantized weight counts K·N, plus its bias).
    pub fn numel(&self) -> usize {
        let bias = match &self.weight {
            LinearWeight::Quant(q) => q.bias().map_or(0, <[f32]>::len),
            LinearWeight::Prepared(q) => q.host.bias().map_or(0, <[f32]>::len),
            LinearWeight::Dense(_) => self.bias.as_ref().map_or(0, Tensor::numel),
        };
        self.in_features * self.out_features + bias
    }

    /// The weight as a dense [out, in] f32 tensor (dequantized when packed).
    pub fn dense_weight(&self) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => w.to_host()?.to_dtype(crate::DType::F32),
            LinearWeight::Quant(q) => {
                Tensor::from_f32(q.dequantize(), &[self.out_features, self.in_features])
            }
            LinearWeight::Prepared(q) => {
                Tensor::from_f32(q.host.dequantize(), &[self.out_features, self.in_features])
            }
        }
    }

    /// The bias as f32 values, wherever it is stored.
    pub fn bias_values(&self) -> Result<Option<Vec<f32>>> {
        match &self.weight {
            LinearWeight::Quant(q) => Ok(q.bias().map(<[f32]>::to_vec)),
            LinearWeight::Prepared(q) => Ok(q.host.bias().map(<[f32]>::to_vec)),
            LinearWeight::Dense(_) => self
                .bias
                .as_ref()
                .map(|b| Ok(b.to_host()?.f32_values()?.into_owned()))
                .transpose(),
        }
    }

    /// Bytes the weights take where they are stored (for memory budgeting before a load).
    pub fn weight_bytes(&self) -> usize {
        let w = match &self.weight {
            LinearWeight::Dense(w) => w.size_bytes(),
            LinearWeight::Quant(q) => q.storage_bytes(),
            LinearWeight::Prepared(q) => q.device_bytes(),
        };
        w + self.bias.as_ref().map_or(0, Tensor::size_bytes)
    }

    /// Whether the weight is packed (GPTQ or EXL2).
    pub fn is_quant(&self) -> bool {
        !matches!(self.weight, LinearWeight::Dense(_))
    }

    /// The dtype the layer computes in where it lives: the dense weight's dtype, f32 for
    /// quantized weights on the CPU, the prepared dtype on a device.
    pub fn compute_dtype(&self) -> DType {
        match &self.weight {
            LinearWeight::Dense(w) => w.dtype(),
            LinearWeight::Quant(_) => DType::F32,
            LinearWeight::Prepared(q) => q.dtype,
        }
    }

    /// Moves the layer to `device`, keeping its dtype where the device computes in it: dense
    /// weights keep theirs on the CPU; on a device f16 and bf16 stay, f32 becomes f16 (see
    /// `to_device_as`).
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        let dtype = match (device, self.compute_dtype()) {
            (Device::Cpu, d) => d,
            (_, d @ (DType::F16 | DType::BF16)) => d,
            _ => DType::F16,
        };
        self.to_device_as(device, dtype)
    }

    /// Moves the layer to `device`, computing in `dtype` there. On a device `dtype` is f16 or
    /// bf16: dense weights (and the bias, and registered LoRA adapters) are converted, quantized
    /// weights are prepared in the device layout (built once on the host; the packed codes,
    /// scales and zeros stay the loader's). On the CPU quantized weights return to their packed
    /// host form and dense ones take `dtype`.
    pub fn to_device_as(&mut self, device: Device, dtype: DType) -> Result<()> {
        if let LinearWeight::Prepared(q) = &self.weight {
            if q.device() == device && q.dtype == dtype {
                return self.update_loras();
            }
        }
        *self = self.placed(device, dtype)?;
        Ok(())
    }

    /// A copy of this projection on `device` computing in `dtype` (see `to_device_as`), its
    /// adapters included; `self` is left as it was, so a failure changes nothing.
    pub fn placed(&self, device: Device, dtype: DType) -> Result<Linear> {
        if !dtype.is_float() {
            return Err(Error::bad_input(format!(
                "{}: compute dtype {dtype} is not a float type",
                self.name
            )));
        }
        if device != Device::Cpu && dtype == DType::F32 {
            return Err(Error::unsupported(format!(
                "{}: device linears compute in f16 or bf16, not f32",
                self.name
            )));
        }
        let weight = match &self.weight {
            LinearWeight::Dense(w) => LinearWeight::Dense(convert(w, device, dtype)?),
            LinearWeight::Quant(q) if device == Device::Cpu => LinearWeight::Quant(q.clone()),
            LinearWeight::Quant(q) => {
                LinearWeight::Prepared(Box::new(PreparedQuant::shared(q.clone(), device, dtype)?))
            }
            LinearWeight::Prepared(q) if device == Device::Cpu => {
                LinearWeight::Quant(q.host.clone())
            }
            LinearWeight::Prepared(q) => LinearWeight::Prepared(Box::new(PreparedQuant::shared(
                q.host.clone(),
                device,
                dtype,
            )?)),
        };
        let bias = match &self.bias {
            Some(b) => Some(convert(b, device, dtype)?),
            None => None,
        };
        let lora_dtype = (device != Device::Cpu).then_some(dtype);
        let loras = self
            .loras
            .iter()
            .map(|(id, ad)| Ok((*id, ad.to_device_as(device, lora_dtype)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Linear {
            name: self.name.clone(),
            in_features: self.in_features,
            out_features: self.out_features,
            weight,
            bias,
            loras,
        })
    }
}

/// A copy of `t` on `device` in `dtype` (converted on the host when the dtype changes).
fn convert(t: &Tensor, device: Device, dtype: DType) -> Result<Tensor> {
    if t.dtype() == dtype {
        if t.device() == device {
            return t.try_clone();
        }
        return t.to_device(device);
    }
    t.to_dtype(dtype)?.to_device(device)
}

/// Prefixes a bad-input message with the module name, so errors say which projection failed.
/// The names of linears that ran in one launch, for its errors: "q_proj + k_proj + …".
fn joined_names<'a>(linears: impl Iterator<Item = &'a Linear>) -> String {
    linears
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(" + ")
}

pub(crate) fn prefix_error(name: &str, e: Error) -> Error {
    match e {
        Error::BadInput(m) => Error::BadInput(format!("{name}: {m}")),
        other => other,
    }
}
