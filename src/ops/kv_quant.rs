//! Rotary + cache write and attention over a quantized KV cache (`kv_quant`), contiguous or
//! paged: the twins of `rotary_and_cache_write` and `attention` for a cache made in a quantized
//! `KvCacheMode`, and for a vLLM-style pool of pages addressed through a [`BlockTable`] (any
//! mode, `Native` included). The arguments and their checks are those of the native ops; the
//! cache is one layer's [`QuantLayer`] instead of two tensors of the dtype.

use half::f16;

use super::*;
use crate::cpu::kv_quant::{PagesMut, PagesRef};
use crate::kv_quant::{BlockTable, KvFormat, QuantLayer, QuantPages, RUN};
use crate::tensor::DType;

/// Elements of one pool row of `p`: bytes of codes, or values for `Native` pages.
fn row_elems(p: &QuantPages, kv_dim: usize) -> usize {
    if p.format == KvFormat::Native {
        kv_dim
    } else {
        p.format.row_bytes(kv_dim)
    }
}

/// Rows of a paged pool (its codes' rows).
fn pool_rows(p: &QuantPages, kv_dim: usize) -> usize {
    p.codes.numel() / row_elems(p, kv_dim).max(1)
}

/// Checks one page set of `rows` rows of kv_heads·head_dim values.
fn check_pages(
    name: &str,
    p: &QuantPages,
    rows: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<()> {
    let kv_dim = kv_heads * head_dim;
    if p.format.has_run_scales() && !head_dim.is_multiple_of(RUN) {
        return Err(Error::unsupported(format!(
            "{name}: head_dim {head_dim} is not a multiple of {RUN} (Hadamard runs would cross heads)"
        )));
    }
    let rb = row_elems(p, kv_dim);
    let dtype_ok = if p.format == KvFormat::Native {
        p.codes.dtype().is_float()
    } else {
        p.codes.dtype() == DType::U8
    };
    if !dtype_ok || rows.checked_mul(rb) != Some(p.codes.numel()) {
        return Err(Error::bad_input(format!(
            "{name} codes: expected {} [{rows}, {rb}], got {} {:?}",
            if p.format == KvFormat::Native {
                "float"
            } else {
                "u8"
            },
            p.codes.dtype(),
            p.codes.shape()
        )));
    }
    match (&p.scales, p.format.has_run_scales()) {
        (Some(s), true) if s.dtype() == DType::F16 && s.numel() == rows * (kv_dim / RUN) => {}
        (None, false) => {}
        (s, _) => {
            return Err(Error::bad_input(format!(
                "{name} run scales: expected {}, got {:?}",
                if p.format.has_run_scales() {
                    format!("f16 [{rows}, {}]", kv_dim / RUN)
                } else {
                    "none".into()
                },
                s.as_ref().map(|s| (s.dtype(), s.shape().to_vec()))
            )))
        }
    }
    match (&p.head_scales, p.format == KvFormat::E4M3) {
        (Some(s), true) if s.dtype() == DType::F32 && s.numel() == kv_heads => {}
        (None, false) => {}
        (s, _) => {
            return Err(Error::bad_input(format!(
                "{name} head scales: expected {}, got {:?}",
                if p.format == KvFormat::E4M3 {
                    format!("f32 [{kv_heads}]")
                } else {
                    "none".into()
                },
                s.as_ref().map(|s| (s.dtype(), s.shape().to_vec()))
            )))
        }
    }
    let mut ts = vec![("codes", &p.codes)];
    ts.extend(p.scales.iter().map(|s| ("run scales", s)));
    ts.extend(p.head_scales.iter().map(|s| ("head scales", s)));
    same_device(&ts)?;
    Ok(())
}

/// The rows a call's pages must hold, after checking the block table (paged) or the capacity.
fn check_layout(
    cache: &QuantLayer,
    table: Option<&BlockTable<'_>>,
    batch: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
    past_len: &[usize],
    q_len: usize,
    writes: bool,
) -> Result<usize> {
    let kv_dim = kv_heads * head_dim;
    let rows = match table {
        None => batch * capacity,
        Some(t) => {
            let rows = pool_rows(&cache.k, kv_dim);
            if t.page_size == 0 || !rows.is_multiple_of(t.page_size) {
                return Err(Error::bad_input(format!(
                    "paged cache: a pool of {rows} rows is not a whole number of pages of {}",
                    t.page_size
                )));
            }
            t.check(batch, rows / t.page_size, past_len, q_len, writes)?;
            rows
        }
    };
    check_pages("cache k", &cache.k, rows, kv_heads, head_dim)?;
    check_pages("cache v", &cache.v, rows, kv_heads, head_dim)?;
    Ok(rows)
}

fn host_u8<'a>(name: &str, t: &'a Tensor) -> Result<&'a [u8]> {
    match t.host()? {
        HostData::U8(v) => Ok(v),
        _ => Err(Error::bad_input(format!("{name}: expected u8"))),
    }
}

