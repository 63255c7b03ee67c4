//! GPTQ weights (AutoGPTQ / GPTQModel / optimum checkpoints): `qweight`, `qzeros`, `scales`,
//! optional `g_idx` and `bias`, at 2, 3, 4 or 8 bits.
//!
//! Packing: each column's rows form a little-endian bit stream over the column's int32 words —
//! row k of column n is bits `[k·b, k·b + b)` of the stream `qweight[0, n], qweight[1, n], …`.
//! For b = 2, 4, 8 that is "32/b rows per word, lowest bits = lowest row"; for b = 3 a value may
//! straddle two words (32 rows in 3 words). `qzeros` packs along N in the same way, one stream
//! per group row. Shapes are `[ceil(K·b/32), N]` and `[groups, ceil(N·b/32)]`.
//!
//! Dequantization: `w[k, n] = (q[k, n] − zero[g, n]) · scales[g, n]`, `g = g_idx[k]`, where
//! `zero = stored + 1` for classic checkpoints (they store zero − 1, masked to b bits) and
//! `zero = stored` for `checkpoint_format = "gptq_v2"`.
//!
//! Act-order: when `g_idx` is not sorted, the rows are regrouped at load by a stable counting sort
//! on `g_idx` (so each group's rows are contiguous) and the packed rows are rewritten in that order;
//! `perm[j]` is the input feature of stored row j, and `forward` gathers activations through it.

use std::path::Path;

use half::f16;
use serde_json::Value;

use super::{
    check_dims, check_finite, check_forward, check_shape, decode_f16, decode_i32, forward_rows,
    load_bias, mul, packed_words, read_json_opt, stream_get, stream_or, view_of, view_opt,
};
use crate::limits::try_filled;
use crate::tensor::DType;
use crate::{Error, Result, Weights};

/// Bit widths GPTQ checkpoints use.
pub const GPTQ_BITS: [u32; 4] = [2, 3, 4, 8];

/// GPTQ settings from `quantization_config` / `quantize_config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptqConfig {
    /// 2, 3, 4 or 8.
    pub bits: u32,
    /// Rows per group; −1 = one group for all of K.
    pub group_size: i64,
    /// Act-order (rows quantized in a permuted order; `g_idx` is then required).
    pub desc_act: bool,
    /// Symmetric quantization (informational: zeros are stored either way).
    pub sym: bool,
    /// `checkpoint_format == "gptq_v2"`: `qzeros` holds the true zero (classic stores zero − 1).
    pub checkpoint_format_v2: bool,
}

impl Default for GptqConfig {
    fn default() -> Self {
        GptqConfig {
            bits: 4,
            group_size: 128,
            desc_act: false,
            sym: true,
            checkpoint_format_v2: false,
        }
    }
}

fn json_int(qc: &Value, key: &str) -> Result<Option<i64>> {
    match qc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            if let Some(i) = v.as_i64() {
                return Ok(Some(i));
            }
            match v.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(Some(f as i64)),
                _ => Err(Error::bad_format(format!(
                    "quantization_config.{key}: expected an integer, got {v}"
                ))),
            }
        }
    }
}

fn json_bool(qc: &Value, key: &str, default: bool) -> Result<bool> {
    match qc.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(Error::bad_format(format!(
            "quantization_config.{key}: expected true or false, got {v}"
        ))),
    }
}

