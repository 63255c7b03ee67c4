//! One decode step of one parallel decoder layer, batch 1, through the whole Rust path
//! (`ParallelDecoder::forward` with a planned workspace and an f16 KV cache on the device):
//! GPT-J-6B-, Command-R-08-2024- and Falcon-7B-shaped layers with random GPTQ-4 g128 and EXL2
//! uniform 4-bit g128 weights, at several cached lengths and batches 1, 8 and 32. The floor is
//! (the layer's weight bytes + the K/V bytes the step reads) / the read bandwidth measured in
//! the same run; the checkpoint floor counts the weights' bytes in their checkpoint's format
//! instead of the device layout's (`checkpoint_bytes`). Each step is timed launched eagerly (host work included) and replayed from a
//! CUDA graph (`ParallelDecoder::capture_decode`; the host restages the step's tables).
//! `--decoder-batches 2,4` times only those batches at 1k keys (no prefill).

use super::linear::{Fmt, XorShift};
use super::*;
use paradec::{
    ArchParams, AttnParams, DType, Device, KvCache, ParallelDecoder, Stream, Tensor, Weights,
    Workspace,
};
use std::time::Instant;

pub(super) struct Shape {
    pub(super) name: &'static str,
    config: &'static str,
    /// Rows per quantization group (128, or 64 where 128 does not divide the widths).
    pub(super) group: usize,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "gptj-6b",
        group: 128,
        config: r#"{"model_type":"gptj","n_embd":4096,"n_head":16,"n_layer":1,"rotary_dim":64,
            "n_inner":16384,"vocab_size":64,"n_positions":65536,"layer_norm_epsilon":1e-5}"#,
    },
    Shape {
        name: "command-r",
        group: 128,
        config: r#"{"model_type":"cohere","hidden_size":8192,"num_attention_heads":64,
            "num_key_value_heads":8,"num_hidden_layers":1,"intermediate_size":22528,
            "vocab_size":64,"max_position_embeddings":65536,"layer_norm_eps":1e-5}"#,
    },
    Shape {
        name: "falcon-7b",
        group: 64,
        config: r#"{"model_type":"falcon","hidden_size":4544,"num_attention_heads":71,
            "num_hidden_layers":1,"multi_query":true,"parallel_attn":true,"bias":false,
            "new_decoder_architecture":false,"alibi":false,"vocab_size":64,
            "max_position_embeddings":65536,"layer_norm_epsilon":1e-5}"#,
    },
];

/// The bytes `layer`'s 4-bit projections take in their checkpoint's own format: the codes
/// plus, per group and column, GPTQ's f16 scale and packed 4-bit zero (2.5 bytes) or EXL2's
/// packed 4-bit scale code (0.5 bytes) and per-group f16 maximum (`Fmt::checkpoint_scale_bytes`).
/// The device layout keeps an f32 (scale, −zero·scale) pair per group and column instead
/// (8 bytes), which `weight_bytes` counts: at 4 bits the pairs add 12.5% to the codes' bytes at
/// groups of 128 (GPTQ's own scales and zeros 3.9%, EXL2's 0.8%) and 25% at groups of 64. The
/// norms are counted as `weight_bytes` counts them.
pub(super) fn checkpoint_bytes(layer: &ParallelDecoder, exl2: bool, group: usize) -> usize {
    let linears = layer.linears();
    let device: usize = linears.iter().map(|l| l.weight_bytes()).sum();
    let checkpoint: usize = linears
        .iter()
        .map(|l| {
            let (k, n) = (l.in_features, l.out_features);
            let fmt = if exl2 { Fmt::Exl2(4) } else { Fmt::Gptq4Act };
            k * n / 2 + fmt.checkpoint_scale_bytes(k.div_ceil(group), n)
        })
        .sum();
    layer.weight_bytes() - device + checkpoint
}

/// A bench layer's architecture with 4-bit weights (EXL2 or GPTQ, the shape's group size), and
/// the format's name for the tables.
fn shape_arch(shape: &Shape, exl2: bool) -> Result<(ArchParams, String)> {
    let fmt = format!("{}-4 g{}", if exl2 { "exl2" } else { "gptq" }, shape.group);
    let mut cfg: serde_json::Value = serde_json::from_str(shape.config)
        .map_err(|e| Error::bad_input(format!("{}: {e}", shape.name)))?;
    cfg["quantization_config"] = if exl2 {
        serde_json::json!({"quant_method": "exl2", "bits": 4.0})
    } else {
        serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": shape.group,
            "desc_act": false, "sym": true})
    };
    Ok((ArchParams::from_json(&cfg)?, fmt))
}

