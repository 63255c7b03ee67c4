//! Decode-step graphs: a model's decode step captured in a CUDA graph once
//! (`paradec_model_capture_decode`) and replayed at new lengths (`paradec_model_graph_step`),
//! as `Model::capture_decode` does in Rust.
//!
//! Lifetimes across the C boundary: the graph keeps the model alive and forbids changing it
//! (loading, unloading, rank reduction, LoRA adapters fail while a graph of it lives), and
//! holds the cache: calls that take that cache fail until the graph is freed, and freeing the
//! cache meanwhile is deferred to the graph's free. The graph owns its workspace.

use std::ffi::c_void;

use super::handles::*;
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
/// A paged cache (`paradec_cache_create_paged`) is refused with `PARADEC_ERR_UNSUPPORTED`.
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
            // Refused before anything else, with or without CUDA, as `Model::capture_decode`
            // refuses it.
            return Err(cerr(
                PARADEC_ERR_UNSUPPORTED,
                "cache: graph capture over a paged cache is not supported yet (its block table \
                 changes at every step and is not staged with the step's tables): run \
                 paradec_model_forward_paged",
            ));
        }
        capture(m, stream, c, cache, batch, q_len, masked).map(|g| write_out(out, g))
    })
}

#[cfg(feature = "cuda")]
fn capture(
    m: &paradec_model,
    stream: *mut c_void,
    c: &mut crate::cache::KvCache,
    cache: *mut paradec_cache,
    batch: usize,
    q_len: usize,
    masked: bool,
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
    // Planned for the cache's mode: a quantized cache's decode may split its keys more ways
    // than the native plan allows for.
    let bytes = crate::Workspace::bytes_needed_for_mode(
        &model.arch,
        tokens,
        c.capacity,
        model.dtype(),
        c.mode(),
    )?;
    let ws = crate::Workspace::with_capacity(dev, model.dtype(), bytes)?;
    let s = stream_for(dev, stream)?;
    let core = crate::model::graph::ModelStep::capture(&model, &s, c, ws, batch, q_len, masked)?;
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
fn capture(
    _m: &paradec_model,
    _stream: *mut c_void,
    _c: &mut crate::cache::KvCache,
    _cache: *mut paradec_cache,
    _batch: usize,
    _q_len: usize,
    _masked: bool,
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
/// argument is checked before anything is queued; the cache records the new positions.
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
        step(g, stream, &ids, &p, &logits)
    })
}

#[cfg(feature = "cuda")]
fn step(
    g: &mut paradec_model_graph,
    stream: *mut c_void,
    ids: &View,
    p: &crate::AttnParams,
    logits: &View,
) -> CResult<()> {
    let g = &mut g.inner;
    let model = read::<crate::Model>(&g.model)?;
    let vocab = model.arch.vocab;
    let idv = host_ids(ids, p, vocab)?;
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
    // SAFETY: the graph holds the cache handle (lent: no other call uses it) and keeps it
    // alive until the graph is freed; calls on the graph do not overlap (its contract).
    let cache = unsafe { &mut (*g.cache).inner };
    let out = g.core.step(&model, &s, cache, &idv, p)?;
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
    _p: &crate::AttnParams,
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
