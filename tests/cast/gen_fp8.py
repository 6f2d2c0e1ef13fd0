"""Write a random FP8 checkpoint in the official HF layout for the dsv3-cast tests:
  gen_fp8.py OUT SHARDS WEIGHTS_PER_SHARD ROWS COLS [SEED]
Each shard holds WEIGHTS_PER_SHARD F8_E4M3 [ROWS, COLS] linear weights (DeepSeek names, so
they are FP8 kinds) with F32 128x128 weight_scale_inv, plus one BF16 norm; the index, a
config.json with quantization_config, and a few other files (tokenizer, README, *.py)."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

out, nsh, per, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
seed = int(sys.argv[6]) if len(sys.argv) > 6 else 0
rng = np.random.default_rng(seed)
os.makedirs(out, exist_ok=True)
kinds = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "self_attn.q_b_proj", "self_attn.o_proj"]
wm, total, k = {}, 0, 0
for s in range(nsh):
    fname = "model-%05d-of-%05d.safetensors" % (s + 1, nsh)
    ts = []
    for _ in range(per):
        name = "model.layers.%d.%s.weight" % (k // len(kinds), kinds[k % len(kinds)])
        k += 1
        codes = rng.integers(0, 256, size=rows * cols, dtype=np.uint8)
        codes[(codes & 0x7F) == 0x7F] = 0x7E  # no NaN codes, as real checkpoints
        sc = np.exp(rng.uniform(np.log(1e-3), np.log(1e-2), size=(-(-rows // 128), -(-cols // 128)))).astype(np.float32)
        ts.append((name, "F8_E4M3", (rows, cols), codes.tobytes()))
        ts.append((name + "_scale_inv", "F32", sc.shape, sc.tobytes()))
    norm = "model.layers.%d.input_layernorm.weight" % s
    ts.append((norm, "BF16", (cols,), (rng.standard_normal(cols).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()))
    stio.write(os.path.join(out, fname), ts, {"format": "pt"})
    for n, dt, shape, data in ts:
        wm[n] = fname
        total += len(data)
json.dump({"metadata": {"total_size": total}, "weight_map": wm}, open(os.path.join(out, "model.safetensors.index.json"), "w"), indent=2)
json.dump({"model_type": "deepseek_v3", "torch_dtype": "bfloat16",
           "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                   "weight_block_size": [128, 128]}},
          open(os.path.join(out, "config.json"), "w"), indent=2)
for f, text in [("tokenizer.json", "{}"), ("README.md", "# random\n"), ("modeling_deepseek.py", "# code\n"),
                ("generation_config.json", "{\"do_sample\": true}\n")]:
    open(os.path.join(out, f), "w").write(text)