/// A decode step's state on the device: an f16 cache of `len + 1` positions with `len` written
/// (batch sequences, one layer) and a hidden state of `batch` rows (`seed` varies its values).
pub(super) fn step_state(
    arch: &ArchParams,
    batch: usize,
    len: usize,
    seed: usize,
) -> Result<(KvCache, Tensor)> {
    let dev = Device::Cuda(0);
    let mut cache = KvCache::new(
        1,
        batch,
        len + 1,
        arch.kv_heads,
        arch.head_dim,
        DType::F16,
        dev,
    )?;
    cache.record_written(0, &vec![0; batch], len)?;
    let x: Vec<f32> = (0..batch * arch.hidden)
        .map(|j| (((j * 37 + seed) % 101) as f32 - 50.0) * 1e-3)
        .collect();
    let hidden = Tensor::from_f32_as(&x, &[batch, arch.hidden], DType::F16)?.to_device(dev)?;
    Ok((cache, hidden))
}

/// One bench layer's inputs: its shape and format, its architecture with the format's name for
/// the tables, random weights and the layer's key in them.
pub(super) struct BenchLayer {
    pub(super) shape: &'static Shape,
    pub(super) exl2: bool,
    pub(super) arch: ArchParams,
    pub(super) fmt: String,
    pub(super) weights: Weights,
    pub(super) key: String,
}

impl BenchLayer {
    /// The layer, in host memory.
    pub(super) fn decoder(&self) -> Result<ParallelDecoder> {
        ParallelDecoder::new(&self.arch, &self.weights, &self.key, 0, 0, 0)
    }
}

/// Both formats (GPTQ, then EXL2) of every shape whose name contains `only` (all when None),
/// each built as it is reached.
pub(super) fn bench_layers(only: Option<&str>) -> impl Iterator<Item = Result<BenchLayer>> + '_ {
    SHAPES
        .iter()
        .filter(move |s| only.is_none_or(|o| s.name.contains(o)))
        .flat_map(|shape| [false, true].map(|exl2| (shape, exl2)))
        .map(|(shape, exl2)| {
            let (arch, fmt) = shape_arch(shape, exl2)?;
            let weights = layer_weights(&arch, exl2, shape.group)?;
            let key = format!("{}.0", arch.names.layer_prefix);
            Ok(BenchLayer {
                shape,
                exl2,
                arch,
                fmt,
                weights,
                key,
            })
        })
}

