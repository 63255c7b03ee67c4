//! Quantized linear weights: GPTQ and EXL2 tensors — load, validate, dequantize and multiply on
//! the CPU (the reference the CUDA kernels are checked against), and pack (for tests and tools).
//!
//! Layout conventions (docs/formats.md): K = `in_features`, N = `out_features`; the dense
//! weight a quantized tensor stands for is PyTorch's `nn.Linear` layout, `[N, K]` row-major, and
//! `forward` computes `out[m, N] (+)= x[m, K] · Wᵀ + bias`.
//!
//! Every malformed file is reported as `Error::BadFormat` (or `NotFound` for a missing tensor)
//! whose message names the full tensor name and the rule it breaks; loading never panics, never
//! reads out of bounds, and checks all size arithmetic.

pub mod device;
pub mod exl2;
pub mod gptq;
pub mod pack;

use std::path::Path;

use half::{bf16, f16};
use serde_json::Value;

use crate::limits::try_collect;
use crate::tensor::DType;
use crate::weights::TensorView;
use crate::{Error, Result, Weights};

pub use device::{PreparedQuant, QuantLayout};
pub use exl2::{Exl2Config, Exl2Group, Exl2Weight};
pub use gptq::{GptqConfig, GptqWeight};

/// Which quantized layout a model directory holds, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantConfig {
    /// GPTQ settings.
    Gptq(GptqConfig),
    /// EXL2 settings.
    Exl2(Exl2Config),
}

impl QuantConfig {
    /// Reads `config.json`'s `quantization_config` (a full config.json object is expected).
    /// `Ok(None)` when there is no `quantization_config`.
    pub fn from_config_json(config: &Value) -> Result<Option<Self>> {
        match config.get("quantization_config") {
            None | Some(Value::Null) => Ok(None),
            Some(qc) => Self::from_json(qc).map(Some),
        }
    }

    /// Parses a `quantization_config` object (or a `quantize_config.json`): `quant_method` picks
    /// the layout; without one, a `bits` field means GPTQ (AutoGPTQ's quantize_config.json).
    pub fn from_json(qc: &Value) -> Result<Self> {
        if !qc.is_object() {
            return Err(Error::bad_format(
                "quantization_config: expected a JSON object",
            ));
        }
        match qc.get("quant_method") {
            None => GptqConfig::from_json(qc).map(QuantConfig::Gptq),
            Some(Value::String(m)) => match m.to_ascii_lowercase().as_str() {
                "gptq" => GptqConfig::from_json(qc).map(QuantConfig::Gptq),
                "exl2" => Exl2Config::from_json(qc).map(QuantConfig::Exl2),
                other => Err(Error::unsupported(format!(
                    "quantization_config.quant_method {other:?} (paradec reads \"gptq\" and \"exl2\")"
                ))),
            },
            Some(v) => Err(Error::bad_format(format!(
                "quantization_config.quant_method: expected a string, got {v}"
            ))),
        }
    }

    /// The quantization of a model directory: `config.json`'s `quantization_config`, else
    /// `quantize_config.json`, else detection by tensor names (`*.qweight` ⇒ GPTQ, with its
    /// settings inferred from the first such tensor's shapes; `*.q_weight` ⇒ EXL2).
    /// `Ok(None)` for a dense model.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Option<Self>> {
        let dir = dir.as_ref();
        if let Some(cfg) = read_json_opt(&dir.join("config.json"))? {
            if let Some(q) = Self::from_config_json(&cfg)? {
                return Ok(Some(q));
            }
        }
        if let Some(qc) = read_json_opt(&dir.join("quantize_config.json"))? {
            return Self::from_json(&qc).map(Some);
        }
        let weights = match Weights::from_dir(dir) {
            Ok(w) => w,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Self::detect(&weights)
    }

    /// Detection by tensor names alone (no config file).
    pub fn detect(weights: &Weights) -> Result<Option<Self>> {
        let names = weights.names();
        if names.iter().any(|n| n.ends_with(".q_weight")) {
            return Ok(Some(QuantConfig::Exl2(Exl2Config::default())));
        }
        if let Some(n) = names.iter().find(|n| n.ends_with(".qweight")) {
            let prefix = &n[..n.len() - ".qweight".len()];
            return GptqConfig::infer(weights, prefix).map(|c| Some(QuantConfig::Gptq(c)));
        }
        Ok(None)
    }

