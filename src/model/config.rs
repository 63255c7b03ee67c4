//! Reads an HF config.json into [`ArchParams`], in both conventions — transformers 4.x
//! (top-level `rope_theta`, `rotary_emb_base`, `rope_scaling`, `rotary_pct`,
//! `partial_rotary_factor`) and 5.x (`rope_parameters`, possibly keyed by layer type). Configs
//! paradec cannot honour exactly are rejected with an error naming the field.

use serde_json::Value;

use crate::arch::rope::{RopeConfig, RopeScaling};
use crate::arch::{ArchParams, Family, LayerSpec, MlpKind, QkNorm, Rotary, SumOrder, WeightNames};
use crate::limits;
use crate::quant::QuantConfig;
use crate::vocab::{Activation, NormKind, QkvLayout, RopeStyle};
use crate::{Error, Result};

// ---- JSON field access with errors that name the field ----

struct Cfg<'a>(&'a Value);

impl<'a> Cfg<'a> {
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    fn usize_opt(&self, k: &str) -> Result<Option<usize>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => {
                let x = v.as_u64().ok_or_else(|| {
                    Error::bad_format(format!(
                        "config.json: {k} must be a non-negative integer, got {v}"
                    ))
                })?;
                let max = limits::config_field(k).ok_or_else(|| {
                    Error::unsupported(format!("config.json: {k} has no size limit in paradec"))
                })?;
                let x = usize::try_from(x).unwrap_or(usize::MAX);
                limits::check(&format!("config.json: {k}"), x, max).map(Some)
            }
        }
    }
    fn usize(&self, k: &str) -> Result<usize> {
        self.usize_opt(k)?
            .ok_or_else(|| Error::bad_format(format!("config.json: missing {k}")))
    }
    fn usize_any(&self, keys: &[&str]) -> Result<usize> {
        for k in keys {
            if let Some(v) = self.usize_opt(k)? {
                return Ok(v);
            }
        }
        Err(Error::bad_format(format!(
            "config.json: missing {}",
            keys.join(" / ")
        )))
    }
    fn f64_opt(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::bad_format(format!("config.json: {k} must be a number, got {v}"))
            }),
        }
    }
    /// A number that is finite as an f32 (what paradec computes with).
    fn f32_opt(&self, k: &str) -> Result<Option<f32>> {
        match self.f64_opt(k)? {
            None => Ok(None),
            Some(x) if (x as f32).is_finite() => Ok(Some(x as f32)),
            Some(x) => Err(Error::bad_format(format!(
                "config.json: {k} = {x} is not a finite 32-bit float"
            ))),
        }
    }
    /// A finite, positive number (`default` when absent).
    fn positive_f32(&self, k: &str, default: f32) -> Result<f32> {
        match self.f32_opt(k)? {
            None => Ok(default),
            Some(x) if x > 0.0 => Ok(x),
            Some(x) => Err(Error::bad_format(format!(
                "config.json: {k} = {x} must be positive"
            ))),
        }
    }
    fn bool_or(&self, k: &str, default: bool) -> Result<bool> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                Error::bad_format(format!("config.json: {k} must be true or false, got {v}"))
            }),
        }
    }
    fn str_opt(&self, k: &str) -> Result<Option<&'a str>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| {
                Error::bad_format(format!("config.json: {k} must be a string, got {v}"))
            }),
        }
    }
}

fn activation(cfg: &Cfg<'_>, key: &str, default: &str) -> Result<Activation> {
    let name = cfg.str_opt(key)?.unwrap_or(default);
    Activation::from_hf(name).ok_or_else(|| {
        Error::unsupported(format!(
            "config.json: {key} = {name:?} is not a supported activation"
        ))
    })
}

/// The rope settings for one layer type, merged from 5.x `rope_parameters` and 4.x fields.
struct RopeFields {
    theta: Option<f64>,
    partial: Option<f64>,
    scaling: Option<Value>,
}

