//! `ArchParams`: everything a parallel decoder needs to know about a model — sizes, norm, QKV
//! layout, MLP, rotary tables, the per-layer window and rotary choice, weight names. Layers,
//! the KV cache and the workspace read it; `model::config` fills it from an HF config.json.

pub mod rope;

use crate::quant::QuantConfig;
use crate::vocab::{Activation, NormKind, QkvLayout};
use crate::{Error, Result};
use rope::RopeConfig;

/// The supported model families (HF `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    GptJ,
    GptNeoX,
    Phi,
    Falcon,
    Cohere,
    Cohere2,
}

impl Family {
    pub fn from_model_type(t: &str) -> Result<Self> {
        Ok(match t {
            "gptj" => Family::GptJ,
            "gpt_neox" => Family::GptNeoX,
            "phi" => Family::Phi,
            "falcon" => Family::Falcon,
            "cohere" => Family::Cohere,
            "cohere2" => Family::Cohere2,
            other => {
                return Err(Error::unsupported(format!(
                    "model_type {other:?}: paradec runs gptj, gpt_neox, phi, falcon, cohere and cohere2"
                )))
            }
        })
    }
}

/// Normalization of q and k before rotary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// Phi: one LayerNorm over head_dim with weight and bias, shared by all heads.
    SharedLayerNorm,
    /// Cohere: mean-subtracting LayerNorm over head_dim with a weight per head, no bias.
    PerHead,
}

/// The MLP branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(act(up(x)))`.
    Plain(Activation),
    /// `down(act(gate(x)) · up(x))`.
    Gated(Activation),
}

/// The order HF adds the branches and the residual (fp32 sums are not associative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SumOrder {
    /// (attn + mlp) + x — GPT-J, NeoX, Phi, Falcon.
    BranchesFirst,
    /// (x + attn) + mlp — Cohere, Cohere2.
    ResidualFirst,
}

/// One rotary choice of a model: a table, or none (Cohere2's global layers).
#[derive(Debug, Clone, PartialEq)]
pub enum Rotary {
    None,
    Rope(RopeConfig),
}

/// What the loader derives for each layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// Keys a query sees counting itself; 0 = unlimited.
    pub sliding_window: usize,
    /// Index into `ArchParams::rotary`.
    pub rope_index: usize,
}

/// Weight names of one family, relative to the model root.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightNames {
    pub layer_prefix: &'static str,
    pub embed: &'static str,
    pub final_norm: &'static str,
    pub head: &'static str,
    pub norm_attn: &'static str,
    pub norm_mlp: Option<&'static str>,
    /// q, k, v (separate) or the single fused name.
    pub qkv: &'static [&'static str],
    pub out_proj: &'static str,
    pub q_norm: Option<&'static str>,
    pub k_norm: Option<&'static str>,
    /// Plain MLP: [fc_in, fc_out]; gated: [gate, up, down].
    pub mlp: &'static [&'static str],
}

/// Architecture parameters of a parallel-residual model.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchParams {
    pub family: Family,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub num_layers: usize,
    pub norm: NormKind,
    pub norm_bias: bool,
    pub norm_eps: f32,
    pub two_norms: bool,
    pub qkv_layout: QkvLayout,
    pub qkv_bias: bool,
    pub out_bias: bool,
    pub mlp_bias: bool,
    pub mlp: MlpKind,
    pub qk_norm: QkNorm,
    pub rotary: Vec<Rotary>,
    pub layers: Vec<LayerSpec>,
    pub sum_order: SumOrder,
    pub tie_embeddings: bool,
    pub head_bias: bool,
    pub logit_scale: f32,
    pub max_positions: usize,
    pub names: WeightNames,
    /// The checkpoint's quantization (GPTQ or EXL2), if any.
    pub quant: Option<QuantConfig>,
}

impl ArchParams {
    /// Output features of the q/k/v projection(s) together.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
}
