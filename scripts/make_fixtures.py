#!/usr/bin/env python3
"""Generate HF-transformers reference fixtures for paradec.

For each variant (one tiny random model per family / config trap) this writes

    <out>/<variant>/config.json            (as transformers writes it)
    <out>/<variant>/model.safetensors      (fp32, every parameter randomized)
    <out>/<variant>/reference.safetensors  (inputs + per-layer intermediates + logits)
    <out>/<variant>/meta.json
    <out>/<variant>/lora/adapter_config.json
    <out>/<variant>/lora/adapter_model.safetensors
    <out>/<variant>/lora/reference.safetensors
    <out>/<variant>/lora/meta.json

The run: a batch of 2 left-padded random prompts (prefill, step 0) followed by 3 greedy decode
steps through one DynamicCache, fp32, attn_implementation="eager", CPU, under torch.no_grad().
position_ids follow generate(): cumsum(mask) - 1 with pad positions filled with 1.

Usage: python3 scripts/make_fixtures.py --out DIR [--only v1,v2]
Needs torch, transformers (5.x), peft, safetensors. Nothing is downloaded: models are built from configs.
"""

import argparse
import json
import math
import os
import shutil

import torch

import safetensors
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, DynamicCache

import peft
from peft import LoraConfig, get_peft_model

BASE_SEED = 20260513
PROMPT_LENS = [7, 4]  # real tokens per sequence; left-padded to max
N_DECODE = 3
PAD_ID = 0
LORA_R = 4
LORA_ALPHA = 8
LORA_B_STD = 0.3  # lora_B ~ N(0, (LORA_B_STD/sqrt(r))^2); lora_A ~ N(0, 1/fan_in)
MAX_DIR_BYTES = 2 * 1024 * 1024

POSITIONS_SENTENCE = (
    "position_ids follow HF generate(): position_ids = cumsum(attention_mask, -1) - 1 with pad positions "
    "filled with 1, and each decode step uses the previous step's last position + 1 per sequence; "
    "prompts are LEFT-padded (pad id 0, attention_mask 0), so compare only positions where the mask is 1."
)


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------

