//! Linears: GPTQ-4 g128 act-order, GPTQ-8 g128, EXL2 uniform 3/4/6-bit g128 and an all-widths
//! mix, dense f16; the weights' random codes are generated here on the host (never carried) in
//! paradec's device layout. The floor of a case is its bytes (packed weights, scales, x, out) /
//! the read bandwidth measured in the same run (`measure_read_bw`); the checkpoint floor counts
//! the scales and row order in their checkpoint's form instead (`Fmt::checkpoint_scale_bytes`).

use super::*;
use paradec::vocab::LinearPath;

/// Read bandwidth: bytes / time of a read-only reduction over a 2 GiB buffer.
pub fn measure_read_bw(stream: &CudaStream, samples: usize) -> Result<f64> {
    let n = 2usize << 30;
    let a = DeviceBuffer::zeroed(0, n)?;
    let blocks = 132 * 8;
    let out = DeviceBuffer::zeroed(0, blocks * 4)?;
    let (e0, e1) = (CudaEvent::new(0)?, CudaEvent::new(0)?);
    let go = || -> Result<()> {
        // SAFETY: a is a live 2 GiB allocation, out holds `blocks` u32.
        status(
            unsafe {
                ffi::paradec_read_bytes(
                    a.as_ptr(),
                    n,
                    out.as_ptr() as *mut c_void,
                    blocks as u32,
                    stream.raw(),
                )
            },
            "paradec_read_bytes",
        )
    };
    for _ in 0..3 {
        go()?;
    }
    let mut t = Vec::new();
    for _ in 0..samples {
        e0.record(stream)?;
        for _ in 0..5 {
            go()?;
        }
        e1.record(stream)?;
        e1.synchronize()?;
        t.push(e0.elapsed_ms(&e1)? as f64 * 1e-3 / 5.0);
    }
    Ok(n as f64 / median(t))
}

#[derive(Clone, Copy, PartialEq)]
pub enum Fmt {
    Gptq4Act,
    Gptq8,
    Exl2(u32),
    Exl2Mix,
    Dense,
}

impl Fmt {
    pub fn name(self) -> String {
        match self {
            Fmt::Gptq4Act => "gptq4_g128_act".into(),
            Fmt::Gptq8 => "gptq8_g128".into(),
            Fmt::Exl2(b) => format!("exl2_{b}b_g128"),
            Fmt::Exl2Mix => "exl2_mix".into(),
            Fmt::Dense => "dense_f16".into(),
        }
    }
    pub const ALL: [Fmt; 7] = [
        Fmt::Gptq4Act,
        Fmt::Gptq8,
        Fmt::Exl2(3),
        Fmt::Exl2(4),
        Fmt::Exl2(6),
        Fmt::Exl2Mix,
        Fmt::Dense,
    ];
    /// Width of each 128-row group of K.
    fn group_bits(self, groups: usize) -> Vec<u32> {
        match self {
            Fmt::Gptq4Act => vec![4; groups],
            Fmt::Gptq8 => vec![8; groups],
            Fmt::Exl2(b) => vec![b; groups],
            // Non-increasing widths, every width present (as EXL2 orders them).
            Fmt::Exl2Mix | Fmt::Dense => {
                let w = [8u32, 6, 5, 4, 3, 2];
                let share = [1usize, 2, 3, 6, 3, 1]; // of 16
                let mut v = Vec::new();
                for (i, &b) in w.iter().enumerate() {
                    let c = groups * share[i] / 16;
                    v.extend(std::iter::repeat_n(b, c));
                }
                while v.len() < groups {
                    v.push(2);
                }
                v
            }
        }
    }
    fn permuted(self) -> bool {
        !matches!(self, Fmt::Gptq8 | Fmt::Dense)
    }
    /// The bytes a checkpoint's scales and zeros of `groups` groups × `n` columns take (the
    /// device layout holds an f32 pair, 8 bytes, per group and column): GPTQ an f16 scale and a
    /// zero of the weights' width packed, EXL2 a 4-bit scale code and an f16 maximum per group.
    pub(super) fn checkpoint_scale_bytes(self, groups: usize, n: usize) -> usize {
        match self {
            Fmt::Gptq4Act => groups * n * (16 + 4) / 8,
            Fmt::Gptq8 => groups * n * (16 + 8) / 8,
            Fmt::Exl2(_) | Fmt::Exl2Mix => groups * n / 2 + groups * 2,
            Fmt::Dense => 0,
        }
    }
    /// A checkpoint's row order of the bytes the device layout's i32 row sources take: GPTQ's
    /// i32 `g_idx`, EXL2's i16 permutation.
    fn checkpoint_perm_bytes(self, device_bytes: usize) -> usize {
        match self {
            Fmt::Exl2(_) | Fmt::Exl2Mix => device_bytes / 2,
            _ => device_bytes,
        }
    }
}