    /// A short name for messages: "gptq" or "exl2".
    pub fn method(&self) -> &'static str {
        match self {
            QuantConfig::Gptq(_) => "gptq",
            QuantConfig::Exl2(_) => "exl2",
        }
    }
}

/// A quantized linear weight of either layout.
#[derive(Debug, Clone)]
pub enum QuantWeight {
    /// A GPTQ weight.
    Gptq(GptqWeight),
    /// An EXL2 weight.
    Exl2(Exl2Weight),
}

impl QuantWeight {
    /// Loads `{prefix}.*` in the layout `config` names, checking every tensor against
    /// `in_features` (K) and `out_features` (N).
    pub fn load(
        weights: &Weights,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        config: &QuantConfig,
    ) -> Result<Self> {
        Ok(match config {
            QuantConfig::Gptq(c) => QuantWeight::Gptq(GptqWeight::load(
                weights,
                prefix,
                in_features,
                out_features,
                c,
            )?),
            QuantConfig::Exl2(_) => QuantWeight::Exl2(Exl2Weight::load(
                weights,
                prefix,
                in_features,
                out_features,
            )?),
        })
    }
    /// The tensors' name prefix in the checkpoint.
    pub fn prefix(&self) -> &str {
        match self {
            QuantWeight::Gptq(w) => w.prefix(),
            QuantWeight::Exl2(w) => w.prefix(),
        }
    }
    /// K.
    pub fn in_features(&self) -> usize {
        match self {
            QuantWeight::Gptq(w) => w.in_features(),
            QuantWeight::Exl2(w) => w.in_features(),
        }
    }
    /// N.
    pub fn out_features(&self) -> usize {
        match self {
            QuantWeight::Gptq(w) => w.out_features(),
            QuantWeight::Exl2(w) => w.out_features(),
        }
    }
    /// The bias, if the checkpoint has one.
    pub fn bias(&self) -> Option<&[f32]> {
        match self {
            QuantWeight::Gptq(w) => w.bias(),
            QuantWeight::Exl2(w) => w.bias(),
        }
    }
    /// Logical element count K·N.
    pub fn numel(&self) -> usize {
        match self {
            QuantWeight::Gptq(w) => w.numel(),
            QuantWeight::Exl2(w) => w.numel(),
        }
    }
    /// Bytes of the packed arrays held in memory.
    pub fn storage_bytes(&self) -> usize {
        match self {
            QuantWeight::Gptq(w) => w.storage_bytes(),
            QuantWeight::Exl2(w) => w.storage_bytes(),
        }
    }
    /// The dense weight, `[N, K]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            QuantWeight::Gptq(w) => w.dequantize(),
            QuantWeight::Exl2(w) => w.dequantize(),
        }
    }
    /// `out[m, N] (+)= x[m, K] · Wᵀ + bias`, straight from the packed data.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32], accumulate: bool) -> Result<()> {
        match self {
            QuantWeight::Gptq(w) => w.forward(x, m, out, accumulate),
            QuantWeight::Exl2(w) => w.forward(x, m, out, accumulate),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers: bit streams, tensor checks, decoding, the CPU matmul skeleton.

/// Reads `bits` (≤ 8) bits at bit position `pos` of a little-endian stream of 32-bit words,
/// `word(i)` giving the stream's i-th word. A value may straddle two words.
#[inline]
pub(crate) fn stream_get(word: impl Fn(usize) -> u32, pos: usize, bits: u32) -> u32 {
    let w = pos / 32;
    let sh = (pos % 32) as u32;
    let lo = word(w) as u64;
    let hi = if sh + bits > 32 {
        word(w + 1) as u64
    } else {
        0
    };
    (((hi << 32) | lo) >> sh) as u32 & ((1u32 << bits) - 1)
}

/// ORs `value` (masked to `bits`) into the stream at bit position `pos`; `word(i)` gives a
/// mutable reference to the stream's i-th word.
#[inline]
pub(crate) fn stream_or(
    words: &mut [i32],
    index: impl Fn(usize) -> usize,
    pos: usize,
    bits: u32,
    value: u32,
) {
    let v = (value & ((1u32 << bits) - 1)) as u64;
    let w = pos / 32;
    let sh = (pos % 32) as u32;
    let shifted = v << sh;
    words[index(w)] |= shifted as u32 as i32;
    if sh + bits > 32 {
        words[index(w + 1)] |= (shifted >> 32) as u32 as i32;
    }
}

/// `a · b` with overflow reported as `BadInput` naming what was computed.
pub(crate) fn mul(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::bad_input(format!("{what}: {a} × {b} overflows")))
}

