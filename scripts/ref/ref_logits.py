#!/usr/bin/env python3
"""Reference logits, greedy continuations and perplexity from the OFFICIAL DeepSeek-V3
inference/model.py (bf16 path: FP8 weights dequantised with the official weight_dequant,
bf16 activations) on a checkpoint converted by the official convert.py (mp1).

Usage (GPU machine): ref_logits.py INFERENCE_DIR HF_CKPT MP1_CKPT HELDOUT_JSON OUT_DIR
Two documented patches to model.py, applied in memory: none to the maths; the Gate's
e_score_correction_bias is created whenever the checkpoint has it (model.py creates it only
when dim == 7168, the 671B width).  Writes OUT_DIR/ref_logits.safetensors (BF16 [T, vocab]
per sequence seqN, the logits at every position) and OUT_DIR/ref_logits.json."""
import json, math, os, sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_file
from tokenizers import Tokenizer

inf_dir, hf_dir, mp1_dir, heldout, out_dir = sys.argv[1:6]
sys.path.insert(0, inf_dir)
src = open(os.path.join(inf_dir, "model.py")).read()
patched = src.replace("if self.dim == 7168 else None", "if True else None")
assert patched != src, "model.py no longer has the dim == 7168 bias condition"
mod = type(sys)("model")
mod.__file__ = os.path.join(inf_dir, "model.py")
exec(compile(patched, mod.__file__, "exec"), mod.__dict__)
sys.modules["model"] = mod
import generate as gen  # official generate(); imports our patched `model`

cfg = json.load(open(os.path.join(hf_dir, "config.json")))
rs = cfg.get("rope_scaling") or {}
args = mod.ModelArgs(
    max_batch_size=4, dtype="fp8", vocab_size=cfg["vocab_size"], dim=cfg["hidden_size"],
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
print(args)
torch.set_default_dtype(torch.bfloat16)
torch.manual_seed(965)
with torch.device("cuda"):
    model = mod.Transformer(args)
load_model(model, os.path.join(mp1_dir, "model0-mp1.safetensors"))
tok = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
bos, eos = cfg["bos_token_id"], cfg["eos_token_id"]

@torch.inference_mode()
def all_logits(ids):
    """Transformer.forward, but keeping every position (forward keeps only the last)."""
    t = torch.tensor([ids], dtype=torch.long, device="cuda")
    n = t.size(1)
    h = model.embed(t)
    fc = model.freqs_cis[0:n]
    mask = torch.full((n, n), float("-inf"), device="cuda").triu_(1) if n > 1 else None
    for layer in model.layers:
        h = layer(h, 0, fc, mask)
    return model.head(model.norm(h))[0]

data = json.load(open(heldout))
tensors, meta = {}, {"command": " ".join(sys.argv), "torch": torch.__version__,
                     "sequences": [], "prompts": []}
for i, text in enumerate(data["sequences"]):
    ids = [bos] + tok.encode(text, add_special_tokens=False).ids
    lg = all_logits(ids)
    tensors["seq%d" % i] = lg.to(torch.bfloat16).contiguous().cpu()
    lp = F.log_softmax(lg.float(), dim=-1)
    nll = -lp[:-1].gather(1, torch.tensor(ids[1:], device="cuda")[:, None]).mean().item()
    # The last position of forward() must equal the all-positions variant (sanity).
    last = model.forward(torch.tensor([ids], device="cuda"), 0)[0]
    assert torch.equal(last, lg[-1]), "all_logits disagrees with Transformer.forward"
    meta["sequences"].append({"name": "seq%d" % i, "ids": ids, "nll": nll, "ppl": math.exp(nll)})
for i, p in enumerate(data["prompts"]):
    ids = [bos] + tok.encode(p, add_special_tokens=False).ids
    out = gen.generate(model, [ids], 32, -1, 0.0)[0]  # eos_id -1: always 32 tokens
    meta["prompts"].append({"text": p, "ids": ids, "greedy": out,
                            "greedy_text": tok.decode(out, skip_special_tokens=True)})
    print(repr(p + tok.decode(out)))
save_file(tensors, os.path.join(out_dir, "ref_logits.safetensors"))
json.dump(meta, open(os.path.join(out_dir, "ref_logits.json"), "w"), indent=1)
print("ref_logits: %d sequences, %d prompts" % (len(meta["sequences"]), len(meta["prompts"])))
