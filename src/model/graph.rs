//! The whole model's decode step captured in a CUDA graph (`layers::graph` explains how a step
//! is captured once and replayed with new lengths).

use crate::cache::KvCache;
use crate::layers::graph::{StepGraph, StepShape};
use crate::layers::params::AttnParams;
use crate::model::stack::{Model, ModelOutput};
use crate::tensor::{Device, Tensor};
use crate::workspace::Workspace;
use crate::{Error, Result, Stream};

/// A model's decode step captured in a CUDA graph: embedding, every layer over the cache, the
/// final norm and the head, replayed by [`ModelGraph::step`] with new token ids and lengths.
#[derive(Debug)]
pub struct ModelGraph<'a> {
    model: &'a Model,
    stream: &'a Stream,
    cache: &'a mut KvCache,
    ws: Workspace,
    out: ModelOutput,
    step: StepGraph,
}

impl Model {
    /// Captures a decode step of `batch` sequences × `q_len` new tokens (≤ 16) over `cache`
    /// into a CUDA graph on `s` (a stream the caller created); `masked` says whether steps
    /// carry a padding mask. The model must be on a CUDA device; `ws` (on it, its arena
    /// reserved with `Workspace::bytes_needed` for `batch · q_len` tokens) becomes the
    /// graph's. Nothing runs until [`ModelGraph::step`]. LoRA adapters are not captured.
    pub fn capture_decode<'a>(
        &'a self,
        s: &'a Stream,
        cache: &'a mut KvCache,
        mut ws: Workspace,
        batch: usize,
        q_len: usize,
        masked: bool,
    ) -> Result<ModelGraph<'a>> {
        if self.device() == Device::Cpu {
            return Err(Error::bad_input(
                "graph capture: the model is on the CPU; load it onto a CUDA device",
            ));
        }
        if cache.num_layers() != self.layers().len() {
            return Err(Error::bad_input(format!(
                "KV cache has {} layers, the model {}",
                cache.num_layers(),
                self.layers().len()
            )));
        }
        let shape = StepShape::new(batch, q_len, masked, cache)?;
        let ids = vec![0u32; batch * q_len];
        let a = &self.arch;
        let mut out = ModelOutput {
            hidden_states: Tensor::zeros(&[ids.len(), a.hidden], self.dtype(), self.device())?,
            logits: Tensor::zeros(&[batch, q_len, a.vocab], self.dtype(), self.device())?,
        };
        let step = StepGraph::capture(s, &mut ws, shape, a, &ids, cache, |s, ws, c, p| {
            self.run_layers(s, &ids, p, Some(c), &[], ws, false, &mut |_| {}, &mut out)
        });
        Ok(ModelGraph {
            model: self,
            stream: s,
            cache,
            ws,
            out,
            step: step?,
        })
    }
}

impl ModelGraph<'_> {
    /// Queues one step for token ids [batch · q_len] at `params`' lengths (same batch, query
    /// length and mask presence as captured; every past length written and at most the cache's
    /// capacity − q_len): checks it, restages the tables and launches the graph. Returns the
    /// logits [batch, q_len, vocab], valid once the stream reaches them; the cache records the
    /// new positions.
    pub fn step(&mut self, ids: &[u32], params: &AttnParams) -> Result<&Tensor> {
        self.step.shape.check(params)?;
        params.check_ids_len(ids)?;
        let vocab = self.model.arch.vocab;
        if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(Error::bad_input(format!(
                "token id {id} at position {i} is outside the vocabulary of {vocab}"
            )));
        }
        for l in 0..self.cache.num_layers() {
            self.cache
                .check_positions(l, &params.past_len, params.q_len)?;
        }
        let tables = self.step.shape.tables(ids, params, &self.model.arch);
        self.step.replay(self.stream, &mut self.ws, tables)?;
        for l in 0..self.cache.num_layers() {
            self.cache
                .record_written(l, &params.past_len, params.q_len)?;
        }
        Ok(&self.out.logits)
    }

    /// The outputs of the last step: final-norm hidden states and logits.
    pub fn output(&self) -> &ModelOutput {
        &self.out
    }

    /// The cache the graph reads and writes.
    pub fn cache(&self) -> &KvCache {
        self.cache
    }
}
