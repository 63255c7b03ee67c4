//! Decode-step graphs: a model's decode step captured in a CUDA graph once
//! (`paradec_model_capture_decode`) and replayed at new lengths (`paradec_model_graph_step`),
//! as `Model::capture_decode` does in Rust; over a paged cache, captured with a block table
//! width (`paradec_model_capture_decode_paged`) and replayed with each step's block table
//! (`paradec_model_graph_step_paged`), as `Model::capture_decode_paged` does.
//!
//! Lifetimes across the C boundary: the graph keeps the model alive and forbids changing it
//! (loading, unloading, rank reduction, LoRA adapters fail while a graph of it lives), and
//! holds the cache: calls that take that cache fail until the graph is freed, and freeing the
//! cache meanwhile is deferred to the graph's free. The graph owns its workspace.

use std::ffi::c_void;

use super::handles::*;
use super::kv_quant::{paradec_block_table, table_arg, Table};
use super::paradec_status::{self, *};
use super::tensor::*;
use super::{cerr, guard, out_ptr, req_mut, write_out, CResult};

/// A model's decode step captured in a CUDA graph.
pub struct paradec_model_graph {
    #[cfg(feature = "cuda")]
    inner: GraphInner,
}

#[cfg(feature = "cuda")]
struct GraphInner {
    model: std::sync::Arc<SharedModel>,
    /// The caller's cache handle, lent to the graph until it is freed.
    cache: *mut paradec_cache,
    core: crate::model::graph::ModelStep,
}

/// Captures a decode step of `model` (loaded on a CUDA device) for `batch` sequences ×
/// `q_len` new tokens (1…16) over `cache` into a CUDA graph recorded on `stream` (a stream the
/// caller created: the legacy default stream cannot be captured). `masked` says whether the
/// steps will carry a padding mask. Nothing runs; the graph sizes and owns its own workspace.
/// A paged cache (`paradec_cache_create_paged`) is refused with `PARADEC_ERR_UNSUPPORTED`:
/// capture it with `paradec_model_capture_decode_paged`.
///
/// Ownership: the caller owns `*out` (free with `paradec_model_graph_free`). The graph keeps
/// `model` alive and unchangeable, and holds `cache`, until it is freed (module docs).
#[no_mangle]
pub extern "C" fn paradec_model_capture_decode(
    model: *const paradec_model,
    stream: *mut c_void,
    cache: *mut paradec_cache,
    batch: usize,
    q_len: usize,
    masked: bool,
    out: *mut *mut paradec_model_graph,
) -> paradec_status {
    guard(|| {
        let out = out_ptr(out, "out")?;
        let m = super::req(model, "model")?;
        let c = cache_mut(cache)?;
        if c.is_paged() {
            // Refused before anything else, with or without CUDA.
            return Err(cerr(
                PARADEC_ERR_UNSUPPORTED,
                "cache: a paged cache (paradec_cache_create_paged) is captured with \
                 paradec_model_capture_decode_paged, whose steps carry their block table \
                 (paradec_model_graph_step_paged)",
            ));
        }
        capture(m, stream, c, cache, batch, q_len, masked, None).map(|g| write_out(out, g))
    })
}

