#!/usr/bin/env bash
# dsv3-inspect on models/dsv3-tiny: the summary's numbers, --tensors rows against an
# independent reading of the headers (st.py), subcommand spellings, --json output parsing.
. "$SRC/tests/lib.sh"
M=$DSV3_TINY
PY=${PYTHON:-}
expect "summary" "$INSPECT" "$M"
contains "tensor count" "$T/out" "^tensors      309 (233 in the main model, 76 in MTP layers)$"
contains "layers" "$T/out" "^layers       4 main (1 dense, 3 MoE) + 1 MTP$"
contains "experts" "$T/out" "^experts      8 routed, 2 per token (sigmoid, noaux_tc, 4 groups, top 2), 2 shared"
contains "total_size" "$T/out" "^bytes        31431328 (29.98 MiB), index total_size 31431328: matches$"
contains "fp8 dtype row" "$T/out" "F8_E4M3 *136 tensors *21938176 params"
contains "bf16 dtype row" "$T/out" "BF16 *33 tensors *4743744 params"
contains "f32 dtype row" "$T/out" "F32 *140 tensors *1416 params"
contains "quantization" "$T/out" "^quantization fp8 e4m3, 128x128 blocks, float32 scales: 136 FP8 weights, 136 scales$"
contains "fp8 kinds" "$T/out" "FP8 kind   mlp.experts.\*.gate_proj *32$"
grep -q "^warning" "$T/out" && fail "warnings on a clean model: $(grep ^warning "$T/out")" || ok
expect "summary subcommand" "$INSPECT" summary "$M"
contains "subcommand summary" "$T/out" "^tensors      309"

expect "tensors" "$INSPECT" --tensors -q --filter 'model.layers.0.self_attn.kv_b_proj.*' "$M"
[ "$(grep -c '^model' "$T/out")" = 2 ] && ok || fail "--filter selected $(grep -c '^model' "$T/out") rows"
contains "kv_b_proj row" "$T/out" "^model.layers.0.self_attn.kv_b_proj.weight *F8_E4M3 *\[1024, 128\] *131072  model-0000.-of-00003.safetensors @[0-9]*  scale \[8, 1\]$"
expect "tensors all" "$INSPECT" tensors -q "$M"
[ "$(grep -c '^model\|^lm_head' "$T/out")" = 309 ] && ok || fail "--tensors listed $(grep -c '^model\|^lm_head' "$T/out") rows"

if [ -n "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null; then
  # file and absolute offset of a few tensors, from an independent header parse
  names="model.layers.0.self_attn.kv_b_proj.weight model.layers.4.shared_head.head.weight lm_head.weight model.layers.2.mlp.gate.e_score_correction_bias"
  "$PY" "$SRC/tests/inspect/st.py" offsets "$M" $names > "$T/ref.json"
  "$INSPECT" --tensors --json "$M" > "$T/tj.json"
  "$PY" - "$T/ref.json" "$T/tj.json" <<'PY' && ok || fail "--tensors offsets differ from the headers"
import json, sys
ref = json.load(open(sys.argv[1])); got = {e["name"]: e for e in json.load(open(sys.argv[2]))}
assert len(got) == 309, len(got)
for n, (f, off, nb, shape) in ref.items():
    g = got[n]
    assert (g["file"], g["offset"], g["bytes"], g["shape"]) == (f, off, nb, shape), (n, g, ref[n])
assert got["model.layers.0.self_attn.kv_b_proj.weight"]["scale_shape"] == [8, 1]
assert "scale_shape" not in got["lm_head.weight"]
PY
  "$INSPECT" --json "$M" > "$T/sj.json"
  "$PY" - "$T/sj.json" <<'PY' && ok || fail "summary json values"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["tensors"] == 309 and j["tensors_main"] == 233 and j["tensors_mtp"] == 76, j
assert j["tensor_bytes"] == j["index_total_size"] == 31431328 and j["index_total_size_matches"]
c = j["config"]
assert (c["layers_dense"], c["layers_moe"], c["layers_mtp"], c["n_routed_experts"]) == (1, 3, 1, 8), c
q = j["quantization"]
assert q["fp8_weights"] == 136 and q["scales"] == 136 and q["fp8_without_scale"] == 0 and q["block_size"] == [128, 128]
assert q["fp8_kinds"]["mlp.experts.*.down_proj"] == 32 and "lm_head" not in q["fp8_kinds"]
assert j["dtypes"]["BF16"]["params"] == 4743744 and j["warnings"] == []
PY
  # every mode's --json is valid JSON
  for mode in "" --tensors --stats --check "--diff $M"; do
    "$INSPECT" $mode --json -q "$M" > "$T/j.json"
    "$PY" -m json.tool "$T/j.json" > /dev/null && ok || fail "--json $mode is not valid JSON"
  done
fi
expect "version" "$INSPECT" --version
contains "version" "$T/out" "^dsv3-inspect [0-9]"
expect "help" "$INSPECT" --help
contains "help" "$T/out" "--diff OTHER"
expect_error "no such checkpoint" "nope: no such file or directory" "$INSPECT" "$T/nope"
"$INSPECT" --stats --check "$M" > /dev/null 2>&1; [ $? = 2 ] && ok || fail "two modes: not a usage error"
"$INSPECT" --threads 0 "$M" > /dev/null 2>&1; [ $? = 2 ] && ok || fail "--threads 0: not a usage error"
"$INSPECT" > /dev/null 2>&1; [ $? = 2 ] && ok || fail "no checkpoint: not a usage error"
"$INSPECT" --filter 'x*' "$M" > /dev/null 2>&1; [ $? = 2 ] && ok || fail "--filter on the summary: not a usage error"
finish