VARIANTS = {
    "gptj": dict(
        family="gptj",
        config=dict(
            model_type="gptj",
            vocab_size=128,
            n_positions=64,
            n_embd=64,
            n_layer=2,
            n_head=4,  # head_dim 16
            rotary_dim=8,
            n_inner=None,  # 4 * n_embd = 256
            activation_function="gelu_new",
            layer_norm_epsilon=1e-5,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"],
        rslora=False,
    ),
    "gpt_neox": dict(
        family="gpt_neox",
        config=dict(
            model_type="gpt_neox",
            vocab_size=128,
            hidden_size=96,
            num_hidden_layers=2,
            num_attention_heads=3,  # head_dim 32 -> rotary 8
            intermediate_size=256,
            hidden_act="gelu",
            max_position_embeddings=64,
            layer_norm_eps=1e-5,
            use_parallel_residual=True,
            attention_bias=True,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 20000.0, "partial_rotary_factor": 0.25},
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        rslora=False,
    ),
    "gpt_neox_gelu_fast": dict(
        family="gpt_neox",
        config=dict(
            model_type="gpt_neox",
            vocab_size=96,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,  # head_dim 32 -> rotary 16
            intermediate_size=192,
            hidden_act="gelu_fast",
            max_position_embeddings=64,
            layer_norm_eps=1e-5,
            use_parallel_residual=True,
            attention_bias=True,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 5000.0, "partial_rotary_factor": 0.5},
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        rslora=False,
    ),
    "phi": dict(
        family="phi",
        config=dict(
            model_type="phi",
            vocab_size=96,
            hidden_size=160,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=2,  # head_dim 80 -> rotary int(80*0.4) = 32
            num_key_value_heads=2,
            hidden_act="gelu_new",
            max_position_embeddings=64,
            layer_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 25000.0, "partial_rotary_factor": 0.4},
            qk_layernorm=False,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
        rslora=True,
    ),
    "phi_qk_layernorm": dict(
        family="phi",
        config=dict(
            model_type="phi",
            vocab_size=96,
            hidden_size=160,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            hidden_act="gelu_new",
            max_position_embeddings=64,
            layer_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 25000.0, "partial_rotary_factor": 0.4},
            qk_layernorm=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
        rslora=True,
    ),
    "falcon_7b_mqa": dict(
        family="falcon",
        config=dict(
            model_type="falcon",
            vocab_size=128,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,  # head_dim 16
            new_decoder_architecture=False,
            multi_query=True,
            parallel_attn=True,
            bias=False,
            alibi=False,
            layer_norm_epsilon=1e-5,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 20000.0},
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        rslora=False,
    ),
    "falcon_new_2ln_gqa": dict(
        family="falcon",
        config=dict(
            model_type="falcon",
            vocab_size=128,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,  # head_dim 16
            num_kv_heads=2,
            new_decoder_architecture=True,
            num_ln_in_parallel_attn=2,
            multi_query=True,
            parallel_attn=True,
            bias=True,
            alibi=False,
            layer_norm_epsilon=1e-5,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 30000.0},
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        rslora=True,
    ),
    "falcon_new_1ln": dict(
        family="falcon",
        config=dict(
            model_type="falcon",
            vocab_size=128,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_kv_heads=2,
            new_decoder_architecture=True,
            num_ln_in_parallel_attn=1,
            multi_query=True,
            parallel_attn=True,
            bias=False,
            alibi=False,
            layer_norm_epsilon=1e-5,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "default", "rope_theta": 40000.0},
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        rslora=False,
    ),
    "cohere": dict(
        family="cohere",
        config=dict(
            model_type="cohere",
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,  # head_dim 16
            num_key_value_heads=2,
            hidden_act="silu",
            max_position_embeddings=64,
            layer_norm_eps=1e-5,
            logit_scale=0.25,
            use_qk_norm=True,
            attention_bias=True,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        rslora=True,
    ),
    "cohere2": dict(
        family="cohere2",
        config=dict(
            model_type="cohere2",
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,  # sliding, full, sliding
            num_attention_heads=4,  # head_dim 16
            num_key_value_heads=2,
            hidden_act="silu",
            max_position_embeddings=64,
            layer_norm_eps=1e-5,
            logit_scale=0.25,
            attention_bias=False,
            sliding_window=4,
            sliding_window_pattern=2,  # BC kwarg: 5.x turns it into layer_types
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 20000.0},
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=PAD_ID,
        ),
        lora_targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        rslora=True,
    ),
}


# Module paths per family: (layers, attn-norm, mlp-norm or None, out-proj, mlp-last-proj)
def family_modules(family, model, cfg):
    if family == "gptj":
        layers = model.transformer.h
        return [
            dict(layer=l, norm=l.ln_1, norm_mlp=None, out=l.attn.out_proj, down=l.mlp.fc_out) for l in layers
        ]
    if family == "gpt_neox":
        return [
            dict(
                layer=l,
                norm=l.input_layernorm,
                norm_mlp=l.post_attention_layernorm,
                out=l.attention.dense,
                down=l.mlp.dense_4h_to_h,
            )
            for l in model.gpt_neox.layers
        ]
    if family == "phi":
        return [
            dict(layer=l, norm=l.input_layernorm, norm_mlp=None, out=l.self_attn.dense, down=l.mlp.fc2)
            for l in model.model.layers
        ]
    if family == "falcon":
        out = []
        for l in model.transformer.h:
            two = cfg.new_decoder_architecture and cfg.num_ln_in_parallel_attn == 2
            out.append(
                dict(
                    layer=l,
                    norm=l.ln_attn if two else l.input_layernorm,
                    norm_mlp=l.ln_mlp if two else None,
                    out=l.self_attention.dense,
                    down=l.mlp.dense_4h_to_h,
                )
            )
        return out
    if family in ("cohere", "cohere2"):
        return [
            dict(layer=l, norm=l.input_layernorm, norm_mlp=None, out=l.self_attn.o_proj, down=l.mlp.down_proj)
            for l in model.model.layers
        ]
    raise ValueError(family)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def randomize_(model, gen):
    """Randomize every parameter: Linear W ~ N(0, 1/fan_in), bias ~ N(0, 0.1^2), Embedding ~ N(0, 1),
    norm weight 1 + 0.1 N(0,1), norm bias 0.1 N(0,1). Tied parameters are set once (first owner wins:
    the embedding module comes before lm_head in named_modules)."""
    done = set()

    def setp(p, values):
        if p is None or id(p) in done:
            return
        with torch.no_grad():
            p.copy_(values.to(p.dtype))
        done.add(id(p))

    def randn(shape):
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    for name, mod in model.named_modules():
        cls = type(mod).__name__
        if isinstance(mod, torch.nn.Embedding):
            setp(mod.weight, randn(mod.weight.shape))
        elif isinstance(mod, torch.nn.Linear):
            fan_in = mod.weight.shape[1]
            setp(mod.weight, randn(mod.weight.shape) / math.sqrt(fan_in))
            if mod.bias is not None:
                setp(mod.bias, 0.1 * randn(mod.bias.shape))
        elif isinstance(mod, torch.nn.LayerNorm) or "Norm" in cls:
            w = getattr(mod, "weight", None)
            b = getattr(mod, "bias", None)
            if isinstance(w, torch.nn.Parameter):
                setp(w, 1.0 + 0.1 * randn(w.shape))
            if isinstance(b, torch.nn.Parameter):
                setp(b, 0.1 * randn(b.shape))
    missed = [n for n, p in model.named_parameters() if id(p) not in done]
    assert not missed, f"parameters not randomized: {missed}"


def make_inputs(vocab, gen):
    B = len(PROMPT_LENS)
    S0 = max(PROMPT_LENS)
    ids = torch.full((B, S0), PAD_ID, dtype=torch.long)
    mask = torch.zeros((B, S0), dtype=torch.long)
    for b, n in enumerate(PROMPT_LENS):
        ids[b, S0 - n :] = torch.randint(0, vocab, (n,), generator=gen)
        mask[b, S0 - n :] = 1
    pos = mask.cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)
    return ids, mask, pos


