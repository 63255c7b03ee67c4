#!/usr/bin/env python3
"""PyTorch's versions of paradec's kernels, timed exactly as examples/gpu_bench.rs times them
(docs/GPU.md's timing protocol): warm up; R back-to-back calls between two CUDA events, divided by R;
the median of several samples; inputs rotated through sets larger than 3x the L2 cache; and the
same calls replayed from a CUDA graph. Prints the same table and writes the same CSV columns, so
scripts/bench_join.py can put the two side by side.

    python3 scripts/bench_torch.py [--quick] [--csv FILE] [--only SUBSTRING]
    python3 scripts/bench_torch.py --attention [--quick] [--csv FILE]

    python3 scripts/bench_torch.py --decoder [--quick] [--csv FILE]

--decoder times a PyTorch fp16 version of gpu_bench --decoder's layers (GPT-J-6B, Command-R
08-2024 and Falcon-7B shapes: norm, q/k/v, rotary, cache write, SDPA over the cache, output
projection and MLP, x + attn + mlp) for one decode step, eager and captured in a CUDA graph,
at the same batches and KV lengths; rows are named decoder_torch_f16.

--attention times F.scaled_dot_product_attention under its flash and its cuDNN backends on the
shapes of `gpu_bench --attention` (prefill TFLOP/s with causal FLOPs counted as half; decode µs
and KV GB/s); rows are named attn_prefill:flash, attn_decode:cudnn, ...
"""
import argparse
import math
import statistics

import torch
import torch.nn.functional as F

EPS = 1e-5


def median(v):
    return statistics.median(v)


class Bench:
    def __init__(self, samples):
        self.samples = samples
        props = torch.cuda.get_device_properties(0)
        self.l2 = getattr(props, "L2_cache_size", 50 << 20)
        self.name = props.name

    def sets_for(self, bytes_per_set):
        return max(2, min(4096, math.ceil(3 * self.l2 / max(1, bytes_per_set))))

    def time(self, sets, fn):
        """Median µs per call, back-to-back and from a CUDA graph; fn(i) runs on set i."""
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        for i in range(3):
            fn(i % sets)
        torch.cuda.synchronize()
        e0.record()
        for i in range(10):
            fn(i % sets)
        e1.record()
        e1.synchronize()
        est_us = max(0.5, e0.elapsed_time(e1) * 1e3 / 10)
        reps = int(min(2000, max(5, 1500 / est_us)))
        b2b = []
        k = 0
        for _ in range(self.samples):
            e0.record()
            for _ in range(reps):
                fn(k % sets)
                k += 1
            e1.record()
            e1.synchronize()
            b2b.append(e0.elapsed_time(e1) * 1e3 / reps)
        greps = min(reps, 256)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                fn(i % sets)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(greps):
                fn(i % sets)
        g.replay()
        torch.cuda.synchronize()
        gr = []
        for _ in range(self.samples):
            e0.record()
            g.replay()
            e1.record()
            e1.synchronize()
            gr.append(e0.elapsed_time(e1) * 1e3 / greps)
        del g
        return median(b2b), median(gr)


def rand(shape, dtype, lo=-2.0, hi=2.0):
    return torch.empty(shape, dtype=dtype, device="cuda").uniform_(lo, hi)


