#!/usr/bin/env bash
# dsv3-cast on models/dsv3-tiny.
# Bit-exactness: tests/data/ref_cast_bf16.tsv holds the per-tensor and per-file SHA-256 of the
# official fp8_cast_bf16.py's output, made on an H100 by scripts/ref/gpu-reference.sh
# (`python3 fp8_cast_bf16.py --input-fp8-hf-path models/dsv3-tiny --output-bf16-hf-path OUT`
# then `scripts/ref/hash_tensors.py OUT ref_cast_bf16.tsv`).  Equal hashes: byte-identical files.
. "$SRC/tests/lib.sh"
have_python || { echo "python3 needed to hash tensors"; exit 77; }
H="$PYTHON $SRC/scripts/ref/hash_tensors.py"
expect "cast to bf16" "$CAST" -q "$DSV3_TINY" "$T/bf16"
$H "$T/bf16" "$T/bf16.tsv"
REF=$DSV3_TESTDATA/ref_cast_bf16.tsv
if [ -f "$REF" ]; then
  diff "$REF" "$T/bf16.tsv" > "$T/d" && ok || fail "not bit-exact with the official cast: $(head -5 "$T/d")"
  # every output tensor and file is listed, and there is nothing extra
  [ "$(grep -c . "$REF")" = "$(grep -c . "$T/bf16.tsv")" ] && ok || fail "tensor count differs from the official output"
fi
# the directory is complete and loadable
contains "tokenizer copied" <(ls "$T/bf16") "tokenizer.json"
contains "config no quantization" <(grep -c quantization_config "$T/bf16/config.json" || true) "^0$"
contains "config torch_dtype" "$T/bf16/config.json" '"torch_dtype":.*"bfloat16"'
expect "output passes --check" "$INSPECT" --check "$T/bf16"
"$PYTHON" - "$T/bf16" <<'PY' && ok || fail "index of the output"
import json, os, sys, struct
d = sys.argv[1]; idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
assert not any(k.endswith("_scale_inv") for k in idx["weight_map"])
total = 0
for f in set(idx["weight_map"].values()):
    b = open(os.path.join(d, f), "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8+n])
    for k, v in h.items():
        if k != "__metadata__":
            assert idx["weight_map"][k] == f; total += v["data_offsets"][1] - v["data_offsets"][0]
assert idx["metadata"]["total_size"] == total, (idx["metadata"], total)
PY
# f32 and f16 agree with bf16 after rounding (spot check through --diff: same values within rounding)
expect "cast to f32" "$CAST" -q --to f32 "$DSV3_TINY" "$T/f32"
"$INSPECT" --diff "$T/f32" "$DSV3_TINY" --json > "$T/diff.json" 2>&1
"$PYTHON" -c "import json,sys; j=json.load(open('$T/diff.json')); assert j['equal'], [t for t in j['tensors'] if t['status']!='equal'][:3]" && ok || fail "f32 cast differs from the dequantised FP8"
# round trip: FP8 -> BF16 -> FP8.  Every FP8 weight byte comes back; scales come back within the
# bf16 rounding of each block's amax (the originals were computed from float32 weights), and
# exactly with --scales-from.
expect "bf16 -> fp8" "$CAST" -q --to fp8 "$T/bf16" "$T/fp8"
$H "$T/fp8" "$T/fp8.tsv"; $H "$DSV3_TINY" "$T/orig.tsv"
diff <(grep -v '^#' "$T/orig.tsv" | grep -v _scale_inv) <(grep -v '^#' "$T/fp8.tsv" | grep -v _scale_inv) >/dev/null && ok || fail "round trip changed FP8 weight bytes"
expect "fp8 output passes --check" "$INSPECT" --check "$T/fp8"
expect "bf16 -> fp8 --scales-from" "$CAST" -q --to fp8 --scales-from "$DSV3_TINY" "$T/bf16" "$T/fp8b"
$H "$T/fp8b" "$T/fp8b.tsv"
diff <(grep -v '^#' "$T/orig.tsv") <(grep -v '^#' "$T/fp8b.tsv") >/dev/null && ok || fail "round trip with --scales-from is not identical"
contains "quantization_config back" "$T/fp8/config.json" '"quant_method":.*"fp8"'
expect "ue8m0" "$CAST" -q --to fp8 --scale-fmt ue8m0 "$T/bf16" "$T/ue8m0"
"$PYTHON" - "$T/ue8m0" <<'PY' && ok || fail "ue8m0 scales are not powers of two"
import json, os, struct, sys, math
d = sys.argv[1]; f = os.path.join(d, "model-00001-of-00003.safetensors")
b = open(f, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8+n]); cnt = 0
for k, v in h.items():
    if k.endswith("_scale_inv"):
        raw = b[8+n+v["data_offsets"][0]:8+n+v["data_offsets"][1]]
        for (x,) in struct.iter_unpack("<f", raw):
            m, e = math.frexp(x); assert m == 0.5, x; cnt += 1
