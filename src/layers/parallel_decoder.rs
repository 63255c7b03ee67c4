//! `ParallelDecoder`: one parallel-residual block, `x += Attn(norm_a(x)) + Mlp(norm_m(x))`,
//! for every supported family (docs/families.md says how HF computes each).

use crate::arch::{ArchParams, MlpKind, QkNorm, Rotary, SumOrder};
use crate::cache::KvCache;
use crate::kv_quant::{BlockTable, PagedTable};
use crate::layers::linear::Linear;
use crate::layers::lora::Lora;
use crate::layers::norm::Norm;
use crate::layers::params::AttnParams;
use crate::ops;
use crate::tensor::{DType, Device, Tensor};
use crate::vocab::{AttnMasking, AttnShape, CacheSlots, NormKind, QkvLayout, RotaryArgs};
use crate::workspace::{same_pages, Workspace};
use crate::{Error, Result, Stream, Weights};

/// The q/k/v projection(s): three Linears, or one fused Linear whose output is split.
/// (One per layer: the size difference between the variants does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum QkvProj {
    /// Three projections.
    Separate {
        /// The query projection.
        q: Linear,
        /// The key projection.
        k: Linear,
        /// The value projection.
        v: Linear,
    },
    /// One projection whose output `layout` splits into q, k and v.
    Fused {
        /// The fused projection.
        qkv: Linear,
        /// How its output features are arranged.
        layout: QkvLayout,
    },
}

/// The MLP branch.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Mlp {
    /// `fc_out(act(fc_in(x)))`.
    Plain {
        /// hidden → intermediate.
        fc_in: Linear,
        /// intermediate → hidden.
        fc_out: Linear,
    },
    /// `down(act(gate(x)) · up(x))`.
    Gated {
        /// hidden → intermediate, through the activation.
        gate: Linear,
        /// hidden → intermediate.
        up: Linear,
        /// intermediate → hidden.
        down: Linear,
    },
}

/// What `forward_interm` returns, each [tokens, features] (tokens = batch · q_len).
#[derive(Debug)]
pub struct Intermediates {
    /// The norm output feeding attention (and the MLP, for one-norm families).
    pub post_norm: Tensor,
    /// The MLP's norm output, for two-norm families.
    pub post_norm_mlp: Option<Tensor>,
    /// Attention context before the output projection, heads concatenated.
    pub attn_output: Tensor,
    /// The input of the MLP's last projection.
    pub pre_down: Tensor,
    /// The attention branch's output (bias included, no residual).
    pub hidden_states_attn: Tensor,
    /// The MLP branch's output (bias included, no residual).
    pub hidden_states_mlp: Tensor,
    /// The block's output.
    pub hidden_states: Tensor,
}

#[derive(Debug)]
/// One parallel-residual decoder layer (see the module docs): norms, projections, rotary, attention and MLP, on the CPU or a device.
pub struct ParallelDecoder {
    arch: ArchParams,
    layer_idx: usize,
    sliding_window: usize,
    /// Index of `rotary` in the model's rotary tables (the staged step's frequencies).
    rope_index: usize,
    rotary: Rotary,
    norm_attn: Norm,
    norm_mlp: Option<Norm>,
    qkv: QkvProj,
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    o_proj: Linear,
    mlp: Mlp,
    device: Device,
    /// The dtype the weights were placed in (`load_as`); on the CPU, as loaded (the CPU
    /// reference computes in f32 whatever the storage).
    dtype: DType,
    /// On a device: the output and down projections' biases summed (f32, rounded once to the
    /// compute dtype), or none where neither has one — the bias of their one summed launch.
    residual_bias: Option<Tensor>,
}

