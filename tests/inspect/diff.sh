#!/usr/bin/env bash
# dsv3-inspect --diff: clean on identical checkpoints, reports exactly the modified tensor,
# names present in one only, and compares across layouts (runtime mp2/mp4, concatenating the
# rank slices) and dtypes (BF16 cast, within --tolerance) when dsv3-convert / dsv3-cast exist.
. "$SRC/tests/lib.sh"
M=$DSV3_TINY
PY=${PYTHON:-}
expect "diff self" "$INSPECT" --diff "$M" "$M"
contains "diff equal" "$T/out" "^equal: 173 tensors compared, 0 differ, 0 with other shapes or unreadable, 0 only in first, 0 only in second$"
expect "diff subcommand" "$INSPECT" diff -q "$M" "$M"
{ [ -n "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null; } || { echo "no python3 with numpy: modified copies skipped"; finish; }
ST="$SRC/tests/inspect/st.py"
cp -r "$M" "$T/mod"
"$PY" "$ST" mutate "$T/mod" model-00002-of-00003.safetensors flip model.layers.2.self_attn.o_proj.weight 77
"$PY" "$ST" mutate "$T/mod" model-00003-of-00003.safetensors drop model.layers.4.hnorm.weight
"$INSPECT" diff "$M" "$T/mod" > "$T/out" 2>&1; rc=$?
[ $rc = 1 ] && ok || fail "diff of a modified copy: exit $rc, not 1"
contains "modified tensor" "$T/out" "^model.layers.2.self_attn.o_proj.weight *differs  max_abs [0-9.e-]*  max_rel [0-9.e-]*  1 of 262144 elements$"
contains "only in first" "$T/out" "^model.layers.4.hnorm.weight *only in first"
contains "summary" "$T/out" "^different: 172 tensors compared, 1 differ, 0 with other shapes or unreadable, 1 only in first, 0 only in second$"
[ "$(grep -c '^model.*\(differs\|only in\)' "$T/out")" = 2 ] && ok || fail "diff reported other tensors: $(cat "$T/out")"
"$INSPECT" diff "$T/mod" "$M" --filter 'model.layers.0.*' > "$T/out" 2>&1 && ok || fail "diff --filter of unmodified tensors not clean"
"$INSPECT" diff --json "$M" "$T/mod" > "$T/j.json"
"$PY" - "$T/j.json" <<'PY' && ok || fail "diff --json"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["equal"] is False and j["differ"] == 1 and j["only_in_first"] == 1 and j["compared"] == 172, j
t = {e["name"]: e for e in j["tensors"]}
e = t["model.layers.2.self_attn.o_proj.weight"]
assert e["status"] == "differs" and e["elements_differing"] == 1 and e["max_abs"] > 0, e
assert t["model.layers.4.hnorm.weight"]["status"] == "only in first"
assert t["lm_head.weight"]["status"] == "equal" and t["lm_head.weight"]["max_abs"] == 0
PY
if [ -x "$CONVERT" ]; then
  for mp in 2 4; do
    "$CONVERT" -q "$M" "$T/rt$mp" --mp $mp > /dev/null 2>&1 || { fail "convert mp$mp"; continue; }
    expect "diff hf vs runtime mp$mp" "$INSPECT" diff "$M" "$T/rt$mp" --ignore-mtp
    contains "runtime mp$mp equal" "$T/out" "^equal: 129 tensors compared, 0 differ"
  done
  "$INSPECT" diff "$M" "$T/rt2" > "$T/out" 2>&1; [ $? = 1 ] && ok || fail "MTP layer dropped by convert: diff not exit 1"
  contains "mtp only in first" "$T/out" "^model.layers.4.enorm.weight *only in first"
  "$INSPECT" diff "$T/rt2" "$T/rt4" > "$T/out" 2>&1 && ok || fail "runtime mp2 vs mp4 differ: $(tail -3 "$T/out")"
  # a slice on rank 1 changed: the concatenated tensor differs
  "$PY" "$ST" mutate "$T/rt2" model1-mp2.safetensors flip layers.1.attn.wo.weight 5
  "$INSPECT" diff "$M" "$T/rt2" --ignore-mtp > "$T/out" 2>&1; [ $? = 1 ] && ok || fail "changed rank slice: diff not exit 1"
  contains "rank slice" "$T/out" "^model.layers.1.self_attn.o_proj.weight *differs .* 1 of 262144 elements"
fi
if [ -x "$CAST" ]; then
  "$CAST" -q "$M" "$T/bf16" > /dev/null 2>&1 || fail "cast to bf16"
  "$INSPECT" diff "$M" "$T/bf16" > "$T/out" 2>&1; [ $? = 1 ] && ok || fail "fp8 vs bf16 cast: exact diff should differ"
  expect "fp8 vs bf16 within bf16 rounding" "$INSPECT" diff "$M" "$T/bf16" --tolerance 0.00390625
  contains "cast equal" "$T/out" "^equal: 173 tensors compared"
fi
finish
