//! The device layout of a quantized weight, built once on the host from a loaded GPTQ or EXL2
//! weight (`QuantLayout`), and its copy on a device (`PreparedQuant`) that the CUDA kernels read.
//!
//! Layout (see `csrc/kernels/linear.h`, `paradec_qweight`): stored rows in tiles of 32, each tile
//! one bit width and one group; a group's rows are padded to a whole number of tiles (padding
//! rows multiply a zero activation). Tile t of column c is a bit stream of `bits` 32-bit words
//! `words[(word_row[t] + i)·np + c]`, row r at bits `[r·bits, r·bits + bits)` — for GPTQ and
//! EXL2 groups of whole tiles that is the checkpoint's own packing, so building the layout is a
//! copy of word rows; other groups are repacked value by value. Per group and column,
//! `sz = (scale, −zero·scale)` in f32, so that `w = q·scale − zero·scale = (q − zero)·scale`
//! exactly (both products are exact in f32). `row_src[j]` is the input feature of stored row j
//! (−1 for padding), absent when it is the identity.

use std::sync::Arc;

use super::{stream_get, QuantWeight};
use crate::tensor::{DType, Device, HostData, Tensor};
use crate::{Error, Result};

/// Rows per tile.
pub(crate) const TILE_ROWS: usize = 32;

/// A quantized weight in the device layout, in host memory.
#[derive(Debug, Clone)]
pub struct QuantLayout {
    /// K, the input features.
    pub k: usize,
    /// N, the output features.
    pub n: usize,
    /// N rounded up to 8.
    pub np: usize,
    /// Stored rows: `ntiles · 32`.
    pub kp: usize,
    /// Tiles of 32 stored rows.
    pub ntiles: usize,
    /// Groups (one scale and zero per group and column).
    pub groups: usize,
    /// Total packed word rows.
    pub word_rows: usize,
    /// The width of every tile, or 0 when they mix.
    pub bits: u32,
    /// `[word_rows, np]`.
    pub words: Vec<u32>,
    /// `[ntiles, 2]`: first word row, `group | bits << 24`.
    pub tiles: Vec<u32>,
    /// `[groups, np, 2]`: scale, −zero·scale.
    pub sz: Vec<f32>,
    /// `[kp]`: input feature of each stored row, −1 for padding; `None` for the identity.
    pub row_src: Option<Vec<i32>>,
}

/// One group of the source weight: width, rows (as source stored-row indices), the input
/// feature of each, and where a tile-aligned copy may read its words from. Borrows the source
/// weight's arrays (no copy of its codes).
struct SrcGroup<'a> {
    bits: u32,
    rows: usize,
    /// Input feature of the group's row i.
    feature: Box<dyn Fn(usize) -> usize + 'a>,
    /// Code of the group's row i in column c.
    code: Box<dyn Fn(usize, usize) -> u32 + 'a>,
    /// When the group's tile i is words `[first_word + i·bits, + bits)` of a `[_, ld]` source
    /// array: (first_word, ld).
    aligned: Option<(usize, usize)>,
    scale: Box<dyn Fn(usize) -> (f32, f32) + 'a>,
}

impl QuantLayout {
    /// Builds the layout of a loaded weight.
    pub fn new(w: &QuantWeight) -> Result<Self> {
        match w {
            QuantWeight::Gptq(g) => Self::from_gptq(g),
            QuantWeight::Exl2(e) => Self::from_exl2(e),
        }
    }

    fn from_gptq(w: &super::GptqWeight) -> Result<Self> {
        let (k, n) = (w.in_features(), w.out_features());
        let bits = w.bits();
        let gs = w.group_start();
        let qw = w.qweight();
        let perm = w.perm();
        let mut groups = Vec::new();
        for g in 0..w.groups() {
            let (a, b) = (gs[g], gs[g + 1]);
            let zs: Vec<(f32, f32)> = (0..n)
                .map(|c| {
                    let s = w.scales()[g * n + c].to_f32();
                    let z = w.zero(g, c) as f32;
                    (s, -(z * s))
                })
                .collect();
            groups.push(SrcGroup {
                bits,
                rows: b - a,
                feature: Box::new(move |i| perm.map_or(a + i, |p| p[a + i] as usize)),
                code: Box::new(move |i, c| {
                    stream_get(|wi| qw[wi * n + c] as u32, (a + i) * bits as usize, bits)
                }),
                aligned: (a * bits as usize)
                    .is_multiple_of(32)
                    .then_some((a * bits as usize / 32, n)),
                scale: Box::new(move |c| zs[c]),
            });
        }
        Self::build(k, n, &groups, w.qweight())
    }