impl GptqConfig {
    /// Parses a `quantization_config` object (from config.json) or a `quantize_config.json`.
    /// `bits` is required; `group_size` defaults to −1, `desc_act` to false, `sym` to true and
    /// `checkpoint_format` (or `format`) to "gptq".
    pub fn from_json(qc: &Value) -> Result<Self> {
        if !qc.is_object() {
            return Err(Error::bad_format(
                "quantization_config: expected a JSON object",
            ));
        }
        if let Some(m) = qc.get("quant_method") {
            match m.as_str() {
                Some(s) if s.eq_ignore_ascii_case("gptq") => {}
                _ => {
                    return Err(Error::bad_format(format!(
                        "quantization_config.quant_method: expected \"gptq\", got {m}"
                    )))
                }
            }
        }
        let bits = json_int(qc, "bits")?.ok_or_else(|| {
            Error::bad_format("quantization_config.bits: missing (GPTQ needs the bit width)")
        })?;
        let group_size = json_int(qc, "group_size")?.unwrap_or(-1);
        let format = match qc.get("checkpoint_format").or_else(|| qc.get("format")) {
            None | Some(Value::Null) => "gptq".to_string(),
            Some(Value::String(s)) => s.to_ascii_lowercase(),
            Some(v) => {
                return Err(Error::bad_format(format!(
                    "quantization_config.checkpoint_format: expected a string, got {v}"
                )))
            }
        };
        let checkpoint_format_v2 = match format.as_str() {
            "gptq" => false,
            "gptq_v2" => true,
            other => {
                return Err(Error::unsupported(format!(
                    "quantization_config.checkpoint_format {other:?} (paradec reads \"gptq\" and \"gptq_v2\")"
                )))
            }
        };
        let cfg = GptqConfig {
            bits: u32::try_from(bits).unwrap_or(u32::MAX),
            group_size,
            desc_act: json_bool(qc, "desc_act", false)?,
            sym: json_bool(qc, "sym", true)?,
            checkpoint_format_v2,
        };
        if !GPTQ_BITS.contains(&cfg.bits) {
            return Err(Error::bad_format(format!(
                "quantization_config.bits: {bits} is not a GPTQ width (2, 3, 4 or 8)"
            )));
        }
        cfg.check_group_size("quantization_config.group_size")?;
        Ok(cfg)
    }

    /// `config.json`'s `quantization_config` (when its quant_method is GPTQ or absent), else
    /// `quantize_config.json`; `NotFound` when neither exists.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if let Some(cfg) = read_json_opt(&dir.join("config.json"))? {
            if let Some(qc) = cfg.get("quantization_config").filter(|v| !v.is_null()) {
                return Self::from_json(qc);
            }
        }
        if let Some(qc) = read_json_opt(&dir.join("quantize_config.json"))? {
            return Self::from_json(&qc);
        }
        Err(Error::not_found(format!(
            "GPTQ settings: neither config.json's quantization_config nor quantize_config.json in {}",
            dir.display()
        )))
    }

    /// Infers the settings from one layer's tensors (for directories without a config):
    /// bits from `qzeros`' width against N, K from `g_idx` or `qweight`'s rows, the group size
    /// from the number of groups.
    pub fn infer(weights: &Weights, prefix: &str) -> Result<Self> {
        let qn = format!("{prefix}.qweight");
        let zn = format!("{prefix}.qzeros");
        let gn = format!("{prefix}.g_idx");
        let qw = view_of(weights, &qn, &[DType::I32])?;
        let qz = view_of(weights, &zn, &[DType::I32])?;
        let g_idx = view_opt(weights, &gn, &[DType::I32])?;
        let (&[rows, n], &[groups, zcols]) = (qw.shape, qz.shape) else {
            return Err(Error::bad_format(format!(
                "tensors {qn} and {zn} must be 2-D"
            )));
        };
        let k_known = match &g_idx {
            Some(g) if g.shape.len() == 1 => Some(g.shape[0]),
            _ => None,
        };
        let fits = |b: u32| -> bool {
            let z_ok = mul(n, b as usize, "")
                .map(|x| x.div_ceil(32) == zcols)
                .unwrap_or(false);
            let k_ok = match k_known {
                Some(k) => mul(k, b as usize, "")
                    .map(|x| x.div_ceil(32) == rows)
                    .unwrap_or(false),
                None => mul(rows, 32, "")
                    .map(|x| x % b as usize == 0)
                    .unwrap_or(false),
            };
            z_ok && k_ok
        };
        let cands: Vec<u32> = GPTQ_BITS.iter().copied().filter(|&b| fits(b)).collect();
        let [bits] = cands[..] else {
            return Err(Error::bad_format(format!(
                "{qn}: cannot infer the GPTQ bit width from shapes {:?} and {:?} (no quantize_config.json)",
                qw.shape, qz.shape
            )));
        };
        let k = k_known.unwrap_or(rows * 32 / bits as usize);
        let group_size = if groups <= 1 {
            -1
        } else {
            k.div_ceil(groups) as i64
        };
        if groups == 0 || (group_size > 0 && k.div_ceil(group_size as usize) != groups) {
            return Err(Error::bad_format(format!(
                "{zn}: {groups} groups do not divide K = {k} evenly (no quantize_config.json)"
            )));
        }
        let desc_act = match g_idx {
            Some(g) => decode_i32(g.data)?.windows(2).any(|p| p[0] > p[1]),
            None => false,
        };
        let cfg = GptqConfig {
            bits,
            group_size,
            desc_act,
            sym: true,
            checkpoint_format_v2: false,
        };
        cfg.check_group_size(&format!("{zn}: inferred group_size"))?;
        Ok(cfg)
    }

    fn check_group_size(&self, what: &str) -> Result<()> {
        if self.group_size == -1 {
            Ok(())
        } else if self.group_size > 0 {
            let gs = usize::try_from(self.group_size).unwrap_or(usize::MAX);
            crate::limits::check(what, gs, crate::limits::GROUP_SIZE).map(|_| ())
        } else {
            Err(Error::bad_format(format!(
                "{what}: {} is not a group size (−1 or positive)",
                self.group_size
            )))
        }
    }

    /// Number of groups for K input rows.
    pub fn groups(&self, k: usize) -> usize {
        match usize::try_from(self.group_size) {
            Ok(gs) if gs > 0 => k.div_ceil(gs),
            _ => 1,
        }
    }
}