/// As `paradec_model_capture_decode`, over a paged cache (`paradec_cache_create_paged`, any
/// mode): the steps (`paradec_model_graph_step_paged`) carry block tables of at most
/// `max_pages` pages per sequence, restaged at that width at every step, so a sequence's past
/// length goes up to max_pages · page_size − q_len. The graph's workspace is planned as
/// `paradec_workspace_bytes_paged` plans a forward over pages (without the outputs, which the
/// graph keeps apart). Nothing runs; the pools are not touched.
///
/// Errors (nothing made, `*out` untouched), in this order and with or without CUDA up to the
/// last: a NULL `out`, `model` or `cache` (`PARADEC_ERR_NULL_ARGUMENT`); a cache a live graph
/// holds, a contiguous cache (capture it with `paradec_model_capture_decode`), `max_pages` 0 or
/// above the pools' page count, `batch` 0, `q_len` 0 or above 16 (`PARADEC_ERR_INVALID_ARGUMENT`);
/// a pool too small to give each sequence its own pages for one step of `q_len` tokens, or
/// `q_len` above max_pages · page_size (`PARADEC_ERR_CAPACITY`); then without CUDA
/// `PARADEC_ERR_NO_DEVICE`, and with it a model on the host (`PARADEC_ERR_DEVICE`), a cache of
/// another layer count (`PARADEC_ERR_INVALID_ARGUMENT`) or a failed capture
/// (`PARADEC_ERR_CUDA`, `PARADEC_ERR_OUT_OF_MEMORY`).
///
/// Ownership: as `paradec_model_capture_decode`: the caller owns `*out` (free with
/// `paradec_model_graph_free`); the graph keeps `model` alive and unchangeable, and holds
/// `cache`, until it is freed.
#[no_mangle]
pub extern "C" fn paradec_model_capture_decode_paged(
    model: *const paradec_model,
    stream: *mut c_void,
    cache: *mut paradec_cache,
    batch: usize,
    q_len: usize,
    masked: bool,
    max_pages: usize,
    out: *mut *mut paradec_model_graph,
) -> paradec_status {
    guard(|| {
        let out = out_ptr(out, "out")?;
        let m = super::req(model, "model")?;
        let c = cache_mut(cache)?;
        let Some(num_pages) = c.num_pages() else {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                "cache: a contiguous cache: capture it with paradec_model_capture_decode (the \
                 _paged capture takes a paged cache, made with paradec_cache_create_paged)",
            ));
        };
        if max_pages == 0 || max_pages > num_pages {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!(
                    "max_pages: {max_pages} pages per sequence; a block table over this cache \
                     holds 1 ..= {num_pages} (the pages of each layer's pool)"
                ),
            ));
        }
        // The step's own bounds, checked here so that they fail alike with or without CUDA
        // (the capture checks them again).
        crate::layers::step_shape::StepShape::new(batch, q_len, masked, c, Some(max_pages))?;
        capture(m, stream, c, cache, batch, q_len, masked, Some(max_pages))
            .map(|g| write_out(out, g))
    })
}

/// The capture of both calls: `max_pages` is given exactly over a paged cache.
#[cfg(feature = "cuda")]
#[allow(clippy::too_many_arguments)]
fn capture(
    m: &paradec_model,
    stream: *mut c_void,
    c: &mut crate::cache::KvCache,
    cache: *mut paradec_cache,
    batch: usize,
    q_len: usize,
    masked: bool,
    max_pages: Option<usize>,
) -> CResult<*mut paradec_model_graph> {
    use crate::tensor::Device;
    use std::sync::atomic::Ordering;
    let model = read::<crate::Model>(&m.inner)?;
    let dev = model.device();
    if dev == Device::Cpu {
        return Err(cerr(
            PARADEC_ERR_DEVICE,
            "model: graphs need a model loaded on a CUDA device",
        ));
    }
    let tokens = batch
        .checked_mul(q_len)
        .ok_or_else(|| cerr(PARADEC_ERR_INVALID_ARGUMENT, "batch × q_len overflows"))?;
    let bytes = match (max_pages, c.page_size()) {
        // Over pages, in every mode: what a forward over pages takes (the pages' decode
        // kernel, the block table uploads), for tables of the captured width.
        (Some(width), Some(page_size)) => crate::Workspace::bytes_needed_paged(
            &model.arch,
            tokens,
            width,
            page_size,
            model.dtype(),
        )?,
        // Planned for the cache's mode: a quantized cache's decode may split its keys more
        // ways than the native plan allows for.
        _ => crate::Workspace::bytes_needed_for_mode(
            &model.arch,
            tokens,
            c.capacity,
            model.dtype(),
            c.mode(),
        )?,
    };
    let ws = crate::Workspace::with_capacity(dev, model.dtype(), bytes)?;
    let s = stream_for(dev, stream)?;
    let core = crate::model::graph::ModelStep::capture_with(
        &model, &s, c, ws, batch, q_len, masked, max_pages,
    )?;
    // Counted under the read lock: a change to the model (under the write lock) sees it.
    m.inner.graphs.fetch_add(1, Ordering::AcqRel);
    drop(model);
    // The cache is the graph's until it is freed.
    req_mut(cache, "cache")?.lent = true;
    Ok(Box::into_raw(Box::new(paradec_model_graph {
        inner: GraphInner {
            model: m.inner.clone(),
            cache,
            core,
        },
    })))
}