pub struct XorShift(pub u64);
impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub struct LinRow {
    pub fmt: String,
    pub k: usize,
    pub n: usize,
    pub m: usize,
    pub bytes: usize,
    /// The bytes with the weights in their checkpoint's own form (`checkpoint_scale_bytes`).
    pub ckpt_bytes: usize,
    pub t: Timing,
    pub path: &'static str,
    pub split: usize,
}

/// What the linear bench runs: `--lin-fmt a,b` (substrings of format names), `--lin-ms 1,2,4`,
/// `--lin-shapes 4096x12288,…` (K×N) and `--lin-path auto,gemv,small,lean,mma,vendor` (each M timed on each
/// listed path; `auto` is `select_linear`'s choice), `--lin-split 1,4,16` (each streaming-path
/// case also timed with these K splits, for tuning). Unset: everything, automatic path.
/// `--lin-read-pattern` adds a table of each shape's 4-bit weights read alone in the small-M
/// lean loop's pattern (`read_pattern_table`).
#[derive(Default)]
pub struct LinOpts {
    pub fmts: Option<Vec<String>>,
    pub ms: Option<Vec<usize>>,
    pub shapes: Option<Vec<(usize, usize)>>,
    pub paths: Vec<Option<LinearPath>>,
    pub splits: Vec<Option<usize>>,
    pub read_pattern: bool,
}

impl LinOpts {
    pub fn parse(args: &[String]) -> Result<Self> {
        let get = |flag: &str| -> Option<Vec<String>> {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        };
        let bad = |what: &str, v: &str| Error::bad_input(format!("gpu_bench: bad {what}: {v}"));
        let ms = match get("--lin-ms") {
            Some(v) => Some(
                v.iter()
                    .map(|s| s.parse().map_err(|_| bad("--lin-ms", s)))
                    .collect::<Result<Vec<usize>>>()?,
            ),
            None => None,
        };
        let shapes = match get("--lin-shapes") {
            Some(v) => Some(
                v.iter()
                    .map(|s| {
                        let (k, n) = s.split_once('x').ok_or_else(|| bad("--lin-shapes", s))?;
                        Ok((
                            k.parse().map_err(|_| bad("--lin-shapes", s))?,
                            n.parse().map_err(|_| bad("--lin-shapes", s))?,
                        ))
                    })
                    .collect::<Result<Vec<(usize, usize)>>>()?,
            ),
            None => None,
        };
        let paths = match get("--lin-path") {
            Some(v) => v
                .iter()
                .map(|s| match s.as_str() {
                    "auto" => Ok(None),
                    "gemv" => Ok(Some(LinearPath::Gemv)),
                    "mma" => Ok(Some(LinearPath::Mma)),
                    "small" => Ok(Some(LinearPath::Small)),
                    "lean" => Ok(Some(LinearPath::SmallLean)),
                    "stream" => Ok(Some(LinearPath::SmallStream)),
                    "vendor" => Ok(Some(LinearPath::Vendor)),
                    "wgmma" => Ok(Some(LinearPath::Wgmma)),
                    _ => Err(bad("--lin-path", s)),
                })
                .collect::<Result<Vec<_>>>()?,
            None => vec![None],
        };
        let splits = match get("--lin-split") {
            Some(v) => v
                .iter()
                .map(|s| s.parse().map(Some).map_err(|_| bad("--lin-split", s)))
                .collect::<Result<Vec<_>>>()?,
            None => vec![None],
        };
        Ok(LinOpts {
            read_pattern: args.iter().any(|a| a == "--lin-read-pattern"),
            splits,
            fmts: get("--lin-fmt"),
            ms,
            shapes,
            paths,
        })
    }
}

