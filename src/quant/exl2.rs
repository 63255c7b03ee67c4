//! EXL2 weights (exllamav2 checkpoints): `q_weight`, `q_invperm`, `q_scale`, `q_scale_max`,
//! `q_groups`, optional `bias` (and an optional redundant `q_perm`, checked when present).
//!
//! Stored rows are the input features permuted (`perm = argsort(q_invperm)`: stored row j is input
//! feature `perm[j]`) and split into groups; `q_groups` holds `(bits, first packed row)` pairs,
//! widths in {8, 6, 5, 4, 3, 2} in non-increasing order. Within a group each column is a
//! little-endian bit stream over the group's packed rows: row r of the group is bits
//! `[r·b, r·b + b)` of `q_weight[first + 0, c], q_weight[first + 1, c], …`. A group holds
//! `(next first − first) · 32 / b` rows; the last group holds whatever rows of K remain.
//!
//! Dequantization: `w[perm[j], c] = (q[j, c] − 2^(b−1)) · (qs[g, c] + 1)² · q_scale_max[g] / 256`,
//! where `qs[g, c]` is nibble `c % 8` (low nibble first) of `q_scale[g, c / 8]`.
//! The stored matrices are `N_pad = round_up(N, 32)` columns wide; padding columns are ignored.

use half::f16;
use serde_json::Value;

use super::{
    check_dims, check_finite, check_forward, check_shape, decode_f16, decode_i16, decode_i32,
    forward_rows, load_bias, stream_get, view_of, view_opt,
};
use crate::limits::try_filled;
use crate::tensor::DType;
use crate::{Error, Result, Weights};

/// Widths EXL2 groups use.
pub const EXL2_BITS: [u32; 6] = [2, 3, 4, 5, 6, 8];

/// EXL2 settings from `quantization_config` (informational: the tensors carry everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exl2Config {
    /// Average bits per weight the model was converted at.
    pub bits: Option<f64>,
    /// Bits of the output head.
    pub head_bits: Option<u32>,
}

impl Exl2Config {
    /// Reads `quantization_config` (`bits`, `head_bits`, ...) of an EXL2 checkpoint.
    pub fn from_json(qc: &Value) -> Result<Self> {
        if !qc.is_object() {
            return Err(Error::bad_format(
                "quantization_config: expected a JSON object",
            ));
        }
        let bits = match qc.get("bits") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(b) if b.is_finite() && b > 0.0 && b <= 16.0 => Some(b),
                _ => {
                    return Err(Error::bad_format(format!(
                        "quantization_config.bits: expected a number of bits, got {v}"
                    )))
                }
            },
        };
        let head_bits = match qc.get("head_bits") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(b) if b <= 16 => Some(b as u32),
                _ => {
                    return Err(Error::bad_format(format!(
                        "quantization_config.head_bits: expected an integer, got {v}"
                    )))
                }
            },
        };
        Ok(Exl2Config { bits, head_bits })
    }
}

/// One group of stored rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exl2Group {
    /// Width: 2, 3, 4, 5, 6 or 8.
    pub bits: u32,
    /// First stored row (index into the permuted K).
    pub first_row: usize,
    /// Number of rows.
    pub rows: usize,
    /// First packed row in `q_weight`.
    pub packed_row: usize,
}

/// `(code + 1)² · scale_max / 256` — the scale a 4-bit code stands for.
#[inline]
pub fn exl2_scale(code: u32, scale_max: f32) -> f32 {
    ((code + 1) * (code + 1)) as f32 * scale_max / 256.0
}

/// A loaded EXL2 weight: validated packed arrays and the decoded group table.
#[derive(Debug, Clone)]
pub struct Exl2Weight {
    prefix: String,
    k: usize,
    n: usize,
    n_pad: usize,
    q_weight: Vec<i32>,
    q_invperm: Vec<u32>,
    q_perm: Vec<u32>,
    q_scale: Vec<i32>,
    q_scale_max: Vec<f16>,
    q_groups: Vec<i16>,
    groups: Vec<Exl2Group>,
    bias: Option<Vec<f32>>,
}

