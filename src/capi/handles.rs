//! Layer and model level: opaque handles (model, layer, cache, workspace, LoRA adapter,
//! intermediates, prepared quantized weight) with create / free pairs, and the calls on them.
//!
//! Threading: a handle passed as `const` may be used by several threads at once (a model or a
//! layer runs concurrent forwards, each with its own cache and workspace); a call taking a
//! non-`const` handle must not overlap any other call on that handle. A layer taken from a
//! model shares the model (both stay valid until both are freed).

use std::ffi::{c_char, c_void};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::kv_quant::{
    cache_mode, mode_code, paradec_block_table, table_arg, PARADEC_CACHE_MODE_NATIVE,
};
use super::paradec_status::{self, *};
use super::tensor::*;
use super::{cerr, cstr, guard, out_ptr, req, req_mut, slice_arg, write_out, CErr, CResult};
use crate::arch::{ArchParams, Family};
use crate::cache::KvCache;
use crate::kv_quant::KvCacheMode;
use crate::layers::lora::Lora;
use crate::layers::parallel_decoder::{Intermediates, ParallelDecoder};
use crate::layers::params::AttnParams;
use crate::quant::{PreparedQuant, QuantConfig, QuantWeight};
use crate::tensor::{DType, Device, Storage, Tensor};
use crate::workspace::Workspace;
use crate::{Model, Stream, Weights};

// ---- handles ------------------------------------------------------------------------------

/// A loaded model (embedding, decoder layers, final norm, LM head).
pub struct paradec_model {
    pub(super) inner: Arc<SharedModel>,
}

/// A model shared by its handle, the layer handles taken from it and the graphs captured from
/// it. While a graph lives, the model may not change (a graph replays its device addresses).
pub(super) struct SharedModel {
    model: RwLock<Model>,
    /// Graphs captured from the model and not yet freed.
    pub(super) graphs: std::sync::atomic::AtomicUsize,
}

impl std::ops::Deref for SharedModel {
    type Target = RwLock<Model>;
    fn deref(&self) -> &RwLock<Model> {
        &self.model
    }
}

/// The model, locked for a change: refused while a captured graph reads it.
fn write_model(m: &SharedModel) -> CResult<RwLockWriteGuard<'_, Model>> {
    // Checked under the write lock: a capture counts itself while holding the read lock.
    let w = write(&m.model)?;
    let n = m.graphs.load(std::sync::atomic::Ordering::Acquire);
    if n > 0 {
        return Err(cerr(
            PARADEC_ERR_INVALID_ARGUMENT,
            format!(
                "the model cannot change while {n} captured graph(s) of it live: free them \
                 (paradec_model_graph_free) first"
            ),
        ));
    }
    Ok(w)
}

enum LayerRef {
    /// The layer and the architecture it was built with.
    Own(Box<ParallelDecoder>, Box<ArchParams>),
    OfModel(Arc<SharedModel>, usize),
}

/// One parallel-residual decoder layer: built from caller tensors, or layer i of a model.
pub struct paradec_layer {
    inner: LayerRef,
}

/// A KV cache: per layer, K and V of [batch, capacity, kv_heads, head_dim], stored in the
/// cache's mode (the dtype, or quantized: see `paradec_cache_options`).
pub struct paradec_cache {
    pub(super) inner: KvCache,
    /// Set while a captured graph holds the cache: other calls refuse it.
    pub(super) lent: bool,
    /// `paradec_cache_free` came while the cache was lent: the graph frees it when it is freed.
    pub(super) free_when_returned: bool,
}

/// The cache of a call, unless a captured graph holds it.
pub(super) fn cache_mut<'a>(cache: *mut paradec_cache) -> CResult<&'a mut KvCache> {
    let c = req_mut(cache, "cache")?;
    if c.lent {
        return Err(cerr(
            PARADEC_ERR_INVALID_ARGUMENT,
            "cache: a captured graph holds it (paradec_model_graph_step uses it; \
             paradec_model_graph_free gives it back)",
        ));
    }
    Ok(&mut c.inner)
}

/// The scratch of forwards on one device and dtype (one per stream / thread).
pub struct paradec_workspace {
    pub(crate) inner: Workspace,
}

/// A PEFT LoRA adapter read from its directory.
pub struct paradec_lora {
    inner: Lora,
}

/// The intermediates of one `paradec_layer_forward_interm` call.
pub struct paradec_interm {
    inner: Intermediates,
    shapes: Vec<Vec<i64>>,
}

/// A quantized (GPTQ or EXL2) linear weight, prepared once from the caller's packed tensors.
pub struct paradec_quant_weight {
    pub(crate) inner: QuantWeight,
    /// The device layout for one compute dtype (`paradec_quant_weight_to_device`), if placed.
    pub(crate) prepared: Option<PreparedQuant>,
}

// ---- plain structs ------------------------------------------------------------------------

/// A named tensor: a checkpoint name and the caller's descriptor.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct paradec_named_tensor {
    /// The tensor's name (NUL-terminated UTF-8).
    pub name: *const c_char,
    /// The caller's tensor.
    pub tensor: *const paradec_tensor,
}

/// Options of `paradec_model_load`. Begins with its own size: set `struct_size =
/// sizeof(paradec_model_options)` (or call `paradec_model_options_init`), so later versions
/// can add fields without breaking callers built against this one.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct paradec_model_options {
    /// `sizeof(paradec_model_options)`.
    pub struct_size: usize,
    /// Where the weights go after loading (default: the CPU).
    pub device: paradec_device,
}

/// One call's batch: sizes, what is already cached, padding.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct paradec_attn_params {
    /// `sizeof(paradec_attn_params)`.
    pub struct_size: usize,
    /// Sequences in the call.
    pub batch: usize,
    /// New tokens per sequence in this call.
    pub q_len: usize,
    /// NULL (nothing cached) or `batch` values: tokens already in the cache per sequence; the
    /// new ones go to slots `past_len[b] .. past_len[b] + q_len`.
    pub past_len: *const i64,
    /// NULL (no padding) or `[batch, mask_slots]` 0/1 values over cache slots (HF's
    /// `attention_mask`, 1 = attend). Leading zeros of a row are that sequence's left padding.
    pub attention_mask: *const i64,
    /// Slots per row of `attention_mask` (≥ `past_len[b] + q_len`).
    pub mask_slots: usize,
    /// NULL (derived: minus each row's left padding, as HF's `cumsum(mask) − 1`) or `batch`
    /// values added to each sequence's positions.
    pub position_offset: *const i64,
}

/// What a model needs, in bytes, before loading it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct paradec_memory {
    /// `sizeof(paradec_memory)`, set by the caller.
    pub struct_size: usize,
    /// The checkpoint's tensors as stored (an upper bound of what loading keeps).
    pub weight_bytes: usize,
    /// A KV cache of the asked batch and capacity, all layers, K and V.
    pub cache_bytes: usize,
    /// The workspace's peak for a prefill of batch × capacity tokens (logits included).
    pub workspace_bytes: usize,
}

/// Options of a KV cache (`paradec_cache_create_with_options`,
/// `paradec_cache_create_for_layer_with_options`, `paradec_cache_bytes`). Begins with its own
/// size: set `struct_size = sizeof(paradec_cache_options)` (or call
/// `paradec_cache_options_init`), so later versions can add fields without breaking callers
/// built against this one.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct paradec_cache_options {
    /// `sizeof(paradec_cache_options)`.
    pub struct_size: usize,
    /// How K and V are stored: a `PARADEC_CACHE_MODE_*` value (default: native).
    pub mode: i32,
    /// FP8 E4M3 only: NULL (every scale 1.0) or `n_k_scales` = num_layers · kv_heads scales of
    /// K, laid out [num_layers, kv_heads] (a checkpoint's `k_scale` per layer and KV head),
    /// each positive and finite. Read during the call (the cache keeps a copy).
    pub k_scales: *const f32,
    /// Values at `k_scales` (0 when NULL).
    pub n_k_scales: usize,
    /// FP8 E4M3 only: V's scales, as `k_scales`.
    pub v_scales: *const f32,
    /// Values at `v_scales` (0 when NULL).
    pub n_v_scales: usize,
}

/// What a KV cache is (`paradec_cache_describe`). The fields from `page_size` on came with
/// the paged cache: a caller built against a header without them (its `struct_size` ends at
/// `bytes`) gets the fields it has room for.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct paradec_cache_info {
    /// `sizeof(paradec_cache_info)`, set by the caller; on success, the bytes written.
    pub struct_size: usize,
    /// Its `PARADEC_CACHE_MODE_*`.
    pub mode: i32,
    /// Layers it holds.
    pub num_layers: usize,
    /// Sequences (0 for a paged cache: each call's block table gives its own).
    pub batch: usize,
    /// Positions each sequence can hold (for a paged cache, the pool's num_pages · page_size:
    /// the most one sequence can reach).
    pub capacity: usize,
    /// Key / value heads per position.
    pub kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// The dtype it was made for: the storage of a native cache, what a quantized one is read
    /// back as.
    pub dtype: paradec_dtype,
    /// Where its storage lives.
    pub device: paradec_device,
    /// Bytes of its storage: K and V of every layer (values, or codes, run scales and E4M3
    /// head scales), as `paradec_cache_bytes` predicts.
    pub bytes: usize,
    /// Positions per page of a paged cache (`paradec_cache_create_paged`); 0 for a contiguous
    /// one.
    pub page_size: usize,
    /// Pages in each layer's pool of a paged cache; 0 for a contiguous one.
    pub num_pages: usize,
}

/// `struct_size` of the first `paradec_cache_info` (the fields up to `bytes`).
const CACHE_INFO_V1: usize = std::mem::offset_of!(paradec_cache_info, page_size);

/// GPT-J.
pub const PARADEC_FAMILY_GPTJ: i32 = 0;
/// GPT-NeoX.
pub const PARADEC_FAMILY_GPT_NEOX: i32 = 1;
/// Phi.
pub const PARADEC_FAMILY_PHI: i32 = 2;
/// Falcon (all variants).
pub const PARADEC_FAMILY_FALCON: i32 = 3;
/// Cohere.
pub const PARADEC_FAMILY_COHERE: i32 = 4;
/// Cohere2.
pub const PARADEC_FAMILY_COHERE2: i32 = 5;

