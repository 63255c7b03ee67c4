//! Round-to-nearest packers: dense `[N, K]` weights → GPTQ or EXL2 tensors (for tests, tools and
//! making quantized copies of small dense models). They write exactly the layouts `gptq` and
//! `exl2` read (see those modules and docs/formats.md).
//!
//! Both quantizers keep every element within half a quantization step of the original:
//! scales are rounded *up* to f16 and chosen so that the clamped code range covers the group.
//! - GPTQ: per (group, column), asymmetric `scale = (max − min)/maxq` over `[min(x,0), max(x,0)]`,
//!   `zero = round(−min/scale)`; symmetric `scale = 2·max|x|/maxq`, `zero = 2^(b−1)`. Classic
//!   checkpoints cannot store a zero of 0 (they store zero − 1), so there a zero of 0 becomes 1 with
//!   `scale = max/(maxq − 1)`.
//! - EXL2: per group `q_scale_max` = the largest column scale `max|x| / (2^(b−1) − ½)` (rounded up
//!   to f16); each column takes the smallest code `qs` with `(qs+1)²·max/256` at least its own.

use std::collections::HashMap;
use std::path::Path;

use half::f16;
use serde_json::Value;

use super::exl2::{exl2_scale, EXL2_BITS};
use super::gptq::{GptqConfig, GPTQ_BITS};
use super::{mul, packed_words, read_json_opt, stream_or};
use crate::tensor::{DType, HostData, Tensor};
use crate::weights::save_safetensors;
use crate::{Error, Result, Weights};

/// Tensors with their full names, ready for `save_tensors` / `save_safetensors`.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Writes named tensors to one safetensors file.
pub fn save_tensors(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    save_safetensors(path, &refs, None)
}

/// The smallest f16 ≥ x (x ≥ 0); `BadInput` when it does not fit.
fn f16_up(x: f32, what: &str) -> Result<f16> {
    let h = f16::from_f32(x);
    let h = if h.to_f32() < x {
        f16::from_bits(h.to_bits() + 1)
    } else {
        h
    };
    if !h.to_f32().is_finite() || !x.is_finite() {
        return Err(Error::bad_input(format!(
            "{what}: scale {x} does not fit in f16"
        )));
    }
    Ok(h)
}

