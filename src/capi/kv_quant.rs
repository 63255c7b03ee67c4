//! Kernel level over the KV cache modes and the paged cache: the rotary + cache write and the
//! attention of `ops::kv_quant`, on one layer's K and V stored in memory the caller owns
//! ([`paradec_cache_pages`]): a contiguous cache `[batch, capacity, …]` in any mode, or a pool
//! of pages `[num_pages, page_size, …]` addressed through a [`paradec_block_table`] (the
//! caller owns and fills it).
//!
//! Every per-call table — past lengths, positions, rotary frequencies, the padding mask, the
//! block table and its page counts — is **host** memory, checked before anything runs, on the
//! GPU as on the CPU (the same checks as `BlockTable::check` and the ops: a page outside the
//! pool, a length past a sequence's pages, two sequences writing one row, … are named errors
//! and nothing is written). Host tensors run the CPU twins in place on the caller's memory;
//! CUDA tensors run the ops on the borrowed device memory, queued on the caller's stream, with
//! their tables and scratch from the workspace (the `_ws` calls; the plain calls take host
//! tensors only and return `PARADEC_ERR_UNSUPPORTED` naming the `_ws` call for CUDA ones).

use std::ffi::c_void;

use half::f16;

#[cfg(not(feature = "cuda"))]
use super::ops::no_cuda;
use super::ops::{
    cuda_workspace, device_float, host_tables, on_cuda, paradec_rotary, rotary_arg, same_float,
    RotArg,
};
use super::paradec_status::{self, *};
use super::tensor::*;
use super::{cerr, guard, req, CResult};
use crate::cpu;
use crate::cpu::kv_quant::{PagesMut, PagesRef};
use crate::kv_quant::{BlockTable, KvCacheMode, KvFormat, PagedTable, RUN};
use crate::tensor::DType;
use crate::vocab::{AttnMasking, AttnShape, CacheSlots, RotaryArgs};

#[cfg(feature = "cuda")]
use super::cuda;

/// Cache mode: K and V in the cache's dtype (f16 / bf16 on CUDA, f32 / f16 / bf16 on the host).
pub const PARADEC_CACHE_MODE_NATIVE: i32 = 0;
/// Cache mode: FP8 E4M3 for K and V (1 byte per value), `e4m3(x / scale)` with one scale per
/// layer and KV head.
pub const PARADEC_CACHE_MODE_FP8_E4M3: i32 = 1;
/// Cache mode: FP8 E5M2 for K and V (the upper byte of the value's fp16 encoding); not for
/// bf16.
pub const PARADEC_CACHE_MODE_FP8_E5M2: i32 = 2;
/// Cache mode: Q8 for K and V (8-bit codes of Hadamard-rotated runs of 32 values, one fp16
/// scale per run); head_dim a multiple of 32.
pub const PARADEC_CACHE_MODE_Q8: i32 = 3;
/// Cache mode: Q8 for K, Q4 for V; head_dim a multiple of 32.
pub const PARADEC_CACHE_MODE_Q6: i32 = 4;
/// Cache mode: Q4 for K and V (4-bit codes, two per byte, the even element in the low
/// nibble); head_dim a multiple of 32.
pub const PARADEC_CACHE_MODE_Q4: i32 = 5;

/// The mode of a `PARADEC_CACHE_MODE_*` code (E4M3 with unit scales), or an error naming
/// `name`.
pub(crate) fn cache_mode(code: i32, name: &str) -> CResult<KvCacheMode> {
    let all = KvCacheMode::all();
    usize::try_from(code)
        .ok()
        .and_then(|i| all.get(i).cloned())
        .ok_or_else(|| {
            cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!(
                    "{name}: {code} is not a cache mode (PARADEC_CACHE_MODE_*: 0 native, 1 fp8e4m3, \
                     2 fp8e5m2, 3 q8, 4 q6, 5 q4)"
                ),
            )
        })
}

/// The `PARADEC_CACHE_MODE_*` code of a mode.
pub(crate) fn mode_code(mode: &KvCacheMode) -> i32 {
    match mode {
        KvCacheMode::Native => PARADEC_CACHE_MODE_NATIVE,
        KvCacheMode::Fp8E4M3 { .. } => PARADEC_CACHE_MODE_FP8_E4M3,
        KvCacheMode::Fp8E5M2 => PARADEC_CACHE_MODE_FP8_E5M2,
        KvCacheMode::Q8 => PARADEC_CACHE_MODE_Q8,
        KvCacheMode::Q6 => PARADEC_CACHE_MODE_Q6,
        KvCacheMode::Q4 => PARADEC_CACHE_MODE_Q4,
    }
}