def first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        return x[0]
    if hasattr(x, "__getitem__"):
        return x[0]
    raise TypeError(type(x))


class Recorder:
    def __init__(self):
        self.cap = {}
        self.step = None
        self.handles = []

    def put(self, name, t):
        key = f"step{self.step}.{name}"
        assert key not in self.cap, f"captured twice: {key}"
        # clone at once: HF may modify tensors in place afterwards (Falcon does mlp_output += attn_output)
        self.cap[key] = t.detach().to(torch.float32).clone().contiguous()

    def hook_out(self, module, name):
        def fn(mod, args, output):
            self.put(name, first_tensor(output))

        self.handles.append(module.register_forward_hook(fn))

    def hook_in(self, module, name):
        def fn(mod, args, kwargs):
            x = args[0] if len(args) > 0 else kwargs["hidden_states"]
            self.put(name, x)

        self.handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def run_steps(model, ids, mask, pos, forced_tokens=None, rec=None):
    """Prefill + N_DECODE greedy decode steps through one DynamicCache.
    Returns per-step dict of inputs/logits and the tokens chosen (or fed)."""
    cache = DynamicCache(config=model.config)
    steps = []
    cur_ids, cur_mask, cur_pos = ids, mask, pos
    for t in range(N_DECODE + 1):
        if rec is not None:
            rec.step = t
        out = model(
            input_ids=cur_ids,
            attention_mask=cur_mask,
            position_ids=cur_pos,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits.detach().to(torch.float32).clone()
        steps.append(dict(input_ids=cur_ids.clone(), attention_mask=cur_mask.clone(), position_ids=cur_pos.clone(), logits=logits))
        if t == N_DECODE:
            break
        if forced_tokens is None:
            nxt = logits[:, -1, :].argmax(-1)
        else:
            nxt = forced_tokens[t]
        cur_ids = nxt.view(-1, 1).to(torch.long)
        cur_mask = torch.cat([cur_mask, torch.ones((cur_mask.shape[0], 1), dtype=torch.long)], dim=1)
        cur_pos = cur_pos[:, -1:] + 1
    return steps


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


# ----------------------------------------------------------------------------------------------
# One variant
# ----------------------------------------------------------------------------------------------


def build_model(spec, seed):
    cfg_kwargs = dict(spec["config"])
    model_type = cfg_kwargs.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    model = model.to(device="cpu", dtype=torch.float32)
    model.eval()
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    gen = torch.Generator().manual_seed(seed)
    randomize_(model, gen)
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32, n
    return model


def make_variant(name, spec, out_root, index):
    seed = BASE_SEED + 1000 * index
    vdir = os.path.join(out_root, name)
    if os.path.exists(vdir):
        shutil.rmtree(vdir)
    os.makedirs(vdir)
    family = spec["family"]

    model = build_model(spec, seed)
    cfg = model.config
    n_layers = cfg.num_hidden_layers
    hidden = cfg.hidden_size
    vocab = cfg.vocab_size
    mods = family_modules(family, model, cfg)
    assert len(mods) == n_layers
    two_norm = mods[0]["norm_mlp"] is not None

    gen_in = torch.Generator().manual_seed(seed + 7)
    ids, mask, pos = make_inputs(vocab, gen_in)
    B, S0 = ids.shape

    # ---- base run with hooks
    rec = Recorder()
    rec.hook_in(mods[0]["layer"], "embeddings")
    for i, m in enumerate(mods):
        rec.hook_out(m["norm"], f"layer{i}.post_norm")
        if m["norm_mlp"] is not None:
            rec.hook_out(m["norm_mlp"], f"layer{i}.post_norm_mlp")
        rec.hook_in(m["out"], f"layer{i}.attn_output")
        rec.hook_out(m["out"], f"layer{i}.hidden_states_attn")
        rec.hook_in(m["down"], f"layer{i}.pre_down")
        rec.hook_out(m["down"], f"layer{i}.hidden_states_mlp")
        rec.hook_out(m["layer"], f"layer{i}.hidden_states")
    with torch.no_grad():
        steps = run_steps(model, ids, mask, pos, rec=rec)
    rec.remove()

    # ---- shape checks
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // n_heads
    attn_width = n_heads * head_dim
    inter = mods[0]["down"].in_features
    per_layer = ["post_norm"] + (["post_norm_mlp"] if two_norm else []) + [
        "attn_output",
        "pre_down",
        "hidden_states_attn",
        "hidden_states_mlp",
        "hidden_states",
    ]
    feat = dict(
        post_norm=hidden,
        post_norm_mlp=hidden,
        attn_output=attn_width,
        pre_down=inter,
        hidden_states_attn=hidden,
        hidden_states_mlp=hidden,
        hidden_states=hidden,
    )
    tensors = {"input_ids": ids.clone()}
    expected_keys = set()
    for t, st in enumerate(steps):
        q = st["input_ids"].shape[1]
        assert q == (S0 if t == 0 else 1)
        assert st["attention_mask"].shape == (B, S0 + t)
        assert st["position_ids"].shape == (B, q)
        tensors[f"step{t}.input_ids"] = st["input_ids"]
        tensors[f"step{t}.position_ids"] = st["position_ids"]
        tensors[f"step{t}.attention_mask"] = st["attention_mask"]
        tensors[f"step{t}.logits"] = st["logits"]
        assert st["logits"].shape == (B, q, vocab), st["logits"].shape
        k = f"step{t}.embeddings"
        expected_keys.add(k)
        assert rec.cap[k].shape == (B, q, hidden), (k, rec.cap[k].shape)
        for i in range(n_layers):
            for nm in per_layer:
                k = f"step{t}.layer{i}.{nm}"
                expected_keys.add(k)
                assert k in rec.cap, f"missing capture {k}"
                assert rec.cap[k].shape == (B, q, feat[nm]), (k, tuple(rec.cap[k].shape), (B, q, feat[nm]))
    assert set(rec.cap.keys()) == expected_keys, set(rec.cap.keys()) ^ expected_keys
    tensors.update(rec.cap)
    for k, v in tensors.items():
        assert torch.isfinite(v.float()).all(), f"non-finite {k}"

    # sanity: residual structure (parallel block output = x + attn + mlp for all six families)
    for t in range(len(steps)):
        for i in range(n_layers):
            x_in = tensors[f"step{t}.embeddings"] if i == 0 else tensors[f"step{t}.layer{i-1}.hidden_states"]
            recon = x_in + tensors[f"step{t}.layer{i}.hidden_states_attn"] + tensors[f"step{t}.layer{i}.hidden_states_mlp"]
            err = (recon - tensors[f"step{t}.layer{i}.hidden_states"]).abs().max().item()
            assert err < 1e-4, (name, t, i, err)

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    model.save_pretrained(vdir, safe_serialization=True)
    save_file(tensors, os.path.join(vdir, "reference.safetensors"), metadata={"format": "pt"})

    decode_tokens = [steps[t + 1]["input_ids"].view(-1).clone() for t in range(N_DECODE)]

    def path_of(target):
        return [n for n, m in model.named_modules() if m is target][0]

    hf_modules = dict(
        layer0=path_of(mods[0]["layer"]),
        norm=path_of(mods[0]["norm"]),
        norm_mlp=path_of(mods[0]["norm_mlp"]) if two_norm else None,
        out_proj=path_of(mods[0]["out"]),
        down_proj=path_of(mods[0]["down"]),
        norm_class=type(mods[0]["norm"]).__name__,
    )

    # ---- LoRA
    lora_dir = os.path.join(vdir, "lora")
    lcfg = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        target_modules=list(spec["lora_targets"]),
        lora_dropout=0.0,
        bias="none",
        use_rslora=spec["rslora"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    layer_modules = [m["layer"] for m in mods]
    pmodel = get_peft_model(model, lcfg)
    pmodel.eval()
    glora = torch.Generator().manual_seed(seed + 99)
    n_a = n_b = 0
    wrapped = []
    for mname, mod in pmodel.named_modules():
        if hasattr(mod, "lora_A") and isinstance(getattr(mod, "lora_A"), torch.nn.ModuleDict) and "default" in mod.lora_A:
            wrapped.append(mname)
            A = mod.lora_A["default"].weight
            Bw = mod.lora_B["default"].weight
            with torch.no_grad():
                A.copy_(torch.randn(A.shape, generator=glora) / math.sqrt(A.shape[1]))
                Bw.copy_(torch.randn(Bw.shape, generator=glora) * (LORA_B_STD / math.sqrt(LORA_R)))
            n_a += 1
            n_b += 1
    expected_wrapped = n_layers * len(spec["lora_targets"])
    assert len(wrapped) == expected_wrapped, (name, len(wrapped), expected_wrapped, wrapped)

    lrec = Recorder()
    for i, lm in enumerate(layer_modules):
        lrec.hook_out(lm, f"layer{i}.hidden_states")
    with torch.no_grad():
        lsteps = run_steps(pmodel, ids, mask, pos, forced_tokens=decode_tokens, rec=lrec)
    lrec.remove()
    ltensors = {"input_ids": ids.clone()}
    min_rel = float("inf")
    for t, st in enumerate(lsteps):
        q = st["input_ids"].shape[1]
        assert torch.equal(st["input_ids"], steps[t]["input_ids"])
        assert torch.equal(st["position_ids"], steps[t]["position_ids"])
        assert torch.equal(st["attention_mask"], steps[t]["attention_mask"])
        ltensors[f"step{t}.input_ids"] = st["input_ids"]
        ltensors[f"step{t}.position_ids"] = st["position_ids"]
        ltensors[f"step{t}.attention_mask"] = st["attention_mask"]
        ltensors[f"step{t}.logits"] = st["logits"]
        assert st["logits"].shape == (B, q, vocab)
        for i in range(n_layers):
            k = f"step{t}.layer{i}.hidden_states"
            assert lrec.cap[k].shape == (B, q, hidden)
            ltensors[k] = lrec.cap[k]
        # adapter must change the logits clearly on real positions
        real = st["attention_mask"][:, -q:].bool()
        base_l = steps[t]["logits"][real]
        lora_l = st["logits"][real]
        rel = ((lora_l - base_l).norm() / base_l.norm()).item()
        min_rel = min(min_rel, rel)
        assert rel > 0.05, (name, t, rel)
    assert len(lrec.cap) == len(lsteps) * n_layers
    ltensors = {k: v.contiguous() for k, v in ltensors.items()}

    pmodel.save_pretrained(lora_dir, safe_serialization=True)
    readme = os.path.join(lora_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    save_file(ltensors, os.path.join(lora_dir, "reference.safetensors"), metadata={"format": "pt"})
    scaling = LORA_ALPHA / (math.sqrt(LORA_R) if spec["rslora"] else LORA_R)
    lmeta = dict(
        variant=name,
        peft_version=peft.__version__,
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        use_rslora=spec["rslora"],
        scaling=scaling,
        target_modules=list(spec["lora_targets"]),
        wrapped_modules=wrapped,
        lora_init="lora_A ~ N(0, 1/fan_in), lora_B ~ N(0, (%g/sqrt(r))^2), seeded" % LORA_B_STD,
        inputs="same padded prompt, positions, masks and decode tokens as the base reference (decode tokens are the base model's greedy picks, fed, not re-chosen)",
        min_relative_logit_change_vs_base=min_rel,
        stored=sorted(ltensors.keys()),
    )
    with open(os.path.join(lora_dir, "meta.json"), "w") as f:
        json.dump(lmeta, f, indent=2)

    # ---- meta
    meta = dict(
        variant=name,
        family=family,
        model_type=cfg.model_type,
        architectures=list(getattr(cfg, "architectures", None) or [type(model).__name__]),
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
        peft_version=peft.__version__,
        safetensors_version=safetensors.__version__,
        attn_implementation="eager",
        dtype="float32",
        device="cpu",
        seed=seed,
        batch=B,
        prompt_lengths=PROMPT_LENS,
        padded_prompt_length=S0,
        padding_side="left",
        pad_token_id=PAD_ID,
        pad_counts=[S0 - n for n in PROMPT_LENS],
        decode_steps=N_DECODE,
        decode_tokens=[tok.tolist() for tok in decode_tokens],
        num_layers=n_layers,
        hidden_size=hidden,
        num_attention_heads=n_heads,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        captured_per_layer=per_layer,
        captured_per_step=["embeddings", "logits", "input_ids", "position_ids", "attention_mask"],
        shapes="step{t}.* float tensors are [batch, q_len, features] (q_len = padded prompt length at step 0, 1 after); "
        "step{t}.attention_mask is [batch, total_len_so_far]; input_ids is [batch, padded_prompt_length]",
        capture_points=dict(
            embeddings="input of layer 0",
            post_norm="output of the norm feeding attention",
            post_norm_mlp="output of the norm feeding the MLP (two-norm blocks only)",
            attn_output="input of the attention output projection (heads concatenated)",
            pre_down="input of the MLP's last projection",
            hidden_states_attn="output of the attention output projection (bias included)",
            hidden_states_mlp="output of the MLP's last projection (bias included)",
            hidden_states="output of the decoder layer",
        ),
        hf_modules=hf_modules,
        layer_types=list(getattr(cfg, "layer_types", None) or []),
        positions=POSITIONS_SENTENCE,
        randomization="Linear W ~ N(0, 1/fan_in), biases ~ N(0, 0.01), embeddings ~ N(0, 1), norm weight 1 + 0.1 N(0,1), norm bias 0.1 N(0,1); tied lm_head shares the embedding",
        stored=sorted(tensors.keys()),
    )
    with open(os.path.join(vdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)

    size = dir_bytes(vdir)
    assert size < MAX_DIR_BYTES, (name, size)
    print(f"{name}: {size/1024:.0f} KiB, layers={n_layers}, decode={meta['decode_tokens']}, lora min rel change={min_rel:.3f}", flush=True)
    return dict(variant=name, bytes=size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="")
    ap.add_argument("--keep-going", action="store_true", help="report a failing variant and go on")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}", flush=True)

    names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    results = []
    failed = []
    for index, name in enumerate(VARIANTS):
        if name not in names:
            continue
        try:
            results.append(make_variant(name, VARIANTS[name], args.out, index))
        except Exception:
            if not args.keep_going:
                raise
            import traceback

            traceback.print_exc()
            failed.append(name)
    manifest = dict(
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
        peft_version=peft.__version__,
        generator="scripts/make_fixtures.py",
        variants=results,
    )
    if not args.only and not failed:
        with open(os.path.join(args.out, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
    if failed:
        print(f"FAILED: {failed}", flush=True)
        raise SystemExit(1)
    print("done", flush=True)


if __name__ == "__main__":
    main()
