//! Helpers shared by the integration tests: fixture lookup, HF references, temp dirs, a seeded
//! PRNG, error norms.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use paradec::layers::lora::Lora;
use paradec::quant::pack::{quantize_model_dir, save_tensors, Exl2Recipe, QuantSpec};
use paradec::quant::GptqConfig;
use paradec::{AttnParams, KvCache, Model, Stream, Workspace};
use paradec::{Tensor, Weights};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "paradec-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64* — small, seeded, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Weights with a spread of magnitudes per column and a few outliers.
    pub fn weights(&mut self, n: usize, k: usize) -> Vec<f32> {
        let col_scale: Vec<f32> = (0..n).map(|_| 0.05 + self.uniform().abs()).collect();
        (0..n * k)
            .map(|i| {
                let outlier = if self.below(50) == 0 { 4.0 } else { 1.0 };
                self.uniform() * col_scale[i / k] * outlier
            })
            .collect()
    }
    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.uniform()).collect()
    }
    pub fn perm(&mut self, k: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..k).collect();
        for i in (1..k).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// Saves named tensors to `dir/model.safetensors` and maps the file.
pub fn save_and_map(dir: &TempDir, tensors: &[(String, Tensor)]) -> Weights {
    let path = dir.path().join("model.safetensors");
    save_tensors(&path, tensors).unwrap();
    Weights::from_files(&[path]).unwrap()
}

/// `x[m, K] · Wᵀ + bias` with f64 accumulation; `w` is `[N, K]`.
pub fn dense_ref(
    w: &[f32],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for c in 0..n {
            let mut s = 0f64;
            for j in 0..k {
                s += x[i * k + j] as f64 * w[c * k + j] as f64;
            }
            if let Some(b) = bias {
                s += b[c] as f64;
            }
            out[i * n + c] = s as f32;
        }
    }
    out
}

/// max |a − b| / max |b| (b the reference).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let den = b
        .iter()
        .map(|y| y.abs() as f64)
        .fold(0.0, f64::max)
        .max(1e-30);
    num / den
}

/// The fixtures folder: `PARADEC_FIXTURES`, else `tests/fixtures` under the crate root (from
/// cargo's runtime `CARGO_MANIFEST_DIR`), else relative to the working directory.
pub fn fixtures_dir() -> PathBuf {
    if let Ok(p) = std::env::var("PARADEC_FIXTURES") {
        return PathBuf::from(p);
    }
    if let Ok(root) = std::env::var("CARGO_MANIFEST_DIR") {
        let p = PathBuf::from(root).join("tests/fixtures");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("tests/fixtures")
}

pub fn fixture(variant: &str) -> PathBuf {
    fixtures_dir().join(variant)
}

pub fn reference(variant: &str) -> Weights {
    Weights::from_files(&[fixture(variant).join("reference.safetensors")])
        .expect("reference.safetensors")
}

pub fn i64s(w: &Weights, name: &str) -> (Vec<i64>, Vec<usize>) {
    let t = w.get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (t.as_i64().unwrap().to_vec(), t.shape().to_vec())
}

/// ‖a − b‖ / ‖b‖ over the rows where `keep[row]`, rows of `cols` values.
pub fn rel_err_rows(a: &[f32], b: &[f32], cols: usize, keep: &[bool]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    assert_eq!(a.len(), keep.len() * cols, "row mask length");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (r, &k) in keep.iter().enumerate() {
        if !k {
            continue;
        }
        for c in 0..cols {
            let (x, y) = (a[r * cols + c] as f64, b[r * cols + c] as f64);
            num += (x - y) * (x - y);
            den += y * y;
        }
    }
    assert!(den > 0.0, "reference is all zeros on kept rows");
    (num / den).sqrt()
}

pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_host().unwrap().f32_values().unwrap().into_owned()
}

