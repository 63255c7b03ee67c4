#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/). Standard library only.

Seeds are small valid inputs (and a few near-valid ones) in each target's input encoding; see the
doc comment at the top of each fuzz_targets/*.rs file.
"""
import json
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(1234)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes) -> safetensors file bytes."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def i32s(vals):
    return struct.pack(f"<{len(vals)}i", *vals)


def i16s(vals):
    return struct.pack(f"<{len(vals)}h", *vals)


def f16s(vals):
    return struct.pack(f"<{len(vals)}e", *vals)


def rand_words(n):
    return [rng.randint(-(2**31), 2**31 - 1) for _ in range(n)]


def gptq_file(k, n, bits, gs, act, bias):
    groups = 1 if gs == -1 else -(-k // gs)
    rows = -(-k * bits // 32)
    zcols = -(-n * bits // 32)
    t = [
        ("l.qweight", "I32", [rows, n], i32s(rand_words(rows * n))),
        ("l.qzeros", "I32", [groups, zcols], i32s(rand_words(groups * zcols))),
        ("l.scales", "F16", [groups, n], f16s([rng.uniform(0.001, 0.1) for _ in range(groups * n)])),
    ]
    if act:
        perm = list(range(k))
        rng.shuffle(perm)
        g_idx = [0] * k
        size = k if gs == -1 else gs
        for j, p in enumerate(perm):
            g_idx[p] = j // size
        t.append(("l.g_idx", "I32", [k], i32s(g_idx)))
    if bias:
        t.append(("l.bias", "F16", [n], f16s([rng.uniform(-1, 1) for _ in range(n)])))
    return safetensors(t)


GROUP_SIZES = [-1, 4, 8, 16, 32, 64, 128, 0, -2, 3]


def gptq_seed(mode, bits, gs, k, n, flags_extra=0, act=False, v2=False, bias=False):
    f = {2: 0, 3: 1, 4: 2, 8: 3}[bits] | (4 if act else 0) | (8 if v2 else 0) | flags_extra
    head = bytes([mode, f, GROUP_SIZES.index(gs)]) + struct.pack("<HH", k - 1, n - 1)
    if mode == 0:
        return head + gptq_file(k, n, bits, gs, act, bias)
    # perturbation selector 7 = none, delta 1 = none, flags: g_idx (4) and bias (8) present.
    return head + bytes([7, 1, 4 | 8]) + bytes(rng.randrange(256) for _ in range(256))


def exl2_file(k, n, groups, bias, perm=True):
    """groups: list of (bits, rows) in stored order."""
    n_pad = -(-n // 32) * 32
    q_groups, packed = [], 0
    for bits, rows in groups:
        q_groups += [bits, packed]
        packed += -(-rows * bits // 32)
    ng = len(groups)
    inv = list(range(k))
    if perm:
        rng.shuffle(inv)
    t = [
        ("l.q_weight", "I32", [packed, n_pad], i32s(rand_words(packed * n_pad))),
        ("l.q_invperm", "I32", [k], i32s(inv)),
        ("l.q_scale", "I32", [ng, n_pad // 8], i32s(rand_words(ng * n_pad // 8))),
        ("l.q_scale_max", "F16", [ng], f16s([rng.uniform(0.01, 0.5) for _ in range(ng)])),
        ("l.q_groups", "I16", [2 * ng], i16s(q_groups)),
    ]
    if bias:
        t.append(("l.bias", "F16", [n], f16s([rng.uniform(-1, 1) for _ in range(n)])))
    return safetensors(t)


def exl2_seed(k, n, groups, bias=False):
    return bytes([0]) + struct.pack("<HH", k - 1, n - 1) + exl2_file(k, n, groups, bias)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(data)


# safetensors_load
write("safetensors_load", "gptq_layer", gptq_file(64, 40, 4, 32, True, True))
write("safetensors_load", "exl2_layer", exl2_file(100, 40, [(6, 32), (4, 32), (4, 32), (3, 4)], True))
write(
    "safetensors_load",
    "floats",
    safetensors(
        [
            ("a.weight", "F32", [2, 3], struct.pack("<6f", *range(6))),
            ("b", "BF16", [4], b"\x80\x3f" * 4),
            ("c", "F16", [1, 1, 2], f16s([1.0, -2.0])),
            ("d", "I64", [2], struct.pack("<2q", 1, -1)),
            ("e", "U8", [3], b"abc"),
            ("f", "I8", [0], b""),
        ],
        metadata={"format": "pt"},
    ),
)
write("safetensors_load", "empty", safetensors([]))

# gptq_load: raw files for each width, and structured inputs
for bits in (2, 3, 4, 8):
    write("gptq_load", f"raw_b{bits}_g32", gptq_seed(0, bits, 32, 64, 40, act=(bits == 4), bias=True))
    write("gptq_load", f"raw_b{bits}_gall", gptq_seed(0, bits, -1, 96, 33, v2=True))
    write("gptq_load", f"structured_b{bits}", gptq_seed(1, bits, 16, 80, 24, act=(bits % 2 == 0)))
write("gptq_load", "raw_b4_g128_k100", gptq_seed(0, 4, 128, 100, 7))

# exl2_load: raw files with mixed widths, and structured inputs
write("exl2_load", "raw_mixed", exl2_seed(100, 40, [(6, 32), (4, 32), (4, 32), (3, 4)], bias=True))
write("exl2_load", "raw_all_widths", exl2_seed(200, 9, [(8, 32), (6, 32), (5, 32), (4, 32), (3, 32), (2, 40)]))
write("exl2_load", "raw_2bit_16", exl2_seed(48, 64, [(2, 16), (2, 16), (2, 16)]))
for i in range(6):
    k, n = rng.randrange(1, 300), rng.randrange(1, 90)
    head = bytes([1]) + struct.pack("<HH", k - 1, n - 1)
    specs = bytes([i + 2] + [rng.randrange(256) for _ in range(i + 3)])
    tail = bytes([0 if i < 4 else rng.randrange(256), rng.randrange(256)])
    write("exl2_load", f"structured_{i}", head + specs + tail + bytes(rng.randrange(256) for _ in range(300)))

# quant_config
configs = {
    "gptq_cfg": {"model_type": "gptj", "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128,
                                                              "desc_act": True, "sym": True}},
    "gptq_v2": {"quant_method": "gptq", "bits": 3, "group_size": -1, "checkpoint_format": "gptq_v2"},
    "autogptq": {"bits": 8, "group_size": 32, "desc_act": False, "sym": False, "true_sequential": True},
    "gptqmodel": {"bits": 2, "group_size": 64, "format": "gptq", "meta": {"quantizer": ["gptqmodel:1.0"]}},
    "exl2": {"quantization_config": {"quant_method": "exl2", "version": "0.2.3", "bits": 4.65, "head_bits": 6}},
    "awq": {"quant_method": "awq", "bits": 4},
    "bad": {"quant_method": "gptq", "bits": 5, "group_size": 0.5},
}
for name, c in configs.items():
    write("quant_config", name, json.dumps(c).encode())

# Regression seed: offsets summing to 2^64 - 8 (overflowed inside safetensors 0.8's read_metadata).
sz = (1 << 61) - 1
hdr = {f"t{i}": {"dtype": "U8", "shape": [sz], "data_offsets": [i * sz, (i + 1) * sz]} for i in range(8)}
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
write("safetensors_load", "offsets_overflow", struct.pack("<Q", len(h)) + h)

# model_dir: one seed per family × weights mode, and a few with shards, adapters, tied
# embeddings, config edits and corruptions (see fuzz/targets/model_dir.rs for the layout).
def model_seed(family, flags, flags2=0, heads=2, kv=0, hd=1, layers=1, inter=7, vocab=9,
               quant=(2, 1, 0), rank=1, alpha=0, edits=(), corrupt=(0, 0), q_len=2):
    head = [family, flags, flags2, heads - 1, kv, hd, layers - 1, inter - 1, vocab - 1]
    head += list(quant) + [rank - 1, alpha, len(edits)]
    for k, v in edits:
        head += [k, v]
    head += list(corrupt) + [q_len - 1] + [rng.randrange(250) for _ in range(q_len + 1)]
    return bytes(head) + bytes(rng.randrange(256) for _ in range(64))


for fam in range(6):
    for mode, mname in [(0, "dense"), (1 | 4, "gptq_cfg"), (2 | 4, "exl2_cfg"), (3, "f16")]:
        write("model_dir", f"f{fam}_{mname}", model_seed(fam, mode))
    write("model_dir", f"f{fam}_variant_bias_lora", model_seed(fam, 64 | 16, flags2=1, heads=4, kv=1))
    write("model_dir", f"f{fam}_gptq_infer_shards", model_seed(fam, 1 | 8, layers=2, quant=(4, 2, 0)))
    write("model_dir", f"f{fam}_exl2_detect_tied", model_seed(fam, 2 | 32, quant=(0, 3, 1)))
write("model_dir", "edits_rope", model_seed(1, 0, flags2=2, edits=[(12, 19), (8, 23)]))
write("model_dir", "edits_layers", model_seed(4, 0, edits=[(0, 10)]))
write("model_dir", "corrupt_nan", model_seed(0, 128, corrupt=(3, 3)))
write("model_dir", "shards_dup", model_seed(2, 8, flags2=2 << 3))
write("model_dir", "lora_alpha_inf", model_seed(3, 16, alpha=1))