fn check_weight(weight: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Result<()> {
    if n == 0 || k == 0 {
        return Err(Error::bad_input(format!(
            "pack: out_features ({n}) and in_features ({k}) must be positive"
        )));
    }
    if weight.len() != mul(n, k, "pack: out_features × in_features")? {
        return Err(Error::bad_input(format!(
            "pack: weight has {} values, expected N·K = {n}·{k}",
            weight.len()
        )));
    }
    if let Some(i) = weight.iter().position(|x| !x.is_finite()) {
        return Err(Error::bad_input(format!(
            "pack: weight element {i} is not finite"
        )));
    }
    if let Some(b) = bias {
        if b.len() != n {
            return Err(Error::bad_input(format!(
                "pack: bias has {} values, expected N = {n}",
                b.len()
            )));
        }
    }
    Ok(())
}

fn i32_tensor(v: Vec<i32>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_host(HostData::I32(v), shape)
}

fn checked_perm(perm: &[usize], k: usize, what: &str) -> Result<()> {
    if perm.len() != k {
        return Err(Error::bad_input(format!(
            "{what}: permutation has {} entries, expected K = {k}",
            perm.len()
        )));
    }
    let mut seen = vec![false; k];
    for &p in perm {
        if p >= k || std::mem::replace(&mut seen[p], true) {
            return Err(Error::bad_input(format!(
                "{what}: not a permutation of 0..{k} (entry {p})"
            )));
        }
    }
    Ok(())
}

/// Input features ordered by importance: descending Σₙ w[n, k]² (a stand-in for the Hessian
/// diagonal GPTQ's act-order and EXL2 sort by); ties keep feature order.
pub fn importance_perm(weight: &[f32], out_features: usize, in_features: usize) -> Vec<usize> {
    let k = in_features;
    let mut norm = vec![0f64; k];
    for row in weight.chunks_exact(k).take(out_features) {
        for (s, &w) in norm.iter_mut().zip(row) {
            *s += (w as f64) * (w as f64);
        }
    }
    let mut perm: Vec<usize> = (0..k).collect();
    perm.sort_by(|&a, &b| norm[b].total_cmp(&norm[a]));
    perm
}

/// The act-order `g_idx` GPTQ writes when it quantizes rows in the order `perm`:
/// `g_idx[perm[j]] = j / group_size` (all 0 for group_size −1).
pub fn act_order_g_idx(perm: &[usize], group_size: i64) -> Result<Vec<i32>> {
    let k = perm.len();
    checked_perm(perm, k, "act_order_g_idx")?;
    let gs = match usize::try_from(group_size) {
        Ok(g) if g > 0 => g,
        _ if group_size == -1 => k.max(1),
        _ => {
            return Err(Error::bad_input(format!(
                "act_order_g_idx: group size {group_size}"
            )))
        }
    };
    let mut g_idx = vec![0i32; k];
    for (j, &p) in perm.iter().enumerate() {
        g_idx[p] = i32::try_from(j / gs)
            .map_err(|_| Error::bad_input("act_order_g_idx: too many groups"))?;
    }
    Ok(g_idx)
}

/// Quantizes a dense `[N, K]` weight to GPTQ tensors `{prefix}.qweight`, `.qzeros`, `.scales`,
/// `.g_idx` (when `g_idx` is given — act-order or explicit) and `.bias` (f16, when given).
/// Without `g_idx`, row k belongs to group `k / group_size`.
pub fn pack_gptq(
    weight: &[f32],
    out_features: usize,
    in_features: usize,
    cfg: &GptqConfig,
    g_idx: Option<&[i32]>,
    bias: Option<&[f32]>,
    prefix: &str,
) -> Result<NamedTensors> {
    let (n, k) = (out_features, in_features);
    check_weight(weight, n, k, bias)?;
    if !GPTQ_BITS.contains(&cfg.bits) {
        return Err(Error::bad_input(format!(
            "pack_gptq: bits must be 2, 3, 4 or 8, got {}",
            cfg.bits
        )));
    }
    if !(cfg.group_size == -1 || cfg.group_size > 0) {
        return Err(Error::bad_input(format!(
            "pack_gptq: group_size {}",
            cfg.group_size
        )));
    }
    let bits = cfg.bits;
    let b = bits as usize;
    let maxq = (1u32 << bits) - 1;
    let groups = cfg.groups(k);
    let group_of: Vec<usize> = match g_idx {
        Some(g) => {
            if g.len() != k {
                return Err(Error::bad_input(format!(
                    "pack_gptq: g_idx has {} entries, expected K = {k}",
                    g.len()
                )));
            }
            g.iter()
                .map(|&v| {
                    usize::try_from(v)
                        .ok()
                        .filter(|&v| v < groups)
                        .ok_or_else(|| {
                            Error::bad_input(format!(
                                "pack_gptq: g_idx value {v} outside 0..{groups}"
                            ))
                        })
                })
                .collect::<Result<_>>()?
        }
        None => {
            let gs = k.div_ceil(groups);
            let gs = usize::try_from(cfg.group_size)
                .ok()
                .filter(|&g| g > 0)
                .unwrap_or(gs);
            (0..k).map(|r| r / gs).collect()
        }
    };

    // Per (group, column) range over the group's rows.
    let mut lo = vec![0f32; groups * n];
    let mut hi = vec![0f32; groups * n];
    for c in 0..n {
        let row = &weight[c * k..(c + 1) * k];
        for (r, &x) in row.iter().enumerate() {
            let i = group_of[r] * n + c;
            lo[i] = lo[i].min(x);
            hi[i] = hi[i].max(x);
        }
    }
    let mut scales = vec![f16::ZERO; groups * n];
    let mut zeros = vec![0u32; groups * n];
    for i in 0..groups * n {
        let (mut xmin, mut xmax) = (lo[i], hi[i]);
        if xmin == 0.0 && xmax == 0.0 {
            (xmin, xmax) = (-1.0, 1.0);
        }
        let what = "pack_gptq";
        let (s, z) = if cfg.sym {
            let m = xmax.max(-xmin);
            (f16_up(2.0 * m / maxq as f32, what)?, 1u32 << (bits - 1))
        } else {
            let s = f16_up((xmax - xmin) / maxq as f32, what)?;
            let z = (-xmin / s.to_f32()).round().clamp(0.0, maxq as f32) as u32;
            if z == 0 && !cfg.checkpoint_format_v2 {
                // Classic checkpoints store zero − 1: a zero of 0 is not representable.
                (f16_up(xmax / (maxq - 1) as f32, what)?, 1)
            } else {
                (s, z)
            }
        };
        scales[i] = s;
        zeros[i] = z;
    }

    let qrows = packed_words(k, bits, "pack_gptq")?;
    let zcols = packed_words(n, bits, "pack_gptq")?;
    let mut qweight = vec![0i32; qrows * n];
    for c in 0..n {
        for r in 0..k {
            let i = group_of[r] * n + c;
            let s = scales[i].to_f32();
            let q =
                ((weight[c * k + r] / s).round() + zeros[i] as f32).clamp(0.0, maxq as f32) as u32;
            stream_or(&mut qweight, |w| w * n + c, r * b, bits, q);
        }
    }
    let mut qzeros = vec![0i32; groups * zcols];
    for g in 0..groups {
        for c in 0..n {
            let z = zeros[g * n + c];
            let stored = if cfg.checkpoint_format_v2 {
                z
            } else {
                z.wrapping_sub(1)
            };
            stream_or(&mut qzeros, |w| g * zcols + w, c * b, bits, stored);
        }
    }
    let mut out = vec![
        (
            format!("{prefix}.qweight"),
            i32_tensor(qweight, &[qrows, n])?,
        ),
        (
            format!("{prefix}.qzeros"),
            i32_tensor(qzeros, &[groups, zcols])?,
        ),
        (
            format!("{prefix}.scales"),
            Tensor::from_host(HostData::F16(scales), &[groups, n])?,
        ),
    ];
    if let Some(g) = g_idx {
        out.push((format!("{prefix}.g_idx"), i32_tensor(g.to_vec(), &[k])?));
    }
    if let Some(b) = bias {
        out.push((
            format!("{prefix}.bias"),
            Tensor::from_f32_as(b, &[n], DType::F16)?,
        ));
    }
    Ok(out)
}

/// How EXL2 stored rows are split into groups: `(bits, rows)` per group in stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exl2Layout {
    groups: Vec<(u32, usize)>,
}

