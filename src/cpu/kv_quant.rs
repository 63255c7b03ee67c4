//! The CPU twins of the quantized and paged KV-cache kernels: rotary fused with a (quantizing)
//! cache write, and attention over the pages (this reference dequantizes the positions a call
//! reads, then runs `cpu::attention`; the CUDA decode kernel reads the codes directly). A
//! contiguous cache puts sequence b's position j in row b·capacity + j of the pages; a paged
//! one where its [`BlockTable`] says.

use half::f16;

use crate::kv_quant::{dequantize_row, quantize_row, BlockTable, KvFormat, RUN};
use crate::vocab::{AttnMasking, AttnShape, CacheSlots, RotaryArgs};

/// One of K or V of one layer, read-only: codes [batch, capacity, row_bytes], run scales
/// [batch, capacity, kv_dim / 32] (Q8/Q4; else empty), E4M3 head scales `[kv_heads]` (else empty).
#[derive(Debug, Clone, Copy)]
pub struct PagesRef<'a> {
    /// The format of the codes.
    pub format: KvFormat,
    /// Codes.
    pub codes: &'a [u8],
    /// Run scales.
    pub scales: &'a [f16],
    /// Per-KV-head scales (E4M3).
    pub head_scale: &'a [f32],
    /// The values of `Native` pages, [rows, kv_dim] (else empty).
    pub native: &'a [f32],
}

/// One of K or V of one layer, writable (see [`PagesRef`]).
#[derive(Debug)]
pub struct PagesMut<'a> {
    /// The format of the codes.
    pub format: KvFormat,
    /// Codes.
    pub codes: &'a mut [u8],
    /// Run scales.
    pub scales: &'a mut [f16],
    /// Per-KV-head scales (E4M3).
    pub head_scale: &'a [f32],
    /// The values of `Native` pages, [rows, kv_dim] (else empty).
    pub native: &'a mut [f32],
}

/// Quantizes rows x ([batch, q_len, kv_dim]) into the pages at each sequence's next slots
/// (contiguous: row `b·capacity + past_len[b] + t`).
pub fn write_rows(
    x: &[f32],
    kv_heads: usize,
    head_dim: usize,
    slots: &CacheSlots<'_>,
    p: &mut PagesMut<'_>,
) {
    let cap = slots.capacity;
    write_rows_at(x, kv_heads, head_dim, slots, &|b, j| b * cap + j, p);
}

/// As [`write_rows`], sequence b's position j going to pool row `row_of(b, j)`.
pub fn write_rows_at(
    x: &[f32],
    kv_heads: usize,
    head_dim: usize,
    slots: &CacheSlots<'_>,
    row_of: &dyn Fn(usize, usize) -> usize,
    p: &mut PagesMut<'_>,
) {
    let kv_dim = kv_heads * head_dim;
    let rb = p.format.row_bytes(kv_dim);
    let ns = if p.format.has_run_scales() {
        kv_dim / RUN
    } else {
        0
    };
    for b in 0..slots.batch {
        for t in 0..slots.q_len {
            let src = (b * slots.q_len + t) * kv_dim;
            let slot = row_of(b, slots.past_len[b] + t);
            if p.format == KvFormat::Native {
                p.native[slot * kv_dim..(slot + 1) * kv_dim].copy_from_slice(&x[src..src + kv_dim]);
                continue;
            }
            quantize_row(
                p.format,
                &x[src..src + kv_dim],
                head_dim,
                p.head_scale,
                &mut p.codes[slot * rb..(slot + 1) * rb],
                &mut p.scales[slot * ns..(slot + 1) * ns],
            );
        }
    }
}

/// Dequantizes the first `lens[b]` slots of each sequence into out [batch, out_capacity,
/// kv_dim] (the other slots of out are left as they are); contiguous pages of `capacity`.
pub fn dequantize_slots(
    p: &PagesRef<'_>,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    lens: &[usize],
    out_capacity: usize,
    out: &mut [f32],
) {
    gather_rows(
        p,
        kv_heads,
        head_dim,
        &|b, j| b * capacity + j,
        lens,
        out_capacity,
        out,
    );
}

