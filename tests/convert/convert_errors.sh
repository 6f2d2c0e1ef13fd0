#!/usr/bin/env bash
# dsv3-convert on bad inputs and interruptions: every invalid degree with its reason and
# nothing written, hostile runtime inputs, usage errors, --resume trusting only an interrupted
# run of the same conversion, temp files of killed runs, bounded memory giving the same bytes.
. "$SRC/tests/lib.sh"
GEN=$BUILD/bench/dsv3-gen
notmp() { [ -z "$(find "$T" -name '.*.tmp.*')" ] && ok || fail "$1: temp files left: $(find "$T" -name '.*.tmp.*')"; }
# rename_tensor FILE OLD NEW : rename a tensor in a safetensors header in place (same length)
rename_tensor() {
  "$PYTHON" - "$@" <<'PY'
import struct, sys
p, a, b = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
assert len(a) == len(b)
d = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", d[:8])[0]
i = d.index(b'"' + a + b'"', 8, 8 + n); d[i + 1:i + 1 + len(a)] = b
open(p, "wb").write(d)
PY
}

# --- invalid degrees on the tiny model (8 experts; w2 of 1536 columns, scale blocks of 128)
expect_error "mp 3: experts" "cannot split for --mp 3: 8 experts are not divisible by 3 ranks (largest valid degree below it: 2)" \
  "$CONVERT" -q "$DSV3_TINY" "$T/x" --mp 3
expect_error "mp 8: FP8 blocks" "cannot split for --mp 8: tensor layers.0.ffn.w2.weight: FP8 slices of 192 along dim 1 would cut 128x128 scale blocks (largest valid degree below it: 4)" \
  "$CONVERT" -q "$DSV3_TINY" "$T/x" --mp 8
expect_error "mp 16" "cannot split for --mp 16: 8 experts are not divisible by 16 ranks (largest valid degree below it: 4)" \
  "$CONVERT" -q "$DSV3_TINY" "$T/x" --mp 16
# --dtype bf16 drops the scales: mp 8 is valid (no 128-block constraint), mp 16 still is not
expect_error "bf16 mp 16" "largest valid degree below it: 8" "$CONVERT" -q "$DSV3_TINY" "$T/x" --mp 16 --dtype bf16
[ ! -e "$T/x" ] && ok || fail "output created for an invalid degree"
# MP 3 failing on a dimension: a generated model with 6 experts (vocab 2048)
if [ -x "$GEN" ]; then
  sed 's/"n_routed_experts": 8/"n_routed_experts": 6/; s/"n_group": 4/"n_group": 3/; s/"topk_group": 2/"topk_group": 1/' \
    "$SRC/bench/configs/dsv3-tiny.json" > "$T/e6.json"
  expect "gen 6 experts" "$GEN" -q --config "$T/e6.json" --out "$T/g6"
  expect_error "mp 3: dims" "cannot split for --mp 3: tensor .*: dim 0 of size 2048 is not divisible by 3 (largest valid degree below it: 2)" \
    "$CONVERT" -q "$T/g6" "$T/x" --mp 3
  expect "mp 2 of 6 experts" "$CONVERT" -q "$T/g6" "$T/g6o" --mp 2
  expect "check mp 2" "$INSPECT" --check "$T/g6o"
else
  echo "dsv3-gen not built: MP 3 on dimensions not checked"
fi
[ ! -e "$T/x" ] && ok || fail "output created for an invalid degree"

# --- usage errors: exit 2
for args in "--mp 0" "--mp 2 --dtype fp16" "--mp 2 --threads 0" "--mp 2 --memory 12Q" "--mp 2 --n-experts -1" "--mp 2 extra"; do
  "$CONVERT" -q "$DSV3_TINY" "$T/x" $args > /dev/null 2>&1; [ $? -eq 2 ] && ok || fail "usage error not exit 2: $args"
done
"$CONVERT" > /dev/null 2>&1; [ $? -eq 2 ] && ok || fail "no arguments: not exit 2"
"$CONVERT" -q "$DSV3_TINY" "$T/x" > /dev/null 2>&1; [ $? -eq 2 ] && ok || fail "no --mp: not exit 2"

