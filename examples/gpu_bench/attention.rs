//! Attention: prefill TFLOP/s (causal, FLOPs counted as half: 4·s²·d·heads/2 per sequence) and
//! decode µs and KV-read GB/s, against a read-only bandwidth floor measured here.
//!
//! Decode also runs over each quantized KV-cache mode (`attn_decode_<mode>`: fp8e4m3, fp8e5m2,
//! q8, q6, q4), counting the bytes of its codes and scales as the KV bytes read.
//!
//!     gpu_bench --attention [--quick] [--only attn_prefill|attn_decode|attn_decode_q4] [--csv FILE]
//!               [--attn-ls 1024,8192] [--attn-batches 1,8] [--attn-kvs 32,8] [--attn-dims 64,256]
//!               [--attn-modes f16,q4,fp8e4m3] [--attn-probe] [--attn-ss 1024,4096]
//!
//! `--attn-ss` picks the prefill's sequence lengths (each a divisor of 16384). The other four
//! lists narrow the decode cases (KV lengths, batches, KV heads, cache modes: `f16` is
//! the contiguous fp16 cache, the others `QUANT_MODES`' names) — for sweeps such as
//! `PARADEC_ATTN_SPLITS=N`, which fixes the decode's split count. `--attn-probe` also times the
//! read-only reduction over each fp16 case's KV bytes: the floor a plain streaming kernel of
//! that size reaches, launch and ramp included.

use super::*;

/// Bytes/s of a read-only XOR reduction over a 2 GiB buffer (the decode floor).
pub fn measure_read_bw(b: &Bench) -> Result<f64> {
    read_probe_bw(b, 2usize << 30)
}

/// Bytes/s of the read-only XOR reduction over `n` bytes (a multiple of 16): what a plain
/// streaming kernel reaches at a decode case's own size, launch and ramp included.
fn read_probe_bw(b: &Bench, n: usize) -> Result<f64> {
    let mut src = DeviceBuffer::alloc(0, n)?;
    src.memset(0x5A)?;
    let mut sink = DeviceBuffer::zeroed(0, 4096 * 4)?;
    let mut launch = |_: usize, st: &CudaStream| -> Result<()> {
        let mut blocks = 0u32;
        // SAFETY: src holds n bytes, sink 4096 words; the probe writes at most 4096.
        let code = unsafe {
            ffi::paradec_attn_read_probe(
                src.as_ptr(),
                n,
                sink.as_mut_ptr() as *mut u32,
                &mut blocks,
                st.raw(),
            )
        };
        status(code, "paradec_attn_read_probe")
    };
    let t = b.time(1, &mut launch)?;
    Ok(n as f64 / (t.b2b_us.min(t.graph_us) * 1e-6))
}

/// Fills a device buffer with a random pattern of `dt` values: 64 MiB from the host, then
/// device-to-device doubling (fast for buffers of tens of GB).
pub(super) fn fill_big(buf: &mut DeviceBuffer, dt: Dt, lo: f32, hi: f32, seed: u64) -> Result<()> {
    let chunk = buf.len().min(64 << 20);
    let mut p = Pool::new(chunk, 1)?;
    p.fill_float(dt, lo, hi, seed)?;
    let base = buf.as_mut_ptr() as *mut u8;
    let mut done = 0usize;
    let copy = |dst: *mut u8, src: *const u8, n: usize| -> Result<()> {
        // SAFETY: both ranges lie inside live device allocations (checked by the callers' sizes).
        let e = unsafe {
            ffi::cudaMemcpy(
                dst as *mut c_void,
                src as *const c_void,
                n,
                ffi::cudaMemcpyKind::cudaMemcpyDeviceToDevice,
            )
        };
        cuda::error::check(e, "cudaMemcpy (fill)")
    };
    copy(base, p.ptr(0) as *const u8, chunk)?;
    done += chunk;
    while done < buf.len() {
        let n = done.min(buf.len() - done);
        copy(base.wrapping_add(done), base, n)?;
        done += n;
    }
    Ok(())
}

pub struct AttnRow {
    pub kernel: &'static str,
    pub dtype: &'static str,
    pub shape: String,
    pub t: Timing,
    pub flops: f64,
    pub bytes: f64,
}

