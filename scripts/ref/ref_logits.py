#!/usr/bin/env python3
"""Reference logits, greedy continuations and perplexity from the OFFICIAL DeepSeek-V3
inference/model.py on a checkpoint converted by the official convert.py (mp1).

Usage: ref_logits.py INFERENCE_DIR HF_CKPT MP1_CKPT HELDOUT_JSON OUT_DIR [f32]
  default (GPU machine): the official bf16 path: MP1_CKPT holds FP8 weights, dequantised by the
    official weight_dequant (Triton) to bf16; bf16 activations, as the official demo runs.
    Writes OUT_DIR/ref_logits.{safetensors,json} (BF16 [T, vocab] per sequence seqN).
  f32 (CPU, no GPU needed): the same model.py and generate() in float32: MP1_CKPT holds the
    BF16 weights of the official fp8_cast_bf16.py (or of dsv3-cast, byte-identical to it:
    tests/data/ref_cast_bf16.tsv), loaded as bf16 and widened to float32 (exact), so the
    weights are the official dequantised values and every activation is float32.  Writes
    OUT_DIR/ref_logits_f32.{safetensors,json} (F32 logits).
Documented patches, applied in memory, none to the maths: the Gate's e_score_correction_bias
is created whenever the checkpoint has it (model.py creates it only when dim == 7168, the 671B
width); for f32, generate.py's hard-coded device "cuda" reads "cpu"."""
import json, math, os, sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_file
from tokenizers import Tokenizer

inf_dir, hf_dir, mp1_dir, heldout, out_dir = sys.argv[1:6]
f32 = sys.argv[6:7] == ["f32"]
dev = "cpu" if f32 else "cuda"
sys.path.insert(0, inf_dir)

def load_patched(name, old, new, why):
    """inf_dir/NAME.py as module NAME with OLD replaced by NEW (documented above), in memory"""
    src = open(os.path.join(inf_dir, name + ".py")).read()
    patched = src.replace(old, new)
    assert patched != src, "%s.py no longer has %s" % (name, why)
    mod = type(sys)(name)
    mod.__file__ = os.path.join(inf_dir, name + ".py")
    sys.modules[name] = mod
    exec(compile(patched, mod.__file__, "exec"), mod.__dict__)
    return mod


mod = load_patched("model", "if self.dim == 7168 else None", "if True else None", "the dim == 7168 bias condition")
if f32:  # official generate(), its tensors on the CPU
    gen = load_patched("generate", 'device="cuda"', 'device="cpu"', 'device="cuda"')
else:
    import generate as gen  # official generate(); imports our patched `model`

cfg = json.load(open(os.path.join(hf_dir, "config.json")))
rs = cfg.get("rope_scaling") or {}
args = mod.ModelArgs(
    max_batch_size=4, dtype="bf16" if f32 else "fp8", vocab_size=cfg["vocab_size"], dim=cfg["hidden_size"],
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
torch.set_default_dtype(torch.float32 if f32 else torch.bfloat16)
torch.manual_seed(965)
with torch.device(dev):
    model = mod.Transformer(args)
load_model(model, os.path.join(mp1_dir, "model0-mp1.safetensors"))
if f32:
    assert all(p.dtype in (torch.bfloat16, torch.float32) for p in model.parameters()), "f32 wants a BF16 checkpoint"
    model.float()  # bf16 -> float32 is exact; buffers (caches) too; freqs_cis stays complex64
tok = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
bos, eos = cfg["bos_token_id"], cfg["eos_token_id"]

@torch.inference_mode()
def all_logits(ids):
    """Transformer.forward, but keeping every position (forward keeps only the last)."""
    t = torch.tensor([ids], dtype=torch.long, device=dev)
    n = t.size(1)
    h = model.embed(t)
    fc = model.freqs_cis[0:n]
    mask = torch.full((n, n), float("-inf"), device=dev).triu_(1) if n > 1 else None
    for layer in model.layers:
        h = layer(h, 0, fc, mask)
    return model.head(model.norm(h))[0]

data = json.load(open(heldout))
tensors, meta = {}, {"command": " ".join(sys.argv), "torch": torch.__version__,
                     "sequences": [], "prompts": []}
for i, text in enumerate(data["sequences"]):
    ids = [bos] + tok.encode(text, add_special_tokens=False).ids
    lg = all_logits(ids)
    tensors["seq%d" % i] = lg.to(torch.float32 if f32 else torch.bfloat16).contiguous().cpu()
    lp = F.log_softmax(lg.float(), dim=-1)
    nll = -lp[:-1].gather(1, torch.tensor(ids[1:], device=dev)[:, None]).mean().item()
    # The last position of forward() must equal the all-positions variant (sanity).
    last = model.forward(torch.tensor([ids], device=dev), 0)[0]
    if f32:  # one row through the head here, all rows there: CPU GEMV and GEMM sum differently
        d = (last - lg[-1]).abs().max().item() / lg[-1].abs().max().item()
        assert d < 1e-5, "all_logits disagrees with Transformer.forward (%.3g)" % d
    else:
        assert torch.equal(last, lg[-1]), "all_logits disagrees with Transformer.forward"
    meta["sequences"].append({"name": "seq%d" % i, "ids": ids, "nll": nll, "ppl": math.exp(nll)})
for i, p in enumerate(data["prompts"]):
    ids = [bos] + tok.encode(p, add_special_tokens=False).ids
    out = gen.generate(model, [ids], 32, -1, 0.0)[0]  # eos_id -1: always 32 tokens
    meta["prompts"].append({"text": p, "ids": ids, "greedy": out,
                            "greedy_text": tok.decode(out, skip_special_tokens=True)})
    print(repr(p + tok.decode(out)))
base = "ref_logits_f32" if f32 else "ref_logits"
save_file(tensors, os.path.join(out_dir, base + ".safetensors"))
json.dump(meta, open(os.path.join(out_dir, base + ".json"), "w"), indent=1)
print("ref_logits: %d sequences, %d prompts" % (len(meta["sequences"]), len(meta["prompts"])))