/// Random packed tensors of one projection [n_out, k_in] in GPTQ-4 g128 or EXL2-4 g128 form.
fn packed(
    prefix: &str,
    k: usize,
    n: usize,
    exl2: bool,
    gs: usize,
    rng: &mut XorShift,
) -> Vec<(String, DType, Vec<usize>, Vec<u8>)> {
    let words = |count: usize, rng: &mut XorShift| -> Vec<u8> {
        (0..count)
            .flat_map(|_| (rng.next() as u32).to_le_bytes())
            .collect()
    };
    let f16s = |count: usize, lo: f32, rng: &mut XorShift| -> Vec<u8> {
        (0..count)
            .flat_map(|_| {
                let u = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
                half::f16::from_f32(lo * (1.0 + u)).to_le_bytes()
            })
            .collect()
    };
    let groups = k / gs;
    if exl2 {
        let mut perm: Vec<i32> = (0..k as i32).collect();
        for i in (1..k).rev() {
            perm.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let q_groups: Vec<u8> = (0..groups)
            .flat_map(|g| [4i16.to_le_bytes(), ((g * gs / 8) as i16).to_le_bytes()].concat())
            .collect();
        vec![
            (
                format!("{prefix}.q_weight"),
                DType::I32,
                vec![k / 8, n],
                words(k / 8 * n, rng),
            ),
            (
                format!("{prefix}.q_invperm"),
                DType::I32,
                vec![k],
                perm.iter().flat_map(|p| p.to_le_bytes()).collect(),
            ),
            (
                format!("{prefix}.q_scale"),
                DType::I32,
                vec![groups, n / 8],
                words(groups * n / 8, rng),
            ),
            (
                format!("{prefix}.q_scale_max"),
                DType::F16,
                vec![groups],
                f16s(groups, 0.01, rng),
            ),
            (
                format!("{prefix}.q_groups"),
                DType::I16,
                vec![2 * groups],
                q_groups,
            ),
        ]
    } else {
        vec![
            (
                format!("{prefix}.qweight"),
                DType::I32,
                vec![k / 8, n],
                words(k / 8 * n, rng),
            ),
            (
                format!("{prefix}.qzeros"),
                DType::I32,
                vec![groups, n / 8],
                words(groups * n / 8, rng),
            ),
            (
                format!("{prefix}.scales"),
                DType::F16,
                vec![groups, n],
                f16s(groups * n, 0.001, rng),
            ),
        ]
    }
}

/// A one-layer model's tensors for `arch` with random packed projections.
fn layer_weights(arch: &ArchParams, exl2: bool, gs: usize) -> Result<Weights> {
    weights_of(&layer_tensors(arch, exl2, gs))
}

type Entry = (String, DType, Vec<usize>, Vec<u8>);

fn weights_of(t: &[Entry]) -> Result<Weights> {
    let entries: Vec<(&str, DType, &[usize], &[u8])> = t
        .iter()
        .map(|(name, dt, shape, bytes)| (name.as_str(), *dt, shape.as_slice(), bytes.as_slice()))
        .collect();
    Weights::from_memory(&entries)
}

/// Layer 0's tensors (random packed projections, unit norms).
fn layer_tensors(arch: &ArchParams, exl2: bool, gs: usize) -> Vec<Entry> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let n = &arch.names;
    let key = |s: &str| format!("{}.0.{s}", n.layer_prefix);
    let mut t: Vec<(String, DType, Vec<usize>, Vec<u8>)> = Vec::new();
    let (h, qd, kvd) = (
        arch.hidden,
        arch.heads * arch.head_dim,
        arch.kv_heads * arch.head_dim,
    );
    let mut proj = |name: &str, k: usize, out: usize, t: &mut Vec<_>| {
        t.extend(packed(&key(name), k, out, exl2, gs, &mut rng));
    };
    if n.qkv.len() == 3 {
        proj(n.qkv[0], h, qd, &mut t);
        proj(n.qkv[1], h, kvd, &mut t);
        proj(n.qkv[2], h, kvd, &mut t);
    } else {
        proj(n.qkv[0], h, arch.qkv_width(), &mut t);
    }
    proj(n.out_proj, qd, h, &mut t);
    let widths: Vec<(usize, usize)> = if n.mlp.len() == 3 {
        vec![
            (h, arch.intermediate),
            (h, arch.intermediate),
            (arch.intermediate, h),
        ]
    } else {
        vec![(h, arch.intermediate), (arch.intermediate, h)]
    };
    for (m, (k, o)) in n.mlp.iter().zip(widths) {
        proj(m, k, o, &mut t);
    }
    let ones: Vec<u8> = (0..h).flat_map(|_| half::f16::ONE.to_le_bytes()).collect();
    let zeros: Vec<u8> = vec![0; 2 * h];
    for norm in [Some(n.norm_attn), n.norm_mlp.filter(|_| arch.two_norms)]
        .into_iter()
        .flatten()
    {
        t.push((
            key(&format!("{norm}.weight")),
            DType::F16,
            vec![h],
            ones.clone(),
        ));
        if arch.norm_bias {
            t.push((
                key(&format!("{norm}.bias")),
                DType::F16,
                vec![h],
                zeros.clone(),
            ));
        }
    }
    t
}

/// Random f16 values in ±scale, as little-endian bytes.
fn f16_bytes(n: usize, scale: f32, rng: &mut XorShift) -> Vec<u8> {
    (0..n)
        .flat_map(|_| {
            let u = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
            half::f16::from_f32(scale * (2.0 * u - 1.0)).to_le_bytes()
        })
        .collect()
}

