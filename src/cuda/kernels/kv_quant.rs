//! The quantized and the paged KV cache on the GPU (csrc/kernels/kv_quant.h): rotary fused
//! with a (quantizing) cache write, decode attention over the pages, and the dequantizing
//! gather a prefill over such a cache runs first. Twins of `cpu::kv_quant`. A paged call's
//! block table travels to the device at the end of the call's table in `meta`; the `_staged`
//! launchers read every table (block table included) from device copies the workspace staged
//! for the whole step instead, which is what a captured CUDA graph replays.

use std::ffi::c_void;
use std::ptr;

use super::rope::RopeTables;
use super::{check_tensor, dev_ptr, dev_ptr_mut, dtype_code, upload_bytes};
use crate::cuda::device::ensure_device;
use crate::cuda::error::check_status;
use crate::cuda::ffi;
use crate::cuda::stream::CudaStream;
use crate::kv_quant::{BlockTable, KvFormat, QuantLayer, QuantPages, RUN};
use crate::vocab::{AttnMasking, AttnShape, CacheSlots, RotaryArgs};
use crate::{DType, Error, Result, Tensor};

/// The longest query the quantized decode kernel takes; longer ones dequantize (`ops`).
pub const DECODE_MAX_Q: usize = 16;

fn overflow(what: &str) -> Error {
    Error::bad_input(format!("{what}: sizes overflow"))
}

/// Bytes of a call's device table `base` bytes long once a block table (i32 [batch,
/// max_pages]) is appended at the next 16-byte boundary.
pub fn table_meta_bytes(base: usize, table: Option<&BlockTable<'_>>) -> usize {
    match table {
        None => base,
        Some(t) => base.div_ceil(16) * 16 + 4 * t.table.len(),
    }
}

/// Appends the block table to a call's table bytes; returns its offset.
fn push_table(bytes: &mut Vec<u8>, table: Option<&BlockTable<'_>>) -> usize {
    match table {
        None => 0,
        Some(t) => {
            bytes.resize(bytes.len().div_ceil(16) * 16, 0);
            let off = bytes.len();
            bytes.extend(t.table.iter().flat_map(|p| p.to_le_bytes()));
            off
        }
    }
}

/// The device copy of a block table at byte `off` of the uploaded `meta` (NULL without one).
fn meta_table(meta: &Tensor, off: usize, table: Option<&BlockTable<'_>>) -> *const i32 {
    match table {
        None => ptr::null(),
        Some(_) => (dev_ptr(meta) as *const u8).wrapping_add(off) as *const i32,
    }
}

/// The C block table: NULL for a contiguous cache, else `table`'s entries at `device` (its
/// device copy).
fn table_arg(device: *const i32, table: Option<&BlockTable<'_>>) -> ffi::paradec_kv_block_table {
    match table {
        None => ffi::paradec_kv_block_table {
            table: ptr::null(),
            max_pages: 0,
            page_size: 0,
        },
        Some(t) => ffi::paradec_kv_block_table {
            table: device,
            max_pages: t.max_pages,
            page_size: t.page_size,
        },
    }
}

/// Whether a device block table is given exactly when the call has one.
fn check_table_ptr(device: *const i32, table: Option<&BlockTable<'_>>, what: &str) -> Result<()> {
    if table.is_some() == device.is_null() {
        return Err(Error::bad_input(format!(
            "{what}: the device block table is {} but the call {} one",
            if device.is_null() { "missing" } else { "given" },
            if table.is_some() { "has" } else { "has no" }
        )));
    }
    Ok(())
}

/// The rows of a call's pages: batch × capacity (contiguous) or the pool's (paged, checked by
/// `ops` against the table).
fn rows_of(
    p: &QuantPages,
    table: Option<&BlockTable<'_>>,
    batch: usize,
    capacity: usize,
    kv_dim: usize,
) -> Result<usize> {
    match table {
        None => batch.checked_mul(capacity).ok_or_else(|| overflow("cache")),
        Some(_) => {
            let re = if p.format == KvFormat::Native {
                kv_dim
            } else {
                p.format.row_bytes(kv_dim)
            };
            Ok(p.codes.numel() / re.max(1))
        }
    }
}

