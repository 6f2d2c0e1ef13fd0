#!/usr/bin/env bash
# The float32 reference of test_ref_logits (tests/data/ref_logits_f32.*): the OFFICIAL
# DeepSeek-V3 model.py and generate() with every activation in float32, on the CPU (no GPU).
# Weights: dsv3-tiny cast to BF16 by dsv3-cast, whose tensors must equal the official
# fp8_cast_bf16.py's (hashes in tests/data/ref_cast_bf16.tsv, made on a GPU by gpu-reference.sh),
# then resharded by the official convert.py (mp1; its hard-coded MTP layer 61 is layer 4 here).
# The official code is fetched into .ref/ (git-ignored, never committed):
#   mkdir -p .ref/DeepSeek-V3 && git -C <mirror of deepseek-ai/DeepSeek-V3> archive HEAD inference | tar -x -C .ref/DeepSeek-V3
# Needs python3 with torch, safetensors, tokenizers, transformers and triton (CPU wheels do;
# triton is only imported).  Usage (repo root, after a build in BUILD, default build/):
#   bash scripts/ref/cpu-reference.sh OUTDIR      then copy OUTDIR/ref_logits_f32.* to tests/data/
set -euo pipefail
out=${1:?usage: cpu-reference.sh OUTDIR}
root=$(pwd)
inf=$root/.ref/DeepSeek-V3/inference
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
"${BUILD:-build}/dsv3-cast/dsv3-cast" -q models/dsv3-tiny "$work/bf16"
python3 scripts/ref/hash_tensors.py "$work/bf16" "$work/cast.tsv"
if ! diff <(grep -v '^#' "$work/cast.tsv" | sort) <(grep -v '^#' tests/data/ref_cast_bf16.tsv | sort) > /dev/null; then
  echo "cpu-reference: dsv3-cast's BF16 tensors differ from the official cast's" >&2
  exit 1
fi
sed 's/"model\.layers\.61"/"model.layers.4"/' "$inf/convert.py" > "$work/convert.py"
grep -q '"model.layers.4"' "$work/convert.py"
"$py" "$work/convert.py" --hf-ckpt-path "$work/bf16" --save-path "$work/mp1" --n-experts 8 --model-parallel 1
"$py" -c 'import torch; print("torch", torch.__version__, "cpu")' > "$out/versions_f32.txt"
(cd "$inf" && "$py" "$root/scripts/ref/ref_logits.py" "$inf" "$root/models/dsv3-tiny" "$work/mp1" \
  "$root/tests/data/heldout.json" "$out" f32)
ls -la "$out"