    fn from_exl2(w: &super::Exl2Weight) -> Result<Self> {
        let (k, n) = (w.in_features(), w.out_features());
        let ld = w.padded_out_features();
        let qw = w.q_weight();
        let perm = w.q_perm();
        let mut groups = Vec::new();
        for (g, gr) in w.groups().iter().enumerate() {
            let half = (1u32 << (gr.bits - 1)) as f32;
            let zs: Vec<(f32, f32)> = (0..n)
                .map(|c| {
                    let s = w.scale(g, c);
                    (s, -(half * s))
                })
                .collect();
            let (first, packed, bits) = (gr.first_row, gr.packed_row, gr.bits);
            groups.push(SrcGroup {
                bits,
                rows: gr.rows,
                feature: Box::new(move |i| perm[first + i] as usize),
                code: Box::new(move |i, c| {
                    stream_get(
                        |wi| qw[(packed + wi) * ld + c] as u32,
                        i * bits as usize,
                        bits,
                    )
                }),
                aligned: Some((packed, ld)),
                scale: Box::new(move |c| zs[c]),
            });
        }
        Self::build(k, n, &groups, w.q_weight())
    }

    fn build(k: usize, n: usize, groups: &[SrcGroup], src: &[i32]) -> Result<Self> {
        let np = n.div_ceil(8) * 8;
        let ntiles: usize = groups.iter().map(|g| g.rows.div_ceil(TILE_ROWS)).sum();
        let word_rows: usize = groups
            .iter()
            .map(|g| g.rows.div_ceil(TILE_ROWS) * g.bits as usize)
            .sum();
        if ntiles == 0 {
            return Err(Error::bad_input("quantized weight: no rows"));
        }
        if groups.len() >= 1 << 24 {
            return Err(Error::unsupported(format!(
                "quantized weight: {} groups (the device layout holds up to 2^24)",
                groups.len()
            )));
        }
        let kp = ntiles * TILE_ROWS;
        let mut words = vec![0u32; word_rows * np];
        let mut tiles = Vec::with_capacity(ntiles * 2);
        let mut sz = vec![0f32; groups.len() * np * 2];
        let mut row_src = vec![-1i32; kp];
        let mut all_bits = groups.first().map_or(0, |g| g.bits);
        let (mut wr, mut j0) = (0usize, 0usize);
        for (gi, g) in groups.iter().enumerate() {
            if g.bits != all_bits {
                all_bits = 0;
            }
            for c in 0..n {
                let (s, z) = (g.scale)(c);
                sz[(gi * np + c) * 2] = s;
                sz[(gi * np + c) * 2 + 1] = z;
            }
            let b = g.bits as usize;
            for t in 0..g.rows.div_ceil(TILE_ROWS) {
                tiles.push(wr as u32);
                tiles.push(gi as u32 | (g.bits << 24));
                let r0 = t * TILE_ROWS;
                let full = r0 + TILE_ROWS <= g.rows;
                for r in r0..(r0 + TILE_ROWS).min(g.rows) {
                    row_src[j0 + r - r0] = (g.feature)(r) as i32;
                }
                match g.aligned {
                    Some((first, ld)) if full && (first + (t + 1) * b) * ld <= src.len() => {
                        for i in 0..b {
                            let s = (first + t * b + i) * ld;
                            let d = (wr + i) * np;
                            for c in 0..n {
                                words[d + c] = src[s + c] as u32;
                            }
                        }
                    }
                    _ => {
                        for r in r0..(r0 + TILE_ROWS).min(g.rows) {
                            let pos = (r - r0) * b;
                            for c in 0..n {
                                let q = (g.code)(r, c) as u64;
                                let (w, sh) = (pos / 32, pos % 32);
                                let v = q << sh;
                                words[(wr + w) * np + c] |= v as u32;
                                if sh + b > 32 {
                                    words[(wr + w + 1) * np + c] |= (v >> 32) as u32;
                                }
                            }
                        }
                    }
                }
                wr += b;
                j0 += TILE_ROWS;
            }
        }
        let identity = kp == k && row_src.iter().enumerate().all(|(j, &s)| s == j as i32);
        Ok(QuantLayout {
            k,
            n,
            np,
            kp,
            ntiles,
            groups: groups.len(),
            word_rows,
            bits: all_bits,
            words,
            tiles,
            sz,
            row_src: (!identity).then_some(row_src),
        })
    }