/// Checks one page set of `slots` rows of kv_heads·head_dim values on the stream's device
/// (`Native` pages: of `dtype`) and returns its C view (pointers into the tensors).
fn pages_arg(
    name: &str,
    p: &QuantPages,
    slots: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    stream: &CudaStream,
) -> Result<ffi::paradec_kv_pages> {
    let kv_dim = kv_heads
        .checked_mul(head_dim)
        .ok_or_else(|| overflow(name))?;
    if p.format == KvFormat::Native {
        check_tensor(
            &p.codes,
            &format!("{name} values"),
            Some(dtype),
            slots.checked_mul(kv_dim).ok_or_else(|| overflow(name))?,
            stream,
        )?;
        return Ok(ffi::paradec_kv_pages {
            format: p.format.code(),
            codes: dev_ptr(&p.codes) as *mut c_void,
            scales: ptr::null_mut(),
            head_scale: ptr::null(),
        });
    }
    if p.format.has_run_scales() && !head_dim.is_multiple_of(RUN) {
        return Err(Error::unsupported(format!(
            "{name}: head_dim {head_dim} is not a multiple of {RUN} (Hadamard runs would cross heads)"
        )));
    }
    let rb = p.format.row_bytes(kv_dim);
    check_tensor(
        &p.codes,
        &format!("{name} codes"),
        Some(DType::U8),
        slots.checked_mul(rb).ok_or_else(|| overflow(name))?,
        stream,
    )?;
    let scales = match (&p.scales, p.format.has_run_scales()) {
        (Some(s), true) => {
            check_tensor(
                s,
                &format!("{name} run scales"),
                Some(DType::F16),
                slots * (kv_dim / RUN),
                stream,
            )?;
            dev_ptr(s) as *mut c_void
        }
        (None, false) => ptr::null_mut(),
        _ => {
            return Err(Error::bad_input(format!(
                "{name}: run scales present exactly for Q8/Q4 pages"
            )))
        }
    };
    let head_scale = match (&p.head_scales, p.format == KvFormat::E4M3) {
        (Some(s), true) => {
            check_tensor(
                s,
                &format!("{name} head scales"),
                Some(DType::F32),
                kv_heads,
                stream,
            )?;
            dev_ptr(s) as *const f32
        }
        (None, false) => ptr::null(),
        _ => {
            return Err(Error::bad_input(format!(
                "{name}: head scales present exactly for E4M3 pages"
            )))
        }
    };
    Ok(ffi::paradec_kv_pages {
        format: p.format.code(),
        codes: dev_ptr(&p.codes) as *mut c_void,
        scales,
        head_scale,
    })
}

/// What the argument checks of a quantizing (or paged) cache write settle: the dtype code,
/// token and K/V element counts, the rotary style, width and attention factor, and the pages.
struct WriteCall {
    code: i32,
    tokens: usize,
    kv_n: usize,
    style: i32,
    rot_dim: usize,
    attn_factor: f32,
    kp: ffi::paradec_kv_pages,
    vp: ffi::paradec_kv_pages,
}

/// Checks every argument of a quantizing cache write: the new tokens, every slot against the
/// capacity, the pages, the dtype against the formats and the rotary arguments.
#[allow(clippy::too_many_arguments)]
fn check_write(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    table: Option<&BlockTable<'_>>,
    cache: &QuantLayer,
    stream: &CudaStream,
) -> Result<WriteCall> {
    let (code, tokens, kv_n) = super::rope::check_new_tokens(
        q,
        k,
        v,
        heads,
        kv_heads,
        head_dim,
        slots,
        "rotary_and_cache_write_quant",
        stream,
    )?;
    let dtype = q.dtype();
    let kv_dim = kv_heads * head_dim;
    let rows = rows_of(&cache.k, table, slots.batch, slots.capacity, kv_dim)?;
    let kp = pages_arg("cache k", &cache.k, rows, kv_heads, head_dim, dtype, stream)?;
    let vp = pages_arg("cache v", &cache.v, rows, kv_heads, head_dim, dtype, stream)?;
    if dtype == DType::BF16
        && (cache.k.format == KvFormat::E5M2 || cache.v.format == KvFormat::E5M2)
    {
        return Err(Error::unsupported(
            "KV cache format E5M2 truncates fp16 values: not for bf16 tensors",
        ));
    }
    let (style, rot_dim, attn_factor) =
        super::rope::rotary_style(rotary, positions, tokens, head_dim)?;
    Ok(WriteCall {
        code,
        tokens,
        kv_n,
        style,
        rot_dim,
        attn_factor,
        kp,
        vp,
    })
}