impl ParallelDecoder {
    /// Builds layer `layer_idx` from the tensors under `key` (e.g. "model.layers.3").
    /// `sliding_window` (0 = none) and `rope_index` (into `params.rotary`) are what the model
    /// loader derives from config.json.
    pub fn new(
        params: &ArchParams,
        weights: &Weights,
        key: &str,
        layer_idx: usize,
        sliding_window: usize,
        rope_index: usize,
    ) -> Result<Self> {
        let a = params;
        let rotary = a.rotary.get(rope_index).cloned().ok_or_else(|| {
            Error::bad_input(format!(
                "rope_index {rope_index}: the model has {} rotary tables",
                a.rotary.len()
            ))
        })?;
        let n = &a.names;
        let name = |s: &str| format!("{key}.{s}");
        let norm = |s: &str| {
            Norm::load(
                weights,
                &name(s),
                a.norm,
                &[a.hidden],
                a.norm_bias,
                a.norm_eps,
            )
        };
        let norm_attn = norm(n.norm_attn)?;
        let norm_mlp = match (a.two_norms, n.norm_mlp) {
            (true, Some(m)) => Some(norm(m)?),
            _ => None,
        };
        let (qd, kvd) = (a.heads * a.head_dim, a.kv_heads * a.head_dim);
        let lin = |s: &str, in_f: usize, out_f: usize, bias: bool| {
            Linear::load(weights, &name(s), in_f, out_f, bias, a.quant.as_ref())
        };
        let qkv = if a.qkv_layout == QkvLayout::Separate {
            QkvProj::Separate {
                q: lin(n.qkv[0], a.hidden, qd, a.qkv_bias)?,
                k: lin(n.qkv[1], a.hidden, kvd, a.qkv_bias)?,
                v: lin(n.qkv[2], a.hidden, kvd, a.qkv_bias)?,
            }
        } else {
            QkvProj::Fused {
                qkv: lin(n.qkv[0], a.hidden, a.qkv_width(), a.qkv_bias)?,
                layout: a.qkv_layout,
            }
        };
        // q/k norms are mean-subtracting LayerNorms over head_dim (Phi: shared, with bias;
        // Cohere: one weight row per head).
        let head_norm = |s: &str, shape: &[usize], bias: bool| {
            Norm::load(
                weights,
                &name(s),
                NormKind::LayerNorm,
                shape,
                bias,
                a.norm_eps,
            )
        };
        let (q_norm, k_norm) = match (a.qk_norm, n.q_norm, n.k_norm) {
            (QkNorm::SharedLayerNorm, Some(qn), Some(kn)) => (
                Some(head_norm(qn, &[a.head_dim], true)?),
                Some(head_norm(kn, &[a.head_dim], true)?),
            ),
            (QkNorm::PerHead, Some(qn), Some(kn)) => (
                Some(head_norm(qn, &[a.heads, a.head_dim], false)?),
                Some(head_norm(kn, &[a.kv_heads, a.head_dim], false)?),
            ),
            _ => (None, None),
        };
        let o_proj = lin(n.out_proj, qd, a.hidden, a.out_bias)?;
        let mlp = match a.mlp {
            MlpKind::Plain(_) => Mlp::Plain {
                fc_in: lin(n.mlp[0], a.hidden, a.intermediate, a.mlp_bias)?,
                fc_out: lin(n.mlp[1], a.intermediate, a.hidden, a.mlp_bias)?,
            },
            MlpKind::Gated(_) => Mlp::Gated {
                gate: lin(n.mlp[0], a.hidden, a.intermediate, a.mlp_bias)?,
                up: lin(n.mlp[1], a.hidden, a.intermediate, a.mlp_bias)?,
                down: lin(n.mlp[2], a.intermediate, a.hidden, a.mlp_bias)?,
            },
        };
        Ok(ParallelDecoder {
            arch: a.clone(),
            layer_idx,
            sliding_window,
            rope_index,
            rotary,
            norm_attn,
            norm_mlp,
            qkv,
            q_norm,
            k_norm,
            o_proj,
            mlp,
            device: Device::Cpu,
            dtype: DType::F32,
            residual_bias: None,
        })
    }

    /// The MLP's last projection (fc_out / down_proj).
    fn mlp_out(&self) -> &Linear {
        match &self.mlp {
            Mlp::Plain { fc_out, .. } => fc_out,
            Mlp::Gated { down, .. } => down,
        }
    }

    /// The summed bias of the output and down projections on `device` in `dtype` (none on the
    /// CPU, whose reference adds each where HF does, or where neither has a bias).
    fn residual_bias_on(&self, device: Device, dtype: DType) -> Result<Option<Tensor>> {
        if device == Device::Cpu {
            return Ok(None);
        }
        let sum = match (self.o_proj.bias_values()?, self.mlp_out().bias_values()?) {
            (None, None) => return Ok(None),
            (Some(b), None) | (None, Some(b)) => b,
            (Some(a), Some(b)) => a.iter().zip(&b).map(|(x, y)| x + y).collect(),
        };
        let n = sum.len();
        Ok(Some(
            Tensor::from_f32_as(&sum, &[n], dtype)?.to_device(device)?,
        ))
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = match &mut self.qkv {
            QkvProj::Separate { q, k, v } => vec![q, k, v],
            QkvProj::Fused { qkv, .. } => vec![qkv],
        };
        v.push(&mut self.o_proj);
        match &mut self.mlp {
            Mlp::Plain { fc_in, fc_out } => v.extend([fc_in, fc_out]),
            Mlp::Gated { gate, up, down } => v.extend([gate, up, down]),
        }
        v
    }

