#!/usr/bin/env python3
"""Joins gpu_bench's CSV and bench_torch.py's CSV (same card, same run) into one markdown table:
paradec's µs, its share of the streaming-bandwidth floor, PyTorch's µs, and the speedup over
PyTorch (PyTorch µs / paradec µs), back-to-back and from CUDA graphs. Attention CSVs (with a
flops column) join against SDPA's flash and cuDNN rows.

    python3 scripts/bench_join.py paradec_bench.csv torch_bench.csv
    python3 scripts/bench_join.py --linear paradec_linear.csv torch_linear.csv
"""
import csv
import sys


def load(path):
    meta, rows = {}, {}
    with open(path) as f:
        lines = f.read().splitlines()
    body = []
    for line in lines:
        if line.startswith("#"):
            parts = line[1:].strip().split(",")
            meta.update(dict(zip(parts[::2], parts[1::2])))
        elif line.strip():
            body.append(line)
    for r in csv.DictReader(body):
        rows[(r["kernel"], r["dtype"], r["shape"])] = r
    return meta, rows


def attention(pm, ours, tm, theirs):
    """Attention rows: TFLOP/s (prefill) or KV GB/s (decode) beside SDPA's flash and cuDNN."""
    print(f"card: {pm.get('device', '?')} (PyTorch bench: {tm.get('device', '?')}, torch {tm.get('torch', '?')})")
    print(f"read-only bandwidth (paradec's probe): {pm.get('read_gbps', '?')} GB/s")
    print()
    print("| kernel | dtype | shape | paradec µs b2b | graph | TFLOP/s or GB/s | % of read floor "
          "| flash µs b2b | graph | cuDNN µs b2b | graph | vs flash b2b | graph | vs cuDNN b2b | graph |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, r in ours.items():
        ub, ug = float(r["us_b2b"]), float(r["us_graph"])
        rate = f"{float(r['tflops']):.0f} TFLOP/s" if float(r["flops"]) > 0 else f"{float(r['gbps']):.0f} GB/s"
        pct = f"{float(r['pct_read']):.0f}%" if float(r["bytes"]) > 0 else "–"
        cols, ratios = [], []
        for be in ("flash", "cudnn"):
            t = theirs.get((f"{key[0]}:{be}", key[1], key[2]))
            if t:
                tb, tg = float(t["us_b2b"]), float(t["us_graph"])
                cols.append(f"{tb:.2f} | {tg:.2f}")
                ratios.append(f"{tb / ub:.2f}x | {tg / ug:.2f}x")
            else:
                cols.append("– | –")
                ratios.append("– | –")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {ub:.2f} | {ug:.2f} | {rate} | {pct} | "
              f"{cols[0]} | {cols[1]} | {ratios[0]} | {ratios[1]} |")
def main_linear(ours_path, torch_path):
    """Linears: paradec per format against PyTorch fp16 F.linear and int4pack on the same shape."""
    pm, ours = load(ours_path)
    tm, theirs = load(torch_path)
    print(f"card: {pm.get('device', '?')}; read bandwidth (paradec's read-only reduction): {pm.get('read_gbps', '?')} GB/s; "
          f"PyTorch {tm.get('torch', '?')} on {tm.get('device', '?')}")
    print()
    print("| format | M×K×N | path | paradec µs b2b | graph | × floor | torch fp16 µs (best) | vs fp16 | torch int4 µs (best) | vs int4 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, r in ours.items():
        ub, ug = float(r["us_b2b"]), float(r["us_graph"])
        best = min(ub, ug)
        cols = []
        for tk, dt in (("linear_torch_f16", "f16"), ("linear_torch_int4", "bf16")):
            t = theirs.get((tk, dt, key[2]))
            if t:
                tb = min(float(t["us_b2b"]), float(t["us_graph"]))
                cols.append(f"{tb:.2f} | {tb / best:.2f}x")
            else:
                cols.append("– | –")
        print(f"| {key[0][7:]} | {key[2]} | {r.get('path', '')} | {ub:.2f} | {ug:.2f} | {float(r['x_floor']):.2f} | {cols[0]} | {cols[1]} |")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--linear":
        return main_linear(sys.argv[2], sys.argv[3])
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pm, ours = load(sys.argv[1])
    tm, theirs = load(sys.argv[2])
    if ours and "flops" in next(iter(ours.values())):
        return attention(pm, ours, tm, theirs)
    print(f"card: {pm.get('device', '?')} (PyTorch bench: {tm.get('device', '?')}, torch {tm.get('torch', '?')})")
    print(f"streaming bandwidth: paradec's copy {pm.get('stream_gbps', '?')} GB/s, PyTorch's {tm.get('stream_gbps', '?')} GB/s")
    print()
    print("| kernel | dtype | shape | paradec µs b2b | graph | % of BW floor | PyTorch µs b2b | graph | speedup b2b | speedup graph |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, r in ours.items():
        t = theirs.get(key)
        ub, ug = float(r["us_b2b"]), float(r["us_graph"])
        if t:
            tb, tg = float(t["us_b2b"]), float(t["us_graph"])
            tcols = f"{tb:.2f} | {tg:.2f} | {tb / ub:.2f}x | {tg / ug:.2f}x"
        else:
            tcols = "– | – | – | –"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {ub:.2f} | {ug:.2f} | {float(r['pct_stream']):.0f}% | {tcols} |")


if __name__ == "__main__":
    main()
