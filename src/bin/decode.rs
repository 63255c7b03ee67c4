//! The main job on a bundled default: loads the tiny HF fixture models (or one model directory
//! given with `--model DIR`), runs a left-padded prefill and greedy decoding through the KV
//! cache, prints per-layer timings, throughput and the tokens, and says whether the tokens and
//! logits match the HF transformers reference stored beside the fixture.
//!
//!     cargo run --release --bin decode                 # every bundled fixture
//!     cargo run --release --bin decode -- --model tests/fixtures/cohere2 --steps 8

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use paradec::{
    AttnParams, DType, Device, Error, KvCache, Model, Result, Stream, Weights, Workspace,
};

const HELP: &str = "\
decode: prefill + greedy decoding of paradec's bundled tiny models (or one model directory),
checked against the HF transformers reference stored beside each fixture.

usage: decode [--model DIR] [--steps N] [--device cpu|cuda[:I]] [--dtype f16|bf16] [--show N]

  --model DIR     one model directory (config.json + safetensors; reference.safetensors, if
                  present, is compared). Default: every model under $PARADEC_FIXTURES, else
                  tests/fixtures in the current directory, else this crate's tests/fixtures.
  --steps N       greedy decode steps after the prefill (default 3). Refused when the prompt
                  plus N exceeds the model's max_position_embeddings.
  --device D      cpu (default) or cuda / cuda:I (a build with the `cuda` feature:
                  cargo run --release --features cuda --bin decode -- --device cuda). On a GPU
                  the logits are compared against HF's fp32 reference within the dtype's
                  budget (f16 1e-2, bf16 4e-2), the decode steps are fed HF's tokens, and a
                  greedy token that parts from HF's where HF's top two logits are closer than
                  that budget is reported as a near tie, not a mismatch.
  --dtype T       the GPU's compute dtype: f16 (default) or bf16.
  --show N        tokens printed per list before it is shortened with … (default 16).
  -h, --help      this text.
";

/// The command line, parsed.
#[derive(Debug, PartialEq)]
struct Args {
    model: Option<PathBuf>,
    steps: usize,
    device: Device,
    dtype: DType,
    show: usize,
}