fn host_f16<'a>(name: &str, t: Option<&'a Tensor>) -> Result<&'a [f16]> {
    match t.map(|t| t.host()).transpose()? {
        None => Ok(&[]),
        Some(HostData::F16(v)) => Ok(v),
        Some(_) => Err(Error::bad_input(format!("{name}: expected f16"))),
    }
}

fn host_f32(t: Option<&Tensor>) -> Result<&[f32]> {
    t.map_or(Ok(&[][..]), |t| t.as_f32())
}

fn pages_ref(p: &QuantPages) -> Result<PagesRef<'_>> {
    if p.format == KvFormat::Native {
        return Ok(PagesRef {
            format: p.format,
            codes: &[],
            scales: &[],
            head_scale: &[],
            native: p.codes.as_f32().map_err(|_| {
                Error::bad_input("native cache pages on the CPU: expected f32 values")
            })?,
        });
    }
    Ok(PagesRef {
        format: p.format,
        codes: host_u8("cache codes", &p.codes)?,
        scales: host_f16("cache run scales", p.scales.as_ref())?,
        head_scale: host_f32(p.head_scales.as_ref())?,
        native: &[],
    })
}

fn pages_mut(p: &mut QuantPages) -> Result<PagesMut<'_>> {
    if p.format == KvFormat::Native {
        return Ok(PagesMut {
            format: p.format,
            codes: &mut [],
            scales: &mut [],
            head_scale: &[],
            native: p.codes.as_f32_mut().map_err(|_| {
                Error::bad_input("native cache pages on the CPU: expected f32 values")
            })?,
        });
    }
    let head_scale = host_f32(p.head_scales.as_ref())?;
    let codes = match p.codes.host_mut()? {
        HostData::U8(v) => v.as_mut_slice(),
        _ => return Err(Error::bad_input("cache codes: expected u8")),
    };
    let scales = match p.scales.as_mut().map(|s| s.host_mut()).transpose()? {
        None => &mut [][..],
        Some(HostData::F16(v)) => v.as_mut_slice(),
        Some(_) => return Err(Error::bad_input("cache run scales: expected f16")),
    };
    Ok(PagesMut {
        format: p.format,
        codes,
        scales,
        head_scale,
        native: &mut [],
    })
}

/// `rotary_and_cache_write` into a quantized cache layer: rotates q and k in place (with
/// `rotary`), then writes k and v quantized into `cache` at each sequence's next slots. A slot
/// past the capacity is an error before anything is written.
pub fn rotary_and_cache_write_quant(
    s: &Stream,
    ws: &mut Workspace,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    at: &CacheSlots<'_>,
    cache: &mut QuantLayer,
) -> Result<()> {
    write_impl(
        s, ws, q, k, v, heads, kv_heads, head_dim, positions, rotary, at, None, cache,
    )
}

/// `rotary_and_cache_write` into a paged pool (`pool`: num_pages × page_size rows, any mode):
/// sequence b's new tokens go to positions `past_len[b]` … `past_len[b] + q_len − 1`, in the
/// pages `table` gives. The table, page counts and lengths are checked first (an error naming
/// the sequence and page; nothing is written).
pub fn paged_rotary_and_cache_write(
    s: &Stream,
    ws: &mut Workspace,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    past_len: &[usize],
    q_len: usize,
    table: &BlockTable<'_>,
    pool: &mut QuantLayer,
) -> Result<()> {
    let at = CacheSlots {
        batch: past_len.len(),
        q_len,
        capacity: table.capacity(),
        past_len,
    };
    write_impl(
        s,
        ws,
        q,
        k,
        v,
        heads,
        kv_heads,
        head_dim,
        positions,
        rotary,
        &at,
        Some(table),
        pool,
    )
}

