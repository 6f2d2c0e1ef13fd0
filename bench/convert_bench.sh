#!/usr/bin/env bash
# dsv3-convert end to end on a slice of the real 671B checkpoint, against the I/O floor, and
# its peak RSS.
#
# The slice: dsv3-gen with bench/configs/deepseek-v3-671b.json, LAYERS MoE layers at the real
# widths (first_k_dense_replace 0, no MTP) with EXPERTS of the 256 routed experts and the
# vocabulary cut to VOCAB, so that, as in the real checkpoint, ~99% of the bytes are FP8
# weights and their scales (the full embedding and lm_head alone would make a small slice a
# BF16 copy).  Defaults: 1 layer, 64 experts, vocab 4096, 2G shards: ~3.1 GB (IN=DIR uses an
# existing HF checkpoint instead, e.g. the cast benchmark's slice, which is the same).
#
# Measured REPS times (default 3; best time and best floor, highest RSS), each with the input
# evicted from the page cache (cold, as after a download):
#   HF -> MP 8, HF -> MP 16, runtime MP 16 -> MP 8 (resharding without going back to HF),
#   and HF -> MP 8 with --memory 64M (the bound on buffers; same bytes).
#   dsv3-convert fsyncs every output shard.
#   floor: cat IN/*.safetensors >/dev/null (cold) + dd if=/dev/zero bs=16M conv=fsync of the
#          output's size, on the same disk.  ratio = floor seconds / convert seconds (goal
#          >= 0.90; above 1 means reading and writing overlapped better than cat then dd).
#   peak RSS: getrusage's ru_maxrss as dsv3-convert --json reports it (goal <= 1 GiB at any
#          size; set by --memory and the tensor count, not by the bytes).
# Then the tensor count: the 163-shard, 92k-tensor checkpoint of the real release's layout at
# tiny widths (bench/configs/deepseek-v3-narrow.json): planning time and peak RSS at full depth.
#
# Env: BUILD (default build), BENCH_DIR (scratch, default bench/out; needs ~3x the slice), IN,
#      LAYERS, EXPERTS, VOCAB, SHARD, THREADS (default all cores), REPS, KEEP=1 keeps the slice.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
D=${BENCH_DIR:-$ROOT/bench/out}/convert
LAYERS=${LAYERS:-1} EXPERTS=${EXPERTS:-64} VOCAB=${VOCAB:-4096} SHARD=${SHARD:-2G}
GEN=$BUILD/bench/dsv3-gen CONV=$BUILD/dsv3-convert/dsv3-convert
for b in "$GEN" "$CONV"; do
  [ -x "$b" ] || { echo "convert_bench: $b missing: cmake --build $BUILD --target dsv3-gen dsv3-convert" >&2; exit 1; }
