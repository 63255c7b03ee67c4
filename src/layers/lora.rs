//! LoRA adapters in PEFT's format (adapter_config.json + adapter_model.safetensors):
//! `y += B(A(x)) · scale` with scale = alpha / r, or alpha / √r with rsLoRA.
//!
//! Flow, as exllamav2's: `Lora::load` reads an adapter; `ParallelDecoder::add_lora` (or
//! `Model::add_lora`) registers its tensors on the layer's linears, on the layer's device;
//! `update_loras` re-syncs registered adapters after the layer moved; each forward names the
//! adapters that are active (several at once add up).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::limits;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result, Weights};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One module's adapter: A [r, in], B [out, r], and the scale.
#[derive(Debug)]
pub struct LoraAdapter {
    /// lora_A: [rank, in].
    pub a: Tensor,
    /// lora_B: [out, rank].
    pub b: Tensor,
    /// alpha / rank (alpha / √rank with rsLoRA).
    pub scale: f32,
}

impl LoraAdapter {
    /// The adapter's rank.
    pub fn rank(&self) -> usize {
        self.a.shape()[0]
    }
    /// A copy on `device`.
    pub fn to_device(&self, device: Device) -> Result<LoraAdapter> {
        self.to_device_as(device, None)
    }
    /// A copy on `device`, converted to `dtype` when given.
    pub fn to_device_as(&self, device: Device, dtype: Option<crate::DType>) -> Result<LoraAdapter> {
        let mv = |t: &Tensor| -> Result<Tensor> {
            match dtype {
                Some(d) if d != t.dtype() => t.to_dtype(d)?.to_device(device),
                _ => t.to_device(device),
            }
        };
        Ok(LoraAdapter {
            a: mv(&self.a)?,
            b: mv(&self.b)?,
            scale: self.scale,
        })
    }
}

/// A loaded adapter: every module it targets, by the module's checkpoint name
/// (e.g. `gpt_neox.layers.0.attention.query_key_value`).
#[derive(Debug)]
pub struct Lora {
    id: u64,
    /// The adapter's name (its directory).
    pub name: String,
    /// `r`.
    pub rank: usize,
    /// `lora_alpha`.
    pub alpha: f32,
    /// Whether rsLoRA scaling (alpha / √r) applies.
    pub rslora: bool,
    /// The adapters by module name (e.g. `model.layers.0.self_attn.q_proj`).
    pub modules: HashMap<String, LoraAdapter>,
}

fn cfg_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::bad_format(format!("{}: {msg}", path.display()))
}

impl Lora {
    /// A process-unique id; forwards select adapters by it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Reads a PEFT adapter directory.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| Error::Io(format!("{}: {e}", cfg_path.display())))?;
        let cfg: Value = serde_json::from_str(&text).map_err(|e| cfg_err(&cfg_path, e))?;
        let weights = Weights::from_files(&[dir.join("adapter_model.safetensors")])?;
        Self::from_parts(&dir.display().to_string(), &cfg, &weights, &cfg_path)
    }

    fn from_parts(name: &str, cfg: &Value, weights: &Weights, cfg_path: &Path) -> Result<Self> {
        let get = |k: &str| cfg.get(k).filter(|v| !v.is_null());
        if let Some(t) = get("peft_type").and_then(Value::as_str) {
            if t != "LORA" {
                return Err(Error::unsupported(format!(
                    "{}: peft_type {t:?} (only LORA)",
                    cfg_path.display()
                )));
            }
        }
        let rank = get("r")
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .ok_or_else(|| cfg_err(cfg_path, "r must be a positive integer"))?;
        let rank = limits::check(
            &format!("{}: r", cfg_path.display()),
            usize::try_from(rank).unwrap_or(usize::MAX),
            limits::LORA_RANK,
        )?;
        let alpha = get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or_else(|| cfg_err(cfg_path, "lora_alpha must be a number"))?;
        if !(alpha as f32).is_finite() {
            return Err(cfg_err(
                cfg_path,
                format!("lora_alpha = {alpha} is not a finite 32-bit float"),
            ));
        }
        let alpha = alpha as f32;
        let rslora = get("use_rslora").and_then(Value::as_bool).unwrap_or(false);
        // Settings that change the math in ways paradec does not implement are refused.
        for (key, ok) in [
            (
                "use_dora",
                get("use_dora").is_none_or(|v| v == &Value::Bool(false)),
            ),
            (
                "lora_bias",
                get("lora_bias").is_none_or(|v| v == &Value::Bool(false)),
            ),
            (
                "bias",
                get("bias").is_none_or(|v| v.as_str() == Some("none")),
            ),
            (
                "modules_to_save",
                get("modules_to_save").is_none_or(|v| v.as_array().is_some_and(|a| a.is_empty())),
            ),
            (
                "rank_pattern",
                get("rank_pattern").is_none_or(|v| v.as_object().is_some_and(|o| o.is_empty())),
            ),
            (
                "alpha_pattern",
                get("alpha_pattern").is_none_or(|v| v.as_object().is_some_and(|o| o.is_empty())),
            ),
        ] {
            if !ok {
                return Err(Error::unsupported(format!(
                    "{}: {key} = {} is not supported",
                    cfg_path.display(),
                    cfg[key]
                )));
            }
        }
        // Finite: |alpha| < f32::MAX and rank ≥ 1.
        let scale = if rslora {
            alpha / (rank as f32).sqrt()
        } else {
            alpha / rank as f32
        };
        let mut modules: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
        for n in weights.names() {
            let stripped = n.strip_prefix("base_model.model.").unwrap_or(n);
            let (module, which) = if let Some(m) = stripped.strip_suffix(".lora_A.weight") {
                (m, 0)
            } else if let Some(m) = stripped.strip_suffix(".lora_B.weight") {
                (m, 1)
            } else {
                return Err(Error::unsupported(format!(
                    "adapter tensor {n}: only lora_A / lora_B weights are supported"
                )));
            };
            let t = weights.get(n)?;
            if !t.dtype().is_float() || t.shape().len() != 2 {
                return Err(Error::bad_format(format!(
                    "adapter tensor {n}: expected a float matrix, got {} {:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let e = modules.entry(module.to_string()).or_default();
            if which == 0 {
                e.0 = Some(t);
            } else {
                e.1 = Some(t);
            }
        }
        let mut out = HashMap::new();
        for (m, (a, b)) in modules {
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (None, _) => {
                    return Err(Error::not_found(format!(
                        "adapter tensor {m}.lora_A.weight"
                    )))
                }
                (_, None) => {
                    return Err(Error::not_found(format!(
                        "adapter tensor {m}.lora_B.weight"
                    )))
                }
            };
            if a.shape()[0] != rank || b.shape()[1] != rank {
                return Err(Error::bad_format(format!(
                    "adapter {m}: lora_A {:?} and lora_B {:?} do not have rank r = {rank}",
                    a.shape(),
                    b.shape()
                )));
            }
            out.insert(m, LoraAdapter { a, b, scale });
        }
        if out.is_empty() {
            return Err(Error::bad_format(format!(
                "{name}: the adapter has no lora_A / lora_B tensors"
            )));
        }
        Ok(Lora {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            rank,
            alpha,
            rslora,
            modules: out,
        })
    }
}