/// A loaded GPTQ weight: validated packed arrays, rows regrouped for act-order.
#[derive(Debug, Clone)]
pub struct GptqWeight {
    prefix: String,
    cfg: GptqConfig,
    k: usize,
    n: usize,
    /// `[ceil(K·bits/32), N]`; stored row j is input feature `perm[j]` (j itself without perm).
    qweight: Vec<i32>,
    /// `[groups, ceil(N·bits/32)]`, as in the file.
    qzeros: Vec<i32>,
    /// `[groups, N]`.
    scales: Vec<f16>,
    /// The file's `g_idx`, if any.
    g_idx: Option<Vec<i32>>,
    /// Stored row → input feature; `None` when the rows are in file order and groups are sorted.
    perm: Option<Vec<u32>>,
    /// `groups + 1` offsets: group g holds stored rows `group_start[g] .. group_start[g + 1]`.
    group_start: Vec<usize>,
    bias: Option<Vec<f32>>,
}

impl GptqWeight {
    /// Loads `{prefix}.qweight`, `.qzeros`, `.scales`, optional `.g_idx` and `.bias`, checking every
    /// dtype and shape against K = `in_features`, N = `out_features` and the config.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        cfg: &GptqConfig,
    ) -> Result<Self> {
        let (k, n) = (in_features, out_features);
        check_dims(prefix, k, n)?;
        let qn = format!("{prefix}.qweight");
        let zn = format!("{prefix}.qzeros");
        let sn = format!("{prefix}.scales");
        let gn = format!("{prefix}.g_idx");
        if !GPTQ_BITS.contains(&cfg.bits) {
            return Err(Error::bad_format(format!(
                "tensor {qn}: GPTQ bits must be 2, 3, 4 or 8, got {}",
                cfg.bits
            )));
        }
        cfg.check_group_size(&format!("tensor {qn}: group_size"))?;
        let bits = cfg.bits;
        let groups = cfg.groups(k);
        let qrows = packed_words(k, bits, "qweight rows: in_features × bits")?;
        let zcols = packed_words(n, bits, "qzeros columns: out_features × bits")?;

        let qv = view_of(weights, &qn, &[DType::I32])?;
        check_shape(
            &qn,
            &qv,
            &[qrows, n],
            "ceil(in_features·bits/32), out_features",
        )?;
        let zv = view_of(weights, &zn, &[DType::I32])?;
        check_shape(
            &zn,
            &zv,
            &[groups, zcols],
            "groups, ceil(out_features·bits/32)",
        )?;
        let sv = view_of(weights, &sn, &[DType::F16])?;
        check_shape(&sn, &sv, &[groups, n], "groups, out_features")?;
        let gv = view_opt(weights, &gn, &[DType::I32])?;
        if let Some(gv) = &gv {
            check_shape(&gn, gv, &[k], "in_features")?;
        } else if cfg.desc_act {
            return Err(Error::not_found(format!(
                "tensor {gn} (required by desc_act = true)"
            )));
        }
        let bias = load_bias(weights, prefix, n, None)?;

        let scales = decode_f16(sv.data)?;
        check_finite(&sn, scales.iter().map(|s| s.to_f32()))?;
        let qzeros = decode_i32(zv.data)?;
        let mut qweight = decode_i32(qv.data)?;

        let (g_idx, perm, group_start) = match gv {
            None => {
                let gs = usize::try_from(cfg.group_size)
                    .ok()
                    .filter(|&g| g > 0)
                    .unwrap_or(k);
                let starts = (0..=groups).map(|g| g.saturating_mul(gs).min(k)).collect();
                (None, None, starts)
            }
            Some(gv) => {
                let g_idx = decode_i32(gv.data)?;
                // Stable counting sort of the rows by group.
                let mut count = try_filled(0usize, groups + 1, "g_idx group counts")?;
                for (row, &g) in g_idx.iter().enumerate() {
                    if g < 0 || g as usize >= groups {
                        return Err(Error::bad_format(format!(
                            "tensor {gn}: g_idx[{row}] = {g} is outside 0..{groups} (the number of groups)"
                        )));
                    }
                    count[g as usize + 1] += 1;
                }
                for g in 0..groups {
                    count[g + 1] += count[g];
                }
                let group_start = count.clone();
                let mut next = count;
                let mut perm = try_filled(0u32, k, "g_idx permutation")?;
                for (row, &g) in g_idx.iter().enumerate() {
                    perm[next[g as usize]] = row as u32;
                    next[g as usize] += 1;
                }
                let identity = perm.iter().enumerate().all(|(j, &p)| p as usize == j);
                let perm = if identity {
                    None
                } else {
                    let mut sorted = try_filled(0i32, qweight.len(), "regrouped qweight")?;
                    for (j, &src) in perm.iter().enumerate() {
                        for c in 0..n {
                            let q = stream_get(
                                |w| qweight[w * n + c] as u32,
                                src as usize * bits as usize,
                                bits,
                            );
                            stream_or(&mut sorted, |w| w * n + c, j * bits as usize, bits, q);
                        }
                    }
                    qweight = sorted;
                    Some(perm)
                };
                (Some(g_idx), perm, group_start)
            }
        };
        Ok(GptqWeight {
            prefix: prefix.to_string(),
            cfg: *cfg,
            k,
            n,
            qweight,
            qzeros,
            scales,
            g_idx,
            perm,
            group_start,
            bias,
        })
    }

    /// K.
    pub fn in_features(&self) -> usize {
        self.k
    }
    /// N.
    pub fn out_features(&self) -> usize {
        self.n
    }
    /// The bias, if the checkpoint has one.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
    /// Logical element count K·N.
    pub fn numel(&self) -> usize {
        self.k * self.n
    }
    /// Bytes of the arrays held: qweight, qzeros, scales, the permutation (act-order) and bias.
    pub fn storage_bytes(&self) -> usize {
        self.qweight.len() * 4
            + self.qzeros.len() * 4
            + self.scales.len() * 2
            + self.perm.as_ref().map_or(0, |p| p.len() * 4)
            + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }
    /// The quantization settings.
    pub fn config(&self) -> &GptqConfig {
        &self.cfg
    }
    /// The module name the tensors were loaded from.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Bits per weight.
    pub fn bits(&self) -> u32 {
        self.cfg.bits
    }
    /// Groups along K.
    pub fn groups(&self) -> usize {
        self.group_start.len() - 1
    }
    /// Packed weights `[ceil(K·bits/32), N]`, rows in stored (group-sorted) order.
    pub fn qweight(&self) -> &[i32] {
        &self.qweight
    }
    /// Packed zeros `[groups, ceil(N·bits/32)]` exactly as in the file (see `zero`).
    pub fn qzeros(&self) -> &[i32] {
        &self.qzeros
    }
    /// Scales `[groups, N]`.
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }
    /// The file's `g_idx`.
    pub fn g_idx(&self) -> Option<&[i32]> {
        self.g_idx.as_deref()
    }
    /// Stored row → input feature (act-order), `None` for the identity.
    pub fn perm(&self) -> Option<&[u32]> {
        self.perm.as_deref()
    }
    /// Group g holds stored rows `group_start()[g] .. group_start()[g + 1]`.
    pub fn group_start(&self) -> &[usize] {
        &self.group_start
    }

    /// The quantized value of stored row j, column c.
    pub fn q(&self, j: usize, c: usize) -> u32 {
        let b = self.cfg.bits;
        stream_get(|w| self.qweight[w * self.n + c] as u32, j * b as usize, b)
    }
    /// The true zero point of group g, column c (stored + 1 for classic checkpoints).
    pub fn zero(&self, g: usize, c: usize) -> u32 {
        let b = self.cfg.bits;
        let zc = self.qzeros.len() / self.groups();
        let z = stream_get(|w| self.qzeros[g * zc + w] as u32, c * b as usize, b);
        if self.cfg.checkpoint_format_v2 {
            z
        } else {
            z + 1
        }
    }

    /// Calls `f(stored_row, dequantized_row)` for every stored row.
    fn visit_rows(&self, f: &mut dyn FnMut(usize, &[f32])) {
        let n = self.n;
        let mut zero = vec![0f32; n];
        let mut scale = vec![0f32; n];
        let mut row = vec![0f32; n];
        for g in 0..self.groups() {
            let (a, b) = (self.group_start[g], self.group_start[g + 1]);
            if a == b {
                continue;
            }
            for c in 0..n {
                zero[c] = self.zero(g, c) as f32;
                scale[c] = self.scales[g * n + c].to_f32();
            }
            for j in a..b {
                for c in 0..n {
                    row[c] = (self.q(j, c) as f32 - zero[c]) * scale[c];
                }
                f(j, &row);
            }
        }
    }

    /// The dense weight, `[N, K]` row-major (nn.Linear layout).
    pub fn dequantize(&self) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut out = vec![0f32; k * n];
        let perm = self.perm.as_deref();
        self.visit_rows(&mut |j, row| {
            let col = perm.map_or(j, |p| p[j] as usize);
            for (c, &w) in row.iter().enumerate() {
                out[c * k + col] = w;
            }
        });
        out
    }

    /// `out[m, N] (+)= x[m, K] · Wᵀ + bias`, decoding the packed rows (f32 accumulation);
    /// activations are gathered through the act-order permutation.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32], accumulate: bool) -> Result<()> {
        check_forward(&self.prefix, self.k, self.n, x, m, out)?;
        forward_rows(
            self.k,
            self.n,
            self.perm.as_deref(),
            self.bias(),
            x,
            m,
            out,
            accumulate,
            |sink| self.visit_rows(sink),
        );
        Ok(())
    }
}

