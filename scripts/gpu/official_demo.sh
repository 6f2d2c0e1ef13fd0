#!/usr/bin/env bash
# Issue 7's comparison: the official demo (inference/model.py, fetched into .ref/, never
# committed) and dsv3-run on the same 671B-width slice (1 dense + 3 MoE layers, dsv3-gen),
# converted to mp1 by dsv3-convert (file-identical to the official convert.py), same GPU,
# decode at batch 1 (and, with DSV3_OD_PREFILL=N, the official prefill of N tokens; dsv3-run's
# is bench/cuda_decode's).  Needs ~80 GB of disk.   bash scripts/gpu/official_demo.sh [OUTDIR]
set -uo pipefail
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
build=${DSV3_GPU_BUILD:-build-gpu}
dir=${DSV3_E2E_DIR:-/tmp/dsv3-v3-slice}
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)
deps=""
[ -f .deps/offline-deps.sh ] && deps=$(sh .deps/offline-deps.sh unpack .deps)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDSV3_CUDA=ON $deps > "$out/od_configure.log" 2>&1 || { tail "$out/od_configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target dsv3-run dsv3-convert dsv3-gen > "$out/od_build.log" 2>&1 ||
  { grep -E "error" "$out/od_build.log" | head; exit 1; }
if [ ! -f "$dir-mp1/model0-mp1.safetensors" ]; then
  if [ ! -f "$dir/model.safetensors.index.json" ]; then
    sed -e 's/"first_k_dense_replace": 3/"first_k_dense_replace": 1/' bench/configs/deepseek-v3-671b.json > "$out/v3-slice-config.json"
    "$build/bench/dsv3-gen" --config "$out/v3-slice-config.json" --out "$dir" --layers 4 --no-mtp -q || { echo "dsv3-gen failed"; exit 1; }
  fi
  "$build/dsv3-convert/dsv3-convert" "$dir" "$dir-mp1" --mp 1 -q || { echo "convert failed"; exit 1; }
  [ "${KEEP_SLICES:-0}" = 1 ] || rm -rf "$dir"
fi
echo "slice ready: $(( $(date +%s) - t0 )) s"
"$build/dsv3-run/dsv3-run" --ckpt "$dir-mp1" --ids "0 $(seq -s ' ' 1 15)" --max-new-tokens 256 --ignore-eos \
  --temperature 0 --max-seq-len 1024 > /dev/null 2> "$out/od_ours.err"
grep -o 'decode .*' "$out/od_ours.err" | sed 's/^/dsv3-run: /'
timeout 400 python3 scripts/ref/time_official.py .ref/DeepSeek-V3/inference "$dir-mp1" 64 ${DSV3_OD_PREFILL:-0} 2>&1 | tail -4 | tee "$out/od_official.txt"
echo "total $(( $(date +%s) - t0 )) s"