fn rope_fields(cfg: &Cfg<'_>, layer_type: Option<&str>) -> Result<RopeFields> {
    let mut f = RopeFields {
        theta: None,
        partial: None,
        scaling: None,
    };
    if let Some(rp) = cfg.get("rope_parameters") {
        let obj = rp
            .as_object()
            .ok_or_else(|| Error::bad_format("config.json: rope_parameters must be an object"))?;
        // Keyed by layer type ({"full_attention": {...}, "sliding_attention": {...}}) or flat.
        let flat = obj.contains_key("rope_type") || obj.contains_key("rope_theta");
        let sub = if flat {
            Some(rp)
        } else {
            match layer_type {
                Some(lt) => obj.get(lt),
                None => obj.values().next(),
            }
        };
        if let Some(sub) = sub {
            let s = Cfg(sub);
            f.theta = s.f64_opt("rope_theta")?;
            f.partial = s.f64_opt("partial_rotary_factor")?;
            f.scaling = Some(sub.clone());
        }
    }
    Ok(f)
}

fn parse_scaling(v: Option<&Value>, max_positions: usize) -> Result<RopeScaling> {
    let Some(v) = v else {
        return Ok(RopeScaling::None);
    };
    let s = Cfg(v);
    let ty = match s.str_opt("rope_type")? {
        Some(t) => t,
        None => s.str_opt("type")?.unwrap_or("default"),
    };
    let factor = || -> Result<f32> {
        s.f32_opt("factor")?.ok_or_else(|| {
            Error::bad_format(format!("config.json: rope type {ty:?} needs a factor"))
        })
    };
    let original = s.usize_opt("original_max_position_embeddings")?;
    Ok(match ty {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "dynamic" => RopeScaling::Dynamic {
            factor: factor()?,
            original_max: original.unwrap_or(max_positions),
        },
        "yarn" => {
            // As transformers 5.x: the configured factor is used as is (5.x writes
            // original_max_position_embeddings = max_position_embeddings when absent).
            RopeScaling::Yarn {
                factor: factor()?,
                original_max: original.unwrap_or(max_positions),
                attention_factor: match s.get("attention_factor") {
                    None => None,
                    Some(_) => Some(s.positive_f32("attention_factor", 1.0)?),
                },
                beta_fast: s.positive_f32("beta_fast", 32.0)?,
                beta_slow: s.positive_f32("beta_slow", 1.0)?,
                mscale: s.f32_opt("mscale")?,
                mscale_all_dim: s.f32_opt("mscale_all_dim")?,
                truncate: s.get("truncate").and_then(|t| t.as_bool()).unwrap_or(true),
            }
        }
        other => {
            return Err(Error::unsupported(format!(
            "config.json: rope type {other:?} (rope_scaling / rope_parameters) is not supported; \
                 paradec runs default, linear, dynamic and yarn"
        )))
        }
    })
}

/// Builds one rope table: θ and width from 5.x fields first, then the family's 4.x fields.
fn rope_config(
    cfg: &Cfg<'_>,
    layer_type: Option<&str>,
    style: RopeStyle,
    head_dim: usize,
    legacy_theta_keys: &[&str],
    default_theta: f64,
    rot_dim_of: impl Fn(Option<f64>) -> Result<usize>,
    max_positions: usize,
) -> Result<RopeConfig> {
    let f = rope_fields(cfg, layer_type)?;
    let mut theta = f.theta;
    for k in legacy_theta_keys {
        if theta.is_none() {
            theta = cfg.f64_opt(k)?;
        }
    }
    let scaling = match (&f.scaling, cfg.get("rope_scaling")) {
        (Some(s), _) => parse_scaling(Some(s), max_positions)?,
        (None, legacy) => parse_scaling(legacy, max_positions)?,
    };
    let rc = RopeConfig {
        style,
        rot_dim: rot_dim_of(f.partial)?,
        theta: theta.unwrap_or(default_theta) as f32,
        scaling,
    };
    rc.validate(head_dim).map_err(|e| in_config("", e))?;
    Ok(rc)
}