fn write_impl(
    s: &Stream,
    ws: &mut Workspace,
    q: &mut Tensor,
    k: &mut Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    at: &CacheSlots<'_>,
    table: Option<&BlockTable<'_>>,
    cache: &mut QuantLayer,
) -> Result<()> {
    #[cfg(not(feature = "cuda"))]
    let _ = &ws; // device scratch only
    super::rope::check_new_tokens(
        q,
        k,
        v,
        heads,
        kv_heads,
        head_dim,
        positions,
        rotary,
        at,
        table.is_none(),
    )?;
    check_layout(
        cache,
        table,
        at.batch,
        at.capacity,
        kv_heads,
        head_dim,
        at.past_len,
        at.q_len,
        true,
    )?;
    match same_device(&[
        ("q", q),
        ("k", k),
        ("v", v),
        ("cache k codes", &cache.k.codes),
        ("cache v codes", &cache.v.codes),
    ])? {
        Device::Cpu => {
            let vv = v.f32_values()?;
            let QuantLayer { k: ck, v: cv } = cache;
            let (mut kp, mut vp) = (pages_mut(ck)?, pages_mut(cv)?);
            with_f32_mut(k, |kk| {
                with_f32_mut(q, |qq| match table {
                    None => cpu::kv_quant::rotary_and_cache_write_quant(
                        qq, kk, &vv, heads, kv_heads, head_dim, positions, rotary, at, &mut kp,
                        &mut vp,
                    ),
                    Some(t) => cpu::kv_quant::paged_rotary_and_cache_write(
                        qq, kk, &vv, heads, kv_heads, head_dim, positions, rotary, at, t, &mut kp,
                        &mut vp,
                    ),
                })
            })??;
            Ok(())
        }
        Device::Cuda(_) => on_cuda!(s => {
            use crate::cuda::kernels;
            // The forward's staged tables (block table included), when these are they; else
            // this call's own upload.
            let staged = ws.staged().and_then(|st| {
                let (positions, past_len) = st.positions_and_past(positions, at.past_len)?;
                let inv_freq = match rotary {
                    Some(r) => st.freqs(r.inv_freq)?,
                    None => std::ptr::null(),
                };
                let block_table = match table {
                    Some(t) => st.block_table(t)?,
                    None => std::ptr::null(),
                };
                Some((kernels::RopeTables { positions, past_len, inv_freq }, block_table))
            });
            if let Some((tables, block_table)) = staged {
                // SAFETY: the workspace staged exactly these host slices into its step region,
                // queued on this forward's stream before any of its ops, and keeps the region
                // alive and unchanged until the next stage, which waits for this forward.
                return unsafe {
                    kernels::rotary_and_cache_write_quant_staged(
                        q, k, v, heads, kv_heads, head_dim, positions, rotary, at, table, tables,
                        block_table, cache, s,
                    )
                };
            }
            let rot_dim = rotary.map_or(0, |r| r.rot_dim);
            let mut meta = ws.scratch(
                &[kernels::table_meta_bytes(kernels::rope_meta_bytes(at.batch * at.q_len, at.batch, rot_dim), table)],
                crate::tensor::DType::U8,
            )?;
            kernels::rotary_and_cache_write_quant(
                q, k, v, heads, kv_heads, head_dim, positions, rotary, at, table, &mut meta, cache, s,
            )
        }),
    }
}

/// `attention` over a quantized cache layer (`shape.capacity` is the pages' capacity). On CUDA
/// a decode call (q_len ≤ 16) reads the codes directly; a longer one dequantizes the slots it
/// reads into workspace scratch and runs the native kernel over them.
pub fn attention_quant(
    st: &Stream,
    ws: &mut Workspace,
    q: &Tensor,
    cache: &QuantLayer,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    out: &mut Tensor,
) -> Result<()> {
    attend_impl(st, ws, q, cache, None, shape, masking, scale, out)
}

/// `attention` over a paged pool (any mode): sequence b's positions `0 … past_len[b] + q_len − 1`
/// read from the pages `table` gives (`shape.capacity` is ignored: the table's
/// `max_pages · page_size` bounds each sequence). Table, page counts and lengths are checked
/// first.
pub fn paged_attention(
    st: &Stream,
    ws: &mut Workspace,
    q: &Tensor,
    pool: &QuantLayer,
    table: &BlockTable<'_>,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    out: &mut Tensor,
) -> Result<()> {
    let shape = AttnShape {
        capacity: table.capacity(),
        ..*shape
    };
    attend_impl(st, ws, q, pool, Some(table), &shape, masking, scale, out)
}