/// One layer's K and V in a cache mode, in memory the caller owns (docs/formats.md, "Quantized
/// KV cache modes"). The first two dimensions of every tensor but the head scales are
/// `[batch, capacity]` for a contiguous cache (sequence b's position j in row b·capacity + j)
/// or `[num_pages, page_size]` for a paged pool (see `paradec_block_table`); `kv_heads` and the
/// last dimension follow:
///
/// | K's (V's) format | `k` (`v`) | `k_scales` (`v_scales`) | `k_head_scales` (`v_head_scales`) |
/// |---|---|---|---|
/// | native | q's dtype `[…, kv_heads, head_dim]` | NULL | NULL |
/// | FP8 E4M3 | uint8 `[…, kv_heads, head_dim]` | NULL | float32 `[kv_heads]` (the layer's scales) |
/// | FP8 E5M2 | uint8 `[…, kv_heads, head_dim]` | NULL | NULL |
/// | Q8 | uint8 `[…, kv_heads, head_dim]` | float16 `[…, kv_heads, head_dim / 32]` | NULL |
/// | Q4 | uint8 `[…, kv_heads, head_dim / 2]` | float16 `[…, kv_heads, head_dim / 32]` | NULL |
///
/// `mode` picks the formats: NATIVE, FP8_E4M3, FP8_E5M2, Q8 (Q8 + Q8), Q6 (Q8 for K, Q4 for
/// V), Q4 (Q4 + Q4). Zero-filled pages are a valid empty cache. All tensors on one device;
/// on CUDA `k` and `v` must be 16-byte aligned (cudaMalloc memory is).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct paradec_cache_pages {
    /// A `PARADEC_CACHE_MODE_*` value.
    pub mode: i32,
    /// K: codes (uint8) or, in the native mode, values.
    pub k: *const paradec_tensor,
    /// K's run scales (Q8 / Q4 formats), else NULL.
    pub k_scales: *const paradec_tensor,
    /// K's per-KV-head scales (E4M3), else NULL.
    pub k_head_scales: *const paradec_tensor,
    /// V: codes (uint8) or, in the native mode, values.
    pub v: *const paradec_tensor,
    /// V's run scales (Q8 / Q4 formats), else NULL.
    pub v_scales: *const paradec_tensor,
    /// V's per-KV-head scales (E4M3), else NULL.
    pub v_head_scales: *const paradec_tensor,
}

/// A block table the caller owns and fills, in **host** memory: sequence b's
/// position j lives in page `page_ids[b, j / page_size]`, row `j % page_size` of that page
/// (page_size is the pool's second dimension, see `paradec_cache_pages`, or a paged cache's
/// page size for the `_paged` forwards of a model or a layer). Entries past a sequence's
/// `page_count[b]` are never read. Read during the call only (nothing keeps it).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct paradec_block_table {
    /// int32 `[batch, max_pages]`: page indices into the pool.
    pub page_ids: *const paradec_tensor,
    /// int32 or int64 `[batch]`: the pages each sequence owns (its first entries of
    /// `page_ids`), at most max_pages.
    pub page_count: *const paradec_tensor,
}

/// One of K or V, checked.
pub(crate) struct Side {
    pub(crate) format: KvFormat,
    pub(crate) data: View,
    pub(crate) scales: Option<View>,
    pub(crate) head_scales: Option<View>,
}

/// A checked `paradec_cache_pages`: `rows` = its first two dimensions.
pub(crate) struct Pages {
    pub(crate) k: Side,
    pub(crate) v: Side,
    pub(crate) rows: [usize; 2],
    pub(crate) kv_heads: usize,
}

impl Pages {
    fn views(&self) -> Vec<&View> {
        let mut v = Vec::new();
        for s in [&self.k, &self.v] {
            v.push(&s.data);
            v.extend(s.scales.iter());
            v.extend(s.head_scales.iter());
        }
        v
    }

    /// The tensors a write changes.
    fn written(&self) -> Vec<&View> {
        let mut v = Vec::new();
        for s in [&self.k, &self.v] {
            v.push(&s.data);
            v.extend(s.scales.iter());
        }
        v
    }

    pub(crate) fn is_native(&self) -> bool {
        self.k.format == KvFormat::Native
    }
}