/// Format conformance: packed words written out by hand, expected values from the formula.
#[cfg(test)]
mod conformance {
    use super::*;
    use crate::quant::testutil::{assert_exact, f16t, i32t, weights_of};

    fn cfg(bits: u32, group_size: i64, v2: bool) -> GptqConfig {
        GptqConfig {
            bits,
            group_size,
            desc_act: false,
            sym: false,
            checkpoint_format_v2: v2,
        }
    }

    /// 4 bits, K = 8, N = 2, one group (group_size −1).
    /// qweight is [8·4/32, 2] = [1, 2]: one word per column, row k in bits 4k..4k+3.
    fn four_bit(v2: bool) -> GptqWeight {
        // Column 0 rows 0..7 hold q = 0,1,2,3,4,5,6,7: nibble k = k → 0x76543210.
        // Column 1 rows 0..7 hold q = 15,14,…,8: nibble k = 15 − k → 0x89ABCDEF.
        let qweight = vec![0x7654_3210, 0x89AB_CDEFu32 as i32];
        // qzeros is [1, ceil(2·4/32)] = [1, 1]: column 0 in bits 0..3 (stored 7), column 1 in
        // bits 4..7 (stored 3) → 0x37.
        let qzeros = vec![0x37];
        let (_d, w) = weights_of(
            "l",
            vec![
                ("qweight", i32t(qweight, &[1, 2])),
                ("qzeros", i32t(qzeros, &[1, 1])),
                ("scales", f16t(&[0.5, 0.25], &[1, 2])),
            ],
        );
        GptqWeight::load(&w, "l", 8, 2, &cfg(4, -1, v2)).unwrap()
    }