done
THREADS=${THREADS:-$(nproc)} REPS=${REPS:-3}
mkdir -p "$D"
IN=${IN:-$D/in-l$LAYERS-e$EXPERTS-v$VOCAB}
now() { date +%s.%N; }
calc() { awk "BEGIN{printf \"%.3f\", $*}"; }
bytes() { cat "$1"/*.safetensors | wc -c; }
jget() { grep -o "\"$2\":[^,}]*" "$1" | head -1 | sed 's/.*:[[:space:]]*//'; }
. "$ROOT/bench/slice.sh"
make_slice "$IN" "$D"
floor() { # floor IN_DIR OUT_BYTES -> seconds: cold cat of the input + dd of the output size with fsync
  evict "$1"
  local t0 t1 t2
  t0=$(now); cat "$1"/*.safetensors > /dev/null; t1=$(now)
  dd if=/dev/zero of="$D/dd.tmp" bs=16M count=$(( ($2 + 16777215) / 16777216 )) conv=fsync status=none; t2=$(now)
  rm -f "$D/dd.tmp"
  calc "($t1 - $t0) + ($t2 - $t1)"
}
run() { # run LABEL IN OUT ARGS... : REPS cold conversions (best time, highest RSS), one line
  local label=$1 in=$2 out=$3; shift 3
  local t=999999 fl=999999 rss=0 i t0 t1 x inb outb
  for i in $(seq "$REPS"); do
    rm -rf "$out"; evict "$in"
    t0=$(now); "$CONV" -q --json --no-manifest --threads "$THREADS" "$in" "$out" "$@" > "$D/conv.json"; t1=$(now)
    x=$(calc "$t1 - $t0"); t=$(calc "($x < $t) ? $x : $t")
    x=$(jget "$D/conv.json" peak_rss_bytes); rss=$(calc "($x > $rss) ? $x : $rss")
    inb=$(bytes "$in"); outb=$(bytes "$out")
    x=$(floor "$in" "$outb"); fl=$(calc "($x < $fl) ? $x : $fl")
  done
  printf '%-34s %6.2f GB in %6.2f GB out  %7.2f s  %5.3f GB/s in  floor %7.2f s  ratio %.2f  peak RSS %4.0f MiB\n' \
    "$label" "$(calc "$inb / 1e9")" "$(calc "$outb / 1e9")" "$t" "$(calc "$inb / $t / 1e9")" "$fl" "$(calc "$fl / $t")" \
    "$(calc "$rss / 1048576")"
}
echo "dsv3-convert, $(date -u +%Y-%m-%d), $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB RAM, threads $THREADS"
echo "input $IN: $(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print('%d layer(s), %d experts, hidden %d, vocab %d' % (c['num_hidden_layers'], c['n_routed_experts'], c['hidden_size'], c['vocab_size']))" "$IN/config.json"), $(ls "$IN"/*.safetensors | wc -l) shards"
hashes() { (cd "$1" && sha256sum model*-mp*.safetensors); }
run "HF -> mp8" "$IN" "$D/mp8" --mp 8
hashes "$D/mp8" > "$D/mp8.sha"; rm -rf "$D/mp8"
run "HF -> mp8 --memory 64M" "$IN" "$D/mp8" --mp 8 --memory 64M
hashes "$D/mp8" | cmp -s - "$D/mp8.sha" || echo "WARNING: --memory 64M output differs" >&2
rm -rf "$D/mp8"
run "HF -> mp16" "$IN" "$D/mp16" --mp 16
run "runtime mp16 -> mp8" "$D/mp16" "$D/mp8" --mp 8
hashes "$D/mp8" | cmp -s - "$D/mp8.sha" || echo "WARNING: mp16 -> mp8 differs from HF -> mp8" >&2
rm -rf "$D/mp8" "$D/mp16" "$D/mp8.sha"
# tensor count: the release's 163 shards and ~92k tensors (tiny widths; bf16 since FP8 at
# these widths cannot be split on 128-blocks)
N=$D/narrow-163
[ -f "$N/model.safetensors.index.json" ] || "$GEN" -q --config "$ROOT/bench/configs/deepseek-v3-narrow.json" --out "$N" --shards 163 --force
for mp in 8 16; do
  rm -rf "$D/n$mp"
  t0=$(now); "$CONV" -q --json --no-manifest "$N" "$D/n$mp" --mp $mp --dtype bf16 > "$D/conv.json"; t1=$(now)
  printf '%-34s %d tensors in 163 shards: %.2f s, peak RSS %.0f MiB\n' "narrow full depth -> mp$mp bf16" \
    "$(python3 -c "import json;print(len(json.load(open('$N/model.safetensors.index.json'))['weight_map']))")" \
    "$(calc "$t1 - $t0")" "$(calc "$(jget "$D/conv.json" peak_rss_bytes) / 1048576")"
  rm -rf "$D/n$mp"
done
[ "${KEEP:-0}" = 1 ] || rm -rf "$D/in-l$LAYERS-e$EXPERTS-v$VOCAB" "$N"
