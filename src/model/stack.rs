//! `Model`: token embedding, the parallel decoder layers, the final norm and the LM head
//! (bias, tied weights, logit scale), loaded from a directory of config.json + safetensors.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::arch::ArchParams;
use crate::cache::KvCache;
use crate::kv_quant::PagedTable;
use crate::layers::linear::Linear;
use crate::layers::lora::Lora;
use crate::layers::norm::Norm;
use crate::layers::parallel_decoder::{Intermediates, ParallelDecoder};
use crate::layers::params::AttnParams;
use crate::ops;
use crate::tensor::{DType, Device, Tensor};
use crate::workspace::Workspace;
use crate::{Error, Result, Stream, Weights};

#[derive(Debug)]
/// A whole model: embedding, parallel decoder layers, final norm and LM head.
pub struct Model {
    /// What the model is, from its config.json.
    pub arch: ArchParams,
    embed: Tensor,
    layers: Vec<ParallelDecoder>,
    final_norm: Norm,
    /// None: tied to the embedding.
    head: Option<Linear>,
}

/// What a model forward returns.
#[derive(Debug)]
pub struct ModelOutput {
    /// The last layer's output after the final norm, [tokens, hidden] (HF's last
    /// `hidden_states` entry).
    pub hidden_states: Tensor,
    /// [batch, q_len, vocab], `logit_scale` applied.
    pub logits: Tensor,
}

/// What a model forward reports per layer, for tests and timing.
pub struct LayerReport<'a> {
    /// The layer's index.
    pub layer: usize,
    /// Wall time of the layer (on the CPU; on a device, the time to queue it).
    pub elapsed: Duration,
    /// The layer's intermediates, when asked for.
    pub interm: Option<&'a Intermediates>,
}

/// `f(0)`, …, `f(n − 1)` spread over the host's cores, in order; the first error wins.
fn on_host_cores<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = n.div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..n)
            .step_by(per)
            .map(|start| {
                sc.spawn(move || {
                    (start..(start + per).min(n))
                        .map(f)
                        .collect::<Result<Vec<T>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            out.extend(
                h.join()
                    .unwrap_or_else(|_| Err(Error::bad_input("reading a layer panicked")))?,
            );
        }
        Ok(out)
    })
}

