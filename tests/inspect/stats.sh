#!/usr/bin/env bash
# dsv3-inspect --stats against an independent numpy computation (st.py: struct + json +
# numpy, e4m3 decoded by formula, block scales applied in float32): FP8 weights with partial
# edge blocks, BF16 (small and histogrammed), F32; NaN and Inf counting; thread independence.
. "$SRC/tests/lib.sh"
M=$DSV3_TINY
PY=${PYTHON:-}
{ [ -n "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null; } || { echo "no python3 with numpy: skipped"; exit 77; }
names="model.layers.0.self_attn.kv_a_proj_with_mqa.weight model.layers.0.self_attn.kv_b_proj.weight
model.layers.1.mlp.experts.3.down_proj.weight model.layers.4.mlp.shared_experts.up_proj.weight
model.embed_tokens.weight model.layers.4.eh_proj.weight model.layers.1.input_layernorm.weight
model.layers.2.mlp.gate.e_score_correction_bias model.layers.0.mlp.down_proj.weight_scale_inv"
cmp_stats() { # cmp_stats DIR DESC
  "$PY" "$SRC/tests/inspect/st.py" stats "$1" $names > "$T/ref.json" || { fail "$2: st.py failed"; return; }
  "$INSPECT" --stats --json -q "$1" > "$T/got.json" || { fail "$2: --stats failed"; return; }
  "$PY" - "$T/ref.json" "$T/got.json" <<'PY' && ok || fail "$2: --stats differs from numpy"
import json, sys
ref = json.load(open(sys.argv[1])); got = {e["name"]: e for e in json.load(open(sys.argv[2]))}
assert len(got) == 309, len(got)
for n, r in ref.items():
    g = got[n]
    for k in ("count", "nan", "inf"):
        assert g[k] == r[k], (n, k, g[k], r[k])
    for k in ("min", "max", "mean", "std", "absmax"):
        assert abs(g[k] - r[k]) <= 1e-9 * abs(r[k]) + 1e-12, (n, k, g[k], r[k])
    assert g["dequantized"] == (g["dtype"] == "F8_E4M3"), n
print(len(ref), "tensors match")
PY
}
cmp_stats "$M" "tiny"
# NaN and Inf: an e4m3 NaN byte in an FP8 weight, a BF16 +Inf and NaN in the embedding
cp -r "$M" "$T/nan"
"$PY" "$SRC/tests/inspect/st.py" mutate "$T/nan" model-00001-of-00003.safetensors poke model.layers.0.self_attn.kv_b_proj.weight 1000 7f
"$PY" "$SRC/tests/inspect/st.py" mutate "$T/nan" model-00001-of-00003.safetensors poke model.embed_tokens.weight 64 807fc07fc07f
cmp_stats "$T/nan" "nan/inf copy"
grep -q "\"nan\":[[:space:]]*1," "$T/got.json" && grep -q "\"inf\":[[:space:]]*1," "$T/got.json" && grep -q "\"nan\":[[:space:]]*2," "$T/got.json" && ok || fail "NaN/Inf counts not reported"
# the numbers do not depend on the thread count
"$INSPECT" --stats --json -q --threads 1 "$M" > "$T/t1.json"
"$INSPECT" --stats --json -q --threads 3 "$M" > "$T/t3.json"
cmp -s "$T/t1.json" "$T/t3.json" && ok || fail "--threads 1 and 3 give different statistics"
# text output and --filter
expect "stats text" "$INSPECT" --stats -q --filter 'model.norm.*' "$M"
[ "$(grep -c '^model.norm.weight *BF16 ' "$T/out")" = 1 ] && [ "$(wc -l < "$T/out")" = 2 ] && ok || fail "stats --filter rows: $(cat "$T/out")"
expect "stats subcommand" "$INSPECT" stats -q --filter 'lm_head*' "$M"
contains "stats lm_head" "$T/out" "^lm_head.weight *BF16"
finish
