//! GPU bench (feature `cuda`): every kernel at prefill (16384×4096) and decode sizes (1, 8, 64
//! rows × 4096 / 8192), fp16 and bf16, timed by the protocol of docs/GPU.md:
//! warm up; time R back-to-back launches between two CUDA events and divide; median of many such
//! samples; inputs rotated through sets larger than the L2 cache. The same launches replayed from
//! a CUDA graph give a second time without launch gaps. Floors come from the same run: the
//! streaming bandwidth is (bytes read + written) / time of a large device-to-device copy.
//!
//! Usage: gpu_bench [--quick] [--csv FILE] [--only SUBSTRING]
//! `--only linear` runs the linears (examples/gpu_bench/linear.rs) with their own table,
//! narrowed by `--lin-fmt`, `--lin-ms`, `--lin-shapes` and `--lin-path` (see `LinOpts`), and
//! with `--lin-read-pattern` a table of the weights read alone in the lean loop's pattern;
//! `--attention` the attention family (examples/gpu_bench/attention.rs: TFLOP/s and KV GB/s);
//! `--decoder` one decode step of whole layers, `--model` a 32-layer model's decode tokens/s
//! (examples/gpu_bench/decoder.rs), `--decoder-parts` a step against its linears and attention
//! timed alone (examples/gpu_bench/decoder_parts.rs).
//! Prints a table; with --csv, also writes it as CSV (for scripts/bench_join.py).

use std::ffi::c_void;
use std::io::Write;
use std::ptr;

use paradec::cuda::{self, ffi, CudaEvent, CudaGraph, CudaStream, DeviceBuffer};
use paradec::{Error, Result};

mod activation;
mod attention;
mod decoder;
mod decoder_parts;
mod embedding;
mod linear;
mod norm;
mod rope;

// ---- helpers -----------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Dt {
    F16,
    Bf16,
}

impl Dt {
    fn code(self) -> i32 {
        match self {
            Dt::F16 => ffi::paradec_dtype::PARADEC_F16 as i32,
            Dt::Bf16 => ffi::paradec_dtype::PARADEC_BF16 as i32,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Dt::F16 => "f16",
            Dt::Bf16 => "bf16",
        }
    }
    fn bits(self, v: f32) -> u16 {
        match self {
            Dt::F16 => half::f16::from_f32(v).to_bits(),
            Dt::Bf16 => half::bf16::from_f32(v).to_bits(),
        }
    }
}

/// Split counters kept zero between launches, as a workspace keeps them for the decoder; each
/// launch passes `kernels::zeroed_counters_ffi` of them.
fn kept_counters() -> Result<DeviceBuffer> {
    DeviceBuffer::zeroed(0, 16384 * 4)
}

fn status(s: i32, what: &str) -> Result<()> {
    cuda::error::check_status(s, what)
}

/// `sets` equally sized slices of one device allocation, each `set_bytes` (rounded up to 256).
struct Pool {
    buf: DeviceBuffer,
    stride: usize,
}