    #[test]
    fn four_bit_classic_zeros_are_stored_minus_one() {
        let w = four_bit(false);
        // Classic: zero = stored + 1 → column 0 zero 8, column 1 zero 4.
        // w[k,0] = (k − 8)·0.5 ; w[k,1] = (15 − k − 4)·0.25 = (11 − k)·0.25.
        let want = [
            -4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0,
            -0.5, // output row 0 (column 0 of qweight)
            2.75, 2.5, 2.25, 2.0, 1.75, 1.5, 1.25, 1.0, // output row 1
        ];
        assert_exact(&w.dequantize(), &want);
        assert_eq!((w.zero(0, 0), w.zero(0, 1)), (8, 4));
        assert!(w.perm().is_none());
    }

    #[test]
    fn four_bit_v2_zeros_are_true_zeros() {
        let w = four_bit(true);
        // v2: zero = stored → 7 and 3. w[k,0] = (k − 7)·0.5 ; w[k,1] = (12 − k)·0.25.
        let want = [
            -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, //
            3.0, 2.75, 2.5, 2.25, 2.0, 1.75, 1.5, 1.25,
        ];
        assert_exact(&w.dequantize(), &want);
    }

    /// 2 bits, K = 16, N = 1, group_size 8 (two groups), no g_idx (g = k / 8).
    fn two_bit(v2: bool, zeros: [i32; 2]) -> GptqWeight {
        // qweight [16·2/32, 1] = [1, 1]; row k in bits 2k..2k+1.
        // rows 0..3 = 0,1,2,3   → byte 0 = 0b11_10_01_00 = 0xE4
        // rows 4..7 = 3,2,1,0   → byte 1 = 0b00_01_10_11 = 0x1B
        // rows 8..11 = 1,1,1,1  → byte 2 = 0b01_01_01_01 = 0x55
        // rows 12..15 = 2,2,2,2 → byte 3 = 0b10_10_10_10 = 0xAA
        let qweight = vec![0xAA55_1BE4u32 as i32];
        let (_d, w) = weights_of(
            "l",
            vec![
                ("qweight", i32t(qweight, &[1, 1])),
                // qzeros [2 groups, ceil(1·2/32) = 1]: column 0 in bits 0..1 of each group's word.
                ("qzeros", i32t(zeros.to_vec(), &[2, 1])),
                ("scales", f16t(&[1.0, 0.5], &[2, 1])),
            ],
        );
        GptqWeight::load(&w, "l", 16, 1, &cfg(2, 8, v2)).unwrap()
    }

