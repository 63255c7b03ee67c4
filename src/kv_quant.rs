//! Quantized KV-cache modes: the formats (docs/formats.md, "Quantized KV cache modes"), the
//! element codecs both backends share bit for bit, and the page storage a [`crate::KvCache`]
//! holds for a quantized mode.
//!
//! A token's K (or V) vector of `kv_heads · head_dim` values is stored as one row of codes:
//! - [`KvFormat::E4M3`]: one FP8 E4M3 byte per value, `e4m3(x / scale)`, the scale given per
//!   layer and KV head (checkpoints' `k_scale` / `v_scale`; 1.0 when absent), read back as
//!   `decode(byte) · scale`. Rounding to nearest even, saturating at ±448.
//! - [`KvFormat::E5M2`]: the upper byte of the value's fp16 encoding (a truncation, as exllamav2
//!   stores it), read back by appending a zero byte.
//! - [`KvFormat::Q8`] / [`KvFormat::Q4`]: each run of 32 consecutive values is rotated by the
//!   unnormalized 32-point Walsh–Hadamard transform H (entries ±1, H·H = 32·I), and the rotated
//!   run y is quantized symmetrically with one fp16 scale s = fp16(max |y|):
//!   `q = clamp(round(y / s · c + c), 0, 2c − 1)` with c = 128 (8 bits) or 8 (4 bits).
//!   Dequantization is `x = H · ((q − c) · s / c) / 32`. 4-bit codes are packed two per byte,
//!   the even element in the low nibble. The scales are stored beside the codes,
//!   `kv_heads · head_dim / 32` per token.
//!
//! Runs never cross heads: the Hadamard modes need `head_dim` a multiple of 32 (a model with
//! head_dim 80 gets a clear error when such a cache is made).

use half::f16;

use crate::tensor::{DType, Device, Tensor};
use crate::{Error, Result};

/// Values per Hadamard run (and per block scale) of the Q8/Q4 formats.
pub const RUN: usize = 32;

/// How one of K or V is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFormat {
    /// The cache dtype itself (fp16/bf16 on CUDA, f32 on the CPU).
    Native,
    /// FP8 E4M3 with a per-layer, per-KV-head scale.
    E4M3,
    /// FP8 E5M2: the upper byte of the fp16 encoding.
    E5M2,
    /// 8-bit codes of Hadamard-rotated runs of 32, one fp16 scale per run.
    Q8,
    /// 4-bit codes of Hadamard-rotated runs of 32, one fp16 scale per run.
    Q4,
}

impl KvFormat {
    /// Bytes of one token's row of `kv_dim` values (0 for `Native`: the dtype decides).
    pub fn row_bytes(self, kv_dim: usize) -> usize {
        match self {
            KvFormat::Native => 0,
            KvFormat::E4M3 | KvFormat::E5M2 | KvFormat::Q8 => kv_dim,
            KvFormat::Q4 => kv_dim / 2,
        }
    }

    /// Whether the format carries one fp16 scale per run of 32 values.
    pub fn has_run_scales(self) -> bool {
        matches!(self, KvFormat::Q8 | KvFormat::Q4)
    }

    /// Code bits of the Hadamard formats (0 otherwise).
    pub fn bits(self) -> u32 {
        match self {
            KvFormat::Q8 => 8,
            KvFormat::Q4 => 4,
            _ => 0,
        }
    }

    /// The format's code for the C kernels (`paradec_kv_format`).
    pub fn code(self) -> i32 {
        match self {
            KvFormat::Native => 0,
            KvFormat::E4M3 => 1,
            KvFormat::E5M2 => 2,
            KvFormat::Q8 => 3,
            KvFormat::Q4 => 4,
        }
    }
}

/// How a [`crate::KvCache`] stores K and V.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum KvCacheMode {
    /// The cache dtype (fp16/bf16 on CUDA, f32 on the CPU): today's cache.
    #[default]
    Native,
    /// FP8 E4M3 for K and V. `k_scales` / `v_scales` hold one scale per layer and KV head,
    /// laid out [num_layers, kv_heads]; an empty vector means 1.0 everywhere.
    Fp8E4M3 {
        /// K scales, [num_layers · kv_heads] or empty.
        k_scales: Vec<f32>,
        /// V scales, [num_layers · kv_heads] or empty.
        v_scales: Vec<f32>,
    },
    /// FP8 E5M2 (fp16 truncated) for K and V; not for a bf16 cache.
    Fp8E5M2,
    /// Q8 for K and V.
    Q8,
    /// Q8 for K, Q4 for V.
    Q6,
    /// Q4 for K and V.
    Q4,
}

