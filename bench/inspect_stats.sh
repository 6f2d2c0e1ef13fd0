#!/usr/bin/env bash
# --stats throughput over a multi-GB checkpoint (the real 671B config cut to 3 dense layers,
# no MTP: 5.5 GB, FP8 projections + BF16 embedding and lm_head), from the page cache, against
# the RAM read bandwidth with the same thread count (the floor: every byte must be read once).
# usage: inspect_stats.sh BUILD_DIR SRC_DIR   (THREADS=n to pin the thread count)
set -eu
B=$1 S=$2
D=${DSV3_BENCH_DIR:-/tmp/dsv3-bench}/671b-3l
TH=${THREADS:-$(nproc)}
if [ ! -f "$D/model.safetensors.index.json" ]; then
  t0=$(date +%s.%N)
  "$B/bench/dsv3-gen" -q --config "$S/bench/configs/deepseek-v3-671b.json" --layers 3 --no-mtp --out "$D" --force
  t1=$(date +%s.%N)
  bytes=$(du -cb "$D"/*.safetensors | tail -1 | cut -f1)
  echo "dsv3-gen: $bytes bytes in $(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.1f", b - a}') s ($(awk -v n=$bytes -v a=$t0 -v b=$t1 'BEGIN{printf "%.2f", n / (b - a) / 1e9}') GB/s)"
fi
cat "$D"/*.safetensors > /dev/null # page cache
mem=$("$B/bench/inspect_floor" mem 1024 "$TH" 2>/dev/null)
echo "RAM read bandwidth, $TH threads: $mem GB/s (floor)"
run() { # run LABEL FILTER
  local out; out=$("$B/dsv3-inspect/dsv3-inspect" --stats --threads "$TH" ${2:+--filter "$2"} "$D" 2>&1 >/dev/null | tail -1)
  local gbs; gbs=$(echo "$out" | sed 's/.*(\([0-9.]*\) GB\/s.*/\1/')
  echo "--stats $1: $out; ratio to the floor $(awk -v a=$gbs -v b=$mem 'BEGIN{printf "%.2f", a/b}')"
}
run "FP8 weights" '*proj.weight'
run "BF16 embedding + lm_head" '*e[am][bd]*.weight'
run "all tensors" ''