/// Launches a checked quantizing cache write over tables on the device.
///
/// # Safety
/// `tables` holds device copies of the call's positions and past lengths (i64) and, with
/// rotary, its frequencies (f32), and `block_table` (NULL without a table) the device copy of
/// `table`'s entries: on the stream's device, written before the kernel runs and alive until
/// it has. The tensors behind `c`'s pages are the cache the caller borrows mutably.
#[allow(clippy::too_many_arguments)]
unsafe fn launch_write(
    c: &WriteCall,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    slots: &CacheSlots<'_>,
    tables: RopeTables,
    table: Option<&BlockTable<'_>>,
    block_table: *const i32,
    stream: &CudaStream,
) -> Result<()> {
    let rotated = c.rot_dim > 0;
    ensure_device(stream.device())?;
    // SAFETY: every pointer is NULL (where optional) or a live device allocation of the checked
    // size and dtype on the stream's device (the pages' codes and scales were checked by
    // pages_arg, and the cache is borrowed mutably by the caller), alive until the kernel has
    // run (freeing waits for queued work); the tables as the function's contract says.
    let status = unsafe {
        ffi::paradec_rotary_cache_write_quant(
            c.code,
            dev_ptr_mut(q),
            dev_ptr_mut(k),
            dev_ptr(v),
            slots.batch,
            slots.q_len,
            heads,
            kv_heads,
            head_dim,
            if rotated {
                tables.positions
            } else {
                ptr::null()
            },
            c.style,
            c.rot_dim,
            if rotated {
                tables.inv_freq
            } else {
                ptr::null()
            },
            c.attn_factor,
            tables.past_len,
            slots.capacity,
            table_arg(block_table, table),
            c.kp,
            c.vp,
            stream.raw(),
        )
    };
    check_status(status, "paradec_rotary_cache_write_quant")
}

/// Rotates q and k (at `positions`) and writes k and v quantized into `cache` at each
/// sequence's next slots: `rotary_and_cache_write` for a quantized cache layer. Every slot is
/// checked against the capacity here, before launching. `meta` is a U8 device tensor of
/// exactly `rope_meta_bytes(tokens, batch, rot_dim)` bytes (positions, past lengths and
/// frequencies travel in it, queued on `stream`).
#[allow(clippy::too_many_arguments)]
pub fn rotary_and_cache_write_quant(
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    table: Option<&BlockTable<'_>>,
    meta: &mut Tensor,
    cache: &mut QuantLayer,
    stream: &CudaStream,
) -> Result<()> {
    let c = check_write(
        q, k, v, heads, kv_heads, head_dim, positions, rotary, slots, table, cache, stream,
    )?;
    let (tokens, rot_dim) = (c.tokens, c.rot_dim);
    // The table: positions (i64 per token), past lengths (i64 per sequence), frequencies (f32).
    let mut bytes = super::rope::rope_table(positions, slots.past_len, rotary, tokens, rot_dim);
    let table_off = push_table(&mut bytes, table);
    check_tensor(
        meta,
        "rotary meta (scratch)",
        Some(DType::U8),
        bytes.len(),
        stream,
    )?;
    if tokens == 0 || c.kv_n == 0 {
        return Ok(());
    }
    upload_bytes(meta, "rotary meta (scratch)", &bytes, stream)?;
    let base = dev_ptr(meta) as *const u8;
    let tables = RopeTables {
        positions: base as *const i64,
        past_len: base.wrapping_add(8 * tokens) as *const i64,
        inv_freq: base.wrapping_add(8 * (tokens + slots.batch)) as *const f32,
    };
    // SAFETY: the tables were queued on the stream just above, in a live device tensor.
    unsafe {
        launch_write(
            &c,
            q,
            k,
            v,
            heads,
            kv_heads,
            head_dim,
            slots,
            tables,
            table,
            meta_table(meta, table_off, table),
            stream,
        )
    }
}