fn attend_impl(
    st: &Stream,
    ws: &mut Workspace,
    q: &Tensor,
    cache: &QuantLayer,
    table: Option<&BlockTable<'_>>,
    shape: &AttnShape,
    masking: &AttnMasking<'_>,
    scale: f32,
    out: &mut Tensor,
) -> Result<()> {
    #[cfg(not(feature = "cuda"))]
    let _ = &ws; // device scratch only
    let s = shape;
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(Error::bad_input(format!(
            "attention: {} heads over {} kv heads",
            s.heads, s.kv_heads
        )));
    }
    numel("attention q", q, s.batch * s.q_len * s.heads * s.head_dim)?;
    numel(
        "attention output",
        out,
        s.batch * s.q_len * s.heads * s.head_dim,
    )?;
    if masking.past_len.len() != s.batch {
        return Err(Error::bad_input(format!(
            "past lengths: expected {}, got {}",
            s.batch,
            masking.past_len.len()
        )));
    }
    let max_kv = masking
        .past_len
        .iter()
        .map(|p| p.saturating_add(s.q_len))
        .max()
        .unwrap_or(0);
    if max_kv > s.capacity {
        return Err(Error::CapacityExceeded(format!(
            "attention over {max_kv} cache slots exceeds the capacity {}",
            s.capacity
        )));
    }
    check_layout(
        cache,
        table,
        s.batch,
        s.capacity,
        s.kv_heads,
        s.head_dim,
        masking.past_len,
        s.q_len,
        false,
    )?;
    if let Some(m) = masking.mask {
        if masking.mask_stride < max_kv || m.len() < s.batch * masking.mask_stride {
            return Err(Error::bad_input(format!(
                "attention mask: needs [{}, ≥{max_kv}] values, got {} with row stride {}",
                s.batch,
                m.len(),
                masking.mask_stride
            )));
        }
    }
    match same_device(&[
        ("attention q", q),
        ("cache k codes", &cache.k.codes),
        ("cache v codes", &cache.v.codes),
        ("attention output", out),
    ])? {
        Device::Cpu => {
            let qv = q.f32_values()?;
            let (kp, vp) = (pages_ref(&cache.k)?, pages_ref(&cache.v)?);
            with_f32_mut(out, |o| match table {
                None => cpu::kv_quant::attention_quant(&qv, &kp, &vp, s, masking, scale, o),
                Some(t) => cpu::kv_quant::paged_attention(&qv, &kp, &vp, t, s, masking, scale, o),
            })
        }
        Device::Cuda(_) => on_cuda!(st => {
            use crate::cuda::kernels;
            let max_past = masking.past_len.iter().copied().max().unwrap_or(0);
            if s.q_len <= kernels::DECODE_MAX_Q {
                // The forward's staged tables (planned for the staged bound), when these are
                // they; else this call's own upload.
                let staged = ws.staged().and_then(|stg| {
                    let past = stg.past(masking.past_len)?;
                    let mask = stg.mask(masking.mask)?;
                    let block_table = match table {
                        Some(t) => stg.block_table(t)?,
                        None => std::ptr::null(),
                    };
                    Some((past, mask, block_table, stg.tables.plan_max_past.max(max_past)))
                });
                if let Some((past, mask, block_table, plan)) = staged {
                    let mut partials = ws.scratch(
                        &[kernels::attention_quant_scratch_len(s, plan, st)?],
                        crate::tensor::DType::F32,
                    )?;
                    // SAFETY: the workspace staged exactly these past lengths, mask and block
                    // table into its step region, queued on this forward's stream before any
                    // of its ops, and keeps the region alive and unchanged until the next stage.
                    return unsafe {
                        kernels::attention_quant_staged(
                            q, cache, table, s, masking, scale, plan, past, mask, block_table,
                            &mut partials, out, st,
                        )
                    };
                }
                let mut meta = ws.scratch(
                    &[kernels::table_meta_bytes(kernels::attention_meta_bytes(s, masking), table)],
                    crate::tensor::DType::U8,
                )?;
                let mut partials = ws.scratch(
                    &[kernels::attention_quant_scratch_len(s, max_past, st)?],
                    crate::tensor::DType::F32,
                )?;
                kernels::attention_quant(
                    q, cache, table, s, masking, scale, &mut meta, &mut partials, out, st,
                )
            } else {
                // Prefill over a quantized or paged cache: the positions this call reads,
                // gathered (dequantized) into contiguous scratch, then the native kernel.
                let kv_dim = s.kv_heads * s.head_dim;
                let lens: Vec<usize> = masking.past_len.iter().map(|p| p + s.q_len).collect();
                let mut tmeta = ws.scratch(&[kernels::gather_meta_bytes(s.batch, table)], crate::tensor::DType::U8)?;
                let mut dk = ws.scratch(&[s.batch, max_kv, kv_dim], q.dtype())?;
                let mut dv = ws.scratch(&[s.batch, max_kv, kv_dim], q.dtype())?;
                kernels::kv_dequantize(&cache.k, table, s.batch, s.capacity, s.kv_heads, s.head_dim, max_kv, &lens, &mut tmeta, &mut dk, st)?;
                kernels::kv_dequantize(&cache.v, table, s.batch, s.capacity, s.kv_heads, s.head_dim, max_kv, &lens, &mut tmeta, &mut dv, st)?;
                let shape2 = AttnShape { capacity: max_kv, ..*s };
                let mut meta = ws.scratch(&[kernels::attention_meta_bytes(&shape2, masking)], crate::tensor::DType::U8)?;
                let mut partials = ws.scratch(
                    &[kernels::attention_scratch_len(&shape2, max_past, st)?],
                    crate::tensor::DType::F32,
                )?;
                kernels::attention(
                    q, &dk, &dv, &shape2, masking, scale, &mut meta, &mut partials, out, st,
                )
            }
        }),
    }
}