impl Pool {
    fn new(set_bytes: usize, sets: usize) -> Result<Self> {
        let stride = set_bytes.div_ceil(256) * 256;
        Ok(Pool {
            buf: DeviceBuffer::alloc(0, stride * sets)?,
            stride,
        })
    }
    /// Fills with random 16-bit floats in [lo, hi) (a 1 MiB pattern, tiled).
    fn fill_float(&mut self, dt: Dt, lo: f32, hi: f32, seed: u64) -> Result<()> {
        let mut rng = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pattern: Vec<u8> = (0..(1 << 19))
            .flat_map(|_| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (rng >> 40) as f32 / (1u64 << 24) as f32;
                dt.bits(lo + (hi - lo) * u).to_le_bytes()
            })
            .collect();
        let host: Vec<u8> = pattern
            .iter()
            .copied()
            .cycle()
            .take(self.buf.len())
            .collect();
        self.buf.copy_from_host(&host)
    }
    fn fill_bytes(&mut self, bytes_of_set: &[u8]) -> Result<()> {
        let sets = self.buf.len() / self.stride;
        let mut host = vec![0u8; self.buf.len()];
        for s in 0..sets {
            host[s * self.stride..s * self.stride + bytes_of_set.len()]
                .copy_from_slice(bytes_of_set);
        }
        self.buf.copy_from_host(&host)
    }
    fn ptr(&self, set: usize) -> *mut c_void {
        // Pointer arithmetic inside our allocation: set < sets.
        (self.buf.as_ptr() as *mut u8).wrapping_add(set * self.stride) as *mut c_void
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Bench {
    stream: CudaStream,
    l2: usize,
    samples: usize,
    /// Streaming bandwidth (read + write bytes per second) of a large device-to-device copy.
    stream_bw: f64,
}

struct Timing {
    b2b_us: f64,
    graph_us: f64,
}

impl Bench {
    /// Number of input sets so that all sets together exceed 3× the L2 cache (at least 2).
    fn sets_for(&self, bytes_per_set: usize) -> usize {
        (3 * self.l2).div_ceil(bytes_per_set.max(1)).clamp(2, 4096)
    }

    /// Median µs per launch, back-to-back and from a CUDA graph.
    fn time(
        &self,
        sets: usize,
        launch: &mut dyn FnMut(usize, &CudaStream) -> Result<()>,
    ) -> Result<Timing> {
        let s = &self.stream;
        let (e0, e1) = (CudaEvent::new(0)?, CudaEvent::new(0)?);
        for i in 0..3 {
            launch(i % sets, s)?;
        }
        s.synchronize()?;
        // Estimate one launch, then pick R so a sample lasts about 1.5 ms.
        e0.record(s)?;
        for i in 0..10 {
            launch(i % sets, s)?;
        }
        e1.record(s)?;
        e1.synchronize()?;
        let est_us = (e0.elapsed_ms(&e1)? as f64 * 1e3 / 10.0).max(0.5);
        let reps = ((1500.0 / est_us) as usize).clamp(5, 2000);
        let mut b2b = Vec::with_capacity(self.samples);
        let mut k = 0usize;
        for _ in 0..self.samples {
            e0.record(s)?;
            for _ in 0..reps {
                launch(k % sets, s)?;
                k += 1;
            }
            e1.record(s)?;
            e1.synchronize()?;
            b2b.push(e0.elapsed_ms(&e1)? as f64 * 1e3 / reps as f64);
        }
        // The same launches captured into one graph.
        let greps = reps.min(256);
        let g = CudaGraph::capture(s, |st| {
            for i in 0..greps {
                launch(i % sets, st)?;
            }
            Ok(())
        })?;
        g.launch(s)?;
        s.synchronize()?;
        let mut gr = Vec::with_capacity(self.samples);
        for _ in 0..self.samples {
            e0.record(s)?;
            g.launch(s)?;
            e1.record(s)?;
            e1.synchronize()?;
            gr.push(e0.elapsed_ms(&e1)? as f64 * 1e3 / greps as f64);
        }
        Ok(Timing {
            b2b_us: median(b2b),
            graph_us: median(gr),
        })
    }
}

/// Streaming bandwidth: (read + write) bytes / time of a 256 MiB device-to-device copy.
fn measure_stream_bw(stream: &CudaStream, samples: usize) -> Result<f64> {
    let n = 256usize << 20;
    let a = DeviceBuffer::zeroed(0, n)?;
    let mut b = DeviceBuffer::zeroed(0, n)?;
    let (e0, e1) = (CudaEvent::new(0)?, CudaEvent::new(0)?);
    for _ in 0..3 {
        b.copy_from_device_async(&a, stream)?;
    }
    let reps = 10;
    let mut t = Vec::new();
    for _ in 0..samples {
        e0.record(stream)?;
        for _ in 0..reps {
            b.copy_from_device_async(&a, stream)?;
        }
        e1.record(stream)?;
        e1.synchronize()?;
        t.push(e0.elapsed_ms(&e1)? as f64 * 1e-3 / reps as f64);
    }
    Ok(2.0 * n as f64 / median(t))
}

// ---- cases -------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Kernel {
    RmsNorm,
    LayerNorm,
    AddRmsNorm,
    LayerNorm2,
    RopeCache,
    Gelu,
    SiluMul,
    Add,
    Embedding,
}

