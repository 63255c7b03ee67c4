//! Rotary tables: the inverse frequencies and attention factor of each rope type, computed as
//! HF transformers' `modeling_rope_utils` does (default, linear, dynamic NTK, YaRN).

use crate::vocab::RopeStyle;
use crate::{Error, Result};

/// How a rope type rescales the default frequencies.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// The default frequencies.
    None,
    /// Positions divided by `factor` (inv_freq / factor).
    Linear {
        /// Divisor of the frequencies.
        factor: f32,
    },
    /// Dynamic NTK: θ grows with the current length once it exceeds `original_max`.
    Dynamic {
        /// Growth of θ beyond the original length.
        factor: f32,
        /// The length the model was trained at.
        original_max: usize,
    },
    /// YaRN: blended interpolation/extrapolation and an attention factor on cos and sin.
    Yarn {
        /// Context extension factor.
        factor: f32,
        /// The length the model was trained at.
        original_max: usize,
        /// The factor on cos and sin, when given; derived from `factor` otherwise.
        attention_factor: Option<f32>,
        /// Rotations below which dimensions extrapolate.
        beta_fast: f32,
        /// Rotations above which dimensions interpolate.
        beta_slow: f32,
        /// DeepSeek-style mscale, when given.
        mscale: Option<f32>,
        /// DeepSeek-style mscale over all dimensions, when given.
        mscale_all_dim: Option<f32>,
        /// Whether the correction range is truncated to whole dimensions.
        truncate: bool,
    },
}

/// One rotary table of a model: pairing style, width, θ and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// How pairs of features are rotated.
    pub style: RopeStyle,
    /// Rotated features per head (even, ≤ head_dim).
    pub rot_dim: usize,
    /// The base θ of the frequencies.
    pub theta: f32,
    /// The rope type's rescaling.
    pub scaling: RopeScaling,
}

/// The frequencies of one forward call.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeFreqs {
    /// The rot_dim / 2 inverse frequencies.
    pub inv_freq: Vec<f32>,
    /// The factor on cos and sin (YaRN's attention factor; 1 otherwise).
    pub attn_factor: f32,
}

fn default_inv_freq(theta: f32, dim: usize) -> Vec<f32> {
    // HF: 1 / base ** (arange(0, dim, 2).float() / dim), in f32.
    (0..dim / 2)
        .map(|j| 1.0 / theta.powf((2 * j) as f32 / dim as f32))
        .collect()
}

