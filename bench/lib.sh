# Shared by the benchmark scripts: a checkpoint from the generator, and the I/O floor.
# BUILD (default build), BENCH_DIR (default bench/out, git-ignored), LAYERS, CONFIG.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
OUTD=${BENCH_DIR:-$ROOT/bench/out}
mkdir -p "$OUTD"
now() { date +%s.%N; }
secs() { awk "BEGIN{print $2 - $1}"; }
gb() { awk "BEGIN{print $1 / 1e9}"; }
calc() { awk "BEGIN{print $*}"; }
dir_bytes() { cat "$1"/*.safetensors | wc -c; }
# A 671B-width slice: LAYERS MoE layers at the real dimensions (first_k_dense_replace 0),
# no MTP layer.  One MoE layer is about 11.6 GB of FP8, like the official cast's reference.
slice() {
  local layers=${LAYERS:-1}
  local d="$OUTD/slice$layers"
  if [ ! -f "$d/model.safetensors.index.json" ]; then
    sed 's/"first_k_dense_replace": 3/"first_k_dense_replace": 0/' "$ROOT/bench/configs/deepseek-v3-671b.json" > "$OUTD/cfg.json"
    "$BUILD/bench/dsv3-gen" --config "$OUTD/cfg.json" --layers "$layers" --no-mtp --out "$d" --shard-size 4G -q >&2
  fi
  echo "$d"
}
# Seconds to read the files of $1 (cat) and to write $2 bytes with fsync (dd) on this disk.
io_floor() {
  local t0 t1 t2
  t0=$(now); cat "$1"/*.safetensors > /dev/null; t1=$(now)
  dd if=/dev/zero of="$OUTD/dd.tmp" bs=16M count=$(( ($2 + 16777215) / 16777216 )) conv=fsync status=none; t2=$(now)
  rm -f "$OUTD/dd.tmp"
  echo "$(secs "$t0" "$t1") $(secs "$t1" "$t2")"
}
machine() { echo "$(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -m), $(date -u +%Y-%m-%d)"; }