/// A rotary-table check's error as a config.json format error.
fn in_config(what: &str, e: Error) -> Error {
    let m = match e {
        Error::BadInput(m) => m,
        other => other.to_string(),
    };
    Error::bad_format(format!("config.json: {what}{m}"))
}

fn partial_width(head_dim: usize, factor: f64, field: &str) -> Result<usize> {
    if !(factor > 0.0 && factor <= 1.0) {
        return Err(Error::bad_format(format!(
            "config.json: {field} = {factor} must be in (0, 1]"
        )));
    }
    // Python's int() truncates.
    Ok((head_dim as f64 * factor) as usize)
}

const GPTJ_NAMES: WeightNames = WeightNames {
    layer_prefix: "transformer.h",
    embed: "transformer.wte",
    final_norm: "transformer.ln_f",
    head: "lm_head",
    norm_attn: "ln_1",
    norm_mlp: None,
    qkv: &["attn.q_proj", "attn.k_proj", "attn.v_proj"],
    out_proj: "attn.out_proj",
    q_norm: None,
    k_norm: None,
    mlp: &["mlp.fc_in", "mlp.fc_out"],
};
const NEOX_NAMES: WeightNames = WeightNames {
    layer_prefix: "gpt_neox.layers",
    embed: "gpt_neox.embed_in",
    final_norm: "gpt_neox.final_layer_norm",
    head: "embed_out",
    norm_attn: "input_layernorm",
    norm_mlp: Some("post_attention_layernorm"),
    qkv: &["attention.query_key_value"],
    out_proj: "attention.dense",
    q_norm: None,
    k_norm: None,
    mlp: &["mlp.dense_h_to_4h", "mlp.dense_4h_to_h"],
};
const PHI_NAMES: WeightNames = WeightNames {
    layer_prefix: "model.layers",
    embed: "model.embed_tokens",
    final_norm: "model.final_layernorm",
    head: "lm_head",
    norm_attn: "input_layernorm",
    norm_mlp: None,
    qkv: &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    out_proj: "self_attn.dense",
    q_norm: Some("self_attn.q_layernorm"),
    k_norm: Some("self_attn.k_layernorm"),
    mlp: &["mlp.fc1", "mlp.fc2"],
};
const FALCON_NAMES: WeightNames = WeightNames {
    layer_prefix: "transformer.h",
    embed: "transformer.word_embeddings",
    final_norm: "transformer.ln_f",
    head: "lm_head",
    norm_attn: "input_layernorm",
    norm_mlp: None,
    qkv: &["self_attention.query_key_value"],
    out_proj: "self_attention.dense",
    q_norm: None,
    k_norm: None,
    mlp: &["mlp.dense_h_to_4h", "mlp.dense_4h_to_h"],
};
const COHERE_NAMES: WeightNames = WeightNames {
    layer_prefix: "model.layers",
    embed: "model.embed_tokens",
    final_norm: "model.norm",
    head: "lm_head",
    norm_attn: "input_layernorm",
    norm_mlp: None,
    qkv: &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    out_proj: "self_attn.o_proj",
    q_norm: Some("self_attn.q_norm"),
    k_norm: Some("self_attn.k_norm"),
    mlp: &["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
};

fn check_heads(hidden: usize, heads: usize, kv_heads: usize) -> Result<usize> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Error::bad_format(format!(
            "config.json: hidden size {hidden} is not a multiple of num_attention_heads {heads}"
        )));
    }
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(Error::bad_format(format!(
            "config.json: num_attention_heads {heads} is not a multiple of the kv head count {kv_heads}"
        )));
    }
    Ok(hidden / heads)
}

