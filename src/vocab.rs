//! The op vocabulary: the enums and argument structs that name what an op does — norm kind,
//! activation, rotary pairing and arguments, attention shape and masking, where new K/V go in a
//! cache, the fused QKV layouts. `ops`, both backends, the layers and the C ABI all speak it;
//! it imports nothing but `tensor`, so no backend depends on another's types.

use crate::tensor::Tensor;

/// Which normalization a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// Mean-subtracting LayerNorm: (x − mean) / √(var + eps) · w + b.
    LayerNorm,
    /// RMSNorm: x / √(mean(x²) + eps) · w.
    RmsNorm,
}

/// A norm's affine tensors (each of the row's width, or absent).
#[derive(Debug, Clone, Copy)]
pub struct Affine<'a> {
    /// Scale per column, or none.
    pub weight: Option<&'a Tensor>,
    /// Shift per column, or none.
    pub bias: Option<&'a Tensor>,
}

impl Affine<'_> {
    /// Neither weight nor bias.
    pub const NONE: Affine<'static> = Affine {
        weight: None,
        bias: None,
    };
}

/// The activation of a non-gated MLP (or the gate of a gated one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU: 0.5·x·(1 + erf(x/√2)) (HF "gelu").
    GeluErf,
    /// Tanh GELU: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (HF "gelu_new", "gelu_pytorch_tanh").
    GeluNew,
    /// HF "gelu_fast": 0.5·x·(1 + tanh(x·0.7978845608·(1 + 0.044715·x²))).
    GeluFast,
    /// SiLU: x·σ(x).
    Silu,
    /// ReLU.
    Relu,
}

impl Activation {
    /// Parses an HF `hidden_act` name.
    pub fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluNew,
            "gelu_fast" => Activation::GeluFast,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }
}

/// How rotary pairs the features of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2j, 2j+1), angle j (GPT-J, Cohere).
    Interleaved,
    /// Pairs (j, j + r/2), angle j, where r is the rotary width (NeoX, Phi, Falcon).
    Half,
}

/// What a rotary application needs: pairing, width, per-pair inverse frequencies (r/2 of them)
/// and the factor cos and sin are scaled by (YaRN's attention factor; 1 otherwise).
#[derive(Debug, Clone, Copy)]
pub struct RotaryArgs<'a> {
    /// How features are paired.
    pub style: RopeStyle,
    /// Rotated features per head (even, ≤ head_dim).
    pub rot_dim: usize,
    /// rot_dim / 2 inverse frequencies.
    pub inv_freq: &'a [f32],
    /// The factor on cos and sin.
    pub attn_factor: f32,
}

/// Where new tokens go in a KV cache laid out [batch, capacity, kv_heads·head_dim]: sequence b's
/// query token t lands in slot `past_len[b] + t`.
#[derive(Debug, Clone, Copy)]
pub struct CacheSlots<'a> {
    /// Sequences.
    pub batch: usize,
    /// New tokens per sequence.
    pub q_len: usize,
    /// Slots per sequence in the cache.
    pub capacity: usize,
    /// Tokens each sequence already holds.
    pub past_len: &'a [usize],
}

/// Sizes of one attention call. The cache is [batch, capacity, kv_heads, head_dim]; q and the
/// output are [batch, q_len, heads, head_dim]. `heads` is a multiple of `kv_heads`; query head
/// h reads kv head h / (heads / kv_heads), as HF's `repeat_kv` arranges.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Sequences.
    pub batch: usize,
    /// Query tokens per sequence.
    pub q_len: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// Slots per sequence in the cache.
    pub capacity: usize,
}

/// Masking of one call: sequence b's query t sits in cache slot p = `past_len[b]` + t and sees
/// slots j with j ≤ p and, when `window` > 0, p − window < j. `mask`, when given, is added to
/// the scores: `mask[b * mask_stride + j]` (0 to attend, −∞ or a large negative to hide).
#[derive(Debug, Clone, Copy)]
pub struct AttnMasking<'a> {
    /// Tokens each sequence held before this call.
    pub past_len: &'a [usize],
    /// Keys a query sees counting itself; 0 for no window.
    pub window: usize,
    /// Additive mask over cache slots, [batch, mask_stride], or none.
    pub mask: Option<&'a [f32]>,
    /// Values per mask row.
    pub mask_stride: usize,
}

/// How the fused `query_key_value` output is laid out (features of one token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkvLayout {
    /// Separate q, k, v projections.
    Separate,
    /// Per head [q_h | k_h | v_h] (GPT-NeoX, Falcon multi-head).
    FusedPerHead,
    /// [all q heads | k | v] (Falcon-7B multi-query).
    FusedQueriesFirst,
    /// Per kv group [q heads of the group | k | v] (Falcon new architecture).
    FusedGrouped,
}

/// The kernel a linear runs on a device: CUDA-core GEMV (small M, bandwidth-bound), the
/// tensor-core tiles (mma.sync, or wgmma on Hopper), or the tensor-core small-M path of 4-bit
/// weights. Chosen by
/// `ops::select_linear`; tests force each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearPath {
    /// CUDA-core GEMV for small M.
    Gemv,
    /// Tensor-core (mma.sync) tiles.
    Mma,
    /// Uniform 4-bit quantized weights at M ≤ 32: tensor cores with the weights as the 16-row
    /// operand, streamed once (K split across blocks). Where it does not apply (other widths,
    /// larger M, dense weights) the launcher makes its own choice.
    Small,
    /// `Small` on its lean loop (x staged once in shared memory, weights streamed in
    /// registers) where x fits it (M ≤ 32, grouped and summed launches M ≤ 16, and a short
    /// enough share of K), else `Small`'s ring loop. `select_linear`'s choice up to 16 rows,
    /// and at 17–32 where x fits and the warpgroup MMA does not run or loses.
    SmallLean,
    /// The lean loop's arithmetic on one resident grid (the plan's `split` is its blocks) that
    /// shares the call's work evenly — column blocks × tiles of K — instead of a grid of column
    /// blocks × K splits: one wave, each block's fixed costs paid once. M ≤ 16; elsewhere
    /// `SmallLean` with the split as its K split.
    SmallStream,
    /// Dense weights: the vendor GEMM (cuBLASLt, loaded at run time; `Mma` where it is absent
    /// or declines the shape). Quantized weights: the launcher's own choice. Not yet chosen by
    /// `select_linear`: it waits for its measurements on a GPU.
    Vendor,
    /// Quantized weights of one width (2 … 8 bits) on Hopper (an sm_90a build, compute
    /// capability 9.0): the warpgroup MMA (wgmma), the weights decoded once per block into registers as
    /// the 64-row operand, x read from shared memory. Any M; where it does not apply (other
    /// mixed widths, dense weights, another chip) the launcher runs `Mma`. `select_linear`'s choice
    /// for quantized weights above 8 rows where the small-M path does not apply, and for
    /// uniform 4-bit weights at 17–32 rows where it runs (`select_linear_with`), grouped calls
    /// included (one grid for all).
    Wgmma,
}
