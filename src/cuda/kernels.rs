//! Safe launchers of paradec's CUDA kernels over device tensors. Each is the twin of a `cpu::`
//! function and takes the same arguments (device tensors where the CPU takes slices), plus the
//! stream it queues on. They check dtypes, element counts and devices, launch, and return
//! without synchronizing. Float tensors are f16 or bf16, all of one dtype per call; f32 gives
//! `Error::Unsupported`. A call with nothing to do (zero elements) is a no-op, as on the CPU.

use std::ffi::c_void;
use std::ptr;

use super::device::ensure_device;
use super::error::check_status;
use super::ffi;
use super::stream::CudaStream;
use crate::tensor::Storage;
use crate::vocab::{Activation, Affine, NormKind, RopeStyle};
use crate::{DType, Device, Error, Result, Tensor};

/// The dtype code of a float tensor the kernels accept.
fn dtype_code(dtype: DType, name: &str) -> Result<i32> {
    match dtype {
        DType::F16 => Ok(ffi::paradec_dtype::PARADEC_F16 as i32),
        DType::BF16 => Ok(ffi::paradec_dtype::PARADEC_BF16 as i32),
        DType::F32 => Err(Error::unsupported(format!(
            "{name}: the CUDA kernels take f16 or bf16 tensors, not f32"
        ))),
        other => Err(Error::bad_input(format!(
            "{name}: expected an f16 or bf16 tensor, got {other}"
        ))),
    }
}

/// Checks one tensor argument: on the stream's device, of `dtype` (when given), with `numel`
/// elements.
fn check_tensor(
    t: &Tensor,
    name: &str,
    dtype: Option<DType>,
    numel: usize,
    stream: &CudaStream,
) -> Result<()> {
    if t.device() != Device::Cuda(stream.device()) {
        return Err(Error::bad_input(format!(
            "{name}: on {}, but the stream is on cuda:{}",
            t.device(),
            stream.device()
        )));
    }
    if let Some(dt) = dtype {
        if t.dtype() != dt {
            return Err(Error::bad_input(format!(
                "{name}: expected dtype {dt}, got {}",
                t.dtype()
            )));
        }
    }
    if t.numel() != numel {
        return Err(Error::bad_input(format!(
            "{name}: expected {numel} elements, got shape {:?}",
            t.shape()
        )));
    }
    Ok(())
}

fn dev_ptr(t: &Tensor) -> *const c_void {
    match t.storage() {
        Storage::Cuda(b) => b.as_ptr(),
        // Unreachable after check_tensor; a NULL makes the launcher reject the call.
        Storage::Host(_) => ptr::null(),
    }
}

fn dev_ptr_mut(t: &mut Tensor) -> *mut c_void {
    match t.storage_mut() {
        Storage::Cuda(b) => b.as_mut_ptr(),
        Storage::Host(_) => ptr::null_mut(),
    }
}

fn opt_ptr(t: Option<&Tensor>) -> *const c_void {
    t.map_or(ptr::null(), dev_ptr)
}

/// Checks an optional `[cols]` affine tensor.
fn check_affine(
    a: &Affine<'_>,
    name: &str,
    dtype: DType,
    cols: usize,
    stream: &CudaStream,
) -> Result<()> {
    if let Some(w) = a.weight {
        check_tensor(w, &format!("{name} weight"), Some(dtype), cols, stream)?;
    }
    if let Some(b) = a.bias {
        check_tensor(b, &format!("{name} bias"), Some(dtype), cols, stream)?;
    }
    Ok(())
}

fn norm_kind_code(kind: NormKind) -> i32 {
    match kind {
        NormKind::LayerNorm => ffi::paradec_norm_kind::PARADEC_LAYER_NORM as i32,
        NormKind::RmsNorm => ffi::paradec_norm_kind::PARADEC_RMS_NORM as i32,
    }
}

