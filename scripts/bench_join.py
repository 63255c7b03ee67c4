#!/usr/bin/env python3
"""Joins gpu_bench's CSV and bench_torch.py's CSV (same card, same run) into one markdown table:
paradec's µs, its share of the streaming-bandwidth floor, PyTorch's µs, and the speedup over
PyTorch (PyTorch µs / paradec µs), back-to-back and from CUDA graphs.

    python3 scripts/bench_join.py paradec_bench.csv torch_bench.csv
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


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pm, ours = load(sys.argv[1])
    tm, theirs = load(sys.argv[2])
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