    /// The projections of the layer: q, k, v (or the fused qkv), the output projection, the MLP.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v: Vec<&Linear> = match &self.qkv {
            QkvProj::Separate { q, k, v } => vec![q, k, v],
            QkvProj::Fused { qkv, .. } => vec![qkv],
        };
        v.push(&self.o_proj);
        match &self.mlp {
            Mlp::Plain { fc_in, fc_out } => v.extend([fc_in, fc_out]),
            Mlp::Gated { gate, up, down } => v.extend([gate, up, down]),
        }
        v
    }

    fn norms_mut(&mut self) -> Vec<&mut Norm> {
        [
            Some(&mut self.norm_attn),
            self.norm_mlp.as_mut(),
            self.q_norm.as_mut(),
            self.k_norm.as_mut(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn norms(&self) -> impl Iterator<Item = &Norm> {
        [
            Some(&self.norm_attn),
            self.norm_mlp.as_ref(),
            self.q_norm.as_ref(),
            self.k_norm.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// Registers the adapters of `lora` that target this layer's projections; returns how many.
    pub fn add_lora(&mut self, lora: &Lora) -> Result<usize> {
        let mut n = 0;
        for l in self.linears_mut() {
            if let Some(ad) = lora.modules.get(&l.name) {
                l.add_lora(lora.id(), ad)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drops `lora`'s adapters from this layer's projections.
    pub fn remove_lora(&mut self, lora: &Lora) {
        for l in self.linears_mut() {
            l.remove_lora(lora.id());
        }
    }

    /// Names of this layer's projections (the module names LoRA adapters target).
    pub fn linear_names(&self) -> Vec<&str> {
        self.linears().iter().map(|l| l.name.as_str()).collect()
    }

    /// Re-syncs registered LoRA adapters with the layer: moves them to the device the weights
    /// are on. `load` and `unload` call it; call it after changing adapters by hand.
    pub fn update_loras(&mut self) -> Result<()> {
        for l in self.linears_mut() {
            l.update_loras()?;
        }
        Ok(())
    }

    /// Places the weights on `device`: `load_as` with the device's natural dtype (on a GPU f16
    /// or bf16 weights keep theirs and f32 checkpoints become f16; on the CPU the current one).
    pub fn load(&mut self, device: Device) -> Result<()> {
        let dtype = match (device, self.dtype) {
            (Device::Cpu, d) => d,
            (_, d @ (DType::F16 | DType::BF16)) => d,
            _ => match self.linears().first().map(|l| l.compute_dtype()) {
                Some(d @ (DType::F16 | DType::BF16)) => d,
                _ => DType::F16,
            },
        };
        self.load_as(device, dtype)
    }

    /// Places the weights on `device`, computing in `dtype` there (f16 or bf16 on a GPU):
    /// dense weights, biases, norms and registered LoRA adapters are converted, quantized
    /// weights prepared in the device layout. Every piece is built first and swapped in only
    /// when all succeeded: a failure (out of device memory, say) frees what it took and leaves
    /// the layer as it was.
    pub fn load_as(&mut self, device: Device, dtype: DType) -> Result<()> {
        if device == self.device && dtype == self.dtype {
            return Ok(());
        }
        if device != Device::Cpu && !matches!(dtype, DType::F16 | DType::BF16) {
            return Err(Error::unsupported(format!(
                "layer {}: a GPU layer computes in f16 or bf16, not {dtype}",
                self.layer_idx
            )));
        }
        let linears = self
            .linears()
            .iter()
            .map(|l| l.placed(device, dtype))
            .collect::<Result<Vec<_>>>()?;
        let norms = self
            .norms()
            .map(|n| n.placed(device, dtype))
            .collect::<Result<Vec<_>>>()?;
        let residual_bias = self.residual_bias_on(device, dtype)?;
        for (slot, new) in self.linears_mut().into_iter().zip(linears) {
            *slot = new;
        }
        for (slot, new) in self.norms_mut().into_iter().zip(norms) {
            *slot = new;
        }
        self.residual_bias = residual_bias;
        self.device = device;
        self.dtype = dtype;
        Ok(())
    }

    /// Moves the weights back to host memory (in the dtype they had on the device), freeing
    /// device memory. On failure (a lost device) the layer stays where it was.
    pub fn unload(&mut self) -> Result<()> {
        self.load_as(Device::Cpu, self.dtype)
    }

    /// The dtype the weights are placed in (see `load_as`).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The architecture the layer was built for.
    pub fn arch(&self) -> &ArchParams {
        &self.arch
    }

    /// Where the weights live.
    pub fn device(&self) -> Device {
        self.device
    }
    /// The layer's index in its model.
    pub fn layer_idx(&self) -> usize {
        self.layer_idx
    }
    /// Keys a query sees, counting itself; 0 for no window.
    pub fn sliding_window(&self) -> usize {
        self.sliding_window
    }

    /// Parameters of the layer (logical elements: quantized weights count as K·N).
    pub fn numel(&self) -> usize {
        self.linears().iter().map(|l| l.numel()).sum::<usize>()
            + self.norms().map(Norm::numel).sum::<usize>()
    }

    /// Bytes the layer's weights take on a device (ask before `load`).
    pub fn weight_bytes(&self) -> usize {
        self.linears()
            .iter()
            .map(|l| l.weight_bytes())
            .sum::<usize>()
            + self.norms().map(Norm::weight_bytes).sum::<usize>()
    }

    /// Replaces every projection's weight by its truncated SVD of rank ⌊k·min(in, out)⌋.
    /// Refused, with nothing changed, when any projection is quantized.
    pub fn rank_reduce(&mut self, k: f32) -> Result<()> {
        if let Some(q) = self.linears().iter().find(|l| l.is_quant()) {
            return Err(Error::unsupported(format!(
                "rank_reduce: {} is quantized; truncated SVD needs dense weights",
                q.name
            )));
        }
        crate::layers::rank_reduce::kept_rank(k, 1, 1)?;
        for l in self.linears_mut() {
            l.rank_reduce(k)?;
        }
        Ok(())
    }

    /// Whether any projection is quantized.
    pub fn is_quant(&self) -> bool {
        self.linears().iter().any(|l| l.is_quant())
    }

    /// `hidden += attn + mlp` in the family's summation order. `hidden` is [batch, q_len,
    /// hidden] (or [tokens, hidden]); with a cache, new K/V go to each sequence's next slots
    /// — for a paged cache (`KvCache::paged`), in the pages of the block table `params`
    /// carries (`AttnParams::with_block_table`), checked against the pool before anything is
    /// written.
    pub fn forward(
        &self,
        s: &Stream,
        hidden: &mut Tensor,
        cache: Option<&mut KvCache>,
        params: &AttnParams,
        loras: &[&Lora],
        ws: &mut Workspace,
    ) -> Result<()> {
        let mark = ws.mark();
        let r = self.run(s, hidden, cache, params, loras, ws, false);
        ws.release(mark);
        r.map(|_| ())
    }

    /// As `forward`, and returns the intermediates (see `Intermediates`).
    pub fn forward_interm(
        &self,
        s: &Stream,
        hidden: &mut Tensor,
        cache: Option<&mut KvCache>,
        params: &AttnParams,
        loras: &[&Lora],
        ws: &mut Workspace,
    ) -> Result<Intermediates> {
        let mark = ws.mark();
        let r = self.run(s, hidden, cache, params, loras, ws, true);
        ws.release(mark);
        r?.ok_or_else(|| Error::bad_input("intermediates were not captured"))
    }

    /// Rotary + cache write, then attention, over a cache stored in pages: a quantized
    /// contiguous cache (`table` None), or a paged cache's pool addressed by the call's block
    /// `table` (any mode). `positions`, `past_len`, the mask and `table` are the step's staged
    /// tables when the driver staged them (the ops then read their device copies), else `p`'s
    /// own. Returns the attention context [tokens, heads·head_dim].
    fn attend_pages(
        &self,
        s: &Stream,
        ws: &mut Workspace,
        c: &mut KvCache,
        p: &AttnParams,
        table: Option<&BlockTable<'_>>,
        q: &mut Tensor,
        k: &mut Tensor,
        v: &Tensor,
        positions: &[i64],
        past_len: &[usize],
        (mask, mask_stride): (Option<&[f32]>, usize),
        rot_args: Option<&RotaryArgs<'_>>,
    ) -> Result<Tensor> {
        let a = &self.arch;
        if c.kv_heads != a.kv_heads || c.head_dim != a.head_dim {
            return Err(Error::bad_input(format!(
                "KV cache holds {} kv heads × {}, the layer {} × {}",
                c.kv_heads, c.head_dim, a.kv_heads, a.head_dim
            )));
        }
        let capacity = match table {
            Some(t) => t.capacity(),
            None => {
                if c.batch != p.batch {
                    return Err(Error::bad_input(format!(
                        "KV cache is for batch {}, the call has batch {}",
                        c.batch, p.batch
                    )));
                }
                c.check_positions(self.layer_idx, &p.past_len, p.q_len)?;
                c.capacity
            }
        };
        let pages = c.quant_layer_mut(self.layer_idx)?;
        match table {
            None => {
                let at = CacheSlots {
                    batch: p.batch,
                    q_len: p.q_len,
                    capacity,
                    past_len,
                };
                ops::rotary_and_cache_write_quant(
                    s, ws, q, k, v, a.heads, a.kv_heads, a.head_dim, positions, rot_args, &at,
                    pages,
                )?
            }
            // The table is checked against the pool before anything is written.
            Some(t) => ops::paged_rotary_and_cache_write(
                s, ws, q, k, v, a.heads, a.kv_heads, a.head_dim, positions, rot_args, past_len,
                p.q_len, t, pages,
            )?,
        }
        let shape = AttnShape {
            batch: p.batch,
            q_len: p.q_len,
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: a.head_dim,
            capacity,
        };
        let masking = AttnMasking {
            past_len,
            window: self.sliding_window,
            mask,
            mask_stride,
        };
        let scale = 1.0 / (a.head_dim as f32).sqrt();
        let mut ctx = ws.tensor(&[p.tokens(), a.heads * a.head_dim])?;
        match table {
            None => {
                ops::attention_quant(s, ws, q, pages, &shape, &masking, scale, &mut ctx)?;
                c.record_written(self.layer_idx, &p.past_len, p.q_len)?;
            }
            Some(t) => ops::paged_attention(s, ws, q, pages, t, &shape, &masking, scale, &mut ctx)?,
        }
        Ok(ctx)
    }

    fn run(
        &self,
        s: &Stream,
        hidden: &mut Tensor,
        cache: Option<&mut KvCache>,
        p: &AttnParams,
        loras: &[&Lora],
        ws: &mut Workspace,
        capture: bool,
    ) -> Result<Option<Intermediates>> {
        let a = &self.arch;
        let ids: Vec<u64> = loras.iter().map(|l| l.id()).collect();
        let ids = ids.as_slice();
        p.validate()?;
        let t = p.tokens();
        if hidden.numel() != t * a.hidden {
            return Err(Error::bad_input(format!(
                "hidden: expected {} tokens × {} features, got shape {:?}",
                t,
                a.hidden,
                hidden.shape()
            )));
        }
        if self.device != Device::Cpu && (hidden.dtype() != self.dtype || ws.dtype() != self.dtype)
        {
            return Err(Error::bad_input(format!(
                "layer {} computes in {}, hidden is {} and the workspace {}",
                self.layer_idx,
                self.dtype,
                hidden.dtype(),
                ws.dtype()
            )));
        }
        if hidden.device() != self.device || ws.device() != self.device {
            return Err(Error::bad_input(format!(
                "layer {} is on {}, hidden on {}, workspace on {}",
                self.layer_idx,
                self.device,
                hidden.device(),
                ws.device()
            )));
        }
        // A paged cache comes with the call's block table, of its page size, and a table with
        // a paged cache only (named errors before anything runs; the table itself is checked
        // against the pool by the cache write, before it writes).
        let table = p.block_table.as_ref().map(PagedTable::as_block_table);
        match cache.as_deref() {
            Some(c) => {
                c.check_table_kind(table.as_ref())?;
            }
            None if table.is_some() => {
                return Err(Error::bad_input(
                    "the call carries a block table but there is no KV cache",
                ))
            }
            None => {}
        }
        let (qd, kvd) = (a.heads * a.head_dim, a.kv_heads * a.head_dim);

        // Norms: one, or two over the same x.
        let mut n_a = ws.tensor(&[t, a.hidden])?;
        self.norm_attn.forward(s, hidden, &mut n_a)?;
        let n_m = match &self.norm_mlp {
            Some(nm) => {
                let mut o = ws.tensor(&[t, a.hidden])?;
                nm.forward(s, hidden, &mut o)?;
                Some(o)
            }
            None => None,
        };

        // q, k, v and the MLP's input projections: every projection of the normalized inputs,
        // launched together where the kernels allow (one launch on a device for 4-bit weights).
        let mlp_in = n_m.as_ref().unwrap_or(&n_a);
        let (mut q, mut k, mut v) = (
            ws.tensor(&[t, qd])?,
            ws.tensor(&[t, kvd])?,
            ws.tensor(&[t, kvd])?,
        );
        let mut fused_qkv = match &self.qkv {
            QkvProj::Fused { .. } => Some(ws.tensor(&[t, a.qkv_width()])?),
            QkvProj::Separate { .. } => None,
        };
        let mut pre_down = ws.tensor(&[t, a.intermediate])?;
        let mut gate_up = match &self.mlp {
            Mlp::Gated { .. } => Some((
                ws.tensor(&[t, a.intermediate])?,
                ws.tensor(&[t, a.intermediate])?,
            )),
            Mlp::Plain { .. } => None,
        };
        {
            let mut calls: Vec<(&Linear, &Tensor, &mut Tensor)> = Vec::with_capacity(5);
            match (&self.qkv, fused_qkv.as_mut()) {
                (
                    QkvProj::Separate {
                        q: lq,
                        k: lk,
                        v: lv,
                    },
                    _,
                ) => {
                    calls.push((lq, &n_a, &mut q));
                    calls.push((lk, &n_a, &mut k));
                    calls.push((lv, &n_a, &mut v));
                }
                (QkvProj::Fused { qkv, .. }, Some(f)) => calls.push((qkv, &n_a, f)),
                (QkvProj::Fused { .. }, None) => unreachable!("allocated above"),
            }
            // A plain MLP's activation is applied as its first projection is stored.
            let mut acts = vec![None; calls.len()];
            match (&self.mlp, gate_up.as_mut()) {
                (Mlp::Plain { fc_in, .. }, _) => {
                    calls.push((fc_in, mlp_in, &mut pre_down));
                    acts.push(match a.mlp {
                        MlpKind::Plain(act) => Some(act),
                        MlpKind::Gated(_) => None,
                    });
                }
                (Mlp::Gated { gate, up, .. }, Some((g, u))) => {
                    calls.push((gate, mlp_in, g));
                    calls.push((up, mlp_in, u));
                }
                (Mlp::Gated { .. }, None) => unreachable!("allocated above"),
            }
            acts.resize(calls.len(), None);
            Linear::forward_group(s, ws, &mut calls, &acts, ids)?;
        }
        // A quantized or paged cache takes its writes (and serves attention) page by page.
        let in_pages = cache
            .as_deref()
            .is_some_and(|c| c.mode().is_quantized() || c.is_paged());
        // On a device, a decode step's fused projection is split by the rotary + cache write's
        // launch (one launch fewer) where nothing sits between them (no per-head norm) and the
        // native cache (or none) takes the write.
        let split_in_rope = self.device != Device::Cpu
            && t <= 32
            && self.q_norm.is_none()
            && !in_pages
            && split_rope_enabled();
        if let (QkvProj::Fused { layout, .. }, Some(f)) = (&self.qkv, &fused_qkv) {
            if !split_in_rope {
                ops::split_qkv(
                    s, *layout, f, a.heads, a.kv_heads, a.head_dim, &mut q, &mut k, &mut v,
                )?;
            }
        }
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            ops::head_norm(
                s,
                qn.kind,
                &mut q,
                a.heads,
                a.head_dim,
                &qn.affine(),
                qn.eps,
            )?;
            ops::head_norm(
                s,
                kn.kind,
                &mut k,
                a.kv_heads,
                a.head_dim,
                &kn.affine(),
                kn.eps,
            )?;
        }

        // Rotary + cache write, then attention over the cache. The per-step tables are the
        // staged ones when the driver staged this step (`Workspace::stage_step`: one upload
        // for every layer, at the addresses a captured graph reads), else this call's own.
        let own_positions = p.positions();
        let staged = ws.staged().filter(|st| {
            st.tables.past_len == p.past_len
                && st.tables.positions == own_positions
                && st.tables.mask.is_some() == p.mask.is_some()
                && match (&st.tables.block_table, &p.block_table) {
                    (None, None) => true,
                    (Some(staged), Some(own)) => same_pages(staged, own),
                    _ => false,
                }
        });
        // A paged cache's staged block table (possibly wider: a graph's fixed width) addresses
        // the same rows as the call's own.
        let table = staged
            .as_ref()
            .and_then(|st| st.tables.block_table.as_ref())
            .map(PagedTable::as_block_table)
            .or(table);
        let (positions, past_len, mask, mask_stride): (&[i64], &[usize], Option<&[f32]>, usize) =
            match &staged {
                Some(st) => (
                    &st.tables.positions,
                    &st.tables.past_len,
                    st.tables.mask.as_deref(),
                    st.tables.mask_stride,
                ),
                None => (
                    &own_positions,
                    &p.past_len,
                    p.mask.as_deref(),
                    p.mask_stride,
                ),
            };
        let freqs = match &self.rotary {
            Rotary::Rope(rc) => Some((rc, rc.freqs(positions.iter().copied().max().unwrap_or(0)))),
            Rotary::None => None,
        };
        let rot_args = freqs.as_ref().map(|(rc, f)| RotaryArgs {
            style: rc.style,
            rot_dim: rc.rot_dim,
            inv_freq: staged
                .as_ref()
                .and_then(|st| st.tables.freqs.get(self.rope_index)?.as_deref())
                .filter(|sf| *sf == f.inv_freq.as_slice())
                .unwrap_or(&f.inv_freq),
            attn_factor: f.attn_factor,
        });
        let mut cache = cache;
        let ctx = if in_pages {
            let c = cache
                .as_deref_mut()
                .ok_or_else(|| Error::bad_input("no KV cache"))?;
            self.attend_pages(
                s,
                ws,
                c,
                p,
                table.as_ref(),
                &mut q,
                &mut k,
                &v,
                positions,
                past_len,
                (mask, mask_stride),
                rot_args.as_ref(),
            )?
        } else {
            let mut own_cache;
            let (ck, cv, capacity) = match cache.as_deref_mut() {
                Some(c) => {
                    if c.batch != p.batch || c.kv_heads != a.kv_heads || c.head_dim != a.head_dim {
                        return Err(Error::bad_input(format!(
                            "KV cache is for batch {} × {} kv heads × {}, the call has batch {} and the layer {} × {}",
                            c.batch, c.kv_heads, c.head_dim, p.batch, a.kv_heads, a.head_dim
                        )));
                    }
                    // Reads of never-written slots and writes past the capacity are refused here,
                    // before anything is written.
                    c.check_positions(self.layer_idx, &p.past_len, p.q_len)?;
                    let cap = c.capacity;
                    let (ck, cv) = c.layer_mut(self.layer_idx)?;
                    (ck, cv, cap)
                }
                None => {
                    if p.past_len.iter().any(|&l| l > 0) {
                        return Err(Error::bad_input(
                            "past_len > 0 needs a KV cache holding the past",
                        ));
                    }
                    own_cache = (
                        ws.tensor(&[p.batch, p.q_len, kvd])?,
                        ws.tensor(&[p.batch, p.q_len, kvd])?,
                    );
                    (&mut own_cache.0, &mut own_cache.1, p.q_len)
                }
            };
            let at = CacheSlots {
                batch: p.batch,
                q_len: p.q_len,
                capacity,
                past_len,
            };
            match (&self.qkv, &fused_qkv) {
                (QkvProj::Fused { layout, .. }, Some(f)) if split_in_rope => {
                    ops::split_rotary_and_cache_write(
                        s,
                        ws,
                        *layout,
                        f,
                        &mut q,
                        &mut k,
                        &mut v,
                        a.heads,
                        a.kv_heads,
                        a.head_dim,
                        positions,
                        rot_args.as_ref(),
                        &at,
                        ck,
                        cv,
                    )?;
                }
                _ => ops::rotary_and_cache_write(
                    s,
                    ws,
                    &mut q,
                    &mut k,
                    &v,
                    a.heads,
                    a.kv_heads,
                    a.head_dim,
                    positions,
                    rot_args.as_ref(),
                    &at,
                    ck,
                    cv,
                )?,
            }
            let shape = AttnShape {
                batch: p.batch,
                q_len: p.q_len,
                heads: a.heads,
                kv_heads: a.kv_heads,
                head_dim: a.head_dim,
                capacity,
            };
            let masking = AttnMasking {
                past_len,
                window: self.sliding_window,
                mask,
                mask_stride,
            };
            let mut ctx = ws.tensor(&[t, qd])?;
            ops::attention(
                s,
                ws,
                &q,
                ck,
                cv,
                &shape,
                &masking,
                1.0 / (a.head_dim as f32).sqrt(),
                &mut ctx,
            )?;
            if let Some(c) = cache {
                c.record_written(self.layer_idx, &p.past_len, p.q_len)?;
            }
            ctx
        };
        // On a device (and when no branch output is asked for) the output projections
        // accumulate straight into the residual, x += [ctx | act]·[W_o ; W_down]ᵀ: one summed
        // launch where both weights take the small-M path, else x += ctx·W_oᵀ then
        // x += act·W_downᵀ — no branch outputs, no separate adds. The CPU reference keeps HF's
        // summation order.
        let fused = self.device != Device::Cpu && !capture;
        let mut attn_out = None;
        if !fused {
            let mut o = ws.tensor(&[t, a.hidden])?;
            self.o_proj.forward(s, ws, &ctx, &mut o, false, ids)?;
            attn_out = Some(o);
        }

        // MLP: its input projections ran with q, k, v above.
        let (last, pre) = match (&self.mlp, a.mlp) {
            // Activated by the grouped projections above.
            (Mlp::Plain { fc_out, .. }, MlpKind::Plain(_)) => (fc_out, &pre_down),
            (Mlp::Gated { down, .. }, MlpKind::Gated(act)) => {
                let (g, u) = gate_up.as_ref().expect("allocated for a gated MLP");
                ops::act_mul(s, act, g, u, &mut pre_down)?;
                (down, &pre_down)
            }
            _ => {
                return Err(Error::bad_input(
                    "MLP weights do not match the architecture's MLP kind",
                ))
            }
        };
        let Some(mut attn_out) = attn_out else {
            let terms = [(&self.o_proj, &ctx), (last, pre)];
            let bias = self.residual_bias.as_ref();
            if !Linear::forward_sum(s, ws, &terms, bias, hidden, ids)? {
                self.o_proj.forward(s, ws, &ctx, hidden, true, ids)?;
                last.forward(s, ws, pre, hidden, true, ids)?;
            }
            return Ok(None);
        };
        let mut mlp_out = ws.tensor(&[t, a.hidden])?;
        last.forward(s, ws, pre, &mut mlp_out, false, ids)?;

        // Residual, in HF's order.
        let branch_attn = if capture {
            Some(attn_out.try_clone()?)
        } else {
            None
        };
        match a.sum_order {
            SumOrder::BranchesFirst => {
                // attn_out becomes attn + mlp (its own value is kept above when asked for).
                ops::add_inplace(s, &mut attn_out, &mlp_out)?;
                ops::add_inplace(s, hidden, &attn_out)?;
            }
            SumOrder::ResidualFirst => {
                ops::add_inplace(s, hidden, &attn_out)?;
                ops::add_inplace(s, hidden, &mlp_out)?;
            }
        }
        if !capture {
            return Ok(None);
        }
        // Owned copies: the temporaries go back to the workspace when the forward returns.
        Ok(Some(Intermediates {
            post_norm: n_a.try_clone()?,
            post_norm_mlp: n_m.as_ref().map(Tensor::try_clone).transpose()?,
            attn_output: ctx.try_clone()?,
            pre_down: pre_down.try_clone()?,
            hidden_states_attn: branch_attn.map_or_else(|| attn_out.try_clone(), Ok)?,
            hidden_states_mlp: mlp_out.try_clone()?,
            hidden_states: hidden.try_clone()?.reshape(&[t, a.hidden])?,
        }))
    }
}

/// Whether a decode step on a device may split a fused q/k/v projection inside the rotary +
/// cache write's launch: yes unless `PARADEC_SPLIT_ROPE=off` (read once), which keeps the split
/// a launch of its own.
fn split_rope_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("PARADEC_SPLIT_ROPE").map_or(true, |v| v != "off"))
}
