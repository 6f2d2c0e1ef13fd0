#!/usr/bin/env bash
# dsv3-cast beyond the plain HF layout:
#  - the runtime layout (model{r}-mp2.safetensors from dsv3-convert: runtime names, `.scale`,
#    names repeated per rank): cast == dsv3-convert --dtype bf16 byte for byte; --to fp8 finds
#    exactly the FP8 kinds again; --scales-from round trip byte-identical;
#  - a scale stored in another shard than its weight (the official script looks it up through
#    the index too);
#  - the input index's other metadata is kept, a wrong total_size only warns and is recomputed;
#  - F16 -> FP8 against the numpy quantiser.
. "$SRC/tests/lib.sh"
have_python || { echo "python3 needed"; exit 77; }
"$PYTHON" -c 'import numpy' 2>/dev/null || { echo "numpy needed"; exit 77; }
V="$PYTHON $SRC/tests/cast/verify_numpy.py"
STIO="import sys; sys.path.insert(0, '$SRC/tests/cast'); import stio"

if [ -x "$CONVERT" ]; then
  expect "convert to mp2" "$CONVERT" -q --no-manifest "$DSV3_TINY" "$T/rt" --mp 2
  expect "cast runtime layout" "$CAST" -q --no-manifest "$T/rt" "$T/rt-bf16"
  expect "convert --dtype bf16" "$CONVERT" -q --no-manifest --dtype bf16 "$DSV3_TINY" "$T/rt-conv" --mp 2
  for r in 0 1; do
    cmp -s "$T/rt-bf16/model$r-mp2.safetensors" "$T/rt-conv/model$r-mp2.safetensors" && ok || fail "rank $r: cast(convert) != convert --dtype bf16"
  done
  $V dequant "$T/rt" "$T/rt-bf16" bf16 >"$T/v" 2>&1 && ok || fail "numpy dequant, runtime layout: $(cat "$T/v")"
  expect "runtime --to fp8" "$CAST" -q --no-manifest --to fp8 "$T/rt-bf16" "$T/rt-fp8"
  "$PYTHON" - "$T/rt" "$T/rt-fp8" <<PY && ok || fail "runtime --to fp8: other tensors or dtypes than the original"
$STIO
import os
a, b = sys.argv[1:]
for f in stio.shards(a):
    x, y = stio.File(os.path.join(a, f)), stio.File(os.path.join(b, f))
    assert sorted(x.names()) == sorted(y.names()), f
    for n in x.names():
        assert x.info(n) == y.info(n), (f, n, x.info(n), y.info(n))
PY
  expect "runtime --to fp8 --scales-from" "$CAST" -q --no-manifest --to fp8 --scales-from "$T/rt" "$T/rt-bf16" "$T/rt-fp8b"
  for r in 0 1; do
    cmp -s "$T/rt/model$r-mp2.safetensors" "$T/rt-fp8b/model$r-mp2.safetensors" && ok || fail "rank $r: runtime round trip not identical"
  done
fi

# a scale in another shard than its weight
"$PYTHON" "$SRC/tests/cast/gen_fp8.py" "$T/g" 2 2 300 400 3 || fail "generator"
"$PYTHON" - "$T/g" <<PY || fail "moving a scale"
$STIO
import json, os
d = sys.argv[1]; s1, s2 = stio.shards(d)
W = "model.layers.0.mlp.gate_proj.weight_scale_inv"
def load(f):
    x = stio.File(os.path.join(d, f))
    return [(n, x.info(n)[0], x.info(n)[1], x.raw(n).tobytes()) for n in x.names()], x.metadata
t1, m1 = load(s1); t2, m2 = load(s2)
mv = [t for t in t1 if t[0] == W]
stio.write(os.path.join(d, s1), [t for t in t1 if t[0] != W], m1)
stio.write(os.path.join(d, s2), t2 + mv, m2)
ip = os.path.join(d, "model.safetensors.index.json"); j = json.load(open(ip))
j["weight_map"][W] = s2; j["metadata"]["note"] = "kept"; j["metadata"]["total_size"] += 1
json.dump(j, open(ip, "w"))
PY
"$CAST" --no-manifest "$T/g" "$T/g-bf16" >"$T/out" 2>"$T/err" && ok || fail "scale in another shard: $(cat "$T/err")"
contains "wrong total_size warns" "$T/err" "warning: .*total_size"
$V dequant "$T/g" "$T/g-bf16" bf16 >"$T/v" 2>&1 && ok || fail "numpy dequant with a scale elsewhere: $(cat "$T/v")"
"$PYTHON" - "$T/g-bf16" <<PY && ok || fail "output index metadata"
$STIO
import json, os
d = sys.argv[1]; j = json.load(open(os.path.join(d, "model.safetensors.index.json")))
assert j["metadata"]["note"] == "kept", j["metadata"]
tot = 0
for f in stio.shards(d):
    x = stio.File(os.path.join(d, f))
    tot += sum(len(x.raw(n)) for n in x.names())
assert j["metadata"]["total_size"] == tot, (j["metadata"], tot)
assert not any(k.endswith("_scale_inv") for k in j["weight_map"])
PY

# F16 -> FP8
expect "to f16" "$CAST" -q --no-manifest --to f16 "$T/g" "$T/g-f16"
expect "f16 -> fp8" "$CAST" -q --no-manifest --to fp8 "$T/g-f16" "$T/g-fp8"
$V quant "$T/g-f16" "$T/g-fp8" >"$T/v" 2>&1 && ok || fail "numpy quant from f16: $(cat "$T/v")"
finish