/// A run of stored rows at one width, split into groups of `group_size` (the last one of the run
/// may be shorter — only valid for the very last group unless `rows·bits` stays a multiple of 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exl2Part {
    /// Bits per weight of the part.
    pub bits: u32,
    /// Rows per group.
    pub group_size: usize,
    /// Input rows the part covers.
    pub rows: usize,
}

impl Exl2Layout {
    /// Checks the groups: widths in {8, 6, 5, 4, 3, 2}, non-increasing; every group non-empty;
    /// every group but the last a whole number of packed rows (`rows·bits % 32 == 0`).
    pub fn new(groups: Vec<(u32, usize)>) -> Result<Self> {
        if groups.is_empty() {
            return Err(Error::bad_input("Exl2Layout: no groups"));
        }
        for (i, &(bits, rows)) in groups.iter().enumerate() {
            if !EXL2_BITS.contains(&bits) {
                return Err(Error::bad_input(format!(
                    "Exl2Layout: group {i} width {bits} (allowed 2, 3, 4, 5, 6, 8)"
                )));
            }
            if rows == 0 {
                return Err(Error::bad_input(format!("Exl2Layout: group {i} is empty")));
            }
            if i > 0 && bits > groups[i - 1].0 {
                return Err(Error::bad_input(format!(
                    "Exl2Layout: group {i} ({bits} bits) after a narrower group"
                )));
            }
            if i + 1 < groups.len() && !(rows * bits as usize).is_multiple_of(32) {
                return Err(Error::bad_input(format!(
                    "Exl2Layout: group {i} ({rows} rows at {bits} bits) is not a whole number of packed rows; only the last group may be"
                )));
            }
        }
        Ok(Exl2Layout { groups })
    }