#[allow(clippy::too_many_arguments)]
fn time_attention(
    b: &Bench,
    dt: Dt,
    batch: usize,
    q_len: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    past: usize,
) -> Result<Timing> {
    let capacity = past + q_len;
    let qb = batch * q_len * heads * d * 2;
    let cb = batch * capacity * kv_heads * d * 2;
    let per_set = 2 * qb + 2 * cb;
    let sets = b.sets_for(per_set);
    let set_stride = |n: usize| n.div_ceil(256) * 256;
    let mut q = DeviceBuffer::alloc(0, set_stride(qb) * sets)?;
    fill_big(&mut q, dt, -2.0, 2.0, 1)?;
    let out = DeviceBuffer::alloc(0, set_stride(qb) * sets)?;
    let mut ck = DeviceBuffer::alloc(0, set_stride(cb) * sets)?;
    fill_big(&mut ck, dt, -2.0, 2.0, 2)?;
    let mut cv = DeviceBuffer::alloc(0, set_stride(cb) * sets)?;
    fill_big(&mut cv, dt, -2.0, 2.0, 3)?;
    let past_b: Vec<u8> = (0..batch)
        .flat_map(|_| (past as i64).to_le_bytes())
        .collect();
    let past_d = DeviceBuffer::from_host(0, &past_b)?;
    // SAFETY: a pure size query.
    let scratch_bytes =
        unsafe { ffi::paradec_attention_scratch_bytes(batch, q_len, heads, kv_heads, d, past) };
    let scratch = DeviceBuffer::zeroed(0, scratch_bytes.max(16))?;
    let scale = 1.0 / (d as f32).sqrt();
    let at = |buf: &DeviceBuffer, stride: usize, i: usize| {
        (buf.as_ptr() as *mut u8).wrapping_add(i * set_stride(stride)) as *mut c_void
    };
    let mut launch = |i: usize, st: &CudaStream| -> Result<()> {
        // SAFETY: every set holds the shapes above; past + q_len = capacity.
        let code = unsafe {
            ffi::paradec_attention(
                dt.code(),
                at(&q, qb, i),
                at(&ck, cb, i),
                at(&cv, cb, i),
                at(&out, qb, i),
                batch,
                q_len,
                heads,
                kv_heads,
                d,
                capacity,
                past_d.as_ptr() as *const i64,
                past,
                0,
                ptr::null(),
                0,
                scale,
                scratch.as_ptr() as *mut c_void,
                scratch_bytes,
                st.raw(),
            )
        };
        status(code, "paradec_attention")
    };
    b.time(sets, &mut launch)
}

/// The quantized modes of the decode bench: (name, K format, V format).
/// `paged_f16` is the fp16 cache in a pool of 16-position pages (a shuffled block table).
const QUANT_MODES: [(&str, i32, i32); 6] = [
    ("paged_f16", 0, 0),
    ("fp8e4m3", 1, 1),
    ("fp8e5m2", 2, 2),
    ("q8", 3, 3),
    ("q6", 3, 4),
    ("q4", 4, 4),
];

/// Bytes of one token's K (or V) row of `kv_dim` values in a format (codes and run scales).
fn quant_row_bytes(format: i32, kv_dim: usize) -> usize {
    match format {
        3 => kv_dim + 2 * kv_dim / 32,
        4 => kv_dim / 2 + 2 * kv_dim / 32,
        0 => 2 * kv_dim,
        _ => kv_dim,
    }
}

