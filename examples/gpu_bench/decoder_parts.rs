//! One decode step of a layer against its parts (`gpu_bench --decoder-parts`), each replayed
//! from a CUDA graph: the grouped input projections, the summed output and down projections,
//! the attention over the cache, and those three in one graph — the step without its norm,
//! rotary + cache write, q/k/v split and gated activation launches. What the step takes beyond
//! the three together is what those small launches cost where they sit; what the three take
//! beyond their bytes' time is what the linears and the attention cost. The step, the parts and
//! the three together rotate through `COPIES` layers and caches, so that no replay finds the
//! weights or keys of the one before in L2.

use std::ffi::c_void;
use std::ptr;

use super::attention::fill_big;
use super::decoder::{bench_layers, checkpoint_bytes, step_state, time_us};
use super::*;
use paradec::arch::MlpKind;
use paradec::layers::linear::Linear;
use paradec::vocab::Activation;
use paradec::{ArchParams, AttnParams, DType, Device, ParallelDecoder, Stream, Tensor, Workspace};

/// Layers (and caches) each measurement rotates through: GPT-J-6B's output and down
/// projections alone are 42 MB, near an H100's 50 MiB L2; four copies put three others' bytes
/// between two replays of one.
const COPIES: usize = 4;

/// Replays per timing sample.
const REPS: usize = 20;

/// A layer's projections in the roles a decode step gives them: the input projections (one
/// grouped launch, a plain MLP's activation in its store), the output projection and the MLP's
/// last projection (one summed launch into the residual).
struct Roles<'a> {
    input: Vec<&'a Linear>,
    acts: Vec<Option<Activation>>,
    o_proj: &'a Linear,
    down: &'a Linear,
}

impl<'a> Roles<'a> {
    /// From `ParallelDecoder::linears`' order: q, k, v (or the fused qkv), the output
    /// projection, then the MLP's (fc_in, fc_out) or (gate, up, down).
    fn of(layer: &'a ParallelDecoder, mlp: MlpKind) -> Result<Self> {
        let all = layer.linears();
        let (mlp_n, act) = match mlp {
            MlpKind::Plain(a) => (2, Some(a)),
            MlpKind::Gated(_) => (3, None),
        };
        if all.len() < mlp_n + 2 {
            return Err(Error::bad_input(format!(
                "decoder parts: {} projections, expected at least {}",
                all.len(),
                mlp_n + 2
            )));
        }
        let qkv_n = all.len() - 1 - mlp_n;
        let input: Vec<&Linear> = all[..qkv_n]
            .iter()
            .chain(&all[qkv_n + 1..all.len() - 1])
            .copied()
            .collect();
        // The plain MLP's fc_in (the first projection after q, k, v) stores its activation.
        let acts = (0..input.len())
            .map(|i| act.filter(|_| i == qkv_n))
            .collect();
        Ok(Roles {
            input,
            acts,
            o_proj: all[qkv_n],
            down: all[all.len() - 1],
        })
    }
}

/// One copy's inputs and outputs of the parts (device tensors and buffers the graphs read).
struct PartsIo {
    ws: Workspace,
    normed: Tensor,
    input_outs: Vec<Tensor>,
    ctx: Tensor,
    pre_down: Tensor,
    residual: Tensor,
    q: DeviceBuffer,
    cache_k: DeviceBuffer,
    cache_v: DeviceBuffer,
    attn_out: DeviceBuffer,
    past: DeviceBuffer,
    scratch: DeviceBuffer,
    scratch_bytes: usize,
}

/// The step's shapes for the parts.
struct Case<'a> {
    arch: &'a ArchParams,
    batch: usize,
    len: usize,
}