/// Whole-model decode: a 32-layer GPT-J-6B-shaped model (vocabulary 50400, f16 embedding and
/// head, 4-bit layers — every layer carries the same random codes), batch 1, tokens/s over 64
/// decode steps after a cache of `len` positions.
pub fn model_bench(quick: bool) -> Result<()> {
    let stream = CudaStream::new(0)?;
    let read_bw = super::linear::measure_read_bw(&stream, 7)?;
    let s = Stream::Cuda(stream);
    let Stream::Cuda(cs) = &s else { unreachable!() };
    println!(
        "# 32-layer GPT-J-6B-shaped model, batch 1, f16, eager and from a CUDA graph; read bandwidth {:.0} GB/s\n",
        read_bw / 1e9
    );
    println!(
        "| weights | KV length | eager ms / token | graph ms / token | graph tokens/s | floor ms | graph × floor | checkpoint floor ms | graph × checkpoint floor | load + prepare s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let gptj = SHAPES[0].config.replace("\"n_layer\":1", "\"n_layer\":32");
    let gptj = gptj.replace("\"vocab_size\":64", "\"vocab_size\":50400");
    for exl2 in [false, true] {
        let mut cfg: serde_json::Value =
            serde_json::from_str(&gptj).map_err(|e| Error::bad_input(e.to_string()))?;
        cfg["quantization_config"] = if exl2 {
            serde_json::json!({"quant_method": "exl2", "bits": 4.0})
        } else {
            serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": 128,
                "desc_act": false, "sym": true})
        };
        let arch = ArchParams::from_json(&cfg)?;
        let one = layer_tensors(&arch, exl2, 128);
        let layer0 = format!("{}.0.", arch.names.layer_prefix);
        let mut t: Vec<Entry> = Vec::new();
        for i in 0..arch.num_layers {
            let li = format!("{}.{i}.", arch.names.layer_prefix);
            t.extend(
                one.iter()
                    .map(|(n, d, sh, b)| (n.replacen(&layer0, &li, 1), *d, sh.clone(), b.clone())),
            );
        }
        let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
        let (h, v) = (arch.hidden, arch.vocab);
        let names = &arch.names;
        t.push((
            format!("{}.weight", names.embed),
            DType::F16,
            vec![v, h],
            f16_bytes(v * h, 0.02, &mut rng),
        ));
        t.push((
            format!("{}.weight", names.final_norm),
            DType::F16,
            vec![h],
            f16_bytes(h, 1.0, &mut rng),
        ));
        if arch.norm_bias {
            t.push((
                format!("{}.bias", names.final_norm),
                DType::F16,
                vec![h],
                f16_bytes(h, 0.1, &mut rng),
            ));
        }
        if !arch.tie_embeddings {
            t.push((
                format!("{}.weight", names.head),
                DType::F16,
                vec![v, h],
                f16_bytes(v * h, 0.02, &mut rng),
            ));
            if arch.head_bias {
                t.push((
                    format!("{}.bias", names.head),
                    DType::F16,
                    vec![v],
                    f16_bytes(v, 0.1, &mut rng),
                ));
            }
        }
        let weights = weights_of(&t)?;
        drop(t);
        let t0 = Instant::now();
        let mut model = paradec::Model::from_weights(arch.clone(), &weights)?;
        model.load_as(Device::Cuda(0), DType::F16)?;
        let load_s = t0.elapsed().as_secs_f64();
        drop(weights);
        // Every weight is read once per token except the embedding (one row).
        let wbytes = model.weight_bytes() - v * h * 2;
        let ckpt_bytes = wbytes
            - model
                .layers()
                .iter()
                .map(|l| l.weight_bytes() - checkpoint_bytes(l, exl2, 128))
                .sum::<usize>();
        for &len in if quick {
            &[1024][..]
        } else {
            &[1024, 8192][..]
        } {
            let steps = 64;
            let cap = len + 2 * steps + 8;
            let mut cache = KvCache::for_model(&arch, 1, cap, DType::F16, Device::Cuda(0))?;
            for l in 0..arch.num_layers {
                cache.record_written(l, &[0], len)?;
            }
            let ws = || Workspace::for_model(&arch, 1, cap, Device::Cuda(0), DType::F16);
            // ms per token over `steps` decode steps after 4 of warm-up, each at the next
            // position.
            let per_token = |step: &mut dyn FnMut(&AttnParams) -> Result<()>,
                             past: &mut usize|
             -> Result<f64> {
                for _ in 0..4 {
                    step(&AttnParams::with_past(1, 1, vec![*past]))?;
                    *past += 1;
                }
                let (e0, e1) = (CudaEvent::new(0)?, CudaEvent::new(0)?);
                e0.record(cs)?;
                for _ in 0..steps {
                    step(&AttnParams::with_past(1, 1, vec![*past]))?;
                    *past += 1;
                }
                e1.record(cs)?;
                e1.synchronize()?;
                Ok(e0.elapsed_ms(&e1)? as f64 / steps as f64)
            };
            let mut past = len;
            let mut w = ws()?;
            let eager = per_token(
                &mut |p| {
                    model
                        .forward(&s, &[17], p, Some(&mut cache), &mut w)
                        .map(|_| ())
                },
                &mut past,
            )?;
            let mut g = model.capture_decode(&s, &mut cache, ws()?, 1, 1, false)?;
            let graph = per_token(&mut |p| g.step(&[17], p).map(|_| ()), &mut past)?;
            drop(g);
            let kv = 2 * (len + steps) * arch.kv_heads * arch.head_dim * 2 * arch.num_layers;
            let floor_ms = (wbytes + kv) as f64 / read_bw * 1e3;
            let ckpt_ms = (ckpt_bytes + kv) as f64 / read_bw * 1e3;
            println!(
                "| {} | {len} | {eager:.3} | {graph:.3} | {:.0} | {floor_ms:.3} | {:.2} | {ckpt_ms:.3} | {:.2} | {load_s:.1} |",
                if exl2 { "exl2-4 g128" } else { "gptq-4 g128" },
                1e3 / graph,
                graph / floor_ms,
                graph / ckpt_ms
            );
        }
    }
    Ok(())
}

