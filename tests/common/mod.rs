//! Helpers shared by the integration tests: fixture lookup, HF references, temp dirs, a seeded
//! PRNG, error norms.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use paradec::layers::lora::Lora;
use paradec::quant::pack::{quantize_model_dir, save_tensors, Exl2Recipe, QuantSpec};
use paradec::quant::GptqConfig;
use paradec::{AttnParams, KvCache, Model, PagedTable, Stream, Workspace};
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

// ---- paged KV cache ----------------------------------------------------------------------------

/// One call of a schedule over a batch: each sequence's past length, the new tokens per
/// sequence, and (with left padding) the 0/1 attention mask [batch, max end].
#[derive(Debug, Clone)]
pub struct PagedStep {
    pub past: Vec<usize>,
    pub q_len: usize,
    pub mask01: Option<Vec<i64>>,
}

impl PagedStep {
    /// Positions each sequence reaches after the call.
    pub fn ends(&self) -> Vec<usize> {
        self.past.iter().map(|p| p + self.q_len).collect()
    }

    /// The call's parameters, without a block table.
    pub fn params(&self) -> AttnParams {
        let batch = self.past.len();
        let p = AttnParams::with_past(batch, self.q_len, self.past.clone());
        match &self.mask01 {
            Some(m) => p.with_attention_mask(m, m.len() / batch).unwrap(),
            None => p,
        }
    }
}

/// A schedule of calls over a batch of two: `steps` are (past of sequence 0, past of
/// sequence 1, new tokens). With `pads`, sequence b's first `pads[b]` slots are left padding
/// (masked out, positions shifted past them) and every call carries the mask.
pub fn paged_schedule(steps: &[(usize, usize, usize)], pads: Option<[usize; 2]>) -> Vec<PagedStep> {
    steps
        .iter()
        .map(|&(p0, p1, q_len)| {
            let past = vec![p0, p1];
            let ends = [p0 + q_len, p1 + q_len];
            let stride = ends[0].max(ends[1]);
            let mask01 = pads.map(|pads| {
                (0..2)
                    .flat_map(|b| (0..stride).map(move |j| i64::from(j >= pads[b] && j < ends[b])))
                    .collect()
            });
            PagedStep {
                past,
                q_len,
                mask01,
            }
        })
        .collect()
}

/// Batch 2 with different lengths: a prefill of 18 tokens (past the decode kernels' 16),
/// sequence 1 restarting with 3 new tokens (a rewind) while sequence 0 goes on, then decode
/// steps (one of 2 tokens) ending at 29 and 11 positions.
pub fn staggered_schedule() -> Vec<PagedStep> {
    paged_schedule(
        &[
            (0, 0, 18),
            (18, 0, 3),
            (21, 3, 1),
            (22, 4, 1),
            (23, 5, 2),
            (25, 7, 1),
            (26, 8, 3),
        ],
        None,
    )
}

/// Batch 2, left-padded: sequence 1's prompt has 2 pads; decode steps grow the mask; then
/// sequence 1 rewinds to 4 positions (different lengths under a mask).
pub fn padded_schedule() -> Vec<PagedStep> {
    paged_schedule(
        &[
            (0, 0, 5),
            (5, 5, 1),
            (6, 6, 2),
            (8, 8, 1),
            (9, 4, 1),
            (10, 5, 2),
        ],
        Some([0, 2]),
    )
}

/// Most positions any sequence of a schedule reaches.
pub fn schedule_len(schedule: &[PagedStep]) -> usize {
    schedule.iter().flat_map(|s| s.ends()).max().unwrap_or(0)
}

/// What a serving engine owns for a paged cache: a free list of pages (scrambled), and each
/// sequence's pages, added as it grows. Entries past a sequence's pages hold -1 (never read).
#[derive(Debug, Clone)]
pub struct Pager {
    pub page_size: usize,
    pub max_pages: usize,
    pub num_pages: usize,
    free: Vec<i32>,
    table: Vec<i32>,
    count: Vec<usize>,
}

impl Pager {
    /// A pool big enough for `schedule` at `page_size` (plus a few spare pages), pages handed
    /// out in a scrambled order drawn from `seed`.
    pub fn for_schedule(schedule: &[PagedStep], page_size: usize, seed: u64) -> Self {
        let batch = schedule[0].past.len();
        let max_pages = schedule_len(schedule).div_ceil(page_size) + 1;
        let num_pages = batch * max_pages + 3;
        let mut rng = Rng::new(seed);
        let mut free: Vec<i32> = (0..num_pages as i32).collect();
        for i in (1..free.len()).rev() {
            free.swap(i, rng.below(i + 1));
        }
        Pager {
            page_size,
            max_pages,
            num_pages,
            free,
            table: vec![-1; batch * max_pages],
            count: vec![0; batch],
        }
    }

    /// The block table of `step`: each sequence gets pages until its positions fit (pages are
    /// kept when a sequence rewinds).
    pub fn table_for(&mut self, step: &PagedStep) -> PagedTable {
        for (b, end) in step.ends().into_iter().enumerate() {
            while self.count[b] * self.page_size < end {
                let page = self.free.pop().expect("the pool holds the schedule");
                self.table[b * self.max_pages + self.count[b]] = page;
                self.count[b] += 1;
            }
        }
        PagedTable::new(
            self.page_size,
            self.max_pages,
            self.table.clone(),
            self.count.clone(),
        )
    }
}

/// Runs `schedule` through a whole model over `cache` (paged when `pager` is given: each call
/// then carries its block table), with token ids drawn from `seed`; returns each call's
/// logits.
pub fn model_schedule(
    model: &Model,
    s: &Stream,
    cache: &mut KvCache,
    ws: &mut Workspace,
    schedule: &[PagedStep],
    mut pager: Option<&mut Pager>,
    seed: u64,
) -> paradec::Result<Vec<Vec<f32>>> {
    let mut rng = Rng::new(seed);
    schedule
        .iter()
        .map(|step| {
            let mut p = step.params();
            if let Some(pg) = pager.as_deref_mut() {
                p = p.with_block_table(pg.table_for(step));
            }
            let ids: Vec<u32> = (0..p.tokens())
                .map(|_| rng.below(model.arch.vocab) as u32)
                .collect();
            Ok(values(&model.forward(s, &ids, &p, Some(cache), ws)?))
        })
        .collect()
}

/// Bytes of every layer's K and V pages of a cache stored in pages (to check that a refused
/// call wrote nothing).
pub fn cache_bytes(cache: &KvCache) -> Vec<Vec<u8>> {
    (0..cache.num_layers())
        .flat_map(|l| {
            let q = cache.quant_layer(l).unwrap();
            [&q.k, &q.v]
                .into_iter()
                .flat_map(|p| [Some(&p.codes), p.scales.as_ref()])
                .flatten()
                .map(|t| t.to_host().unwrap().host().unwrap().to_le_bytes())
                .collect::<Vec<_>>()
        })
        .collect()
}
