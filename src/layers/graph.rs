//! Decode steps captured in CUDA graphs and replayed with new lengths, with no recapture.
//!
//! A step is recorded once over the workspace's staged step tables (`Workspace::stage_step`):
//! every kernel of the step reads positions, past lengths, the mask, token ids, rotary
//! frequencies and — over a paged cache — the block table from that one device region, and
//! attention plans its launch for a bound on the past length fixed at capture (the cache's
//! capacity, or the block table's width × page size) while the keys are cut as the eager
//! launch at the step's own lengths cuts them — so a replay computes exactly what the eager
//! step computes, in every cache mode, contiguous or paged. Before each replay the host checks
//! the new step against the cache and the captured shape (`layers::step_shape`), restages the
//! tables into the same region (one copy on the stream; a block table at the captured width),
//! and launches the graph.
//!
//! [`LayerGraph`] holds one layer's step (the model's is `model::ModelGraph`); both borrow
//! what the graph reads — weights, cache, hidden states — for as long as they live, so none of
//! it can move or change shape under the graph.

use crate::arch::ArchParams;
use crate::cache::KvCache;
use crate::cuda::CudaGraph;
use crate::layers::parallel_decoder::ParallelDecoder;
use crate::layers::params::AttnParams;
use crate::tensor::{Device, Tensor};
use crate::workspace::{StepTables, Workspace};
use crate::{Error, Result, Stream};

pub(crate) use super::step_shape::StepShape;
pub use super::step_shape::MAX_GRAPH_Q_LEN;

/// A captured step: the graph and where its tables sit.
#[derive(Debug)]
pub(crate) struct StepGraph {
    graph: CudaGraph,
    pub shape: StepShape,
}

/// The CUDA stream of a graph, which must be one the caller created (not the legacy default).
fn graph_stream(s: &Stream) -> Result<&crate::cuda::CudaStream> {
    match s {
        Stream::Cuda(c) if !c.raw().is_null() => Ok(c),
        Stream::Cuda(_) => Err(Error::bad_input(
            "graph capture: the legacy default stream cannot be captured; create a stream",
        )),
        Stream::Host => Err(Error::bad_input(
            "graph capture needs a CUDA stream, got the host stream",
        )),
    }
}

impl StepGraph {
    /// Stages the tables of a step of `shape` over an empty cache (token ids `ids`, rotary
    /// tables of `arch`), then records what `record` queues on `s` for that step into a graph.
    /// Nothing runs; the cache's record of what it holds is put back afterwards (the recorded
    /// writes never ran). The workspace's arena must hold every temporary (a capture cannot
    /// allocate), and its step region stays where it is for the graph's life.
    pub(crate) fn capture(
        s: &Stream,
        ws: &mut Workspace,
        shape: StepShape,
        arch: &ArchParams,
        ids: &[u32],
        cache: &mut KvCache,
        record: impl FnOnce(&Stream, &mut Workspace, &mut KvCache, &AttnParams) -> Result<()>,
    ) -> Result<Self> {
        let cs = graph_stream(s)?;
        if ws.device() != Device::Cuda(cs.device()) {
            return Err(Error::bad_input(format!(
                "graph capture: the workspace is on {}, the stream on cuda:{}",
                ws.device(),
                cs.device()
            )));
        }
        let p = shape.template()?;
        ws.stage_step(s, shape.tables(ids, &p, arch)?)?;
        ws.freeze_step_region(true);
        let strict = ws.set_strict(true);
        let mark = ws.mark();
        let held = cache.held_all();
        let graph = CudaGraph::capture(cs, |_| record(s, ws, cache, &p));
        cache.restore_held(held);
        ws.release(mark);
        ws.set_strict(strict);
        ws.unstage();
        Ok(StepGraph {
            graph: graph?,
            shape,
        })
    }

    /// Restages `tables` into the region the graph reads and queues one replay on `s`.
    pub(crate) fn replay(&self, s: &Stream, ws: &mut Workspace, tables: StepTables) -> Result<()> {
        let cs = graph_stream(s)?;
        ws.stage_step(s, tables)?;
        ws.unstage();
        self.graph.launch(cs)
    }
}

