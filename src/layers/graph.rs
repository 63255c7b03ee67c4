//! Decode steps captured in CUDA graphs and replayed with new lengths, with no recapture.
//!
//! A step is recorded once over the workspace's staged step tables (`Workspace::stage_step`):
//! every kernel of the step reads positions, past lengths, the mask, token ids and rotary
//! frequencies from that one device region, and attention plans its launch for a bound on the
//! past length fixed at capture (the cache's capacity) while each sequence's keys are cut as
//! an eager launch for its own length would cut them — so a replay computes exactly what the
//! eager step computes. Before each replay the host checks the new step against the cache and
//! the captured shape, restages the tables into the same region (one copy on the stream), and
//! launches the graph.
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

/// Most query tokens per sequence a captured step takes (decode attention's limit).
pub const MAX_GRAPH_Q_LEN: usize = 16;

/// What a captured step is fixed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepShape {
    pub batch: usize,
    pub q_len: usize,
    /// Whether the step carries a padding mask (its rows then have `capacity` slots).
    pub masked: bool,
    /// The cache's capacity: the mask stride, and past lengths up to `capacity − q_len`.
    pub capacity: usize,
}

impl StepShape {
    pub(crate) fn new(batch: usize, q_len: usize, masked: bool, cache: &KvCache) -> Result<Self> {
        if batch == 0 || q_len == 0 || q_len > MAX_GRAPH_Q_LEN {
            return Err(Error::bad_input(format!(
                "graph capture: batch {batch} and query length {q_len} must be positive, the \
                 query length at most {MAX_GRAPH_Q_LEN} (a decode step)"
            )));
        }
        if cache.is_paged() {
            // The block table changes at every step (pages are added as sequences grow) and
            // its launchers upload it per call, not from the staged step region.
            return Err(Error::unsupported(
                "graph capture over a paged KV cache is not supported yet: its block table \
                 changes at every step and is not staged with the step's tables",
            ));
        }
        if cache.mode().is_quantized() {
            // Its launchers upload their tables per call (not from the staged step region).
            return Err(Error::unsupported(format!(
                "graph capture over a quantized KV cache (mode {}) is not supported yet",
                cache.mode().name()
            )));
        }
        if cache.batch != batch {
            return Err(Error::bad_input(format!(
                "graph capture: the KV cache is for batch {}, the step has {batch}",
                cache.batch
            )));
        }
        if q_len > cache.capacity {
            return Err(Error::CapacityExceeded(format!(
                "graph capture: {q_len} new tokens exceed the cache capacity {}",
                cache.capacity
            )));
        }
        Ok(StepShape {
            batch,
            q_len,
            masked,
            capacity: cache.capacity,
        })
    }

    /// The largest past length a replay may have.
    pub(crate) fn max_past(&self) -> usize {
        self.capacity - self.q_len
    }

    /// A step of this shape over an empty cache (what the capture records with).
    pub(crate) fn template(&self) -> Result<AttnParams> {
        let p = AttnParams::new(self.batch, self.q_len);
        if self.masked {
            p.with_attention_mask(&vec![1; self.batch * self.q_len], self.q_len)
        } else {
            Ok(p)
        }
    }

    /// Checks that `p` is a step of this shape.
    pub(crate) fn check(&self, p: &AttnParams) -> Result<()> {
        p.validate()?;
        if p.block_table.is_some() {
            return Err(Error::bad_input(
                "graph step: the call carries a block table, but the graph was captured over a \
                 contiguous KV cache",
            ));
        }
        if p.batch != self.batch || p.q_len != self.q_len {
            return Err(Error::bad_input(format!(
                "graph step: batch {} × {} tokens, but the graph was captured for batch {} × {}",
                p.batch, p.q_len, self.batch, self.q_len
            )));
        }
        if p.mask.is_some() != self.masked {
            return Err(Error::bad_input(format!(
                "graph step: the graph was captured {} a padding mask, the step has {}",
                if self.masked { "with" } else { "without" },
                if p.mask.is_some() { "one" } else { "none" }
            )));
        }
        if let Some((b, &l)) = p
            .past_len
            .iter()
            .enumerate()
            .find(|(_, &l)| l > self.max_past())
        {
            return Err(Error::CapacityExceeded(format!(
                "graph step: sequence {b} has {l} past tokens; with {} new ones that exceeds the \
                 cache capacity {}",
                self.q_len, self.capacity
            )));
        }
        Ok(())
    }

    /// The step tables of `p` as the graph reads them.
    pub(crate) fn tables(&self, ids: &[u32], p: &AttnParams, arch: &ArchParams) -> StepTables {
        p.step_tables(
            ids,
            &arch.rotary,
            Some(self.max_past()),
            self.masked.then_some(self.capacity),
        )
    }
}

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
        ws.stage_step(s, shape.tables(ids, &p, arch))?;
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
    /// over `cache` into a CUDA graph on `s` (a stream the caller created), reading and
    /// writing `hidden` [batch · q_len, hidden] in place; `masked` says whether steps carry a
    /// padding mask. `ws` (on the layer's device, its arena reserved with
    /// `Workspace::bytes_needed` for `batch · q_len` tokens) becomes the graph's. Nothing runs
    /// until [`LayerGraph::step`].
    pub fn capture_decode<'a>(
        &'a self,
        s: &'a Stream,
        hidden: &'a mut Tensor,
        cache: &'a mut KvCache,
        mut ws: Workspace,
        batch: usize,
        q_len: usize,
        masked: bool,
    ) -> Result<LayerGraph<'a>> {
        let shape = StepShape::new(batch, q_len, masked, cache)?;
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
    /// captured; every past length at most the cache's capacity − q_len and written): checks
    /// it, restages the tables and launches the graph. The cache records the new positions.
    pub fn step(&mut self, params: &AttnParams) -> Result<()> {
        self.step.shape.check(params)?;
        let idx = self.layer.layer_idx();
        self.cache
            .check_positions(idx, &params.past_len, params.q_len)?;
        let tables = self.step.shape.tables(&[], params, self.layer.arch());
        self.step.replay(self.stream, &mut self.ws, tables)?;
        self.cache
            .record_written(idx, &params.past_len, params.q_len)
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