impl Kernel {
    fn name(self) -> &'static str {
        match self {
            Kernel::RmsNorm => "rms_norm",
            Kernel::LayerNorm => "layer_norm",
            Kernel::AddRmsNorm => "add_rms_norm",
            Kernel::LayerNorm2 => "layer_norm2",
            Kernel::RopeCache => "rope_cache",
            Kernel::Gelu => "gelu",
            Kernel::SiluMul => "silu_mul",
            Kernel::Add => "add",
            Kernel::Embedding => "embedding",
        }
    }
    const ALL: [Kernel; 9] = [
        Kernel::RmsNorm,
        Kernel::LayerNorm,
        Kernel::AddRmsNorm,
        Kernel::LayerNorm2,
        Kernel::RopeCache,
        Kernel::Gelu,
        Kernel::SiluMul,
        Kernel::Add,
        Kernel::Embedding,
    ];
}

struct Row {
    kernel: &'static str,
    dtype: &'static str,
    shape: String,
    bytes: usize,
    t: Timing,
}

/// Times one kernel case, in the module of its family.
fn run_case(b: &Bench, k: Kernel, dt: Dt, rows: usize, cols: usize) -> Result<Row> {
    match k {
        Kernel::RmsNorm | Kernel::LayerNorm | Kernel::AddRmsNorm | Kernel::LayerNorm2 => {
            norm::run(b, k, dt, rows, cols)
        }
        Kernel::RopeCache => rope::run(b, k, dt, rows, cols),
        Kernel::Gelu | Kernel::SiluMul | Kernel::Add => activation::run(b, k, dt, rows, cols),
        Kernel::Embedding => embedding::run(b, k, dt, rows, cols),
    }
}