def case(b, kernel, dtype, rows, cols):
    """(bytes moved per call, b2b µs, graph µs) for one kernel and shape, or None."""
    eb = 2
    n = rows * cols
    mat = n * eb
    if kernel in ("rms_norm", "layer_norm", "add_rms_norm", "layer_norm2"):
        ins, outs = {"add_rms_norm": (2, 2), "layer_norm2": (1, 2)}.get(kernel, (1, 1))
        per = (ins + outs) * mat
        sets = b.sets_for(per)
        xs = [rand((rows, cols), dtype) for _ in range(sets)]
        rs = [rand((rows, cols), dtype, -1e-3, 1e-3) for _ in range(sets)] if kernel == "add_rms_norm" else None
        w = [rand((cols,), dtype, 0.5, 1.5) for _ in range(2)]
        bias = [rand((cols,), dtype, -0.5, 0.5) for _ in range(2)]
        if kernel == "rms_norm":
            fn = lambda i: F.rms_norm(xs[i], (cols,), w[0], EPS)
        elif kernel == "layer_norm":
            fn = lambda i: F.layer_norm(xs[i], (cols,), w[0], bias[0], EPS)
        elif kernel == "add_rms_norm":
            def fn(i):
                xs[i].add_(rs[i])
                return F.rms_norm(xs[i], (cols,), w[0], EPS)
        else:
            def fn(i):
                return (F.layer_norm(xs[i], (cols,), w[0], bias[0], EPS),
                        F.layer_norm(xs[i], (cols,), w[1], bias[1], EPS))
        return (per,) + b.time(sets, fn)
    if kernel == "rope_cache":
        head_dim = 128
        heads = cols // head_dim
        kv = max(1, heads // 4)
        if rows >= 1024:
            batch, q_len, past = 1, rows, 0
        else:
            batch, q_len, past = rows, 1, 1000
        capacity = past + q_len
        tok = batch * q_len
        qb, kb = tok * heads * head_dim * eb, tok * kv * head_dim * eb
        per = 2 * qb + 2 * kb + kb + 2 * kb + tok * 8
        sets = b.sets_for(per)
        qs = [rand((batch, q_len, heads, head_dim), dtype) for _ in range(sets)]
        ks = [rand((batch, q_len, kv, head_dim), dtype) for _ in range(sets)]
        vs = [rand((batch, q_len, kv, head_dim), dtype) for _ in range(sets)]
        pos = (torch.arange(q_len, device="cuda") + past).repeat(batch, 1)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device="cuda").float() / head_dim))
        cache_k = rand((batch, capacity, kv, head_dim), dtype)
        cache_v = rand((batch, capacity, kv, head_dim), dtype)
        bidx = torch.arange(batch, device="cuda")[:, None]
        slots = pos  # past + t

        def rotate_half(x):
            x1, x2 = x[..., : head_dim // 2], x[..., head_dim // 2:]
            return torch.cat((-x2, x1), dim=-1)

        def fn(i):
            # As HF: cos/sin from positions, q·cos + rotate_half(q)·sin, then the cache write.
            freqs = pos[..., None].float() * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = emb.cos().to(dtype)[:, :, None, :]
            sin = emb.sin().to(dtype)[:, :, None, :]
            q, k = qs[i], ks[i]
            q.copy_(q * cos + rotate_half(q) * sin)
            k.copy_(k * cos + rotate_half(k) * sin)
            cache_k[bidx, slots] = k
            cache_v[bidx, slots] = vs[i]
        return (per,) + b.time(sets, fn)
    if kernel in ("gelu", "silu_mul", "add"):
        per = (2 if kernel == "gelu" else 3) * mat
        sets = b.sets_for(per)
        xs = [rand((rows, cols), dtype) for _ in range(sets)]
        ys = [rand((rows, cols), dtype, -1e-3, 1e-3) for _ in range(sets)] if kernel != "gelu" else None
        if kernel == "gelu":
            fn = lambda i: F.gelu(xs[i])
        elif kernel == "silu_mul":
            fn = lambda i: F.silu(xs[i]) * ys[i]
        else:
            fn = lambda i: xs[i].add_(ys[i])
        return (per,) + b.time(sets, fn)
    if kernel == "embedding":
        vocab = 32000
        per = 2 * mat + rows * 4
        sets = b.sets_for(per)
        table = rand((vocab, cols), dtype)
        ids = [torch.randint(0, vocab, (rows,), device="cuda", dtype=torch.int32) for _ in range(sets)]
        fn = lambda i: F.embedding(ids[i], table)
        return (per,) + b.time(sets, fn)
    return None


KERNELS = ["rms_norm", "layer_norm", "add_rms_norm", "layer_norm2", "rope_cache", "gelu",
           "silu_mul", "add", "embedding"]


def stream_bw(samples):
    n = 256 << 20
    a = torch.zeros(n, dtype=torch.uint8, device="cuda")
    c = torch.zeros_like(a)
    e0 = torch.cuda.Event(enable_timing=True)
    e1 = torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        c.copy_(a)
    t = []
    for _ in range(samples):
        e0.record()
        for _ in range(10):
            c.copy_(a)
        e1.record()
        e1.synchronize()
        t.append(e0.elapsed_time(e1) * 1e-3 / 10)
    return 2 * n / median(t)


def attention_rows(b, quick, only=None):
    """SDPA under each backend on gpu_bench's attention shapes (--only attn_prefill or attn_decode
    keeps one of the two)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backends = (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION))
    rows = []

    def timed(name, sets, fn, backend):
        def call(i):
            with sdpa_kernel([backend]):
                return fn(i)
        try:
            return b.time(sets, call)
        except Exception as e:  # a backend that refuses a shape
            print(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            return None

    ss = [2048, 8192] if quick else [512, 2048, 8192, 16384]
    if only and only not in "attn_prefill":
        ss = []
    for dt, dn in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
        for d in (64, 128, 256):
            for s in ss:
                batch, heads = 16384 // s, 2048 // d
                per = 4 * batch * heads * s * d * 2
                sets = b.sets_for(per)
                qs = [rand((batch, heads, s, d), dt) for _ in range(sets)]
                ks = [rand((batch, heads, s, d), dt) for _ in range(sets)]
                vs = [rand((batch, heads, s, d), dt) for _ in range(sets)]
                flops = 4 * s * s * d * heads * batch / 2
                shape = f"b{batch}_h{heads}_s{s}_d{d}"
                for bn, be in backends:
                    fn = lambda i: F.scaled_dot_product_attention(qs[i], ks[i], vs[i], is_causal=True)
                    t = timed(f"prefill {bn} {dn} {shape}", sets, fn, be)
                    if t:
                        rows.append((f"attn_prefill:{bn}", dn, shape, t[0], t[1], flops, 0))
                        print(f"prefill {bn} {dn} {shape}: {flops / min(t) / 1e6:.0f} TFLOP/s")
                del qs, ks, vs
                torch.cuda.empty_cache()
    ls = [1024, 32768] if quick else [1024, 8192, 32768, 131072]
    if only and only not in "attn_decode":
        ls = []
    for kv in (32, 8):
        for batch in (1, 8, 32):
            for L in ls:
                kv_bytes = 2 * batch * L * kv * 128 * 2
                if kv_bytes > 40e9:
                    print(f"decode b{batch} L{L} kv{kv}: skipped ({kv_bytes / 1e9:.0f} GB of KV)")
                    continue
                sets = b.sets_for(kv_bytes)
                qs = [rand((batch, 32, 1, 128), torch.float16) for _ in range(sets)]
                ks = [rand((batch, kv, L, 128), torch.float16) for _ in range(sets)]
                vs = [rand((batch, kv, L, 128), torch.float16) for _ in range(sets)]
                shape = f"b{batch}_L{L}_kv{kv}"
                for bn, be in backends:
                    fn = lambda i: F.scaled_dot_product_attention(qs[i], ks[i], vs[i], enable_gqa=(kv != 32))
                    t = timed(f"decode {bn} {shape}", sets, fn, be)
                    if t:
                        rows.append((f"attn_decode:{bn}", "f16", shape, t[0], t[1], 0, kv_bytes))
                        print(f"decode {bn} {shape}: {t[0]:.2f} µs b2b, {t[1]:.2f} µs graph")
                del qs, ks, vs
                torch.cuda.empty_cache()
    return rows


def main_attention(a):
    b = Bench(7 if a.quick else 15)
    print(f"# PyTorch {torch.__version__} on {b.name}")
    rows = attention_rows(b, a.quick, a.only)
    lines = ["kernel,dtype,shape,us_b2b,us_graph,flops,bytes,tflops,gbps,pct_read"]
    for k, dn, sh, ub, ug, fl, by in rows:
        best = min(ub, ug) * 1e-6
        lines.append(f"{k},{dn},{sh},{ub:.3f},{ug:.3f},{fl:.0f},{by:.0f},{fl / best / 1e12:.1f},"
                     f"{by / best / 1e9:.1f},0")
    print("\n".join(lines))
    if a.csv:
        with open(a.csv, "w") as f:
            f.write(f"# device,{b.name},torch,{torch.__version__}\n")
            f.write("\n".join(lines) + "\n")


# (name, hidden, heads, kv_heads, head_dim, rotary dims, mlp, gated): gpu_bench --decoder's layers.
DECODER_SHAPES = [
    ("gptj-6b", 4096, 16, 16, 256, 64, 16384, False),
    ("command-r", 8192, 64, 8, 128, 128, 22528, True),
    ("falcon-7b", 4544, 71, 1, 64, 64, 4 * 4544, False),
]


def decoder_rows(b, quick):
    """One decode step of a parallel-residual layer in PyTorch fp16: eager and from a graph."""
    rows = []
    dt = torch.float16
    cases = [(1, L) for L in ([1024, 8192] if quick else [1024, 4096, 8192, 16384, 32768])]
    cases += [(bs, L) for bs in (8, 32) for L in ([1024] if quick else [1024, 8192])]
    for name, h, nh, kvh, d, rot, inter, gated in DECODER_SHAPES:
        w = lambda o, i: torch.randn(o, i, device="cuda", dtype=dt) * (1.0 / math.sqrt(i))
        wq, wk, wv, wo = w(nh * d, h), w(kvh * d, h), w(kvh * d, h), w(h, nh * d)
        mlp = [w(inter, h), w(inter, h), w(h, inter)] if gated else [w(inter, h), w(h, inter)]
        ln = torch.nn.LayerNorm(h, device="cuda", dtype=dt)
        wbytes = 2 * sum(t.numel() for t in [wq, wk, wv, wo] + mlp)
        inv = 1.0 / (10000 ** (torch.arange(0, rot, 2, device="cuda", dtype=torch.float32) / rot))
        for bs, L in cases:
            kc = torch.randn(bs, kvh, L + 1, d, device="cuda", dtype=dt)
            vc = torch.randn(bs, kvh, L + 1, d, device="cuda", dtype=dt)
            pos = torch.full((1,), L, device="cuda", dtype=torch.long)
            x = torch.randn(bs, 1, h, device="cuda", dtype=dt) * 0.1

            def rope(t):
                f = pos.float()[:, None] * inv[None, :]
                cos, sin = f.cos().to(dt), f.sin().to(dt)
                r, p = t[..., :rot], t[..., rot:]
                r1, r2 = r[..., : rot // 2], r[..., rot // 2:]
                return torch.cat([r1 * cos - r2 * sin, r2 * cos + r1 * sin, p], dim=-1)

            def step(_i):
                n = ln(x)
                q = F.linear(n, wq).view(bs, 1, nh, d).transpose(1, 2)
                k = F.linear(n, wk).view(bs, 1, kvh, d).transpose(1, 2)
                v = F.linear(n, wv).view(bs, 1, kvh, d).transpose(1, 2)
                q, k = rope(q), rope(k)
                kc.index_copy_(2, pos, k)
                vc.index_copy_(2, pos, v)
                a = F.scaled_dot_product_attention(q, kc, vc, enable_gqa=(kvh != nh))
                a = F.linear(a.transpose(1, 2).reshape(bs, 1, nh * d), wo)
                if gated:
                    m = F.linear(F.silu(F.linear(n, mlp[0])) * F.linear(n, mlp[1]), mlp[2])
                else:
                    m = F.linear(F.gelu(F.linear(n, mlp[0]), approximate="tanh"), mlp[1])
                return x + a + m

            try:
                ub, ug = b.time(1, step)
            except Exception as e:  # out of memory at the largest shapes: say so
                print(f"decoder {name} b{bs} L{L}: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
                continue
            kvb = 2 * bs * L * kvh * d * 2
            rows.append(("decoder_torch_f16", "f16", f"{name}_b{bs}_L{L}", ub, ug, wbytes + kvb))
            print(f"| {name} | {bs} | {L} | {ub:.1f} | {ug:.1f} |")
            del kc, vc
            torch.cuda.empty_cache()
        del wq, wk, wv, wo, mlp
        torch.cuda.empty_cache()
    return rows


LINEAR_SHAPES = [(4096, 4096), (4096, 12288), (4096, 16384), (16384, 4096), (8192, 8192), (8192, 28672)]
LINEAR_MS = [1, 2, 4, 8, 16, 32, 64, 128, 512, 2048]


def linear_cases(b, quick):
    """F.linear fp16 and aten._weight_int4pack_mm (4-bit, groups of 128, bf16) on the shapes of
    gpu_bench's linears; rows keyed as gpu_bench's linear CSV (shape MxKxN)."""
    out = []
    shapes = [(4096, 12288), (8192, 28672)] if quick else LINEAR_SHAPES
    for k, n in shapes:
        wbytes = n * k * 2
        sets = b.sets_for(wbytes)
        ws = [torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.05 for _ in range(sets)]
        xs = torch.randn(max(LINEAR_MS), k, device="cuda", dtype=torch.float16)
        for m in LINEAR_MS:
            x = xs[:m]
            ub, ug = b.time(sets, lambda i: F.linear(x, ws[i]))
            out.append(("linear_torch_f16", "f16", f"{m}x{k}x{n}", ub, ug, wbytes + m * (k + n) * 2))
        del ws
        torch.cuda.empty_cache()
        # int4 with bf16 activations (the op's dtype); packed once per set.
        try:
            qbytes = n * k // 2 + (k // 128) * n * 4
            sets = b.sets_for(qbytes)
            codes = torch.randint(0, 16, (n, k), device="cuda", dtype=torch.int32)
            packed = torch.ops.aten._convert_weight_to_int4pack(
                ((codes[:, 1::2] << 4) | codes[:, ::2]).to(torch.uint8), 8)
            sz = (torch.rand(k // 128, n, 2, device="cuda", dtype=torch.bfloat16) * 0.01)
            ps = [packed.clone() for _ in range(sets)]
            zs = [sz.clone() for _ in range(sets)]
            xb = xs.to(torch.bfloat16)
            for m in LINEAR_MS:
                x = xb[:m]
                ub, ug = b.time(sets, lambda i: torch.ops.aten._weight_int4pack_mm(x, ps[i], 128, zs[i]))
                out.append(("linear_torch_int4", "bf16", f"{m}x{k}x{n}", ub, ug, qbytes + m * (k + n) * 2))
            del ps, zs
        except Exception as e:  # an op missing in this build: say so, keep the fp16 rows
            print(f"# _weight_int4pack_mm unavailable: {e}")
        torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attention", action="store_true")
    ap.add_argument("--decoder", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--csv")
    ap.add_argument("--only")
    a = ap.parse_args()
    if a.attention:
        return main_attention(a)
    b = Bench(7 if a.quick else 15)
    bw = stream_bw(b.samples)
    print(f"# PyTorch {torch.__version__} on {b.name}; streaming bandwidth (256 MiB copy): {bw / 1e9:.0f} GB/s")
    if a.decoder or (a.only and "linear" in a.only):
        if a.decoder:
            print("| layer | batch | KV length | eager µs | graph µs |\n|---|---|---|---|---|")
        rows = decoder_rows(b, a.quick) if a.decoder else linear_cases(b, a.quick)
        lines = ["kernel,dtype,shape,us_b2b,us_graph,bytes,gbps,pct_stream"]
        for k, dn, sh, ub, ug, per in rows:
            gbps = per / (min(ub, ug) * 1e-6) / 1e9
            print(f"| {k} | {dn} | {sh} | {ub:.2f} | {ug:.2f} | {gbps:.0f} |")
            lines.append(f"{k},{dn},{sh},{ub:.3f},{ug:.3f},{per},{gbps:.1f},{100 * gbps * 1e9 / bw:.1f}")
        if a.csv:
            with open(a.csv, "w") as f:
                f.write(f"# device,{b.name},stream_gbps,{bw / 1e9:.1f},torch,{torch.__version__}\n")
                f.write("\n".join(lines) + "\n")
        return
    shapes = ([(16384, 4096), (1, 4096), (64, 8192)] if a.quick else
              [(16384, 4096), (1, 4096), (8, 4096), (64, 4096), (1, 8192), (8, 8192), (64, 8192)])
    rows_out = []
    for k in KERNELS:
        if a.only and a.only not in k:
            continue
        for dt, dn in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
            for r, c in shapes:
                res = case(b, k, dt, r, c)
                if res is None:
                    continue
                per, us_b2b, us_graph = res
                rows_out.append((k, dn, f"{r}x{c}", us_b2b, us_graph, per))
                torch.cuda.empty_cache()
    lines = ["kernel,dtype,shape,us_b2b,us_graph,bytes,gbps,pct_stream"]
    print("\n| kernel | dtype | shape | µs (b2b) | µs (graph) | GB/s | % of stream BW |")
    print("|---|---|---|---|---|---|---|")
    for k, dn, sh, ub, ug, per in rows_out:
        best = min(ub, ug)
        gbps = per / (best * 1e-6) / 1e9
        pct = 100 * gbps * 1e9 / bw
        print(f"| {k} | {dn} | {sh} | {ub:.2f} | {ug:.2f} | {gbps:.0f} | {pct:.0f}% |")
        lines.append(f"{k},{dn},{sh},{ub:.3f},{ug:.3f},{per},{gbps:.1f},{pct:.1f}")
    if a.csv:
        with open(a.csv, "w") as f:
            f.write(f"# device,{b.name},stream_gbps,{bw / 1e9:.1f},torch,{torch.__version__}\n")
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