/// `ceil(a · b / 32)`, checked.
pub(crate) fn packed_words(a: usize, bits: u32, what: &str) -> Result<usize> {
    Ok(mul(a, bits as usize, what)?.div_ceil(32))
}

/// The view of a required tensor, checking its dtype is one of `dtypes`.
pub(crate) fn view_of<'a>(w: &'a Weights, name: &str, dtypes: &[DType]) -> Result<TensorView<'a>> {
    let v = w.view(name)?;
    check_dtype(name, &v, dtypes)?;
    Ok(v)
}

/// The view of an optional tensor, checking its dtype.
pub(crate) fn view_opt<'a>(
    w: &'a Weights,
    name: &str,
    dtypes: &[DType],
) -> Result<Option<TensorView<'a>>> {
    if w.contains(name) {
        view_of(w, name, dtypes).map(Some)
    } else {
        Ok(None)
    }
}

fn check_dtype(name: &str, v: &TensorView<'_>, dtypes: &[DType]) -> Result<()> {
    if dtypes.contains(&v.dtype) {
        return Ok(());
    }
    let want: Vec<&str> = dtypes.iter().map(|d| d.name()).collect();
    Err(Error::bad_format(format!(
        "tensor {name}: dtype must be {}, got {}",
        want.join(" or "),
        v.dtype
    )))
}

/// Checks a tensor's shape, naming the tensor and what the dimensions mean.
pub(crate) fn check_shape(
    name: &str,
    v: &TensorView<'_>,
    want: &[usize],
    meaning: &str,
) -> Result<()> {
    if v.shape == want {
        // safetensors validated byte length = numel · size, but be defensive about the data.
        let n = want.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if n.and_then(|n| n.checked_mul(v.dtype.size())) == Some(v.data.len()) {
            return Ok(());
        }
        return Err(Error::bad_format(format!(
            "tensor {name}: {} data bytes do not match shape {want:?}",
            v.data.len()
        )));
    }
    Err(Error::bad_format(format!(
        "tensor {name}: shape must be {want:?} ({meaning}), got {:?}",
        v.shape
    )))
}

pub(crate) fn decode_i32(data: &[u8]) -> Result<Vec<i32>> {
    try_collect(
        data.chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        "decoding i32",
    )
}

pub(crate) fn decode_i16(data: &[u8]) -> Result<Vec<i16>> {
    try_collect(
        data.chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]])),
        "decoding i16",
    )
}

pub(crate) fn decode_f16(data: &[u8]) -> Result<Vec<f16>> {
    try_collect(
        data.chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]])),
        "decoding f16",
    )
}

/// Decodes a float tensor (f16, bf16 or f32) to f32.
pub(crate) fn decode_float(v: &TensorView<'_>) -> Result<Vec<f32>> {
    let what = "decoding floats";
    match v.dtype {
        DType::F16 => try_collect(
            v.data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
            what,
        ),
        DType::BF16 => try_collect(
            v.data
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            what,
        ),
        DType::F32 => try_collect(
            v.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            what,
        ),
        _ => Ok(Vec::new()),
    }
}

/// Rejects NaN and infinite values, naming the tensor and the first bad index.
pub(crate) fn check_finite(name: &str, values: impl IntoIterator<Item = f32>) -> Result<()> {
    for (i, x) in values.into_iter().enumerate() {
        if !x.is_finite() {
            return Err(Error::bad_format(format!(
                "tensor {name}: element {i} is {x}; scales and biases must be finite"
            )));
        }
    }
    Ok(())
}