/// The one entry behind `norm`, `add_norm` and `norm2`.
#[allow(clippy::too_many_arguments)]
fn norm_fused(
    kind: NormKind,
    x: *mut c_void,
    x_tensor: &Tensor,
    residual: Option<&Tensor>,
    rows: usize,
    cols: usize,
    affine_a: Affine<'_>,
    out_a: &mut Tensor,
    second: Option<(Affine<'_>, &mut Tensor)>,
    eps: f32,
    stream: &CudaStream,
) -> Result<()> {
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| Error::bad_input(format!("norm: {rows} × {cols} overflows")))?;
    let dtype = x_tensor.dtype();
    let code = dtype_code(dtype, "norm x")?;
    check_tensor(x_tensor, "norm x", None, n, stream)?;
    if let Some(r) = residual {
        check_tensor(r, "norm residual", Some(dtype), n, stream)?;
    }
    check_affine(&affine_a, "norm", dtype, cols, stream)?;
    check_tensor(out_a, "norm out", Some(dtype), n, stream)?;
    let (wb, bb, ob) = match second {
        Some((aff, out)) => {
            check_affine(&aff, "norm (second)", dtype, cols, stream)?;
            check_tensor(out, "norm out (second)", Some(dtype), n, stream)?;
            (opt_ptr(aff.weight), opt_ptr(aff.bias), dev_ptr_mut(out))
        }
        None => (ptr::null(), ptr::null(), ptr::null_mut()),
    };
    if n == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: every pointer is NULL (optional) or a live device allocation of the checked
    // element count and dtype on the stream's device; the allocations outlive the kernel
    // because freeing device memory waits for queued work. The launcher validates the rest.
    let status = unsafe {
        ffi::paradec_norm_fused(
            norm_kind_code(kind),
            code,
            x,
            opt_ptr(residual),
            opt_ptr(affine_a.weight),
            opt_ptr(affine_a.bias),
            dev_ptr_mut(out_a),
            wb,
            bb,
            ob,
            rows,
            cols,
            eps,
            stream.raw(),
        )
    };
    check_status(status, "paradec_norm")
}

/// `out[r] = norm(x[r])` for `rows` rows of `cols` values. Twin of `cpu::norm::norm`.
#[allow(clippy::too_many_arguments)]
pub fn norm(
    kind: NormKind,
    x: &Tensor,
    rows: usize,
    cols: usize,
    affine: Affine<'_>,
    eps: f32,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    // The kernel only reads x here.
    let xp = dev_ptr(x) as *mut c_void;
    norm_fused(
        kind, xp, x, None, rows, cols, affine, out, None, eps, stream,
    )
}

/// `x += residual; out = norm(x)` (x written back, rounded to its dtype). Twin of
/// `cpu::norm::add_norm`.
#[allow(clippy::too_many_arguments)]
pub fn add_norm(
    kind: NormKind,
    x: &mut Tensor,
    residual: &Tensor,
    rows: usize,
    cols: usize,
    affine: Affine<'_>,
    eps: f32,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let xp = dev_ptr_mut(x);
    norm_fused(
        kind,
        xp,
        x,
        Some(residual),
        rows,
        cols,
        affine,
        out,
        None,
        eps,
        stream,
    )
}

/// Two norms of the same rows from one read of x. Twin of `cpu::norm::norm2`.
#[allow(clippy::too_many_arguments)]
pub fn norm2(
    kind: NormKind,
    x: &Tensor,
    rows: usize,
    cols: usize,
    affine_a: Affine<'_>,
    affine_b: Affine<'_>,
    eps: f32,
    out_a: &mut Tensor,
    out_b: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let xp = dev_ptr(x) as *mut c_void;
    norm_fused(
        kind,
        xp,
        x,
        None,
        rows,
        cols,
        affine_a,
        out_a,
        Some((affine_b, out_b)),
        eps,
        stream,
    )
}

/// `x += residual; out_a, out_b = norm_a(x), norm_b(x)`: the residual add and both norms of a
/// two-norm block in one pass.
#[allow(clippy::too_many_arguments)]
pub fn add_norm2(
    kind: NormKind,
    x: &mut Tensor,
    residual: &Tensor,
    rows: usize,
    cols: usize,
    affine_a: Affine<'_>,
    affine_b: Affine<'_>,
    eps: f32,
    out_a: &mut Tensor,
    out_b: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let xp = dev_ptr_mut(x);
    norm_fused(
        kind,
        xp,
        x,
        Some(residual),
        rows,
        cols,
        affine_a,
        out_a,
        Some((affine_b, out_b)),
        eps,
        stream,
    )
}

// ---- rotary embedding + KV-cache write ---------------------------------------------------------

/// Rotary settings on the device: the twin of `cpu::rope::RotaryArgs`, with `inv_freq` an f32
/// device tensor of at least `rot_dim / 2` values.
#[derive(Debug, Clone, Copy)]
pub struct RotaryArgs<'a> {
    pub style: RopeStyle,
    pub rot_dim: usize,
    pub inv_freq: &'a Tensor,
    pub attn_factor: f32,
}

/// Where new tokens go in the cache: the twin of `cpu::rope::CacheSlots`, with `past_len` an
/// i64 device tensor of `batch` values. Slot `past_len[b] + t` must lie below `capacity`: the
/// values are on the device, so this cannot be checked here; the kernel skips (does not write)
/// a slot outside the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSlots<'a> {
    pub batch: usize,
    pub q_len: usize,
    pub capacity: usize,
    pub past_len: &'a Tensor,
}