/// What a loaded model is.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct paradec_model_info {
    /// `sizeof(paradec_model_info)`, set by the caller.
    pub struct_size: usize,
    /// A `PARADEC_FAMILY_*` value.
    pub family: i32,
    /// Decoder layers.
    pub num_layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention (query) heads.
    pub heads: usize,
    /// Key / value heads.
    pub kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Vocabulary size (the logits' last dimension).
    pub vocab: usize,
    /// Bytes the weights take where they are.
    pub weight_bytes: usize,
    /// Parameters of the decoder layers (quantized weights count as K·N).
    pub layer_numel: usize,
    /// True when any projection is GPTQ or EXL2.
    pub is_quant: bool,
}

/// `paradec_interm_get`'s `which`: the norm output feeding attention.
pub const PARADEC_INTERM_POST_NORM: i32 = 0;
/// The MLP's norm output (two-norm families only).
pub const PARADEC_INTERM_POST_NORM_MLP: i32 = 1;
/// Attention context before the output projection.
pub const PARADEC_INTERM_ATTN_OUTPUT: i32 = 2;
/// The input of the MLP's last projection.
pub const PARADEC_INTERM_PRE_DOWN: i32 = 3;
/// The attention branch's output (bias included, no residual).
pub const PARADEC_INTERM_HIDDEN_STATES_ATTN: i32 = 4;
/// The MLP branch's output (bias included, no residual).
pub const PARADEC_INTERM_HIDDEN_STATES_MLP: i32 = 5;
/// The block's output.
pub const PARADEC_INTERM_HIDDEN_STATES: i32 = 6;

// ---- sized structs ------------------------------------------------------------------------

/// Reads a struct that begins with its size: smaller than this version's is refused; larger
/// is accepted when the bytes this version does not know are zero.
fn read_sized<T: Copy>(p: *const T, name: &str) -> CResult<T> {
    let r = req(p, name)?;
    let size = std::mem::size_of::<T>();
    // SAFETY: every such struct begins with `size_t struct_size` (the caller initialized it).
    let given = unsafe { *(p as *const usize) };
    if given < size {
        return Err(cerr(
            PARADEC_ERR_STRUCT_SIZE,
            format!("{name}.struct_size is {given}; this paradec needs {size} (sizeof({name}) of its header)"),
        ));
    }
    if given > size {
        // SAFETY: the caller promises `struct_size` readable bytes at `p`.
        let extra = unsafe { std::slice::from_raw_parts((p as *const u8).add(size), given - size) };
        if let Some(i) = extra.iter().position(|&b| b != 0) {
            return Err(cerr(
                PARADEC_ERR_STRUCT_SIZE,
                format!(
                    "{name}: byte {} is set, but this paradec knows only the first {size} bytes (a newer header's field?)",
                    size + i
                ),
            ));
        }
    }
    Ok(*r)
}

/// Checks the size of an output struct that grew across versions before the work: at least
/// `min` bytes (its first version). Returns the pointer and the bytes to write
/// (`write_prefix`): this version's size, or the caller's when smaller.
fn sized_out_since<T>(p: *mut T, name: &str, min: usize) -> CResult<(*mut T, usize)> {
    let p = out_ptr(p, name)?;
    // SAFETY: non-NULL; the caller set `struct_size`, the struct's first field.
    let given = unsafe { *(p as *const usize) };
    if given < min {
        return Err(cerr(
            PARADEC_ERR_STRUCT_SIZE,
            format!(
                "{name}.struct_size is {given}; this paradec needs {} (sizeof({name}) of its \
                 header; {min} for a header before its last fields)",
                std::mem::size_of::<T>()
            ),
        ));
    }
    Ok((p, given.min(std::mem::size_of::<T>())))
}

/// Writes the first `n` bytes of `v` (from `sized_out_since`) to `p`, with `struct_size` set
/// to `n`: a caller built against an older header gets the fields it has room for.
fn write_prefix<T: Copy>(p: *mut T, v: T, n: usize) {
    let n = n.min(std::mem::size_of::<T>());
    // SAFETY: `p` is non-NULL (checked by `sized_out_since`) and the caller promises
    // `struct_size` ≥ n writable bytes there; a byte copy (padding included) of a plain
    // `repr(C)` value of `Copy` fields; `n` ≥ the size of the leading `size_t struct_size`
    // (every version holds it), which is then set to the bytes written.
    unsafe {
        std::ptr::copy_nonoverlapping((&v as *const T).cast::<u8>(), p.cast::<u8>(), n);
        p.cast::<usize>().write(n);
    }
}

/// Checks an output struct's size before the work.
fn sized_out<T>(p: *mut T, name: &str) -> CResult<*mut T> {
    let p = out_ptr(p, name)?;
    // SAFETY: non-NULL; the caller set `struct_size`, the struct's first field.
    let given = unsafe { *(p as *const usize) };
    if given < std::mem::size_of::<T>() {
        return Err(cerr(
            PARADEC_ERR_STRUCT_SIZE,
            format!(
                "{name}.struct_size is {given}; this paradec needs {}",
                std::mem::size_of::<T>()
            ),
        ));
    }
    Ok(p)
}

// ---- helpers ------------------------------------------------------------------------------

pub(super) fn read<'a, T>(l: &'a RwLock<T>) -> CResult<RwLockReadGuard<'a, T>> {
    l.read().map_err(|_| {
        cerr(
            PARADEC_ERR_PANIC,
            "the model was poisoned by an earlier panic",
        )
    })
}

fn write<'a, T>(l: &'a RwLock<T>) -> CResult<RwLockWriteGuard<'a, T>> {
    l.write().map_err(|_| {
        cerr(
            PARADEC_ERR_PANIC,
            "the model was poisoned by an earlier panic",
        )
    })
}

fn device_dtype(
    device: paradec_device,
    dtype: paradec_dtype,
    what: &str,
) -> CResult<(Device, DType)> {
    let dev = device_arg(device, &format!("{what} device"))?;
    let dt = dtype_of(dtype, &format!("{what} dtype"))?;
    if !dt.is_float() {
        return Err(cerr(
            PARADEC_ERR_DTYPE,
            format!("{what} dtype: expected f32, f16 or bf16, got {dt}"),
        ));
    }
    Ok((dev, dt))
}

/// Host tensors with names (prefixed) as in-memory weights.
fn weights_from(tensors: *const paradec_named_tensor, n: usize, prefix: &str) -> CResult<Weights> {
    let list = slice_arg(tensors, n, "tensors")?;
    let mut names = Vec::with_capacity(n);
    let mut views = Vec::with_capacity(n);
    for (i, t) in list.iter().enumerate() {
        let name = cstr(t.name, &format!("tensors[{i}].name"))?;
        let v = view(t.tensor, &format!("tensors[{i}] ({name})"))?;
        if v.loc != Loc::Host {
            return Err(cerr(
                PARADEC_ERR_DEVICE,
                format!("tensors[{i}] ({name}): weights are read from host memory; copy them to the host (device-resident building lands with the GPU decoder)"),
            ));
        }
        names.push(format!("{prefix}{name}"));
        views.push(v);
    }
    let entries: Vec<(&str, DType, &[usize], &[u8])> = names
        .iter()
        .zip(&views)
        .map(|(n, v)| (n.as_str(), v.dtype, v.shape.as_slice(), v.host_bytes()))
        .collect();
    Ok(Weights::from_memory(&entries)?)
}

pub(super) fn attn_params(p: *const paradec_attn_params) -> CResult<AttnParams> {
    let p = read_sized(p, "paradec_attn_params")?;
    if p.batch == 0 || p.q_len == 0 {
        return Err(cerr(
            PARADEC_ERR_INVALID_ARGUMENT,
            format!(
                "params: batch ({}) and q_len ({}) must be positive",
                p.batch, p.q_len
            ),
        ));
    }
    let past = if p.past_len.is_null() {
        vec![0; p.batch]
    } else {
        slice_arg(p.past_len, p.batch, "params.past_len")?
            .iter()
            .enumerate()
            .map(|(b, &x)| {
                usize::try_from(x).map_err(|_| {
                    cerr(
                        PARADEC_ERR_INVALID_ARGUMENT,
                        format!("params.past_len[{b}] = {x} is negative"),
                    )
                })
            })
            .collect::<CResult<_>>()?
    };
    let mut a = AttnParams::with_past(p.batch, p.q_len, past);
    if !p.attention_mask.is_null() {
        let n = p
            .batch
            .checked_mul(p.mask_slots)
            .ok_or_else(|| cerr(PARADEC_ERR_INVALID_ARGUMENT, "params.mask_slots overflows"))?;
        let m = slice_arg(p.attention_mask, n, "params.attention_mask")?;
        a = a.with_attention_mask(m, p.mask_slots)?;
    }
    if !p.position_offset.is_null() {
        a.position_offset =
            slice_arg(p.position_offset, p.batch, "params.position_offset")?.to_vec();
    }
    a.validate()?;
    Ok(a)
}

fn loras_arg<'a>(loras: *const *const paradec_lora, n: usize) -> CResult<Vec<&'a Lora>> {
    slice_arg(loras, n, "loras")?
        .iter()
        .enumerate()
        .map(|(i, &l)| req(l, &format!("loras[{i}]")).map(|l| &l.inner))
        .collect()
}

/// Checks that the call fits the cache before anything runs: a contiguous cache's batch and
/// capacity; a paged cache's block table (which a call over it must carry, and a call over a
/// contiguous cache must not) against its pools, as `KvCache::check_block_table` does — the
/// table's size, page counts, each sequence's positions within its pages, every page the call
/// touches inside the pool, no pool row written twice. `paged_call` names the forward that
/// takes a block table, for the message.
fn check_cache(c: &KvCache, p: &AttnParams, paged_call: &str) -> CResult<()> {
    match (c.is_paged(), &p.block_table) {
        (true, None) => {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!(
                    "cache: a paged cache (paradec_cache_create_paged) is read through the \
                     call's block table: use {paged_call}"
                ),
            ))
        }
        (false, Some(_)) => return Err(contiguous_with_table()),
        (true, Some(t)) => {
            c.check_block_table(Some(&t.as_block_table()), &p.past_len, p.q_len)?;
            return Ok(());
        }
        (false, None) => {}
    }
    if c.batch != p.batch {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "cache: made for batch {}, the call has batch {}",
                c.batch, p.batch
            ),
        ));
    }
    for (b, &past) in p.past_len.iter().enumerate() {
        if past + p.q_len > c.capacity {
            return Err(cerr(
                PARADEC_ERR_CAPACITY,
                format!(
                    "cache: sequence {b} holds {past} tokens; {} more exceed its capacity {}",
                    p.q_len, c.capacity
                ),
            ));
        }
    }
    Ok(())
}