/// As [`rotary_and_cache_write_quant`], reading positions, past lengths, frequencies and the
/// block table from device copies (the workspace's staged step) instead of uploading them. The
/// host arguments are still checked, every slot against the capacity included.
///
/// # Safety
/// `tables` holds device copies of exactly these host `positions`, `slots.past_len` and
/// `rotary.inv_freq`, and `block_table` (NULL without a table) of exactly `table.table`, on
/// the stream's device, queued on `stream` (or complete) before this call and alive until the
/// kernel has run.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rotary_and_cache_write_quant_staged(
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    table: Option<&BlockTable<'_>>,
    tables: RopeTables,
    block_table: *const i32,
    cache: &mut QuantLayer,
    stream: &CudaStream,
) -> Result<()> {
    let c = check_write(
        q, k, v, heads, kv_heads, head_dim, positions, rotary, slots, table, cache, stream,
    )?;
    if c.tokens == 0 || c.kv_n == 0 {
        return Ok(());
    }
    tables.check(c.rot_dim)?;
    check_table_ptr(block_table, table, "rotary_and_cache_write_quant")?;
    // SAFETY: the function's contract.
    unsafe {
        launch_write(
            &c,
            q,
            k,
            v,
            heads,
            kv_heads,
            head_dim,
            slots,
            tables,
            table,
            block_table,
            stream,
        )
    }
}

/// f32 elements of split-KV scratch `attention_quant` needs (0: none) for past lengths up to
/// `max_past`.
pub fn attention_quant_scratch_len(
    shape: &AttnShape,
    max_past: usize,
    stream: &CudaStream,
) -> Result<usize> {
    ensure_device(stream.device())?;
    // SAFETY: a pure query of sizes; no pointers.
    let bytes = unsafe {
        ffi::paradec_attention_quant_scratch_bytes(
            shape.batch,
            shape.q_len,
            shape.heads,
            shape.kv_heads,
            shape.head_dim,
            max_past,
        )
    };
    Ok(bytes / 4)
}

/// What the argument checks of a quantized decode attention call settle.
struct QAttnCall {
    call: super::attention::AttnCall,
    kp: ffi::paradec_kv_pages,
    vp: ffi::paradec_kv_pages,
}

/// Checks every argument of a quantized decode attention call planned for past lengths up to
/// `plan_max_past` (≥ each of them): the query, the pages, the table's capacity, the split-KV
/// scratch.
#[allow(clippy::too_many_arguments)]
fn check_attn(
    q: &Tensor,
    cache: &QuantLayer,
    table: Option<&BlockTable<'_>>,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    plan_max_past: usize,
    partials: &Tensor,
    out: &Tensor,
    stream: &CudaStream,
) -> Result<QAttnCall> {
    let s = shape;
    if s.q_len > DECODE_MAX_Q {
        return Err(Error::bad_input(format!(
            "attention_quant: q_len {} exceeds the decode kernel's {DECODE_MAX_Q}",
            s.q_len
        )));
    }
    let call = super::attention::check_query(q, out, s, masking, plan_max_past, stream)?;
    let dtype = q.dtype();
    let kv_dim = s.kv_heads * s.head_dim;
    let rows = rows_of(&cache.k, table, s.batch, s.capacity, kv_dim)?;
    let kp = pages_arg(
        "cache k", &cache.k, rows, s.kv_heads, s.head_dim, dtype, stream,
    )?;
    let vp = pages_arg(
        "cache v", &cache.v, rows, s.kv_heads, s.head_dim, dtype, stream,
    )?;
    if let Some(t) = table {
        if t.capacity() != s.capacity {
            return Err(Error::bad_input(format!(
                "paged attention: capacity {} is not the table's {} pages × {}",
                s.capacity, t.max_pages, t.page_size
            )));
        }
    }
    let scratch_len = attention_quant_scratch_len(s, plan_max_past, stream)?;
    if partials.dtype() != DType::F32 || partials.numel() < scratch_len {
        return Err(Error::bad_input(format!(
            "attention partials (scratch): expected at least {scratch_len} f32 values, got {} of {}",
            partials.numel(),
            partials.dtype()
        )));
    }
    if scratch_len > 0 {
        check_tensor(
            partials,
            "attention partials (scratch)",
            Some(DType::F32),
            partials.numel(),
            stream,
        )?;
    }
    Ok(QAttnCall { call, kp, vp })
}