/// Rotates q and k (at `positions`, an i64 device tensor with one value per token of
/// [batch, q_len]) and writes k and v into the cache at each sequence's next slots. Twin of
/// `cpu::rope::rotary_and_cache_write`; q is [batch, q_len, heads, head_dim], k and v
/// [batch, q_len, kv_heads, head_dim], the caches [batch, capacity, kv_heads·head_dim].
#[allow(clippy::too_many_arguments)]
pub fn rotary_and_cache_write(
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &Tensor,
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    cache_k: &mut Tensor,
    cache_v: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let overflow = || Error::bad_input("rotary_and_cache_write: sizes overflow");
    let tokens = slots.batch.checked_mul(slots.q_len).ok_or_else(overflow)?;
    let q_n = tokens
        .checked_mul(heads)
        .and_then(|n| n.checked_mul(head_dim))
        .ok_or_else(overflow)?;
    let kv_n = tokens
        .checked_mul(kv_heads)
        .and_then(|n| n.checked_mul(head_dim))
        .ok_or_else(overflow)?;
    let cache_n = slots
        .batch
        .checked_mul(slots.capacity)
        .and_then(|n| n.checked_mul(kv_heads * head_dim))
        .ok_or_else(overflow)?;
    let dtype = q.dtype();
    let code = dtype_code(dtype, "rotary q")?;
    check_tensor(q, "rotary q", None, q_n, stream)?;
    check_tensor(k, "rotary k", Some(dtype), kv_n, stream)?;
    check_tensor(v, "rotary v", Some(dtype), kv_n, stream)?;
    check_tensor(
        slots.past_len,
        "cache past_len",
        Some(DType::I64),
        slots.batch,
        stream,
    )?;
    check_tensor(cache_k, "cache k", Some(dtype), cache_n, stream)?;
    check_tensor(cache_v, "cache v", Some(dtype), cache_n, stream)?;
    let (style, rot_dim, inv_freq, attn_factor) = match rotary {
        Some(r) => {
            check_tensor(
                positions,
                "rotary positions",
                Some(DType::I64),
                tokens,
                stream,
            )?;
            if r.inv_freq.dtype() != DType::F32 || r.inv_freq.numel() < r.rot_dim / 2 {
                return Err(Error::bad_input(format!(
                    "rotary inv_freq: expected at least {} f32 values, got {} of {}",
                    r.rot_dim / 2,
                    r.inv_freq.numel(),
                    r.inv_freq.dtype()
                )));
            }
            check_tensor(
                r.inv_freq,
                "rotary inv_freq",
                Some(DType::F32),
                r.inv_freq.numel(),
                stream,
            )?;
            if r.rot_dim == 0 || r.rot_dim % 2 != 0 || r.rot_dim > head_dim {
                return Err(Error::bad_input(format!(
                    "rotary rot_dim {} must be even and in 1..={head_dim}",
                    r.rot_dim
                )));
            }
            let style = match r.style {
                RopeStyle::Interleaved => ffi::paradec_rope_style::PARADEC_ROPE_INTERLEAVED,
                RopeStyle::Half => ffi::paradec_rope_style::PARADEC_ROPE_HALF,
            } as i32;
            (
                style,
                r.rot_dim,
                dev_ptr(r.inv_freq) as *const f32,
                r.attn_factor,
            )
        }
        None => (0, 0, ptr::null(), 1.0),
    };
    if tokens == 0 || kv_n == 0 {
        return Ok(());
    }
    let positions_ptr = if rotary.is_some() {
        dev_ptr(positions) as *const i64
    } else {
        ptr::null()
    };
    ensure_device(stream.device())?;
    // SAFETY: every pointer is NULL (where optional) or a live device allocation of the checked
    // size and dtype on the stream's device, alive until the kernel has run (freeing waits).
    let status = unsafe {
        ffi::paradec_rotary_cache_write(
            code,
            dev_ptr_mut(q),
            dev_ptr_mut(k),
            dev_ptr(v),
            slots.batch,
            slots.q_len,
            heads,
            kv_heads,
            head_dim,
            positions_ptr,
            style,
            rot_dim,
            inv_freq,
            attn_factor,
            dev_ptr(slots.past_len) as *const i64,
            slots.capacity,
            dev_ptr_mut(cache_k),
            dev_ptr_mut(cache_v),
            stream.raw(),
        )
    };
    check_status(status, "paradec_rotary_cache_write")
}

// ---- elementwise -------------------------------------------------------------------------------