/// The comma-separated positive integers after `flag` (None where the flag is absent).
fn flag_list(args: &[String], flag: &str) -> Result<Option<Vec<usize>>> {
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    let v = args
        .get(i + 1)
        .ok_or_else(|| Error::bad_input(format!("{flag} needs a comma-separated list")))?;
    v.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| Error::bad_input(format!("{flag}: `{x}` is not a positive integer")))
        })
        .collect::<Result<Vec<usize>>>()
        .map(Some)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let csv = args
        .iter()
        .position(|a| a == "--csv")
        .and_then(|i| args.get(i + 1).cloned());
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());

    let props = match cuda::properties(0) {
        Ok(p) => p,
        Err(Error::NoDevice(m)) => {
            eprintln!("gpu_bench: no CUDA device ({m})");
            std::process::exit(2);
        }
        Err(e) => return Err(e),
    };
    let stream = CudaStream::new(0)?;
    let samples = if quick { 7 } else { 15 };
    let stream_bw = measure_stream_bw(&stream, samples)?;
    let b = Bench {
        stream,
        l2: props.l2_cache_bytes,
        samples,
        stream_bw,
    };
    println!(
        "# {} (sm_{}{}, {} SMs, L2 {} MiB); streaming bandwidth (256 MiB d2d copy, read+write): {:.0} GB/s",
        props.name,
        props.compute_capability.0,
        props.compute_capability.1,
        props.multiprocessors,
        props.l2_cache_bytes >> 20,
        stream_bw / 1e9
    );
    if args.iter().any(|a| a == "--model") {
        // Whole-model decode tokens/s (examples/gpu_bench/decoder.rs).
        return decoder::model_bench(quick);
    }
    if args.iter().any(|a| a == "--decoder-parts") {
        // A decode step against its linears and attention (examples/gpu_bench/decoder_parts.rs).
        let batches = flag_list(&args, "--decoder-batches")?;
        return decoder_parts::parts_bench(quick, only.as_deref(), batches.as_deref());
    }
    if args.iter().any(|a| a == "--decoder") {
        // One decode step of whole layers (examples/gpu_bench/decoder.rs), its own table.
        let batches = flag_list(&args, "--decoder-batches")?;
        return decoder::main_bench(quick, only.as_deref(), batches.as_deref());
    }
    if args.iter().any(|a| a == "--attention") {
        // The attention family has its own table (TFLOP/s, KV GB/s against a read floor).
        let cases = attention::AttnCases::parse(&args, quick)?;
        return attention::main_bench(&b, only.as_deref(), csv, &props.name, &cases);
    }
    // Linears have their own shapes, table and floor (the read bandwidth of this run).
    if only.as_deref().is_some_and(|o| o.contains("linear")) {
        let read_bw = linear::measure_read_bw(&b.stream, samples)?;
        println!(
            "# read bandwidth (read-only reduction over 2 GiB): {:.0} GB/s",
            read_bw / 1e9
        );
        let opts = linear::LinOpts::parse(&args)?;
        let lines = linear::run_all(&b, quick, read_bw, &opts)?;
        if let Some(path) = csv {
            let text = format!(
                "# device,{},read_gbps,{:.1}\n{lines}",
                props.name,
                read_bw / 1e9
            );
            std::fs::write(&path, text).map_err(|e| Error::Io(format!("{path}: {e}")))?;
        }
        return Ok(());
    }
    let shapes: Vec<(usize, usize)> = if quick {
        vec![(16384, 4096), (1, 4096), (64, 8192)]
    } else {
        vec![
            (16384, 4096),
            (1, 4096),
            (8, 4096),
            (64, 4096),
            (1, 8192),
            (8, 8192),
            (64, 8192),
        ]
    };
    let mut rows = Vec::new();
    for k in Kernel::ALL {
        if let Some(o) = &only {
            if !k.name().contains(o.as_str()) {
                continue;
            }
        }
        for dt in [Dt::F16, Dt::Bf16] {
            for &(r, c) in &shapes {
                let row = run_case(&b, k, dt, r, c)?;
                rows.push(row);
            }
        }
    }

    let mut out = String::new();
    out.push_str("kernel,dtype,shape,us_b2b,us_graph,bytes,gbps,pct_stream\n");
    println!(
        "\n| kernel | dtype | shape | µs (b2b) | µs (graph) | GB/s | % of stream BW |\n|---|---|---|---|---|---|---|"
    );
    for r in &rows {
        let best = r.t.b2b_us.min(r.t.graph_us);
        let gbps = r.bytes as f64 / (best * 1e-6) / 1e9;
        let pct = 100.0 * gbps * 1e9 / b.stream_bw;
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0}% |",
            r.kernel, r.dtype, r.shape, r.t.b2b_us, r.t.graph_us, gbps, pct
        );
        out.push_str(&format!(
            "{},{},{},{:.3},{:.3},{},{:.1},{:.1}\n",
            r.kernel, r.dtype, r.shape, r.t.b2b_us, r.t.graph_us, r.bytes, gbps, pct
        ));
    }
    println!("(GB/s and % from the faster of the two times; % of the copy's read+write bandwidth)");
    if let Some(path) = csv {
        let mut f = std::fs::File::create(&path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
        writeln!(
            f,
            "# device,{},stream_gbps,{:.1}",
            props.name,
            b.stream_bw / 1e9
        )
        .map_err(|e| Error::Io(format!("{path}: {e}")))?;
        f.write_all(out.as_bytes())
            .map_err(|e| Error::Io(format!("{path}: {e}")))?;
    }
    Ok(())
}