/// One `#[test]` per fixture model, each calling `$check(variant_name)`.
#[macro_export]
macro_rules! fixture_tests {
    ($check:ident) => {
        $crate::fixture_tests!($check: gptj, gpt_neox, gpt_neox_gelu_fast, phi, phi_qk_layernorm,
            falcon_7b_mqa, falcon_new_2ln_gqa, falcon_new_1ln, cohere, cohere2);
    };
    ($check:ident: $($name:ident),*) => {
        $( #[test] fn $name() { $check(stringify!($name)); } )*
    };
}

/// One step's logits, per-layer hidden states and which query rows are not padding.
pub type StepOut = (Vec<f32>, Vec<Vec<f32>>, Vec<bool>);

/// Runs the fixture's 4 steps with `loras` active; returns per step (logits, per-layer hidden).
pub fn run_fixture_steps(model: &Model, variant: &str, loras: &[&Lora]) -> Vec<StepOut> {
    run_fixture_steps_on(model, variant, loras, &Stream::Host)
}

/// As `run_fixture_steps`, on the model's device and dtype (cache and workspace there too),
/// queued on `s`.
pub fn run_fixture_steps_on(
    model: &Model,
    variant: &str,
    loras: &[&Lora],
    s: &Stream,
) -> Vec<StepOut> {
    run_fixture_steps_with(model, variant, loras, s, true)
}

/// As `run_fixture_steps_on`; with `capture` false no intermediates are asked for (on a
/// device the block then takes its fused path) and the per-layer lists stay empty.
pub fn run_fixture_steps_with(
    model: &Model,
    variant: &str,
    loras: &[&Lora],
    s: &Stream,
    capture: bool,
) -> Vec<StepOut> {
    let r = reference(variant);
    let (dev, dt) = (model.device(), model.dtype());
    let mut cache = KvCache::for_model(&model.arch, 2, 10, dt, dev).unwrap();
    // A planned workspace on a device (the fixtures' steps hold at most 2 × 16 tokens).
    let mut ws = Workspace::for_model(&model.arch, 32, 10, dev, dt).unwrap();
    (0..4)
        .map(|t| {
            let (ids, shape) = i64s(&r, &format!("step{t}.input_ids"));
            let (mask, mshape) = i64s(&r, &format!("step{t}.attention_mask"));
            let (q, slots) = (shape[1], mshape[1]);
            let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
            let p = AttnParams::with_past(2, q, vec![slots - q; 2])
                .with_attention_mask(&mask, slots)
                .unwrap();
            let keep: Vec<bool> = (0..2)
                .flat_map(|b| (0..q).map(move |i| (b, i)))
                .map(|(b, i)| mask[b * slots + slots - q + i] == 1)
                .collect();
            let mut hidden = Vec::new();
            let logits = model
                .forward_inspect(
                    s,
                    &ids,
                    &p,
                    Some(&mut cache),
                    loras,
                    &mut ws,
                    capture,
                    &mut |rep| {
                        if let Some(i) = rep.interm {
                            hidden.push(values(&i.hidden_states))
                        }
                    },
                )
                .unwrap_or_else(|e| panic!("{variant} step {t}: {e}"));
            (values(&logits.logits), hidden, keep)
        })
        .collect()
}

/// Decoder-layer projections only: not embeddings, heads, or Cohere's 2-D q/k norm weights.
pub fn is_projection(name: &str) -> bool {
    (name.contains(".layers.") || name.contains(".h.")) && !name.contains("norm")
}

pub fn gptq(bits: u32, group_size: i64, desc_act: bool, sym: bool, v2: bool) -> QuantSpec {
    QuantSpec::Gptq(GptqConfig {
        bits,
        group_size,
        desc_act,
        sym,
        checkpoint_format_v2: v2,
    })
}

/// Quantizes a fixture into `dst` (schemes: gptq4_act_order, gptq8, gptq3, exl2_mix). EXL2 runs three passes so that attention, MLP-input and
/// MLP-output projections get different mixes and the model uses every width.
pub fn quantize_fixture(variant: &str, scheme: &str, dst: &Path) -> Vec<String> {
    let src = fixture(variant);
    let mut done = Vec::new();
    let mut one = |src: &Path, dst: &Path, spec: &QuantSpec, which: &dyn Fn(&str) -> bool| {
        done.extend(
            quantize_model_dir(src, dst, spec, which)
                .unwrap_or_else(|e| panic!("{variant} {scheme}: {e}")),
        );
    };
    match scheme {
        "gptq4_act_order" => one(&src, dst, &gptq(4, 32, true, false, false), &is_projection),
        "gptq8" => one(&src, dst, &gptq(8, -1, false, true, true), &is_projection),
        "gptq3" => one(&src, dst, &gptq(3, 32, false, false, true), &is_projection),
        "exl2_mix" => {
            let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let attn =
                |n: &str| is_projection(n) && (n.contains("attn") || n.contains("attention"));
            let mlp_in = |n: &str| {
                is_projection(n)
                    && ["fc_in", "fc1", "dense_h_to_4h", "gate_proj", "up_proj"]
                        .iter()
                        .any(|m| n.contains(m))
            };
            let mlp_out = |n: &str| {
                is_projection(n)
                    && ["fc_out", "fc2", "dense_4h_to_h", "down_proj"]
                        .iter()
                        .any(|m| n.contains(m))
            };
            let recipe = |parts: Vec<(u32, usize, f64)>| {
                QuantSpec::Exl2(Exl2Recipe {
                    parts,
                    permute: true,
                })
            };
            one(
                &src,
                t1.path(),
                &recipe(vec![(8, 32, 0.5), (6, 32, 0.5)]),
                &attn,
            );
            one(
                t1.path(),
                t2.path(),
                &recipe(vec![(5, 32, 0.5), (4, 32, 0.5)]),
                &mlp_in,
            );
            one(
                t2.path(),
                dst,
                &recipe(vec![(3, 32, 0.5), (2, 16, 0.5)]),
                &mlp_out,
            );
        }
        other => panic!("unknown scheme {other}"),
    }
    done
}
