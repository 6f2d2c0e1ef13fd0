#!/usr/bin/env bash
# Produces the test suite's reference data with code no one on the team wrote: the official
# DeepSeek-V3 inference/ scripts (fp8_cast_bf16.py, convert.py, model.py + generate.py) and
# the Hugging Face `tokenizers` package.  Runs on the GPU machine (Triton needs sm_90 for the
# official cast); the official code is fetched into .ref/ (git-ignored, never committed):
#   mkdir -p .ref/DeepSeek-V3 && git -C <mirror of deepseek-ai/DeepSeek-V3> archive HEAD inference | tar -x -C .ref/DeepSeek-V3
# Usage (repo root, .ref carried):  bash scripts/ref/gpu-reference.sh OUTDIR
# Then copy OUTDIR/{ref_*,tokenizer_ids.txt} into tests/data/.
set -euo pipefail
out=${1:?usage: gpu-reference.sh OUTDIR}
root=$(pwd)
inf=$root/.ref/DeepSeek-V3/inference
tiny=$root/models/dsv3-tiny
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
python3 - > "$out/versions.txt" <<'PY'
import torch, safetensors, tokenizers, transformers, triton
print("torch", torch.__version__, "safetensors", safetensors.__version__, "tokenizers", tokenizers.__version__,
      "transformers", transformers.__version__, "triton", triton.__version__, "gpu", torch.cuda.get_device_name(0))
PY
cat "$out/versions.txt"

# 1. Official FP8 -> BF16 cast (Triton weight_dequant on the GPU).
(cd "$inf" && python3 fp8_cast_bf16.py --input-fp8-hf-path "$tiny" --output-bf16-hf-path "$work/bf16")
python3 scripts/ref/hash_tensors.py "$work/bf16" "$out/ref_cast_bf16.tsv"

# 2. Official convert.py for MP 1, 2, 4; its hard-coded MTP layer 61 is layer 4 in dsv3-tiny.
sed 's/"model\.layers\.61"/"model.layers.4"/' "$inf/convert.py" > "$work/convert.py"
grep -q '"model.layers.4"' "$work/convert.py"
for mp in 1 2 4; do
  python3 "$work/convert.py" --hf-ckpt-path "$tiny" --save-path "$work/mp$mp" --n-experts 8 --model-parallel $mp
  python3 scripts/ref/hash_tensors.py "$work/mp$mp" "$out/ref_convert_mp$mp.tsv"
done

# 3. Tokenizer ids from Hugging Face `tokenizers`.
if [ -f scripts/ref/ref_tokenizer.py ]; then
  python3 scripts/ref/ref_tokenizer.py "$tiny/tokenizer.json" tests/data/tokenizer_corpus.txt "$out/tokenizer_ids.txt" || echo "ref_tokenizer failed"
fi

# 4. Logits, greedy continuations and perplexity from the official model.py (mp1 of step 2).
(cd "$inf" && python3 "$root/scripts/ref/ref_logits.py" "$inf" "$tiny" "$work/mp1" "$root/tests/data/heldout.json" "$out")
ls -la "$out"
