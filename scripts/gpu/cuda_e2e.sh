#!/usr/bin/env bash
# End-to-end GPU benchmark (issue 7): a 671B-width slice from dsv3-gen (real dimensions, 1 dense
# + 3 MoE layers, 256 experts: 36 GiB), loaded by the GPU backend; prefill tokens/s for a
# 2048-token prompt against the cuBLAS BF16 peak, decode ms/step at batch 1, 8, 32 against the
# memory floor.  Run after scripts/gpu/cuda.sh in the same session (it reuses build-gpu), or
# alone (it builds what it needs).  Needs ~40 GB of disk for the slice (DSV3_E2E_DIR).
#   bash scripts/gpu/cuda_e2e.sh [OUTDIR]
set -uo pipefail
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
build=${DSV3_GPU_BUILD:-build-gpu}
dir=${DSV3_E2E_DIR:-/tmp/dsv3-v3-slice}
t0=$(date +%s)
deps=""
if [ -f .deps/offline-deps.sh ]; then deps=$(sh .deps/offline-deps.sh unpack .deps); fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDSV3_CUDA=ON $deps > "$out/e2e_configure.log" 2>&1 || { echo "configure failed"; tail "$out/e2e_configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target dsv3-gen cuda_decode > "$out/e2e_build.log" 2>&1 || { echo "build failed"; grep -E "error" "$out/e2e_build.log" | head; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [ ! -f "$dir/model.safetensors.index.json" ]; then
  sed -e 's/"first_k_dense_replace": 3/"first_k_dense_replace": 1/' bench/configs/deepseek-v3-671b.json > "$out/v3-slice-config.json"
  "$build/bench/dsv3-gen" --config "$out/v3-slice-config.json" --out "$dir" --layers 4 --no-mtp -q || { echo "dsv3-gen failed"; exit 1; }
fi
echo "slice: $(du -sh "$dir" | cut -f1) ($(( $(date +%s) - t0 )) s)"
timeout 420 "$build/bench/cuda_decode" "$dir" ${DSV3_E2E_ARGS:-} 2>&1 | tee "$out/e2e.txt"
rc=${PIPESTATUS[0]}
echo "cuda_decode rc=$rc, $(( $(date +%s) - t0 )) s total"
exit "$rc"