impl Model {
    /// Loads config.json and the safetensors of `dir` (one file or shards with an index).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let arch = ArchParams::from_dir(dir)?;
        let weights = Weights::from_dir(dir)?;
        Self::from_weights(arch, &weights)
    }

    /// Builds the model from `arch` and the tensors in `weights`.
    pub fn from_weights(arch: ArchParams, weights: &Weights) -> Result<Self> {
        let n = &arch.names;
        let embed =
            weights.get_float(&format!("{}.weight", n.embed), &[arch.vocab, arch.hidden])?;
        // Layers are read on all host cores: unpacking and checking a quantized layer's
        // tensors is host work, ~0.1 s a layer of a 7B model.
        let layers = on_host_cores(arch.layers.len(), |i| {
            let spec = &arch.layers[i];
            ParallelDecoder::new(
                &arch,
                weights,
                &format!("{}.{i}", n.layer_prefix),
                i,
                spec.sliding_window,
                spec.rope_index,
            )
        })?;
        let final_norm = Norm::load(
            weights,
            n.final_norm,
            arch.norm,
            &[arch.hidden],
            arch.norm_bias,
            arch.norm_eps,
        )?;
        let head = if arch.tie_embeddings {
            None
        } else {
            Some(Linear::load(
                weights,
                n.head,
                arch.hidden,
                arch.vocab,
                arch.head_bias,
                arch.quant.as_ref(),
            )?)
        };
        Ok(Model {
            arch,
            embed,
            layers,
            final_norm,
            head,
        })
    }

    /// The decoder layers.
    pub fn layers(&self) -> &[ParallelDecoder] {
        &self.layers
    }

    /// `ParallelDecoder::rank_reduce` on every layer.
    pub fn rank_reduce(&mut self, k: f32) -> Result<()> {
        for l in &mut self.layers {
            l.rank_reduce(k)?;
        }
        Ok(())
    }

    /// The decoder layers, mutably (to load, add adapters, rank-reduce one).
    pub fn layers_mut(&mut self) -> &mut [ParallelDecoder] {
        &mut self.layers
    }

    /// Bytes every weight takes on a device (ask before `load_to`).
    pub fn weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(ParallelDecoder::weight_bytes)
            .sum::<usize>()
            + self.embed.size_bytes()
            + self.final_norm.weight_bytes()
            + self.head.as_ref().map_or(0, Linear::weight_bytes)
    }

    /// Places every weight on `device` in the device's natural dtype (see
    /// `ParallelDecoder::load`): f16 for an f32 checkpoint on a GPU.
    pub fn load_to(&mut self, device: Device) -> Result<()> {
        let dtype = match device {
            Device::Cpu => DType::F32,
            _ => match self.embed.dtype() {
                d @ (DType::F16 | DType::BF16) => d,
                _ => DType::F16,
            },
        };
        self.load_as(device, dtype)
    }

    /// Places every weight on `device`, computing in `dtype` there (f16 or bf16 on a GPU).
    /// Layers move one by one, each all or nothing; when one fails, those already moved go
    /// back where the model was, so the model stays usable where it was.
    pub fn load_as(&mut self, device: Device, dtype: DType) -> Result<()> {
        let from = (self.embed.device(), self.embed.dtype());
        let r = self.try_load_as(device, dtype);
        if r.is_err() {
            let _ = self.try_load_as(from.0, from.1);
        }
        r
    }

    fn try_load_as(&mut self, device: Device, dtype: DType) -> Result<()> {
        // Layers load on all host cores: building the quantized weights' device layout is host
        // work, a fraction of a second per layer of a 7B model.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = self.layers.len().div_ceil(threads).max(1);
        std::thread::scope(|sc| {
            let handles: Vec<_> = self
                .layers
                .chunks_mut(per)
                .map(|chunk| {
                    sc.spawn(move || -> Result<()> {
                        for l in chunk {
                            l.load_as(device, dtype)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::bad_input("a layer load panicked")))
            })
        })?;
        let embed = if self.embed.dtype() == dtype {
            self.embed.to_device(device)?
        } else {
            self.embed.to_dtype(dtype)?.to_device(device)?
        };
        let final_norm = self.final_norm.placed(device, dtype)?;
        let head = match &self.head {
            Some(h) => Some(h.placed(device, dtype)?),
            None => None,
        };
        self.embed = embed;
        self.final_norm = final_norm;
        self.head = head;
        Ok(())
    }

    /// Where the weights live.
    pub fn device(&self) -> Device {
        self.embed.device()
    }

    /// The dtype the model computes in on its device (f32 on the CPU).
    pub fn dtype(&self) -> DType {
        match self.device() {
            Device::Cpu => DType::F32,
            _ => self.embed.dtype(),
        }
    }

    /// Logits [batch, q_len, vocab] for token ids [batch · q_len], queued on `s`. Over a
    /// paged cache (`KvCache::paged`) `params` carries the block table
    /// (`AttnParams::with_block_table`) that every layer reads its pool through; it is checked
    /// against the pools before anything runs.
    pub fn forward(
        &self,
        s: &Stream,
        ids: &[u32],
        params: &AttnParams,
        cache: Option<&mut KvCache>,
        ws: &mut Workspace,
    ) -> Result<Tensor> {
        self.forward_inspect(s, ids, params, cache, &[], ws, false, &mut |_| {})
            .map(|o| o.logits)
    }

    /// Registers a LoRA adapter on the layers it targets. Every module of the adapter must be
    /// a projection of this model; nothing is registered otherwise.
    pub fn add_lora(&mut self, lora: &Lora) -> Result<()> {
        let known: std::collections::HashSet<String> = self
            .layers
            .iter()
            .flat_map(|l| l.linear_names())
            .map(str::to_string)
            .collect();
        let mut unknown: Vec<&str> = lora
            .modules
            .keys()
            .filter(|m| !known.contains(*m))
            .map(String::as_str)
            .collect();
        unknown.sort();
        if let Some(m) = unknown.first() {
            return Err(Error::unsupported(format!(
                "LoRA {}: module {m} is not a decoder-layer projection of this model",
                lora.name
            )));
        }
        for i in 0..self.layers.len() {
            if let Err(e) = self.layers[i].add_lora(lora) {
                for l in &mut self.layers[..=i] {
                    l.remove_lora(lora);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops `lora` from every layer.
    pub fn remove_lora(&mut self, lora: &Lora) {
        for l in &mut self.layers {
            l.remove_lora(lora);
        }
    }

    /// As `forward`, with the adapters `loras` active, and returns the final-norm hidden states
    /// beside the logits; calls `report` after each layer with its time and (when `capture`)
    /// its intermediates. Layer 0's input is `embed_tokens`.
    pub fn forward_inspect(
        &self,
        s: &Stream,
        ids: &[u32],
        params: &AttnParams,
        cache: Option<&mut KvCache>,
        loras: &[&Lora],
        ws: &mut Workspace,
        capture: bool,
        report: &mut dyn FnMut(LayerReport<'_>),
    ) -> Result<ModelOutput> {
        params.validate()?;
        params.check_ids_len(ids)?;
        let table = params.block_table.as_ref().map(PagedTable::as_block_table);
        match &cache {
            Some(c) => {
                if c.num_layers() != self.layers.len() {
                    return Err(Error::bad_input(format!(
                        "KV cache has {} layers, the model {}",
                        c.num_layers(),
                        self.layers.len()
                    )));
                }
                // A paged cache's block table, checked once against the pools (every layer's
                // is the same size and reads the same table) before anything runs.
                c.check_block_table(table.as_ref(), &params.past_len, params.q_len)?;
            }
            None if table.is_some() => {
                return Err(Error::bad_input(
                    "the call carries a block table but there is no KV cache",
                ))
            }
            None => {}
        }
        let mark = ws.mark();
        // Owned: the outputs outlive the workspace's temporaries.
        let r = Tensor::zeros(
            &[params.tokens(), self.arch.hidden],
            self.dtype(),
            self.device(),
        )
        .and_then(|normed| {
            let logits = Tensor::zeros(
                &[params.batch, params.q_len, self.arch.vocab],
                self.dtype(),
                self.device(),
            )?;
            let mut out = ModelOutput {
                hidden_states: normed,
                logits,
            };
            // One upload of the step's tables for every layer.
            if self.device() != Device::Cpu {
                ws.stage_step(
                    s,
                    params.step_tables(ids, &self.arch.rotary, None, None, None)?,
                )?;
            }
            self.run_layers(s, ids, params, cache, loras, ws, capture, report, &mut out)?;
            Ok(out)
        });
        ws.unstage();
        ws.release(mark);
        r
    }

    /// Runs the layers and the head over `ids` into `out` (preallocated: a captured graph
    /// writes the same tensors every replay).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_layers(
        &self,
        s: &Stream,
        ids: &[u32],
        params: &AttnParams,
        mut cache: Option<&mut KvCache>,
        loras: &[&Lora],
        ws: &mut Workspace,
        capture: bool,
        report: &mut dyn FnMut(LayerReport<'_>),
        out: &mut ModelOutput,
    ) -> Result<()> {
        let a = &self.arch;
        // The staged ids, when the driver staged this step (their device copy is what the
        // embedding reads; a captured graph reads it at every replay).
        let staged = ws.staged().filter(|st| st.tables.ids == ids);
        let ids: &[u32] = staged.as_ref().map_or(ids, |st| &st.tables.ids);
        // The hidden states live in the workspace across the layers; each layer takes its
        // temporaries above them and gives them back.
        let mut hidden = ws.tensor(&[ids.len(), a.hidden])?;
        ops::embedding(s, ws, &self.embed, ids, &mut hidden)?;
        for layer in &self.layers {
            let start = Instant::now();
            let c = cache.as_deref_mut();
            if capture {
                let i = layer.forward_interm(s, &mut hidden, c, params, loras, ws)?;
                report(LayerReport {
                    layer: layer.layer_idx(),
                    elapsed: start.elapsed(),
                    interm: Some(&i),
                });
            } else {
                layer.forward(s, &mut hidden, c, params, loras, ws)?;
                report(LayerReport {
                    layer: layer.layer_idx(),
                    elapsed: start.elapsed(),
                    interm: None,
                });
            }
        }
        let normed = &mut out.hidden_states;
        let logits = &mut out.logits;
        self.final_norm.forward(s, &hidden, normed)?;
        match &self.head {
            Some(h) => h.forward(s, ws, normed, logits, false, &[])?,
            None => ops::linear(s, ws, normed, &self.embed, None, logits, false)?,
        }
        if a.logit_scale != 1.0 {
            ops::scale_inplace(s, logits, a.logit_scale)?;
        }
        Ok(())
    }

    /// The embeddings of `ids`, [tokens, hidden].
    pub fn embed_tokens(&self, s: &Stream, ids: &[u32], ws: &mut Workspace) -> Result<Tensor> {
        let mut out = Tensor::zeros(&[ids.len(), self.arch.hidden], ws.dtype(), ws.device())?;
        ops::embedding(s, ws, &self.embed, ids, &mut out)?;
        Ok(out)
    }
}
