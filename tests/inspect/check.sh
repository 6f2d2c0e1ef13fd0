#!/usr/bin/env bash
# dsv3-inspect --check: passes on models/dsv3-tiny (and its runtime reshards when dsv3-convert
# is built), fails with exit 1 and the right line for each kind of damage.
. "$SRC/tests/lib.sh"
M=$DSV3_TINY
PY=${PYTHON:-}
expect "check passes" "$INSPECT" --check "$M"
contains "check ok" "$T/out" "^ok: 309 tensors match config.json, every FP8 weight has its scale, index consistent$"
expect "check subcommand" "$INSPECT" check --json "$M"
contains "check json ok" "$T/out" '"ok":[[:space:]]*true'
# damaged copies (needs python for the rewriting)
{ [ -n "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null; } || { echo "no python3 with numpy: damage cases skipped"; finish; }
ST="$SRC/tests/inspect/st.py"
S1=model-00001-of-00003.safetensors
damaged() { # damaged NAME OP ARGS... : a copy of the model with one shard rewritten
  rm -rf "$T/$1"; cp -r "$M" "$T/$1"; local d=$1; shift
  "$PY" "$ST" mutate "$T/$d" "$S1" "$@"
}
check_fails() { # check_fails DIR PATTERN...: exit 1, each pattern on stdout
  local d=$1; shift
  "$INSPECT" --check "$T/$d" > "$T/out" 2> "$T/err"; local rc=$?
  [ $rc = 1 ] && ok || fail "$d: --check exit $rc, not 1"
  contains "$d: summary line" "$T/err" "check failed: [0-9]* problem"
  for p in "$@"; do contains "$d" "$T/out" "$p"; done
}
damaged removed drop model.layers.0.post_attention_layernorm.weight
check_fails removed "^tensor model.layers.0.post_attention_layernorm.weight: missing (expected BF16 \[512\])$" \
  "model.layers.0.post_attention_layernorm.weight.*in weight_map"
contains "removed: total_size" "$T/out" "^model.safetensors.index.json: metadata.total_size 31431328 but the tensors hold 31430304 bytes$"
[ "$(wc -l < "$T/out")" = 3 ] && ok || fail "removed: expected exactly 3 problems: $(cat "$T/out")"
damaged shape shape model.layers.1.input_layernorm.weight 2,256
check_fails shape "^$S1: tensor model.layers.1.input_layernorm.weight: shape \[2, 256\], expected \[512\]$"
damaged scale shape model.layers.0.mlp.down_proj.weight_scale_inv 12,4
check_fails scale "^$S1: tensor model.layers.0.mlp.down_proj.weight: scale F32 \[12, 4\] does not fit weight \[512, 1536\] (expected F32 \[4, 12\])$" \
  "^$S1: tensor model.layers.0.mlp.down_proj.weight_scale_inv: shape \[12, 4\], expected \[4, 12\]$"
damaged dtype dtype model.layers.0.input_layernorm.weight F16
check_fails dtype "^$S1: tensor model.layers.0.input_layernorm.weight: dtype F16, expected BF16$"
damaged noscale drop model.layers.0.self_attn.o_proj.weight_scale_inv
check_fails noscale "^$S1: tensor model.layers.0.self_attn.o_proj.weight: FP8 weight without a scale$" \
  "^tensor model.layers.0.self_attn.o_proj.weight_scale_inv: missing (expected F32 \[4, 4\])$"
damaged extra add model.layers.0.mlp.extra_proj.weight BF16 4,4
check_fails extra "^$S1: tensor model.layers.0.mlp.extra_proj.weight: not expected by config.json$" \
  "^$S1: tensor model.layers.0.mlp.extra_proj.weight: not in model.safetensors.index.json$"
# scale values: zero / NaN scales, and non-power-of-two scales under scale_fmt ue8m0
damaged badscale poke model.layers.0.self_attn.o_proj.weight_scale_inv 8 00000000
"$PY" "$ST" mutate "$T/badscale" "$S1" poke model.layers.0.mlp.up_proj.weight_scale_inv 4 0000c07f
check_fails badscale "^$S1: tensor model.layers.0.self_attn.o_proj.weight_scale_inv: scale 2 is 0 (must be finite and > 0)$" \
  "^$S1: tensor model.layers.0.mlp.up_proj.weight_scale_inv: scale 1 is nan (must be finite and > 0)$"
[ "$(wc -l < "$T/out")" = 2 ] && ok || fail "badscale: expected exactly 2 problems: $(cat "$T/out")"
rm -rf "$T/ue"; cp -r "$M" "$T/ue"; sed -i 's/"fmt": "e4m3",/"fmt": "e4m3", "scale_fmt": "ue8m0",/' "$T/ue/config.json"
check_fails ue "^$S1: tensor model.layers.0.mlp.down_proj.weight_scale_inv: scale 0 is 0.000632119, not a power of two (scale_fmt ue8m0)$"
if [ -x "$CAST" ]; then # real ue8m0 scales pass
  "$CAST" -q "$M" "$T/bf" > /dev/null 2>&1 && "$CAST" -q --to fp8 --scale-fmt ue8m0 "$T/bf" "$T/ue8" > /dev/null 2>&1 &&
    expect "ue8m0 cast check" "$INSPECT" --check "$T/ue8" || fail "dsv3-cast to ue8m0"
fi
# config says 5 layers: the whole of layer 4 is "missing" and the MTP layer is now layer 5
rm -rf "$T/cfg"; cp -r "$M" "$T/cfg"; sed -i 's/"num_hidden_layers": 4/"num_hidden_layers": 5/' "$T/cfg/config.json"
check_fails cfg "^tensor model.layers.5.enorm.weight: missing" "tensor model.layers.4.enorm.weight: not expected by config.json$"
# config and tensors disagree about quantisation: one problem, the structure checked as stored
rm -rf "$T/noq"; cp -r "$M" "$T/noq"
"$PY" -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); del c["quantization_config"]; json.dump(c, open(p, "w"))' "$T/noq/config.json"
check_fails noq "F8_E4M3 tensors but config.json has no quantization_config; checking as FP8$"
[ "$(wc -l < "$T/out")" = 1 ] && ok || fail "noq: expected exactly 1 problem: $(cat "$T/out")"
"$INSPECT" --check --json "$T/removed" > "$T/j.json"; [ $? = 1 ] && ok || fail "--check --json on damage: not exit 1"
"$PY" - "$T/j.json" <<'PY' && ok || fail "--check --json problems"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["ok"] is False and len(j["problems"]) == 3 and j["tensors"] == 308, j
PY
# the runtime layout: per-rank names and shapes
if [ -x "$CONVERT" ]; then
  for mp in 1 2 4; do
    "$CONVERT" -q "$M" "$T/rt$mp" --mp $mp > /dev/null 2>&1 || { fail "convert mp$mp"; continue; }
    expect "runtime mp$mp check" "$INSPECT" --check "$T/rt$mp"
    contains "runtime mp$mp ok" "$T/out" "^ok: .*runtime layout, per-rank shapes"
  done
  "$CONVERT" -q "$M" "$T/rtk" --mp 2 --keep-mtp > /dev/null 2>&1 && expect "runtime keep-mtp check" "$INSPECT" --check "$T/rtk"
  if "$CONVERT" -q "$M" "$T/rtbf" --mp 2 --dtype bf16 > /dev/null 2>&1; then
    if grep -q quantization_config "$T/rtbf/config.json"; then
      check_fails rtbf "config.json has a quantization_config (fp8) but no tensor is F8_E4M3; checking as unquantised$"
      [ "$(wc -l < "$T/out")" = 1 ] && ok || fail "rtbf: expected exactly 1 problem: $(cat "$T/out")"
    else
      expect "runtime bf16 check" "$INSPECT" --check "$T/rtbf"
    fi
  fi
  # damage rank 1: drop one of its experts, change a per-rank shape
  "$PY" "$ST" mutate "$T/rt2" model1-mp2.safetensors drop layers.2.ffn.experts.5.w1.weight
  "$PY" "$ST" mutate "$T/rt2" model1-mp2.safetensors shape layers.1.attn.wq_b.weight 1024,96
  check_fails rt2 "^model1-mp2.safetensors: tensor layers.2.ffn.experts.5.w1.weight: missing (expected F8_E4M3 \[256, 512\])$" \
    "^model1-mp2.safetensors: tensor layers.1.attn.wq_b.weight: shape \[1024, 96\], expected \[512, 192\]$"
else
  echo "dsv3-convert not built: runtime layout cases skipped"
fi
finish