#[cfg(not(feature = "cuda"))]
#[allow(clippy::too_many_arguments)]
fn capture(
    _m: &paradec_model,
    _stream: *mut c_void,
    _c: &mut crate::cache::KvCache,
    _cache: *mut paradec_cache,
    _batch: usize,
    _q_len: usize,
    _masked: bool,
    _max_pages: Option<usize>,
) -> CResult<*mut paradec_model_graph> {
    Err(cerr(
        PARADEC_ERR_NO_DEVICE,
        "graphs need CUDA, and paradec was built without the `cuda` feature",
    ))
}

/// Replays the captured step on `stream` for token ids `ids` ([batch, q_len], host int32 or
/// int64) at `params`' lengths (same batch, query length and mask presence as captured; every
/// past length written to the cache and at most its capacity − q_len), and writes the logits
/// `[batch, q_len, vocab]` into `logits`: CUDA memory of the model's device and dtype (queued
/// on the stream), or host memory of a float dtype (the call then waits for the step). Every
/// argument is checked before anything is queued; the cache records the new positions. A graph
/// captured over a paged cache (`paradec_model_capture_decode_paged`) is refused with
/// `PARADEC_ERR_INVALID_ARGUMENT`: its steps are `paradec_model_graph_step_paged`.
///
/// Ownership: all borrowed for the call.
#[no_mangle]
pub extern "C" fn paradec_model_graph_step(
    graph: *mut paradec_model_graph,
    stream: *mut c_void,
    ids: *const paradec_tensor,
    params: *const paradec_attn_params,
    logits: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        let g = req_mut(graph, "graph")?;
        let ids = view(ids, "ids")?;
        let p = attn_params(params)?;
        let logits = view(logits, "logits")?;
        step(g, stream, &ids, p, None, &logits)
    })
}

/// As `paradec_model_graph_step`, for a graph captured over a paged cache
/// (`paradec_model_capture_decode_paged`), through the step's block table: sequence b's
/// positions `0 .. past_len[b] + q_len` live in its first `page_count[b]` pages of
/// `block_table->page_ids[b, …]`, as for `paradec_model_forward_paged` (the same argument: int32
/// `page_ids` `[batch, max_pages]`, int32 / int64 `page_count` `[batch]`, host memory, read
/// during the call). The table may be narrower than the captured width (it is restaged at that
/// width), not wider. Every argument is checked before anything is queued — the table's tensors
/// and its values against the pools as `paradec_model_forward_paged` checks them (same errors),
/// and against the capture: a wider table (`PARADEC_ERR_CAPACITY`), past lengths beyond
/// max_pages · page_size − q_len (`PARADEC_ERR_CAPACITY`) — and nothing is written on an
/// error. A graph captured over a contiguous cache is refused with
/// `PARADEC_ERR_INVALID_ARGUMENT` (its steps are `paradec_model_graph_step`). Without CUDA
/// (where no graph can be made) the call checks its arguments and returns
/// `PARADEC_ERR_NO_DEVICE`.
///
/// Ownership: all borrowed for the call; nothing is kept (the pages are the cache's).
#[no_mangle]
pub extern "C" fn paradec_model_graph_step_paged(
    graph: *mut paradec_model_graph,
    stream: *mut c_void,
    ids: *const paradec_tensor,
    params: *const paradec_attn_params,
    block_table: *const paradec_block_table,
    logits: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        let g = req_mut(graph, "graph")?;
        let ids = view(ids, "ids")?;
        let p = attn_params(params)?;
        let table = table_arg(block_table, p.batch)?;
        let logits = view(logits, "logits")?;
        step(g, stream, &ids, p, Some(table), &logits)
    })
}