/// Checks `pages` for heads of `head_dim` features computed in `dtype` (`kv_heads`: what the
/// new keys have, when the call has them).
fn pages_arg(
    p: *const paradec_cache_pages,
    dtype: DType,
    head_dim: usize,
    kv_heads: Option<usize>,
) -> CResult<Pages> {
    let p = req(p, "pages")?;
    let mode = cache_mode(p.mode, "pages.mode")?;
    let (fk, fv) = mode.formats();
    let mut dims: Option<[usize; 3]> = None;
    let mut side = |format: KvFormat,
                    which: &str,
                    data: *const paradec_tensor,
                    scales: *const paradec_tensor,
                    head: *const paradec_tensor|
     -> CResult<Side> {
        if format.has_run_scales() && !head_dim.is_multiple_of(RUN) {
            return Err(cerr(
                PARADEC_ERR_UNSUPPORTED,
                format!(
                    "pages.mode {}: head_dim {head_dim} is not a multiple of {RUN} (a Hadamard run \
                     of {RUN} values would cross heads)",
                    mode.name()
                ),
            ));
        }
        if format == KvFormat::E5M2 && dtype == DType::BF16 {
            return Err(cerr(
                PARADEC_ERR_UNSUPPORTED,
                "pages.mode fp8e5m2 truncates fp16 values: not for bf16 tensors",
            ));
        }
        let name = format!("pages.{which}");
        let data = view(data, &name)?;
        want_ndim(
            &data,
            4,
            "[batch, capacity, kv_heads, …] or [num_pages, page_size, kv_heads, …]",
        )?;
        let [a, b, h] = match dims {
            Some(d) => d,
            None => {
                let d = [data.shape[0], data.shape[1], data.shape[2]];
                if let Some(kvh) = kv_heads {
                    if d[2] != kvh {
                        return Err(cerr(
                            PARADEC_ERR_SHAPE,
                            format!(
                                "{name}: {} kv heads, but k has {kvh} (shape {:?})",
                                d[2], data.shape
                            ),
                        ));
                    }
                }
                dims = Some(d);
                d
            }
        };
        let last = if format == KvFormat::Native {
            same_float(&data, dtype)?;
            head_dim
        } else {
            want_dtype(&data, DType::U8)?;
            format.row_bytes(head_dim)
        };
        want_shape(&data, &[a, b, h, last])?;
        let scales = if format.has_run_scales() {
            let s = view(scales, &format!("pages.{which}_scales"))?;
            want_dtype(&s, DType::F16)?;
            want_shape(&s, &[a, b, h, head_dim / RUN])?;
            Some(s)
        } else if !scales.is_null() {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!(
                    "pages.{which}_scales: given, but mode {}'s {which} format has no run scales \
                     (pass NULL)",
                    mode.name()
                ),
            ));
        } else {
            None
        };
        let head_scales = if format == KvFormat::E4M3 {
            let s = view(head, &format!("pages.{which}_head_scales"))?;
            want_dtype(&s, DType::F32)?;
            want_shape(&s, &[h])?;
            Some(s)
        } else if !head.is_null() {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!(
                    "pages.{which}_head_scales: given, but mode {}'s {which} format has no head \
                     scales (pass NULL)",
                    mode.name()
                ),
            ));
        } else {
            None
        };
        Ok(Side {
            format,
            data,
            scales,
            head_scales,
        })
    };
    let k = side(fk, "k", p.k, p.k_scales, p.k_head_scales)?;
    let v = side(fv, "v", p.v, p.v_scales, p.v_head_scales)?;
    let [a, b, h] = dims.unwrap_or_default();
    Ok(Pages {
        k,
        v,
        rows: [a, b],
        kv_heads: h,
    })
}

/// A checked block table: page ids and page counts.
pub(crate) struct Table {
    ids: Vec<i32>,
    count: Vec<usize>,
    max_pages: usize,
}

impl Table {
    fn block_table(&self, page_size: usize) -> BlockTable<'_> {
        BlockTable {
            page_size,
            max_pages: self.max_pages,
            table: &self.ids,
            page_count: &self.count,
        }
    }

    /// The owned table a forward over a paged `KvCache` carries (`AttnParams::with_block_table`),
    /// for pages of `page_size` positions (the cache's).
    pub(crate) fn into_paged(self, page_size: usize) -> PagedTable {
        PagedTable::new(page_size, self.max_pages, self.ids, self.count)
    }
}

/// Checks a block table's tensors for `batch` sequences (the values are checked against the
/// pool and the call's lengths by `BlockTable::check`).
pub(crate) fn table_arg(t: *const paradec_block_table, batch: usize) -> CResult<Table> {
    let t = req(t, "block_table")?;
    let ids = view(t.page_ids, "block_table.page_ids")?;
    let count = view(t.page_count, "block_table.page_count")?;
    host_tables(&[&ids, &count])?;
    want_dtype(&ids, DType::I32)?;
    want_ndim(&ids, 2, "[batch, max_pages]")?;
    if ids.shape[0] != batch {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "block_table.page_ids: expected [{batch}, max_pages] (one row per sequence), got shape {:?}",
                ids.shape
            ),
        ));
    }
    if count.dtype != DType::I32 && count.dtype != DType::I64 {
        return Err(cerr(
            PARADEC_ERR_DTYPE,
            format!(
                "block_table.page_count: expected int32 or int64, got {}",
                count.dtype
            ),
        ));
    }
    want_shape(&count, &[batch])?;
    let max_pages = ids.shape[1];
    let idv: Vec<i32> = ids.ints().iter().map(|&x| x as i32).collect();
    let cv = count
        .ints()
        .iter()
        .enumerate()
        .map(|(b, &c)| {
            usize::try_from(c).map_err(|_| {
                cerr(
                    PARADEC_ERR_INVALID_ARGUMENT,
                    format!("block_table.page_count[{b}] = {c} is negative"),
                )
            })
        })
        .collect::<CResult<_>>()?;
    Ok(Table {
        ids: idv,
        count: cv,
        max_pages,
    })
}

/// Past lengths of a paged call (the block table bounds them).
fn paged_past(past: &View) -> CResult<Vec<usize>> {
    past.ints()
        .iter()
        .enumerate()
        .map(|(b, &p)| {
            usize::try_from(p).map_err(|_| {
                cerr(
                    PARADEC_ERR_INVALID_ARGUMENT,
                    format!("past_len[{b}] = {p} is negative"),
                )
            })
        })
        .collect()
}

