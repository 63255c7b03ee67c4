"""Records HF transformers' rotary tables (cos, sin) for the rope types paradec implements, so
tests can check paradec's frequencies against HF's own code rather than hand-worked values.

Run on the GPU machine (torch + transformers there): python3 scripts/make_rope_fixtures.py OUT.json
Each case: a config (as transformers serializes it), the positions fed, and HF's cos/sin
([positions, rot_dim], float32, attention scaling included) from the model's own rotary module.
"""
import json
import sys

import torch
import transformers
from transformers import AutoConfig

CASES = []


def case(name, model_type, rotary_cls, base, rope, positions):
    CASES.append((name, model_type, rotary_cls, base, rope, positions))


small = dict(num_hidden_layers=1, vocab_size=64, intermediate_size=64)
phi = dict(small, hidden_size=160, num_attention_heads=2, max_position_embeddings=64)
neox = dict(small, hidden_size=64, num_attention_heads=2, max_position_embeddings=64)
falcon = dict(small, hidden_size=64, num_attention_heads=4, max_position_embeddings=256,
              new_decoder_architecture=True, num_kv_heads=2)
short = list(range(0, 40))
long_ = list(range(0, 200, 3))
case("phi_default", "phi", "PhiRotaryEmbedding", phi,
     {"rope_type": "default", "rope_theta": 25000.0, "partial_rotary_factor": 0.4}, short)
case("phi_linear", "phi", "PhiRotaryEmbedding", phi,
     {"rope_type": "linear", "factor": 2.5, "rope_theta": 10000.0, "partial_rotary_factor": 0.4}, short)
case("neox_dynamic_short", "gpt_neox", "GPTNeoXRotaryEmbedding", neox,
     {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0, "partial_rotary_factor": 0.5}, short)
case("neox_dynamic_long", "gpt_neox", "GPTNeoXRotaryEmbedding", neox,
     {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0, "partial_rotary_factor": 0.5}, long_)
case("falcon_yarn", "falcon", "FalconRotaryEmbedding", falcon,
     {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}, long_)
case("falcon_yarn_original_max", "falcon", "FalconRotaryEmbedding", falcon,
     {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 64}, long_)
case("falcon_yarn_betas_mscale", "falcon", "FalconRotaryEmbedding", falcon,
     {"rope_type": "yarn", "factor": 8.0, "rope_theta": 50000.0, "beta_fast": 16.0, "beta_slow": 2.0,
      "mscale": 0.707, "mscale_all_dim": 1.0}, long_)
case("falcon_yarn_attention_factor_no_truncate", "falcon", "FalconRotaryEmbedding", falcon,
     {"rope_type": "yarn", "factor": 3.0, "rope_theta": 10000.0, "attention_factor": 1.25, "truncate": False}, long_)


def run():
    out = {"transformers_version": transformers.__version__, "torch_version": torch.__version__, "cases": []}
    for name, mt, cls_name, base, rope, positions in CASES:
        try:
            cfg = AutoConfig.for_model(mt, rope_parameters=dict(rope), **base)
        except TypeError:
            cfg = AutoConfig.for_model(mt, rope_scaling=dict(rope), **base)
        mod = __import__(f"transformers.models.{mt}.modeling_{mt}", fromlist=[cls_name])
        rot = getattr(mod, cls_name)(config=cfg)
        x = torch.zeros(1, len(positions), 8, dtype=torch.float32)
        pos = torch.tensor([positions], dtype=torch.long)
        with torch.no_grad():
            cos, sin = rot(x, pos)
        cos, sin = cos[0].float(), sin[0].float()
        cfg_json = json.loads(cfg.to_json_string(use_diff=False))
        cfg_json["model_type"] = mt
        out["cases"].append({
            "name": name,
            "config": cfg_json,
            "positions": positions,
            "cos": cos.tolist(),
            "sin": sin.tolist(),
        })
        print(f"{name}: cos {tuple(cos.shape)}, attention scaling {getattr(rot, 'attention_scaling', None)}")
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)


run()