impl Case<'_> {
    fn io(&self, roles: &Roles, seed: usize) -> Result<PartsIo> {
        let (a, b, dev) = (self.arch, self.batch, Device::Cuda(0));
        let qd = a.heads * a.head_dim;
        let kvd = a.kv_heads * a.head_dim;
        let rand = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 37 + s * 11 + seed) % 101) as f32 - 50.0) * 2e-3)
                .collect()
        };
        let dense = |n: usize, shape: &[usize], s: usize| -> Result<Tensor> {
            Tensor::from_f32_as(&rand(n, s), shape, DType::F16)?.to_device(dev)
        };
        let capacity = self.len + 1;
        let cache_bytes = b * capacity * kvd * 2;
        let mut q = DeviceBuffer::alloc(0, b * qd * 2)?;
        fill_big(&mut q, Dt::F16, -2.0, 2.0, 1 + seed as u64)?;
        let mut cache_k = DeviceBuffer::alloc(0, cache_bytes)?;
        fill_big(&mut cache_k, Dt::F16, -2.0, 2.0, 2 + seed as u64)?;
        let mut cache_v = DeviceBuffer::alloc(0, cache_bytes)?;
        fill_big(&mut cache_v, Dt::F16, -2.0, 2.0, 3 + seed as u64)?;
        let past: Vec<u8> = (0..b)
            .flat_map(|_| (self.len as i64).to_le_bytes())
            .collect();
        // SAFETY: a pure size query.
        let scratch_bytes = unsafe {
            ffi::paradec_attention_scratch_bytes(b, 1, a.heads, a.kv_heads, a.head_dim, self.len)
        };
        Ok(PartsIo {
            ws: Workspace::for_model(a, b, capacity, dev, DType::F16)?,
            normed: dense(b * a.hidden, &[b, a.hidden], 1)?,
            input_outs: roles
                .input
                .iter()
                .map(|l| Tensor::zeros(&[b, l.out_features], DType::F16, dev))
                .collect::<Result<_>>()?,
            ctx: dense(b * qd, &[b, qd], 2)?,
            pre_down: dense(b * a.intermediate, &[b, a.intermediate], 3)?,
            residual: dense(b * a.hidden, &[b, a.hidden], 4)?,
            q,
            cache_k,
            cache_v,
            attn_out: DeviceBuffer::alloc(0, b * qd * 2)?,
            past: DeviceBuffer::from_host(0, &past)?,
            scratch: DeviceBuffer::zeroed(0, scratch_bytes.max(16))?,
            scratch_bytes,
        })
    }

    /// The grouped input projections, as the step launches them.
    fn inputs(&self, s: &Stream, roles: &Roles, io: &mut PartsIo) -> Result<()> {
        let mut calls: Vec<(&Linear, &Tensor, &mut Tensor)> = roles
            .input
            .iter()
            .zip(io.input_outs.iter_mut())
            .map(|(l, out)| (*l, &io.normed, out))
            .collect();
        Linear::forward_group(s, &mut io.ws, &mut calls, &roles.acts, &[])
    }

    /// The output and down projections summed into the residual, as the step launches them
    /// (two accumulating launches where the summed one does not apply).
    fn output_down(&self, s: &Stream, roles: &Roles, io: &mut PartsIo) -> Result<()> {
        let terms = [(roles.o_proj, &io.ctx), (roles.down, &io.pre_down)];
        if !Linear::forward_sum(s, &mut io.ws, &terms, None, &mut io.residual, &[])? {
            roles
                .o_proj
                .forward(s, &mut io.ws, &io.ctx, &mut io.residual, true, &[])?;
            roles
                .down
                .forward(s, &mut io.ws, &io.pre_down, &mut io.residual, true, &[])?;
        }
        Ok(())
    }

    /// Decode attention over `len` cached keys and the new one (the step's kernels, its
    /// combine included), from device past lengths as a captured step reads them.
    fn attention(&self, cs: &CudaStream, io: &PartsIo) -> Result<()> {
        let a = self.arch;
        // SAFETY: q and the output hold batch × heads × head_dim f16 values, the caches
        // batch × (len + 1) × kv_heads × head_dim, past `batch` i64 lengths of `len`, and the
        // scratch the size the query above asked for.
        let code = unsafe {
            ffi::paradec_attention(
                Dt::F16.code(),
                io.q.as_ptr(),
                io.cache_k.as_ptr(),
                io.cache_v.as_ptr(),
                io.attn_out.as_ptr() as *mut c_void,
                self.batch,
                1,
                a.heads,
                a.kv_heads,
                a.head_dim,
                self.len + 1,
                io.past.as_ptr() as *const i64,
                self.len,
                0,
                ptr::null(),
                0,
                1.0 / (a.head_dim as f32).sqrt(),
                io.scratch.as_ptr() as *mut c_void,
                io.scratch_bytes,
                cs.raw(),
            )
        };
        status(code, "paradec_attention")
    }
}

/// Median µs of one replay, rotating through `graphs`.
fn rotated_us(cs: &CudaStream, graphs: &[CudaGraph], samples: usize) -> Result<f64> {
    let mut i = 0;
    time_us(cs, samples, REPS, &mut || {
        i += 1;
        graphs[i % graphs.len()].launch(cs)
    })
}