/// Launches a checked quantized decode attention call.
///
/// # Safety
/// `past_len` (i64), `mask` (f32, NULL without a mask) and `block_table` (NULL without a
/// table) are device memory on the stream's device holding the call's past lengths, mask rows
/// and `table`'s entries, written before the kernel runs and alive until it has.
#[allow(clippy::too_many_arguments)]
unsafe fn launch_attn(
    c: &QAttnCall,
    q: &Tensor,
    table: Option<&BlockTable<'_>>,
    block_table: *const i32,
    s: &AttnShape,
    masking: &AttnMasking<'_>,
    plan_max_past: usize,
    past_len: *const i64,
    mask: *const f32,
    scale: f32,
    partials: &mut Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let (scratch, scratch_bytes): (*mut c_void, usize) = if partials.numel() > 0 {
        (dev_ptr_mut(partials), 4 * partials.numel())
    } else {
        (ptr::null_mut(), 0)
    };
    ensure_device(stream.device())?;
    // SAFETY: live device allocations of the checked sizes and dtypes on the stream's device
    // (NULL where optional), outliving the kernel (freeing device memory waits for queued
    // work); the tables as the function's contract says.
    let status = unsafe {
        ffi::paradec_attention_quant(
            c.call.code,
            dev_ptr(q),
            table_arg(block_table, table),
            c.kp,
            c.vp,
            dev_ptr_mut(out),
            s.batch,
            s.q_len,
            s.heads,
            s.kv_heads,
            s.head_dim,
            s.capacity,
            past_len,
            plan_max_past,
            masking.window,
            mask,
            masking.mask_stride,
            scale,
            scratch,
            scratch_bytes,
            stream.raw(),
        )
    };
    check_status(status, "paradec_attention_quant")
}

/// Decode attention (q_len ≤ 16) of q [batch, q_len, heads·D] over a quantized cache layer
/// [batch, capacity, kv_heads·D]: `attention` reading the codes directly. Past lengths,
/// capacity and mask are checked here; `meta` is a U8 device tensor of exactly
/// `attention_meta_bytes` (the past lengths and mask travel in it); `partials` f32 of at least
/// `attention_quant_scratch_len` elements.
#[allow(clippy::too_many_arguments)]
pub fn attention_quant(
    q: &Tensor,
    cache: &QuantLayer,
    table: Option<&BlockTable<'_>>,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    meta: &mut Tensor,
    partials: &mut Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let s = shape;
    let max_past = masking.past_len.iter().copied().max().unwrap_or(0);
    let c = check_attn(q, cache, table, s, masking, max_past, partials, out, stream)?;
    let mut bytes = Vec::with_capacity(super::attention_meta_bytes(s, masking));
    bytes.extend(
        masking
            .past_len
            .iter()
            .flat_map(|&p| (p as i64).to_le_bytes()),
    );
    bytes.resize((8 * s.batch).div_ceil(16) * 16, 0);
    let mask_off = bytes.len();
    if let Some(m) = masking.mask {
        bytes.extend(
            m[..s.batch * masking.mask_stride]
                .iter()
                .flat_map(|f| f.to_le_bytes()),
        );
    }
    let table_off = push_table(&mut bytes, table);
    check_tensor(
        meta,
        "attention meta (scratch)",
        Some(DType::U8),
        bytes.len(),
        stream,
    )?;
    if c.call.q_n == 0 {
        return Ok(());
    }
    upload_bytes(meta, "attention meta (scratch)", &bytes, stream)?;
    let base = dev_ptr(meta) as *const u8;
    let mask_ptr = if masking.mask.is_some() {
        base.wrapping_add(mask_off) as *const f32
    } else {
        ptr::null()
    };
    // SAFETY: the tables were queued on the stream just above, in a live device tensor.
    unsafe {
        launch_attn(
            &c,
            q,
            table,
            meta_table(meta, table_off, table),
            s,
            masking,
            max_past,
            base as *const i64,
            mask_ptr,
            scale,
            partials,
            out,
            stream,
        )
    }
}