/// Parses the arguments after the program name; an error says what was wrong. `Ok(None)`
/// means `--help`.
fn parse_args(args: &[String]) -> std::result::Result<Option<Args>, String> {
    let mut out = Args {
        model: None,
        steps: 3,
        device: Device::Cpu,
        dtype: DType::F16,
        show: 16,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| format!("{flag} needs a value; try --help"))
        };
        match a.as_str() {
            "--model" => out.model = Some(PathBuf::from(value("--model")?)),
            "--steps" => out.steps = count("--steps", value("--steps")?)?,
            "--show" => out.show = count("--show", value("--show")?)?,
            "--device" => out.device = device(value("--device")?)?,
            "--dtype" => {
                out.dtype = match value("--dtype")?.as_str() {
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    v => return Err(format!("--dtype takes f16 or bf16, got {v:?}")),
                }
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(Some(out))
}

fn count(flag: &str, v: &str) -> std::result::Result<usize, String> {
    v.parse::<usize>()
        .map_err(|_| format!("{flag} takes a whole number ≥ 0, got {v:?}"))
}

fn device(v: &str) -> std::result::Result<Device, String> {
    match v {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => v
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("--device takes cpu, cuda or cuda:I, got {v:?}")),
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// A token list, shortened to its first and last `show / 2` entries when longer than `show`.
fn shorten(tokens: &[u32], show: usize) -> String {
    if tokens.len() <= show.max(2) {
        return format!("{tokens:?}");
    }
    let half = show.max(2) / 2;
    let head: Vec<String> = tokens[..half].iter().map(u32::to_string).collect();
    let tail: Vec<String> = tokens[tokens.len() - half..]
        .iter()
        .map(u32::to_string)
        .collect();
    format!(
        "[{}, … ({} more) …, {}]",
        head.join(", "),
        tokens.len() - 2 * half,
        tail.join(", ")
    )
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

/// The stream a run on `device` queues on.
fn stream_for(device: Device) -> Result<Stream> {
    match device {
        Device::Cpu => Ok(Stream::Host),
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => Ok(Stream::Cuda(paradec::cuda::CudaStream::new(i)?)),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::NoDevice(
            "this decode was built without the `cuda` feature: cargo run --release --features \
             cuda --bin decode -- --device cuda"
                .into(),
        )),
    }
}

/// The relative error the logits may show against HF's fp32 reference.
fn logits_budget(model: &Model) -> f64 {
    match (model.device(), model.dtype()) {
        (Device::Cpu, _) => 1e-4,
        (_, DType::BF16) => 4e-2,
        _ => 1e-2,
    }
}

/// How one model went.
enum Outcome {
    /// Compared with a stored reference: tokens equal and logits within budget, or not.
    Checked(bool),
    /// No reference beside the model.
    Unchecked,
}

/// Runs one loaded model; the caller reports load failures separately.
fn run(dir: &Path, model: &Model, args: &Args) -> Result<Outcome> {
    let a = &model.arch;
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
    let steps = args.steps;
    let limit = a.max_positions;
    if s0 + steps > limit {
        return Err(Error::bad_input(format!(
            "--steps {steps}: the prompt of {s0} tokens plus {steps} steps exceeds the model's \
             max_position_embeddings {limit} (at most {} steps)",
            limit.saturating_sub(s0)
        )));
    }
    let (dev, dt) = (model.device(), model.dtype());
    let s = stream_for(dev)?;
    let budget = logits_budget(model);
    let mut cache = KvCache::for_model(a, batch, s0 + steps, dt, dev)?;
    let mut ws = Workspace::for_model(a, batch * s0, s0 + steps, dev, dt)?;
    let mut near_ties = 0;
    let mut mask_now = mask.clone();
    let mut ids = prompt.clone();
    let mut generated: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let mut layer_time = vec![Duration::ZERO; a.num_layers];
    let mut matched = true;
    let mut worst = 0.0f64;
    let (mut prefill, mut decode) = (Duration::ZERO, Duration::ZERO);
    let mut last_report = Instant::now();
    for step in 0..=steps {
        let q = if step == 0 { s0 } else { 1 };
        let slots = s0 + step;
        let params = AttnParams::with_past(batch, q, vec![slots - q; batch])
            .with_attention_mask(&mask_now, slots)?;
        let t = Instant::now();
        let out = model.forward_inspect(
            &s,
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
        let lv = out.logits.to_host()?.f32_values()?.into_owned();
        if step == 0 {
            prefill = t.elapsed();
        } else {
            decode += t.elapsed();
        }
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
                matched &= e <= budget;
            }
        }
        let greedy: Vec<u32> = (0..batch)
            .map(|b| argmax(&lv[(b * q + q - 1) * v..(b * q + q) * v]))
            .collect();
        for (b, &t) in greedy.iter().enumerate() {
            generated[b].push(t);
        }
        ids = greedy.clone();
        if let Some(want) = reference
            .as_ref()
            .and_then(|r| r.ints(&format!("step{}.input_ids", step + 1)))
        {
            let want: Vec<u32> = want.iter().map(|&i| i as u32).collect();
            let hf_logits = reference
                .as_ref()
                .and_then(|r| r.floats(&format!("step{step}.logits")));
            for b in 0..batch {
                if greedy[b] == want[b] {
                    continue;
                }
                // A token may part from HF's only where HF's own top two are closer than the
                // budget allows the logits to move (never on the fp32 CPU path).
                let row = hf_logits
                    .as_ref()
                    .map(|l| &l[(b * q + q - 1) * v..(b * q + q) * v]);
                let tie = row.is_some_and(|r| {
                    let mut sorted: Vec<f32> = r.to_vec();
                    sorted.sort_by(|x, y| y.total_cmp(x));
                    let scale = r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                    ((sorted[0] - sorted[1]) as f64) < 2.0 * budget * scale
                });
                if tie && dev != Device::Cpu {
                    near_ties += 1;
                } else {
                    matched = false;
                }
            }
            // Later steps continue from HF's tokens, so one near tie does not derail them.
            ids = want;
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
        // Long runs show progress (CPU attention grows with the length).
        if step > 0 && last_report.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "  … step {step}/{steps}, {:.0} tokens/s",
                (step * batch) as f64 / decode.as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    for (l, t) in layer_time.iter().enumerate() {
        println!("  prefill layer {l:2}: {:8.1} µs", t.as_secs_f64() * 1e6);
    }
    let per_s = |tokens: usize, d: Duration| tokens as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "  prefill: {} tokens in {:.2} ms ({:.0} tokens/s); decode: {} steps × {batch} in {:.2} ms ({:.0} tokens/s)",
        batch * s0,
        prefill.as_secs_f64() * 1e3,
        per_s(batch * s0, prefill),
        steps,
        decode.as_secs_f64() * 1e3,
        per_s(batch * steps, decode),
    );
    for (b, g) in generated.iter().enumerate() {
        println!(
            "  sequence {b}: prompt {} → greedy {}",
            shorten(&prompt[b * s0..(b + 1) * s0], args.show),
            shorten(g, args.show)
        );
    }
    Ok(match &reference {
        Some(_) => {
            let tokens = match (matched, near_ties) {
                (false, _) => "or logits differ".to_string(),
                (true, 0) => "equal".to_string(),
                (true, n) => format!(
                    "equal but for {n} near tie(s): HF's top two logits closer than the budget"
                ),
            };
            println!(
                "  HF reference: {} (worst logits relative error {worst:.2e}, budget {budget:.0e} on {dev} {}, tokens {tokens})",
                if matched { "MATCH" } else { "MISMATCH" },
                if dev == Device::Cpu { DType::F32 } else { dt },
            );
            Outcome::Checked(matched)
        }
        None => {
            println!("  no reference.safetensors beside the model: nothing to compare");
            Outcome::Unchecked
        }
    })
}

/// The model directories to run: `--model`, else every fixture.
fn model_dirs(args: &Args) -> Vec<PathBuf> {
    if let Some(d) = &args.model {
        return vec![d.clone()];
    }
    let root = std::env::var("PARADEC_FIXTURES")
        .map(PathBuf::from)
        .ok()
        .or_else(|| Some(PathBuf::from("tests/fixtures")).filter(|p| p.is_dir()))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
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

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("decode: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg!(not(feature = "cuda")) && args.device != Device::Cpu {
        eprintln!(
            "decode: --device {}: this decode was built without the `cuda` feature; build it with \
             cargo run --release --features cuda --bin decode -- --device cuda",
            args.device
        );
        return ExitCode::from(2);
    }
    let dirs = model_dirs(&args);
    if dirs.is_empty() {
        eprintln!("decode: no model directories found (set PARADEC_FIXTURES or pass --model DIR)");
        return ExitCode::from(2);
    }
    println!("device: {}", args.device);
    let (mut matched, mut mismatched, mut unchecked, mut failed) = (0, 0, 0, 0);
    for d in &dirs {
        let t0 = Instant::now();
        let model = match Model::load(d).and_then(|mut m| {
            if args.device != Device::Cpu {
                m.load_as(args.device, args.dtype)?;
            }
            Ok(m)
        }) {
            Ok(m) => m,
            Err(e) => {
                println!("== {}: failed to load: {e}", d.display());
                failed += 1;
                continue;
            }
        };
        let a = &model.arch;
        println!(
            "== {} ({:?}, {} layers, hidden {}, {} heads / {} kv, loaded in {:.1} ms)",
            d.display(),
            a.family,
            a.num_layers,
            a.hidden,
            a.heads,
            a.kv_heads,
            t0.elapsed().as_secs_f64() * 1e3
        );
        match run(d, &model, &args) {
            Ok(Outcome::Checked(true)) => matched += 1,
            Ok(Outcome::Checked(false)) => mismatched += 1,
            Ok(Outcome::Unchecked) => unchecked += 1,
            Err(e) => {
                println!("  failed: {e}");
                failed += 1;
            }
        }
    }
    println!(
        "{} model(s): {matched} match HF transformers, {mismatched} MISMATCH, {unchecked} without a reference, {failed} failed",
        dirs.len()
    );
    if mismatched == 0 && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[&str]) -> std::result::Result<Option<Args>, String> {
        parse_args(&s.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn bad_arguments_are_errors() {
        for (args, words) in [
            (&["--steps", "abc"][..], "whole number"),
            (&["--steps", "-5"][..], "whole number"),
            (&["--model"][..], "--model needs a value"),
            (&["--model", "--steps", "2"][..], "--model needs a value"),
            (&["--device", "tpu"][..], "cpu, cuda or cuda:I"),
            (&["--frobnicate"][..], "unknown argument"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(words), "{args:?}: {e}");
        }
    }

    #[test]
    fn good_arguments_parse() {
        let a = parse(&[
            "--model", "m", "--steps", "7", "--device", "cuda:1", "--show", "4",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            a,
            Args {
                model: Some(PathBuf::from("m")),
                steps: 7,
                device: Device::Cuda(1),
                dtype: DType::F16,
                show: 4
            }
        );
        assert_eq!(parse(&["--help"]).unwrap(), None);
        assert_eq!(parse(&[]).unwrap().unwrap().steps, 3);
    }

    #[test]
    fn long_token_lists_are_shortened() {
        let t: Vec<u32> = (0..100).collect();
        assert_eq!(shorten(&t[..3], 16), "[0, 1, 2]");
        assert_eq!(shorten(&t, 4), "[0, 1, … (96 more) …, 98, 99]");
    }

    #[test]
    fn steps_past_the_positions_are_refused_and_load_failures_are_named() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gptj");
        let model = Model::load(&dir).unwrap();
        let args = Args {
            model: None,
            steps: 1_000_000,
            device: Device::Cpu,
            dtype: DType::F16,
            show: 16,
        };
        let e = run(&dir, &model, &args).err().unwrap().to_string();
        assert!(e.contains("max_position_embeddings"), "{e}");
        let e = Model::load(dir.join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
