#!/usr/bin/env bash
# The GPU machine's run: build everything with CUDA (the machine lacks cJSON, xxHash,
# libarchive and Oniguruma: they come from the carried .deps/, see scripts/deps.sh), run the
# whole ctest suite there (the CUDA unit tests run for real; on CI they skip), regenerate the
# tokenizer reference with Hugging Face `tokenizers` and compare it with the committed one,
# and run the CUDA benchmarks if built.  Usage (repo root, .deps carried): bash scripts/gpu/suite.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/gpu-out}
# SNAPSHOT=DIR: build from DIR (e.g. a `git archive HEAD` export carried to the machine, with
# models/ linked from the working tree) instead of the working tree.
if [ -n "${SNAPSHOT:-}" ]; then
  [ -e "$SNAPSHOT/models" ] || ln -s "$(pwd)/models" "$SNAPSHOT/models"
  [ -e "$SNAPSHOT/.deps" ] || ln -s "$(pwd)/.deps" "$SNAPSHOT/.deps"
  cd "$SNAPSHOT"
fi
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
args=$(sh .deps/offline-deps.sh unpack .deps)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DDSV3_CUDA=ON $args > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" > "$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
(cd build-gpu && ctest --output-on-failure -j8 > "$out/ctest.log" 2>&1); echo "ctest exit $?"
grep -E "tests passed|Failed|\*\*\*" "$out/ctest.log" | tail -15
if [ -f tests/data/tokenizer_corpus.txt ]; then
  python3 scripts/ref/ref_tokenizer.py models/dsv3-tiny/tokenizer.json tests/data/tokenizer_corpus.txt "$out/tokenizer_ids.txt" &&
    { cmp -s "$out/tokenizer_ids.txt" tests/data/tokenizer_ids.txt && echo "tokenizer ids: identical to the committed reference" || echo "tokenizer ids: DIFFER from the committed reference"; }
fi
for b in build-gpu/bench/bench_cuda*; do [ -x "$b" ] && "$b" 2>&1 | tee -a "$out/bench_cuda.txt"; done
true