/// Median µs of `reps` calls of `f` queued back to back on `cs`, over `samples` samples.
pub(super) fn time_us(
    cs: &CudaStream,
    samples: usize,
    reps: usize,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<f64> {
    f()?;
    let (e0, e1) = (CudaEvent::new(0)?, CudaEvent::new(0)?);
    let mut v = Vec::new();
    for _ in 0..samples {
        e0.record(cs)?;
        for _ in 0..reps {
            f()?;
        }
        e1.record(cs)?;
        e1.synchronize()?;
        v.push(e0.elapsed_ms(&e1)? as f64 * 1e3 / reps as f64);
    }
    Ok(median(v))
}

/// A 2048-token prefill of one layer (batch 1, into an empty cache) against the sum of its
/// projections and its attention, each timed alone on the same shapes.
fn prefill_row(
    s: &Stream,
    arch: &ArchParams,
    layer: &ParallelDecoder,
    fmt: &str,
    name: &str,
) -> Result<()> {
    let Stream::Cuda(cs) = s else { unreachable!() };
    let t = 2048;
    let dev = Device::Cuda(0);
    let rand = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed) % 101) as f32 - 50.0) * 2e-3)
            .collect()
    };
    let mut ws = Workspace::for_model(arch, t, t, dev, DType::F16)?;
    let mut cache = KvCache::new(1, 1, t, arch.kv_heads, arch.head_dim, DType::F16, dev)?;
    let x = Tensor::from_f32_as(&rand(t * arch.hidden, 1), &[t, arch.hidden], DType::F16)?
        .to_device(dev)?;
    let mut hidden = x.try_clone()?;
    let p = AttnParams::new(1, t);
    let whole = time_us(cs, 5, 3, &mut || {
        cache.clear();
        layer.forward(s, &mut hidden, Some(&mut cache), &p, &[], &mut ws)
    })?;
    // The projections alone.
    let mut parts = 0.0;
    for l in layer.linears() {
        let xin =
            Tensor::from_f32_as(&rand(t * l.in_features, 2), &[t, l.in_features], DType::F16)?
                .to_device(dev)?;
        let mut out = Tensor::zeros(&[t, l.out_features], DType::F16, dev)?;
        parts += time_us(cs, 5, 3, &mut || {
            l.forward(s, &mut ws, &xin, &mut out, false, &[])
        })?;
    }
    // The attention alone (causal over the 2048 new tokens).
    let (qd, kvd) = (arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim);
    let q = Tensor::from_f32_as(&rand(t * qd, 3), &[t, qd], DType::F16)?.to_device(dev)?;
    let ck = Tensor::from_f32_as(&rand(t * kvd, 4), &[1, t, kvd], DType::F16)?.to_device(dev)?;
    let cv = Tensor::from_f32_as(&rand(t * kvd, 5), &[1, t, kvd], DType::F16)?.to_device(dev)?;
    let mut ctx = Tensor::zeros(&[t, qd], DType::F16, dev)?;
    let shape = paradec::vocab::AttnShape {
        batch: 1,
        q_len: t,
        heads: arch.heads,
        kv_heads: arch.kv_heads,
        head_dim: arch.head_dim,
        capacity: t,
    };
    let past = [0usize];
    let masking = paradec::vocab::AttnMasking {
        past_len: &past,
        window: 0,
        mask: None,
        mask_stride: 0,
    };
    let scale = 1.0 / (arch.head_dim as f32).sqrt();
    parts += time_us(cs, 5, 3, &mut || {
        paradec::ops::attention(s, &mut ws, &q, &ck, &cv, &shape, &masking, scale, &mut ctx)
    })?;
    println!(
        "| {name} | {fmt} | prefill 2048 | {whole:.0} µs | projections + attention alone: {parts:.0} µs | {:.2}× |",
        whole / parts
    );
    Ok(())
}