    #[test]
    fn two_bit_groups_v2() {
        // v2 zeros: group 0 → 2, group 1 → 1.
        let w = two_bit(true, [2, 1]);
        // group 0: (q − 2)·1 ; group 1: (q − 1)·0.5.
        let want = [
            -2.0, -1.0, 0.0, 1.0, 1.0, 0.0, -1.0, -2.0, // rows 0..7
            0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, // rows 8..15
        ];
        assert_exact(&w.dequantize(), &want);
        assert_eq!(w.group_start(), &[0, 8, 16]);
    }

    #[test]
    fn two_bit_classic_zero_can_reach_two_to_the_bits() {
        // Classic: stored 3 (all ones) → zero 4 = 2²; stored 0 → zero 1. Only the low 2 bits of
        // the word count: 0xFFFF_FFFF would also read as stored 3 for column 0.
        let w = two_bit(false, [-1, 0]);
        // group 0: (q − 4)·1 ; group 1: (q − 1)·0.5.
        let want = [
            -4.0, -3.0, -2.0, -1.0, -1.0, -2.0, -3.0, -4.0, //
            0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5,
        ];
        assert_exact(&w.dequantize(), &want);
    }

    #[test]
    fn three_bit_is_a_continuous_bit_stream() {
        // 3 bits, K = 32, N = 11, one group, v2 zeros. qweight [32·3/32, 11] = [3, 11].
        // Column 0's stream: row k in stream bits 3k..3k+2.
        //   row 0 = 5 (0b101)  → word 0 bits 0..2          → 0x0000_0005
        //   row 1 = 2 (0b010)  → word 0 bits 3..5          → 0x0000_0010
        //   row 10 = 6 (0b110) → stream bits 30,31,32: bit0 (0) → word 0 bit 30, bit1 (1) →
        //                        word 0 bit 31 (0x8000_0000), bit2 (1) → word 1 bit 0 (0x1)
        //   row 21 = 3 (0b011) → stream bits 63,64,65: bit0 (1) → word 1 bit 31 (0x8000_0000),
        //                        bit1 (1) → word 2 bit 0 (0x1), bit2 (0) → word 2 bit 1
        //   row 31 = 7 (0b111) → stream bits 93..95 = word 2 bits 29..31 (0xE000_0000)
        //   every other row = 0.
        // word 0 = 0x8000_0015, word 1 = 0x8000_0001, word 2 = 0xE000_0001.
        let n = 11;
        let mut qweight = vec![0i32; 3 * n];
        qweight[0] = 0x8000_0015u32 as i32;
        qweight[n] = 0x8000_0001u32 as i32;
        qweight[2 * n] = 0xE000_0001u32 as i32;
        // qzeros [1, ceil(11·3/32) = 2], column n in bits 3n..3n+2 of the row's stream:
        //   col 0 = 1 → bits 0..2 (0x1); col 1 = 7 → bits 3..5 (0x38);
        //   col 10 = 5 (0b101) → stream bits 30,31,32: bit0 (1) → word 0 bit 30 (0x4000_0000),
        //   bit1 (0) → bit 31, bit2 (1) → word 1 bit 0 (0x1); other columns 0.
        let qzeros = vec![0x4000_0039, 0x1];
        let (_d, w) = weights_of(
            "l",
            vec![
                ("qweight", i32t(qweight, &[3, n])),
                ("qzeros", i32t(qzeros, &[1, 2])),
                ("scales", f16t(&[0.5; 11], &[1, n])),
            ],
        );
        let w = GptqWeight::load(&w, "l", 32, n, &cfg(3, -1, true)).unwrap();
        let d = w.dequantize();
        // Column 0: (q − 1)·0.5.
        let mut q0 = [0.0f32; 32];
        q0[0] = 5.0;
        q0[1] = 2.0;
        q0[10] = 6.0;
        q0[21] = 3.0;
        q0[31] = 7.0;
        let want0: Vec<f32> = q0.iter().map(|q| (q - 1.0) * 0.5).collect();
        assert_exact(&d[..32], &want0);
        // Other columns: q = 0, so w = −zero·0.5: col 1 → −3.5, col 10 → −2.5, the rest 0.
        for c in 1..n {
            let z = match c {
                1 => 7.0,
                10 => 5.0,
                _ => 0.0,
            };
            assert_exact(&d[c * 32..(c + 1) * 32], &[-z * 0.5; 32]);
        }
    }