/// Past lengths of a contiguous call, each with `q_len` more within `capacity`.
fn contiguous_past(past: &View, q_len: usize, capacity: usize, what: &str) -> CResult<Vec<usize>> {
    past.ints()
        .iter()
        .enumerate()
        .map(|(b, &p)| {
            usize::try_from(p)
                .ok()
                .filter(|&p| p.checked_add(q_len).is_some_and(|e| e <= capacity))
                .ok_or_else(|| {
                    cerr(
                        PARADEC_ERR_CAPACITY,
                        format!(
                            "past_len[{b}] = {p}: {p} + {q_len} {what} do not fit the cache capacity {capacity}"
                        ),
                    )
                })
        })
        .collect()
}

/// Checks that a contiguous cache's first dimension is the call's batch.
fn contiguous_batch(pages: &Pages, batch: usize) -> CResult<()> {
    if pages.rows[0] != batch {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!(
                "pages.k: a contiguous cache of {} sequences (shape [batch, capacity, …]), but the call has batch {batch}",
                pages.rows[0]
            ),
        ));
    }
    Ok(())
}

/// The CUDA kernels read the pages with 16-byte loads.
fn aligned_pages(pages: &Pages) -> CResult<()> {
    for s in [&pages.k, &pages.v] {
        if !(s.data.ptr as usize).is_multiple_of(16) {
            return Err(cerr(
                PARADEC_ERR_INVALID_ARGUMENT,
                format!(
                    "{}: CUDA pages must start at a 16-byte aligned address",
                    s.data.name
                ),
            ));
        }
    }
    Ok(())
}

/// A writable CPU view of one side of quantized host pages.
fn side_mut<'a>(s: &Side, head_scale: &'a [f32]) -> CResult<PagesMut<'a>> {
    Ok(PagesMut {
        format: s.format,
        codes: s.data.host_typed_mut::<u8>()?,
        scales: match &s.scales {
            Some(v) => v.host_typed_mut::<f16>()?,
            None => &mut [],
        },
        head_scale,
        native: &mut [],
    })
}

/// A CPU view of one side of host pages (`native`: the values of native pages as f32).
fn side_ref<'a>(
    s: &Side,
    head_scale: &'a [f32],
    native: Option<&'a [f32]>,
) -> CResult<PagesRef<'a>> {
    if let Some(n) = native {
        return Ok(PagesRef {
            format: KvFormat::Native,
            codes: &[],
            scales: &[],
            head_scale: &[],
            native: n,
        });
    }
    Ok(PagesRef {
        format: s.format,
        codes: s.data.host_typed::<u8>()?,
        scales: match &s.scales {
            Some(v) => v.host_typed::<f16>()?,
            None => &[],
        },
        head_scale,
        native: &[],
    })
}

/// Runs `f` with writable CPU views of the host pages (`khs` / `vhs`: the E4M3 head scales).
fn with_pages_mut<R>(
    p: &Pages,
    khs: &[f32],
    vhs: &[f32],
    f: impl FnOnce(&mut PagesMut<'_>, &mut PagesMut<'_>) -> R,
) -> CResult<R> {
    if p.is_native() {
        return Ok(p.k.data.with_floats_mut(|kn| {
            p.v.data.with_floats_mut(|vn| {
                let mut kp = PagesMut {
                    format: KvFormat::Native,
                    codes: &mut [],
                    scales: &mut [],
                    head_scale: &[],
                    native: kn,
                };
                let mut vp = PagesMut {
                    format: KvFormat::Native,
                    codes: &mut [],
                    scales: &mut [],
                    head_scale: &[],
                    native: vn,
                };
                f(&mut kp, &mut vp)
            })
        }));
    }
    let (mut kp, mut vp) = (side_mut(&p.k, khs)?, side_mut(&p.v, vhs)?);
    Ok(f(&mut kp, &mut vp))
}