/// Times decode steps; prints a table.
/// `only`: the layers whose name contains it (all when None); `batches`: only these batches,
/// at 1k keys, and no prefill (all the default cases when None).
pub fn main_bench(quick: bool, only: Option<&str>, batches: Option<&[usize]>) -> Result<()> {
    let stream = CudaStream::new(0)?;
    let read_bw = super::linear::measure_read_bw(&stream, 7)?;
    let s = Stream::Cuda(stream);
    let lens: &[usize] = if quick {
        &[1024, 8192]
    } else {
        &[1024, 4096, 8192, 16384, 32768]
    };
    println!(
        "# one layer, one decode step, f16, eager and replayed from a CUDA graph; read bandwidth {:.0} GB/s\n",
        read_bw / 1e9
    );
    println!(
        "| layer | weights | batch | KV length | eager µs | graph µs | floor µs | graph × floor | checkpoint floor µs | graph × checkpoint floor | prepare ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for bl in bench_layers(only) {
        let bl = bl?;
        let (shape, exl2, arch, fmt) = (bl.shape, bl.exl2, &bl.arch, &bl.fmt);
        let mut layer = bl.decoder()?;
        let t0 = Instant::now();
        layer.load_as(Device::Cuda(0), DType::F16)?;
        let prepare_ms = t0.elapsed().as_secs_f64() * 1e3;
        let wbytes = layer.weight_bytes();
        let ckpt_bytes = checkpoint_bytes(&layer, exl2, shape.group);
        let mut cases: Vec<(usize, usize)> = lens.iter().map(|&l| (1, l)).collect();
        for batch in [8, 32] {
            cases.push((batch, 1024));
            if !quick {
                cases.push((batch, 8192));
            }
        }
        if let Some(b) = batches {
            cases = b.iter().map(|&b| (b, 1024)).collect();
        }
        for (batch, len) in cases {
            let dev = Device::Cuda(0);
            let (mut cache, mut hidden) = step_state(arch, batch, len, 0)?;
            let ws = || Workspace::for_model(arch, batch, len + 1, dev, DType::F16);
            let p = AttnParams::with_past(batch, 1, vec![len; batch]);
            let Stream::Cuda(cs) = &s else { unreachable!() };
            let samples = if quick { 5 } else { 9 };
            let mut w = ws()?;
            let eager = time_us(cs, samples, 20, &mut || {
                layer.forward(&s, &mut hidden, Some(&mut cache), &p, &[], &mut w)
            })?;
            if w.overflow_bytes() > 0 {
                println!("(workspace plan too small by {} bytes)", w.overflow_bytes());
            }
            let mut g =
                layer.capture_decode(&s, &mut hidden, &mut cache, ws()?, batch, 1, false)?;
            let graph = time_us(cs, samples, 20, &mut || g.step(&p))?;
            drop(g);
            let kv_bytes = batch * 2 * len * arch.kv_heads * arch.head_dim * 2;
            let floor_us = (wbytes + kv_bytes) as f64 / read_bw * 1e6;
            let ckpt_us = (ckpt_bytes + kv_bytes) as f64 / read_bw * 1e6;
            println!(
                    "| {} | {fmt} | {batch} | {len} | {eager:.1} | {graph:.1} | {floor_us:.1} | {:.2} | {ckpt_us:.1} | {:.2} | {prepare_ms:.0} |",
                    shape.name,
                    graph / floor_us,
                    graph / ckpt_us
                );
        }
        if batches.is_none() {
            prefill_row(&s, arch, &layer, fmt, shape.name)?;
        }
    }
    Ok(())
}