impl Exl2Weight {
    /// Loads `{prefix}.q_weight`, `.q_invperm`, `.q_scale`, `.q_scale_max`, `.q_groups`, optional
    /// `.bias` (`[N]` or `[N_pad]`) and `.q_perm`, checking them against K and N.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        let (k, n) = (in_features, out_features);
        check_dims(prefix, k, n)?;
        let n_pad = n.checked_next_multiple_of(32).ok_or_else(|| {
            Error::bad_input(format!(
                "{prefix}: out_features {n} overflows when padded to 32"
            ))
        })?;
        let wn = format!("{prefix}.q_weight");
        let ipn = format!("{prefix}.q_invperm");
        let pn = format!("{prefix}.q_perm");
        let sn = format!("{prefix}.q_scale");
        let mn = format!("{prefix}.q_scale_max");
        let gn = format!("{prefix}.q_groups");

        let ipv = view_of(weights, &ipn, &[DType::I32])?;
        check_shape(&ipn, &ipv, &[k], "in_features")?;
        let gv = view_of(weights, &gn, &[DType::I16])?;
        let ng = match gv.shape {
            &[len] if len >= 2 && len % 2 == 0 => len / 2,
            s => {
                return Err(Error::bad_format(format!(
                    "tensor {gn}: shape must be [2·groups] with at least one group, got {s:?}"
                )))
            }
        };
        check_shape(&gn, &gv, &[2 * ng], "2·groups")?;
        let mv = view_of(weights, &mn, &[DType::F16])?;
        check_shape(&mn, &mv, &[ng], "groups (from q_groups)")?;
        let sv = view_of(weights, &sn, &[DType::I32])?;
        check_shape(
            &sn,
            &sv,
            &[ng, n_pad / 8],
            "groups, round_up(out_features, 32)/8",
        )?;
        let wv = view_of(weights, &wn, &[DType::I32])?;
        let packed_rows = match wv.shape {
            &[p, c] if p >= 1 && c == n_pad => p,
            s => {
                return Err(Error::bad_format(format!(
                    "tensor {wn}: shape must be [packed rows ≥ 1, {n_pad}] (round_up(out_features, 32)), got {s:?}"
                )))
            }
        };
        check_shape(
            &wn,
            &wv,
            &[packed_rows, n_pad],
            "packed rows, round_up(out_features, 32)",
        )?;
        let bias = load_bias(weights, prefix, n, Some(n_pad))?;

        // The permutation.
        let invperm_raw = decode_i32(ipv.data)?;
        let mut perm = try_filled(u32::MAX, k, "q_invperm inverse")?;
        for (j, &v) in invperm_raw.iter().enumerate() {
            if v < 0 || v as usize >= k {
                return Err(Error::bad_format(format!(
                    "tensor {ipn}: not a permutation: q_invperm[{j}] = {v} is outside 0..{k}"
                )));
            }
            let slot = &mut perm[v as usize];
            if *slot != u32::MAX {
                return Err(Error::bad_format(format!(
                    "tensor {ipn}: not a permutation: value {v} appears at {} and {j}",
                    *slot
                )));
            }
            *slot = j as u32;
        }
        let q_invperm: Vec<u32> = invperm_raw.iter().map(|&v| v as u32).collect();
        if let Some(pv) = view_opt(weights, &pn, &[DType::I32])? {
            check_shape(&pn, &pv, &[k], "in_features")?;
            if let Some(j) = decode_i32(pv.data)?
                .iter()
                .zip(&perm)
                .position(|(&a, &b)| a as i64 != b as i64)
            {
                return Err(Error::bad_format(format!(
                    "tensor {pn}: q_perm[{j}] disagrees with argsort(q_invperm)[{j}] = {}",
                    perm[j]
                )));
            }
        }

        // The group table.
        let q_groups = decode_i16(gv.data)?;
        let groups = Self::parse_groups(&gn, &wn, &q_groups, k, packed_rows)?;