/// The engine of the four write exports: `ws` is `Some` for the `_ws` forms, `table` for the
/// paged ones (its pointer may still be NULL: an error).
#[allow(clippy::too_many_arguments, unused_variables)]
fn write_impl(
    stream: *mut c_void,
    ws: Option<*mut super::paradec_workspace>,
    q: *const paradec_tensor,
    k: *const paradec_tensor,
    v: *const paradec_tensor,
    positions: *const paradec_tensor,
    rotary: *const paradec_rotary,
    past_len: *const paradec_tensor,
    table: Option<*const paradec_block_table>,
    pages: *const paradec_cache_pages,
    call: &str,
) -> CResult<()> {
    let q = view(q, "q")?;
    let k = view(k, "k")?;
    let v = view(v, "v")?;
    let past = view(past_len, "past_len")?;
    want_float(&q)?;
    want_ndim(&q, 4, "[batch, q_len, heads, head_dim]")?;
    let (batch, q_len, heads, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    want_ndim(&k, 4, "[batch, q_len, kv_heads, head_dim]")?;
    let kvh = k.shape[2];
    for t in [&k, &v] {
        same_float(t, q.dtype)?;
        want_shape(t, &[batch, q_len, kvh, d])?;
    }
    want_dtype(&past, DType::I64)?;
    want_shape(&past, &[batch])?;
    let rot: Option<RotArg> = rotary_arg(rotary, positions, batch * q_len, d)?;
    let pages = pages_arg(pages, q.dtype, d, Some(kvh))?;
    let table = table.map(|t| table_arg(t, batch)).transpose()?;
    let mut tables = vec![&past];
    if let Some((.., f, _, p)) = &rot {
        tables.push(f);
        tables.push(p);
    }
    host_tables(&tables)?;
    let mut all = vec![&q, &k, &v];
    all.extend(pages.views());
    let loc = one_device(&all)?;
    // k counts as written even without rotation (the CPU twin takes it mutably).
    let mut outs = vec![&q, &k];
    outs.extend(pages.written());
    disjoint(&outs)?;
    if let Loc::Cuda(_) = loc {
        if ws.is_none() {
            return Err(cerr(
                PARADEC_ERR_UNSUPPORTED,
                format!(
                    "{call} on CUDA tensors takes its tables and scratch from a workspace: call {call}_ws"
                ),
            ));
        }
        device_float(&q)?;
        aligned_pages(&pages)?;
        let mut inputs = vec![&v];
        inputs.extend(pages.k.head_scales.iter().chain(pages.v.head_scales.iter()));
        for i in inputs {
            for o in &outs {
                disjoint(&[o, i])?;
            }
        }
    }
    // The host checks every slot before anything runs.
    let [num_pages, page_size] = pages.rows;
    let (past, capacity) = match &table {
        None => {
            contiguous_batch(&pages, batch)?;
            (
                contiguous_past(&past, q_len, page_size, "new tokens")?,
                page_size,
            )
        }
        Some(t) => {
            let past = paged_past(&past)?;
            t.block_table(page_size)
                .check(batch, num_pages, &past, q_len, true)?;
            (past, t.block_table(page_size).capacity())
        }
    };
    let positions = match &rot {
        Some(r) => r.4.ints(),
        None => vec![0; batch * q_len],
    };
    let slots = CacheSlots {
        batch,
        q_len,
        capacity,
        past_len: &past,
    };
    let bt = table.as_ref().map(|t| t.block_table(page_size));
    match loc {
        Loc::Host => {
            let inv = rot.as_ref().map(|r| r.2.floats(&outs));
            let args = rot.as_ref().map(|r| RotaryArgs {
                style: r.0,
                rot_dim: r.1,
                inv_freq: inv.as_deref().unwrap_or(&[]),
                attn_factor: r.3,
            });
            let vv = v.floats(&outs);
            let khs = pages.k.head_scales.as_ref().map(|h| h.floats(&outs));
            let vhs = pages.v.head_scales.as_ref().map(|h| h.floats(&outs));
            with_pages_mut(
                &pages,
                khs.as_deref().unwrap_or(&[]),
                vhs.as_deref().unwrap_or(&[]),
                |kp, vp| {
                    k.with_floats_mut(|kk| {
                        q.with_floats_mut(|qq| match &bt {
                            None => cpu::kv_quant::rotary_and_cache_write_quant(
                                qq,
                                kk,
                                &vv,
                                heads,
                                kvh,
                                d,
                                &positions,
                                args.as_ref(),
                                &slots,
                                kp,
                                vp,
                            ),
                            Some(t) => cpu::kv_quant::paged_rotary_and_cache_write(
                                qq,
                                kk,
                                &vv,
                                heads,
                                kvh,
                                d,
                                &positions,
                                args.as_ref(),
                                &slots,
                                t,
                                kp,
                                vp,
                            ),
                        })
                    })
                },
            )?;
            Ok(())
        }
        Loc::Cuda(dev) => {
            let ws = cuda_workspace(ws, dev)?;
            let inv = rot.as_ref().map(|r| r.2.floats(&[]));
            let args = rot.as_ref().map(|r| RotaryArgs {
                style: r.0,
                rot_dim: r.1,
                inv_freq: inv.as_deref().unwrap_or(&[]),
                attn_factor: r.3,
            });
            on_cuda!([dev, stream, ws, args, slots, bt, heads, kvh, d, positions] cuda::kv_write(
                dev,
                stream,
                ws,
                (&q, &k, &v),
                [heads, kvh, d],
                &positions,
                args.as_ref(),
                &slots,
                bt.as_ref(),
                &pages,
            ))
        }
    }
}

/// The engine of the four attention exports: `ws` is `Some` for the `_ws` forms, `table` for
/// the paged ones.
#[allow(clippy::too_many_arguments, unused_variables)]
fn attend_impl(
    stream: *mut c_void,
    ws: Option<*mut super::paradec_workspace>,
    q: *const paradec_tensor,
    pages: *const paradec_cache_pages,
    table: Option<*const paradec_block_table>,
    past_len: *const paradec_tensor,
    mask: *const paradec_tensor,
    window: usize,
    scale: f32,
    out: *const paradec_tensor,
    call: &str,
) -> CResult<()> {
    let q = view(q, "q")?;
    let past = view(past_len, "past_len")?;
    let mask = opt_view(mask, "mask")?;
    let out = view(out, "out")?;
    want_float(&q)?;
    want_ndim(&q, 4, "[batch, q_len, heads, head_dim]")?;
    let (batch, q_len, heads, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    same_float(&out, q.dtype)?;
    want_shape(&out, &q.shape)?;
    let pages = pages_arg(pages, q.dtype, d, None)?;
    let kvh = pages.kv_heads;
    if kvh == 0 || !heads.is_multiple_of(kvh) {
        return Err(cerr(
            PARADEC_ERR_SHAPE,
            format!("pages.k: {kvh} kv heads do not divide q's {heads} heads"),
        ));
    }
    want_dtype(&past, DType::I64)?;
    want_shape(&past, &[batch])?;
    let table = table.map(|t| table_arg(t, batch)).transpose()?;
    let mut tables = vec![&past];
    if let Some(m) = &mask {
        want_dtype(m, DType::F32)?;
        want_ndim(m, 2, "[batch, stride]")?;
        tables.push(m);
    }
    host_tables(&tables)?;
    let mut all = vec![&q, &out];
    all.extend(pages.views());
    let loc = one_device(&all)?;
    for p in pages.views() {
        disjoint(&[&out, p])?;
    }
    if let Loc::Cuda(_) = loc {
        if ws.is_none() {
            return Err(cerr(
                PARADEC_ERR_UNSUPPORTED,
                format!(
                    "{call} on CUDA tensors takes its tables and scratch from a workspace: call {call}_ws"
                ),
            ));
        }
        device_float(&q)?;
        aligned_pages(&pages)?;
        disjoint(&[&out, &q])?;
    }
    let [num_pages, page_size] = pages.rows;
    let (past, capacity) = match &table {
        None => {
            contiguous_batch(&pages, batch)?;
            (
                contiguous_past(&past, q_len, page_size, "queries")?,
                page_size,
            )
        }
        Some(t) => {
            let past = paged_past(&past)?;
            let bt = t.block_table(page_size);
            let max_kv = past
                .iter()
                .map(|p| p.saturating_add(q_len))
                .max()
                .unwrap_or(0);
            if max_kv > bt.capacity() {
                return Err(cerr(
                    PARADEC_ERR_CAPACITY,
                    format!(
                        "attention over {max_kv} cache slots exceeds the block table's {} pages × {page_size} positions",
                        t.max_pages
                    ),
                ));
            }
            bt.check(batch, num_pages, &past, q_len, false)?;
            (past, bt.capacity())
        }
    };
    let need = past.iter().map(|p| p + q_len).max().unwrap_or(0);
    if let Some(m) = &mask {
        if m.shape[0] != batch || m.shape[1] < need {
            return Err(cerr(
                PARADEC_ERR_SHAPE,
                format!("mask: expected [{batch}, ≥{need}], got shape {:?}", m.shape),
            ));
        }
    }
    let mv = mask.as_ref().map(|m| m.floats(&[&out]));
    let shape = AttnShape {
        batch,
        q_len,
        heads,
        kv_heads: kvh,
        head_dim: d,
        capacity,
    };
    let masking = AttnMasking {
        past_len: &past,
        window,
        mask: mv.as_deref(),
        mask_stride: mask.as_ref().map_or(0, |m| m.shape[1]),
    };
    let bt = table.as_ref().map(|t| t.block_table(page_size));
    if let Loc::Cuda(dev) = loc {
        let ws = cuda_workspace(ws, dev)?;
        return on_cuda!([dev, stream, ws, shape, masking, bt, scale] cuda::kv_attention(
            dev,
            stream,
            ws,
            &q,
            &pages,
            bt.as_ref(),
            &shape,
            &masking,
            scale,
            &out,
        ));
    }
    let qv = q.floats(&[&out]);
    let khs = pages.k.head_scales.as_ref().map(|h| h.floats(&[]));
    let vhs = pages.v.head_scales.as_ref().map(|h| h.floats(&[]));
    let (kn, vn) = if pages.is_native() {
        (
            Some(pages.k.data.floats(&[])),
            Some(pages.v.data.floats(&[])),
        )
    } else {
        (None, None)
    };
    let kp = side_ref(&pages.k, khs.as_deref().unwrap_or(&[]), kn.as_deref())?;
    let vp = side_ref(&pages.v, vhs.as_deref().unwrap_or(&[]), vn.as_deref())?;
    out.with_floats_mut(|o| match &bt {
        None => cpu::kv_quant::attention_quant(&qv, &kp, &vp, &shape, &masking, scale, o),
        Some(t) => cpu::kv_quant::paged_attention(&qv, &kp, &vp, t, &shape, &masking, scale, o),
    });
    Ok(())
}

/// Rotary embedding of q and k fused with the write of the new K and V into a contiguous
/// cache layer in any mode (quantizing them), on host tensors; CUDA tensors take
/// `paradec_op_rotary_cache_write_quant_ws` (this call returns `PARADEC_ERR_UNSUPPORTED` for
/// them).
///
/// - `q`: `[batch, q_len, heads, head_dim]` float, rotated in place.
/// - `k`: `[batch, q_len, kv_heads, head_dim]` of q's dtype, rotated in place; `v`: same shape,
///   read.
/// - `positions`: `[batch · q_len]` int64 in host memory, each token's position; may be NULL
///   when `rotary` is NULL. `rotary`: NULL (no rotation: only the cache write) or the settings
///   (`rotary->inv_freq` in host memory).
/// - `past_len`: `[batch]` int64 in host memory: sequence b's token t goes to position
///   `past_len[b] + t`; every position is checked against the capacity first
///   (`PARADEC_ERR_CAPACITY`, nothing written).
/// - `pages`: the layer's K and V, `[batch, capacity, …]` (see `paradec_cache_pages`); the
///   new positions are written (codes and run scales), the rest is left as it is.
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_rotary_cache_write_quant(
    stream: *mut c_void,
    q: *const paradec_tensor,
    k: *const paradec_tensor,
    v: *const paradec_tensor,
    positions: *const paradec_tensor,
    rotary: *const paradec_rotary,
    past_len: *const paradec_tensor,
    pages: *const paradec_cache_pages,
) -> paradec_status {
    guard(|| {
        write_impl(
            stream,
            None,
            q,
            k,
            v,
            positions,
            rotary,
            past_len,
            None,
            pages,
            "paradec_op_rotary_cache_write_quant",
        )
    })
}

/// As `paradec_op_rotary_cache_write_quant`, for tensors on either device: for CUDA tensors
/// (f16 / bf16; head_dim a multiple of 8, of 32 for the Q modes) the host tables are queued
/// to the device in scratch from `workspace`, on `stream`, and the kernel rotates and
/// quantizes in one launch.
///
/// - `workspace`: a workspace on the tensors' CUDA device whose arena
///   (`paradec_workspace_reserve`) holds the tables (a few hundred bytes; too small:
///   `PARADEC_ERR_CAPACITY` naming the bytes, before any launch); may be NULL for host tensors.
///   Its scratch is reused by the next call: use one workspace per stream.
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; `workspace` stays the caller's (the call must not overlap other calls
/// on it).
#[no_mangle]
pub extern "C" fn paradec_op_rotary_cache_write_quant_ws(
    stream: *mut c_void,
    workspace: *mut super::paradec_workspace,
    q: *const paradec_tensor,
    k: *const paradec_tensor,
    v: *const paradec_tensor,
    positions: *const paradec_tensor,
    rotary: *const paradec_rotary,
    past_len: *const paradec_tensor,
    pages: *const paradec_cache_pages,
) -> paradec_status {
    guard(|| {
        write_impl(
            stream,
            Some(workspace),
            q,
            k,
            v,
            positions,
            rotary,
            past_len,
            None,
            pages,
            "paradec_op_rotary_cache_write_quant",
        )
    })
}

/// Rotary embedding of q and k fused with the write of the new K and V into a paged pool in
/// any mode, through a block table, on host tensors; CUDA tensors take
/// `paradec_op_paged_rotary_cache_write_ws` (this call returns `PARADEC_ERR_UNSUPPORTED` for
/// them).
///
/// - `q`, `k`, `v`, `positions`, `rotary`: as in `paradec_op_rotary_cache_write_quant`.
/// - `past_len`: `[batch]` int64 in host memory: sequence b's token t goes to its position
///   `past_len[b] + t`, in the page and row `block_table` gives.
/// - `block_table`: the sequences' pages (host memory, see `paradec_block_table`).
/// - `pages`: the pool, `[num_pages, page_size, …]` (see `paradec_cache_pages`).
///
/// Checked before anything is written, as `BlockTable::check` does: the table's shape; every
/// page count ≤ max_pages (`PARADEC_ERR_INVALID_ARGUMENT`); `past_len[b] + q_len` ≤
/// `page_count[b] · page_size` (`PARADEC_ERR_CAPACITY`); every page the call touches inside
/// the pool, and no pool row written by two sequences (`PARADEC_ERR_INVALID_ARGUMENT`); the
/// message names the sequence and page.
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_paged_rotary_cache_write(
    stream: *mut c_void,
    q: *const paradec_tensor,
    k: *const paradec_tensor,
    v: *const paradec_tensor,
    positions: *const paradec_tensor,
    rotary: *const paradec_rotary,
    past_len: *const paradec_tensor,
    block_table: *const paradec_block_table,
    pages: *const paradec_cache_pages,
) -> paradec_status {
    guard(|| {
        write_impl(
            stream,
            None,
            q,
            k,
            v,
            positions,
            rotary,
            past_len,
            Some(block_table),
            pages,
            "paradec_op_paged_rotary_cache_write",
        )
    })
}

/// As `paradec_op_paged_rotary_cache_write`, for tensors on either device: for CUDA tensors
/// the host tables and the block table are queued to the device in scratch from `workspace`
/// (as in `paradec_op_rotary_cache_write_quant_ws`; the block table adds 4 bytes per entry).
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; `workspace` stays the caller's (the call must not overlap other calls
/// on it).
#[no_mangle]
pub extern "C" fn paradec_op_paged_rotary_cache_write_ws(
    stream: *mut c_void,
    workspace: *mut super::paradec_workspace,
    q: *const paradec_tensor,
    k: *const paradec_tensor,
    v: *const paradec_tensor,
    positions: *const paradec_tensor,
    rotary: *const paradec_rotary,
    past_len: *const paradec_tensor,
    block_table: *const paradec_block_table,
    pages: *const paradec_cache_pages,
) -> paradec_status {
    guard(|| {
        write_impl(
            stream,
            Some(workspace),
            q,
            k,
            v,
            positions,
            rotary,
            past_len,
            Some(block_table),
            pages,
            "paradec_op_paged_rotary_cache_write",
        )
    })
}

/// Causal attention of q over a contiguous cache layer in any mode (the values its codes
/// decode to), on host tensors; CUDA tensors take `paradec_op_attention_quant_ws` (this call
/// returns `PARADEC_ERR_UNSUPPORTED` for them).
///
/// - `q`: `[batch, q_len, heads, head_dim]` float; `out`: same shape and dtype, written (it
///   may be q; it must not overlap the pages).
/// - `pages`: the layer's K and V, `[batch, capacity, kv_heads, …]`; heads % kv_heads == 0.
/// - `past_len`: `[batch]` int64 in host memory: sequence b's query t sits at position
///   `past_len[b] + t` and sees the positions up to it (and, with `window` > 0, the last
///   `window` of them); past the capacity: `PARADEC_ERR_CAPACITY`.
/// - `mask`: NULL or `[batch, stride]` float32 in host memory, added to the scores (0 attend,
///   -inf hide), stride ≥ max(past_len) + q_len.
/// - `scale`: the score scale, usually 1/√head_dim.
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_attention_quant(
    stream: *mut c_void,
    q: *const paradec_tensor,
    pages: *const paradec_cache_pages,
    past_len: *const paradec_tensor,
    mask: *const paradec_tensor,
    window: usize,
    scale: f32,
    out: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        attend_impl(
            stream,
            None,
            q,
            pages,
            None,
            past_len,
            mask,
            window,
            scale,
            out,
            "paradec_op_attention_quant",
        )
    })
}