    /// Splits runs of rows at given widths into groups; the runs must add up to K.
    pub fn from_parts(in_features: usize, parts: &[Exl2Part]) -> Result<Self> {
        let mut groups = Vec::new();
        let mut total = 0usize;
        for p in parts {
            if p.group_size == 0 {
                return Err(Error::bad_input("Exl2Layout: group_size 0"));
            }
            let mut left = p.rows;
            while left > 0 {
                let r = left.min(p.group_size);
                groups.push((p.bits, r));
                left -= r;
            }
            total += p.rows;
        }
        if total != in_features {
            return Err(Error::bad_input(format!(
                "Exl2Layout: parts hold {total} rows, in_features is {in_features}"
            )));
        }
        Self::new(groups)
    }

    /// `(bits, rows)` per group.
    pub fn groups(&self) -> &[(u32, usize)] {
        &self.groups
    }
    /// K.
    pub fn in_features(&self) -> usize {
        self.groups.iter().map(|g| g.1).sum()
    }
    /// Average bits per weight.
    pub fn bits_per_weight(&self) -> f64 {
        let total: f64 = self
            .groups
            .iter()
            .map(|&(b, r)| (b as usize * r) as f64)
            .sum();
        total / self.in_features() as f64
    }
}

/// Quantizes a dense `[N, K]` weight to EXL2 tensors `{prefix}.q_weight`, `.q_invperm`,
/// `.q_scale`, `.q_scale_max`, `.q_groups` and `.bias` (f16, `[N]`, when given). `perm[j]` is
/// the input feature stored at row j (identity when `None`). Columns are padded to a multiple
/// of 32 with codes that dequantize to zero.
pub fn pack_exl2(
    weight: &[f32],
    out_features: usize,
    in_features: usize,
    layout: &Exl2Layout,
    perm: Option<&[usize]>,
    bias: Option<&[f32]>,
    prefix: &str,
) -> Result<NamedTensors> {
    let (n, k) = (out_features, in_features);
    check_weight(weight, n, k, bias)?;
    if layout.in_features() != k {
        return Err(Error::bad_input(format!(
            "pack_exl2: layout holds {} rows, in_features is {k}",
            layout.in_features()
        )));
    }
    let identity: Vec<usize>;
    let perm = match perm {
        Some(p) => {
            checked_perm(p, k, "pack_exl2")?;
            p
        }
        None => {
            identity = (0..k).collect();
            &identity
        }
    };
    let n_pad = n.div_ceil(32) * 32;
    let ng = layout.groups.len();
    // Packed rows per group: exact for all but the last, ceil for the last.
    let spans: Vec<usize> = layout
        .groups
        .iter()
        .map(|&(b, r)| (r * b as usize).div_ceil(32))
        .collect();
    let packed_rows: usize = spans.iter().sum();
    let mut q_weight = vec![0i32; packed_rows * n_pad];
    let mut q_scale = vec![0i32; ng * n_pad / 8];
    let mut q_scale_max = vec![f16::ZERO; ng];
    let mut q_groups = Vec::with_capacity(2 * ng);
    let (mut first_row, mut packed) = (0usize, 0usize);
    for (g, &(bits, rows)) in layout.groups.iter().enumerate() {
        let off = i16::try_from(packed)
            .or_else(|_| u16::try_from(packed).map(|v| v as i16))
            .map_err(|_| {
                Error::bad_input(format!(
                    "pack_exl2: packed row {packed} does not fit q_groups' 16 bits"
                ))
            })?;
        q_groups.push(bits as i16);
        q_groups.push(off);
        let half = 1u32 << (bits - 1);
        let maxq = (1u32 << bits) - 1;
        let reach = half as f32 - 0.5;
        let stored = first_row..first_row + rows;
        let need: Vec<f32> = (0..n)
            .map(|c| {
                stored
                    .clone()
                    .map(|j| weight[c * k + perm[j]].abs())
                    .fold(0.0, f32::max)
                    / reach
            })
            .collect();
        let smax = f16_up(need.iter().copied().fold(0.0, f32::max), "pack_exl2")?;
        q_scale_max[g] = smax;
        let smax = smax.to_f32();
        for (c, &nd) in need.iter().enumerate() {
            let code = (0..16u32)
                .find(|&qs| exl2_scale(qs, smax) >= nd)
                .unwrap_or(15);
            q_scale[g * n_pad / 8 + c / 8] |= (code << (4 * (c % 8))) as i32;
            let s = exl2_scale(code, smax);
            for (r, j) in stored.clone().enumerate() {
                let x = weight[c * k + perm[j]];
                let q = if s > 0.0 {
                    ((x / s).round() + half as f32).clamp(0.0, maxq as f32) as u32
                } else {
                    half
                };
                stream_or(
                    &mut q_weight,
                    |w| (packed + w) * n_pad + c,
                    r * bits as usize,
                    bits,
                    q,
                );
            }
        }
        for c in n..n_pad {
            for r in 0..rows {
                stream_or(
                    &mut q_weight,
                    |w| (packed + w) * n_pad + c,
                    r * bits as usize,
                    bits,
                    half,
                );
            }
        }
        first_row += rows;
        packed += spans[g];
    }
    let mut invperm = vec![0i32; k];
    for (j, &p) in perm.iter().enumerate() {
        invperm[p] =
            i32::try_from(j).map_err(|_| Error::bad_input("pack_exl2: K too large for int32"))?;
    }
    let mut out = vec![
        (
            format!("{prefix}.q_weight"),
            i32_tensor(q_weight, &[packed_rows, n_pad])?,
        ),
        (format!("{prefix}.q_invperm"), i32_tensor(invperm, &[k])?),
        (
            format!("{prefix}.q_scale"),
            i32_tensor(q_scale, &[ng, n_pad / 8])?,
        ),
        (
            format!("{prefix}.q_scale_max"),
            Tensor::from_host(HostData::F16(q_scale_max), &[ng])?,
        ),
        (
            format!("{prefix}.q_groups"),
            Tensor::from_host(HostData::I16(q_groups), &[2 * ng])?,
        ),
    ];
    if let Some(b) = bias {
        out.push((
            format!("{prefix}.bias"),
            Tensor::from_f32_as(b, &[n], DType::F16)?,
        ));
    }
    Ok(out)
}