        let q_scale_max = decode_f16(mv.data)?;
        check_finite(&mn, q_scale_max.iter().map(|s| s.to_f32()))?;
        Ok(Exl2Weight {
            prefix: prefix.to_string(),
            k,
            n,
            n_pad,
            q_weight: decode_i32(wv.data)?,
            q_invperm,
            q_perm: perm,
            q_scale: decode_i32(sv.data)?,
            q_scale_max,
            q_groups,
            groups,
            bias,
        })
    }

    /// Decodes and checks the `(bits, first packed row)` pairs (read as unsigned 16-bit).
    fn parse_groups(
        gn: &str,
        wn: &str,
        q_groups: &[i16],
        k: usize,
        packed_rows: usize,
    ) -> Result<Vec<Exl2Group>> {
        let ng = q_groups.len() / 2;
        let bits_of = |g: usize| q_groups[2 * g] as u16 as u32;
        let off_of = |g: usize| q_groups[2 * g + 1] as u16 as usize;
        // Pass 1: widths, their order, and the offsets (start at 0, increase, inside q_weight).
        for g in 0..ng {
            let (bits, off) = (bits_of(g), off_of(g));
            if !EXL2_BITS.contains(&bits) {
                return Err(Error::bad_format(format!(
                    "tensor {gn}: group {g} has width {bits} bits; allowed widths are 2, 3, 4, 5, 6, 8"
                )));
            }
            if g == 0 && off != 0 {
                return Err(Error::bad_format(format!(
                    "tensor {gn}: group 0 must start at packed row 0, starts at {off}"
                )));
            }
            if g > 0 && bits > bits_of(g - 1) {
                return Err(Error::bad_format(format!(
                    "tensor {gn}: groups must appear in descending width; group {g} has {bits} bits after {}",
                    bits_of(g - 1)
                )));
            }
            if off >= packed_rows {
                return Err(Error::bad_format(format!(
                    "tensor {gn}: group {g} starts at packed row {off}, beyond the {packed_rows} rows of {wn}"
                )));
            }
            if g > 0 && off <= off_of(g - 1) {
                return Err(Error::bad_format(format!(
                    "tensor {gn}: group offsets must increase; group {g} starts at packed row {off}, group {} at {}",
                    g - 1,
                    off_of(g - 1)
                )));
            }
        }
        // Pass 2: rows per group, which must add up to K.
        let mut out = Vec::with_capacity(ng);
        let mut first_row = 0usize;
        for g in 0..ng {
            let (bits, off) = (bits_of(g), off_of(g));
            let b = bits as usize;
            let end = if g + 1 < ng {
                off_of(g + 1)
            } else {
                packed_rows
            };
            let span = end - off;
            if first_row >= k {
                return Err(Error::bad_format(format!(
                    "tensor {gn}: groups 0..{g} already cover all {k} input rows; group {g} is extra"
                )));
            }
            let rows = if g + 1 < ng {
                if (span * 32) % b != 0 {
                    return Err(Error::bad_format(format!(
                        "tensor {gn}: group {g} spans {span} packed rows, not a whole number of {bits}-bit rows"
                    )));
                }
                span * 32 / b
            } else {
                let rows = k - first_row;
                let min_span = (rows * b).div_ceil(32);
                let max_span = rows.div_ceil(32) * b;
                if span < min_span || span > max_span {
                    return Err(Error::bad_format(format!(
                        "tensor {gn}: the last group ({rows} rows at {bits} bits) needs {min_span}..={max_span} packed rows of {wn}, has {span}"
                    )));
                }
                rows
            };
            if first_row + rows > k {
                return Err(Error::bad_format(format!(
                    "tensor {gn}: groups 0..={g} hold {} rows, more than in_features = {k}",
                    first_row + rows
                )));
            }
            out.push(Exl2Group {
                bits,
                first_row,
                rows,
                packed_row: off,
            });
            first_row += rows;
        }
        Ok(out)
    }

    /// K.
    pub fn in_features(&self) -> usize {
        self.k
    }
    /// N.
    pub fn out_features(&self) -> usize {
        self.n
    }
    /// Stored width: N rounded up to a multiple of 32.
    pub fn padded_out_features(&self) -> usize {
        self.n_pad
    }
    /// The bias, if the checkpoint has one.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
    /// Logical element count K·N.
    pub fn numel(&self) -> usize {
        self.k * self.n
    }
    /// Bytes of the arrays held: q_weight, both permutations, q_scale, q_scale_max, q_groups, bias.
    pub fn storage_bytes(&self) -> usize {
        self.q_weight.len() * 4
            + self.q_invperm.len() * 4
            + self.q_perm.len() * 4
            + self.q_scale.len() * 4
            + self.q_scale_max.len() * 2
            + self.q_groups.len() * 2
            + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }
    /// The module name the tensors were loaded from.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// `[packed rows, N_pad]`.
    pub fn q_weight(&self) -> &[i32] {
        &self.q_weight
    }
    /// The stored `q_invperm`.
    pub fn q_invperm(&self) -> &[u32] {
        &self.q_invperm
    }
    /// Stored row → input feature: `argsort(q_invperm)`.
    pub fn q_perm(&self) -> &[u32] {
        &self.q_perm
    }
    /// `[groups, N_pad / 8]`.
    pub fn q_scale(&self) -> &[i32] {
        &self.q_scale
    }
    /// The per-group maximum scales.
    pub fn q_scale_max(&self) -> &[f16] {
        &self.q_scale_max
    }
    /// The raw `(bits, first packed row)` pairs.
    pub fn q_groups(&self) -> &[i16] {
        &self.q_groups
    }
    /// The decoded groups (width, rows, packed rows).
    pub fn groups(&self) -> &[Exl2Group] {
        &self.groups
    }

    /// The 4-bit scale code of group g, column c.
    pub fn scale_code(&self, g: usize, c: usize) -> u32 {
        (self.q_scale[g * (self.n_pad / 8) + c / 8] as u32 >> (4 * (c % 8))) & 0xF
    }
    /// The scale of group g, column c.
    pub fn scale(&self, g: usize, c: usize) -> f32 {
        exl2_scale(self.scale_code(g, c), self.q_scale_max[g].to_f32())
    }
    /// The stored (unsigned) value of row r of group g, column c.
    pub fn q(&self, g: usize, r: usize, c: usize) -> u32 {
        let gr = &self.groups[g];
        stream_get(
            |w| self.q_weight[(gr.packed_row + w) * self.n_pad + c] as u32,
            r * gr.bits as usize,
            gr.bits,
        )
    }

    /// Calls `f(stored_row, dequantized_row)` for every stored row (N values, padding dropped).
    fn visit_rows(&self, f: &mut dyn FnMut(usize, &[f32])) {
        let n = self.n;
        let mut scale = vec![0f32; n];
        let mut row = vec![0f32; n];
        for (g, gr) in self.groups.iter().enumerate() {
            for (c, s) in scale.iter_mut().enumerate() {
                *s = self.scale(g, c);
            }
            let half = (1u32 << (gr.bits - 1)) as f32;
            for r in 0..gr.rows {
                for c in 0..n {
                    row[c] = (self.q(g, r, c) as f32 - half) * scale[c];
                }
                f(gr.first_row + r, &row);
            }
        }
    }

    /// The dense weight, `[N, K]` row-major (nn.Linear layout, original feature order).
    pub fn dequantize(&self) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut out = vec![0f32; k * n];
        let perm = &self.q_perm;
        self.visit_rows(&mut |j, row| {
            let col = perm[j] as usize;
            for (c, &w) in row.iter().enumerate() {
                out[c * k + col] = w;
            }
        });
        out
    }

    /// `out[m, N] (+)= x[m, K] · Wᵀ + bias`, decoding the packed rows (f32 accumulation);
    /// activations are gathered through `q_perm`.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32], accumulate: bool) -> Result<()> {
        check_forward(&self.prefix, self.k, self.n, x, m, out)?;
        forward_rows(
            self.k,
            self.n,
            Some(&self.q_perm),
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
    use crate::quant::testutil::{assert_exact, f16t, i16t, i32t, weights_of};

    /// One output column (N = 1, stored N_pad = 32 columns), one group of `bits`, column 0's
    /// packed words given; padding columns 1..31 are filled with junk that must be ignored.
    /// q_scale is [1, 32/8 = 4]; column 0's code sits in the low nibble of word 0 (junk in the
    /// other nibbles, which belong to padding columns 1..7).
    fn one_column(
        bits: i16,
        col0: &[u32],
        invperm: Vec<i32>,
        code: i32,
        scale_max: f32,
    ) -> Exl2Weight {
        let k = invperm.len();
        let rows = col0.len();
        let mut q_weight = vec![0x5A5A_5A5Au32 as i32; rows * 32];
        for (r, &w) in col0.iter().enumerate() {
            q_weight[r * 32] = w as i32;
        }
        let q_scale = vec![(0xABCD_EF90u32 as i32) | code, 0x1111_1111, 0, 0];
        let (_d, w) = weights_of(
            "l",
            vec![
                ("q_weight", i32t(q_weight, &[rows, 32])),
                ("q_invperm", i32t(invperm, &[k])),
                ("q_scale", i32t(q_scale, &[1, 4])),
                ("q_scale_max", f16t(&[scale_max], &[1])),
                ("q_groups", i16t(vec![bits, 0], &[2])),
            ],
        );
        Exl2Weight::load(&w, "l", k, 1).unwrap()
    }

    #[test]
    fn scale_decoding() {
        // (qs + 1)² · max / 256
        assert_eq!(exl2_scale(0, 256.0), 1.0);
        assert_eq!(exl2_scale(15, 0.5), 0.5);
        assert_eq!(exl2_scale(3, 2.0), 0.125);
        assert_eq!(exl2_scale(7, 1.0), 0.25);
    }

    #[test]
    fn two_bit() {
        // 16 rows per word, row r in bits 2r..2r+1, half = 2.
        // rows 0..3 = 0,1,2,3 → 0xE4 ; rows 4..7 = 3,2,1,0 → 0x1B ; rows 8..11 = 1 → 0x55 ;
        // rows 12..15 = 2 → 0xAA.   Code 15 → scale = 16²·0.5/256 = 0.5.
        let w = one_column(2, &[0xAA55_1BE4], (0..16).collect(), 15, 0.5);
        let q = [
            0., 1., 2., 3., 3., 2., 1., 0., 1., 1., 1., 1., 2., 2., 2., 2.,
        ];
        let want: Vec<f32> = q.iter().map(|q| (q - 2.0) * 0.5).collect();
        assert_exact(&w.dequantize(), &want);
        assert_eq!(
            w.groups(),
            &[Exl2Group {
                bits: 2,
                first_row: 0,
                rows: 16,
                packed_row: 0
            }]
        );
    }

    #[test]
    fn three_bit_short_group_reversed_perm() {
        // K = 11: one (last, short) group of 11 rows at 3 bits → ceil(33/32) = 2 packed rows.
        // row r in stream bits 3r..3r+2, half = 4.
        //   row 0 = 7 → word 0 bits 0..2 (0x7); rows 1..9 = 0;
        //   row 10 = 5 (0b101) → stream bits 30,31,32: bit0 (1) → word 0 bit 30 (0x4000_0000),
        //   bit1 (0) → word 0 bit 31, bit2 (1) → word 1 bit 0 (0x1).
        // Code 0 → scale = 1·256/256 = 1.
        // q_invperm[k] = 10 − k → perm = argsort = [10, 9, …, 0]: stored row j is feature 10 − j.
        let w = one_column(3, &[0x4000_0007, 0x1], (0..11).rev().collect(), 0, 256.0);
        assert_eq!(w.q_perm(), &[10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        // stored: [3, −4 ×9, 1] → features reversed.
        let want = [
            1.0, -4.0, -4.0, -4.0, -4.0, -4.0, -4.0, -4.0, -4.0, -4.0, 3.0,
        ];
        assert_exact(&w.dequantize(), &want);
    }

    #[test]
    fn four_bit_invperm_to_perm() {
        // 8 rows per word, nibble r = row r: rows = 0,1,2,3,12,13,14,15 → 0xFEDC3210; half = 8.
        // Code 3 → scale = 4²·2/256 = 0.125.
        // q_invperm = [3,0,1,2,7,4,5,6] (feature k is stored at row q_invperm[k]) →
        // perm = argsort = [1,2,3,0,5,6,7,4] (stored row j is feature perm[j]).
        let w = one_column(4, &[0xFEDC_3210], vec![3, 0, 1, 2, 7, 4, 5, 6], 3, 2.0);
        assert_eq!(w.q_perm(), &[1, 2, 3, 0, 5, 6, 7, 4]);
        // stored values (q − 8)·0.125 = −1, −.875, −.75, −.625, .5, .625, .75, .875 at features
        // 1, 2, 3, 0, 5, 6, 7, 4.
        assert_exact(
            &w.dequantize(),
            &[-0.625, -1.0, -0.875, -0.75, 0.875, 0.5, 0.625, 0.75],
        );
    }

    #[test]
    fn five_bit() {
        // K = 7 rows at 5 bits → ceil(35/32) = 2 packed rows; row r in stream bits 5r..5r+4; half 16.
        //   row 0 = 31 → 0x1F; row 1 = 16 → 16<<5 = 0x200; rows 2..5 = 16 → 0x4000, 0x8_0000,
        //   0x100_0000, 0x2000_0000;
        //   row 6 = 22 (0b10110) → stream bits 30..34: bit0 (0) → word 0 bit 30, bit1 (1) →
        //   word 0 bit 31 (0x8000_0000), bits 2..4 (1,0,1) → word 1 bits 0..2 = 0b101.
        // word 0 = 0xA108_421F, word 1 = 0x5. Code 7 → scale = 8²·1/256 = 0.25.
        let w = one_column(5, &[0xA108_421F, 0x5], (0..7).collect(), 7, 1.0);
        assert_exact(&w.dequantize(), &[3.75, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5]);
    }

    #[test]
    fn six_bit() {
        // K = 6 rows at 6 bits → 2 packed rows; row r in stream bits 6r..6r+5; half 32.
        //   row 0 = 0; row 1 = 63 → 0xFC0; row 2 = 32 → 0x2_0000; row 3 = 33 → 33<<18 = 0x84_0000;
        //   row 4 = 1 → 0x100_0000;
        //   row 5 = 57 (0b111001) → stream bits 30..35: bit0 (1) → word 0 bit 30 (0x4000_0000),
        //   bit1 (0) → bit 31, bits 2..5 (0,1,1,1) → word 1 bits 0..3 = 0b1110 = 0xE.
        // word 0 = 0x4186_0FC0, word 1 = 0xE. Code 1 → scale = 2²·4/256 = 1/16.
        let w = one_column(6, &[0x4186_0FC0, 0xE], (0..6).collect(), 1, 4.0);
        assert_exact(
            &w.dequantize(),
            &[-2.0, 1.9375, 0.0, 0.0625, -1.9375, 1.5625],
        );
    }

    #[test]
    fn eight_bit() {
        // 4 rows per word, row r in bits 8r..8r+7: rows = 0, 128, 255, 129 → 0x81FF_8000; half 128.
        // Code 15 → scale = 0.5.
        let w = one_column(8, &[0x81FF_8000], (0..4).collect(), 15, 0.5);
        assert_exact(&w.dequantize(), &[-64.0, 0.0, 63.5, 0.5]);
    }

    #[test]
    fn mixed_widths_scale_nibbles_and_padding() {
        // K = 24, N = 9 (N_pad 32). Group 0: 4 bits, 8 rows = 1 packed row; group 1: 2 bits,
        // 16 rows = 1 packed row. q_groups = [4, 0, 2, 1].
        // Every row of group 0 holds q = 9 (0x9999_9999 → q − 8 = 1), every row of group 1 q = 3
        // (0xFFFF_FFFF → q − 2 = 1), so w[k, c] = scale of (group of k, c).
        // Padding columns 9..31 hold 0 (would dequantize to −8·s / −2·s if not ignored).
        let n_pad = 32;
        let mut q_weight = vec![0i32; 2 * n_pad];
        for c in 0..9 {
            q_weight[c] = 0x9999_9999u32 as i32;
            q_weight[n_pad + c] = -1;
        }
        // q_scale [2, 4]: column c's code is nibble c % 8 (low first) of word c / 8.
        // group 0: word 0 = 0x76543210 → code c for c < 8; word 1 = 0xF → column 8 code 15.
        // group 1: word 0 = 0 → code 0; word 1 = 0x5 → column 8 code 5.
        let q_scale = vec![0x7654_3210, 0xF, 0, 0, 0, 0x5, 0, 0];
        let (_d, w) = weights_of(
            "l",
            vec![
                ("q_weight", i32t(q_weight, &[2, n_pad])),
                ("q_invperm", i32t((0..24).collect(), &[24])),
                ("q_scale", i32t(q_scale, &[2, 4])),
                ("q_scale_max", f16t(&[1.0, 2.0], &[2])),
                ("q_groups", i16t(vec![4, 0, 2, 1], &[4])),
                ("bias", f16t(&[0.5; 9], &[9])),
            ],
        );
        let w = Exl2Weight::load(&w, "l", 24, 9).unwrap();
        assert_eq!(
            w.groups()[1],
            Exl2Group {
                bits: 2,
                first_row: 8,
                rows: 16,
                packed_row: 1
            }
        );
        let d = w.dequantize();
        for c in 0..9 {
            // group 0: (code+1)²·1/256 ; group 1: (code+1)²·2/256.
            let s0 = if c < 8 {
                ((c + 1) * (c + 1)) as f32 / 256.0
            } else {
                1.0
            };
            let s1 = if c < 8 {
                2.0 / 256.0
            } else {
                36.0 * 2.0 / 256.0
            };
            for k in 0..24 {
                assert_eq!(d[c * 24 + k], if k < 8 { s0 } else { s1 }, "c {c} k {k}");
            }
        }
        // forward with x = 1: 8·s0 + 16·s1 + 0.5.
        let mut out = vec![0.0; 9];
        w.forward(&[1.0; 24], 1, &mut out, false).unwrap();
        assert_eq!(out[8], 8.0 + 16.0 * 0.28125 + 0.5);
    }
}
