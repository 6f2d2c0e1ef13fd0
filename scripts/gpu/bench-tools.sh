#!/usr/bin/env bash
# Tool benchmarks on the GPU machine (16 cores, NVMe): dsv3-cast and dsv3-convert on a
# 671B-width slice from dsv3-gen against the I/O floor, then the official fp8_cast_bf16.py and
# convert.py (from .ref/, never committed) on the same slice for the ratio.
# Usage (repo root, .deps and .ref carried): bash scripts/gpu/bench-tools.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/bench-out}; mkdir -p "$out"
root=$(pwd)
args=$(sh .deps/offline-deps.sh unpack .deps)
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DDSV3_CUDA=OFF $args > "$out/configure.log" 2>&1 || { tail "$out/configure.log"; exit 1; }
cmake --build build-bench -j"$(nproc)" --target dsv3-gen dsv3-cast dsv3-convert bench_fp8 > "$out/build.log" 2>&1 || { grep error "$out/build.log" | head; exit 1; }
export BUILD=$root/build-bench BENCH_DIR=/tmp/dsv3-bench LAYERS=${LAYERS:-1}
bash bench/cast.sh 2>&1 | tee "$out/cast.txt"
bash bench/convert.sh 2>&1 | tee "$out/convert.txt"
# wall time and peak RSS of a command (no /usr/bin/time on that machine)
timed() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.time(); r = subprocess.run(sys.argv[1:]); el = time.time() - t
print("Elapsed (wall clock) %.2f" % el); print("Maximum resident set size (kbytes): %d" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(r.returncode)
PY
}
if [ -d .ref/DeepSeek-V3/inference ]; then
  inf=$root/.ref/DeepSeek-V3/inference; in=/tmp/dsv3-bench/slice$LAYERS
  inb=$(cat "$in"/*.safetensors | wc -c)
  cat "$in"/*.safetensors > /dev/null
  ( cd "$inf" && timed python3 fp8_cast_bf16.py --input-fp8-hf-path "$in" --output-bf16-hf-path /tmp/dsv3-bench/official-cast ) > "$out/official_cast.log" 2>&1
  rm -rf /tmp/dsv3-bench/official-cast
  t=$(grep "Elapsed (wall" "$out/official_cast.log" | awk '{print $NF}'); rss=$(grep "Maximum resident" "$out/official_cast.log" | awk '{print $NF}')
  echo "official fp8_cast_bf16.py: wall $t, max RSS ${rss} KB, input $inb bytes" | tee -a "$out/cast.txt"
  sed 's/"model\.layers\.61"/"model.layers.999999"/' "$inf/convert.py" > /tmp/dsv3-bench/convert.py
  cat "$in"/*.safetensors > /dev/null
  ( cd "$inf" && timed python3 /tmp/dsv3-bench/convert.py --hf-ckpt-path "$in" --save-path /tmp/dsv3-bench/official-conv --n-experts 256 --model-parallel 8 ) > "$out/official_convert.log" 2>&1
  rm -rf /tmp/dsv3-bench/official-conv
  t=$(grep "Elapsed (wall" "$out/official_convert.log" | awk '{print $NF}'); rss=$(grep "Maximum resident" "$out/official_convert.log" | awk '{print $NF}')
  echo "official convert.py mp8: wall $t, max RSS ${rss} KB, input $inb bytes" | tee -a "$out/convert.txt"
fi