/// A block table given with a contiguous cache.
fn contiguous_with_table() -> CErr {
    cerr(
        PARADEC_ERR_INVALID_ARGUMENT,
        "block_table: given, but the cache is contiguous (a block table addresses a paged \
         cache, made with paradec_cache_create_paged): call the forward without _paged",
    )
}

/// The block table of a `_paged` forward over `cache` (paged, else an error naming it), read
/// for the call's batch, on the call's parameters.
fn with_table(
    cache: &KvCache,
    table: *const paradec_block_table,
    p: AttnParams,
) -> CResult<AttnParams> {
    let Some(page_size) = cache.page_size() else {
        return Err(contiguous_with_table());
    };
    let t = table_arg(table, p.batch)?.into_paged(page_size);
    Ok(p.with_block_table(t))
}

fn tensor_ptr(t: &Tensor) -> *mut c_void {
    use crate::tensor::HostData as H;
    match t.storage() {
        Storage::Host(h) => match h {
            H::F16(v) => v.as_ptr() as *mut c_void,
            H::BF16(v) => v.as_ptr() as *mut c_void,
            H::F32(v) => v.as_ptr() as *mut c_void,
            H::I8(v) => v.as_ptr() as *mut c_void,
            H::U8(v) => v.as_ptr() as *mut c_void,
            H::I16(v) => v.as_ptr() as *mut c_void,
            H::I32(v) => v.as_ptr() as *mut c_void,
            H::I64(v) => v.as_ptr() as *mut c_void,
        },
        #[cfg(feature = "cuda")]
        Storage::Cuda(b) => b.as_ptr() as *mut c_void,
    }
}

/// The stream a layer or model call runs on: the host for host work; for device work the
/// caller's `cudaStream_t` (NULL = the legacy default stream), borrowed, never destroyed.
pub(super) fn stream_for(device: Device, raw: *mut c_void) -> CResult<Stream> {
    match device {
        Device::Cpu => Ok(Stream::Host),
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            // SAFETY: the caller promises (each call's contract) that `stream` is NULL or a
            // live stream of the workspace's device that outlives the queued work; the
            // borrowed handle is never destroyed here.
            let s = unsafe { crate::cuda::CudaStream::from_raw(raw as _, d) };
            Ok(Stream::Cuda(s))
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => {
            let _ = raw;
            Err(cerr(
                PARADEC_ERR_NO_DEVICE,
                "the workspace is on a CUDA device, but paradec was built without CUDA",
            ))
        }
    }
}

fn family_code(f: Family) -> i32 {
    match f {
        Family::GptJ => PARADEC_FAMILY_GPTJ,
        Family::GptNeoX => PARADEC_FAMILY_GPT_NEOX,
        Family::Phi => PARADEC_FAMILY_PHI,
        Family::Falcon => PARADEC_FAMILY_FALCON,
        Family::Cohere => PARADEC_FAMILY_COHERE,
        Family::Cohere2 => PARADEC_FAMILY_COHERE2,
    }
}

/// Frees a boxed handle (NULL is a no-op).
fn free_box<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: non-NULL handles come from `Box::into_raw` in this module, and the caller
        // promises not to use (or free) the handle again.
        drop(unsafe { Box::from_raw(p) });
    }
}

// ---- model --------------------------------------------------------------------------------

/// Fills `options` with the defaults of this version: `struct_size` set, weights on the CPU.
///
/// Ownership: `options` is the caller's; written.
#[no_mangle]
pub extern "C" fn paradec_model_options_init(
    options: *mut paradec_model_options,
) -> paradec_status {
    guard(|| {
        let p = out_ptr(options, "options")?;
        write_out(
            p,
            paradec_model_options {
                struct_size: std::mem::size_of::<paradec_model_options>(),
                device: paradec_device {
                    device_type: PARADEC_DEVICE_CPU,
                    device_id: 0,
                },
            },
        );
        Ok(())
    })
}

fn load_device(p: *const paradec_model_options) -> CResult<Device> {
    if p.is_null() {
        return Ok(Device::Cpu);
    }
    let o = read_sized(p, "paradec_model_options")?;
    device_arg(o.device, "options.device")
}

/// What a model directory needs, in bytes, before loading it: its weights, a KV cache of
/// `batch` × `capacity` in `cache_dtype`, and the workspace of a prefill of that size. Reads
/// config.json and the safetensors headers only.
///
/// - `dir`: the model directory (config.json + safetensors, one file or sharded).
/// - `options`: NULL (defaults) or options as for `paradec_model_load`.
/// - `out`: the caller's struct with `struct_size` set; written on success.
///
/// Ownership: nothing is kept; `out` is the caller's.
#[no_mangle]
pub extern "C" fn paradec_model_memory(
    dir: *const c_char,
    options: *const paradec_model_options,
    batch: usize,
    capacity: usize,
    cache_dtype: paradec_dtype,
    out: *mut paradec_memory,
) -> paradec_status {
    guard(|| {
        let dir = cstr(dir, "dir")?;
        let out = sized_out(out, "paradec_memory")?;
        let dev = load_device(options)?;
        let dt = dtype_of(cache_dtype, "cache_dtype")?;
        if !dt.is_float() {
            return Err(cerr(
                PARADEC_ERR_DTYPE,
                format!("cache_dtype: expected f32, f16 or bf16, got {dt}"),
            ));
        }
        let arch = ArchParams::from_dir(dir)?;
        let weights = Weights::from_dir(dir)?;
        let weight_bytes = weights
            .names()
            .iter()
            .map(|n| weights.view(n).map(|v| v.data.len()))
            .sum::<crate::Result<usize>>()?;
        let ws_dtype = if dev == Device::Cpu { DType::F32 } else { dt };
        let tokens = batch.saturating_mul(capacity);
        let workspace_bytes = Workspace::bytes_needed(&arch, tokens, capacity, ws_dtype)?
            + tokens * (arch.vocab + 2 * arch.hidden) * ws_dtype.size();
        write_out(
            out,
            paradec_memory {
                struct_size: std::mem::size_of::<paradec_memory>(),
                weight_bytes,
                cache_bytes: KvCache::bytes_needed(
                    arch.num_layers,
                    batch,
                    capacity,
                    arch.kv_heads,
                    arch.head_dim,
                    dt,
                ),
                workspace_bytes,
            },
        );
        Ok(())
    })
}

/// Loads a model directory: config.json and its safetensors (one file or shards with
/// `model.safetensors.index.json`), dense or GPTQ / EXL2.
///
/// - `options`: NULL (defaults: weights on the CPU) or initialized options.
/// - `out`: receives the new handle on success (untouched on failure).
///
/// Ownership: the caller owns `*out` and frees it with `paradec_model_free`.
#[no_mangle]
pub extern "C" fn paradec_model_load(
    dir: *const c_char,
    options: *const paradec_model_options,
    out: *mut *mut paradec_model,
) -> paradec_status {
    guard(|| {
        let dir = cstr(dir, "dir")?;
        let out = out_ptr(out, "out")?;
        let dev = load_device(options)?;
        let mut m = Model::load(dir)?;
        if dev != Device::Cpu {
            m.load_to(dev)?;
        }
        let h = Box::new(paradec_model {
            inner: Arc::new(SharedModel {
                model: RwLock::new(m),
                graphs: std::sync::atomic::AtomicUsize::new(0),
            }),
        });
        write_out(out, Box::into_raw(h));
        Ok(())
    })
}

/// Frees a model. NULL is a no-op. Layers taken from it stay valid (they share it).
///
/// Ownership: takes `model`; do not use it again.
#[no_mangle]
pub extern "C" fn paradec_model_free(model: *mut paradec_model) {
    let _ = guard(|| {
        free_box(model);
        Ok(())
    });
}

/// Describes a loaded model.
///
/// - `out`: the caller's struct with `struct_size` set; written on success.
///
/// Ownership: `model` is borrowed; `out` is the caller's.
#[no_mangle]
pub extern "C" fn paradec_model_describe(
    model: *const paradec_model,
    out: *mut paradec_model_info,
) -> paradec_status {
    guard(|| {
        let m = req(model, "model")?;
        let out = sized_out(out, "paradec_model_info")?;
        let m = read(&m.inner)?;
        let a = &m.arch;
        write_out(
            out,
            paradec_model_info {
                struct_size: std::mem::size_of::<paradec_model_info>(),
                family: family_code(a.family),
                num_layers: a.num_layers,
                hidden: a.hidden,
                heads: a.heads,
                kv_heads: a.kv_heads,
                head_dim: a.head_dim,
                intermediate: a.intermediate,
                vocab: a.vocab,
                weight_bytes: m.weight_bytes(),
                layer_numel: m.layers().iter().map(ParallelDecoder::numel).sum(),
                is_quant: m.layers().iter().any(ParallelDecoder::is_quant),
            },
        );
        Ok(())
    })
}

/// Moves every weight of the model to `device`.
///
/// Ownership: `model` is borrowed (and changed); not concurrently with other calls on it.
#[no_mangle]
pub extern "C" fn paradec_model_load_to(
    model: *mut paradec_model,
    device: paradec_device,
) -> paradec_status {
    guard(|| {
        let m = req_mut(model, "model")?;
        let dev = device_arg(device, "device")?;
        write_model(&m.inner)?.load_to(dev)?;
        Ok(())
    })
}

/// Moves every weight of the model back to host memory, freeing device memory.
///
/// Ownership: `model` is borrowed (and changed); not concurrently with other calls on it.
#[no_mangle]
pub extern "C" fn paradec_model_unload(model: *mut paradec_model) -> paradec_status {
    guard(|| {
        let m = req_mut(model, "model")?;
        write_model(&m.inner)?.load_to(Device::Cpu)?;
        Ok(())
    })
}

/// Replaces every projection weight of every layer by its truncated SVD of rank
/// ⌊fraction·min(in, out)⌋; refused (nothing changed) for quantized models.
///
/// Ownership: `model` is borrowed (and changed); not concurrently with other calls on it.
#[no_mangle]
pub extern "C" fn paradec_model_rank_reduce(
    model: *mut paradec_model,
    fraction: f32,
) -> paradec_status {
    guard(|| {
        let m = req_mut(model, "model")?;
        write_model(&m.inner)?.rank_reduce(fraction)?;
        Ok(())
    })
}