/// As [`dequantize_slots`], sequence b's position j read from pool row `row_of(b, j)`.
pub fn gather_rows(
    p: &PagesRef<'_>,
    kv_heads: usize,
    head_dim: usize,
    row_of: &dyn Fn(usize, usize) -> usize,
    lens: &[usize],
    out_capacity: usize,
    out: &mut [f32],
) {
    let kv_dim = kv_heads * head_dim;
    let rb = p.format.row_bytes(kv_dim);
    let ns = if p.format.has_run_scales() {
        kv_dim / RUN
    } else {
        0
    };
    for (b, &len) in lens.iter().enumerate() {
        for j in 0..len {
            let slot = row_of(b, j);
            let dst = (b * out_capacity + j) * kv_dim;
            if p.format == KvFormat::Native {
                out[dst..dst + kv_dim]
                    .copy_from_slice(&p.native[slot * kv_dim..(slot + 1) * kv_dim]);
                continue;
            }
            dequantize_row(
                p.format,
                &p.codes[slot * rb..(slot + 1) * rb],
                &p.scales[slot * ns..(slot + 1) * ns],
                head_dim,
                p.head_scale,
                &mut out[dst..dst + kv_dim],
            );
        }
    }
}

/// The fused step of the CUDA kernel: rotates q and k (at `positions`, one per token of
/// [batch, q_len]) in place and writes k and v, quantized, into the pages at each sequence's
/// next slots.
pub fn rotary_and_cache_write_quant(
    q: &mut [f32],
    k: &mut [f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    kp: &mut PagesMut<'_>,
    vp: &mut PagesMut<'_>,
) {
    let tokens = slots.batch * slots.q_len;
    if let Some(r) = rotary {
        super::rope::apply_rotary(q, tokens, heads, head_dim, positions, r);
        super::rope::apply_rotary(k, tokens, kv_heads, head_dim, positions, r);
    }
    write_rows(k, kv_heads, head_dim, slots, kp);
    write_rows(v, kv_heads, head_dim, slots, vp);
}

/// Attention of q over quantized pages: as `cpu::attention::attention`, over the values the
/// pages dequantize to. `s.capacity` is the pages' capacity.
pub fn attention_quant(
    q: &[f32],
    kp: &PagesRef<'_>,
    vp: &PagesRef<'_>,
    s: &AttnShape,
    m: &AttnMasking<'_>,
    scale: f32,
    out: &mut [f32],
) {
    let cap = s.capacity;
    attention_at(q, kp, vp, &|b, j| b * cap + j, s, m, scale, out);
}

/// [`attention_quant`] over a paged pool: sequence b's position j in the row `table` names.
pub fn paged_attention(
    q: &[f32],
    kp: &PagesRef<'_>,
    vp: &PagesRef<'_>,
    table: &BlockTable<'_>,
    s: &AttnShape,
    m: &AttnMasking<'_>,
    scale: f32,
    out: &mut [f32],
) {
    attention_at(q, kp, vp, &|b, j| table.row(b, j), s, m, scale, out);
}

/// [`rotary_and_cache_write_quant`] into a paged pool.
pub fn paged_rotary_and_cache_write(
    q: &mut [f32],
    k: &mut [f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: &[i64],
    rotary: Option<&RotaryArgs<'_>>,
    slots: &CacheSlots<'_>,
    table: &BlockTable<'_>,
    kp: &mut PagesMut<'_>,
    vp: &mut PagesMut<'_>,
) {
    let tokens = slots.batch * slots.q_len;
    if let Some(r) = rotary {
        super::rope::apply_rotary(q, tokens, heads, head_dim, positions, r);
        super::rope::apply_rotary(k, tokens, kv_heads, head_dim, positions, r);
    }
    let row_of = |b, j| table.row(b, j);
    write_rows_at(k, kv_heads, head_dim, slots, &row_of, kp);
    write_rows_at(v, kv_heads, head_dim, slots, &row_of, vp);
}

fn attention_at(
    q: &[f32],
    kp: &PagesRef<'_>,
    vp: &PagesRef<'_>,
    row_of: &dyn Fn(usize, usize) -> usize,
    s: &AttnShape,
    m: &AttnMasking<'_>,
    scale: f32,
    out: &mut [f32],
) {
    let kv_dim = s.kv_heads * s.head_dim;
    let lens: Vec<usize> = m.past_len.iter().map(|&p| p + s.q_len).collect();
    let max_kv = lens.iter().copied().max().unwrap_or(0);
    let mut ck = vec![0.0f32; s.batch * max_kv * kv_dim];
    let mut cv = vec![0.0f32; s.batch * max_kv * kv_dim];
    gather_rows(kp, s.kv_heads, s.head_dim, row_of, &lens, max_kv, &mut ck);
    gather_rows(vp, s.kv_heads, s.head_dim, row_of, &lens, max_kv, &mut cv);
    let shape = AttnShape {
        capacity: max_kv,
        ..*s
    };
    super::attention::attention(q, &ck, &cv, &shape, m, scale, out);
}
