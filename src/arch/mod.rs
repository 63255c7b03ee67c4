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
    /// GPT-J (`gptj`).
    GptJ,
    /// GPT-NeoX / Pythia (`gpt_neox`).
    GptNeoX,
    /// Phi-1, 1.5 and 2 (`phi`).
    Phi,
    /// Falcon (`falcon`).
    Falcon,
    /// Cohere / Command-R (`cohere`).
    Cohere,
    /// Cohere2 (`cohere2`).
    Cohere2,
}

impl Family {
    /// The family of an HF `model_type`; any other type is `Unsupported`, naming it.
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
    /// No q/k norm.
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
    /// No rotary: Cohere2's global layers.
    None,
    /// A rotary table.
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
    /// The prefix of layer i's tensors, before `.{i}` (e.g. `model.layers`).
    pub layer_prefix: &'static str,
    /// The token embedding module.
    pub embed: &'static str,
    /// The final norm.
    pub final_norm: &'static str,
    /// The LM head (unused when tied).
    pub head: &'static str,
    /// The norm feeding attention (and the MLP, with one norm).
    pub norm_attn: &'static str,
    /// The MLP's norm, for two-norm blocks.
    pub norm_mlp: Option<&'static str>,
    /// q, k, v (separate) or the single fused name.
    pub qkv: &'static [&'static str],
    /// The attention output projection.
    pub out_proj: &'static str,
    /// The q norm, where the family has one.
    pub q_norm: Option<&'static str>,
    /// The k norm, where the family has one.
    pub k_norm: Option<&'static str>,
    /// Plain MLP: [fc_in, fc_out]; gated: [gate, up, down].
    pub mlp: &'static [&'static str],
}

/// Architecture parameters of a parallel-residual model.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchParams {
    /// The model family.
    pub family: Family,
    /// Hidden size.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (equal to `heads` for multi-head attention, 1 for multi-query).
    pub kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// Width of the MLP's inner layer.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// The norm kind of every norm in the block.
    pub norm: NormKind,
    /// Whether the block norms have a bias.
    pub norm_bias: bool,
    /// Epsilon of the block norms (and q/k norms).
    pub norm_eps: f32,
    /// Two norms over the same input (attention and MLP), instead of one.
    pub two_norms: bool,
    /// How q, k and v come out of the projection(s).
    pub qkv_layout: QkvLayout,
    /// Whether the q/k/v projections have a bias.
    pub qkv_bias: bool,
    /// Whether the attention output projection has a bias.
    pub out_bias: bool,
    /// Whether the MLP projections have biases.
    pub mlp_bias: bool,
    /// The MLP branch and its activation.
    pub mlp: MlpKind,
    /// The q/k norm, if any.
    pub qk_norm: QkNorm,
    /// The model's rotary choices; each layer picks one by `LayerSpec::rope_index`.
    pub rotary: Vec<Rotary>,
    /// Per-layer window and rotary choice, one entry per layer.
    pub layers: Vec<LayerSpec>,
    /// The order the branches and the residual are summed.
    pub sum_order: SumOrder,
    /// Whether the LM head is the embedding matrix.
    pub tie_embeddings: bool,
    /// Whether the LM head has a bias.
    pub head_bias: bool,
    /// Factor on the logits (1 for none).
    pub logit_scale: f32,
    /// `max_position_embeddings` (the longest position the model was made for).
    pub max_positions: usize,
    /// The family's tensor names.
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