/// The model forward of `paradec_model_forward` and, with a block table, of
/// `paradec_model_forward_paged` (whose cache is required and paged).
#[allow(clippy::too_many_arguments)]
fn model_forward(
    model: *const paradec_model,
    stream: *mut c_void,
    workspace: *mut paradec_workspace,
    ids: *const paradec_tensor,
    params: *const paradec_attn_params,
    cache: *mut paradec_cache,
    table: Option<*const paradec_block_table>,
    loras: *const *const paradec_lora,
    n_loras: usize,
    logits: *const paradec_tensor,
) -> CResult<()> {
    let m = req(model, "model")?;
    let ws = &mut req_mut(workspace, "workspace")?.inner;
    let ids = view(ids, "ids")?;
    let mut p = attn_params(params)?;
    let cache = if cache.is_null() && table.is_none() {
        None
    } else {
        Some(cache_mut(cache)?)
    };
    if let (Some(c), Some(t)) = (&cache, table) {
        p = with_table(c, t, p)?;
    }
    let loras = loras_arg(loras, n_loras)?;
    let logits = view(logits, "logits")?;
    let m = read(&m.inner)?;
    let vocab = m.arch.vocab;
    let idv = host_ids(&ids, &p, vocab)?;
    want_float(&logits)?;
    if logits.loc != Loc::Host {
        return Err(cerr(PARADEC_ERR_DEVICE, "logits: must be host memory"));
    }
    if logits.numel != p.tokens() * vocab || logits.shape.last() != Some(&vocab) {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "logits: expected [{}, {}, {vocab}], got shape {:?}",
                p.batch, p.q_len, logits.shape
            ),
        ));
    }
    if let Some(c) = &cache {
        check_cache(c, &p, "paradec_model_forward_paged")?;
    }
    let s = stream_for(ws.device(), stream)?;
    let out = m.forward_inspect(&s, &idv, &p, cache, &loras, ws, false, &mut |_| {})?;
    let host = out.logits.to_host()?;
    logits.store_floats(&host.f32_values()?);
    Ok(())
}

/// Runs the whole model on one batch: embedding, every layer (through `cache` when given), the
/// final norm and the LM head; writes the logits.
///
/// - `stream`: a `cudaStream_t` (NULL = default) for a model on a CUDA device; ignored on the
///   host.
/// - `workspace`: scratch on the model's device (see `paradec_workspace_create`).
/// - `ids`: `[batch, q_len]` (or batch·q_len elements) int32 or int64 token ids, host memory.
/// - `params`: the batch (sizes, past lengths, padding mask).
/// - `cache`: NULL (no cache: past_len must be 0) or a contiguous cache of this model and
///   batch; the new tokens' K/V are written into it. A paged cache is
///   `PARADEC_ERR_INVALID_ARGUMENT`: its forwards are `paradec_model_forward_paged`.
/// - `loras`, `n_loras`: the adapters active in this call (registered with
///   `paradec_model_lora_apply`); `loras` may be NULL when `n_loras` is 0.
/// - `logits`: `[batch, q_len, vocab]` float host tensor, written on success.
///
/// Ownership: all borrowed for the call; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_model_forward(
    model: *const paradec_model,
    stream: *mut c_void,
    workspace: *mut paradec_workspace,
    ids: *const paradec_tensor,
    params: *const paradec_attn_params,
    cache: *mut paradec_cache,
    loras: *const *const paradec_lora,
    n_loras: usize,
    logits: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        model_forward(
            model, stream, workspace, ids, params, cache, None, loras, n_loras, logits,
        )
    })
}

/// As `paradec_model_forward`, over a paged cache (`paradec_cache_create_paged`) through the
/// call's block table: sequence b's positions `0 .. past_len[b] + q_len` live in its first
/// `page_count[b]` pages of `block_table->page_ids[b, …]` (pages of the cache's page size;
/// the same table addresses every layer's pool). Slot j of a mask row is the sequence's
/// position j, wherever its page lies. The table is read during the call (host memory) and
/// checked against the pools before anything runs — its tensors' dtypes, shapes and memory,
/// page counts (negative, or above max_pages), every page the call touches inside the pool,
/// no pool row written by two sequences (`PARADEC_ERR_INVALID_ARGUMENT` naming the sequence
/// and page), each sequence's positions within its pages (`PARADEC_ERR_CAPACITY` naming the
/// sequence) — and nothing is written on an error.
///
/// - `cache`: a paged cache of this model (required; a contiguous one is
///   `PARADEC_ERR_INVALID_ARGUMENT`: use `paradec_model_forward`).
/// - `block_table`: the call's table (see `paradec_block_table`): `page_ids` int32
///   `[batch, max_pages]`, `page_count` int32 / int64 `[batch]`, host memory.
/// - the other arguments as for `paradec_model_forward`.
///
/// Ownership: all borrowed for the call; nothing is kept (the pages are the cache's; what a
/// page holds, and which sequences share it, is the caller's to track).
#[no_mangle]
pub extern "C" fn paradec_model_forward_paged(
    model: *const paradec_model,
    stream: *mut c_void,
    workspace: *mut paradec_workspace,
    ids: *const paradec_tensor,
    params: *const paradec_attn_params,
    cache: *mut paradec_cache,
    block_table: *const paradec_block_table,
    loras: *const *const paradec_lora,
    n_loras: usize,
    logits: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        model_forward(
            model,
            stream,
            workspace,
            ids,
            params,
            cache,
            Some(block_table),
            loras,
            n_loras,
            logits,
        )
    })
}

/// Takes layer `index` of a model as a layer handle. The layer is the model's own (not a copy):
/// changes through either handle (LoRA, load / unload, rank_reduce) are seen by both.
///
/// Ownership: the caller owns `*out` (free it with `paradec_layer_free`); it keeps the model
/// alive on its own, so the model handle may be freed first.
#[no_mangle]
pub extern "C" fn paradec_model_layer(
    model: *const paradec_model,
    index: usize,
    out: *mut *mut paradec_layer,
) -> paradec_status {
    guard(|| {
        let m = req(model, "model")?;
        let out = out_ptr(out, "out")?;
        let n = read(&m.inner)?.layers().len();
        if index >= n {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!("index: {index}, but the model has {n} layers"),
            ));
        }
        let h = Box::new(paradec_layer {
            inner: LayerRef::OfModel(m.inner.clone(), index),
        });
        write_out(out, Box::into_raw(h));
        Ok(())
    })
}

/// Registers a LoRA adapter on the model's projections it targets (on their device). Every
/// module of the adapter must be one of the model's projections; otherwise nothing is
/// registered. Forwards then apply it when it is listed in their `loras`.
///
/// Ownership: both borrowed; the model copies the adapter's tensors, so `lora` may be freed
/// after (pass it to forwards only while it lives).
#[no_mangle]
pub extern "C" fn paradec_model_lora_apply(
    model: *mut paradec_model,
    lora: *const paradec_lora,
) -> paradec_status {
    guard(|| {
        let m = req_mut(model, "model")?;
        let l = &req(lora, "lora")?.inner;
        write_model(&m.inner)?.add_lora(l)?;
        Ok(())
    })
}

/// Removes a LoRA adapter from every layer of the model (a no-op where it is not registered).
///
/// Ownership: both borrowed.
#[no_mangle]
pub extern "C" fn paradec_model_lora_remove(
    model: *mut paradec_model,
    lora: *const paradec_lora,
) -> paradec_status {
    guard(|| {
        let m = req_mut(model, "model")?;
        let l = &req(lora, "lora")?.inner;
        write_model(&m.inner)?.remove_lora(l);
        Ok(())
    })
}

// ---- cache, workspace, LoRA ---------------------------------------------------------------

/// Makes a KV cache for every layer of `model`: `batch` sequences of up to `capacity` tokens,
/// in `dtype`, on `device` (zero-filled).
///
/// Ownership: `model` is borrowed; the caller owns `*out` (free with `paradec_cache_free`).
#[no_mangle]
pub extern "C" fn paradec_cache_create(
    model: *const paradec_model,
    batch: usize,
    capacity: usize,
    dtype: paradec_dtype,
    device: paradec_device,
    out: *mut *mut paradec_cache,
) -> paradec_status {
    guard(|| {
        let m = req(model, "model")?;
        let out = out_ptr(out, "out")?;
        let (dev, dt) = device_dtype(device, dtype, "cache")?;
        let c = KvCache::for_model(&read(&m.inner)?.arch, batch, capacity, dt, dev)?;
        write_out(
            out,
            Box::into_raw(Box::new(paradec_cache {
                inner: c,
                lent: false,
                free_when_returned: false,
            })),
        );
        Ok(())
    })
}

/// Makes a KV cache for one layer handle (built from tensors or taken from a model): it holds
/// slots for layers 0 ..= the layer's index, so the same cache may serve the layers below it.
///
/// Ownership: `layer` is borrowed; the caller owns `*out` (free with `paradec_cache_free`).
#[no_mangle]
pub extern "C" fn paradec_cache_create_for_layer(
    layer: *const paradec_layer,
    batch: usize,
    capacity: usize,
    dtype: paradec_dtype,
    device: paradec_device,
    out: *mut *mut paradec_cache,
) -> paradec_status {
    guard(|| {
        let l = req(layer, "layer")?;
        let out = out_ptr(out, "out")?;
        let (dev, dt) = device_dtype(device, dtype, "cache")?;
        let c = l.with(|d, a| {
            Ok(KvCache::new(
                d.layer_idx() + 1,
                batch,
                capacity,
                a.kv_heads,
                a.head_dim,
                dt,
                dev,
            )?)
        })?;
        write_out(
            out,
            Box::into_raw(Box::new(paradec_cache {
                inner: c,
                lent: false,
                free_when_returned: false,
            })),
        );
        Ok(())
    })
}

/// Frees a cache. NULL is a no-op.
///
/// Ownership: takes `cache`; do not use it again.
#[no_mangle]
pub extern "C" fn paradec_cache_free(cache: *mut paradec_cache) {
    let _ = guard(|| {
        if let Ok(c) = req_mut(cache, "cache") {
            if c.lent {
                // The graph holding it frees it when the graph is freed.
                c.free_when_returned = true;
                return Ok(());
            }
        }
        free_box(cache);
        Ok(())
    });
}

/// Fills `options` with the defaults of this version: `struct_size` set, the native mode, no
/// scales.
///
/// Ownership: `options` is the caller's; written.
#[no_mangle]
pub extern "C" fn paradec_cache_options_init(
    options: *mut paradec_cache_options,
) -> paradec_status {
    guard(|| {
        let p = out_ptr(options, "options")?;
        write_out(
            p,
            paradec_cache_options {
                struct_size: std::mem::size_of::<paradec_cache_options>(),
                mode: PARADEC_CACHE_MODE_NATIVE,
                k_scales: std::ptr::null(),
                n_k_scales: 0,
                v_scales: std::ptr::null(),
                n_v_scales: 0,
            },
        );
        Ok(())
    })
}