/// An EXL2 recipe that fits any K: runs of `(bits, group_size, fraction of K)` in descending
/// width. Every run but the last takes `floor(fraction·K / group_size)` whole groups; the last
/// takes the remaining rows (its last group may be shorter). Empty runs are skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Exl2Recipe {
    /// (bits, group size, share of the rows) per part, widest first.
    pub parts: Vec<(u32, usize, f64)>,
    /// Store rows by importance (`importance_perm`) instead of in feature order.
    pub permute: bool,
}

impl Exl2Recipe {
    /// The layout for K input features.
    pub fn layout(&self, in_features: usize) -> Result<Exl2Layout> {
        let k = in_features;
        if k == 0 {
            return Err(Error::bad_input("Exl2Recipe: in_features must be positive"));
        }
        let Some((last, rest)) = self.parts.split_last() else {
            return Err(Error::bad_input("Exl2Recipe: no parts"));
        };
        let mut parts = Vec::new();
        let mut used = 0usize;
        for &(bits, gs, frac) in rest {
            if gs == 0 || !(0.0..=1.0).contains(&frac) {
                return Err(Error::bad_input(format!(
                    "Exl2Recipe: part ({bits}, {gs}, {frac})"
                )));
            }
            let groups = ((frac * k as f64) as usize / gs).min((k - used) / gs);
            let rows = groups * gs;
            // Keep at least one row for the last part.
            let rows = if used + rows >= k {
                (k - used - 1) / gs * gs
            } else {
                rows
            };
            if rows > 0 {
                parts.push(Exl2Part {
                    bits,
                    group_size: gs,
                    rows,
                });
                used += rows;
            }
        }
        parts.push(Exl2Part {
            bits: last.0,
            group_size: last.1,
            rows: k - used,
        });
        Exl2Layout::from_parts(k, &parts)
    }
}