/// Loads an optional `{prefix}.bias` of shape `[n]` (or any of `alt_lens`), any float dtype.
pub(crate) fn load_bias(
    w: &Weights,
    prefix: &str,
    n: usize,
    alt_len: Option<usize>,
) -> Result<Option<Vec<f32>>> {
    let name = format!("{prefix}.bias");
    let Some(v) = view_opt(w, &name, &[DType::F16, DType::BF16, DType::F32])? else {
        return Ok(None);
    };
    match alt_len {
        Some(a) if v.shape == [a] && a != n => check_shape(&name, &v, &[a], "padded out_features")?,
        _ => check_shape(&name, &v, &[n], "out_features")?,
    }
    let mut b = decode_float(&v)?;
    check_finite(&name, b.iter().copied())?;
    b.truncate(n);
    Ok(Some(b))
}

/// Checks the caller's K and N.
pub(crate) fn check_dims(prefix: &str, k: usize, n: usize) -> Result<()> {
    if k == 0 || n == 0 {
        return Err(Error::bad_input(format!(
            "{prefix}: in_features ({k}) and out_features ({n}) must be positive"
        )));
    }
    Ok(())
}

/// Checks `x` and `out` lengths for a forward with `m` rows.
pub(crate) fn check_forward(
    prefix: &str,
    k: usize,
    n: usize,
    x: &[f32],
    m: usize,
    out: &[f32],
) -> Result<()> {
    let xk = mul(m, k, "forward: m × in_features")?;
    let on = mul(m, n, "forward: m × out_features")?;
    if x.len() != xk {
        return Err(Error::bad_input(format!(
            "{prefix}: forward input has {} values, expected m·K = {m}·{k}",
            x.len()
        )));
    }
    if out.len() != on {
        return Err(Error::bad_input(format!(
            "{prefix}: forward output has {} values, expected m·N = {m}·{n}",
            out.len()
        )));
    }
    Ok(())
}

/// The shared CPU matmul skeleton. Stored row `j` of the packed matrix multiplies input feature
/// `perm[j]` (identity when `perm` is `None`); `decode_row(j, row)` writes stored row j's
/// dequantized N values. Accumulates in f32 into a scratch, then writes/accumulates `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_rows(
    k: usize,
    n: usize,
    perm: Option<&[u32]>,
    bias: Option<&[f32]>,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    accumulate: bool,
    mut for_each_row: impl FnMut(&mut dyn FnMut(usize, &[f32])),
) {
    let mut acc = vec![0f32; m * n];
    for_each_row(&mut |j: usize, row: &[f32]| {
        let src = match perm {
            Some(p) => p[j] as usize,
            None => j,
        };
        for mi in 0..m {
            let xv = x[mi * k + src];
            let a = &mut acc[mi * n..(mi + 1) * n];
            for (o, &w) in a.iter_mut().zip(row) {
                *o += xv * w;
            }
        }
    });
    for mi in 0..m {
        let o = &mut out[mi * n..(mi + 1) * n];
        let a = &acc[mi * n..(mi + 1) * n];
        for c in 0..n {
            let mut v = a[c];
            if let Some(b) = bias {
                v += b[c];
            }
            o[c] = if accumulate { o[c] + v } else { v };
        }
    }
}

/// Reads a JSON file, `Ok(None)` when it does not exist.
pub(crate) fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::bad_format(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_reads_straddling_values() {
        // 3-bit values 0..=7 repeated; value i sits at bit 3i.
        let mut words = vec![0i32; 3];
        for i in 0..32 {
            stream_or(&mut words, |w| w, i * 3, 3, (i % 8) as u32);
        }
        for i in 0..32 {
            assert_eq!(stream_get(|w| words[w] as u32, i * 3, 3), (i % 8) as u32);
        }
        // Value 10 occupies bits 30..33: two low bits in word 0, one in word 1.
        assert_eq!((words[0] as u32) >> 30, 2 & 3);
        assert_eq!(words[1] as u32 & 1, 0);
    }
}

#[cfg(test)]
pub(crate) mod testutil;