/// The mode `options` asks for (NULL: native), for `num_layers` layers of `kv_heads` KV
/// heads of `head_dim` features in `dtype`: checked as `KvCacheMode::check` does.
fn cache_options(
    options: *const paradec_cache_options,
    num_layers: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
) -> CResult<KvCacheMode> {
    if options.is_null() {
        return Ok(KvCacheMode::Native);
    }
    let o = read_sized(options, "paradec_cache_options")?;
    let mode = cache_mode(o.mode, "options.mode")?;
    let k = slice_arg(o.k_scales, o.n_k_scales, "options.k_scales")?;
    let v = slice_arg(o.v_scales, o.n_v_scales, "options.v_scales")?;
    let mode = match mode {
        KvCacheMode::Fp8E4M3 { .. } => {
            let want = num_layers.saturating_mul(kv_heads);
            for (name, s) in [("options.n_k_scales", k), ("options.n_v_scales", v)] {
                if !s.is_empty() && s.len() != want {
                    return Err(cerr(
                        PARADEC_ERR_INVALID_ARGUMENT,
                        format!(
                            "{name}: {} scales, expected {num_layers} layers × {kv_heads} KV heads = {want} (or 0: every scale 1.0)",
                            s.len()
                        ),
                    ));
                }
            }
            KvCacheMode::Fp8E4M3 {
                k_scales: k.to_vec(),
                v_scales: v.to_vec(),
            }
        }
        m => {
            if !k.is_empty() || !v.is_empty() {
                return Err(cerr(
                    PARADEC_ERR_INVALID_ARGUMENT,
                    format!(
                        "options.k_scales / v_scales: only the FP8 E4M3 mode takes scales, not mode {}",
                        m.name()
                    ),
                ));
            }
            m
        }
    };
    mode.check(num_layers, kv_heads, head_dim, dtype)?;
    Ok(mode)
}

fn cache_handle(c: KvCache) -> *mut paradec_cache {
    Box::into_raw(Box::new(paradec_cache {
        inner: c,
        lent: false,
        free_when_returned: false,
    }))
}

/// As `paradec_cache_create`, storing K and V in the mode `options` gives (NULL: native, the
/// same as `paradec_cache_create`). `dtype` is what the model computes in: the storage of a
/// native cache, what a quantized one is read back as. A model forward through the cache
/// writes and reads the mode's codes (docs/formats.md gives the formats and their error).
///
/// Errors (nothing made, `*out` untouched): an unknown `options->mode` or scales given to a
/// mode other than FP8 E4M3, scales of a length other than num_layers · kv_heads, a scale not
/// positive and finite (`PARADEC_ERR_INVALID_ARGUMENT`); a mode that cannot store the model's
/// heads — Q8 / Q6 / Q4 with head_dim not a multiple of 32, FP8 E5M2 in bf16
/// (`PARADEC_ERR_UNSUPPORTED`); a bad `struct_size` (`PARADEC_ERR_STRUCT_SIZE`).
///
/// Ownership: `model` and `options` (with its scales) are borrowed for the call; the caller
/// owns `*out` (free with `paradec_cache_free`).
#[no_mangle]
pub extern "C" fn paradec_cache_create_with_options(
    model: *const paradec_model,
    batch: usize,
    capacity: usize,
    dtype: paradec_dtype,
    device: paradec_device,
    options: *const paradec_cache_options,
    out: *mut *mut paradec_cache,
) -> paradec_status {
    guard(|| {
        let m = req(model, "model")?;
        let out = out_ptr(out, "out")?;
        let (dev, dt) = device_dtype(device, dtype, "cache")?;
        let m = read(&m.inner)?;
        let a = &m.arch;
        let mode = cache_options(options, a.num_layers, a.kv_heads, a.head_dim, dt)?;
        let c = KvCache::with_mode(
            a.num_layers,
            batch,
            capacity,
            a.kv_heads,
            a.head_dim,
            dt,
            dev,
            mode,
        )?;
        write_out(out, cache_handle(c));
        Ok(())
    })
}

/// As `paradec_cache_create_for_layer`, in the mode `options` gives (NULL: native). The
/// cache holds layers 0 ..= the layer's index, so FP8 E4M3 scales, when given, number
/// (index + 1) · kv_heads. Errors as `paradec_cache_create_with_options`.
///
/// Ownership: `layer` and `options` are borrowed for the call; the caller owns `*out` (free
/// with `paradec_cache_free`).
#[no_mangle]
pub extern "C" fn paradec_cache_create_for_layer_with_options(
    layer: *const paradec_layer,
    batch: usize,
    capacity: usize,
    dtype: paradec_dtype,
    device: paradec_device,
    options: *const paradec_cache_options,
    out: *mut *mut paradec_cache,
) -> paradec_status {
    guard(|| {
        let l = req(layer, "layer")?;
        let out = out_ptr(out, "out")?;
        let (dev, dt) = device_dtype(device, dtype, "cache")?;
        let c = l.with(|d, a| {
            let n = d.layer_idx() + 1;
            let mode = cache_options(options, n, a.kv_heads, a.head_dim, dt)?;
            Ok(KvCache::with_mode(
                n, batch, capacity, a.kv_heads, a.head_dim, dt, dev, mode,
            )?)
        })?;
        write_out(out, cache_handle(c));
        Ok(())
    })
}

/// Makes a paged KV cache for every layer of `model`: per layer, a pool of `num_pages` pages
/// of `page_size` positions of K and V, in the mode `options` gives (NULL: native) and `dtype`
/// (what the model computes in: the storage of native pages, what quantized ones are read
/// back as), on `device`, zero-filled. It has no sequences of its own: every forward through
/// it (`paradec_model_forward_paged`, `paradec_layer_forward_paged`,
/// `paradec_layer_forward_interm_paged`) gives its block table, which says which pages hold
/// each sequence's positions; the same table addresses every layer's pool.
///
/// Errors (nothing made, `*out` untouched): `num_pages` or `page_size` 0, more than
/// 2^31 − 1 pages (`PARADEC_ERR_INVALID_ARGUMENT`); native pages on the CPU in a dtype other
/// than f32 (the host path computes in f32: `PARADEC_ERR_UNSUPPORTED`); the mode errors of
/// `paradec_cache_create_with_options`.
///
/// Ownership: `model` and `options` (with its scales) are borrowed for the call; the caller
/// owns `*out` (free with `paradec_cache_free`).
#[no_mangle]
pub extern "C" fn paradec_cache_create_paged(
    model: *const paradec_model,
    num_pages: usize,
    page_size: usize,
    dtype: paradec_dtype,
    device: paradec_device,
    options: *const paradec_cache_options,
    out: *mut *mut paradec_cache,
) -> paradec_status {
    guard(|| {
        let m = req(model, "model")?;
        let out = out_ptr(out, "out")?;
        let (dev, dt) = device_dtype(device, dtype, "cache")?;
        let m = read(&m.inner)?;
        let a = &m.arch;
        let mode = cache_options(options, a.num_layers, a.kv_heads, a.head_dim, dt)?;
        let c = KvCache::paged_for_model(a, num_pages, page_size, dt, dev, mode)?;
        write_out(out, cache_handle(c));
        Ok(())
    })
}

/// As `paradec_cache_create_paged`, for one layer handle: pools for layers 0 ..= the layer's
/// index (so FP8 E4M3 scales, when given, number (index + 1) · kv_heads). Errors as
/// `paradec_cache_create_paged`.
///
/// Ownership: `layer` and `options` are borrowed for the call; the caller owns `*out` (free
/// with `paradec_cache_free`).
#[no_mangle]
pub extern "C" fn paradec_cache_create_paged_for_layer(
    layer: *const paradec_layer,
    num_pages: usize,
    page_size: usize,
    dtype: paradec_dtype,
    device: paradec_device,
    options: *const paradec_cache_options,
    out: *mut *mut paradec_cache,
) -> paradec_status {
    guard(|| {
        let l = req(layer, "layer")?;
        let out = out_ptr(out, "out")?;
        let (dev, dt) = device_dtype(device, dtype, "cache")?;
        let c = l.with(|d, a| {
            let n = d.layer_idx() + 1;
            let mode = cache_options(options, n, a.kv_heads, a.head_dim, dt)?;
            Ok(KvCache::paged(
                n, num_pages, page_size, a.kv_heads, a.head_dim, dt, dev, mode,
            )?)
        })?;
        write_out(out, cache_handle(c));
        Ok(())
    })
}

/// Describes a cache: its mode, sizes, dtype, device and bytes, and for a paged cache its
/// page size and pages (`batch` 0, `capacity` the pool's positions).
///
/// - `out`: the caller's struct with `struct_size` set; written on success (a struct of an
///   older header, without `page_size` / `num_pages`, gets the fields it has room for, and
///   `struct_size` says how many bytes were written).
///
/// Ownership: `cache` is borrowed; `out` is the caller's.
#[no_mangle]
pub extern "C" fn paradec_cache_describe(
    cache: *const paradec_cache,
    out: *mut paradec_cache_info,
) -> paradec_status {
    guard(|| {
        let c = &req(cache, "cache")?.inner;
        let (out, n) = sized_out_since(out, "paradec_cache_info", CACHE_INFO_V1)?;
        write_prefix(
            out,
            paradec_cache_info {
                struct_size: std::mem::size_of::<paradec_cache_info>(),
                mode: mode_code(c.mode()),
                num_layers: c.num_layers(),
                batch: c.batch,
                capacity: c.capacity,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                dtype: dtype_desc(c.dtype()),
                device: device_desc(c.device()),
                bytes: c.bytes(),
                page_size: c.page_size().unwrap_or(0),
                num_pages: c.num_pages().unwrap_or(0),
            },
            n,
        );
        Ok(())
    })
}

