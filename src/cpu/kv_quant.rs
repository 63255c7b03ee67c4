//! The CPU twins of the quantized KV-cache kernels: rotary fused with a quantizing cache write,
//! and attention over quantized pages (this reference dequantizes the slots a call reads, then
//! runs `cpu::attention`; the CUDA decode kernel reads the codes directly).

use half::f16;

use crate::kv_quant::{dequantize_row, quantize_row, KvFormat, RUN};
use crate::vocab::{AttnMasking, AttnShape, CacheSlots, RotaryArgs};

/// One of K or V of one layer, read-only: codes [batch, capacity, row_bytes], run scales
/// [batch, capacity, kv_dim / 32] (Q8/Q4; else empty), E4M3 head scales [kv_heads] (else empty).
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
}

/// Quantizes rows x ([batch, q_len, kv_dim]) into the pages at each sequence's next slots.
pub fn write_rows(
    x: &[f32],
    kv_heads: usize,
    head_dim: usize,
    slots: &CacheSlots<'_>,
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
            let slot = b * slots.capacity + slots.past_len[b] + t;
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
/// kv_dim] (the other slots of out are left as they are).
pub fn dequantize_slots(
    p: &PagesRef<'_>,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
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
            let slot = b * capacity + j;
            let dst = (b * out_capacity + j) * kv_dim;
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
    let kv_dim = s.kv_heads * s.head_dim;
    let lens: Vec<usize> = m.past_len.iter().map(|&p| p + s.q_len).collect();
    let max_kv = lens.iter().copied().max().unwrap_or(0);
    let mut ck = vec![0.0f32; s.batch * max_kv * kv_dim];
    let mut cv = vec![0.0f32; s.batch * max_kv * kv_dim];
    dequantize_slots(
        kp, s.kv_heads, s.head_dim, s.capacity, &lens, max_kv, &mut ck,
    );
    dequantize_slots(
        vp, s.kv_heads, s.head_dim, s.capacity, &lens, max_kv, &mut cv,
    );
    let shape = AttnShape {
        capacity: max_kv,
        ..*s
    };
    super::attention::attention(q, &ck, &cv, &shape, m, scale, out);
}