fn act_code(act: Activation) -> i32 {
    use ffi::paradec_activation as a;
    (match act {
        Activation::GeluErf => a::PARADEC_GELU_ERF,
        Activation::GeluNew => a::PARADEC_GELU_NEW,
        Activation::GeluFast => a::PARADEC_GELU_FAST,
        Activation::Silu => a::PARADEC_SILU,
        Activation::Relu => a::PARADEC_RELU,
    }) as i32
}

/// `x = act(x)` in place. Twin of `cpu::activation::activate`.
pub fn activate(act: Activation, x: &mut Tensor, stream: &CudaStream) -> Result<()> {
    let code = dtype_code(x.dtype(), "activate x")?;
    let n = x.numel();
    check_tensor(x, "activate x", None, n, stream)?;
    if n == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: x is a live device allocation of n elements of the given dtype.
    let status =
        unsafe { ffi::paradec_activate(act_code(act), code, dev_ptr_mut(x), n, stream.raw()) };
    check_status(status, "paradec_activate")
}

/// `out = act(gate) · up`. Twin of `cpu::activation::act_mul`.
pub fn act_mul(
    act: Activation,
    gate: &Tensor,
    up: &Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let dtype = gate.dtype();
    let code = dtype_code(dtype, "act_mul gate")?;
    let n = gate.numel();
    check_tensor(gate, "act_mul gate", None, n, stream)?;
    check_tensor(up, "act_mul up", Some(dtype), n, stream)?;
    check_tensor(out, "act_mul out", Some(dtype), n, stream)?;
    if n == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: three live device allocations of n elements of the given dtype.
    let status = unsafe {
        ffi::paradec_act_mul(
            act_code(act),
            code,
            dev_ptr(gate),
            dev_ptr(up),
            dev_ptr_mut(out),
            n,
            stream.raw(),
        )
    };
    check_status(status, "paradec_act_mul")
}

/// `x += y`. Twin of `cpu::activation::add_inplace`.
pub fn add_inplace(x: &mut Tensor, y: &Tensor, stream: &CudaStream) -> Result<()> {
    let dtype = x.dtype();
    let code = dtype_code(dtype, "add_inplace x")?;
    let n = x.numel();
    check_tensor(x, "add_inplace x", None, n, stream)?;
    check_tensor(y, "add_inplace y", Some(dtype), n, stream)?;
    if n == 0 {
        return Ok(());
    }
    ensure_device(stream.device())?;
    // SAFETY: two live device allocations of n elements of the given dtype.
    let status =
        unsafe { ffi::paradec_add_inplace(code, dev_ptr_mut(x), dev_ptr(y), n, stream.raw()) };
    check_status(status, "paradec_add_inplace")
}

// ---- embedding ---------------------------------------------------------------------------------

/// Checks host token ids against the vocabulary, naming the first bad one.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(i) => Err(Error::bad_input(format!(
            "token id {} at position {i} is outside the vocabulary of {vocab}",
            ids[i]
        ))),
        None => Ok(()),
    }
}

/// `out[t] = table[ids[t]]`: table [vocab, hidden], ids an i32 device tensor, out
/// [ids, hidden]. Twin of `cpu::embedding::embedding`. The ids are on the device and cannot be
/// checked here: an id outside `0..vocab` gives a row of zeros (never a read outside the
/// table). Ids that come from the host should go through [`check_ids`] first.
pub fn embedding(
    table: &Tensor,
    hidden: usize,
    ids: &Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let dtype = table.dtype();
    let code = dtype_code(dtype, "embedding table")?;
    if hidden == 0 || !table.numel().is_multiple_of(hidden) {
        return Err(Error::bad_input(format!(
            "embedding table: shape {:?} is not [vocab, {hidden}]",
            table.shape()
        )));
    }
    let vocab = table.numel() / hidden;
    check_tensor(table, "embedding table", None, vocab * hidden, stream)?;
    let n = ids.numel();
    check_tensor(ids, "embedding ids", Some(DType::I32), n, stream)?;
    check_tensor(out, "embedding out", Some(dtype), n * hidden, stream)?;
    if n == 0 {
        return Ok(());
    }
    if vocab == 0 {
        return Err(Error::bad_input("embedding table: empty vocabulary"));
    }
    ensure_device(stream.device())?;
    // SAFETY: live device allocations of the checked sizes; the kernel reads only rows of ids
    // inside 0..vocab.
    let status = unsafe {
        ffi::paradec_embedding(
            code,
            dev_ptr(table),
            vocab,
            hidden,
            dev_ptr(ids),
            ffi::paradec_id_type::PARADEC_IDS_I32 as i32,
            n,
            dev_ptr_mut(out),
            stream.raw(),
        )
    };
    check_status(status, "paradec_embedding")
}
