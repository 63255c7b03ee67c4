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
    core: ModelStep,
}

/// What a captured model step owns — its workspace, outputs and graph — without the borrows
/// of the model and cache it reads (the C ABI keeps those alive its own way). Every call must
/// pass the model and cache it was captured with.
#[derive(Debug)]
pub(crate) struct ModelStep {
    ws: Workspace,
    out: ModelOutput,
    step: StepGraph,
}

impl ModelStep {
    /// See [`Model::capture_decode`].
    pub(crate) fn capture(
        model: &Model,
        s: &Stream,
        cache: &mut KvCache,
        ws: Workspace,
        batch: usize,
        q_len: usize,
        masked: bool,
    ) -> Result<Self> {
        Self::capture_with(model, s, cache, ws, batch, q_len, masked, None)
    }

    /// See [`Model::capture_decode_paged`] (`max_pages`: None takes the pool's page count).
    pub(crate) fn capture_with(
        model: &Model,
        s: &Stream,
        cache: &mut KvCache,
        mut ws: Workspace,
        batch: usize,
        q_len: usize,
        masked: bool,
        max_pages: Option<usize>,
    ) -> Result<Self> {
        if model.device() == Device::Cpu {
            return Err(Error::bad_input(
                "graph capture: the model is on the CPU; load it onto a CUDA device",
            ));
        }
        if cache.num_layers() != model.layers().len() {
            return Err(Error::bad_input(format!(
                "KV cache has {} layers, the model {}",
                cache.num_layers(),
                model.layers().len()
            )));
        }
        let shape = StepShape::new(batch, q_len, masked, cache, max_pages)?;
        let ids = vec![0u32; batch * q_len];
        let a = &model.arch;
        let (dt, dev) = (model.dtype(), model.device());
        let mut out = ModelOutput {
            hidden_states: Tensor::zeros(&[ids.len(), a.hidden], dt, dev)?,
            logits: Tensor::zeros(&[batch, q_len, a.vocab], dt, dev)?,
        };
        let step = StepGraph::capture(s, &mut ws, shape, a, &ids, cache, |s, ws, c, p| {
            model.run_layers(s, &ids, p, Some(c), &[], ws, false, &mut |_| {}, &mut out)
        })?;
        Ok(ModelStep { ws, out, step })
    }

    /// See [`ModelGraph::step`]; `model` and `cache` are those of the capture.
    pub(crate) fn step(
        &mut self,
        model: &Model,
        s: &Stream,
        cache: &mut KvCache,
        ids: &[u32],
        params: &AttnParams,
    ) -> Result<&ModelOutput> {
        let shape = self.step.shape;
        shape.check(params)?;
        params.check_ids_len(ids)?;
        let vocab = model.arch.vocab;
        if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(Error::bad_input(format!(
                "token id {id} at position {i} is outside the vocabulary of {vocab}"
            )));
        }
        let layers = 0..cache.num_layers();
        shape.check_cache(cache, params, layers.clone())?;
        let tables = shape.tables(ids, params, &model.arch)?;
        self.step.replay(s, &mut self.ws, tables)?;
        shape.record(cache, params, layers)?;
        Ok(&self.out)
    }

    /// The outputs the graph writes.
    pub(crate) fn output(&self) -> &ModelOutput {
        &self.out
    }
}

impl Model {
    /// Captures a decode step of `batch` sequences × `q_len` new tokens (≤ 16) over `cache`
    /// (any mode, contiguous or paged) into a CUDA graph on `s` (a stream the caller created);
    /// `masked` says whether steps carry a padding mask. The model must be on a CUDA device;
    /// `ws` (on it, its arena reserved for `batch · q_len` tokens with
    /// `Workspace::bytes_needed`, or `bytes_needed_for_mode` / `bytes_needed_paged` for a
    /// quantized or paged cache) becomes the graph's. Over a paged cache, steps carry block
    /// tables of at most the pool's page count per sequence
    /// ([`capture_decode_paged`](Self::capture_decode_paged) sets another width). Nothing runs
    /// until [`ModelGraph::step`]. LoRA adapters are not captured.
    pub fn capture_decode<'a>(
        &'a self,
        s: &'a Stream,
        cache: &'a mut KvCache,
        ws: Workspace,
        batch: usize,
        q_len: usize,
        masked: bool,
    ) -> Result<ModelGraph<'a>> {
        let core = ModelStep::capture(self, s, cache, ws, batch, q_len, masked)?;
        Ok(ModelGraph {
            model: self,
            stream: s,
            cache,
            core,
        })
    }

    /// As [`capture_decode`](Self::capture_decode) over a paged cache whose steps carry block
    /// tables of at most `max_pages` pages per sequence: every replay restages its table at
    /// that width (batch × max_pages entries copied per step), a wider table is refused, and
    /// past lengths go up to max_pages · page_size − q_len.
    pub fn capture_decode_paged<'a>(
        &'a self,
        s: &'a Stream,
        cache: &'a mut KvCache,
        ws: Workspace,
        batch: usize,
        q_len: usize,
        masked: bool,
        max_pages: usize,
    ) -> Result<ModelGraph<'a>> {
        let core =
            ModelStep::capture_with(self, s, cache, ws, batch, q_len, masked, Some(max_pages))?;
        Ok(ModelGraph {
            model: self,
            stream: s,
            cache,
            core,
        })
    }
}

impl ModelGraph<'_> {
    /// Queues one step for token ids [batch · q_len] at `params`' lengths (same batch, query
    /// length and mask presence as captured; every past length at most the captured capacity −
    /// q_len; over a contiguous cache every past position written, over a paged one a block
    /// table of the cache's page size, at most the captured width, checked against the pools):
    /// checks it, restages the tables and launches the graph. Returns the logits [batch, q_len,
    /// vocab], valid once the stream reaches them; a contiguous cache records the new
    /// positions.
    pub fn step(&mut self, ids: &[u32], params: &AttnParams) -> Result<&Tensor> {
        self.core
            .step(self.model, self.stream, self.cache, ids, params)
            .map(|o| &o.logits)
    }

    /// The outputs of the last step: final-norm hidden states and logits.
    pub fn output(&self) -> &ModelOutput {
        self.core.output()
    }

    /// The cache the graph reads and writes.
    pub fn cache(&self) -> &KvCache {
        self.cache
    }
}