    #[test]
    fn eight_bit_with_bias() {
        // 8 bits, K = 4, N = 2: qweight [1, 2], row k in bits 8k..8k+7.
        // column 0 rows = 0, 127, 128, 255 → 0xFF80_7F00 ; column 1 rows = 1,2,3,4 → 0x0403_0201.
        // qzeros [1, ceil(2·8/32) = 1]: column 0 in bits 0..7 = 127, column 1 in bits 8..15 = 0
        // → 0x0000_007F; classic → zeros 128 and 1.
        let (_d, w) = weights_of(
            "l",
            vec![
                (
                    "qweight",
                    i32t(vec![0xFF80_7F00u32 as i32, 0x0403_0201], &[1, 2]),
                ),
                ("qzeros", i32t(vec![0x7F], &[1, 1])),
                ("scales", f16t(&[0.125, 2.0], &[1, 2])),
                ("bias", f16t(&[1.0, -1.0], &[2])),
            ],
        );
        let w = GptqWeight::load(&w, "l", 4, 2, &cfg(8, 4, false)).unwrap();
        // (q − 128)·0.125 and (q − 1)·2.
        assert_exact(
            &w.dequantize(),
            &[-16.0, -0.125, 0.0, 15.875, 0.0, 2.0, 4.0, 6.0],
        );
        assert_eq!(w.bias(), Some(&[1.0f32, -1.0][..]));
        // forward: x = [1, 1, 1, 1] → row sums + bias: −0.25 + 1 and 12 − 1.
        let mut out = [0.0f32; 2];
        w.forward(&[1.0; 4], 1, &mut out, false).unwrap();
        assert_exact(&out, &[0.75, 11.0]);
        w.forward(&[1.0; 4], 1, &mut out, true).unwrap();
        assert_exact(&out, &[1.5, 22.0]);
    }