fn path_code(p: LinearPath) -> i32 {
    match p {
        LinearPath::Gemv => 1,
        LinearPath::Mma => 2,
        LinearPath::Small => 3,
        LinearPath::SmallLean => 4,
        LinearPath::Vendor => 5,
        LinearPath::Wgmma => 6,
        LinearPath::SmallStream => 7,
    }
}

fn path_label(p: LinearPath) -> &'static str {
    match p {
        LinearPath::Gemv => "gemv",
        LinearPath::Mma => "mma",
        LinearPath::Small => "small",
        LinearPath::SmallLean => "lean",
        LinearPath::SmallStream => "stream",
        LinearPath::Vendor => "vendor",
        LinearPath::Wgmma => "wgmma",
    }
}

/// Times one format and shape at every M on every path of `paths` (None: the automatic plan).
pub fn run(
    b: &Bench,
    fmt: Fmt,
    k: usize,
    n: usize,
    ms_list: &[usize],
    paths: &[Option<LinearPath>],
    splits: &[Option<usize>],
) -> Result<Vec<LinRow>> {
    let dt = Dt::F16;
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ (k * 31 + n) as u64);
    let max_m = *ms_list.iter().max().unwrap_or(&1);
    let mut rows = Vec::new();
    if fmt == Fmt::Dense {
        let wbytes = n * k * 2;
        let sets = b.sets_for(wbytes);
        let mut w = Pool::new(wbytes, sets)?;
        w.fill_float(dt, -0.05, 0.05, 5)?;
        let mut x = Pool::new(max_m * k * 2, 2)?;
        x.fill_float(dt, -1.0, 1.0, 6)?;
        let out = Pool::new(max_m * n * 2, 2)?;
        // Dense weights have the GEMV, the tiles and the vendor GEMM.
        let vendor = paradec::cuda::kernels::vendor_gemm_available();
        if !vendor && paths.contains(&Some(LinearPath::Vendor)) {
            println!("# vendor path skipped: cuBLASLt could not be loaded");
        }
        let dense_paths: Vec<LinearPath> = paths
            .iter()
            .flatten()
            .copied()
            .filter(|p| match p {
                LinearPath::Small
                | LinearPath::SmallLean
                | LinearPath::SmallStream
                | LinearPath::Wgmma => false,
                LinearPath::Vendor => vendor,
                _ => true,
            })
            .collect();
        let auto = paths.iter().any(Option::is_none) || dense_paths.is_empty();
        for &m in ms_list {
            // The automatic plan for dense weights: the vendor GEMM, else the GEMV up to 8 rows
            // and the tiles beyond.
            let mut chosen: Vec<LinearPath> = Vec::new();
            if auto {
                chosen.push(if vendor {
                    LinearPath::Vendor
                } else if m <= 8 {
                    LinearPath::Gemv
                } else {
                    LinearPath::Mma
                });
            }
            for p in &dense_paths {
                if !chosen.contains(p) {
                    chosen.push(*p);
                }
            }
            for lp in chosen {
                let path = path_code(lp);
                let mut launch = |i: usize, st: &CudaStream| -> Result<()> {
                    // SAFETY: pool sets sized for [n, k] weights, [max_m, k] x and [max_m, n] out.
                    status(
                        unsafe {
                            ffi::paradec_linear(
                                dt.code(),
                                x.ptr(i % 2),
                                m,
                                k,
                                w.ptr(i),
                                n,
                                ptr::null(),
                                out.ptr(i % 2),
                                0,
                                path,
                                st.raw(),
                            )
                        },
                        "paradec_linear",
                    )
                };
                let t = b.time(sets, &mut launch)?;
                rows.push(LinRow {
                    fmt: fmt.name(),
                    k,
                    n,
                    m,
                    bytes: wbytes + m * (k + n) * 2,
                    ckpt_bytes: wbytes + m * (k + n) * 2,
                    t,
                    path: path_label(lp),
                    split: 1,
                });
            }
        }
        return Ok(rows);
    }
    // Quantized: groups of 128 rows = 4 tiles each.
    let np = n.div_ceil(8) * 8;
    let groups = k / 128;
    let gb = fmt.group_bits(groups);
    let ntiles = groups * 4;
    let mut tiles = Vec::with_capacity(ntiles * 2);
    let mut wr = 0u32;
    for (g, &bits) in gb.iter().enumerate() {
        for _ in 0..4 {
            tiles.push(wr);
            tiles.push(g as u32 | (bits << 24));
            wr += bits;
        }
    }
    let word_rows = wr as usize;
    let uniform = if gb.iter().all(|&x| x == gb[0]) {
        gb[0] as i32
    } else {
        0
    };
    let wbytes = word_rows * np * 4;
    let words: Vec<u8> = (0..wbytes / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    let sz: Vec<u8> = (0..groups * np)
        .flat_map(|i| {
            let s = 0.001 + (i % 7) as f32 * 1e-4;
            let z = -(((i % 5) + 6) as f32) * s;
            [s.to_le_bytes(), z.to_le_bytes()].concat()
        })
        .collect();
    let perm: Option<Vec<u8>> = fmt.permuted().then(|| {
        let mut p: Vec<i32> = (0..k as i32).collect();
        for i in (1..k).rev() {
            p.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        p.iter().flat_map(|v| v.to_le_bytes()).collect()
    });
    let per_set = wbytes + sz.len();
    let sets = b.sets_for(per_set);
    let mut wp = Pool::new(wbytes, sets)?;
    wp.fill_bytes(&words)?;
    let mut szp = Pool::new(sz.len(), sets)?;
    szp.fill_bytes(&sz)?;
    let tb: Vec<u8> = tiles.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut tp = Pool::new(tb.len(), 1)?;
    tp.fill_bytes(&tb)?;
    let rp = match &perm {
        Some(p) => {
            let mut r = Pool::new(p.len(), 1)?;
            r.fill_bytes(p)?;
            Some(r)
        }
        None => None,
    };
    let mut x = Pool::new(max_m * k * 2, 2)?;
    x.fill_float(dt, -1.0, 1.0, 6)?;
    let out = Pool::new(max_m * n * 2, 2)?;
    let qw = |i: usize| ffi::paradec_qweight {
        words: wp.ptr(i) as *const u32,
        tiles: tp.ptr(0) as *const u32,
        sz: szp.ptr(i) as *const f32,
        row_src: rp.as_ref().map_or(ptr::null(), |r| r.ptr(0) as *const i32),
        k,
        n,
        np,
        kp: k,
        ntiles,
        groups,
        word_rows,
        bits: uniform,
    };
    let props = cuda::properties(0)?;
    let runs: Vec<(usize, Option<LinearPath>, Option<usize>)> = ms_list
        .iter()
        .flat_map(|&m| {
            paths
                .iter()
                .flat_map(move |&p| splits.iter().map(move |&sp| (m, p, sp)))
        })
        .collect();
    for (m, forced, split) in runs {
        let auto = paradec::ops::select_linear(
            m,
            k,
            n,
            paradec::ops::LinearFormat::Quant {
                bits: uniform as u32,
            },
            props.multiprocessors as usize,
            props.compute_capability,
        );
        // A forced streaming path takes the split its own rule gives.
        let plan = match forced {
            None => auto,
            Some(p) => {
                // The rows and width for which select_linear picks p itself.
                let (bits, rows) = if matches!(
                    p,
                    LinearPath::Small | LinearPath::SmallLean | LinearPath::SmallStream
                ) {
                    (4, m.min(32))
                } else {
                    (3, m.min(8))
                };
                let own = paradec::ops::select_linear(
                    rows,
                    k,
                    n,
                    paradec::ops::LinearFormat::Quant { bits },
                    props.multiprocessors as usize,
                    props.compute_capability,
                );
                paradec::ops::LinearPlan {
                    path: p,
                    split: match p {
                        LinearPath::Mma | LinearPath::Wgmma => 1,
                        LinearPath::SmallStream => {
                            paradec::ops::stream_grid(props.multiprocessors as usize)
                        }
                        _ => own.split,
                    },
                }
            }
        };
        let plan = match split {
            // On wgmma the split is its rows of x per block (64, 128 or 256).
            Some(sp) if plan.path != LinearPath::Mma => paradec::ops::LinearPlan {
                path: plan.path,
                split: sp,
            },
            _ => plan,
        };
        let path = path_code(plan.path);
        let q0 = qw(0);
        // SAFETY: a size computation on the host.
        let need = unsafe {
            ffi::paradec_quant_linear_scratch(dt.code(), &q0, m, path, plan.split as i32)
        };
        let scratch = DeviceBuffer::zeroed(0, need.max(256))?;
        let mut counters = kept_counters()?;
        let mut launch = |i: usize, st: &CudaStream| -> Result<()> {
            let q = qw(i);
            let kept = paradec::cuda::kernels::zeroed_counters_ffi(Some(&mut counters), st);
            // SAFETY: every array of q is a live pool set of the layout's size; x, out and the
            // scratch are sized for m rows; the kept counters are zero between launches.
            status(
                unsafe {
                    ffi::paradec_quant_linear(
                        dt.code(),
                        x.ptr(i % 2),
                        m,
                        &q,
                        ptr::null(),
                        out.ptr(i % 2),
                        0,
                        path,
                        plan.split as i32,
                        scratch.as_ptr() as *mut c_void,
                        scratch.len(),
                        kept.as_ref().map_or(ptr::null(), |k| k as *const _),
                        st.raw(),
                    )
                },
                "paradec_quant_linear",
            )
        };
        let t = b.time(sets, &mut launch)?;
        rows.push(LinRow {
            fmt: fmt.name(),
            k,
            n,
            m,
            bytes: per_set + m * (k + n) * 2 + perm.as_ref().map_or(0, Vec::len),
            ckpt_bytes: wbytes
                + fmt.checkpoint_scale_bytes(groups, n)
                + m * (k + n) * 2
                + perm
                    .as_ref()
                    .map_or(0, |p| fmt.checkpoint_perm_bytes(p.len())),
            t,
            // The wgmma launcher runs the mma.sync tiles where the widths mix.
            path: if plan.path == LinearPath::Wgmma && uniform == 0 {
                "mma"
            } else {
                path_label(plan.path)
            },
            split: plan.split,
        });
    }
    Ok(rows)
}

/// Every format × shape × M (as `opts` narrows them); prints the table and returns CSV lines.
pub fn run_all(b: &Bench, quick: bool, read_bw: f64, opts: &LinOpts) -> Result<String> {
    let shapes: Vec<(usize, usize)> = if let Some(s) = &opts.shapes {
        s.clone()
    } else if quick {
        vec![(4096, 12288), (8192, 28672)]
    } else {
        vec![
            (4096, 4096),
            (4096, 12288),
            (4096, 16384),
            (16384, 4096),
            (8192, 8192),
            (8192, 28672),
        ]
    };
    let ms = opts
        .ms
        .clone()
        .unwrap_or_else(|| vec![1usize, 2, 4, 8, 16, 32, 64, 128, 512, 2048]);
    let mut csv = String::from(
        "kernel,dtype,shape,us_b2b,us_graph,bytes,gbps,pct_read,floor_us,x_floor,path,ckpt_floor_us,x_ckpt_floor\n",
    );
    if opts.read_pattern {
        read_pattern_table(b, &shapes, read_bw)?;
    }
    println!(
        "\n| linear | K×N | M | path | µs (b2b) | µs (graph) | GB/s | floor µs | × floor | checkpoint floor µs | × checkpoint floor | TFLOPS |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for fmt in Fmt::ALL {
        if let Some(f) = &opts.fmts {
            if !f.iter().any(|f| fmt.name().contains(f.as_str())) {
                continue;
            }
        }
        for &(k, n) in &shapes {
            for r in run(b, fmt, k, n, &ms, &opts.paths, &opts.splits)? {
                let best = r.t.b2b_us.min(r.t.graph_us);
                let gbps = r.bytes as f64 / (best * 1e-6) / 1e9;
                let floor = r.bytes as f64 / read_bw * 1e6;
                let ckpt_floor = r.ckpt_bytes as f64 / read_bw * 1e6;
                let tflops = 2.0 * (r.m * r.k * r.n) as f64 / (best * 1e-6) / 1e12;
                // The path, with its K split where it has one.
                let path = if r.split > 1 {
                    format!("{}/{}", r.path, r.split)
                } else {
                    r.path.to_string()
                };
                println!(
                    "| {} | {}x{} | {} | {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
                    r.fmt,
                    r.k,
                    r.n,
                    r.m,
                    path,
                    r.t.b2b_us,
                    r.t.graph_us,
                    gbps,
                    floor,
                    best / floor,
                    ckpt_floor,
                    best / ckpt_floor,
                    tflops
                );
                csv.push_str(&format!(
                    "linear_{},f16,{}x{}x{},{:.3},{:.3},{},{:.1},{:.1},{:.3},{:.3},{},{:.3},{:.3}\n",
                    r.fmt,
                    r.m,
                    r.k,
                    r.n,
                    r.t.b2b_us,
                    r.t.graph_us,
                    r.bytes,
                    gbps,
                    100.0 * gbps * 1e9 / read_bw,
                    floor,
                    best / floor,
                    r.path,
                    ckpt_floor,
                    best / ckpt_floor
                ));
            }
        }
    }
    Ok(csv)
}

/// The 4-bit weights of each K×N read alone, as the small-M lean loop reads them (16 bytes a lane
/// per tile of 32 rows × 128 columns, two batches of 4 tiles in flight, blocks of 32, 64 or all
/// tiles of a column block) but with no decoding, products, staging or split sums: how close the
/// access pattern itself gets to the read bandwidth, against which the linear's own time tells
/// what its arithmetic and bookkeeping cost. Both the prepared layout (a tile is 4 word rows of
/// the whole width) and one where each column block's tiles lie contiguously.
fn read_pattern_table(b: &Bench, shapes: &[(usize, usize)], read_bw: f64) -> Result<()> {
    println!(
        "\n| weights read alone | K×N | tiles a block | blocks | layout | µs (b2b) | µs (graph) | GB/s | × floor |\n|---|---|---|---|---|---|---|---|---|"
    );
    for &(k, n) in shapes {
        if k % 32 != 0 || n % 128 != 0 {
            continue;
        }
        let bytes = k / 2 * n;
        let ntiles = k / 32;
        // Enough copies that a rotation through them overflows the L2 three times.
        let sets = (3 * b.l2 / bytes + 1).max(1);
        let mut words = DeviceBuffer::alloc(0, bytes * sets)?;
        words.memset(0x5A)?;
        let mut tps_all = vec![32, 64, ntiles];
        tps_all.retain(|&t| t <= ntiles);
        tps_all.dedup();
        for tps in tps_all {
            let blocks = n / 128 * ntiles.div_ceil(tps);
            let sink = DeviceBuffer::zeroed(0, blocks * 4)?;
            for rows in [true, false] {
                let mut launch = |set: usize, st: &CudaStream| -> Result<()> {
                    // SAFETY: `words` holds `sets` copies of ntiles·4 rows of n u32 (bytes each,
                    // set < sets), `sink` one u32 per block.
                    let code = unsafe {
                        ffi::paradec_read_tiles(
                            (words.as_ptr() as *const u8).add(set * bytes) as *const c_void,
                            n,
                            ntiles,
                            tps,
                            rows as i32,
                            sink.as_ptr() as *mut c_void,
                            st.raw(),
                        )
                    };
                    status(code, "paradec_read_tiles")
                };
                let t = b.time(sets, &mut launch)?;
                let best = t.b2b_us.min(t.graph_us);
                let floor = bytes as f64 / read_bw * 1e6;
                println!(
                    "| 4-bit | {k}x{n} | {tps} | {blocks} | {} | {:.2} | {:.2} | {:.0} | {:.2} |",
                    if rows { "rows" } else { "contiguous" },
                    t.b2b_us,
                    t.graph_us,
                    bytes as f64 / (best * 1e-6) / 1e9,
                    best / floor
                );
            }
        }
    }
    Ok(())
}