/// The bytes a cache of these sizes takes in the mode `options` gives (NULL: native): K and V
/// of every layer — values, or codes, run scales and E4M3 head scales; what
/// `paradec_cache_describe` reports once it is made. The mode is checked as the create calls
/// check it (same errors). A paged cache (`paradec_cache_create_paged`) of `num_pages` pages
/// of `page_size` positions takes what a contiguous one of batch = num_pages and capacity =
/// page_size takes (its pools are laid out so), and so does a pool of pages for the
/// kernel-level paged calls, per layer.
///
/// Ownership: `options` is borrowed; `*out_bytes` is written on success.
#[no_mangle]
pub extern "C" fn paradec_cache_bytes(
    num_layers: usize,
    batch: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: paradec_dtype,
    options: *const paradec_cache_options,
    out_bytes: *mut usize,
) -> paradec_status {
    guard(|| {
        let out = out_ptr(out_bytes, "out_bytes")?;
        let dt = dtype_of(dtype, "dtype")?;
        if !dt.is_float() {
            return Err(cerr(
                PARADEC_ERR_DTYPE,
                format!("dtype: expected f32, f16 or bf16, got {dt}"),
            ));
        }
        let mode = cache_options(options, num_layers, kv_heads, head_dim, dt)?;
        write_out(
            out,
            KvCache::bytes_needed_mode(num_layers, batch, capacity, kv_heads, head_dim, dt, &mode),
        );
        Ok(())
    })
}

/// The bytes to reserve (`paradec_workspace_reserve`) for forwards of `model` over a paged
/// cache (`paradec_model_forward_paged`, and the layer forwards of its layers) of up to
/// `tokens` tokens each (batch × q_len), whose block tables give each sequence up to
/// `max_pages` pages of `page_size` positions, in a workspace computing in `dtype` (f16 or
/// bf16 on a CUDA device; the CPU computes in f32 and reserves no arena). Beyond a contiguous
/// cache's plan it holds what a forward over pages takes in every mode, the native one
/// included: a prefill gathers the K and V it reads out of the pages into the workspace, a
/// decode splits its keys up to 256 ways, and each layer's cache write and attention upload
/// the block table. Like `paradec_model_memory`'s `workspace_bytes`, it counts the forward's
/// hidden states and logits. A forward past the arena still runs (a device forward then
/// allocates: slow, never wrong).
///
/// Errors (`*out_bytes` untouched): `tokens`, `max_pages` or `page_size` 0, or sizes that
/// overflow (`PARADEC_ERR_INVALID_ARGUMENT`); a `dtype` that is not a float type
/// (`PARADEC_ERR_DTYPE`).
///
/// Ownership: `model` is borrowed; `*out_bytes` is written on success.
#[no_mangle]
pub extern "C" fn paradec_workspace_bytes_paged(
    model: *const paradec_model,
    tokens: usize,
    max_pages: usize,
    page_size: usize,
    dtype: paradec_dtype,
    out_bytes: *mut usize,
) -> paradec_status {
    guard(|| {
        let m = req(model, "model")?;
        let out = out_ptr(out_bytes, "out_bytes")?;
        let dt = dtype_of(dtype, "dtype")?;
        if !dt.is_float() {
            return Err(cerr(
                PARADEC_ERR_DTYPE,
                format!("dtype: expected f32, f16 or bf16, got {dt}"),
            ));
        }
        if tokens == 0 || max_pages == 0 || page_size == 0 {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!(
                    "tokens ({tokens}), max_pages ({max_pages}) and page_size ({page_size}) \
                     must all be positive"
                ),
            ));
        }
        let m = read(&m.inner)?;
        let a = &m.arch;
        let arena = Workspace::bytes_needed_paged(a, tokens, max_pages, page_size, dt)?;
        let outputs = a
            .vocab
            .checked_add(2 * a.hidden)
            .and_then(|n| n.checked_mul(tokens))
            .and_then(|n| n.checked_mul(dt.size()));
        let bytes = outputs
            .and_then(|n| n.checked_add(arena))
            .ok_or_else(|| cerr(PARADEC_ERR_INVALID_ARGUMENT, "workspace size overflows"))?;
        write_out(out, bytes);
        Ok(())
    })
}

/// Makes a workspace: the scratch of forwards on `device`, computing in `dtype` (the CPU path
/// computes in f32). One per stream or thread.
///
/// Ownership: the caller owns `*out` (free with `paradec_workspace_free`).
#[no_mangle]
pub extern "C" fn paradec_workspace_create(
    device: paradec_device,
    dtype: paradec_dtype,
    out: *mut *mut paradec_workspace,
) -> paradec_status {
    guard(|| {
        let out = out_ptr(out, "out")?;
        let (dev, dt) = device_dtype(device, dtype, "workspace")?;
        let w = Workspace::new(dev, dt)?;
        write_out(out, Box::into_raw(Box::new(paradec_workspace { inner: w })));
        Ok(())
    })
}

/// Reserves the workspace's device arena: `bytes` of scratch (nothing on the CPU). A larger
/// arena replaces a smaller one; a smaller request keeps the current one. Synchronous (an
/// allocation). Kernel-level calls on CUDA tensors (`paradec_op_*_ws`) take their scratch from
/// this arena and fail with `PARADEC_ERR_CAPACITY` (naming the bytes, before any launch) when it
/// is too small, rather than allocate (which would synchronize); a layer or model forward
/// allocates past the arena instead (slow, never wrong).
///
/// Ownership: `workspace` stays the caller's; the call must not overlap other calls on it.
#[no_mangle]
pub extern "C" fn paradec_workspace_reserve(
    workspace: *mut paradec_workspace,
    bytes: usize,
) -> paradec_status {
    guard(|| {
        let ws = &mut req_mut(workspace, "workspace")?.inner;
        ws.reserve(bytes)?;
        Ok(())
    })
}

/// The bytes of the workspace's device arena (0 on the CPU, or before a reservation) into
/// `*out_bytes`.
///
/// Ownership: `workspace` is borrowed; `*out_bytes` is written on success.
#[no_mangle]
pub extern "C" fn paradec_workspace_capacity(
    workspace: *const paradec_workspace,
    out_bytes: *mut usize,
) -> paradec_status {
    guard(|| {
        let out = out_ptr(out_bytes, "out_bytes")?;
        let ws = &req(workspace, "workspace")?.inner;
        write_out(out, ws.capacity());
        Ok(())
    })
}

/// Frees a workspace. NULL is a no-op.
///
/// Ownership: takes `workspace`; do not use it again.
#[no_mangle]
pub extern "C" fn paradec_workspace_free(workspace: *mut paradec_workspace) {
    let _ = guard(|| {
        free_box(workspace);
        Ok(())
    });
}

/// Reads a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors).
///
/// Ownership: the caller owns `*out` (free with `paradec_lora_free`).
#[no_mangle]
pub extern "C" fn paradec_lora_load(
    dir: *const c_char,
    out: *mut *mut paradec_lora,
) -> paradec_status {
    guard(|| {
        let dir = cstr(dir, "dir")?;
        let out = out_ptr(out, "out")?;
        let l = Lora::load(dir)?;
        write_out(out, Box::into_raw(Box::new(paradec_lora { inner: l })));
        Ok(())
    })
}

/// Frees an adapter. NULL is a no-op. Layers it was applied to keep their copy of its tensors
/// (remove it from them first if it should stop counting).
///
/// Ownership: takes `lora`; do not use it again.
#[no_mangle]
pub extern "C" fn paradec_lora_free(lora: *mut paradec_lora) {
    let _ = guard(|| {
        free_box(lora);
        Ok(())
    });
}

// ---- layer --------------------------------------------------------------------------------

impl paradec_layer {
    fn with<R>(&self, f: impl FnOnce(&ParallelDecoder, &ArchParams) -> CResult<R>) -> CResult<R> {
        match &self.inner {
            LayerRef::Own(d, a) => f(d, a),
            LayerRef::OfModel(m, i) => {
                let m = read(m)?;
                f(&m.layers()[*i], &m.arch)
            }
        }
    }
    fn with_mut<R>(&mut self, f: impl FnOnce(&mut ParallelDecoder) -> CResult<R>) -> CResult<R> {
        match &mut self.inner {
            LayerRef::Own(d, _) => f(d),
            LayerRef::OfModel(m, i) => f(&mut write_model(m)?.layers_mut()[*i]),
        }
    }
}

/// Builds one decoder layer from tensors the caller holds plus an architecture description.
///
/// - `config_json`: the model's HF config.json text (its `model_type` picks the family; sizes,
///   norms, rotary, MLP, quantization_config are read from it).
/// - `layer_index`: which layer this is (its sliding window and rotary choice follow the
///   config; LoRA modules match `<layer prefix>.<index>.<name>`).
/// - `tensors`: the layer's weights named as in the checkpoint below the layer, e.g.
///   `"input_layernorm.weight"`, `"attention.query_key_value.weight"` (GPT-NeoX) or the packed
///   `"….qweight"` etc. of a quantized checkpoint. Host memory.
///
/// Ownership: the tensors are borrowed and copied into the layer (which owns its weights, so it
/// can load / unload / rank-reduce them); the caller owns `*out` (free with
/// `paradec_layer_free`).
#[no_mangle]
pub extern "C" fn paradec_layer_create(
    config_json: *const c_char,
    layer_index: usize,
    tensors: *const paradec_named_tensor,
    n_tensors: usize,
    out: *mut *mut paradec_layer,
) -> paradec_status {
    guard(|| {
        let cfg = cstr(config_json, "config_json")?;
        let out = out_ptr(out, "out")?;
        let arch = ArchParams::from_json_str(cfg)?;
        let spec = *arch.layers.get(layer_index).ok_or_else(|| {
            cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!(
                    "layer_index: {layer_index}, but the config has {} layers",
                    arch.layers.len()
                ),
            )
        })?;
        let key = format!("{}.{layer_index}", arch.names.layer_prefix);
        let w = weights_from(tensors, n_tensors, &format!("{key}."))?;
        let d = ParallelDecoder::new(
            &arch,
            &w,
            &key,
            layer_index,
            spec.sliding_window,
            spec.rope_index,
        )?;
        let h = Box::new(paradec_layer {
            inner: LayerRef::Own(Box::new(d), Box::new(arch)),
        });
        write_out(out, Box::into_raw(h));
        Ok(())
    })
}

/// Frees a layer handle. NULL is a no-op. For a layer of a model, the model stays (it is freed
/// when its last handle is).
///
/// Ownership: takes `layer`; do not use it again.
#[no_mangle]
pub extern "C" fn paradec_layer_free(layer: *mut paradec_layer) {
    let _ = guard(|| {
        free_box(layer);
        Ok(())
    });
}