assert cnt > 0
PY
# runtime-layout input (one file named model0-mp1.safetensors) works too
mkdir -p "$T/rt"; "$PYTHON" - "$DSV3_TINY" "$T/rt" <<'PY'
import json, os, struct, sys
src, dst = sys.argv[1:]
b = open(os.path.join(src, "model-00001-of-00003.safetensors"), "rb").read()
open(os.path.join(dst, "model0-mp1.safetensors"), "wb").write(b)
PY
expect "runtime layout" "$CAST" -q "$T/rt" "$T/rt-bf16"
[ -f "$T/rt-bf16/model0-mp1.safetensors" ] && ok || fail "runtime layout output name"
# progress bar on a terminal (bytes, rate, ETA), none with -q
if command -v script >/dev/null; then
  script -qc "'$CAST' --threads 1 --memory 1M '$DSV3_TINY' '$T/pb'" /dev/null > "$T/tty" 2>&1
  tr '\r' '\n' < "$T/tty" > "$T/tty2"
  contains "progress bar" "$T/tty2" 'MiB/s'
  contains "progress ETA" "$T/tty2" 'ETA'
  contains "summary line" "$T/tty2" 'peak RSS'
  script -qc "'$CAST' -q '$DSV3_TINY' '$T/pb2'" /dev/null > "$T/tty" 2>&1
  [ ! -s "$T/tty" ] && ok || fail "-q printed: $(head -c 200 "$T/tty")"
fi
# safety
expect_error "output inside input" "must not be the input directory" "$CAST" -q "$DSV3_TINY" "$DSV3_TINY/sub"
expect_error "output is input" "must not be the input directory" "$CAST" -q "$DSV3_TINY" "$DSV3_TINY"
cp -r "$DSV3_TINY" "$T/noscale"
"$PYTHON" - "$T/noscale" <<'PY'
import json, os, struct, sys
d = sys.argv[1]; p = os.path.join(d, "model-00001-of-00003.safetensors")
b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); data = b[8 + n:]
drop = "model.layers.0.mlp.up_proj.weight_scale_inv"
items = sorted(((k, v) for k, v in h.items() if k not in ("__metadata__", drop)), key=lambda kv: kv[1]["data_offsets"][0])
out, new = b"", {}
for k, v in items:
    x = data[v["data_offsets"][0]:v["data_offsets"][1]]; new[k] = dict(v, data_offsets=[len(out), len(out) + len(x)]); out += x
js = json.dumps(new, separators=(",", ":")).encode(); js += b" " * (-len(js) % 8)
open(p, "wb").write(struct.pack("<Q", len(js)) + js + out)
idx = json.load(open(os.path.join(d, "model.safetensors.index.json"))); del idx["weight_map"][drop]
json.dump(idx, open(os.path.join(d, "model.safetensors.index.json"), "w"))
PY
expect_error "missing scale" "tensor model.layers.0.mlp.up_proj.weight: FP8 weight has no scale" "$CAST" -q "$T/noscale" "$T/noscale-out"
[ ! -e "$T/noscale-out/model-00001-of-00003.safetensors" ] && ok || fail "half output after an error"
"$CAST" -q --allow-missing-scale "$T/noscale" "$T/noscale-out2" 2>"$T/err" && grep -q "no scale, copied unchanged" "$T/err" && ok || fail "--allow-missing-scale"
cp -r "$DSV3_TINY" "$T/trunc"; truncate -s 3000000 "$T/trunc/model-00003-of-00003.safetensors"
expect_error "truncated input" "model-00003-of-00003.safetensors: .*run past the data section" "$CAST" -q "$T/trunc" "$T/trunc-out"
# resume: stop after the first shard (as a kill would), resume, compare with a clean run
DSV3_TEST_STOP_AFTER_FILES=1 "$CAST" -q "$DSV3_TINY" "$T/res" 2>/dev/null; [ $? -eq 3 ] && ok || fail "stop hook"
[ -f "$T/res/model-00001-of-00003.safetensors" ] && [ ! -f "$T/res/model-00002-of-00003.safetensors" ] && ok || fail "partial state"
expect "resume" "$CAST" --json --resume "$DSV3_TINY" "$T/res"
contains "resume skipped one" "$T/out" '"files_skipped":.*1'
$H "$T/res" "$T/res.tsv"; diff "$T/bf16.tsv" "$T/res.tsv" >/dev/null && ok || fail "resumed output differs"
[ -z "$(find "$T" -name '.*.tmp.*')" ] && ok || fail "temp files left behind"
if [ ! -f "$REF" ] && [ $fails -eq 0 ]; then echo "$REF missing (made on the GPU machine): bit-exactness not checked"; exit 77; fi
finish