# --- bad inputs: one line naming the file and the tensor, nothing written
expect_error "missing input" "$T/nothing" "$CONVERT" -q "$T/nothing" "$T/x" --mp 2
mkdir -p "$T/nocfg" && cp "$DSV3_TINY"/*.safetensors "$DSV3_TINY"/*.index.json "$T/nocfg/"
expect_error "no config.json" "nocfg: no config.json" "$CONVERT" -q "$T/nocfg" "$T/x" --mp 2
cp -r "$DSV3_TINY" "$T/bad"
f=$(grep -l '"model.norm.weight"' "$T"/bad/*.safetensors | head -1)
rename_tensor "$f" model.norm.weight model.nrmx.weight
sed -i 's/"model.norm.weight"/"model.nrmx.weight"/' "$T/bad/model.safetensors.index.json" # the index agrees
expect_error "unmapped name" "$(basename "$f"): tensor model.nrmx.weight: key \"nrmx\" is not in convert.py's mapping" \
  "$CONVERT" -q "$T/bad" "$T/x" --mp 2
rm -rf "$T/bad"; cp -r "$DSV3_TINY" "$T/bad"
f=$(grep -l '"model.layers.1.self_attn.o_proj.weight_scale_inv"' "$T"/bad/*.safetensors | head -1)
rename_tensor "$f" model.layers.1.self_attn.o_proj.weight_scale_inv model.layers.1.self_attn.o_proj.weight_scale_inx
sed -i 's/"model.layers.1.self_attn.o_proj.weight_scale_inv"/"model.layers.1.self_attn.o_proj.weight_scale_inx"/' \
  "$T/bad/model.safetensors.index.json"
expect_error "bf16 without a scale" "tensor layers.1.attn.wo.weight: FP8 weight has no scale" \
  "$CONVERT" -q "$T/bad" "$T/x" --mp 2 --dtype bf16
rm -rf "$T/bad"; cp -r "$DSV3_TINY" "$T/bad" # an index that lies about a tensor's shard: refused, as dsv3-cast does
sed -i 's/"model.norm.weight": "model-0000[0-9]-of-00003.safetensors"/"model.norm.weight": "model-00001-of-00003.safetensors"/' \
  "$T/bad/model.safetensors.index.json"
grep -q '"model.norm.weight": "model-00001' "$T/bad/model.safetensors.index.json" && [ "$(basename "$(grep -l '"model.norm.weight"' "$T"/bad/*.safetensors | head -1)")" != model-00001-of-00003.safetensors ] ||
  fail "index edit did not make a lie"
expect_error "lying index" "model.safetensors.index.json: tensor model.norm.weight: weight_map says model-00001-of-00003.safetensors" \
  "$CONVERT" -q "$T/bad" "$T/x" --mp 2
echo '{"n_routed_experts": 8,' > "$T/bad/config.json"
expect_error "broken config.json" "config.json" "$CONVERT" -q "$T/bad" "$T/x" --mp 2
[ ! -e "$T/x" ] && ok || fail "output created for a bad input"
expect "convert mp4" "$CONVERT" -q "$DSV3_TINY" "$T/mp4" --mp 4
expect_error "shards of another degree in OUT" "mp4: holds model[0-3]-mp4.safetensors, a shard of another degree (mp 4)" \
  "$CONVERT" -q "$DSV3_TINY" "$T/mp4" --mp 2
[ ! -e "$T/mp4/model0-mp2.safetensors" ] && ok || fail "mp 2 written beside mp 4"
cp -r "$T/mp4" "$T/rt"; rm "$T/rt/model2-mp4.safetensors"
expect_error "runtime rank missing" "model2-mp4" "$CONVERT" -q "$T/rt" "$T/x" --mp 2
rm -rf "$T/rt"; cp -r "$T/mp4" "$T/rt"
# rank 1's slice of head.weight declared [256, 1024] instead of [512, 512] (same bytes)
"$PYTHON" - "$T/rt/model1-mp4.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; d = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n]); t = h["head.weight"]; t["shape"] = [t["shape"][0] // 2, t["shape"][1] * 2]
s = json.dumps(h, separators=(",", ":")).encode(); d[8:8 + n] = s + b" " * (n - len(s)); open(p, "wb").write(d)
PY
expect_error "runtime slices of different shapes" "model1-mp4.safetensors: tensor head.weight: dim 0 is 256 on this rank but 512 on another" \
  "$CONVERT" -q "$T/rt" "$T/x" --mp 2
expect_error "output inside input" "must not be the input directory" "$CONVERT" -q "$DSV3_TINY" "$DSV3_TINY/out" --mp 2
[ ! -e "$DSV3_TINY/out" ] && ok || fail "output created inside the input"
: > "$T/afile"
expect_error "output is a file" "afile" "$CONVERT" -q "$DSV3_TINY" "$T/afile" --mp 2
[ ! -e "$T/x" ] && ok || fail "output created for a bad input"

# --- bounded memory: 1 MiB pieces on one thread give the same files as the default
expect "small memory" "$CONVERT" -q "$DSV3_TINY" "$T/m1" --mp 4 --memory 1M --threads 1 --no-manifest
for r in 0 1 2 3; do cmp -s "$T/mp4/model$r-mp4.safetensors" "$T/m1/model$r-mp4.safetensors" || fail "--memory 1M: rank $r differs"; done; ok
expect "small memory bf16" "$CONVERT" -q "$DSV3_TINY" "$T/b1" --mp 2 --dtype bf16 --memory 1M --threads 3
expect "default bf16" "$CONVERT" -q "$DSV3_TINY" "$T/b2" --mp 2 --dtype bf16
for r in 0 1; do cmp -s "$T/b1/model$r-mp2.safetensors" "$T/b2/model$r-mp2.safetensors" || fail "bf16 --memory 1M: rank $r differs"; done; ok

# --- --resume trusts only an interrupted run of the same conversion on the same inputs
DSV3_TEST_STOP_AFTER_FILES=2 "$CONVERT" -q "$DSV3_TINY" "$T/res" --mp 4 2>/dev/null; [ $? -eq 3 ] && ok || fail "stop hook"
expect "resume" "$CONVERT" --json --resume "$DSV3_TINY" "$T/res" --mp 4
contains "two shards skipped" "$T/out" '"files_skipped":.*2'
for r in 0 1 2 3; do cmp -s "$T/mp4/model$r-mp4.safetensors" "$T/res/model$r-mp4.safetensors" || fail "resumed rank $r differs"; done; ok
[ ! -e "$T/res/.dsv3-convert.state" ] && ok || fail "state file left after a complete run"
expect "resume a finished run" "$CONVERT" --json --resume "$DSV3_TINY" "$T/res" --mp 4
contains "a finished run is redone" "$T/out" '"files_skipped":.*0'
DSV3_TEST_STOP_AFTER_FILES=1 "$CONVERT" -q "$DSV3_TINY" "$T/res2" --mp 2 2>/dev/null; [ $? -eq 3 ] && ok || fail "stop hook"
expect "resume with other options" "$CONVERT" --json --resume "$DSV3_TINY" "$T/res2" --mp 2 --dtype bf16
contains "other options: nothing skipped" "$T/out" '"files_skipped":.*0'
for r in 0 1; do cmp -s "$T/b2/model$r-mp2.safetensors" "$T/res2/model$r-mp2.safetensors" || fail "rank $r kept from the other run"; done; ok
# the same shapes from other inputs (another seed) are not taken for complete
if [ -x "$GEN" ]; then
  expect "gen seed 1" "$GEN" -q --config "$SRC/bench/configs/dsv3-tiny.json" --out "$T/s1" --seed 1
  expect "gen seed 2" "$GEN" -q --config "$SRC/bench/configs/dsv3-tiny.json" --out "$T/s2" --seed 2
  DSV3_TEST_STOP_AFTER_FILES=1 "$CONVERT" -q "$T/s1" "$T/res3" --mp 2 2>/dev/null
  expect "resume on other inputs" "$CONVERT" -q --resume "$T/s2" "$T/res3" --mp 2
  expect "direct" "$CONVERT" -q "$T/s2" "$T/s2o" --mp 2
  cmp -s "$T/s2o/model0-mp2.safetensors" "$T/res3/model0-mp2.safetensors" && ok || fail "a shard of other inputs was kept"
fi

# --- temp files: a killed run's are removed by the next run, a signalled run removes its own
sleep 0 & dead=$!; wait $dead
: > "$T/res/.model1-mp4.safetensors.tmp.$dead"
: > "$T/res/.model2-mp4.safetensors.tmp.$$"   # a live process's temp is left alone
expect "run after a killed one" "$CONVERT" "$DSV3_TINY" "$T/res" --mp 4
contains "stale temp reported" "$T/err" "removed 1 temp file(s) of a killed run"
[ ! -e "$T/res/.model1-mp4.safetensors.tmp.$dead" ] && ok || fail "stale temp not removed"
[ -e "$T/res/.model2-mp4.safetensors.tmp.$$" ] && ok || fail "a live process's temp was removed"
rm -f "$T/res/.model2-mp4.safetensors.tmp.$$"
# a file-size limit kills the run with SIGXFSZ in the middle of the first shard
rc=$(bash -c 'ulimit -f 2048; "$@"; echo $?' _ "$CONVERT" -q "$DSV3_TINY" "$T/fs" --mp 1 2>/dev/null)
[ $rc -eq $((128 + $(kill -l XFSZ))) ] && ok || fail "SIGXFSZ: exit $rc"
[ ! -e "$T/fs/model0-mp1.safetensors" ] && ok || fail "SIGXFSZ: a partial shard under its final name"
notmp "after signals and resumes"
finish