/// As [`attention_quant`], reading the past lengths, mask and block table from device copies
/// (the workspace's staged step) instead of uploading them, and planning the launch for past
/// lengths up to `plan_max_past` (≥ each of them): a captured graph keeps its launch shape
/// while the lengths it reads change, and computes what the launch at the actual lengths
/// computes (the kernel cuts the keys by the batch's longest length, read on the device).
/// The host masking is still checked; `partials` holds at least
/// `attention_quant_scratch_len(shape, plan_max_past)` values.
///
/// # Safety
/// `past_len` (i64), `mask` (f32, NULL without a mask) and `block_table` (NULL without a
/// table) are device copies of exactly `masking.past_len`, `masking.mask` and `table.table`, on
/// the stream's device, queued on `stream` (or complete) before this call and alive until the
/// kernel has run.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_quant_staged(
    q: &Tensor,
    cache: &QuantLayer,
    table: Option<&BlockTable<'_>>,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    plan_max_past: usize,
    past_len: *const i64,
    mask: *const f32,
    block_table: *const i32,
    partials: &mut Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    let c = check_attn(
        q,
        cache,
        table,
        shape,
        masking,
        plan_max_past,
        partials,
        out,
        stream,
    )?;
    if c.call.q_n == 0 {
        return Ok(());
    }
    super::attention::check_staged_masking(masking, past_len, mask)?;
    check_table_ptr(block_table, table, "attention_quant")?;
    // SAFETY: the function's contract.
    unsafe {
        launch_attn(
            &c,
            q,
            table,
            block_table,
            shape,
            masking,
            plan_max_past,
            past_len,
            mask,
            scale,
            partials,
            out,
            stream,
        )
    }
}

/// Bytes of the device table `kv_dequantize` uploads: each sequence's length (i64) and the
/// block table.
pub fn gather_meta_bytes(batch: usize, table: Option<&BlockTable<'_>>) -> usize {
    table_meta_bytes(8 * batch, table)
}

/// Dequantizes (gathers) the first `slots` positions of every sequence of `pages` (contiguous
/// [batch, capacity, kv_heads·head_dim], or a pool addressed by `table`) into out [batch,
/// slots, kv_heads·head_dim] of out's dtype; sequence b's positions from `seq_len[b]` on are
/// zeros (never read: a paged sequence owns no page there). `meta`: U8 device scratch of
/// exactly `gather_meta_bytes(batch, table)` bytes (the lengths and block table travel in
/// it).
#[allow(clippy::too_many_arguments)]
pub fn kv_dequantize(
    pages: &QuantPages,
    table: Option<&BlockTable<'_>>,
    batch: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
    slots: usize,
    seq_len: &[usize],
    meta: &mut Tensor,
    out: &mut Tensor,
    stream: &CudaStream,
) -> Result<()> {
    if seq_len.len() != batch || seq_len.iter().any(|&l| l > slots) {
        return Err(Error::bad_input(format!(
            "kv_dequantize: {} sequence lengths for {batch} sequences of at most {slots}",
            seq_len.len()
        )));
    }
    if slots > capacity {
        return Err(Error::CapacityExceeded(format!(
            "kv_dequantize: {slots} slots of a cache of capacity {capacity}"
        )));
    }
    if head_dim == 0 || !head_dim.is_multiple_of(8) {
        return Err(Error::unsupported(format!(
            "kv_dequantize: head_dim {head_dim} must be a multiple of 8"
        )));
    }
    let dtype = out.dtype();
    let code = dtype_code(dtype, "dequantized cache")?;
    let rows = rows_of(pages, table, batch, capacity, kv_heads * head_dim)?;
    let p = pages_arg("cache", pages, rows, kv_heads, head_dim, dtype, stream)?;
    let mut bytes: Vec<u8> = seq_len
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    let table_off = push_table(&mut bytes, table);
    check_tensor(
        meta,
        "gather meta (scratch)",
        Some(DType::U8),
        bytes.len(),
        stream,
    )?;
    let n = [batch, slots, kv_heads, head_dim]
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| overflow("kv_dequantize"))?;
    check_tensor(out, "dequantized cache", None, n, stream)?;
    if pages.format == KvFormat::E5M2 && dtype != DType::F16 {
        return Err(Error::unsupported(
            "KV cache format E5M2 truncates fp16 values: not for bf16 tensors",
        ));
    }
    if n == 0 {
        return Ok(());
    }
    upload_bytes(meta, "gather meta (scratch)", &bytes, stream)?;
    ensure_device(stream.device())?;
    // SAFETY: the pages were checked by pages_arg and out has the checked size and dtype; all
    // live device allocations on the stream's device that outlive the kernel; the block table
    // (when given) was queued on the same stream before the kernel.
    let status = unsafe {
        ffi::paradec_kv_dequantize(
            code,
            table_arg(meta_table(meta, table_off, table), table),
            p,
            batch,
            capacity,
            kv_heads,
            head_dim,
            slots,
            dev_ptr(meta) as *const i64,
            dev_ptr_mut(out),
            stream.raw(),
        )
    };
    check_status(status, "paradec_kv_dequantize")
}