/// Decode (one query token) over a quantized cache: µs of `paradec_attention_quant`.
#[allow(clippy::too_many_arguments)]
fn time_attention_quant(
    b: &Bench,
    kf: i32,
    vf: i32,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    past: usize,
) -> Result<Timing> {
    let dt = Dt::F16;
    let q_len = 1;
    let capacity = past + q_len;
    let kv_dim = kv_heads * d;
    let qb = batch * q_len * heads * d * 2;
    // The native format runs paged: pages of 16 positions in a shuffled order.
    let page = 16usize;
    let max_pages = capacity.div_ceil(page);
    let paged = kf == 0;
    let rows = if paged {
        batch * max_pages * page
    } else {
        batch * capacity
    };
    let codes = |f: i32| {
        rows * match f {
            4 => kv_dim / 2,
            0 => 2 * kv_dim,
            _ => kv_dim,
        }
    };
    let mut order: Vec<i32> = (0..(batch * max_pages) as i32).collect();
    let mut seed = 0x2545_f491u64;
    for i in (1..order.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
    let table_b: Vec<u8> = order.iter().flat_map(|p| p.to_le_bytes()).collect();
    let table_d = DeviceBuffer::from_host(0, &table_b)?;
    let scales = |f: i32| {
        if f >= 3 {
            batch * capacity * (kv_dim / 32) * 2
        } else {
            0
        }
    };
    let (kcb, vcb, ksb, vsb) = (codes(kf), codes(vf), scales(kf), scales(vf));
    let per_set = 2 * qb + kcb + vcb + ksb + vsb;
    let sets = b.sets_for(per_set);
    let st = |n: usize| n.max(16).div_ceil(256) * 256;
    let mut q = DeviceBuffer::alloc(0, st(qb) * sets)?;
    fill_big(&mut q, dt, -2.0, 2.0, 1)?;
    let out = DeviceBuffer::alloc(0, st(qb) * sets)?;
    // Codes: fp16 bit patterns of values in [-2, 2) (as bytes: every code finite but E4M3's
    // 0x7f/0xff, which a timing does not mind); scales: fp16 in [0.5, 1).
    let mut kc = DeviceBuffer::alloc(0, st(kcb) * sets)?;
    fill_big(&mut kc, dt, -2.0, 2.0, 2)?;
    let mut vc = DeviceBuffer::alloc(0, st(vcb) * sets)?;
    fill_big(&mut vc, dt, -2.0, 2.0, 3)?;
    let mut ks = DeviceBuffer::alloc(0, st(ksb) * sets)?;
    fill_big(&mut ks, dt, 0.5, 1.0, 4)?;
    let mut vs = DeviceBuffer::alloc(0, st(vsb) * sets)?;
    fill_big(&mut vs, dt, 0.5, 1.0, 5)?;
    let ones: Vec<u8> = (0..kv_heads).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    let head_scale = DeviceBuffer::from_host(0, &ones)?;
    let past_b: Vec<u8> = (0..batch)
        .flat_map(|_| (past as i64).to_le_bytes())
        .collect();
    let past_d = DeviceBuffer::from_host(0, &past_b)?;
    // SAFETY: a pure size query.
    let scratch_bytes = unsafe {
        ffi::paradec_attention_quant_scratch_bytes(batch, q_len, heads, kv_heads, d, past)
    };
    let scratch = DeviceBuffer::zeroed(0, scratch_bytes.max(16))?;
    let scale = 1.0 / (d as f32).sqrt();
    let at = |buf: &DeviceBuffer, n: usize, i: usize| {
        (buf.as_ptr() as *mut u8).wrapping_add(i * st(n)) as *mut c_void
    };
    let pages = |f: i32, c: &DeviceBuffer, cb: usize, s: &DeviceBuffer, sb: usize, i: usize| {
        ffi::paradec_kv_pages {
            format: f,
            codes: at(c, cb, i),
            scales: if f >= 3 {
                at(s, sb, i)
            } else {
                ptr::null_mut()
            },
            head_scale: if f == 1 {
                head_scale.as_ptr() as *const f32
            } else {
                ptr::null()
            },
        }
    };
    let mut launch = |i: usize, stm: &CudaStream| -> Result<()> {
        // SAFETY: every set holds the shapes above; past + q_len = capacity.
        let code = unsafe {
            ffi::paradec_attention_quant(
                dt.code(),
                at(&q, qb, i),
                if paged {
                    ffi::paradec_kv_block_table {
                        table: table_d.as_ptr() as *const i32,
                        max_pages,
                        page_size: page,
                    }
                } else {
                    ffi::paradec_kv_block_table {
                        table: ptr::null(),
                        max_pages: 0,
                        page_size: 0,
                    }
                },
                pages(kf, &kc, kcb, &ks, ksb, i),
                pages(vf, &vc, vcb, &vs, vsb, i),
                at(&out, qb, i),
                batch,
                q_len,
                heads,
                kv_heads,
                d,
                if paged { max_pages * page } else { capacity },
                past_d.as_ptr() as *const i64,
                past,
                0,
                ptr::null(),
                0,
                scale,
                scratch.as_ptr() as *mut c_void,
                scratch_bytes,
                stm.raw(),
            )
        };
        status(code, "paradec_attention_quant")
    };
    b.time(sets, &mut launch)
}

/// The cases to run: the prefill's sequence lengths (`--attn-ss`) and the decode's KV lengths,
/// batches, KV-head counts and cache modes (`--attn-ls`, `--attn-batches`, `--attn-kvs`,
/// `--attn-modes`; comma-separated lists).
pub struct AttnCases {
    ls: Vec<usize>,
    batches: Vec<usize>,
    kvs: Vec<usize>,
    /// Head dims; 4096 / d query heads each (32 at 128). A KV-head count that does not divide
    /// the query heads is skipped.
    dims: Vec<usize>,
    /// None: every mode.
    modes: Option<Vec<String>>,
    probe: bool,
    /// Prefill sequence lengths (`--attn-ss`); 16384 / s sequences each.
    prefill_ss: Vec<usize>,
}

impl AttnCases {
    pub fn parse(args: &[String], quick: bool) -> Result<Self> {
        let list = |flag: &str, default: &[usize]| -> Result<Vec<usize>> {
            Ok(super::flag_list(args, flag)?.unwrap_or_else(|| default.to_vec()))
        };
        let ls: &[usize] = if quick {
            &[1024, 32768]
        } else {
            &[1024, 8192, 32768, 131072]
        };
        Ok(Self {
            ls: list("--attn-ls", ls)?,
            batches: list("--attn-batches", &[1, 8, 32])?,
            kvs: list("--attn-kvs", &[32, 8])?,
            dims: list("--attn-dims", &[128])?,
            modes: match args.iter().position(|a| a == "--attn-modes") {
                None => None,
                Some(i) => {
                    let v = args.get(i + 1).ok_or_else(|| {
                        Error::bad_input("--attn-modes needs a comma-separated list")
                    })?;
                    let modes: Vec<String> = v.split(',').map(|m| m.trim().to_string()).collect();
                    if let Some(m) = modes
                        .iter()
                        .find(|m| *m != "f16" && !QUANT_MODES.iter().any(|(n, _, _)| n == m))
                    {
                        return Err(Error::bad_input(format!(
                            "--attn-modes: unknown cache mode `{m}`"
                        )));
                    }
                    Some(modes)
                }
            },
            probe: args.iter().any(|a| a == "--attn-probe"),
            prefill_ss: {
                let ss = list(
                    "--attn-ss",
                    if quick {
                        &[2048, 8192]
                    } else {
                        &[512, 2048, 8192, 16384]
                    },
                )?;
                if let Some(s) = ss.iter().find(|&&s| s == 0 || 16384 % s != 0) {
                    return Err(Error::bad_input(format!(
                        "--attn-ss: {s} does not divide 16384 tokens"
                    )));
                }
                ss
            },
        })
    }

    fn has_mode(&self, mode: &str) -> bool {
        self.modes
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == mode))
    }
}