/// As `paradec_op_attention_quant`, for tensors on either device. CUDA (f16 / bf16, head_dim a
/// multiple of 8 up to 256; `out` must not overlap q): a decode call (q_len ≤ 16) reads the
/// codes directly; a longer one dequantizes the positions it reads into workspace scratch
/// and runs the native kernel over them.
///
/// - `workspace`: a workspace on the tensors' CUDA device whose arena
///   (`paradec_workspace_reserve`) holds the tables and the split-KV partials (for a longer
///   call also the dequantized K and V, 2·batch·(max(past_len) + q_len)·kv_heads·head_dim
///   values of q's dtype); too small: `PARADEC_ERR_CAPACITY` naming the bytes, before any
///   launch; may be NULL for host tensors. Its scratch is reused by the next call: use one
///   workspace per stream.
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; `workspace` stays the caller's (the call must not overlap other calls
/// on it).
#[no_mangle]
pub extern "C" fn paradec_op_attention_quant_ws(
    stream: *mut c_void,
    workspace: *mut super::paradec_workspace,
    q: *const paradec_tensor,
    pages: *const paradec_cache_pages,
    past_len: *const paradec_tensor,
    mask: *const paradec_tensor,
    window: usize,
    scale: f32,
    out: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        attend_impl(
            stream,
            Some(workspace),
            q,
            pages,
            None,
            past_len,
            mask,
            window,
            scale,
            out,
            "paradec_op_attention_quant",
        )
    })
}