impl RopeConfig {
    /// Checks the width against `head_dim` and every scalar for finiteness and range.
    pub fn validate(&self, head_dim: usize) -> Result<()> {
        if self.rot_dim == 0 || !self.rot_dim.is_multiple_of(2) || self.rot_dim > head_dim {
            return Err(Error::bad_input(format!(
                "rotary width {} must be even, positive and at most head_dim {head_dim}",
                self.rot_dim
            )));
        }
        if !(self.theta.is_finite() && self.theta > 1.0) {
            return Err(Error::bad_input(format!(
                "rope_theta {} must be finite and > 1",
                self.theta
            )));
        }
        let factor_ok = |f: f32| f.is_finite() && f > 0.0;
        match &self.scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor }
            | RopeScaling::Dynamic { factor, .. }
            | RopeScaling::Yarn { factor, .. } => {
                if !factor_ok(*factor) {
                    return Err(Error::bad_input(format!(
                        "rope scaling factor {factor} must be finite and > 0"
                    )));
                }
            }
        }
        if let RopeScaling::Dynamic {
            original_max: 0, ..
        }
        | RopeScaling::Yarn {
            original_max: 0, ..
        } = self.scaling
        {
            return Err(Error::bad_input(
                "rope scaling needs max_position_embeddings > 0",
            ));
        }
        Ok(())
    }

    /// Whether frequencies depend on the sequence length (so a cached decode differs from a
    /// full recompute, as in HF).
    pub fn is_dynamic(&self) -> bool {
        matches!(self.scaling, RopeScaling::Dynamic { .. })
    }

    /// Frequencies for a call whose largest position is `max_pos` (only dynamic NTK uses it).
    pub fn freqs(&self, max_pos: i64) -> RopeFreqs {
        let dim = self.rot_dim;
        match &self.scaling {
            RopeScaling::None => RopeFreqs {
                inv_freq: default_inv_freq(self.theta, dim),
                attn_factor: 1.0,
            },
            RopeScaling::Linear { factor } => RopeFreqs {
                inv_freq: default_inv_freq(self.theta, dim)
                    .into_iter()
                    .map(|f| f / factor)
                    .collect(),
                attn_factor: 1.0,
            },
            RopeScaling::Dynamic {
                factor,
                original_max,
            } => {
                // HF's dynamic_rope_update: seq_len = max(position_ids) + 1; the original
                // frequencies while seq_len ≤ original_max, else θ' = θ·((f·L/L₀) − (f − 1))^(d/(d−2)).
                let seq_len = (max_pos + 1).max(0) as f64;
                let l0 = *original_max as f64;
                if seq_len <= l0 {
                    return RopeFreqs {
                        inv_freq: default_inv_freq(self.theta, dim),
                        attn_factor: 1.0,
                    };
                }
                let f = *factor as f64;
                let base = self.theta as f64
                    * ((f * seq_len / l0) - (f - 1.0)).powf(dim as f64 / (dim as f64 - 2.0));
                RopeFreqs {
                    inv_freq: default_inv_freq(base as f32, dim),
                    attn_factor: 1.0,
                }
            }
            RopeScaling::Yarn {
                factor,
                original_max,
                attention_factor,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                let get_mscale = |scale: f32, m: f32| {
                    if scale <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * scale.ln() + 1.0
                    }
                };
                let attn = attention_factor.unwrap_or(match (mscale, mscale_all_dim) {
                    (Some(m), Some(ma)) if *m != 0.0 && *ma != 0.0 => {
                        get_mscale(*factor, *m) / get_mscale(*factor, *ma)
                    }
                    _ => get_mscale(*factor, 1.0),
                });
                let base = self.theta as f64;
                let correction_dim = |rot: f64| {
                    (dim as f64 * (*original_max as f64 / (rot * 2.0 * std::f64::consts::PI)).ln())
                        / (2.0 * base.ln())
                };
                let (mut low, mut high) = (
                    correction_dim(*beta_fast as f64),
                    correction_dim(*beta_slow as f64),
                );
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0) as f32;
                let mut high = high.min(dim as f64 - 1.0) as f32;
                if low == high {
                    high += 0.001;
                }
                let extra = default_inv_freq(self.theta, dim);
                let inv_freq = extra
                    .iter()
                    .enumerate()
                    .map(|(j, &e)| {
                        let ramp = ((j as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation_factor = 1.0 - ramp;
                        let interp = e / factor;
                        interp * (1.0 - extrapolation_factor) + e * extrapolation_factor
                    })
                    .collect();
                RopeFreqs {
                    inv_freq,
                    attn_factor: attn,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scaling: RopeScaling) -> RopeConfig {
        RopeConfig {
            style: RopeStyle::Half,
            rot_dim: 4,
            theta: 10000.0,
            scaling,
        }
    }

    #[test]
    fn default_and_linear_by_hand() {
        // dim 4: inv_freq = [1, 10000^-0.5] = [1, 0.01]
        let f = cfg(RopeScaling::None).freqs(0);
        assert_eq!(f.inv_freq.len(), 2);
        assert!((f.inv_freq[0] - 1.0).abs() < 1e-7 && (f.inv_freq[1] - 0.01).abs() < 1e-7);
        let f = cfg(RopeScaling::Linear { factor: 4.0 }).freqs(0);
        assert!((f.inv_freq[0] - 0.25).abs() < 1e-7 && (f.inv_freq[1] - 0.0025).abs() < 1e-8);
    }

    #[test]
    fn dynamic_ntk_by_hand() {
        let c = cfg(RopeScaling::Dynamic {
            factor: 2.0,
            original_max: 8,
        });
        // Within the original length: unchanged.
        assert_eq!(c.freqs(7), cfg(RopeScaling::None).freqs(0));
        // Max position 15 → L = 16: base = 10000 · (2·16/8 − 1)^(4/2) = 10000 · 9 = 90000,
        // inv_freq = [1, 1/300].
        let f = c.freqs(15);
        assert!((f.inv_freq[1] - 1.0 / 300.0).abs() < 1e-7, "{f:?}");
        assert!(c.is_dynamic());
    }

    #[test]
    fn yarn_by_hand() {
        // dim 4, θ 10000, factor 4, L₀ 64, β_fast 32, β_slow 1.
        // correction_dim(r) = 4·ln(64/(2πr)) / (2 ln 10000):
        //   r=32: ln(0.3183)=−1.1447 → −0.2486 → floor −1 → clamp 0
        //   r=1:  ln(10.186)=2.3210  → 0.5040 → ceil 1
        // ramp over j∈{0,1} with low 0, high 1: [0, 1] → extrapolation factor [1, 0]:
        // j=0 keeps 1 (extrapolated), j=1 is interpolated 0.01/4 = 0.0025.
        // attention factor = 0.1·ln 4 + 1 = 1.1386294.
        let c = cfg(RopeScaling::Yarn {
            factor: 4.0,
            original_max: 64,
            attention_factor: None,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: None,
            mscale_all_dim: None,
            truncate: true,
        });
        let f = c.freqs(0);
        assert!((f.inv_freq[0] - 1.0).abs() < 1e-7, "{f:?}");
        assert!((f.inv_freq[1] - 0.0025).abs() < 1e-8, "{f:?}");
        assert!((f.attn_factor - 1.138_629_4).abs() < 1e-6);
    }

    #[test]
    fn validation_names_the_setting() {
        let mut c = cfg(RopeScaling::None);
        c.rot_dim = 5;
        assert!(c
            .validate(8)
            .unwrap_err()
            .to_string()
            .contains("rotary width 5"));
        let c = cfg(RopeScaling::Linear { factor: -1.0 });
        assert!(c.validate(8).unwrap_err().to_string().contains("factor"));
    }
}
