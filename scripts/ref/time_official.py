#!/usr/bin/env python3
"""Decode ms/token of the OFFICIAL DeepSeek-V3 demo (inference/model.py, default settings:
gemm_impl="bf16", attn_impl="absorb", bf16 activations, max_batch_size 8, max_seq_len 16384)
on an mp1 checkpoint from convert.py (or dsv3-convert, file-identical), batch 1, the loop of
inference/generate.py: forward(last token, pos) then argmax.  8 warm-up steps, then STEPS timed.
With PREFILL > 0, also the prefill of a PREFILL-token prompt of random ids (model.forward of the
whole prompt at position 0, as generate.py's first step): one warm-up, then the median of 3.

Usage (GPU machine, official code fetched into .ref/, never committed):
  time_official.py INFERENCE_DIR MP1_DIR [STEPS [PREFILL]]"""
import json, os, sys, time

import torch

inf_dir, ckpt = sys.argv[1:3]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 64
prefill = int(sys.argv[4]) if len(sys.argv) > 4 else 0
sys.path.insert(0, inf_dir)
import model as mod  # the official inference/model.py
from safetensors.torch import load_model

cfg = json.load(open(os.path.join(ckpt, "config.json")))
rs = cfg.get("rope_scaling") or {}
args = mod.ModelArgs(
    dtype="fp8", vocab_size=cfg["vocab_size"], dim=cfg["hidden_size"],
    inter_dim=cfg["intermediate_size"], moe_inter_dim=cfg["moe_intermediate_size"],
    n_layers=cfg["num_hidden_layers"], n_dense_layers=cfg["first_k_dense_replace"],
    n_heads=cfg["num_attention_heads"], n_routed_experts=cfg["n_routed_experts"],
    n_shared_experts=cfg["n_shared_experts"], n_activated_experts=cfg["num_experts_per_tok"],
    n_expert_groups=cfg["n_group"], n_limited_groups=cfg["topk_group"],
    score_func=cfg["scoring_func"], route_scale=cfg["routed_scaling_factor"],
    q_lora_rank=cfg["q_lora_rank"], kv_lora_rank=cfg["kv_lora_rank"],
    qk_nope_head_dim=cfg["qk_nope_head_dim"], qk_rope_head_dim=cfg["qk_rope_head_dim"],
    v_head_dim=cfg["v_head_dim"], original_seq_len=rs.get("original_max_position_embeddings", 4096),
    rope_theta=cfg["rope_theta"], rope_factor=rs.get("factor", 1.0),
    beta_fast=rs.get("beta_fast", 32), beta_slow=rs.get("beta_slow", 1), mscale=rs.get("mscale", 1.0))
torch.set_default_dtype(torch.bfloat16)
torch.cuda.set_device(0)
torch.manual_seed(965)
t0 = time.time()
with torch.device("cuda"):
    model = mod.Transformer(args)
load_model(model, os.path.join(ckpt, "model0-mp1.safetensors"))
print(f"official model.py: loaded in {time.time() - t0:.1f} s, gemm_impl={mod.gemm_impl}, attn_impl={mod.attn_impl}")

with torch.inference_mode():
    prompt = torch.arange(16, device="cuda")[None]
    logits = model.forward(prompt, 0)
    pos = 16
    times = []
    for i in range(8 + steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        nxt = logits.argmax(dim=-1)
        logits = model.forward(nxt[:, None], pos)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        pos += 1
times = sorted(times[8:])
print(f"official demo decode, batch 1: median {1e3 * times[len(times) // 2]:.3f} ms/token, "
      f"mean {1e3 * sum(times) / len(times):.3f} ms/token over {steps} steps ({torch.cuda.get_device_name(0)})")

if prefill > 0:
    with torch.inference_mode():
        ids = torch.randint(2, cfg["vocab_size"], (1, prefill), device="cuda")
        pt = []
        for i in range(4):
            torch.cuda.synchronize()
            t = time.perf_counter()
            model.forward(ids, 0)
            torch.cuda.synchronize()
            pt.append(time.perf_counter() - t)
    pt = sorted(pt[1:])
    print(f"official demo prefill, {prefill} tokens: median {pt[1]:.3f} s ({prefill / pt[1]:.0f} tokens/s)")
