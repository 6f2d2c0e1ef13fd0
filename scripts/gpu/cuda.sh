#!/usr/bin/env bash
# Builds kernels/cuda with its tests and benchmark on a GPU machine, runs every CUDA unit test
# and the kernel benchmark, and prints a short table.  One call, well under 10 minutes on an
# H100/H200 with 16 cores.  Logs go to OUTDIR (default $OUT, else ./gpu-out).
#
#   bash scripts/gpu/cuda.sh [OUTDIR]                  (repo root; .deps/ carried when the
#                                                       machine lacks cJSON/xxHash/libarchive/onig)
# Environment: DSV3_BENCH_ARGS (e.g. "--quick" or "--filter gemv"), DSV3_SEED (test inputs),
#              DSV3_GPU_FULL=1 also runs the whole ctest suite, DSV3_SANITIZER=1 runs the CUDA
#              tests once more under compute-sanitizer memcheck (slower).
set -uo pipefail
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
root=$(pwd)
build=${DSV3_GPU_BUILD:-build-gpu}
export NCCL_NVLS_ENABLE=0
jobs=$(nproc 2>/dev/null || echo 8)
t0=$(date +%s)
status() { printf '%-28s %s\n' "$1" "$2" | tee -a "$out/summary.txt"; }
: > "$out/summary.txt"

{ nvidia-smi; nvcc --version; cmake --version | head -1; gcc --version | head -1; git -C "$root" log -1 --oneline; } > "$out/env.txt" 2>&1
status "gpu" "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
status "commit" "$(git -C "$root" log -1 --format=%h 2>/dev/null) $(git -C "$root" status --porcelain 2>/dev/null | grep -c . ) changed files"

deps=""
if [ -f .deps/offline-deps.sh ]; then deps=$(sh .deps/offline-deps.sh unpack .deps); fi
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDSV3_CUDA=ON $deps > "$out/configure.log" 2>&1; then
  status "configure" "FAILED (configure.log)"; tail -20 "$out/configure.log"; exit 1
fi
targets="dsv3_cuda cuda_bench"
for t in linear norm mla moe sample forward; do targets="$targets test_cuda_$t"; done
if [ "${DSV3_GPU_FULL:-0}" = 1 ]; then targets=all; fi
if ! cmake --build "$build" -j"$jobs" --target $targets > "$out/build.log" 2>&1; then
  status "build" "FAILED (build.log)"; grep -E "error|Error" "$out/build.log" | head -30; exit 1
fi
status "build" "ok ($(( $(date +%s) - t0 )) s)"
# registers / stack / spills of every kernel, for the notes
grep -E "Compiling entry|Used [0-9]+ registers|bytes stack frame" "$out/build.log" > "$out/ptxas.txt" 2>/dev/null || true
cuobjdump -sass "$build/kernels/libdsv3_cuda.a" 2>/dev/null | gzip > "$out/sass.txt.gz" || true
# local-memory traffic (LDL/STL) per kernel: should be none on the hot paths
cuobjdump -sass "$build/kernels/libdsv3_cuda.a" 2>/dev/null | awk '/Function :/{f=$3} /LDL|STL/{n[f]++} END{for(k in n) print n[k], k}' > "$out/local_memory.txt" || true

# unit tests (each prints its seed: DSV3_SEED=... repeats a failure)
label="-L cuda"
[ "${DSV3_GPU_FULL:-0}" = 1 ] && label=""
(cd "$build" && timeout 400 ctest $label -V -j2) > "$out/tests.log" 2>&1
trc=$?
status "cuda tests" "$([ $trc = 0 ] && echo pass || echo "FAIL rc=$trc (tests.log)") $(grep -E 'tests passed|tests failed' "$out/tests.log" | tail -1)"
grep -E "checks,|FAILED|skipped|rel err|greedy|gpu:" "$out/tests.log" | grep -v "^ *[0-9]*: *$" | head -60 | tee -a "$out/summary.txt"

if [ "${DSV3_SANITIZER:-0}" = 1 ] && command -v compute-sanitizer > /dev/null; then
  for t in norm sample mla linear moe; do
    timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$build/tests/test_cuda_$t" > "$out/memcheck_$t.log" 2>&1
    status "memcheck $t" "rc=$?"
  done
fi

# benchmark (figures next to the floors measured in the same run)
timeout 300 "$build/bench/cuda_bench" ${DSV3_BENCH_ARGS:-} > "$out/bench.txt" 2> "$out/bench.err"
brc=$?
status "bench" "rc=$brc ($(( $(date +%s) - t0 )) s total)"
echo "---- bench ($out/bench.txt)"
cat "$out/bench.txt"
[ -s "$out/bench.err" ] && { echo "---- bench stderr"; tail -5 "$out/bench.err"; }
exit $(( trc != 0 || brc != 0 ))