/// Checks the hidden tensor of a layer call: host memory is read into a tensor (written back
/// on success); device memory is borrowed, and the forward runs in place on it.
/// Token ids [batch · q_len] from a host int32 / int64 tensor, each checked against the
/// vocabulary.
pub(super) fn host_ids(ids: &View, p: &AttnParams, vocab: usize) -> CResult<Vec<u32>> {
    if ids.loc != Loc::Host {
        return Err(cerr(
            PARADEC_ERR_DEVICE,
            "ids: token ids are read from host memory",
        ));
    }
    if ids.dtype != DType::I32 && ids.dtype != DType::I64 {
        return Err(cerr(
            PARADEC_ERR_DTYPE,
            format!("ids: expected int32 or int64, got {}", ids.dtype),
        ));
    }
    if ids.numel != p.tokens() {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "ids: expected batch {} × q_len {} ids, got shape {:?}",
                p.batch, p.q_len, ids.shape
            ),
        ));
    }
    ids.ints()
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            u32::try_from(x)
                .ok()
                .filter(|&x| (x as usize) < vocab)
                .ok_or_else(|| {
                    cerr(
                        PARADEC_ERR_INVALID_ARGUMENT,
                        format!("ids[{i}] = {x} is outside the vocabulary of {vocab}"),
                    )
                })
        })
        .collect::<CResult<_>>()
}

fn hidden_in(h: &View, p: &AttnParams, hidden: usize) -> CResult<Tensor> {
    want_float(h)?;
    if h.numel != p.tokens() * hidden || h.shape.last() != Some(&hidden) {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "hidden: expected [{}, {}, {hidden}] (or [{}, {hidden}]), got shape {:?}",
                p.batch,
                p.q_len,
                p.tokens(),
                h.shape
            ),
        ));
    }
    match h.loc {
        Loc::Host => Ok(Tensor::from_f32(
            h.floats(&[]).to_vec(),
            &[p.tokens(), hidden],
        )?),
        #[cfg(feature = "cuda")]
        Loc::Cuda(dev) => Ok(super::cuda::borrow(h, dev)?.reshape(&[p.tokens(), hidden])?),
        #[cfg(not(feature = "cuda"))]
        Loc::Cuda(_) => Err(cerr(
            PARADEC_ERR_DEVICE,
            "hidden: CUDA memory, but paradec was built without the `cuda` feature",
        )),
    }
}

/// The layer forward of `paradec_layer_forward(_interm)` and, with a block table, of their
/// `_paged` forms (whose cache is required and paged).
#[allow(clippy::too_many_arguments)]
fn layer_forward(
    layer: *const paradec_layer,
    stream: *mut c_void,
    workspace: *mut paradec_workspace,
    hidden: *const paradec_tensor,
    params: *const paradec_attn_params,
    cache: *mut paradec_cache,
    table: Option<*const paradec_block_table>,
    loras: *const *const paradec_lora,
    n_loras: usize,
    capture: bool,
) -> CResult<Option<Intermediates>> {
    let l = req(layer, "layer")?;
    let ws = &mut req_mut(workspace, "workspace")?.inner;
    let h = view(hidden, "hidden")?;
    let mut p = attn_params(params)?;
    let cache = if cache.is_null() && table.is_none() {
        None
    } else {
        Some(cache_mut(cache)?)
    };
    if let (Some(c), Some(t)) = (&cache, table) {
        p = with_table(c, t, p)?;
    }
    let loras = loras_arg(loras, n_loras)?;
    let s = stream_for(ws.device(), stream)?;
    let paged_call = if capture {
        "paradec_layer_forward_interm_paged"
    } else {
        "paradec_layer_forward_paged"
    };
    l.with(|d, a| {
        let mut x = hidden_in(&h, &p, a.hidden)?;
        if let Some(c) = &cache {
            check_cache(c, &p, paged_call)?;
        }
        let r = if capture {
            Some(d.forward_interm(&s, &mut x, cache, &p, &loras, ws)?)
        } else {
            d.forward(&s, &mut x, cache, &p, &loras, ws)?;
            None
        };
        // Device memory was updated in place; host memory gets the result now.
        if h.loc == Loc::Host {
            h.store_floats(&x.f32_values()?);
        }
        Ok(r)
    })
}

/// One decoder layer's forward: `hidden += attn(norm(hidden)) + mlp(norm(hidden))`, in the
/// family's summation order, through `cache` when given.
///
/// - `stream`: a `cudaStream_t` (NULL = default) for a layer on a CUDA device; ignored on the
///   host.
/// - `hidden`: `[batch, q_len, hidden]` (or `[batch·q_len, hidden]`) float tensor, read and
///   written: host memory on success only; CUDA memory (the layer's device and dtype) in place,
///   on the stream — every argument is checked before the first launch.
/// - `params`, `cache`, `loras`: as for `paradec_model_forward` (a cache for this layer comes
///   from `paradec_cache_create_for_layer` or, for a model's layer, `paradec_cache_create`;
///   a paged cache is `PARADEC_ERR_INVALID_ARGUMENT`: its forwards are
///   `paradec_layer_forward_paged` / `_interm_paged`).
///
/// Ownership: all borrowed for the call; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_layer_forward(
    layer: *const paradec_layer,
    stream: *mut c_void,
    workspace: *mut paradec_workspace,
    hidden: *const paradec_tensor,
    params: *const paradec_attn_params,
    cache: *mut paradec_cache,
    loras: *const *const paradec_lora,
    n_loras: usize,
) -> paradec_status {
    guard(|| {
        layer_forward(
            layer, stream, workspace, hidden, params, cache, None, loras, n_loras, false,
        )
        .map(|_| ())
    })
}

/// As `paradec_layer_forward`, over a paged cache (`paradec_cache_create_paged_for_layer`,
/// or a model's `paradec_cache_create_paged`) through the call's block table, checked against
/// the pools before anything runs as `paradec_model_forward_paged` checks it (same errors;
/// nothing written on an error, `hidden` included).
///
/// - `cache`: a paged cache holding this layer's pool (required; a contiguous one is
///   `PARADEC_ERR_INVALID_ARGUMENT`: use `paradec_layer_forward`).
/// - `block_table`: the call's table (see `paradec_block_table`), host memory.
/// - the other arguments as for `paradec_layer_forward`.
///
/// Ownership: all borrowed for the call; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_layer_forward_paged(
    layer: *const paradec_layer,
    stream: *mut c_void,
    workspace: *mut paradec_workspace,
    hidden: *const paradec_tensor,
    params: *const paradec_attn_params,
    cache: *mut paradec_cache,
    block_table: *const paradec_block_table,
    loras: *const *const paradec_lora,
    n_loras: usize,
) -> paradec_status {
    guard(|| {
        layer_forward(
            layer,
            stream,
            workspace,
            hidden,
            params,
            cache,
            Some(block_table),
            loras,
            n_loras,
            false,
        )
        .map(|_| ())
    })
}

/// As `paradec_layer_forward`, and returns every intermediate (see `PARADEC_INTERM_*`).
///
/// Ownership: the caller owns `*out` (read it with `paradec_interm_get`, free it with
/// `paradec_interm_free`).
#[no_mangle]
pub extern "C" fn paradec_layer_forward_interm(
    layer: *const paradec_layer,
    stream: *mut c_void,
    workspace: *mut paradec_workspace,
    hidden: *const paradec_tensor,
    params: *const paradec_attn_params,
    cache: *mut paradec_cache,
    loras: *const *const paradec_lora,
    n_loras: usize,
    out: *mut *mut paradec_interm,
) -> paradec_status {
    guard(|| {
        let out = out_ptr(out, "out")?;
        let i = layer_forward(
            layer, stream, workspace, hidden, params, cache, None, loras, n_loras, true,
        )?;
        write_interm(out, i)
    })
}

/// As `paradec_layer_forward_paged`, and returns every intermediate (see `PARADEC_INTERM_*`).
///
/// Ownership: the caller owns `*out` (read it with `paradec_interm_get`, free it with
/// `paradec_interm_free`); `*out` is untouched on an error.
#[no_mangle]
pub extern "C" fn paradec_layer_forward_interm_paged(
    layer: *const paradec_layer,
    stream: *mut c_void,
    workspace: *mut paradec_workspace,
    hidden: *const paradec_tensor,
    params: *const paradec_attn_params,
    cache: *mut paradec_cache,
    block_table: *const paradec_block_table,
    loras: *const *const paradec_lora,
    n_loras: usize,
    out: *mut *mut paradec_interm,
) -> paradec_status {
    guard(|| {
        let out = out_ptr(out, "out")?;
        let i = layer_forward(
            layer,
            stream,
            workspace,
            hidden,
            params,
            cache,
            Some(block_table),
            loras,
            n_loras,
            true,
        )?;
        write_interm(out, i)
    })
}

/// Hands a forward's intermediates to the caller as a `paradec_interm`.
fn write_interm(out: *mut *mut paradec_interm, i: Option<Intermediates>) -> CResult<()> {
    let i = i.ok_or_else(|| cerr(PARADEC_ERR_PANIC, "intermediates were not captured"))?;
    let shape = |t: &Tensor| t.shape().iter().map(|&d| d as i64).collect::<Vec<i64>>();
    let shapes = vec![
        shape(&i.post_norm),
        i.post_norm_mlp.as_ref().map(shape).unwrap_or_default(),
        shape(&i.attn_output),
        shape(&i.pre_down),
        shape(&i.hidden_states_attn),
        shape(&i.hidden_states_mlp),
        shape(&i.hidden_states),
    ];
    let h = Box::new(paradec_interm { inner: i, shapes });
    write_out(out, Box::into_raw(h));
    Ok(())
}

/// A view of one intermediate: `which` is a `PARADEC_INTERM_*` value. The descriptor points
/// into `interm` (data and shape), `[tokens, features]`, in the workspace's dtype and device.
/// `PARADEC_INTERM_POST_NORM_MLP` of a one-norm family is `PARADEC_ERR_NOT_FOUND`.
///
/// Ownership: `*out` borrows from `interm`: valid until `paradec_interm_free(interm)`; never
/// free its pointers.
#[no_mangle]
pub extern "C" fn paradec_interm_get(
    interm: *const paradec_interm,
    which: i32,
    out: *mut paradec_tensor,
) -> paradec_status {
    guard(|| {
        let h = req(interm, "interm")?;
        let out = out_ptr(out, "out")?;
        let i = &h.inner;
        let t = match which {
            PARADEC_INTERM_POST_NORM => &i.post_norm,
            PARADEC_INTERM_POST_NORM_MLP => i.post_norm_mlp.as_ref().ok_or_else(|| {
                cerr(
                    PARADEC_ERR_NOT_FOUND,
                    "which: PARADEC_INTERM_POST_NORM_MLP exists only for two-norm families",
                )
            })?,
            PARADEC_INTERM_ATTN_OUTPUT => &i.attn_output,
            PARADEC_INTERM_PRE_DOWN => &i.pre_down,
            PARADEC_INTERM_HIDDEN_STATES_ATTN => &i.hidden_states_attn,
            PARADEC_INTERM_HIDDEN_STATES_MLP => &i.hidden_states_mlp,
            PARADEC_INTERM_HIDDEN_STATES => &i.hidden_states,
            o => {
                return Err(cerr(
                    PARADEC_ERR_INVALID_ARGUMENT,
                    format!("which: {o} is not a PARADEC_INTERM_* value (0 to 6)"),
                ))
            }
        };
        write_out(
            out,
            describe(
                tensor_ptr(t),
                t.dtype(),
                t.device(),
                &h.shapes[which as usize],
            ),
        );
        Ok(())
    })
}