pub fn run_all(b: &Bench, only: Option<&str>, cases: &AttnCases) -> Result<Vec<AttnRow>> {
    let mut rows = Vec::new();
    let want = |k: &str| only.is_none_or(|o| k.contains(o));
    // Prefill: 16k tokens per call (batch = 16384 / s), heads·d = 2048, causal, MHA.
    let ss = &cases.prefill_ss;
    for dt in [Dt::Bf16, Dt::F16] {
        if !want("attn_prefill") {
            break;
        }
        for &d in &[64usize, 128, 256] {
            for &s in ss {
                let (batch, heads) = (16384 / s, 2048 / d);
                let t = time_attention(b, dt, batch, s, heads, heads, d, 0)?;
                let flops = 4.0 * (s * s) as f64 * d as f64 * (heads * batch) as f64 / 2.0;
                eprintln!(
                    "prefill {} d{d} s{s}: {:.1} µs, {:.0} TFLOP/s",
                    dt.name(),
                    t.b2b_us,
                    flops / (t.b2b_us.min(t.graph_us) * 1e-6) / 1e12
                );
                rows.push(AttnRow {
                    kernel: "attn_prefill",
                    dtype: dt.name(),
                    shape: format!("b{batch}_h{heads}_s{s}_d{d}"),
                    t,
                    flops,
                    bytes: 0.0,
                });
            }
        }
    }
    // Decode: 4096 / d query heads of d (32 of 128), one new token over L cached ones.
    let any_quant = QUANT_MODES
        .iter()
        .any(|(n, _, _)| want(&format!("attn_decode_{n}")));
    for (&d, &kv) in cases
        .dims
        .iter()
        .flat_map(|d| cases.kvs.iter().map(move |kv| (d, kv)))
    {
        let heads = 4096 / d;
        if (!want("attn_decode") && !any_quant) || heads == 0 || kv > heads || heads % kv != 0 {
            continue;
        }
        // The shape's name: head dim 128 keeps the table's historical names.
        let dim = if d == 128 {
            String::new()
        } else {
            format!("_d{d}")
        };
        for &batch in &cases.batches {
            for &l in &cases.ls {
                let kv_bytes = 2.0 * (batch * l * kv * d * 2) as f64;
                if kv_bytes > 40e9 {
                    eprintln!(
                        "decode b{batch} L{l} kv{kv}: skipped ({:.0} GB of KV)",
                        kv_bytes / 1e9
                    );
                    continue;
                }
                if want("attn_decode") && cases.has_mode("f16") {
                    let t = time_attention(b, Dt::F16, batch, 1, heads, kv, d, l - 1)?;
                    eprintln!(
                        "decode b{batch} L{l} kv{kv}{dim}: {:.2} µs b2b, {:.2} µs graph, {:.0} GB/s",
                        t.b2b_us,
                        t.graph_us,
                        kv_bytes / (t.b2b_us.min(t.graph_us) * 1e-6) / 1e9
                    );
                    if cases.probe {
                        let n = kv_bytes as usize;
                        let bw = read_probe_bw(b, n)?;
                        eprintln!(
                            "  read probe over the same {:.1} MB: {:.2} µs, {:.0} GB/s",
                            n as f64 / 1e6,
                            n as f64 / bw * 1e6,
                            bw / 1e9
                        );
                    }
                    rows.push(AttnRow {
                        kernel: "attn_decode",
                        dtype: "f16",
                        shape: format!("b{batch}_L{l}_kv{kv}{dim}"),
                        t,
                        flops: 0.0,
                        bytes: kv_bytes,
                    });
                }
                for (name, kf, vf) in QUANT_MODES {
                    let kernel: &'static str = match name {
                        "paged_f16" => "attn_decode_paged_f16",
                        "fp8e4m3" => "attn_decode_fp8e4m3",
                        "fp8e5m2" => "attn_decode_fp8e5m2",
                        "q8" => "attn_decode_q8",
                        "q6" => "attn_decode_q6",
                        _ => "attn_decode_q4",
                    };
                    if !want(kernel) || !cases.has_mode(name) {
                        continue;
                    }
                    let bytes =
                        (batch * l * (quant_row_bytes(kf, kv * d) + quant_row_bytes(vf, kv * d)))
                            as f64;
                    let t = time_attention_quant(b, kf, vf, batch, heads, kv, d, l - 1)?;
                    eprintln!(
                        "decode {name} b{batch} L{l} kv{kv}{dim}: {:.2} µs b2b, {:.2} µs graph, {:.0} GB/s",
                        t.b2b_us,
                        t.graph_us,
                        bytes / (t.b2b_us.min(t.graph_us) * 1e-6) / 1e9
                    );
                    rows.push(AttnRow {
                        kernel,
                        dtype: "f16",
                        shape: format!("b{batch}_L{l}_kv{kv}{dim}"),
                        t,
                        flops: 0.0,
                        bytes,
                    });
                }
            }
        }
    }
    Ok(rows)
}