    /// Tile t's first word row, group and width.
    pub fn tile(&self, t: usize) -> (usize, usize, u32) {
        let meta = self.tiles[2 * t + 1];
        (
            self.tiles[2 * t] as usize,
            (meta & 0xFF_FFFF) as usize,
            meta >> 24,
        )
    }

    /// The input feature of stored row j (`None` for padding).
    pub fn feature(&self, j: usize) -> Option<usize> {
        match &self.row_src {
            None => Some(j),
            Some(r) => usize::try_from(r[j]).ok(),
        }
    }

    /// Stored row j, column c: (code, scale, −zero·scale).
    pub fn entry(&self, j: usize, c: usize) -> (u32, f32, f32) {
        let (wr, g, bits) = self.tile(j / TILE_ROWS);
        let q = stream_get(
            |w| self.words[(wr + w) * self.np + c],
            (j % TILE_ROWS) * bits as usize,
            bits,
        );
        let i = (g * self.np + c) * 2;
        (q, self.sz[i], self.sz[i + 1])
    }

    /// Bytes of the arrays the kernels read.
    pub fn bytes(&self) -> usize {
        (self.words.len()
            + self.tiles.len()
            + self.sz.len()
            + self.row_src.as_ref().map_or(0, Vec::len))
            * 4
    }
}

/// A quantized weight prepared on a device for one compute dtype (f16 or bf16).
#[derive(Debug)]
pub struct PreparedQuant {
    /// K, the input features.
    pub k: usize,
    /// N, the output features.
    pub n: usize,
    /// N rounded up to 8 (the stored width).
    pub np: usize,
    /// Stored rows: `ntiles · 32`.
    pub kp: usize,
    /// Tiles of 32 stored rows.
    pub ntiles: usize,
    /// Groups (one scale and zero per group and column).
    pub groups: usize,
    /// Packed word rows.
    pub word_rows: usize,
    /// The width of every tile, 0 when they mix.
    pub bits: u32,
    /// I32 `[word_rows, np]`.
    pub words: Tensor,
    /// I32 `[ntiles, 2]`.
    pub tiles: Tensor,
    /// F32 `[groups, np, 2]`.
    pub sz: Tensor,
    /// I32 `[kp]`.
    pub row_src: Option<Tensor>,
    /// `[N]` of the compute dtype.
    pub bias: Option<Tensor>,
    /// The compute dtype (f16 or bf16).
    pub dtype: DType,
    /// The source weight (host memory, shared with the host form it came from), for moving
    /// back and dequantizing.
    pub host: Arc<QuantWeight>,
}

/// An I32 tensor of `v`'s bits on `device`, copied straight from `v` on a GPU (no host
/// conversion: the layouts of 7B models are gigabytes).
fn i32_tensor(v: &[u32], shape: &[usize], device: Device) -> Result<Tensor> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(ord) => {
            // SAFETY: u32 has no padding and u8 has alignment 1: the same bytes, read-only
            // (little-endian, as on every host CUDA runs on).
            let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), 4 * v.len()) };
            Tensor::from_device_buffer(
                crate::cuda::DeviceBuffer::from_host(ord, bytes)?,
                DType::I32,
                shape,
            )
        }
        _ => Tensor::from_host(HostData::I32(v.iter().map(|&x| x as i32).collect()), shape)?
            .to_device(device),
    }
}

impl PreparedQuant {
    /// Builds the layout and copies it to `device`; `dtype` is the activations' (f16 or bf16).
    /// Keeps a copy of `w` (see `shared` to keep the caller's instead).
    pub fn new(w: &QuantWeight, device: Device, dtype: DType) -> Result<Self> {
        Self::shared(Arc::new(w.clone()), device, dtype)
    }