/// Times each layer's decode step against its parts at the given batches (1 and 8 when None),
/// 1k and 8k cached keys (1k only when `quick`); prints a table.
pub fn parts_bench(quick: bool, only: Option<&str>, batches: Option<&[usize]>) -> Result<()> {
    let stream = CudaStream::new(0)?;
    let read_bw = super::linear::measure_read_bw(&stream, 7)?;
    let s = Stream::Cuda(stream);
    let Stream::Cuda(cs) = &s else { unreachable!() };
    let batches = batches.unwrap_or(&[1, 8]);
    let lens: &[usize] = if quick { &[1024] } else { &[1024, 8192] };
    let samples = if quick { 5 } else { 9 };
    println!(
        "# one decode step against its parts, f16, each from a CUDA graph rotating through {COPIES} copies; read bandwidth {:.0} GB/s\n",
        read_bw / 1e9
    );
    println!(
        "| layer | weights | batch | KV length | step µs | input projections µs | output + down µs | attention µs | the three in one graph µs | step − the three µs | weights' floor µs | checkpoint weights' floor µs | K/V floor µs | the three × their floor | the three × checkpoint floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for bl in bench_layers(only) {
        let bl = bl?;
        let (shape, exl2, arch, fmt) = (bl.shape, bl.exl2, &bl.arch, &bl.fmt);
        let mut layers = Vec::with_capacity(COPIES);
        for _ in 0..COPIES {
            let mut layer = bl.decoder()?;
            layer.load_as(Device::Cuda(0), DType::F16)?;
            layers.push(layer);
        }
        let wbytes = layers[0].weight_bytes();
        let ckpt_bytes = checkpoint_bytes(&layers[0], exl2, shape.group);
        for &batch in batches {
            for &len in lens {
                let case = Case { arch, batch, len };
                let step = step_us(&s, &case, &layers, samples)?;
                let roles: Vec<Roles> = layers
                    .iter()
                    .map(|l| Roles::of(l, arch.mlp))
                    .collect::<Result<_>>()?;
                let mut ios: Vec<PartsIo> = roles
                    .iter()
                    .enumerate()
                    .map(|(i, r)| case.io(r, i))
                    .collect::<Result<_>>()?;
                let mut capture = |part: &dyn Fn(&Roles, &mut PartsIo) -> Result<()>| {
                    let graphs = roles
                        .iter()
                        .zip(ios.iter_mut())
                        .map(|(r, io)| CudaGraph::capture(cs, |_| part(r, io)))
                        .collect::<Result<Vec<_>>>()?;
                    rotated_us(cs, &graphs, samples)
                };
                let input = capture(&|r, io| case.inputs(&s, r, io))?;
                let out_down = capture(&|r, io| case.output_down(&s, r, io))?;
                let attention = capture(&|_, io| case.attention(cs, io))?;
                let three = capture(&|r, io| {
                    case.inputs(&s, r, io)?;
                    case.attention(cs, io)?;
                    case.output_down(&s, r, io)
                })?;
                let w_floor = wbytes as f64 / read_bw * 1e6;
                let ckpt_floor = ckpt_bytes as f64 / read_bw * 1e6;
                let kv_floor =
                    (batch * 2 * len * arch.kv_heads * arch.head_dim * 2) as f64 / read_bw * 1e6;
                println!(
                        "| {} | {fmt} | {batch} | {len} | {step:.1} | {input:.1} | {out_down:.1} | {attention:.1} | {three:.1} | {:.1} | {w_floor:.1} | {ckpt_floor:.1} | {kv_floor:.1} | {:.2} | {:.2} |",
                        shape.name,
                        step - three,
                        three / (w_floor + kv_floor),
                        three / (ckpt_floor + kv_floor)
                    );
            }
        }
    }
    Ok(())
}

/// The whole step from `capture_decode`'s graphs, one per copy, rotating.
fn step_us(s: &Stream, case: &Case, layers: &[ParallelDecoder], samples: usize) -> Result<f64> {
    let Stream::Cuda(cs) = s else { unreachable!() };
    let (arch, batch, len, dev) = (case.arch, case.batch, case.len, Device::Cuda(0));
    let mut caches = Vec::with_capacity(layers.len());
    let mut hiddens = Vec::with_capacity(layers.len());
    for i in 0..layers.len() {
        let (cache, hidden) = step_state(arch, batch, len, i)?;
        caches.push(cache);
        hiddens.push(hidden);
    }
    let mut graphs = Vec::with_capacity(layers.len());
    for ((layer, hidden), cache) in layers.iter().zip(hiddens.iter_mut()).zip(caches.iter_mut()) {
        let ws = Workspace::for_model(arch, batch, len + 1, dev, DType::F16)?;
        graphs.push(layer.capture_decode(s, hidden, cache, ws, batch, 1, false)?);
    }
    let p = AttnParams::with_past(batch, 1, vec![len; batch]);
    let mut i = 0;
    time_us(cs, samples, REPS, &mut || {
        i += 1;
        let n = graphs.len();
        graphs[i % n].step(&p)
    })
}