/// What `quantize_model_dir` does to each selected weight.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantSpec {
    /// GPTQ with these settings; `desc_act` stores rows quantized in `importance_perm` order.
    Gptq(GptqConfig),
    /// An EXL2 mix.
    Exl2(Exl2Recipe),
}

/// Makes a quantized copy of a dense model directory (config.json + safetensors; f32, f16 or bf16
/// weights in `[N, K]` layout). Every 2-D float tensor named `<prefix>.weight` for which
/// `which(name)` holds is replaced by the packed tensors under `<prefix>`; all other tensors
/// (biases included) are copied unchanged into `dst_dir/model.safetensors`. `config.json` gains a
/// `quantization_config`; other plain files of the directory are copied. Returns the prefixes
/// quantized.
pub fn quantize_model_dir(
    src_dir: impl AsRef<Path>,
    dst_dir: impl AsRef<Path>,
    spec: &QuantSpec,
    which: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let (src, dst) = (src_dir.as_ref(), dst_dir.as_ref());
    let mut config = read_json_opt(&src.join("config.json"))?
        .ok_or_else(|| Error::not_found(format!("{}/config.json", src.display())))?;
    let Some(obj) = config.as_object_mut() else {
        return Err(Error::bad_format(format!(
            "{}/config.json: not a JSON object",
            src.display()
        )));
    };
    // EXL2 stores its layout per tensor, so a further EXL2 pass over other tensors is fine
    // (that is how one model gets different mixes); GPTQ has one config per model.
    if let Some(existing) = obj.get("quantization_config").filter(|v| !v.is_null()) {
        let both_exl2 = matches!(spec, QuantSpec::Exl2(_))
            && existing.get("quant_method").and_then(Value::as_str) == Some("exl2");
        if !both_exl2 {
            return Err(Error::bad_input(format!(
                "{}: the model is already quantized",
                src.display()
            )));
        }
    }
    let weights = Weights::from_dir(src)?;
    let mut out: NamedTensors = Vec::new();
    let mut done = Vec::new();
    let mut bit_sum = 0f64;
    let mut numel = 0f64;
    for name in weights.names() {
        let t = weights.get(name)?;
        let prefix = name.strip_suffix(".weight");
        let selected =
            prefix.is_some() && t.shape().len() == 2 && t.dtype().is_float() && which(name);
        let Some(prefix) = prefix.filter(|_| selected) else {
            out.push((name.to_string(), t));
            continue;
        };
        let (n, k) = (t.shape()[0], t.shape()[1]);
        let w = t.f32_values()?;
        let packed = match spec {
            QuantSpec::Gptq(cfg) => {
                let g_idx = if cfg.desc_act {
                    Some(act_order_g_idx(&importance_perm(&w, n, k), cfg.group_size)?)
                } else {
                    None
                };
                bit_sum += (cfg.bits as usize * k * n) as f64;
                pack_gptq(&w, n, k, cfg, g_idx.as_deref(), None, prefix)
            }
            QuantSpec::Exl2(recipe) => {
                let layout = recipe.layout(k)?;
                let perm = recipe.permute.then(|| importance_perm(&w, n, k));
                bit_sum += layout.bits_per_weight() * (k * n) as f64;
                pack_exl2(&w, n, k, &layout, perm.as_deref(), None, prefix)
            }
        }
        .map_err(|e| Error::bad_input(format!("quantizing {name}: {e}")))?;
        numel += (k * n) as f64;
        out.extend(packed);
        done.push(prefix.to_string());
    }
    let qc: Value = match spec {
        QuantSpec::Gptq(c) => serde_json::json!({
            "quant_method": "gptq",
            "bits": c.bits,
            "group_size": c.group_size,
            "desc_act": c.desc_act,
            "sym": c.sym,
            "checkpoint_format": if c.checkpoint_format_v2 { "gptq_v2" } else { "gptq" },
        }),
        QuantSpec::Exl2(_) => serde_json::json!({
            "quant_method": "exl2",
            "version": concat!("paradec-", env!("CARGO_PKG_VERSION")),
            "bits": if numel > 0.0 { bit_sum / numel } else { 0.0 },
        }),
    };
    obj.insert("quantization_config".into(), qc);

    std::fs::create_dir_all(dst).map_err(|e| Error::Io(format!("{}: {e}", dst.display())))?;
    let skip = [
        "config.json",
        "quantize_config.json",
        "model.safetensors.index.json",
    ];
    let rd = std::fs::read_dir(src).map_err(|e| Error::Io(format!("{}: {e}", src.display())))?;
    for entry in rd.filter_map(|e| e.ok()) {
        let p = entry.path();
        let fname = entry.file_name().to_string_lossy().into_owned();
        if !p.is_file() || skip.contains(&fname.as_str()) || fname.ends_with(".safetensors") {
            continue;
        }
        std::fs::copy(&p, dst.join(&fname))
            .map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
    }
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| Error::bad_input(e.to_string()))?;
    std::fs::write(dst.join("config.json"), text)
        .map_err(|e| Error::Io(format!("{}: {e}", dst.display())))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let refs: Vec<(String, &Tensor)> = out.iter().map(|(n, t)| (n.clone(), t)).collect();
    save_safetensors(dst.join("model.safetensors"), &refs, Some(meta))?;
    Ok(done)
}