    #[test]
    fn act_order_non_monotonic_g_idx() {
        // 4 bits, K = 8, N = 1, group_size 4, g_idx = [1,0,1,0,0,1,1,0] (act-order).
        // qweight rows 0..7 = 1..8 → nibble k = k + 1 → 0x87654321.
        // qzeros [2, 1] (v2): group 0 zero 4, group 1 zero 2. scales: group 0 → 1, group 1 → 0.5.
        let (_d, w) = weights_of(
            "l",
            vec![
                ("qweight", i32t(vec![0x8765_4321u32 as i32], &[1, 1])),
                ("qzeros", i32t(vec![4, 2], &[2, 1])),
                ("scales", f16t(&[1.0, 0.5], &[2, 1])),
                ("g_idx", i32t(vec![1, 0, 1, 0, 0, 1, 1, 0], &[8])),
            ],
        );
        let c = GptqConfig {
            desc_act: true,
            ..cfg(4, 4, true)
        };
        let w = GptqWeight::load(&w, "l", 8, 1, &c).unwrap();
        // w[k] = (q[k] − zero[g_idx[k]])·scale[g_idx[k]]:
        //   k0: g1 (1−2)·.5 = −0.5   k1: g0 (2−4) = −2   k2: g1 (3−2)·.5 = 0.5  k3: g0 (4−4) = 0
        //   k4: g0 (5−4) = 1         k5: g1 (6−2)·.5 = 2  k6: g1 (7−2)·.5 = 2.5 k7: g0 (8−4) = 4
        assert_exact(&w.dequantize(), &[-0.5, -2.0, 0.5, 0.0, 1.0, 2.0, 2.5, 4.0]);
        // Stable counting sort: group 0 rows 1,3,4,7 then group 1 rows 0,2,5,6.
        assert_eq!(w.perm(), Some(&[1u32, 3, 4, 7, 0, 2, 5, 6][..]));
        assert_eq!(w.group_start(), &[0, 4, 8]);
        // Rewritten packed rows follow the perm: q = 2,4,5,8,1,3,6,7 → 0x76318542.
        assert_eq!(w.qweight(), &[0x7631_8542]);
        // forward gathers x through the perm: x = e_k picks w[k].
        for k in 0..8 {
            let mut x = [0.0f32; 8];
            x[k] = 1.0;
            let mut out = [0.0f32];
            w.forward(&x, 1, &mut out, false).unwrap();
            assert_eq!(out[0], [-0.5, -2.0, 0.5, 0.0, 1.0, 2.0, 2.5, 4.0][k]);
        }
    }

    #[test]
    fn config_parsing() {
        let v: Value = serde_json::json!({"bits": 4, "group_size": 128, "desc_act": true, "sym": false,
            "checkpoint_format": "gptq_v2", "quant_method": "gptq"});
        let c = GptqConfig::from_json(&v).unwrap();
        assert_eq!(
            c,
            GptqConfig {
                bits: 4,
                group_size: 128,
                desc_act: true,
                sym: false,
                checkpoint_format_v2: true
            }
        );
        let c = GptqConfig::from_json(&serde_json::json!({"bits": 3})).unwrap();
        assert_eq!(
            (c.group_size, c.checkpoint_format_v2, c.sym),
            (-1, false, true)
        );
        let e = GptqConfig::from_json(&serde_json::json!({"bits": 5})).unwrap_err();
        assert!(
            matches!(&e, Error::BadFormat(m) if m.contains("quantization_config.bits")),
            "{e}"
        );
        let e =
            GptqConfig::from_json(&serde_json::json!({"bits": 4, "group_size": 0})).unwrap_err();
        assert!(
            matches!(&e, Error::BadFormat(m) if m.contains("group_size")),
            "{e}"
        );
        let e =
            GptqConfig::from_json(&serde_json::json!({"bits": 4, "checkpoint_format": "marlin"}))
                .unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)));
    }
}