    /// As `new`, keeping `w` itself as the host form (no copy of the packed codes).
    pub fn shared(w: Arc<QuantWeight>, device: Device, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F16 | DType::BF16) {
            return Err(Error::bad_input(format!(
                "quantized weights compute in f16 or bf16 on a device, not {dtype}"
            )));
        }
        let l = QuantLayout::new(&w)?;
        let words = i32_tensor(&l.words, &[l.word_rows, l.np], device)?;
        let tiles = i32_tensor(&l.tiles, &[l.ntiles, 2], device)?;
        let sz = Tensor::from_f32(l.sz, &[l.groups, l.np, 2])?.to_device(device)?;
        let row_src = match l.row_src {
            Some(r) => Some(Tensor::from_host(HostData::I32(r), &[l.kp])?.to_device(device)?),
            None => None,
        };
        let bias = match w.bias() {
            Some(b) => Some(Tensor::from_f32_as(b, &[l.n], dtype)?.to_device(device)?),
            None => None,
        };
        Ok(PreparedQuant {
            k: l.k,
            n: l.n,
            np: l.np,
            kp: l.kp,
            ntiles: l.ntiles,
            groups: l.groups,
            word_rows: l.word_rows,
            bits: l.bits,
            words,
            tiles,
            sz,
            row_src,
            bias,
            dtype,
            host: w,
        })
    }

    /// The device the arrays live on.
    pub fn device(&self) -> Device {
        self.words.device()
    }

    /// Bytes held on the device.
    pub fn device_bytes(&self) -> usize {
        self.words.size_bytes()
            + self.tiles.size_bytes()
            + self.sz.size_bytes()
            + self.row_src.as_ref().map_or(0, Tensor::size_bytes)
            + self.bias.as_ref().map_or(0, Tensor::size_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::pack::{exl2_weight, gptq_weight, Exl2Recipe};
    use crate::quant::GptqConfig;

    fn rand_w(n: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n * k)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every stored entry of the layout equals the loader's dequantized weight for the same input
    /// feature and column, exactly (q·s − z·s evaluated with one rounding, as the kernels' FMA),
    /// and every input feature appears exactly once.
    fn check(w: &QuantWeight) {
        let l = QuantLayout::new(w).unwrap();
        let (k, n) = (l.k, l.n);
        assert_eq!(l.kp % TILE_ROWS, 0);
        let mut seen = vec![false; k];
        let dense = w.dequantize();
        for j in 0..l.kp {
            let Some(f) = l.feature(j) else { continue };
            assert!(!seen[f], "feature {f} twice");
            seen[f] = true;
            for c in 0..n {
                let (q, s, nz) = l.entry(j, c);
                let v = (q as f64 * s as f64 + nz as f64) as f32;
                assert_eq!(v, dense[c * k + f], "row {j} col {c}");
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn layout_matches_loader_gptq() {
        for (bits, gs, act, v2, n, k) in [
            (4, 128, false, false, 24, 256),
            (4, 128, true, false, 17, 256),
            (3, 32, false, true, 9, 96),
            (2, 64, true, true, 8, 192),
            (8, -1, false, false, 13, 40),
            (3, 48, true, false, 11, 150),
            (4, 7, false, false, 5, 33),
        ] {
            let cfg = GptqConfig {
                bits,
                group_size: gs,
                desc_act: act,
                sym: false,
                checkpoint_format_v2: v2,
            };
            let w = gptq_weight(&rand_w(n, k, bits as u64), n, k, &cfg, None).unwrap();
            check(&w);
            let l = QuantLayout::new(&w).unwrap();
            // Aligned groups without act-order need no gather at all.
            if !act && gs > 0 && gs % 32 == 0 && k.is_multiple_of(32) {
                assert!(l.row_src.is_none());
                assert_eq!(l.bits, bits);
            }
        }
    }

    #[test]
    fn layout_matches_loader_exl2() {
        let recipes = [
            vec![(4, 128, 1.0)],
            vec![
                (8, 32, 0.1),
                (6, 64, 0.2),
                (5, 32, 0.2),
                (4, 64, 0.2),
                (3, 32, 0.2),
                (2, 32, 1.0),
            ],
            vec![(6, 16, 0.5), (3, 32, 1.0)],
        ];
        for (i, parts) in recipes.iter().enumerate() {
            for (n, k) in [(40, 256), (7, 200)] {
                let r = Exl2Recipe {
                    parts: parts.clone(),
                    permute: i != 0,
                };
                let w = exl2_weight(&rand_w(n, k, i as u64), n, k, &r, None).unwrap();
                check(&w);
            }
        }
    }
}