impl ArchParams {
    /// Reads a model directory's config.json.
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = dir.as_ref().join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let mut arch = Self::from_json_str(&text)?;
        if arch.quant.is_none() {
            // quantize_config.json, or the tensor names, when config.json says nothing.
            arch.quant = QuantConfig::from_model_dir(dir.as_ref())?;
        }
        Ok(arch)
    }

    /// Parses a config.json text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::bad_format(format!("config.json: {e}")))?;
        Self::from_json(&v)
    }

    /// Reads a parsed config.json.
    pub fn from_json(v: &Value) -> Result<Self> {
        if !v.is_object() {
            return Err(Error::bad_format(
                "config.json: top level must be an object",
            ));
        }
        let c = Cfg(v);
        let model_type = c
            .str_opt("model_type")?
            .ok_or_else(|| Error::bad_format("config.json: missing model_type"))?;
        let family = Family::from_model_type(model_type)?;
        let arch = match family {
            Family::GptJ => Self::gptj(&c)?,
            Family::GptNeoX => Self::neox(&c)?,
            Family::Phi => Self::phi(&c)?,
            Family::Falcon => Self::falcon(&c)?,
            Family::Cohere | Family::Cohere2 => Self::cohere(&c, family)?,
        };
        let mut arch = arch;
        arch.quant = QuantConfig::from_config_json(v)?;
        if arch.vocab == 0 || arch.num_layers == 0 || arch.intermediate == 0 || arch.hidden == 0 {
            return Err(Error::bad_format(format!(
                "config.json: vocab_size ({}), layer count ({}), MLP width ({}) and hidden size ({}) must be positive",
                arch.vocab, arch.num_layers, arch.intermediate, arch.hidden
            )));
        }
        // Derived sizes (hidden / heads, the q/k/v width) are bounded like the fields.
        limits::check("config.json: head_dim", arch.head_dim, limits::HEAD_DIM)?;
        limits::check(
            "config.json: (num_attention_heads + 2 · kv heads) · head_dim",
            arch.qkv_width(),
            limits::ATTN_WIDTH,
        )?;
        limits::check(
            "config.json: MLP width",
            arch.intermediate,
            limits::INTERMEDIATE,
        )?;
        Ok(arch)
    }

    fn uniform_layers(n: usize) -> Vec<LayerSpec> {
        vec![
            LayerSpec {
                sliding_window: 0,
                rope_index: 0
            };
            n
        ]
    }

    fn gptj(c: &Cfg<'_>) -> Result<Self> {
        let hidden = c.usize_any(&["n_embd", "hidden_size"])?;
        let heads = c.usize_any(&["n_head", "num_attention_heads"])?;
        let layers = c.usize_any(&["n_layer", "num_hidden_layers"])?;
        let head_dim = check_heads(hidden, heads, heads)?;
        let rot_dim = c.usize_opt("rotary_dim")?.unwrap_or(head_dim);
        let max_positions = c.usize_any(&["n_positions", "max_position_embeddings"])?;
        // GPT-J's sinusoidal table uses base 10000, whatever the config says.
        let rope = RopeConfig {
            style: RopeStyle::Interleaved,
            rot_dim,
            theta: 10000.0,
            scaling: RopeScaling::None,
        };
        rope.validate(head_dim)
            .map_err(|e| in_config("rotary_dim: ", e))?;
        Ok(ArchParams {
            family: Family::GptJ,
            hidden,
            heads,
            kv_heads: heads,
            head_dim,
            intermediate: c.usize_opt("n_inner")?.unwrap_or(4 * hidden),
            vocab: c.usize("vocab_size")?,
            num_layers: layers,
            norm: NormKind::LayerNorm,
            norm_bias: true,
            norm_eps: c.positive_f32("layer_norm_epsilon", 1e-5)?,
            two_norms: false,
            qkv_layout: QkvLayout::Separate,
            qkv_bias: false,
            out_bias: false,
            mlp_bias: true,
            mlp: MlpKind::Plain(activation(c, "activation_function", "gelu_new")?),
            qk_norm: QkNorm::None,
            rotary: vec![Rotary::Rope(rope)],
            layers: Self::uniform_layers(layers),
            sum_order: SumOrder::BranchesFirst,
            tie_embeddings: c.bool_or("tie_word_embeddings", false)?,
            head_bias: true,
            logit_scale: 1.0,
            max_positions,
            names: GPTJ_NAMES,
            quant: None,
        })
    }

    fn neox(c: &Cfg<'_>) -> Result<Self> {
        if !c.bool_or("use_parallel_residual", true)? {
            return Err(Error::unsupported(
                "config.json: use_parallel_residual = false is a sequential block; paradec runs parallel blocks only",
            ));
        }
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let layers = c.usize("num_hidden_layers")?;
        let head_dim = check_heads(hidden, heads, heads)?;
        let max_positions = c.usize_opt("max_position_embeddings")?.unwrap_or(2048);
        let legacy_pct = c.f64_opt("rotary_pct")?;
        let rope = rope_config(
            c,
            None,
            RopeStyle::Half,
            head_dim,
            // 4.x NeoX reads rotary_emb_base only.
            &["rotary_emb_base"],
            10000.0,
            |p| {
                partial_width(
                    head_dim,
                    p.or(legacy_pct).unwrap_or(0.25),
                    "rotary_pct / partial_rotary_factor",
                )
            },
            max_positions,
        )?;
        let bias = c.bool_or("attention_bias", true)?;
        Ok(ArchParams {
            family: Family::GptNeoX,
            hidden,
            heads,
            kv_heads: heads,
            head_dim,
            intermediate: c.usize("intermediate_size")?,
            vocab: c.usize("vocab_size")?,
            num_layers: layers,
            norm: NormKind::LayerNorm,
            norm_bias: true,
            norm_eps: c.positive_f32("layer_norm_eps", 1e-5)?,
            two_norms: true,
            qkv_layout: QkvLayout::FusedPerHead,
            qkv_bias: bias,
            out_bias: bias,
            mlp_bias: true,
            mlp: MlpKind::Plain(activation(c, "hidden_act", "gelu")?),
            qk_norm: QkNorm::None,
            rotary: vec![Rotary::Rope(rope)],
            layers: Self::uniform_layers(layers),
            sum_order: SumOrder::BranchesFirst,
            tie_embeddings: c.bool_or("tie_word_embeddings", false)?,
            head_bias: false,
            logit_scale: 1.0,
            max_positions,
            names: NEOX_NAMES,
            quant: None,
        })
    }

    fn phi(c: &Cfg<'_>) -> Result<Self> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let kv_heads = c.usize_opt("num_key_value_heads")?.unwrap_or(heads);
        let layers = c.usize("num_hidden_layers")?;
        let head_dim = check_heads(hidden, heads, kv_heads)?;
        let max_positions = c.usize_opt("max_position_embeddings")?.unwrap_or(2048);
        let legacy = c.f64_opt("partial_rotary_factor")?;
        let rope = rope_config(
            c,
            None,
            RopeStyle::Half,
            head_dim,
            &["rope_theta"],
            10000.0,
            |p| {
                partial_width(
                    head_dim,
                    p.or(legacy).unwrap_or(0.5),
                    "partial_rotary_factor",
                )
            },
            max_positions,
        )?;
        let qk = c.bool_or("qk_layernorm", false)?;
        Ok(ArchParams {
            family: Family::Phi,
            hidden,
            heads,
            kv_heads,
            head_dim,
            intermediate: c.usize("intermediate_size")?,
            vocab: c.usize("vocab_size")?,
            num_layers: layers,
            norm: NormKind::LayerNorm,
            norm_bias: true,
            norm_eps: c.positive_f32("layer_norm_eps", 1e-5)?,
            two_norms: false,
            qkv_layout: QkvLayout::Separate,
            qkv_bias: true,
            out_bias: true,
            mlp_bias: true,
            mlp: MlpKind::Plain(activation(c, "hidden_act", "gelu_new")?),
            qk_norm: if qk {
                QkNorm::SharedLayerNorm
            } else {
                QkNorm::None
            },
            rotary: vec![Rotary::Rope(rope)],
            layers: Self::uniform_layers(layers),
            sum_order: SumOrder::BranchesFirst,
            tie_embeddings: c.bool_or("tie_word_embeddings", false)?,
            head_bias: true,
            logit_scale: 1.0,
            max_positions,
            names: PHI_NAMES,
            quant: None,
        })
    }

    fn falcon(c: &Cfg<'_>) -> Result<Self> {
        if c.bool_or("alibi", false)? {
            return Err(Error::unsupported("config.json: alibi = true (ALiBi Falcon) is not supported; paradec runs rotary Falcon"));
        }
        if !c.bool_or("parallel_attn", true)? {
            return Err(Error::unsupported(
                "config.json: parallel_attn = false is a sequential block; paradec runs parallel blocks only",
            ));
        }
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize_any(&["num_attention_heads", "n_head"])?;
        let layers = c.usize_any(&["num_hidden_layers", "n_layer"])?;
        let new_arch = c.bool_or("new_decoder_architecture", false)?;
        let multi_query = c.bool_or("multi_query", true)?;
        let (kv_heads, layout) = if new_arch {
            let g = c.usize_opt("num_kv_heads")?.unwrap_or(heads);
            (g, QkvLayout::FusedGrouped)
        } else if multi_query {
            (1, QkvLayout::FusedQueriesFirst)
        } else {
            (heads, QkvLayout::FusedPerHead)
        };
        let head_dim = check_heads(hidden, heads, kv_heads)?;
        let num_ln = c.usize_opt("num_ln_in_parallel_attn")?;
        let two_norms = match (new_arch, num_ln) {
            (true, None | Some(2)) => true,
            (true, Some(1)) | (false, None | Some(1)) => false,
            (_, Some(n)) => {
                return Err(Error::unsupported(format!(
                    "config.json: num_ln_in_parallel_attn = {n} with new_decoder_architecture = {new_arch} \
                     (HF runs 1 or 2 with the new architecture, 1 without)"
                )))
            }
        };
        let max_positions = c.usize_opt("max_position_embeddings")?.unwrap_or(2048);
        let rope = rope_config(
            c,
            None,
            RopeStyle::Half,
            head_dim,
            &["rope_theta"],
            10000.0,
            |_| Ok(head_dim),
            max_positions,
        )?;
        let bias = c.bool_or("bias", false)?;
        let mut names = FALCON_NAMES;
        if two_norms {
            names.norm_attn = "ln_attn";
            names.norm_mlp = Some("ln_mlp");
        }
        Ok(ArchParams {
            family: Family::Falcon,
            hidden,
            heads,
            kv_heads,
            head_dim,
            intermediate: c.usize_opt("ffn_hidden_size")?.unwrap_or(4 * hidden),
            vocab: c.usize("vocab_size")?,
            num_layers: layers,
            norm: NormKind::LayerNorm,
            norm_bias: true,
            norm_eps: c.positive_f32("layer_norm_epsilon", 1e-5)?,
            two_norms,
            qkv_layout: layout,
            qkv_bias: bias,
            out_bias: bias,
            mlp_bias: bias,
            mlp: MlpKind::Plain(activation(c, "activation", "gelu")?),
            qk_norm: QkNorm::None,
            rotary: vec![Rotary::Rope(rope)],
            layers: Self::uniform_layers(layers),
            sum_order: SumOrder::BranchesFirst,
            tie_embeddings: c.bool_or("tie_word_embeddings", true)?,
            head_bias: false,
            logit_scale: 1.0,
            max_positions,
            names,
            quant: None,
        })
    }

    fn cohere(c: &Cfg<'_>, family: Family) -> Result<Self> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let kv_heads = c.usize_opt("num_key_value_heads")?.unwrap_or(heads);
        let layers = c.usize("num_hidden_layers")?;
        // Cohere2 configs carry head_dim; HF uses it over hidden / heads when present.
        let head_dim = match c.usize_opt("head_dim")? {
            Some(d) if d > 0 && heads > 0 && kv_heads > 0 && heads % kv_heads == 0 => d,
            Some(d) => {
                return Err(Error::bad_format(format!(
                    "config.json: head_dim {d} with {heads} heads over {kv_heads} kv heads"
                )))
            }
            None => check_heads(hidden, heads, kv_heads)?,
        };
        let max_positions = c.usize_opt("max_position_embeddings")?.unwrap_or(8192);
        let default_theta = if family == Family::Cohere {
            10000.0
        } else {
            50000.0
        };
        let mut specs = Self::uniform_layers(layers);
        let mut rotary = Vec::new();
        let qk_norm = if family == Family::Cohere && c.bool_or("use_qk_norm", false)? {
            QkNorm::PerHead
        } else {
            QkNorm::None
        };
        if family == Family::Cohere2 {
            let window = c.usize("sliding_window")?;
            if window == 0 {
                return Err(Error::bad_format(
                    "config.json: sliding_window must be positive",
                ));
            }
            // Layer types: `layer_types` (5.x) or every `sliding_window_pattern`-th layer global.
            let types: Vec<String> = match c.get("layer_types") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|t| {
                        t.as_str().map(str::to_string).ok_or_else(|| {
                            Error::bad_format("config.json: layer_types entries must be strings")
                        })
                    })
                    .collect::<Result<_>>()?,
                Some(other) => {
                    return Err(Error::bad_format(format!(
                        "config.json: layer_types must be a list, got {other}"
                    )))
                }
                None => {
                    let pattern = c.usize_opt("sliding_window_pattern")?.unwrap_or(4);
                    if pattern == 0 {
                        return Err(Error::bad_format(
                            "config.json: sliding_window_pattern must be positive",
                        ));
                    }
                    (0..layers)
                        .map(|i| {
                            if (i + 1) % pattern == 0 {
                                "full_attention"
                            } else {
                                "sliding_attention"
                            }
                            .to_string()
                        })
                        .collect()
                }
            };
            if types.len() != layers {
                return Err(Error::bad_format(format!(
                    "config.json: layer_types has {} entries for {layers} layers",
                    types.len()
                )));
            }
            let rope = rope_config(
                c,
                Some("sliding_attention"),
                RopeStyle::Interleaved,
                head_dim,
                &["rope_theta"],
                default_theta,
                |_| Ok(head_dim),
                max_positions,
            )?;
            rotary.push(Rotary::Rope(rope));
            rotary.push(Rotary::None);
            for (spec, t) in specs.iter_mut().zip(&types) {
                *spec = match t.as_str() {
                    "sliding_attention" => LayerSpec {
                        sliding_window: window,
                        rope_index: 0,
                    },
                    "full_attention" => LayerSpec {
                        sliding_window: 0,
                        rope_index: 1,
                    },
                    other => {
                        return Err(Error::unsupported(format!(
                            "config.json: layer_types entry {other:?}"
                        )));
                    }
                };
            }
        } else {
            let rope = rope_config(
                c,
                None,
                RopeStyle::Interleaved,
                head_dim,
                &["rope_theta"],
                default_theta,
                |_| Ok(head_dim),
                max_positions,
            )?;
            rotary.push(Rotary::Rope(rope));
        }
        let bias = c.bool_or("attention_bias", false)?;
        let mut names = COHERE_NAMES;
        if qk_norm == QkNorm::None {
            names.q_norm = None;
            names.k_norm = None;
        }
        Ok(ArchParams {
            family,
            hidden,
            heads,
            kv_heads,
            head_dim,
            intermediate: c.usize("intermediate_size")?,
            vocab: c.usize("vocab_size")?,
            num_layers: layers,
            norm: NormKind::LayerNorm,
            norm_bias: false,
            norm_eps: c.positive_f32("layer_norm_eps", 1e-5)?,
            two_norms: false,
            qkv_layout: QkvLayout::Separate,
            qkv_bias: bias,
            out_bias: bias,
            mlp_bias: false,
            mlp: MlpKind::Gated(activation(c, "hidden_act", "silu")?),
            qk_norm,
            rotary,
            layers: specs,
            sum_order: SumOrder::ResidualFirst,
            tie_embeddings: c.bool_or("tie_word_embeddings", true)?,
            head_bias: false,
            logit_scale: c.positive_f32("logit_scale", 0.0625)?,
            max_positions,
            names,
            quant: None,
        })
    }
}