/// Runs the attention table; prints markdown and writes the CSV.
pub fn main_bench(
    b: &Bench,
    only: Option<&str>,
    csv: Option<String>,
    device: &str,
    cases: &AttnCases,
) -> Result<()> {
    let read_bw = measure_read_bw(b)?;
    println!(
        "# read-only bandwidth (2 GiB XOR reduction): {:.0} GB/s",
        read_bw / 1e9
    );
    let rows = run_all(b, only, cases)?;
    let mut out =
        String::from("kernel,dtype,shape,us_b2b,us_graph,flops,bytes,tflops,gbps,pct_read\n");
    println!("\n| kernel | dtype | shape | µs (b2b) | µs (graph) | TFLOP/s | KV GB/s | % of read BW |\n|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let best = r.t.b2b_us.min(r.t.graph_us) * 1e-6;
        let tf = r.flops / best / 1e12;
        let gbps = r.bytes / best / 1e9;
        let pct = 100.0 * gbps * 1e9 / read_bw;
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0}% |",
            r.kernel, r.dtype, r.shape, r.t.b2b_us, r.t.graph_us, tf, gbps, pct
        );
        out.push_str(&format!(
            "{},{},{},{:.3},{:.3},{:.0},{:.0},{:.1},{:.1},{:.1}\n",
            r.kernel, r.dtype, r.shape, r.t.b2b_us, r.t.graph_us, r.flops, r.bytes, tf, gbps, pct
        ));
    }
    if let Some(path) = csv {
        let mut f = std::fs::File::create(&path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
        writeln!(f, "# device,{device},read_gbps,{:.1}", read_bw / 1e9)
            .map_err(|e| Error::Io(format!("{path}: {e}")))?;
        f.write_all(out.as_bytes())
            .map_err(|e| Error::Io(format!("{path}: {e}")))?;
    }
    Ok(())
}