impl KvCacheMode {
    /// The formats of K and V.
    pub fn formats(&self) -> (KvFormat, KvFormat) {
        match self {
            KvCacheMode::Native => (KvFormat::Native, KvFormat::Native),
            KvCacheMode::Fp8E4M3 { .. } => (KvFormat::E4M3, KvFormat::E4M3),
            KvCacheMode::Fp8E5M2 => (KvFormat::E5M2, KvFormat::E5M2),
            KvCacheMode::Q8 => (KvFormat::Q8, KvFormat::Q8),
            KvCacheMode::Q6 => (KvFormat::Q8, KvFormat::Q4),
            KvCacheMode::Q4 => (KvFormat::Q4, KvFormat::Q4),
        }
    }

    /// Whether K and V are stored quantized (anything but `Native`).
    pub fn is_quantized(&self) -> bool {
        !matches!(self, KvCacheMode::Native)
    }

    /// A short name: native, fp8e4m3, fp8e5m2, q8, q6, q4.
    pub fn name(&self) -> &'static str {
        match self {
            KvCacheMode::Native => "native",
            KvCacheMode::Fp8E4M3 { .. } => "fp8e4m3",
            KvCacheMode::Fp8E5M2 => "fp8e5m2",
            KvCacheMode::Q8 => "q8",
            KvCacheMode::Q6 => "q6",
            KvCacheMode::Q4 => "q4",
        }
    }

    /// The mode of a [`name`](Self::name) (E4M3 with unit scales); `fp16`/`bf16` mean native.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "native" | "fp16" | "bf16" => KvCacheMode::Native,
            "fp8e4m3" | "e4m3" => KvCacheMode::Fp8E4M3 {
                k_scales: Vec::new(),
                v_scales: Vec::new(),
            },
            "fp8e5m2" | "e5m2" | "fp8" => KvCacheMode::Fp8E5M2,
            "q8" => KvCacheMode::Q8,
            "q6" => KvCacheMode::Q6,
            "q4" => KvCacheMode::Q4,
            other => {
                return Err(Error::bad_input(format!(
                    "unknown KV cache mode {other:?} (native, fp8e4m3, fp8e5m2, q8, q6, q4)"
                )))
            }
        })
    }

    /// The modes, with unit E4M3 scales (tests and benchmarks iterate over them).
    pub fn all() -> [KvCacheMode; 6] {
        [
            KvCacheMode::Native,
            KvCacheMode::Fp8E4M3 {
                k_scales: Vec::new(),
                v_scales: Vec::new(),
            },
            KvCacheMode::Fp8E5M2,
            KvCacheMode::Q8,
            KvCacheMode::Q6,
            KvCacheMode::Q4,
        ]
    }

    /// Checks that the mode can store heads of `head_dim` for `num_layers` layers of
    /// `kv_heads` KV heads in a cache of `dtype`.
    pub fn check(
        &self,
        num_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> Result<()> {
        let (fk, fv) = self.formats();
        if (fk.has_run_scales() || fv.has_run_scales()) && !head_dim.is_multiple_of(RUN) {
            return Err(Error::unsupported(format!(
                "KV cache mode {}: head_dim {head_dim} is not a multiple of {RUN} (a Hadamard run \
                 of {RUN} values would cross heads)",
                self.name()
            )));
        }
        if matches!(self, KvCacheMode::Fp8E5M2) && dtype == DType::BF16 {
            return Err(Error::unsupported(
                "KV cache mode fp8e5m2 truncates fp16 values: it needs an fp16 (or f32) cache, not bf16",
            ));
        }
        if let KvCacheMode::Fp8E4M3 { k_scales, v_scales } = self {
            for (n, s) in [("k_scales", k_scales), ("v_scales", v_scales)] {
                if !s.is_empty() && s.len() != num_layers * kv_heads {
                    return Err(Error::bad_input(format!(
                        "KV cache mode fp8e4m3: {n} holds {} values, expected {num_layers} layers × {kv_heads} KV heads (or none)",
                        s.len()
                    )));
                }
                if let Some((i, x)) = s
                    .iter()
                    .enumerate()
                    .find(|(_, x)| !(x.is_finite() && **x > 0.0))
                {
                    return Err(Error::bad_input(format!(
                        "KV cache mode fp8e4m3: {n}[{i}] = {x} is not a positive finite scale"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The E4M3 scales of `layer`'s K and V heads (1.0 when absent); empty for other modes.
    pub fn head_scales(&self, layer: usize, kv_heads: usize) -> (Vec<f32>, Vec<f32>) {
        match self {
            KvCacheMode::Fp8E4M3 { k_scales, v_scales } => {
                let pick = |s: &Vec<f32>| {
                    if s.is_empty() {
                        vec![1.0; kv_heads]
                    } else {
                        s[layer * kv_heads..(layer + 1) * kv_heads].to_vec()
                    }
                };
                (pick(k_scales), pick(v_scales))
            }
            _ => (Vec::new(), Vec::new()),
        }
    }
}

/// The unnormalized 32-point Walsh–Hadamard transform in place (Sylvester order). The
/// butterflies run in a fixed order (strides 1, 2, 4, 8, 16) that the CUDA kernels repeat, so
/// both backends round identically.
pub fn fwht32(x: &mut [f32; RUN]) {
    let mut h = 1;
    while h < RUN {
        let mut i = 0;
        while i < RUN {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
            i += 2 * h;
        }
        h *= 2;
    }
}

/// f32 → FP8 E4M3 (bias 7, no infinities), rounding to nearest even and saturating at ±448
/// (NaN stays NaN), as CUDA's `__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)`.
pub fn f32_to_e4m3(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    if x.is_nan() {
        return sign | 0x7f;
    }
    let a = x.abs();
    if a >= 448.0 {
        return sign | 0x7e;
    }
    if a < 1.0 / 64.0 {
        // Subnormals: steps of 2^-9 (a code of 8 is the smallest normal, 2^-6).
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    let e = ((a.to_bits() >> 23) & 0xff) as i32 - 127; // −6 ..= 8
    let mut r = (a * f32::powi(2.0, 3 - e)).round_ties_even(); // 8 ..= 16, exact scaling
    let mut e = e;
    if r >= 16.0 {
        r = 8.0;
        e += 1;
    }
    let code = (((e + 7) as u32) << 3) | (r as u32 - 8);
    sign | code.min(0x7e) as u8
}

/// FP8 E4M3 → f32.
pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = ((b >> 3) & 0xf) as i32;
    let m = (b & 7) as f32;
    if e == 15 && b & 7 == 7 {
        return f32::NAN;
    }
    let mag = if e == 0 {
        m / 512.0
    } else {
        (8.0 + m) * f32::powi(2.0, e - 10)
    };
    sign * mag
}

/// f32 → FP8 E5M2 as exllamav2 stores it: the upper byte of the fp16 encoding (f32 → fp16
/// rounds to nearest even, the low byte is then dropped).
pub fn f32_to_e5m2(x: f32) -> u8 {
    (f16::from_f32(x).to_bits() >> 8) as u8
}

/// FP8 E5M2 (an fp16's upper byte) → f32.
pub fn e5m2_to_f32(b: u8) -> f32 {
    f16::from_bits((b as u16) << 8).to_f32()
}

/// Quantizes one Hadamard run: rotates `x`, returns its fp16 scale, writes the `bits`-bit codes
/// (unpacked, one per element) to `codes`.
pub fn quantize_run(x: &[f32], bits: u32, codes: &mut [u8; RUN]) -> f16 {
    let mut y = [0.0f32; RUN];
    y.copy_from_slice(&x[..RUN]);
    fwht32(&mut y);
    let absmax = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut s = f16::from_f32(absmax);
    if s.is_infinite() {
        s = f16::MAX;
    }
    let sf = s.to_f32();
    let c = (1u32 << (bits - 1)) as f32;
    let qmax = ((1u32 << bits) - 1) as f32;
    for (q, v) in codes.iter_mut().zip(y) {
        *q = if sf > 0.0 {
            // Division, multiply and add rounded separately (the CUDA twin uses __f*_rn).
            ((v / sf) * c + c).round().clamp(0.0, qmax) as u8
        } else {
            c as u8
        };
    }
    s
}

/// Reverses [`quantize_run`]: `x = H · ((q − c) · s / c) / 32`.
pub fn dequantize_run(codes: &[u8; RUN], scale: f16, bits: u32, out: &mut [f32]) {
    let c = (1u32 << (bits - 1)) as f32;
    let step = scale.to_f32() / c;
    let mut y = [0.0f32; RUN];
    for (y, &q) in y.iter_mut().zip(codes) {
        *y = (q as f32 - c) * step;
    }
    fwht32(&mut y);
    for (o, v) in out[..RUN].iter_mut().zip(y) {
        *o = v / RUN as f32;
    }
}

/// Encodes one token's row x (`kv_heads · head_dim` values) in `format`: `codes` gets
/// `format.row_bytes(x.len())` bytes, `scales` (run formats) `x.len() / 32` fp16 values;
/// `head_scale` holds the E4M3 scale of each KV head.
pub fn quantize_row(
    format: KvFormat,
    x: &[f32],
    head_dim: usize,
    head_scale: &[f32],
    codes: &mut [u8],
    scales: &mut [f16],
) {
    match format {
        KvFormat::Native => {}
        KvFormat::E4M3 => {
            for (i, (c, &v)) in codes.iter_mut().zip(x).enumerate() {
                *c = f32_to_e4m3(v / head_scale[i / head_dim]);
            }
        }
        KvFormat::E5M2 => {
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = f32_to_e5m2(v);
            }
        }
        KvFormat::Q8 | KvFormat::Q4 => {
            let bits = format.bits();
            let mut q = [0u8; RUN];
            for (r, run) in x.chunks_exact(RUN).enumerate() {
                scales[r] = quantize_run(run, bits, &mut q);
                if bits == 8 {
                    codes[r * RUN..(r + 1) * RUN].copy_from_slice(&q);
                } else {
                    for (i, pair) in q.chunks_exact(2).enumerate() {
                        codes[r * RUN / 2 + i] = pair[0] | (pair[1] << 4);
                    }
                }
            }
        }
    }
}

/// Decodes one token's row written by [`quantize_row`] into `out` (`kv_heads · head_dim`
/// values).
pub fn dequantize_row(
    format: KvFormat,
    codes: &[u8],
    scales: &[f16],
    head_dim: usize,
    head_scale: &[f32],
    out: &mut [f32],
) {
    match format {
        KvFormat::Native => {}
        KvFormat::E4M3 => {
            for (i, (o, &c)) in out.iter_mut().zip(codes).enumerate() {
                *o = e4m3_to_f32(c) * head_scale[i / head_dim];
            }
        }
        KvFormat::E5M2 => {
            for (o, &c) in out.iter_mut().zip(codes) {
                *o = e5m2_to_f32(c);
            }
        }
        KvFormat::Q8 | KvFormat::Q4 => {
            let bits = format.bits();
            let mut q = [0u8; RUN];
            for (r, run) in out.chunks_exact_mut(RUN).enumerate() {
                if bits == 8 {
                    q.copy_from_slice(&codes[r * RUN..(r + 1) * RUN]);
                } else {
                    for i in 0..RUN / 2 {
                        let b = codes[r * RUN / 2 + i];
                        q[2 * i] = b & 0xf;
                        q[2 * i + 1] = b >> 4;
                    }
                }
                dequantize_run(&q, scales[r], bits, run);
            }
        }
    }
}

/// One of K or V of one layer in a quantized format: codes [batch, capacity, row_bytes] (U8),
/// run scales [batch, capacity, kv_dim / 32] (F16, run formats only), E4M3 head scales
/// `[kv_heads]` (F32, E4M3 only).
#[derive(Debug)]
pub struct QuantPages {
    /// The format of the codes.
    pub format: KvFormat,
    /// Codes, U8 [batch, capacity, format.row_bytes(kv_dim)].
    pub codes: Tensor,
    /// Run scales, F16 [batch, capacity, kv_dim / 32] (Q8, Q4).
    pub scales: Option<Tensor>,
    /// Per-KV-head scales, F32 `[kv_heads]` (E4M3).
    pub head_scales: Option<Tensor>,
}

impl QuantPages {
    /// Zeroed pages for `format` (not `Native`) with the given E4M3 head scales.
    pub fn new(
        format: KvFormat,
        batch: usize,
        capacity: usize,
        kv_heads: usize,
        head_dim: usize,
        head_scales: &[f32],
        device: Device,
    ) -> Result<Self> {
        let kv_dim = kv_heads * head_dim;
        let codes = Tensor::zeros(
            &[batch, capacity, format.row_bytes(kv_dim)],
            DType::U8,
            device,
        )?;
        let scales = if format.has_run_scales() {
            Some(Tensor::zeros(
                &[batch, capacity, kv_dim / RUN],
                DType::F16,
                device,
            )?)
        } else {
            None
        };
        let head_scales = if format == KvFormat::E4M3 {
            Some(Tensor::from_f32(head_scales.to_vec(), &[kv_heads])?.to_device(device)?)
        } else {
            None
        };
        Ok(QuantPages {
            format,
            codes,
            scales,
            head_scales,
        })
    }

    /// Bytes per token row of all of this page's tensors (codes and run scales).
    pub fn bytes_per_token(format: KvFormat, kv_dim: usize) -> usize {
        format.row_bytes(kv_dim)
            + if format.has_run_scales() {
                2 * kv_dim / RUN
            } else {
                0
            }
    }
}

/// K and V of one layer of a quantized cache, or of a paged pool (whose pages may also be of
/// the `Native` format: then `codes` holds the values in the cache dtype, [rows, kv_dim]).
#[derive(Debug)]
pub struct QuantLayer {
    /// Keys.
    pub k: QuantPages,
    /// Values.
    pub v: QuantPages,
}

impl QuantLayer {
    /// Zeroed K and V pages of `rows_a × rows_b` rows (batch × capacity for a contiguous
    /// cache, num_pages × page_size for a paged pool) in `mode`, with `layer`'s E4M3 scales.
    /// `Native` pages hold `dtype` values.
    pub fn new(
        mode: &KvCacheMode,
        layer: usize,
        num_layers: usize,
        rows_a: usize,
        rows_b: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        mode.check(num_layers, kv_heads, head_dim, dtype)?;
        let (fk, fv) = mode.formats();
        let (ks, vs) = mode.head_scales(layer, kv_heads);
        let make = |f: KvFormat, hs: &[f32]| -> Result<QuantPages> {
            if f == KvFormat::Native {
                Ok(QuantPages {
                    format: f,
                    codes: Tensor::zeros(&[rows_a, rows_b, kv_heads * head_dim], dtype, device)?,
                    scales: None,
                    head_scales: None,
                })
            } else {
                QuantPages::new(f, rows_a, rows_b, kv_heads, head_dim, hs, device)
            }
        };
        Ok(QuantLayer {
            k: make(fk, &ks)?,
            v: make(fv, &vs)?,
        })
    }
}

/// A vLLM-style block table: sequence b's positions live in fixed-size pages of a pool
/// (`QuantLayer` of num_pages × page_size rows), position j in page `table[b·max_pages +
/// j / page_size]`, row j % page_size. The caller (a serving engine) owns and fills it; every
/// call passes it with each sequence's page count, and paradec checks both on the host before
/// anything runs.
#[derive(Debug, Clone, Copy)]
pub struct BlockTable<'a> {
    /// Positions per page.
    pub page_size: usize,
    /// Entries per sequence in `table` (the most pages a sequence can own).
    pub max_pages: usize,
    /// [batch, max_pages] page indices; entries past a sequence's page count are not read.
    pub table: &'a [i32],
    /// Pages each sequence owns: its first `page_count[b]` entries of `table`.
    pub page_count: &'a [usize],
}

impl BlockTable<'_> {
    /// The pool row of sequence b's position j (after [`check`](Self::check)).
    pub fn row(&self, b: usize, j: usize) -> usize {
        self.table[b * self.max_pages + j / self.page_size] as usize * self.page_size
            + j % self.page_size
    }

    /// Positions one sequence can hold (`max_pages · page_size`).
    pub fn capacity(&self) -> usize {
        self.max_pages.saturating_mul(self.page_size)
    }

    /// Checks what a call's table says on its own, before any pool is known: its size for
    /// `batch` sequences, each page count against `max_pages`, and each sequence's positions
    /// `0 .. past_len[b] + q_len` within its pages (`CapacityExceeded`). The error names the
    /// sequence.
    pub fn check_lengths(&self, batch: usize, past_len: &[usize], q_len: usize) -> Result<()> {
        if self.page_size == 0 || self.max_pages == 0 {
            return Err(Error::bad_input(format!(
                "block table: page size {} and pages per sequence {} must be positive",
                self.page_size, self.max_pages
            )));
        }
        if self.table.len() != batch.saturating_mul(self.max_pages) {
            return Err(Error::bad_input(format!(
                "block table: {} entries, expected {batch} sequences × {} pages",
                self.table.len(),
                self.max_pages
            )));
        }
        if self.page_count.len() != batch || past_len.len() != batch {
            return Err(Error::bad_input(format!(
                "block table: {} page counts and {} past lengths for {batch} sequences",
                self.page_count.len(),
                past_len.len()
            )));
        }
        for (b, &pc) in self.page_count.iter().enumerate() {
            if pc > self.max_pages {
                return Err(Error::bad_input(format!(
                    "block table: sequence {b} owns {pc} pages, more than the table's {} per sequence",
                    self.max_pages
                )));
            }
            let end = past_len[b].checked_add(q_len).ok_or_else(|| {
                Error::bad_input(format!("block table: sequence {b}: length overflows"))
            })?;
            if end > pc.saturating_mul(self.page_size) {
                return Err(Error::CapacityExceeded(format!(
                    "block table: sequence {b} reaches position {end} (past {} + {q_len} new) but \
                     owns {pc} pages of {} positions",
                    past_len[b], self.page_size
                )));
            }
        }
        Ok(())
    }

    /// Checks a call over `batch` sequences that reads (and, with `writes`, writes the last
    /// `q_len` of) positions `0 .. past_len[b] + q_len` of each sequence, in a pool of
    /// `num_pages` pages: [`check_lengths`](Self::check_lengths), every page the call touches
    /// inside the pool, and — for a write — no pool row written by two sequences. The error
    /// names what is wrong.
    pub fn check(
        &self,
        batch: usize,
        num_pages: usize,
        past_len: &[usize],
        q_len: usize,
        writes: bool,
    ) -> Result<()> {
        self.check_lengths(batch, past_len, q_len)?;
        let mut written = std::collections::HashMap::new();
        for (b, &past) in past_len.iter().enumerate() {
            let end = past + q_len;
            for i in 0..end.div_ceil(self.page_size) {
                let page = self.table[b * self.max_pages + i];
                if page < 0 || page as usize >= num_pages {
                    return Err(Error::bad_input(format!(
                        "block table: sequence {b}'s page {i} is {page}, outside the pool of {num_pages} pages"
                    )));
                }
            }
            if writes {
                for j in past..end {
                    if let Some(other) = written.insert(self.row(b, j), b) {
                        return Err(Error::bad_input(format!(
                            "block table: sequences {other} and {b} would both write pool row {} \
                             (page {}, position {j} of sequence {b})",
                            self.row(b, j),
                            self.row(b, j) / self.page_size
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An owned [`BlockTable`]: what a forward's [`crate::AttnParams`] carries for a paged
/// [`crate::KvCache`] (`AttnParams::with_block_table`). The same table serves every layer:
/// each layer has its own pool, indexed by the same page ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagedTable {
    /// Positions per page (the cache's page size).
    pub page_size: usize,
    /// Entries per sequence in `table` (the most pages a sequence can own).
    pub max_pages: usize,
    /// [batch, max_pages] page indices into each layer's pool; entries past a sequence's page
    /// count are not read.
    pub table: Vec<i32>,
    /// Pages each sequence owns: its first `page_count[b]` entries of `table`.
    pub page_count: Vec<usize>,
}

impl PagedTable {
    /// A table of `page_count.len()` sequences, `max_pages` entries each, pages of `page_size`
    /// positions (checked when a forward validates its parameters).
    pub fn new(
        page_size: usize,
        max_pages: usize,
        table: Vec<i32>,
        page_count: Vec<usize>,
    ) -> Self {
        PagedTable {
            page_size,
            max_pages,
            table,
            page_count,
        }
    }

    /// The borrowed view the ops take.
    pub fn as_block_table(&self) -> BlockTable<'_> {
        BlockTable {
            page_size: self.page_size,
            max_pages: self.max_pages,
            table: &self.table,
            page_count: &self.page_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hadamard_is_orthogonal_up_to_32() {
        // H·H = 32·I: applying it twice and dividing by 32 gives the input back, and H/√32
        // keeps norms.
        let mut rng = 0x1234_5678u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        };
        for _ in 0..50 {
            let x: [f32; RUN] = std::array::from_fn(|_| next());
            let mut y = x;
            fwht32(&mut y);
            let nx: f32 = x.iter().map(|v| v * v).sum();
            let ny: f32 = y.iter().map(|v| v * v).sum::<f32>() / 32.0;
            assert!((nx - ny).abs() <= 1e-4 * nx, "{nx} vs {ny}");
            fwht32(&mut y);
            for (a, b) in x.iter().zip(y) {
                assert!((a - b / 32.0).abs() < 1e-5);
            }
        }
        // Row i of H is the Walsh function (−1)^popcount(i & j): a unit vector maps to it.
        for i in 0..RUN {
            let mut e = [0.0f32; RUN];
            e[i] = 1.0;
            fwht32(&mut e);
            for (j, v) in e.iter().enumerate() {
                let want = if (i & j).count_ones() % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                assert_eq!(*v, want, "H[{j}][{i}]");
            }
        }
    }

    #[test]
    fn e4m3_codes_by_hand_and_round_trip() {
        assert_eq!(f32_to_e4m3(0.0), 0x00);
        assert_eq!(f32_to_e4m3(1.0), 0x38);
        assert_eq!(f32_to_e4m3(-2.0), 0xc0);
        assert_eq!(f32_to_e4m3(448.0), 0x7e);
        assert_eq!(f32_to_e4m3(1e6), 0x7e);
        assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7e);
        assert_eq!(f32_to_e4m3(-1e6), 0xfe);
        assert_eq!(f32_to_e4m3(1.0 / 512.0), 0x01);
        assert_eq!(f32_to_e4m3(1.0 / 1024.0), 0x00); // a tie to even
        assert_eq!(f32_to_e4m3(3.0 / 1024.0), 0x02); // 1.5 steps: tie to even
        assert_eq!(f32_to_e4m3(1.0625), 0x38); // halfway 1 and 1.125: even
        assert_eq!(f32_to_e4m3(1.1875), 0x3a); // halfway 1.125 and 1.25: even
        assert!(e4m3_to_f32(0x7f).is_nan());
        // Every finite code decodes and encodes back to itself.
        for b in 0..=255u8 {
            if b & 0x7f == 0x7f {
                continue;
            }
            let x = e4m3_to_f32(b);
            let back = f32_to_e4m3(x);
            assert!(
                back == b || (x == 0.0 && back & 0x7f == 0),
                "{b:#x} → {x} → {back:#x}"
            );
        }
    }

    #[test]
    fn e5m2_is_fp16_truncated() {
        assert_eq!(f32_to_e5m2(1.0), 0x3c);
        assert_eq!(e5m2_to_f32(0x3c), 1.0);
        // 1.2 in fp16 is 0x3ccd: truncation keeps 0x3c (1.0), not rounds to 1.25.
        assert_eq!(f32_to_e5m2(1.2), 0x3c);
        assert_eq!(f32_to_e5m2(-1.75), 0xbf);
    }

    #[test]
    fn run_round_trip_error_bounds() {
        // Each rotated value is off by at most one step s/c (half a step, or a whole one where
        // the top code clamps), and |H·e|/32 ≤ max|e|: every value comes back within one step.
        let mut rng = 7u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((rng >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        for bits in [8u32, 4] {
            let c = (1u32 << (bits - 1)) as f32;
            let mut worst = 0.0f32;
            for _ in 0..200 {
                let x: [f32; RUN] = std::array::from_fn(|_| next() * 3.0);
                let mut q = [0u8; RUN];
                let s = quantize_run(&x, bits, &mut q);
                let mut back = [0.0f32; RUN];
                dequantize_run(&q, s, bits, &mut back);
                // Every rotated value is within one step (the top code clamps by one step).
                let step = s.to_f32() / c;
                for (a, b) in x.iter().zip(back) {
                    assert!(
                        (a - b).abs() <= step + 1e-6,
                        "{bits}-bit: {a} vs {b}, step {step}"
                    );
                    worst = worst.max((a - b).abs() / step);
                }
            }
            assert!(worst > 0.0);
        }
    }
}