/// Causal attention of q over a paged pool in any mode, through a block table, on host
/// tensors; CUDA tensors take `paradec_op_paged_attention_ws` (this call returns
/// `PARADEC_ERR_UNSUPPORTED` for them).
///
/// - `q`, `out`, `mask`, `window`, `scale`: as in `paradec_op_attention_quant`.
/// - `pages`: the pool, `[num_pages, page_size, kv_heads, …]`.
/// - `block_table`: the sequences' pages (host memory, see `paradec_block_table`); pages may
///   be shared read-only between sequences (a common prefix).
/// - `past_len`: `[batch]` int64 in host memory: sequence b reads its positions `0 …
///   past_len[b] + q_len − 1`.
///
/// Checked before anything runs, as `BlockTable::check` does (see
/// `paradec_op_paged_rotary_cache_write`; a read may share rows).
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; nothing is kept.
#[no_mangle]
pub extern "C" fn paradec_op_paged_attention(
    stream: *mut c_void,
    q: *const paradec_tensor,
    pages: *const paradec_cache_pages,
    block_table: *const paradec_block_table,
    past_len: *const paradec_tensor,
    mask: *const paradec_tensor,
    window: usize,
    scale: f32,
    out: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        attend_impl(
            stream,
            None,
            q,
            pages,
            Some(block_table),
            past_len,
            mask,
            window,
            scale,
            out,
            "paradec_op_paged_attention",
        )
    })
}

/// As `paradec_op_paged_attention`, for tensors on either device (see
/// `paradec_op_attention_quant_ws`; the block table adds 4 bytes per entry to the tables).
///
/// Ownership: every tensor is the caller's and is used in place; the host tables are read
/// during the call only; `workspace` stays the caller's (the call must not overlap other calls
/// on it).
#[no_mangle]
pub extern "C" fn paradec_op_paged_attention_ws(
    stream: *mut c_void,
    workspace: *mut super::paradec_workspace,
    q: *const paradec_tensor,
    pages: *const paradec_cache_pages,
    block_table: *const paradec_block_table,
    past_len: *const paradec_tensor,
    mask: *const paradec_tensor,
    window: usize,
    scale: f32,
    out: *const paradec_tensor,
) -> paradec_status {
    guard(|| {
        attend_impl(
            stream,
            Some(workspace),
            q,
            pages,
            Some(block_table),
            past_len,
            mask,
            window,
            scale,
            out,
            "paradec_op_paged_attention",
        )
    })
}