/// Packs nothing itself: loads tensors a packer made (`pack_gptq` / `pack_exl2` output) back as
/// a `QuantWeight`, through a temporary safetensors file (for tests and benches).
pub fn load_packed(
    tensors: &[(String, Tensor)],
    prefix: &str,
    in_features: usize,
    out_features: usize,
    config: &super::QuantConfig,
) -> Result<super::QuantWeight> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "paradec-packed-{}-{}.safetensors",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    save_tensors(&path, tensors)?;
    let r = Weights::from_files(std::slice::from_ref(&path))
        .and_then(|w| super::QuantWeight::load(&w, prefix, in_features, out_features, config));
    let _ = std::fs::remove_file(&path);
    r
}

/// A dense `[N, K]` weight quantized to a loaded GPTQ weight (act-order by `importance_perm`
/// when `cfg.desc_act`).
pub fn gptq_weight(
    weight: &[f32],
    out_features: usize,
    in_features: usize,
    cfg: &GptqConfig,
    bias: Option<&[f32]>,
) -> Result<super::QuantWeight> {
    let g_idx = if cfg.desc_act {
        let perm = importance_perm(weight, out_features, in_features);
        Some(act_order_g_idx(&perm, cfg.group_size)?)
    } else {
        None
    };
    let t = pack_gptq(
        weight,
        out_features,
        in_features,
        cfg,
        g_idx.as_deref(),
        bias,
        "w",
    )?;
    load_packed(
        &t,
        "w",
        in_features,
        out_features,
        &super::QuantConfig::Gptq(*cfg),
    )
}

/// A dense `[N, K]` weight quantized to a loaded EXL2 weight by `recipe`.
pub fn exl2_weight(
    weight: &[f32],
    out_features: usize,
    in_features: usize,
    recipe: &Exl2Recipe,
    bias: Option<&[f32]>,
) -> Result<super::QuantWeight> {
    let layout = recipe.layout(in_features)?;
    let perm = recipe
        .permute
        .then(|| importance_perm(weight, out_features, in_features));
    let t = pack_exl2(
        weight,
        out_features,
        in_features,
        &layout,
        perm.as_deref(),
        bias,
        "w",
    )?;
    load_packed(
        &t,
        "w",
        in_features,
        out_features,
        &super::QuantConfig::Exl2(super::Exl2Config::default()),
    )
}
