#!/usr/bin/env bash
# Opening a 163-shard checkpoint (the official release's shard count and tensor list: 61
# layers, 256 experts, MTP, ~92k tensors, at tiny widths): dsv3-inspect's summary (index +
# every header parsed and validated + index checks) against the floor of reading the same
# header bytes with open/pread/close.
# usage: inspect_open.sh BUILD_DIR SRC_DIR
set -eu
B=$1 S=$2
D=${DSV3_BENCH_DIR:-/tmp/dsv3-bench}/narrow-163
if [ ! -f "$D/model.safetensors.index.json" ]; then
  "$B/bench/dsv3-gen" -q --config "$S/bench/configs/deepseek-v3-narrow.json" --out "$D" --shards 163 --force
fi
"$B/dsv3-inspect/dsv3-inspect" "$D" > /dev/null # warm the page cache
best=999
for i in 1 2 3 4 5; do
  t0=$(date +%s.%N); "$B/dsv3-inspect/dsv3-inspect" -q "$D" > /dev/null; t1=$(date +%s.%N)
  best=$(awk -v a=$t0 -v c=$t1 -v b=$best 'BEGIN{d = c - a; print (d < b) ? d : b}')
done
floor=999 pfloor=999
for i in 1 2 3 4 5; do
  read -r f p < <("$B/bench/inspect_floor" headers "$D"/*.safetensors 2>/dev/null)
  floor=$(awk -v a=$f -v b=$floor 'BEGIN{print (a < b) ? a : b}')
  pfloor=$(awk -v a=$p -v b=$pfloor 'BEGIN{print (a < b) ? a : b}')
done
json=$("$B/dsv3-inspect/dsv3-inspect" --json "$D")
files=$(echo "$json" | grep '"files"' | tr -dc 0-9)
tensors=$(echo "$json" | grep '"tensors":' | head -1 | tr -dc 0-9)
echo "open $files shards, $tensors tensors: dsv3-inspect summary $(printf %.3f $best) s (best of 5, process start included);"
echo "floor: open + pread of every header $(printf %.4f $floor) s (ratio $(awk -v a=$best -v b=$floor 'BEGIN{printf "%.0f", a/b}')x);"
echo "       the same + cJSON parse of every header $(printf %.4f $pfloor) s (ratio $(awk -v a=$best -v b=$pfloor 'BEGIN{printf "%.1f", a/b}')x)"
for mode in --check; do
  t0=$(date +%s.%N); "$B/dsv3-inspect/dsv3-inspect" $mode -q "$D" > /dev/null; t1=$(date +%s.%N)
  echo "dsv3-inspect $mode: $(awk -v a=$t0 -v c=$t1 'BEGIN{printf "%.3f", c - a}') s"
done