/// Frees intermediates. NULL is a no-op. Views from `paradec_interm_get` die with it.
///
/// Ownership: takes `interm`; do not use it again.
#[no_mangle]
pub extern "C" fn paradec_interm_free(interm: *mut paradec_interm) {
    let _ = guard(|| {
        free_box(interm);
        Ok(())
    });
}

/// The layer's parameter count (quantized weights count as K·N).
///
/// Ownership: `layer` is borrowed; `*out` written on success.
#[no_mangle]
pub extern "C" fn paradec_layer_numel(
    layer: *const paradec_layer,
    out: *mut usize,
) -> paradec_status {
    guard(|| {
        let l = req(layer, "layer")?;
        let out = out_ptr(out, "out")?;
        let n = l.with(|d, _| Ok(d.numel()))?;
        write_out(out, n);
        Ok(())
    })
}

/// Bytes the layer's weights take on a device (ask before `paradec_layer_load`).
///
/// Ownership: `layer` is borrowed; `*out` written on success.
#[no_mangle]
pub extern "C" fn paradec_layer_weight_bytes(
    layer: *const paradec_layer,
    out: *mut usize,
) -> paradec_status {
    guard(|| {
        let l = req(layer, "layer")?;
        let out = out_ptr(out, "out")?;
        let n = l.with(|d, _| Ok(d.weight_bytes()))?;
        write_out(out, n);
        Ok(())
    })
}

/// Whether any projection of the layer is quantized (GPTQ or EXL2).
///
/// Ownership: `layer` is borrowed; `*out` written on success.
#[no_mangle]
pub extern "C" fn paradec_layer_is_quant(
    layer: *const paradec_layer,
    out: *mut bool,
) -> paradec_status {
    guard(|| {
        let l = req(layer, "layer")?;
        let out = out_ptr(out, "out")?;
        let q = l.with(|d, _| Ok(d.is_quant()))?;
        write_out(out, q);
        Ok(())
    })
}

/// Replaces every projection weight by its truncated SVD of rank ⌊fraction·min(in, out)⌋,
/// fraction in (0, 1]. Refused (`PARADEC_ERR_UNSUPPORTED`, nothing changed) when a projection
/// is quantized.
///
/// Ownership: `layer` is borrowed (and changed); not concurrently with other calls on it.
#[no_mangle]
pub extern "C" fn paradec_layer_rank_reduce(
    layer: *mut paradec_layer,
    fraction: f32,
) -> paradec_status {
    guard(|| {
        let l = req_mut(layer, "layer")?;
        l.with_mut(|d| Ok(d.rank_reduce(fraction)?))
    })
}

/// Places the layer's weights (and its registered adapters) on `device`. On failure the layer
/// stays where it was.
///
/// Ownership: `layer` is borrowed (and changed); not concurrently with other calls on it.
#[no_mangle]
pub extern "C" fn paradec_layer_load(
    layer: *mut paradec_layer,
    device: paradec_device,
) -> paradec_status {
    guard(|| {
        let l = req_mut(layer, "layer")?;
        let dev = device_arg(device, "device")?;
        l.with_mut(|d| Ok(d.load(dev)?))
    })
}

/// Moves the layer's weights back to host memory, freeing device memory.
///
/// Ownership: `layer` is borrowed (and changed); not concurrently with other calls on it.
#[no_mangle]
pub extern "C" fn paradec_layer_unload(layer: *mut paradec_layer) -> paradec_status {
    guard(|| {
        let l = req_mut(layer, "layer")?;
        l.with_mut(|d| Ok(d.unload()?))
    })
}

/// Registers the adapter's modules that target this layer's projections; `*n_modules`
/// (optional: may be NULL) receives how many.
///
/// Ownership: both borrowed; the layer copies the adapter's tensors.
#[no_mangle]
pub extern "C" fn paradec_layer_lora_apply(
    layer: *mut paradec_layer,
    lora: *const paradec_lora,
    n_modules: *mut usize,
) -> paradec_status {
    guard(|| {
        let l = req_mut(layer, "layer")?;
        let a = &req(lora, "lora")?.inner;
        let n = l.with_mut(|d| Ok(d.add_lora(a)?))?;
        if !n_modules.is_null() {
            write_out(n_modules, n);
        }
        Ok(())
    })
}

/// Removes the adapter from this layer (a no-op where it is not registered).
///
/// Ownership: both borrowed.
#[no_mangle]
pub extern "C" fn paradec_layer_lora_remove(
    layer: *mut paradec_layer,
    lora: *const paradec_lora,
) -> paradec_status {
    guard(|| {
        let l = req_mut(layer, "layer")?;
        let a = &req(lora, "lora")?.inner;
        l.with_mut(|d| {
            d.remove_lora(a);
            Ok(())
        })
    })
}

// ---- prepared quantized weights -----------------------------------------------------------

/// Prepares a quantized linear weight from the caller's packed tensors, once; linears then
/// take the handle (`paradec_op_quant_linear`).
///
/// - `quant_config_json`: the checkpoint's `quantization_config` object as JSON text (GPTQ:
///   `bits`, `group_size`, `desc_act`, `sym`, …; EXL2: `{"quant_method": "exl2", …}`).
/// - `tensors`: the packed tensors by their suffix — GPTQ `qweight`, `qzeros`, `scales`,
///   optional `g_idx`, `bias`; EXL2 `q_weight`, `q_invperm`, `q_scale`, `q_scale_max`,
///   `q_groups`, optional `bias`. Host memory.
/// - `in_features`, `out_features`: K and N of the dense weight it stands for.
/// - `device`: the CPU (the handle is made in host memory; `PARADEC_ERR_UNSUPPORTED` for a
///   CUDA device: place it there afterwards with `paradec_quant_weight_to_device`, which takes
///   the compute dtype).
///
/// Ownership: the tensors are borrowed and copied; the caller owns `*out` (free with
/// `paradec_quant_weight_free`).
#[no_mangle]
pub extern "C" fn paradec_quant_weight_create(
    quant_config_json: *const c_char,
    tensors: *const paradec_named_tensor,
    n_tensors: usize,
    in_features: usize,
    out_features: usize,
    device: paradec_device,
    out: *mut *mut paradec_quant_weight,
) -> paradec_status {
    guard(|| {
        let cfg = cstr(quant_config_json, "quant_config_json")?;
        let out = out_ptr(out, "out")?;
        if device_arg(device, "device")? != Device::Cpu {
            return Err(cerr(
                PARADEC_ERR_UNSUPPORTED,
                "device: a prepared quantized weight is made on the CPU; place it on a CUDA device afterwards with paradec_quant_weight_to_device (which takes the compute dtype)",
            ));
        }
        let json: serde_json::Value = serde_json::from_str(cfg)
            .map_err(|e| cerr(PARADEC_ERR_BAD_FORMAT, format!("quant_config_json: {e}")))?;
        let qc = QuantConfig::from_json(&json)?;
        let w = weights_from(tensors, n_tensors, "linear.")?;
        let q = QuantWeight::load(&w, "linear", in_features, out_features, &qc)?;
        write_out(
            out,
            Box::into_raw(Box::new(paradec_quant_weight {
                inner: q,
                prepared: None,
            })),
        );
        Ok(())
    })
}

/// Places a prepared quantized weight on `device` for linears computing in `dtype`: on a CUDA
/// device, the GPU layout (codes, scales and zeros reordered once, the same values) is built
/// and copied there, so `paradec_op_quant_linear(_ws)` runs on CUDA tensors of `dtype` (f16 or
/// bf16) on that device; on the CPU the device copy is dropped. The host copy is kept either
/// way, so host tensors keep working with the handle. Synchronous: it returns when the copy is
/// on the device. On failure the handle is unchanged.
///
/// - `dtype`: f16 or bf16 for a CUDA device (f32: `PARADEC_ERR_UNSUPPORTED`); any float type
///   for the CPU (ignored: the host path computes in f32).
///
/// Ownership: `weight` stays the caller's; the call must not overlap any other call on it.
#[no_mangle]
pub extern "C" fn paradec_quant_weight_to_device(
    weight: *mut paradec_quant_weight,
    device: paradec_device,
    dtype: paradec_dtype,
) -> paradec_status {
    guard(|| {
        let w = req_mut(weight, "weight")?;
        let (dev, dt) = device_dtype(device, dtype, "weight")?;
        match dev {
            Device::Cpu => {
                w.prepared = None;
                Ok(())
            }
            Device::Cuda(_) => {
                if dt == DType::F32 {
                    return Err(cerr(
                        PARADEC_ERR_UNSUPPORTED,
                        "dtype: quantized linears on a CUDA device compute in f16 or bf16, not f32",
                    ));
                }
                #[cfg(not(feature = "cuda"))]
                return Err(cerr(
                    PARADEC_ERR_NO_DEVICE,
                    "device: a CUDA device, but paradec was built without CUDA (the `cuda` feature)",
                ));
                #[cfg(feature = "cuda")]
                {
                    if let Some(p) = &w.prepared {
                        if p.device() == dev && p.dtype == dt {
                            return Ok(());
                        }
                    }
                    let p = PreparedQuant::new(&w.inner, dev, dt)?;
                    w.prepared = Some(p);
                    Ok(())
                }
            }
        }
    })
}

/// Frees a prepared quantized weight. NULL is a no-op.
///
/// Ownership: takes `weight`; do not use it again.
#[no_mangle]
pub extern "C" fn paradec_quant_weight_free(weight: *mut paradec_quant_weight) {
    let _ = guard(|| {
        free_box(weight);
        Ok(())
    });
}