/// One layer's decode step captured in a CUDA graph: `hidden += block(hidden)` over the cache
/// at each replay's lengths (see the module docs). Write each step's input into
/// [`LayerGraph::hidden_mut`]; the output replaces it.
#[derive(Debug)]
pub struct LayerGraph<'a> {
    layer: &'a ParallelDecoder,
    stream: &'a Stream,
    hidden: &'a mut Tensor,
    cache: &'a mut KvCache,
    ws: Workspace,
    step: StepGraph,
}

impl ParallelDecoder {
    /// Captures this layer's decode step of `batch` sequences × `q_len` new tokens (≤ 16)
    /// over `cache` (any mode, contiguous or paged) into a CUDA graph on `s` (a stream the
    /// caller created), reading and writing `hidden` [batch · q_len, hidden] in place;
    /// `masked` says whether steps carry a padding mask. `ws` (on the layer's device, its arena
    /// reserved for `batch · q_len` tokens with `Workspace::bytes_needed`, or
    /// `bytes_needed_for_mode` / `bytes_needed_paged` for a quantized or paged cache) becomes
    /// the graph's. Over a paged cache, steps carry block tables of at most the pool's page
    /// count per sequence ([`capture_decode_paged`](Self::capture_decode_paged) sets another
    /// width). Nothing runs until [`LayerGraph::step`].
    pub fn capture_decode<'a>(
        &'a self,
        s: &'a Stream,
        hidden: &'a mut Tensor,
        cache: &'a mut KvCache,
        ws: Workspace,
        batch: usize,
        q_len: usize,
        masked: bool,
    ) -> Result<LayerGraph<'a>> {
        self.capture_with(s, hidden, cache, ws, batch, q_len, masked, None)
    }

    /// As [`capture_decode`](Self::capture_decode) over a paged cache whose steps carry block
    /// tables of at most `max_pages` pages per sequence: every replay restages its table at
    /// that width (batch × max_pages entries copied per step), a wider table is refused, and
    /// past lengths go up to max_pages · page_size − q_len.
    pub fn capture_decode_paged<'a>(
        &'a self,
        s: &'a Stream,
        hidden: &'a mut Tensor,
        cache: &'a mut KvCache,
        ws: Workspace,
        batch: usize,
        q_len: usize,
        masked: bool,
        max_pages: usize,
    ) -> Result<LayerGraph<'a>> {
        self.capture_with(s, hidden, cache, ws, batch, q_len, masked, Some(max_pages))
    }

    fn capture_with<'a>(
        &'a self,
        s: &'a Stream,
        hidden: &'a mut Tensor,
        cache: &'a mut KvCache,
        mut ws: Workspace,
        batch: usize,
        q_len: usize,
        masked: bool,
        max_pages: Option<usize>,
    ) -> Result<LayerGraph<'a>> {
        let shape = StepShape::new(batch, q_len, masked, cache, max_pages)?;
        let step = StepGraph::capture(s, &mut ws, shape, self.arch(), &[], cache, |s, ws, c, p| {
            self.forward(s, hidden, Some(c), p, &[], ws)
        });
        Ok(LayerGraph {
            layer: self,
            stream: s,
            hidden,
            cache,
            ws,
            step: step?,
        })
    }
}

impl LayerGraph<'_> {
    /// Queues one step at `params`' lengths (same batch, query length and mask presence as
    /// captured; every past length at most the captured capacity − q_len; over a contiguous
    /// cache every past position written, over a paged one a block table of the cache's page
    /// size, at most the captured width, checked against the pool): checks it, restages the
    /// tables and launches the graph. A contiguous cache records the new positions.
    pub fn step(&mut self, params: &AttnParams) -> Result<()> {
        let shape = self.step.shape;
        shape.check(params)?;
        let idx = self.layer.layer_idx();
        shape.check_cache(self.cache, params, idx..idx + 1)?;
        let tables = shape.tables(&[], params, self.layer.arch())?;
        self.step.replay(self.stream, &mut self.ws, tables)?;
        shape.record(self.cache, params, idx..idx + 1)
    }

    /// The hidden states the graph reads and writes.
    pub fn hidden_mut(&mut self) -> &mut Tensor {
        self.hidden
    }

    /// The cache the graph reads and writes.
    pub fn cache(&self) -> &KvCache {
        self.cache
    }
}