/// The step of both calls: `table` is given by `paradec_model_graph_step_paged` only.
#[cfg(feature = "cuda")]
fn step(
    g: &mut paradec_model_graph,
    stream: *mut c_void,
    ids: &View,
    mut p: crate::AttnParams,
    table: Option<Table>,
    logits: &View,
) -> CResult<()> {
    let g = &mut g.inner;
    // SAFETY: the graph holds the cache handle (lent: no other call uses it) and keeps it
    // alive until the graph is freed; calls on the graph do not overlap (its contract).
    let cache = unsafe { &mut (*g.cache).inner };
    match (cache.page_size(), table) {
        (Some(page_size), Some(t)) => p = p.with_block_table(t.into_paged(page_size)),
        (Some(_), None) => {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                "graph: captured over a paged cache (paradec_model_capture_decode_paged): step \
                 it with paradec_model_graph_step_paged and the step's block table",
            ))
        }
        (None, Some(_)) => {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                "graph: captured over a contiguous cache (paradec_model_capture_decode): step \
                 it with paradec_model_graph_step (a block table addresses a paged cache)",
            ))
        }
        (None, None) => {}
    }
    let model = read::<crate::Model>(&g.model)?;
    let vocab = model.arch.vocab;
    let idv = host_ids(ids, &p, vocab)?;
    want_float(logits)?;
    if logits.numel != p.tokens() * vocab || logits.shape.last() != Some(&vocab) {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "logits: expected [{}, {}, {vocab}], got shape {:?}",
                p.batch, p.q_len, logits.shape
            ),
        ));
    }
    let dev = model.device();
    if let Loc::Cuda(d) = logits.loc {
        if crate::tensor::Device::Cuda(d) != dev || logits.dtype != model.dtype() {
            return Err(cerr(
                PARADEC_ERR_DEVICE,
                format!(
                    "logits: CUDA memory must be on the model's {dev} in {}, got cuda:{d} {}",
                    model.dtype(),
                    logits.dtype
                ),
            ));
        }
    }
    let s = stream_for(dev, stream)?;
    let out = g.core.step(&model, &s, cache, &idv, &p)?;
    match logits.loc {
        Loc::Host => logits.store_floats(&out.logits.to_host()?.f32_values()?),
        Loc::Cuda(d) => {
            let mut dst = super::cuda::borrow(logits, d)?;
            let (
                crate::tensor::Storage::Cuda(src),
                crate::tensor::Storage::Cuda(dst),
                crate::Stream::Cuda(cs),
            ) = (out.logits.storage(), dst.storage_mut(), &s)
            else {
                return Err(cerr(PARADEC_ERR_DEVICE, "logits: not device memory"));
            };
            dst.copy_from_device_async(src, cs)?;
        }
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn step(
    _g: &mut paradec_model_graph,
    _stream: *mut c_void,
    _ids: &View,
    _p: crate::AttnParams,
    _table: Option<Table>,
    _logits: &View,
) -> CResult<()> {
    Err(cerr(
        PARADEC_ERR_NO_DEVICE,
        "graphs need CUDA, and paradec was built without the `cuda` feature",
    ))
}

/// Frees a graph: the model may change again, and the cache is given back (or freed, when
/// `paradec_cache_free` came meanwhile). NULL is a no-op.
///
/// Ownership: takes `graph`; do not use it again.
#[no_mangle]
pub extern "C" fn paradec_model_graph_free(graph: *mut paradec_model_graph) {
    let _ = guard(|| {
        if graph.is_null() {
            return Ok(());
        }
        // SAFETY: non-NULL graphs come from `Box::into_raw` above; the caller gives it up.
        let g = unsafe { Box::from_raw(graph) };
        #[cfg(feature = "cuda")]
        {
            let GraphInner { model, cache, core } = g.inner;
            drop(core);
            model
                .graphs
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            if let Ok(c) = req_mut(cache, "cache") {
                c.lent = false;
                if c.free_when_returned {
                    paradec_cache_free(cache);
                }
            }
        }
        #[cfg(not(feature = "cuda"))]
        drop(g);
        Ok(())
    });
}
