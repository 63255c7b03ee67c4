//! The main job on a bundled default: loads the tiny HF fixture models (or one model directory
//! given with `--model DIR`), runs a left-padded prefill and greedy decoding on the CPU through
//! the KV cache, prints per-layer timings and the tokens, and says whether the tokens and
//! logits match the HF transformers reference stored beside the fixture.
//!
//!     cargo run --release --example decode                 # every bundled fixture
//!     cargo run --release --example decode -- --model tests/fixtures/cohere2 --steps 8

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use paradec::{AttnParams, DType, Device, KvCache, Model, Result, Stream, Weights, Workspace};

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

struct Reference {
    weights: Weights,
}

impl Reference {
    fn open(dir: &Path) -> Option<Self> {
        Weights::from_files(&[dir.join("reference.safetensors")])
            .ok()
            .map(|weights| Reference { weights })
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.weights
            .get(name)
            .ok()
            .and_then(|t| t.as_i64().ok().map(<[i64]>::to_vec))
    }
    fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.weights
            .get(name)
            .ok()
            .and_then(|t| t.as_f32().ok().map(<[f32]>::to_vec))
    }
}

/// Runs one model; returns whether it matched its reference (true when there is none).
fn run(dir: &Path, steps: usize) -> Result<bool> {
    let t0 = Instant::now();
    let model = Model::load(dir)?;
    let a = &model.arch;
    println!(
        "== {} ({:?}, {} layers, hidden {}, {} heads / {} kv, loaded in {:.1} ms)",
        dir.display(),
        a.family,
        a.num_layers,
        a.hidden,
        a.heads,
        a.kv_heads,
        t0.elapsed().as_secs_f64() * 1e3
    );
    let reference = Reference::open(dir);
    // The prompt: the fixture's left-padded batch, or a fixed single prompt.
    let (batch, prompt, mask) = match reference
        .as_ref()
        .and_then(|r| Some((r.ints("input_ids")?, r.ints("step0.attention_mask")?)))
    {
        Some((ids, mask)) => (2, ids.iter().map(|&i| i as u32).collect::<Vec<_>>(), mask),
        None => {
            let ids: Vec<u32> = (0..8).map(|i| (i * 7 + 3) % a.vocab as u32).collect();
            (1, ids, vec![1; 8])
        }
    };
    let s0 = prompt.len() / batch;
    let mut cache = KvCache::for_model(a, batch, s0 + steps, DType::F32, Device::Cpu)?;
    let mut ws = Workspace::cpu();
    let mut mask_now = mask.clone();
    let mut ids = prompt.clone();
    let mut generated: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let mut layer_time = vec![Duration::ZERO; a.num_layers];
    let mut matched = true;
    let mut worst = 0.0f64;
    for step in 0..=steps {
        let q = if step == 0 { s0 } else { 1 };
        let slots = s0 + step;
        let params = AttnParams::with_past(batch, q, vec![slots - q; batch])
            .with_attention_mask(&mask_now, slots)?;
        let logits = model.forward_inspect(
            &Stream::Host,
            &ids,
            &params,
            Some(&mut cache),
            &[],
            &mut ws,
            false,
            &mut |r| {
                if step == 0 {
                    layer_time[r.layer] = r.elapsed;
                }
            },
        )?;
        let lv = logits.logits.f32_values()?;
        let v = a.vocab;
        if let Some(want) = reference
            .as_ref()
            .and_then(|r| r.floats(&format!("step{step}.logits")))
        {
            // Compare the last position of each sequence (never a pad).
            for b in 0..batch {
                let got = &lv[(b * q + q - 1) * v..(b * q + q) * v];
                let exp = &want[(b * q + q - 1) * v..(b * q + q) * v];
                let num: f64 = got
                    .iter()
                    .zip(exp)
                    .map(|(x, y)| ((x - y) as f64).powi(2))
                    .sum();
                let den: f64 = exp.iter().map(|y| (*y as f64).powi(2)).sum();
                let e = (num / den).sqrt();
                worst = worst.max(e);
                matched &= e <= 1e-4;
            }
        }
        ids = (0..batch)
            .map(|b| argmax(&lv[(b * q + q - 1) * v..(b * q + q) * v]))
            .collect();
        for (b, &t) in ids.iter().enumerate() {
            generated[b].push(t);
        }
        if let Some(want) = reference
            .as_ref()
            .and_then(|r| r.ints(&format!("step{}.input_ids", step + 1)))
        {
            let want: Vec<u32> = want.iter().map(|&i| i as u32).collect();
            matched &= want == ids;
        }
        // Extend each sequence's mask by the new token.
        mask_now = (0..batch)
            .flat_map(|b| {
                mask_now[b * slots..(b + 1) * slots]
                    .iter()
                    .copied()
                    .chain([1])
            })
            .collect();
    }
    for (l, t) in layer_time.iter().enumerate() {
        println!("  prefill layer {l:2}: {:8.1} µs", t.as_secs_f64() * 1e6);
    }
    for (b, g) in generated.iter().enumerate() {
        println!(
            "  sequence {b}: prompt {:?} → greedy {:?}",
            &prompt[b * s0..(b + 1) * s0],
            g
        );
    }
    match &reference {
        Some(_) => println!(
            "  HF reference: {} (worst logits relative error {worst:.2e}, tokens {})",
            if matched { "MATCH" } else { "MISMATCH" },
            if matched { "equal" } else { "or logits differ" }
        ),
        None => println!("  no reference.safetensors beside the model: nothing to compare"),
    }
    Ok(matched)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut model: Option<PathBuf> = None;
    let mut steps = 3;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => model = args.next().map(PathBuf::from),
            "--steps" => steps = args.next().and_then(|s| s.parse().ok()).unwrap_or(3),
            "-h" | "--help" => {
                println!("usage: decode [--model DIR] [--steps N]   (default: every model in tests/fixtures)");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}; try --help");
                return ExitCode::from(2);
            }
        }
    }
    let dirs: Vec<PathBuf> = match model {
        Some(d) => vec![d],
        None => {
            let root = std::env::var("PARADEC_FIXTURES")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
                });
            let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.join("config.json").exists())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        }
    };
    if dirs.is_empty() {
        eprintln!("no model directories found (set PARADEC_FIXTURES or pass --model DIR)");
        return ExitCode::from(2);
    }
    let mut all = true;
    for d in &dirs {
        match run(d, steps) {
            Ok(m) => all &= m,
            Err(e) => {
                eprintln!("{}: {e}", d.display());
                all = false;
            }
        }
    }
    println!(
        "{} model(s) checked: {}",
        dirs.len(),
        if all {
            "all match HF transformers"
        } else {
            "MISMATCH"
        }
    );
    if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
